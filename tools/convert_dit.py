#!/usr/bin/python3
"""Converts a public DiT checkpoint (DiT-XL-2-256x256.pt, DiT-XL-2-512x512.pt, or a training
checkpoint of the DiT repository's train.py) to safetensors, the format cachelab reads.

usage: /usr/bin/python3 tools/convert_dit.py DiT-XL-2-256x256.pt checkpoints/DiT-XL-2-256x256.safetensors

LibTorch cannot unpickle these files, so this one step runs on Python (Debian's
python3-torch). The public files are a `torch.save`d state dict; training checkpoints keep
it under `ema` (taken first) or `model`; a `module.` prefix (DistributedDataParallel) is
dropped. Every tensor is written as float32 under the reference name. Then check that the
file loads with every name and shape matched (the model is built as the backbone preset says):

  build/cachelab validate experiments/full/dit_xl2.yaml backbone.weights=checkpoints/DiT-XL-2-256x256.safetensors
"""
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures"))
import safetensors_io  # noqa: E402


def state_dict_of(obj, path):
    if isinstance(obj, dict) and "ema" in obj and isinstance(obj["ema"], dict):
        obj = obj["ema"]
    elif isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise SystemExit(f"error: {path} holds no DiT state dict (expected a dict of tensors, or one under `ema` "
                         "or `model`)")
    out = {}
    for name, t in obj.items():
        name = name[len("module."):] if name.startswith("module.") else name
        out[name] = t.detach().to(torch.float32).contiguous()
    for required in ("x_embedder.proj.weight", "pos_embed", "final_layer.linear.weight"):
        if required not in out:
            raise SystemExit(f"error: {path} has no `{required}`: not a DiT checkpoint of the reference repository")
    return out


def describe(sd):
    depth = 1 + max(int(n.split(".")[1]) for n in sd if n.startswith("blocks."))
    hidden = sd["x_embedder.proj.weight"].shape[0]
    patch = sd["x_embedder.proj.weight"].shape[-1]
    in_ch = sd["x_embedder.proj.weight"].shape[1]
    tokens = sd["pos_embed"].shape[1]
    side = int(round(tokens ** 0.5)) * patch
    classes = sd["y_embedder.embedding_table.weight"].shape[0] - 1
    out_ch = sd["final_layer.linear.weight"].shape[0] // (patch * patch)
    return (f"depth {depth}, hidden_size {hidden}, patch_size {patch}, in_channels {in_ch}, input_size {side}, "
            f"num_classes {classes}, learn_sigma {'true' if out_ch == 2 * in_ch else 'false'}")


def main(argv):
    if len(argv) != 3 or argv[1] in ("-h", "--help"):
        print(__doc__)
        return 2 if len(argv) != 2 else 0
    src, dst = argv[1], argv[2]
    if not os.path.exists(src):
        raise SystemExit(f"error: {src} not found")
    obj = torch.load(src, map_location="cpu")
    sd = state_dict_of(obj, src)
    n = safetensors_io.write_converted(src, dst, sd, "tools/convert_dit.py")
    print(f"wrote {dst}: {len(sd)} tensors, {n / 1e6:.1f}M parameters ({describe(sd)})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
