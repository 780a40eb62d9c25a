#!/usr/bin/env bash
# `cachelab fid` end to end: a pytorch-fid-format checkpoint (hashed weights, the fixture's
# BatchNorm statistics) through tools/convert_inception.py, sample and reference .npz files
# as numpy writes them (stored and deflated), the reference's feature cache, and bad input.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"
exe=$1
use_tmp
expect 0 "written" "a pytorch-fid-style checkpoint, npz files from numpy" /usr/bin/python3 - "$root" "$tmp" <<'PY'
import json, sys
import numpy as np
import torch
root, tmp = sys.argv[1], sys.argv[2]
sys.path.insert(0, root + "/tools/fixtures")
import fid_inception, safetensors_io
fixture = root + "/tests/fixtures/fid_inception_data.safetensors"
data = safetensors_io.read(fixture)
shapes = json.loads(safetensors_io.metadata(fixture)["state_dict"])
state = {}
for name, shape in shapes.items():
    if name.endswith("num_batches_tracked"):
        state[name] = torch.tensor(0)
    elif name.endswith("running_mean") or name.endswith("running_var"):
        state[name] = data["bn." + name]
    else:
        state[name] = fid_inception.hashed_value(name, shape)
torch.save(state, tmp + "/pt_inception.pth")
images = data["images"].numpy()
rng = np.random.default_rng(0)
more = rng.integers(0, 256, size=(6, 64, 64, 3), dtype=np.uint8)
np.savez(tmp + "/samples.npz", arr_0=images)
np.savez(tmp + "/other.npz", arr_0=more)
np.savez_compressed(tmp + "/samples_deflated.npz", arr_0=images)
pool = data["pool_float64"].numpy()
np.savez(tmp + "/with_stats.npz", arr_0=images, mu=pool.mean(0), sigma=np.cov(pool, rowvar=False))
np.savez(tmp + "/float.npz", arr_0=images.astype(np.float32))
# The Inception Score of the reference's logits (ADM's formula, one split).
logits = data["logits"].double()
p = logits.softmax(1)
kl = (p * (p.log() - p.mean(0, keepdim=True).log())).sum(1).mean()
open(tmp + "/is.txt", "w").write(f"{kl.exp().item():.6f}")
print("written")
PY
expect 0 "wrote" "the checkpoint converts" /usr/bin/python3 "$root/tools/convert_inception.py" "$tmp/pt_inception.pth" "$tmp/inception.safetensors"
w="$tmp/inception.safetensors"
expect 0 "FID|precision 1.0000   recall 1.0000|reference: 4 / 4 images|wrote" "samples against themselves" \
  "$exe" fid "$tmp/samples.npz" "$tmp/samples.npz" --inception "$w" --batch 3 --output "$tmp/self.json"
expect 0 "reference: features from" "the reference's features are cached and reused" \
  "$exe" fid "$tmp/samples_deflated.npz" "$tmp/samples.npz" --inception "$w" --output "$tmp/deflated.json"
expect 0 "ok" "FID 0 against itself; IS as numpy computes it from pytorch-fid's logits; deflated reads as stored" \
  /usr/bin/python3 - "$tmp" <<'PY'
import json, sys
tmp = sys.argv[1]
a, b = json.load(open(tmp + "/self.json")), json.load(open(tmp + "/deflated.json"))
want = float(open(tmp + "/is.txt").read())
assert abs(a["fid"]) < 1e-3, a["fid"]
assert abs(a["inception_score"] - want) < 1e-3 * want, (a["inception_score"], want)
assert a["samples"]["n"] == 4 and a["precision"] == 1 and a["recall"] == 1, a
assert abs(a["fid"] - b["fid"]) < 1e-9 and a["inception_score"] == b["inception_score"], (a, b)
print("ok")
PY
expect 0 "FID against the reference file's stored mu / sigma" "a reference's stored statistics are compared too" \
  "$exe" fid "$tmp/other.npz" "$tmp/with_stats.npz" --inception "$w"
expect 2 "needs --inception FILE" "--inception is required" "$exe" fid "$tmp/samples.npz" "$tmp/samples.npz"
expect 2 "arr_0 must be uint8 images" "float images are refused" \
  "$exe" fid "$tmp/float.npz" "$tmp/samples.npz" --inception "$w"
expect 2 "not found" "a missing file is named" "$exe" fid "$tmp/nope.npz" "$tmp/samples.npz" --inception "$w"
head -c 1000 "$w" > "$tmp/garbage.npz"
expect 2 "is not an .npz (zip) file" "a file that is no zip is refused" \
  "$exe" fid "$tmp/garbage.npz" "$tmp/samples.npz" --inception "$w"
expect 2 "has no tensor" "weights of another network are refused by name" \
  "$exe" fid "$tmp/samples.npz" "$tmp/samples.npz" --inception "$root/tests/fixtures/sd_vae_compvis.safetensors"
expect 1 "not the FID Inception" "the converter refuses another checkpoint" /usr/bin/python3 - "$root" "$tmp" <<'PY'
import subprocess, sys
import torch
root, tmp = sys.argv[1], sys.argv[2]
torch.save({"w": torch.zeros(2)}, tmp + "/other.pth")
r = subprocess.run(["/usr/bin/python3", root + "/tools/convert_inception.py", tmp + "/other.pth", tmp + "/x.safetensors"],
                   capture_output=True, text=True)
print(r.stderr)
sys.exit(r.returncode)
PY
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
