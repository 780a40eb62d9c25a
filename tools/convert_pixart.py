#!/usr/bin/python3
"""Converts a public PixArt-alpha checkpoint (PixArt-XL-2-256x256.pth, PixArt-XL-2-512x512.pth,
from huggingface.co/PixArt-alpha/PixArt-alpha, or a training checkpoint of the PixArt-alpha
repository) to safetensors, the format cachelab's `pixart` backbone reads.

usage: /usr/bin/python3 tools/convert_pixart.py [--ema] PixArt-XL-2-256x256.pth checkpoints/PixArt-XL-2-256x256.safetensors

LibTorch cannot unpickle these files, so this one step runs on Python (Debian's
python3-torch). The files hold the model's state dict under `state_dict` (what the
reference's scripts/inference.py loads; --ema takes `state_dict_ema` of a training
checkpoint instead); a `module.` prefix is dropped. The stored `pos_embed` is left out: the
reference's inference deletes it and recomputes it, as cachelab does (backbone.lewei_scale).
Every tensor is written as float32 under the reference name. The diffusers-format
transformer (transformer/diffusion_pytorch_model.safetensors) uses other names and is not
read. Then check that the file loads with every name and shape matched, with an experiment on
the presets (docs/full-size.md, section PixArt-α):

  build/cachelab validate pixart256.yaml
"""
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures"))
import safetensors_io  # noqa: E402


def state_dict_of(obj, path, ema):
    key = "state_dict_ema" if ema else "state_dict"
    if isinstance(obj, dict) and isinstance(obj.get(key), dict):
        obj = obj[key]
    elif ema:
        raise SystemExit(f"error: {path} has no `state_dict_ema` (drop --ema for the released checkpoints)")
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise SystemExit(f"error: {path} holds no PixArt state dict (expected a dict of tensors, or one under "
                         "`state_dict`)")
    out = {}
    for name, t in obj.items():
        name = name[len("module."):] if name.startswith("module.") else name
        if name == "pos_embed":
            continue
        out[name] = t.detach().to(torch.float32).contiguous()
    for required in ("x_embedder.proj.weight", "t_block.1.weight", "y_embedder.y_embedding", "final_layer.linear.weight"):
        if required not in out:
            raise SystemExit(f"error: {path} has no `{required}`: not a PixArt checkpoint of the reference repository")
    return out


def describe(sd):
    depth = 1 + max(int(n.split(".")[1]) for n in sd if n.startswith("blocks."))
    w = sd["x_embedder.proj.weight"]
    hidden, in_ch, patch = w.shape[0], w.shape[1], w.shape[-1]
    max_len, caption = sd["y_embedder.y_embedding"].shape
    out_ch = sd["final_layer.linear.weight"].shape[0] // (patch * patch)
    return (f"depth {depth}, hidden_size {hidden}, patch_size {patch}, in_channels {in_ch}, caption_channels "
            f"{caption}, model_max_length {max_len}, learn_sigma {'true' if out_ch == 2 * in_ch else 'false'}")


def main(argv):
    args = [a for a in argv[1:] if a != "--ema"]
    if len(args) != 2 or "-h" in args or "--help" in args:
        print(__doc__)
        return 0 if ("-h" in argv or "--help" in argv) else 2
    src, dst = args
    if not os.path.exists(src):
        raise SystemExit(f"error: {src} not found")
    sd = state_dict_of(torch.load(src, map_location="cpu"), src, "--ema" in argv)
    n = safetensors_io.write_converted(src, dst, sd, "tools/convert_pixart.py")
    print(f"wrote {dst}: {len(sd)} tensors, {n / 1e6:.1f}M parameters ({describe(sd)})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
