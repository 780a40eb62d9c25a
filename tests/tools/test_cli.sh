#!/usr/bin/env bash
# The command line end to end on the bundled model: listing, validation, bad input
# (clear message, exit code != 0, nothing half written), a tiny run, resume, report.
set -uo pipefail
exe=${1:?usage: test_cli.sh path/to/cachelab}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
source "$(dirname "$0")/lib.sh"

export OMP_WAIT_POLICY=PASSIVE
expect 0 "fora|fbcache|dit|ddim|interval" "list shows components and keys" "$exe" list
expect 0 "ok -- 6 run(s)" "quickstart validates" "$exe" validate experiments/quickstart.yaml
expect 2 "intervall|did you mean \`interval\`|command line" "typo in an override" \
  "$exe" validate experiments/quickstart.yaml variants.fora_n2.cache.intervall=3
expect 2 "unknown command|did you mean \`run\`" "unknown command" "$exe" rnu x.yaml
# Value checks run where the config is read: validate rejects them before any run.
expect 2 "cache.interval|= 0|must be >= 1" "validate: interval 0" \
  "$exe" validate experiments/quickstart.yaml variants.fora_n2.cache.interval=0
expect 2 "mlpp|did you mean \`mlp\`" "validate: unknown site kind in fora layers" \
  "$exe" validate experiments/quickstart.yaml "variants.fora_n2.cache.layers=[attn, mlpp]"
expect 2 "sampler.steps|must be in [1, train_steps]" "validate: zero sampler steps" \
  "$exe" validate experiments/quickstart.yaml sampler.steps=0
expect 2 "run.cfg_scale|null label" "validate: guidance without a null label" \
  "$exe" validate experiments/quickstart.yaml backbone.class_dropout_prob=0 'backbone.weights=""'
expect 2 "block_kv|block-causal|this backbone is bidirectional" "validate: a K/V cache the backbone cannot serve" \
  "$exe" validate experiments/papers/fast_dllm_v2.yaml backbone.block_size=0
expect 2 "run.dtype|float64|not one of" "validate: bad dtype" "$exe" validate experiments/quickstart.yaml run.dtype=float64
expect 2 "--jobs 0" "--jobs 0 is an error" "$exe" sweep experiments/quickstart.yaml --jobs 0
expect 2 "--index -2" "--index -2 is an error" "$exe" sweep experiments/quickstart.yaml --index -2
expect 2 "--threads 0" "--threads 0 is an error" "$exe" run experiments/quickstart.yaml --threads 0
expect 2 "--only \`nope\`|variants: fora_n2" "--only with an unknown variant is an error" \
  "$exe" run experiments/quickstart.yaml --only nope
out=$("$exe" validate experiments/quickstart.yaml variants.fora_n2.cache.interval=0 2>&1)
grep -q "raised at\|failed at" <<<"$out" && bad "errors show no source locations: $out" || ok "errors show no source locations"
expect 2 "not found" "missing experiment file" "$exe" run "$tmp/none.yaml"
expect 0 "ok -- 9 run(s)" "core_v2_mdlm validates" "$exe" validate experiments/core_v2_mdlm.yaml
expect 0 "ok -- 3 run(s)" "core_v2_video validates" "$exe" validate experiments/core_v2_video.yaml
# The sequence pipelines end to end (token and video samples in the run files, their report).
for e in mdlm video; do
  expect 0 "all runs done" "core_v2_$e runs" "$exe" run experiments/core_v2_$e.yaml run.samples=2 run.batch=2 \
    --results "$tmp/seq"
  expect 0 "report:" "core_v2_$e report" "$exe" report "$tmp/seq/core_v2_$e"
done

cat > "$tmp/tiny.yaml" <<'YAML'
name: tiny
base: [backbones/dit-mnist.yaml]
sampler: {type: ddim, steps: 4}
run: {samples: 2, batch: 2, save_samples: 2}
metrics: [psnr, mse]
variants:
  fora: {cache: {type: fora, interval: 2}}
