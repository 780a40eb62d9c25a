#!/usr/bin/env bash
# The U-Net end to end: `cachelab train` with `model: unet` (a few steps, then resumed),
# its exported weights used by a run, and DeepCache on it next to the reference.
set -uo pipefail
exe=${1:?usage: test_unet_cli.sh path/to/cachelab}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
source "$(dirname "$0")/lib.sh"
export OMP_WAIT_POLICY=PASSIVE

tiny="backbone.input_size=8 backbone.channels=8 backbone.groups=4 backbone.emb_dim=16 backbone.attention_heads=2"
w="$tmp/unet.safetensors"
# shellcheck disable=SC2086
expect 0 "U-Net:|step 3/3|done: 3 steps" "train a tiny unet" "$exe" train configs/train/unet-mnist.yaml $tiny \
  train.steps=3 train.batch_size=4 train.checkpoint_every=2 train.log_every=1 train.threads=1 \
  train.checkpoint_dir="$tmp/ckpt" train.output="$w"
# shellcheck disable=SC2086
expect 0 "resumed from|at step 3|step 5/5" "resume it to 5 steps" "$exe" train configs/train/unet-mnist.yaml $tiny \
  train.steps=5 train.batch_size=4 train.checkpoint_every=2 train.log_every=1 train.threads=1 \
  train.checkpoint_dir="$tmp/ckpt" train.output="$w"
/usr/bin/python3 - "$w" <<'PY' && ok "exported weights carry step 5 and the unet format" || bad "exported weights metadata"
import json, struct, sys
f = open(sys.argv[1], "rb")
meta = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))["__metadata__"]
assert meta["step"] == "5" and meta["format"] == "cachelab unet" and "model: unet" in meta["config_yaml"], meta
PY

cat > "$tmp/dc.yaml" <<YAML
name: dc
backbone: {type: unet, input_size: 8, channels: 8, channel_mult: [1, 2, 4], groups: 4, emb_dim: 16, attention_heads: 2, weights: $w}
sampler: {type: ddim, steps: 6}
run: {samples: 2, batch: 2}
metrics: [psnr]
variants:
  dc3: {cache: {type: deepcache, interval: 3}}
  dc3_nu: {cache: {type: deepcache, interval: 3, schedule: non_uniform}}
YAML
expect 0 "all runs done|dc3|dc3_nu" "deepcache runs on the trained unet" "$exe" run "$tmp/dc.yaml" --results "$tmp/res"
/usr/bin/python3 - "$tmp/res/dc" <<'PY' && ok "deepcache reuses branches.0 at 4 of 6 steps" || bad "deepcache decisions in the run files"
import glob, sys, h5py
for p in glob.glob(sys.argv[1] + "/dc3-*.h5") + glob.glob(sys.argv[1] + "/dc3_nu-*.h5"):
    f = h5py.File(p, "r")
    names = [n.decode() if isinstance(n, bytes) else n for n in f["sites/names"][:]]
    d = f["sites/decision"][:, names.index("branches.0")]
    assert (d == 1).sum() == 4 and (d == 0).sum() == 2, (p, d)
    break
else:
    raise SystemExit("no run file")
PY
expect 2 "no Branch site|unet" "deepcache on the DiT is a clear error" "$exe" validate experiments/quickstart.yaml \
  variants.fora_n2.cache.type=deepcache

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
