#!/usr/bin/env bash
# Sweeps that survive a cluster, end to end: two processes on one results folder do every
# run exactly once; a killed process's lock and temporaries are taken over / removed at
# once; a process in another PID namespace neither deletes nor steals live files; a full
# disk (a file-size limit) fails cleanly and keeps finished runs; preflight refuses what
# cannot fit; reference caches are pruned when their runs are done.
set -uo pipefail
exe=${1:?usage: test_cluster.sh path/to/cachelab}
exe=$(readlink -f "$exe")
tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
  rm -rf "$tmp"
}
trap cleanup EXIT
source "$(dirname "$0")/lib.sh"
skip=0
export OMP_WAIT_POLICY=PASSIVE

# 6 variants x seeds + 2 references, about 1-3 s each here.
cat > "$tmp/c.yaml" <<'YAML'
name: c
base: [backbones/dit-mnist.yaml]
sampler: {type: ddim, steps: 8}
run: {samples: 2, batch: 2, save_samples: 2, timing_reps: 0}
metrics: [mse]
variants:
  f2: {cache: {type: fora, interval: 2}}
  f3: {cache: {type: fora, interval: 3}}
  fb: {cache: {type: fbcache, threshold: 0.1}}
sweep: {seed: [0, 1]}
YAML
names=("reference" "f2[seed=0]" "f2[seed=1]" "f3[seed=0]" "f3[seed=1]" "fb[seed=0]" "fb[seed=1]")

# Every run of c.yaml done exactly once over the logs given; the index lists all 8, done.
check_once() {
  local what=$1 dir=$2; shift 2
  local n
  for v in "${names[@]}"; do
    n=$(cat "$@" | grep -F -- "  $v " | grep -c " done in ")
    local want=1
    [ "$v" = reference ] && want=2  # one per seed
    [ "$n" -eq "$want" ] || { bad "$what: \`$v\` done $n times (wanted $want): $(cat "$@")"; return; }
  done
  local rows
  rows=$(tail -n +2 "$dir/index.csv" 2>/dev/null | grep -c ",done,")
  [ "$rows" -eq 8 ] || { bad "$what: index has $rows done rows, wanted 8"; return; }
  ls "$dir" | grep -q "\.lock\|\.tmp\." && { bad "$what: locks or temporaries left: $(ls "$dir")"; return; }
  ok "$what"
}

# Runs of a second or more each (tiny ones finish before a second process starts).
slow=(run.samples=32 run.batch=32 sampler.steps=24)

# --- 1. two processes on one results folder
res="$tmp/two"
"$exe" run "$tmp/c.yaml" "${slow[@]}" --results "$res" >"$tmp/a.log" 2>&1 &
pa=$!
pids+=("$pa")
"$exe" run "$tmp/c.yaml" "${slow[@]}" --results "$res" >"$tmp/b.log" 2>&1 &
pb=$!
pids+=("$pb")
wait "$pa"; ra=$?
wait "$pb"; rb=$?
[ "$ra" -eq 0 ] && [ "$rb" -eq 0 ] && ok "two concurrent runs both exit 0" \
  || bad "two concurrent runs exit $ra and $rb: $(cat "$tmp/a.log" "$tmp/b.log")"
check_once "two concurrent runs: every run done exactly once, index complete" "$res/c" "$tmp/a.log" "$tmp/b.log"
grep -q " done in " "$tmp/a.log" && grep -q " done in " "$tmp/b.log" \
  && ok "both processes did some of the runs" || bad "one process did nothing: $(cat "$tmp/a.log" "$tmp/b.log")"
grep -q "in progress elsewhere\|done by another process\|waiting for" "$tmp/a.log" "$tmp/b.log" \
  && ok "a run held by the other process was left to it" || bad "the processes never met: $(cat "$tmp/b.log")"
ls "$res/c/.cache/"*.pt >/dev/null 2>&1 && bad "reference caches pruned when every run is done: $(ls "$res/c/.cache")" \
  || ok "reference caches pruned when every run is done"

# --- 2. a killed process: its lock is taken over at once (dead local owner), its temporaries removed
wait_for_file() {  # pattern, seconds
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    compgen -G "$1" >/dev/null && return 0
    sleep 0.1
  done
  return 1
}
res="$tmp/killed"
# The kill lands while a (slow) run holds its lock.
"$exe" run "$tmp/c.yaml" "${slow[@]}" --results "$res" >"$tmp/k1.log" 2>&1 &
pk=$!
pids+=("$pk")
if wait_for_file "$res/c/f2_seed_0*.lock" 60; then
  sleep 0.2
  kill -9 "$pk"
  wait "$pk" 2>/dev/null
  ls "$res/c" | grep -q "\.lock" && ok "SIGKILL leaves a lock behind" || bad "no lock after SIGKILL: $(ls -a "$res/c")"
  timeout 120 "$exe" run "$tmp/c.yaml" "${slow[@]}" --results "$res" >"$tmp/k2.log" 2>&1
  rc=$?
  [ "$rc" -eq 0 ] && ! grep -q "waiting for" "$tmp/k2.log" \
    && ok "a dead local owner's lock is taken over at once" || bad "takeover after SIGKILL (exit $rc): $(cat "$tmp/k2.log")"
  check_once "after SIGKILL and resume" "$res/c" "$tmp/k1.log" "$tmp/k2.log"
else
  bad "the first variant's lock never appeared: $(cat "$tmp/k1.log")"
fi