claims:
  - {left: fora, metric: speedup_flops, op: ">", value: 1.0}
  - {left: fora, metric: speedup_flops, op: "<", right: reference}
  - {left: fora, metric: fid, op: "<", value: 1.0}
YAML
res="$tmp/results"
expect 0 "all runs done" "tiny experiment runs" "$exe" run "$tmp/tiny.yaml" --results "$res"
# glob("*.h5") finds exactly the run files (reference + fora); the experiment file is a dot file.
[ -f "$res/tiny/index.csv" ] && [ -f "$res/tiny/.experiment.h5" ] && [ "$(ls "$res"/tiny/*.h5 | wc -l)" -eq 2 ] \
  && ok "run files and index written" \
  || bad "run files and index written: $(ls "$res/tiny")"
expect 0 "skipped (done" "re-running skips finished runs" "$exe" run "$tmp/tiny.yaml" --results "$res"
expect 0 "1" "--count prints the number of runs" "$exe" sweep "$tmp/tiny.yaml" --count
# A result always matches its config: a changed setting is a new run, and the index lists
# only the experiment's runs as it is now.
expect 0 "done in" "a changed config is run again, not skipped" "$exe" run "$tmp/tiny.yaml" --results "$res" run.samples=1
expect 0 "skipped (done" "...and is done afterwards" "$exe" run "$tmp/tiny.yaml" --results "$res" run.samples=1
rows=$(($(wc -l < "$res/tiny/index.csv") - 1))
[ "$rows" -eq 2 ] && ok "index lists only the current config's runs" || bad "index rows after a config change: $rows"
mkdir -p "$tmp/other" && cp "$tmp/tiny.yaml" "$tmp/other/tiny.yaml"
expect 2 "belongs to experiment|different \`name:\`" "two experiment files with one name do not share a folder" \
  "$exe" run "$tmp/other/tiny.yaml" --results "$res"

# Calibration: a dec corrector and a w8a8 quantizer need their files; runs stop before
# anything runs until `cachelab calibrate` wrote them.
cat > "$tmp/cal.yaml" <<YAML
name: cal
base: [backbones/dit-mnist.yaml]
sampler: {type: ddim, steps: 4}
run: {samples: 2, batch: 2, save_samples: 2}
metrics: [psnr]
variants:
  dec: {cache: {type: dec, inner: {type: fora, interval: 2}, table: $tmp/cal/dec.safetensors}}
  tea: {cache: {type: teacache, threshold: 0.1, fit_degree: 2, calibration: $tmp/cal/tea.txt}}
  w8: {ops: [{type: w8a8, mode: int8, calibration: $tmp/cal/w8.safetensors}]}
  pq: {cache: {type: vc, inner: {type: sixbit, budget_bits: 6}, table: $tmp/cal/vc.safetensors}, ops: [{type: ptq, low_bits: 4, correct: true, calibration_select: tap, tap_clusters: 2, calibration: $tmp/cal/pq.safetensors}]}
  erta: {cache: {type: interval_adjust, inner: {type: residual_linear, inner: {type: fora, interval: 2}, table: $tmp/cal/rl.safetensors}, table: $tmp/cal/ia.safetensors}}
YAML
expect 2 "no coefficient table|cachelab calibrate" "a missing calibration file stops validate" \
  "$exe" validate "$tmp/cal.yaml"
expect 0 "dec: fitted|teacache: fitted|w8a8: input ranges|vc: output spread|TAP kept 2 of 16|correction of|interval_adjust: 2 cached steps|calibrated 5 run(s)" \
  "calibrate fits every component (a nested pair innermost first)" \
  "$exe" calibrate "$tmp/cal.yaml" seed=1
expect 0 "all runs done" "calibrated variants run" "$exe" run "$tmp/cal.yaml" --results "$res"
expect 2 "no variant with a calibratable component" "calibrate without calibratable components" \
  "$exe" calibrate "$tmp/tiny.yaml"

