#!/usr/bin/env bash
# tools/convert_dit.py: a DiT checkpoint pickled as the reference repository saves it (a
# train.py checkpoint: the state dict under `ema`, DDP's `module.` prefix) converts to
# safetensors with every tensor unchanged, and cachelab loads it with every name and shape
# matched (the committed reference-DiT fixture's weights stand in for the public file).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"
exe=$1
use_tmp
/usr/bin/python3 - "$root" "$tmp" <<'PY'
import os, sys, torch
sys.path.insert(0, os.path.join(sys.argv[1], "tools", "fixtures"))
import safetensors_io
sd = safetensors_io.read(os.path.join(sys.argv[1], "tests/fixtures/dit_adm_weights.safetensors"))
torch.save({"model": {k: v * 0 for k, v in sd.items()}, "ema": {"module." + k: v for k, v in sd.items()},
            "opt": {}, "args": None}, os.path.join(sys.argv[2], "train_ckpt.pt"))
torch.save({k: v for k, v in sd.items() if k != "pos_embed"}, os.path.join(sys.argv[2], "broken.pt"))
torch.save({"not": "a model"}, os.path.join(sys.argv[2], "junk.pt"))
PY
expect 0 "32 tensors|depth 2, hidden_size 32, patch_size 2, in_channels 4, input_size 8, num_classes 10, learn_sigma true" \
  "a train.py checkpoint converts (ema taken, module. dropped)" \
  /usr/bin/python3 "$root/tools/convert_dit.py" "$tmp/train_ckpt.pt" "$tmp/out/dit.safetensors"
expect 0 "unchanged" "every converted tensor equals the original" /usr/bin/python3 - "$root" "$tmp" <<'PY'
import os, sys, torch
sys.path.insert(0, os.path.join(sys.argv[1], "tools", "fixtures"))
import safetensors_io
a = safetensors_io.read(os.path.join(sys.argv[1], "tests/fixtures/dit_adm_weights.safetensors"))
b = safetensors_io.read(os.path.join(sys.argv[2], "out/dit.safetensors"))
assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a), "tensors differ"
print("unchanged")
PY
cat > "$tmp/exp.yaml" <<YAML
name: convert
backbone: {type: dit, input_size: 8, patch_size: 2, in_channels: 4, hidden_size: 32, depth: 2, num_heads: 4,
           num_classes: 10, learn_sigma: true, weights: $tmp/out/dit.safetensors}
guidance: {type: cfg, channels: first3}
sampler: {type: adm, timestep_respacing: "10"}
run: {samples: 1, batch: 1, cfg_scale: 4}
metrics: [mse]
YAML
expect 0 "ok -- 0 run(s), 1 reference(s)" "cachelab loads the converted file (every name and shape matched)" \
  "$exe" validate "$tmp/exp.yaml" --results "$tmp/results"
expect 2 'x_embedder.proj.weight` has shape [32, 4, 2, 2] but the configured model expects [32, 2, 2, 2]' "a file made for another configuration is refused" \
  "$exe" validate "$tmp/exp.yaml" backbone.in_channels=2 backbone.learn_sigma=false --results "$tmp/results"
/usr/bin/python3 "$root/tools/convert_dit.py" "$tmp/broken.pt" "$tmp/out/broken.safetensors" >/dev/null 2>&1 && bad "no pos_embed accepted" || ok "a checkpoint without pos_embed is refused"
expect 1 "holds no DiT state dict" "a pickle without tensors is refused" \
  /usr/bin/python3 "$root/tools/convert_dit.py" "$tmp/junk.pt" "$tmp/out/junk.safetensors"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
