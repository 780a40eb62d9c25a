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
expect 0 "FID|precision 1.0000   recall 1.0000|reference batch: 4 / 4 images|wrote" "samples against themselves" \
  "$exe" fid "$tmp/samples.npz" "$tmp/samples.npz" --inception "$w" --batch 3 --output "$tmp/self.json"
# (the same --batch: Inception over batches of 3 + 1 and of 4 differs in the last float digits on
# some BLAS kernel paths, and this compares the file formats only)
expect 0 "reference batch: features from" "the reference's features are cached and reused" \
  "$exe" fid "$tmp/samples_deflated.npz" "$tmp/samples.npz" --inception "$w" --batch 3 --output "$tmp/deflated.json"
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
# Inside a run: a latent DiT's samples decoded by the SD VAE before the metrics, scored by the
# inception judge; PSNR on images agrees with numpy's on what `cachelab decode` writes.
cat > "$tmp/latent.yaml" <<YAML
name: latent
backbone: {type: dit, input_size: 8, patch_size: 2, in_channels: 4, hidden_size: 32, depth: 2, num_heads: 4,
           num_classes: 10, learn_sigma: true, weights: tests/fixtures/dit_adm_weights.safetensors}
guidance: {type: cfg, channels: first3}
sampler: {type: adm, timestep_respacing: "10"}
run: {samples: 4, batch: 4, save_samples: 4, cfg_scale: 4, timing_reps: 0}
decoder: {type: sd_vae, weights: tests/fixtures/sd_vae_diffusers.safetensors}
judge: {type: inception, weights: $w}
metrics: [psnr, sample_quality]
variants:
  fora_n5: {cache: {type: fora, interval: 5}}
YAML
expect 0 "fora_n5" "a latent run is scored on decoded images by the inception judge" \
  "$exe" run "$tmp/latent.yaml" --results "$tmp/results"
run=$(ls "$tmp"/results/latent/fora_n5*.h5 | head -1)
"$exe" decode "$run" --vae "$root/tests/fixtures/sd_vae_diffusers.safetensors" --output "$tmp/x.npz" >/dev/null
"$exe" decode "$run" --vae "$root/tests/fixtures/sd_vae_diffusers.safetensors" --samples reference --output "$tmp/r.npz" >/dev/null
expect 0 "image psnr" "PSNR is on the decoded images; sample_quality's numbers are in the run" /usr/bin/python3 - "$run" "$tmp" <<'PY'
import sys
import h5py, numpy as np
run, tmp = sys.argv[1], sys.argv[2]
with h5py.File(run, "r") as f:
    s = {k: float(v) for k, v in f["summary"].attrs.items()} if "summary" in f else {}
    if not s:
        s = {k: float(f.attrs[k]) for k in f.attrs if k.startswith("summary.")}
    s = {k.replace("summary.", ""): v for k, v in s.items()}
    assert f["samples/x"].shape[1] == 4, f["samples/x"].shape  # the run file keeps latents
for k in ["fid_vs_reference", "inception_score", "precision", "recall"]:
    assert k in s and np.isfinite(s[k]), (k, s)
x = np.load(tmp + "/x.npz")["arr_0"].astype(np.float64) / 127.5 - 1
r = np.load(tmp + "/r.npz")["arr_0"].astype(np.float64) / 127.5 - 1
# uint8 truncation moves each pixel of either image by less than one level (2 / 255), so the
# root mean square differences of float and uint8 images differ by less than that.
rms_float = np.sqrt(4 / 10 ** (s["psnr"] / 10))
rms_uint8 = np.sqrt(((x - r) ** 2).mean())
assert abs(rms_float - rms_uint8) < 2 / 255, (rms_float, rms_uint8)
print("image psnr", s["psnr"], "rms", rms_float, "uint8 rms", rms_uint8)
PY
sed -i 's|weights: tests/fixtures/sd_vae_diffusers.safetensors}|weights: tests/fixtures/nope.safetensors}|' "$tmp/latent.yaml"
expect 2 "nope.safetensors" "a missing VAE file fails before anything runs" "$exe" validate "$tmp/latent.yaml" --results "$tmp/r2"
# The full-size experiment files: every key valid; what stops them here is only a public
# checkpoint that users download (docs/full-size.md).
for f in "$root"/experiments/full/*.yaml "$root"/experiments/papers/full/*.yaml; do
  expect 2 "checkpoints/|not found" "$(basename "$f"): valid, waiting for the public weights" \
    "$exe" validate "$f" run.device=cpu --results "$tmp/v"
done
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
