#!/usr/bin/env bash
# Flow matching end to end: `cachelab train` with train.objective flow on a tiny DiT and
# Fashion-MNIST, then an experiment sampling those weights with heun_flow and euler_flow,
# uncached and under FORA, judged by lenet-fashion. Usage: test_flow_cli.sh path/to/cachelab
set -euo pipefail
bin=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export OMP_WAIT_POLICY=PASSIVE
arch="type: dit, input_size: 32, patch_size: 8, in_channels: 1, hidden_size: 32, depth: 2, num_heads: 2, num_classes: 10"

cat > "$tmp/train.yaml" <<EOF
model: dit
backbone: {$arch, class_dropout_prob: 0.1}
train: {objective: flow, steps: 6, batch_size: 8, warmup: 2, checkpoint_every: 3, log_every: 3,
        dataset: fashion-mnist, threads: 1, checkpoint_dir: $tmp/ckpt, output: $tmp/flow.safetensors}
EOF
"$bin" train "$tmp/train.yaml" > "$tmp/train.log"
grep -q "objective flow" "$tmp/train.log" || { echo "FAIL: the trainer did not report the flow objective"; exit 1; }
grep -q "done: 6 steps" "$tmp/train.log" || { echo "FAIL: training did not finish"; cat "$tmp/train.log"; exit 1; }

cat > "$tmp/exp.yaml" <<EOF
name: flow_cli
backbone: {$arch, weights: $tmp/flow.safetensors}
sampler: {type: heun_flow, steps: 4}
run: {samples: 4, batch: 4, cfg_scale: 2, threads: 1, timing_reps: 0}
metrics: [psnr, {type: fid, dataset: fashion-mnist}, accuracy]
judge: {type: lenet, weights: models/weights/lenet-fashion.safetensors}
variants:
  heun_fora: {cache: {type: fora, interval: 2}}
  euler_fora: {sampler: {type: euler_flow, steps: 8}, cache: {type: fora, interval: 2}}
EOF
"$bin" run "$tmp/exp.yaml" --results "$tmp/res" > "$tmp/run.log" 2>&1 || { cat "$tmp/run.log"; echo "FAIL: run"; exit 1; }

/usr/bin/python3 - "$tmp/res/flow_cli" <<'EOF'
import csv, glob, math, sys
import h5py
res = sys.argv[1]
rows = list(csv.DictReader(open(res + "/index.csv")))
assert len(rows) == 4 and all(r["status"] == "done" for r in rows), rows
for r in rows:
    assert math.isfinite(float(r["accuracy"])) and math.isfinite(float(r["fid"])), r
    if r["variant"] != "reference":
        # FORA N=2 computes half the evaluations' attention and MLP (the embedders always run).
        assert 1.5 < float(r["speedup_flops"]) < 2.0, r
        assert math.isfinite(float(r["psnr"])), r
steps = {}
for f in glob.glob(res + "/*.h5"):
    h = h5py.File(f, "r")
    steps[h.attrs["variant"] if isinstance(h.attrs["variant"], str) else h.attrs["variant"].decode()] = list(h["steps/t"][:])
# Heun 4 steps: 8 evaluations at t_k, t_{k+1}; Euler 8 steps: 8 evaluations.
assert steps["heun_fora"] == [1000, 750, 750, 500, 500, 250, 250, 0], steps["heun_fora"]
assert steps["euler_fora"] == [1000, 875, 750, 625, 500, 375, 250, 125], steps["euler_fora"]
print("flow cli: ok")
EOF
