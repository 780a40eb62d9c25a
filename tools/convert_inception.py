#!/usr/bin/python3
"""Converts pytorch-fid's InceptionV3 weights (pt_inception-2015-12-05-6726825d.pth, a torch.save'd
state dict, published with github.com/mseitzer/pytorch-fid's releases) to safetensors for
`cachelab fid`: every tensor under its own name, num_batches_tracked dropped. `cachelab fid`
then checks every name and shape against the architecture.

usage: /usr/bin/python3 tools/convert_inception.py pt_inception-2015-12-05-6726825d.pth OUT.safetensors
"""
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures"))
import safetensors_io  # noqa: E402


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__.strip())
    src, dst = sys.argv[1], sys.argv[2]
    state = torch.load(src, map_location="cpu")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        sys.exit(f"{src}: not a state dict of tensors (pytorch-fid's pt_inception-*.pth is one)")
    tensors = {k: v.float() for k, v in state.items() if not k.endswith("num_batches_tracked")}
    if "fc.weight" not in tensors or tuple(tensors["fc.weight"].shape) != (1008, 2048):
        sys.exit(f"{src}: no fc.weight [1008, 2048]; this is not the FID Inception (pytorch-fid's 1008-class TF port)")
    n = safetensors_io.write_converted(src, dst, tensors, "tools/convert_inception.py")
    print(f"wrote {dst}: {len(tensors)} tensors, {n / 1e6:.1f}M parameters")


if __name__ == "__main__":
    main()
