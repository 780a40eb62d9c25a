#!/usr/bin/env bash
# Results a data scientist can use, end to end: per-command --help, index.csv with the swept
# keys / seed / reference / status in experiment order, claims that name a variant across
# the seeds of a sweep, and exports that take their identity columns from the index.
set -uo pipefail
exe=${1:?usage: test_report_cli.sh path/to/cachelab}
root=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
source "$(dirname "$0")/lib.sh"
# has|lacks "text" description -- command...: output contains / does not contain text, exit 0.
check_out() {
  local mode=$1 pattern=$2 what=$3; shift 3
  local out rc
  out=$("$@" 2>&1); rc=$?
  [ "$rc" -eq 0 ] || { bad "$what (exit $rc): $out"; return; }
  if grep -qF -- "$pattern" <<<"$out"; then
    [ "$mode" = has ] && ok "$what" || bad "$what: unexpected \`$pattern\` in: $out"
  else
    [ "$mode" = lacks ] && ok "$what" || bad "$what: missing \`$pattern\` in: $out"
  fi
}

# Each command's --help shows its own options; the internal --worker never shows.
check_out has "--jobs" "run --help shows run options" "$exe" run --help
check_out lacks "--level" "run --help leaves out export options" "$exe" run --help
check_out lacks "--worker" "run --help hides --worker" "$exe" run --help
check_out lacks "--worker" "--help hides --worker" "$exe" --help
check_out has "--level" "export --help shows export options" "$exe" export --help
check_out lacks "--jobs" "export --help leaves out run options" "$exe" export --help
check_out has "--check" "report --help shows --check" "$exe" report --help
check_out has "--markdown" "list --help shows --markdown" "$exe" list --help
check_out has "--lags" "help profile shows the profile options" "$exe" help profile
check_out has "--union-quantile" "help schedule shows the schedule options" "$exe" help schedule
check_out has "cachelab validate" "help validate shows its usage" "$exe" help validate

export OMP_WAIT_POLICY=PASSIVE
cat >"$tmp/seeds.yaml" <<'YAML'
name: seeds
base: [backbones/dit-mnist.yaml]
sampler: {type: ddim, steps: 6}   # FORA computes 3 of 6 steps at interval 2, 2 of 6 at interval 3
run: {samples: 2, batch: 2, save_samples: 2, timing_reps: 1, timing_samples: 2}
metrics: [psnr, mse]
variants:
  fora: {cache: {type: fora}}
sweep:
  cache.interval: [2, 3]
  seed: [0, 1]
claims:
  - {left: "fora[cache.interval=3]", metric: speedup_flops, op: ">", right: "fora[cache.interval=2]"}
  - {left: "fora[cache.interval=2]", metric: speedup_flops, op: ">", value: 1.0}
YAML
check_out has "ok -- 4 run(s)" "claims may name a variant across seeds" "$exe" validate "$tmp/seeds.yaml"
out=$("$exe" validate "$tmp/seeds.yaml" "claims=[{left: fora, metric: psnr, op: '>', value: 1}]" 2>&1)
[ $? -eq 2 ] && grep -qF "claim \`left\` names variant \`fora\`" <<<"$out" && ok "a name spanning other swept keys is refused" \
  || bad "a name spanning other swept keys is refused: $out"
"$exe" run "$tmp/seeds.yaml" --results "$tmp/res" >"$tmp/run.log" 2>&1 && ok "seed sweep runs" \
  || bad "seed sweep runs: $(tail -5 "$tmp/run.log")"
/usr/bin/python3 - "$tmp/res/seeds/index.csv" <<'PY' && ok "index has run, variant, seed, swept keys, reference, status in order" || bad "index columns"
import sys, pandas as pd
ix = pd.read_csv(sys.argv[1])
head = list(ix.columns[:10])
assert head == ["run_id", "run", "variant", "is_reference", "reference_run", "seed", "cache.interval", "status",
                "failed_step", "error"], head
refs, runs = ix[ix.is_reference == 1], ix[ix.is_reference == 0]
assert len(refs) == 2 and len(runs) == 4, (len(refs), len(runs))
assert list(ix.is_reference[:2]) == [1, 1], "references first"
assert list(runs.variant) == ["fora"] * 4, list(runs.variant)
assert list(runs.seed) == [0, 1, 0, 1], list(runs.seed)
assert list(runs["cache.interval"].astype(int)) == [2, 2, 3, 3]
assert refs["cache.interval"].isna().all(), "a reference has no cache"
assert (ix.status == "done").all()
# Each run is measured against the reference of its own seed.
ref_seed = dict(zip(refs.run_id, refs.seed))
assert all(ref_seed[r] == s for r, s in zip(runs.reference_run, runs.seed)), "reference of another seed"
assert list(runs.run) == [f"fora[cache.interval={n},seed={s}]" for n in (2, 3) for s in (0, 1)], list(runs.run)
PY
out=$(/usr/bin/python3 "$root/tools/report.py" "$tmp/res/seeds" 2>&1)
grep -qE "speedup_flops\(fora\[cache.interval=3\]\) = [0-9.]+ (\[.*\] )?\(mean of 2 seeds\) > speedup_flops\(fora\[cache.interval=2\]\) = [0-9.]+ (\[.*\] )?\(mean of 2 seeds\)" <<<"$out" \
  && ok "claims aggregate the seeds of a variant" || bad "claims aggregate the seeds: $out"
[ "$(grep -cE ": holds( \(paired by seed: [0-9]+ of [0-9]+ seeds\))?$" <<<"$out")" -eq 2 ] && ok "claims across seeds hold" \
  || bad "claims across seeds hold: $out"
grep -qF "holds (paired by seed: 2 of 2 seeds)" <<<"$out" && ok "two variants on the same seeds are compared seed by seed" \
  || bad "paired comparison: $out"
grep -q "<td>fora\[cache.interval=2\]</td><td>fora</td><td>2 done</td>" "$tmp/res/seeds/report/index.html" \
  && ok "report table has one row per variant across seeds" || bad "report aggregate table"
"$exe" export "$tmp/res/seeds" --level step --output "$tmp/steps.csv" >/dev/null 2>&1
/usr/bin/python3 - "$tmp/res/seeds/index.csv" "$tmp/steps.csv" <<'PY' && ok "export shares the index's identity columns" || bad "export identity columns"
import sys, pandas as pd
ix, st = pd.read_csv(sys.argv[1]), pd.read_csv(sys.argv[2])
ident = ["run_id", "run", "variant", "is_reference", "reference_run", "seed", "cache.interval", "status"]
assert list(st.columns[:len(ident)]) == ident, list(st.columns[:len(ident)])
per_run = st.drop_duplicates("run_id")[ident].reset_index(drop=True)
pd.testing.assert_frame_equal(per_run, ix[ident].reset_index(drop=True), check_dtype=False)
assert len(st) == 6 * 6
PY
echo "report cli: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
