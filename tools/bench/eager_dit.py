#!/usr/bin/python3
"""The eager-PyTorch side of `cachelab_bench --eager DIT_CHECKOUT`: the reference DiT-XL/2-256
(facebookresearch/DiT models.py, imported from the checkout, with the timm stand-ins of
tools/fixtures/dit_adm.py) on Debian's python3-torch.

  eager_dit.py make CHECKOUT DIR          random weights (every parameter drawn, as the fixtures
                                          do) and inputs (x [8, 4, 32, 32], t [8], y [8]) into DIR
  eager_dit.py time CHECKOUT DIR B T      one warm-up forward at batch B with T threads, then one
                                          timed forward; prints `eager_seconds S` and writes the
                                          output to DIR/eager_out_B.safetensors
"""
import os
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "fixtures"))
import dit_adm  # noqa: E402
import safetensors_io  # noqa: E402


def model(checkout):
    dit_adm.timm_stand_in()
    sys.path.insert(0, checkout)
    import models as dit_models
    return dit_models.DiT_XL_2(input_size=32).eval()


def main(argv):
    if len(argv) < 3 or argv[0] not in ("make", "time"):
        sys.exit(__doc__.strip())
    cmd, checkout, out = argv[0], argv[1], argv[2]
    if cmd == "make":
        torch.manual_seed(0)
        m = model(checkout)
        dit_adm.randomize(m, 0)
        safetensors_io.write(os.path.join(out, "weights.safetensors"), dict(m.state_dict()))
        g = torch.Generator().manual_seed(1)
        inputs = {"x": torch.randn(8, 4, 32, 32, generator=g), "t": torch.randint(0, 1000, (8,), generator=g).float(),
                  "y": torch.randint(0, 1000, (8,), generator=g)}
        safetensors_io.write(os.path.join(out, "inputs.safetensors"), inputs)
        print("made")
        return
    batch, threads = int(argv[3]), int(argv[4])
    torch.set_num_threads(threads)
    m = model(checkout)
    m.load_state_dict(safetensors_io.read(os.path.join(out, "weights.safetensors")))
    inp = safetensors_io.read(os.path.join(out, "inputs.safetensors"))
    x, t, y = inp["x"][:batch], inp["t"][:batch], inp["y"][:batch]
    with torch.inference_mode():
        m(x, t, y)  # warm-up
        t0 = time.perf_counter()
        o = m(x, t, y)
        s = time.perf_counter() - t0
    safetensors_io.write(os.path.join(out, f"eager_out_{batch}.safetensors"), {"out": o})
    print(f"eager_seconds {s:.6f}")


if __name__ == "__main__":
    main(sys.argv[1:])