# --- 3. another PID namespace (a container, another node's pid numbers): nothing deleted or stolen
ns=""
if unshare -p -f --mount-proc true 2>/dev/null; then ns="unshare -p -f --mount-proc"
elif unshare -Urpf --mount-proc true 2>/dev/null; then ns="unshare -Urpf --mount-proc"; fi
if [ -z "$ns" ]; then
  echo "SKIP PID-namespace test: unshare -p -f --mount-proc does not work here (needs root or user namespaces)"
  skip=$((skip + 1))
else
  # The process inside would have deleted the live files of the one outside (whose pid it cannot see).
  for order in outside-first; do
    res="$tmp/ns-$order"
    first=("$exe" run "$tmp/c.yaml" --results "$res")
    second=("$exe" run "$tmp/c.yaml" --results "$res")
    if [ "$order" = inside-first ]; then first=($ns "${first[@]}"); else second=($ns "${second[@]}"); fi
    "${first[@]}" >"$tmp/n1.log" 2>&1 &
    p1=$!
    pids+=("$p1")
    wait_for_file "$res/c/*.h5.tmp.*" 60 || bad "$order: no run started: $(cat "$tmp/n1.log")"
    "${second[@]}" >"$tmp/n2.log" 2>&1 &
    p2=$!
    pids+=("$p2")
    wait "$p1"; r1=$?
    wait "$p2"; r2=$?
    [ "$r1" -eq 0 ] && [ "$r2" -eq 0 ] && ok "PID namespaces ($order): both exit 0" \
      || bad "PID namespaces ($order): exit $r1 and $r2: $(cat "$tmp/n1.log" "$tmp/n2.log")"
    check_once "PID namespaces ($order): every run done exactly once" "$res/c" "$tmp/n1.log" "$tmp/n2.log"
  done
fi

# --- 4. out of space: a file-size limit makes writes fail with EFBIG
cat > "$tmp/d.yaml" <<'YAML'
name: d
base: [backbones/dit-mnist.yaml]
sampler: {type: ddim, steps: 8}
run: {samples: 4, batch: 4, save_samples: 4, timing_reps: 0}
metrics: [mse]
variants:
  f2: {cache: {type: fora, interval: 2}}
  f3: {cache: {type: fora, interval: 3}}
  fb: {cache: {type: fbcache, threshold: 0.1}}
YAML
res="$tmp/full"
expect 0 "done in" "disk test: the reference and one variant finish" "$exe" run "$tmp/d.yaml" --results "$res" --only f2
ls "$res/d/.cache/"*.pt >/dev/null 2>&1 && ok "a reference cache is kept while runs still need it" \
  || bad "reference cache missing while f3 and fb are pending: $(ls -a "$res/d/.cache")"
expect 0 "ref. caches|$res/*/.cache: 1 file(s)" "info says the caches' location and size" "$exe" info --results "$res"
out=$(ulimit -f 64; "$exe" run "$tmp/d.yaml" --results "$res" 2>&1)
rc=$?
if [ "$rc" -eq 1 ] && grep -q "File too large" <<<"$out" && grep -q "finished runs are kept" <<<"$out" \
   && ! grep -q "Exception raised from\|frame #" <<<"$out"; then
  ok "a full disk fails the run cleanly (exit 1, one-line reason, no stack trace)"
else
  bad "full disk (exit $rc): $out"
fi
[ "$(grep -c ",done," "$res/d/index.csv")" -eq 2 ] && grep -q "f3.*,failed,.*File too large" "$res/d/index.csv" \
  && ok "finished runs kept; the failed run's row says why" || bad "index after a full disk: $(cat "$res/d/index.csv")"
[ "$(grep -c "File too large" <<<"$out")" -le 3 ] && ! grep -q "fb " <<<"$out" \
  && ok "the sweep stops at the first full-disk failure" || bad "the sweep went on after a full disk: $out"
ls "$res/d" | grep -q "\.tmp\.\|\.lock" && bad "temporaries or locks left after a full disk: $(ls "$res/d")" \
  || ok "no temporaries or locks left after a full disk"
expect 0 "all runs done" "resume after freeing space" "$exe" run "$tmp/d.yaml" --results "$res"

# --- 5. preflight: estimates, refusals naming the key to change, missing data
expect 0 "preflight:|at most|GFLOP/s|memory ~|disk ~" "validate prints the estimate" \
  "$exe" validate "$tmp/d.yaml" --results "$tmp/pre"
out=$("$exe" validate experiments/dbprune.yaml --results "$tmp/pre-art" 2>&1)
grep -qF "first 6 artefact(s) to make (6 calibration file(s), 0 schedule(s), 0 router(s)), at least" <<<"$out" \
  && ok "the estimate counts the artefacts to make first (threshold searches on 3 calibration seeds)" \
  || bad "no artefact estimate: $out"
expect 2 "memory|run.samples" "preflight refuses samples that cannot fit in memory" \
  "$exe" validate experiments/quickstart.yaml run.samples=30000000
expect 2 "preflight|run.samples" "preflight refuses run.samples=100000000" \
  "$exe" run experiments/quickstart.yaml run.samples=100000000 --results "$tmp/huge"
ls "$tmp/huge/quickstart/"*.h5 >/dev/null 2>&1 && bad "a refused run wrote run files" || ok "a refused run starts nothing"
expect 2 "would take up to|--allow-long|run.samples" "preflight refuses a run over --max-hours" \
  "$exe" validate "$tmp/d.yaml" --max-hours 0.0001
expect 0 "ok --" "--allow-long accepts it" "$exe" validate "$tmp/d.yaml" --max-hours 0.0001 --allow-long
mkdir -p "$tmp/nodata"
expect 2 "fid|t10k-images-idx3-ubyte|fetch_data" "preflight: a metric's missing data set is an error" \
  env CACHELAB_DATA="$tmp/nodata" "$exe" validate experiments/quickstart.yaml

echo "$pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]
