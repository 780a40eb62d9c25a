#!/usr/bin/env bash
# Re-runs experiments from scratch (their calibrations included) and checks them against the
# committed summaries the docs are generated from, or writes those summaries.
#
#   bash tools/reproduce.sh [options] EXP.yaml ...     # or --all: every committed summary's experiment
#     --write          write docs/summaries/<name>.json instead of comparing with it
#     --perturb        also run each experiment under perturbations that should not matter
#                      (2 threads, OpenBLAS's Haswell kernels, calibration seeds 8 and 9 where
#                      it calibrates and does not sweep calibration.seed itself); claims whose
#                      verdict moves are marked fragile
#     --results DIR    results root (default results/reproduce); runs already done there are kept
#
# Comparing writes docs/reproduction/<name>.json; `python3 tools/docs.py --cachelab build/cachelab`
# then regenerates docs/reproduction.md (which verdicts reproduced, on which CPU).
# Calibration commands are the `#   cachelab calibrate ...` lines of each experiment's header (an
# experiment with a `calibration:` map has none: `cachelab run` makes its calibration files).
set -euo pipefail
cd "$(dirname "$0")/.."
exe=${CACHELAB:-build/cachelab}
mode=compare perturb=0 root=results/reproduce all=0
files=()
while [ $# -gt 0 ]; do
  case "$1" in
    --write) mode=write ;;
    --perturb) perturb=1 ;;
    --results) root=$2; shift ;;
    --all) all=1 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    -*) echo "reproduce: unknown option $1" >&2; exit 2 ;;
    *) files+=("$1") ;;
  esac
  shift
done
# The unperturbed runs use OpenBLAS's own kernel choice for this CPU: an environment that forces
# one (OPENBLAS_CORETYPE) would make them the Haswell perturbation itself.
if [ -n "${OPENBLAS_CORETYPE:-}" ]; then
  echo "[reproduce] OPENBLAS_CORETYPE=$OPENBLAS_CORETYPE is set here: unset for every run but the Haswell perturbation" >&2
  unset OPENBLAS_CORETYPE
fi
[ -x "$exe" ] || { echo "reproduce: $exe not built (bash tools/build.sh)" >&2; exit 2; }
if [ $all -eq 1 ]; then
  while IFS= read -r f; do files+=("$f"); done < <(/usr/bin/python3 - <<'EOF'
import glob, json, os, yaml
names = {os.path.basename(p)[:-5] for p in glob.glob("docs/summaries/*.json")}
for f in sorted(glob.glob("experiments/*.yaml") + glob.glob("experiments/papers/*.yaml")):
    doc = yaml.safe_load(open(f)) or {}
    if str(doc.get("name") or os.path.basename(f)[:-5]) in names:
        print(f)
EOF
)
fi
[ ${#files[@]} -gt 0 ] || { echo "usage: bash tools/reproduce.sh [--write] [--perturb] EXP.yaml ... | --all" >&2; exit 2; }

name_of() { /usr/bin/python3 -c 'import os,sys,yaml; d=yaml.safe_load(open(sys.argv[1])) or {}; print(d.get("name") or os.path.basename(sys.argv[1])[:-5])' "$1"; }
# The experiment's `#   cachelab calibrate ...` header lines, with an extra override ($2).
calibrate() {
  local file=$1 extra=${2:-}
  { grep -E '^#\s+cachelab calibrate ' "$file" || true; } | sed -E 's/^#\s+cachelab //; s/\s+#.*$//' | while read -r line; do
    if [ -n "$extra" ]; then line=$(echo "$line" | sed -E 's/ seed=[0-9]+//')" $extra"; fi
    echo "[reproduce] cachelab $line"
    # shellcheck disable=SC2086
    "$exe" $line </dev/null
  done
}
has_calibration() { grep -qE '^#\s+cachelab calibrate ' "$1"; }
# An experiment with a `calibration:` map whose sweep does not already cover calibration.seed.
calibrates_on_demand() {
  /usr/bin/python3 -c 'import sys,yaml; d=yaml.safe_load(open(sys.argv[1])) or {}; sys.exit(0 if isinstance(d.get("calibration"), dict) and "calibration.seed" not in (d.get("sweep") or {}) else 1)' "$1"
}

status=0
for file in "${files[@]}"; do
  [ -f "$file" ] || { echo "reproduce: $file does not exist" >&2; exit 2; }
  name=$(name_of "$file")
  start=$(date +%s)
  echo "[reproduce] $file -> $root/$name"
  calibrate "$file"
  "$exe" run "$file" --results "$root" </dev/null
  perturbed=()
  if [ $perturb -eq 1 ]; then
    "$exe" run "$file" --results "$root/perturbed/2-threads" --threads 2 </dev/null
    perturbed+=(--perturbed "with 2 threads=$root/perturbed/2-threads/$name")
    OPENBLAS_CORETYPE=Haswell "$exe" run "$file" --results "$root/perturbed/openblas-haswell" </dev/null
    perturbed+=(--perturbed "with OpenBLAS Haswell kernels=$root/perturbed/openblas-haswell/$name")
    if has_calibration "$file"; then
      for s in 8 9; do
        calibrate "$file" "seed=$s"
        "$exe" run "$file" --results "$root/perturbed/calibration-seed-$s" </dev/null
        perturbed+=(--perturbed "calibrated on seed $s=$root/perturbed/calibration-seed-$s/$name")
      done
      calibrate "$file"  # leave the experiment's own calibration in place
    fi
    if calibrates_on_demand "$file"; then
      for s in 8 9; do
        "$exe" run "$file" "calibration.seed=$s" --results "$root/perturbed/calibration-seed-$s" </dev/null
        perturbed+=(--perturbed "calibrated on seed $s=$root/perturbed/calibration-seed-$s/$name")
      done
    fi
  fi
  if [ $mode = write ]; then
    "$exe" report "$root/$name" --summary "docs/summaries/$name.json" "${perturbed[@]}"
  else
    "$exe" report "$root/$name" --compare "docs/summaries/$name.json" "${perturbed[@]}" || status=1
    mkdir -p docs/reproduction
    cp "$root/$name/report/compare.json" "docs/reproduction/$name.json"
  fi
  echo "[reproduce] $file: $(( $(date +%s) - start )) s"
done
exit $status
