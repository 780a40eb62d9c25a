#!/usr/bin/env bash
# The command line end to end on the bundled model: listing, validation, bad input
# (clear message, exit code != 0, nothing half written), a tiny run, resume, report.
set -uo pipefail
exe=${1:?usage: test_cli.sh path/to/cachelab}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0
ok() { echo "ok   $1"; pass=$((pass + 1)); }
bad() { echo "FAIL $1"; fail=$((fail + 1)); }
# expect CODE "text1|text2" description -- command...
expect() {
  local code=$1 pattern=$2 what=$3; shift 3
  local out rc
  out=$("$@" 2>&1); rc=$?
  if [ "$rc" -ne "$code" ]; then bad "$what (exit $rc, wanted $code): $out"; return; fi
  local IFS='|'
  for p in $pattern; do
    grep -qF -- "$p" <<<"$out" || { bad "$what: missing \`$p\` in: $out"; return; }
  done
  ok "$what"
}

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
expect 2 "run.dtype|float64|not one of" "validate: bad dtype" "$exe" validate experiments/quickstart.yaml run.dtype=float64
expect 2 "not found" "missing experiment file" "$exe" run "$tmp/none.yaml"

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
[ -f "$res/tiny/index.csv" ] && [ "$(ls "$res"/tiny/*.h5 | wc -l)" -eq 3 ] && ok "run files and index written" \
  || bad "run files and index written: $(ls "$res/tiny")"
expect 0 "skipped (done" "re-running skips finished runs" "$exe" run "$tmp/tiny.yaml" --results "$res"
expect 0 "1" "--count prints the number of runs" "$exe" sweep "$tmp/tiny.yaml" --count

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

if /usr/bin/python3 -c "import h5py, matplotlib" 2>/dev/null; then
  expect 0 "speedup_flops(fora) = |> value = 1: holds|: does not hold|cannot be evaluated: \`fora\` has no metric \`fid\`" \
    "report evaluates every claim" "$exe" report "$res/tiny"
  for f in index.html speed_quality.png drift.png decisions.png errors.png samples.png; do
    [ -s "$res/tiny/report/$f" ] || { bad "report file $f"; continue; }
  done
  grep -q "does not hold" "$res/tiny/report/index.html" && ok "report page written with claims" || bad "report page"
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
