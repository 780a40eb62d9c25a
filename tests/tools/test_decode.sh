#!/usr/bin/env bash
# `cachelab decode`: a latent model's saved samples through the SD VAE decoder into an .npz
# that numpy (and so the ADM evaluator) reads: `arr_0`, uint8 NHWC, CRC-checked zip.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"
exe=$1
use_tmp
cat > "$tmp/decode.yaml" <<YAML
name: decode
backbone: {type: dit, input_size: 8, patch_size: 2, in_channels: 4, hidden_size: 32, depth: 2, num_heads: 4,
           num_classes: 10, learn_sigma: true, weights: tests/fixtures/dit_adm_weights.safetensors}
guidance: {type: cfg, channels: first3}
sampler: {type: adm, timestep_respacing: "10"}
run: {samples: 3, batch: 3, save_samples: 3, cfg_scale: 4, timing_reps: 0}
metrics: [mse]
variants:
  fora_n2: {cache: {type: fora, interval: 2}}
YAML
expect 0 "fora_n2" "a latent DiT run saves its samples" "$exe" run "$tmp/decode.yaml" --results "$tmp/results"
vae="$root/tests/fixtures/sd_vae_diffusers.safetensors"
expect 0 "diffusers layout|3 images 16x16, uint8 NHWC as arr_0" "every done run of a folder decodes" \
  "$exe" decode "$tmp/results/decode" --vae "$vae"
run=$(ls "$tmp"/results/decode/fora_n2*.h5 | head -1)
expect 0 "3 images 16x16" "one run file's reference samples decode" \
  "$exe" decode "$run" --vae "$vae" --samples reference --output "$tmp/ref.npz"
expect 0 "arr_0 uint8 (3, 16, 16, 3)|crc ok|differ" "numpy reads the .npz; the zip's CRCs hold; cached and reference images differ" \
  /usr/bin/python3 - "$tmp" <<'PY'
import glob, sys, zipfile
import numpy as np
tmp = sys.argv[1]
files = sorted(glob.glob(tmp + "/results/decode/npz/*.npz"))
assert len(files) == 1, files  # the reference is decoded only with --samples reference
for f in files + [tmp + "/ref.npz"]:
    assert zipfile.ZipFile(f).testzip() is None
a = np.load(files[0])["arr_0"]
r = np.load(tmp + "/ref.npz")["arr_0"]
print("arr_0", a.dtype, a.shape, "crc ok", "differ" if (a != r).any() else "same")
PY
expect 2 "needs --vae FILE" "--vae is required" "$exe" decode "$run"
expect 2 "holds no SD VAE decoder" "a file that is no VAE is refused" \
  "$exe" decode "$run" --vae "$root/tests/fixtures/dit_adm_weights.safetensors"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