# SIGTERM (what Slurm sends at the time limit) stops at the next step: exit 143, the run in
# flight abandoned and its temporary file removed, nothing half written.
cat > "$tmp/long.yaml" <<'YAML'
name: long
base: [backbones/dit-mnist.yaml]
sampler: {type: ddim, steps: 400}
run: {samples: 8, batch: 8}
YAML
"$exe" run "$tmp/long.yaml" --results "$res" > "$tmp/long.log" 2>&1 &
pid=$!
for _ in $(seq 100); do grep -q "experiment \`long\`" "$tmp/long.log" && break; sleep 0.1; done
sleep 1
kill -TERM $pid
wait $pid
rc=$?
if [ "$rc" -eq 143 ] && grep -q "interrupted" "$tmp/long.log" && ! ls "$res"/long/*.tmp* >/dev/null 2>&1 \
  && ! ls "$res"/long/reference-*.h5 >/dev/null 2>&1; then
  ok "SIGTERM stops cleanly (exit 143, no temporary or half-written run file)"
else
  bad "SIGTERM stops cleanly (exit $rc): $(tail -3 "$tmp/long.log"); $(ls "$res/long")"
fi

cat > "$tmp/grid.yaml" <<'YAML'
name: grid
base: [backbones/dit-mnist.yaml]
sampler: {type: ddim, steps: 3}
run: {samples: 2, batch: 2, save_samples: 1}
cache: {type: fora}
sweep:
  cache.interval: [2, 3, 4]
YAML
expect 0 "3" "grid size" "$exe" sweep "$tmp/grid.yaml" --count
expect 0 "cache.interval=3" "--index runs one grid point" "$exe" sweep "$tmp/grid.yaml" --index 1 --results "$res"
expect 0 "all runs done" "--jobs 2 runs the rest in worker processes" "$exe" sweep "$tmp/grid.yaml" --jobs 2 --results "$res"
rows=$(($(wc -l < "$res/grid/index.csv") - 1))
[ "$rows" -eq 4 ] && ok "index lists reference + 3 grid points" || bad "index rows: $rows"

expect 2 "nope.safetensors|not found|cachelab train" "missing weights file" \
  "$exe" run "$tmp/tiny.yaml" --results "$res" backbone.weights=nope.safetensors
expect 2 "hidden_size|shape" "weights that do not match the config" \
  "$exe" run "$tmp/tiny.yaml" --results "$tmp/r2" backbone.hidden_size=64
touch "$tmp/file"
expect 2 "not writable|$tmp/file" "unwritable results folder" "$exe" run "$tmp/tiny.yaml" --results "$tmp/file/sub"
ls "$res"/tiny/*.tmp* >/dev/null 2>&1 && bad "no temporary files left" || ok "no temporary files left"

# A Learning-to-Cache router trained by the command (tiny recipe), then used by a run.
expect 0 "[l2c] done" "train an l2c router" "$exe" train configs/train/l2c-dit-mnist.yaml sampler.steps=4 \
  train.trajectories=2 train.eval_trajectories=1 train.pool_batch=3 train.batch_size=2 train.iterations=2 \
  train.output="$tmp/router.safetensors" train.log="$tmp/router_log.h5"
[ -s "$tmp/router.safetensors" ] && [ -s "$tmp/router_log.h5" ] && ok "router and loss curve written" \
  || bad "router and loss curve written"
expect 0 "all runs done" "a run with the trained router" "$exe" run "$tmp/tiny.yaml" --results "$tmp/r3" \
  "variants.fora.cache={type: l2c, router: $tmp/router.safetensors}"
expect 2 "trained for 50 sampling steps|takes 4|sampler.steps=4" "validate: router for another step count" \
  "$exe" validate "$tmp/tiny.yaml" "variants.fora.cache={type: l2c}"
# The same router format trained with HarmoniCa's objective (tiny recipe), then used by a run.
expect 0 "[harmonica] done|image-error proxy weights" "train a harmonica router" "$exe" train \
  configs/train/harmonica-dit-mnist.yaml sampler.steps=4 train.trajectories=2 train.eval_trajectories=1 \
  train.pool_batch=3 train.batch_size=2 train.iterations=3 train.proxy_samples=2 train.refresh_every=2 \
  train.output="$tmp/hc_router.safetensors" train.log="$tmp/hc_log.h5"
expect 0 "all runs done" "a run with the harmonica router" "$exe" run "$tmp/tiny.yaml" --results "$tmp/r4" \
  "variants.fora.cache={type: l2c, router: $tmp/hc_router.safetensors}"
expect 2 "train.objective|harmonica" "bad train.objective" "$exe" train configs/train/harmonica-dit-mnist.yaml \
  train.objective=harmonic

if /usr/bin/python3 -c "import h5py, matplotlib" 2>/dev/null; then
  expect 0 "speedup_flops(fora) = |> value = 1: holds|: does not hold|cannot be evaluated: \`fora\` has no metric \`fid\`" \
    "report evaluates every claim" "$exe" report "$res/tiny"
  for f in index.html speed_quality.png drift.png decisions.png errors.png samples.png; do
    [ -s "$res/tiny/report/$f" ] || { bad "report file $f"; continue; }
  done
  grep -q "does not hold" "$res/tiny/report/index.html" && ok "report page written with claims" || bad "report page"
  expect 1 "check: not holding" "report --check fails when a claim does not hold" "$exe" report "$res/tiny" --check
  # Tidy exports: one row per run / run x step / run x step x site, with the sweep's keys.
  expect 0 "export: 4 rows" "export --level run" "$exe" export "$res/grid" --level run --output "$tmp/runs.csv"
  expect 0 "export:" "export --level site" "$exe" export "$res/grid" --level site --output "$tmp/sites.csv"
  if /usr/bin/python3 - "$tmp/runs.csv" "$tmp/sites.csv" <<'PY'
import sys, pandas as pd
runs, sites = pd.read_csv(sys.argv[1]), pd.read_csv(sys.argv[2])
assert list(runs["variant"]) == ["reference", "cache.interval=2", "cache.interval=3", "cache.interval=4"], list(runs["variant"])
assert sorted(runs["cache.interval"].dropna().astype(int)) == [2, 3, 4]
assert {"run_id", "seed", "step", "site", "kind", "decision", "err_ref_rel_l1"} <= set(sites.columns)
assert len(sites) == 4 * 3 * sites["site"].nunique()
PY
  then ok "exports are tidy tables with the swept keys"; else bad "exports"; fi
  # speedup_wall is a measurement: interleaved repetitions on one batch, median and quartiles.
  if /usr/bin/python3 - "$res/tiny" <<'PY'
import glob, sys, h5py
runs = [h5py.File(p) for p in glob.glob(sys.argv[1] + "/*.h5")]
v = [f for f in runs if f.attrs["is_reference"] == 0 and f.attrs["status"] == "done"]
assert v, "no variant run"
for f in v:
    s = f["summary"].attrs
    assert len(f["timing/reference_s"]) == len(f["timing/variant_s"]) == s["timing_reps"] == 3
    assert s["speedup_wall_q25"] <= s["speedup_wall"] <= s["speedup_wall_q75"]
    assert f["steps/wall_ms"].attrs["unit"] == "ms"
PY
  then ok "wall speedup from interleaved repetitions with quartiles"; else bad "wall speedup repetitions"; fi
  # An uncached sweep is its references, one per point; the report keeps each apart.
  cat > "$tmp/refs.yaml" <<'YAML'
name: refs
base: [backbones/dit-mnist.yaml]
sampler: {type: ddim, steps: 3}
run: {samples: 2, batch: 2, save_samples: 2}
sweep:
  run.cfg_scale: [1.5, 4]
YAML
  expect 0 "0 run(s) + 2 reference(s)|all runs done" "uncached sweep runs one reference per point" \
    "$exe" run "$tmp/refs.yaml" --results "$res"
  expect 0 "report:" "report of references only" "$exe" report "$res/refs"
  n=$(grep -o "reference\[run.cfg_scale=[0-9.]*\]" "$res/refs/report/index.html" | sort -u | wc -l)
  [ "$n" -eq 2 ] && ok "report shows both references" || bad "report shows both references ($n)"
fi
echo "cli: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
