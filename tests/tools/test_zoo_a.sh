#!/usr/bin/env bash
# The cache zoo (part A) from the command line: every new policy validates and runs on the
# bundled model, `cachelab calibrate` fits MagCache's ratios and searches a threshold, the
# files carry the backbone's digest, and another backbone's file is refused.
set -uo pipefail
exe=${1:?usage: test_zoo_a.sh path/to/cachelab}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
source "$(dirname "$0")/lib.sh"
export OMP_WAIT_POLICY=PASSIVE
# The paper files' claims name variants across seeds (`zeus_2of3` = all its seeds), which
# the report aggregates; their runs are validated here without the claims.
for f in experiments/papers/delta_dit.yaml experiments/papers/zeus.yaml; do
  expect 0 "ok --" "$f validates" "$exe" validate "$f" 'claims=[]'
done

cat > "$tmp/zoo.yaml" <<YAML
name: zoo
base: [backbones/dit-mnist.yaml]
sampler: {type: ddim, steps: 10}
run: {samples: 2, batch: 2, save_samples: 2, timing_reps: 0}
metrics: [psnr]
variants:
  mag: {cache: {type: magcache, threshold: 0.3, retention_ratio: 0.2, calibration: $tmp/cal/mag.txt}}
  search:
    cache: {type: threshold_search, target: flops_speedup, value: 1.3, lo: 0, hi: 1, grid: 3, refine: 2,
            inner: {type: fbcache, warmup_steps: 1}, file: $tmp/cal/search.txt}
  search_tea:
    cache: {type: threshold_search, target: flops_speedup, value: 1.3, lo: 0, hi: 1, grid: 3, refine: 1,
            inner: {type: teacache, calibration: $tmp/cal/tea.txt}, file: $tmp/cal/search-tea.txt}
  delta: {cache: {type: delta_dit, cached_blocks: 4}}
  db: {cache: {type: dbcache, warmup_steps: 2, threshold: 0.3}}
  zeus: {cache: {type: zeus}}
  cgt: {cache: {type: cg_taylor, warmup_steps: 2, threshold: 0.3}}
  scm: {cache: {type: scm, preset: fast}}
  scm_db: {cache: {type: scm, preset: slow, inner: {type: dbcache, warmup_steps: 2, threshold: 0.3}}}
  easy: {cache: {type: easycache, warmup_steps: 2, threshold: 0.1}}
  ucache: {cache: {type: ucache, start: 0.2, threshold: 2.0}}
  spectrum: {cache: {type: spectrum, warmup: 2}}
YAML
expect 2 "no calibration file|cachelab calibrate" "a missing ratio file stops validate" "$exe" validate "$tmp/zoo.yaml"
expect 0 "magcache: 10 magnitude ratios|threshold_search: fbcache.threshold|teacache: fitted|threshold_search: teacache.threshold|calibrated 3 run(s)" \
  "calibrate fits the ratios and searches the thresholds (a searched policy that is fitted itself first)" "$exe" calibrate "$tmp/zoo.yaml"
grep -q "^backbone_digest: [0-9a-f]\{16\}$" "$tmp/cal/mag.txt" && grep -q "^value: " "$tmp/cal/search.txt" \
  && [ "$(grep -c '^curve: ' "$tmp/cal/search.txt")" -ge 3 ] \
  && ok "files carry the digest, the value and the curve" || bad "calibration files: $(cat "$tmp"/cal/*)"
res="$tmp/results"
expect 0 "all runs done" "every zoo policy runs" "$exe" run "$tmp/zoo.yaml" --results "$res"
# Every variant reused something (reuse_fraction > 0) and the search reached its target.
/usr/bin/python3 - "$res/zoo" <<'PY' && ok "every variant hits; the searched threshold reaches 1.3x" || bad "hits"
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1] + "/index.csv")))
bad = [r["variant"] for r in rows if r["variant"] != "reference" and not float(r["reuse_fraction"]) > 0]
sp = [float(r["speedup_flops"]) for r in rows if r["variant"] == "search"]
print("no hits:", bad, "search speedup:", sp)
sys.exit(1 if bad or not sp or sp[0] < 1.3 else 0)
PY
# Another backbone (other weights) refuses the files.
expect 2 "fitted on another backbone|cachelab calibrate" "another backbone's ratio file is an error" \
  "$exe" run "$tmp/zoo.yaml" --results "$res" 'backbone.weights=""' --only mag
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
