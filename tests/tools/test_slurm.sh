#!/usr/bin/env bash
# `cachelab sweep --slurm` / `--collect` on a real Slurm: starts munged, slurmctld and slurmd
# for one node on localhost (config, state and logs in a temporary folder), submits a small
# sweep as job arrays, cancels one task in the middle of its run, resubmits, and checks that
# every run arrived exactly once. Installs Debian's slurm-wlm and munge when missing (root).
# Exit 77 (ctest: skipped) only when the daemons cannot be started, with the reason.
set -uo pipefail
exe=${1:?usage: test_slurm.sh path/to/cachelab}
exe=$(cd "$(dirname "$exe")" && pwd)/$(basename "$exe")
source "$(dirname "$0")/lib.sh"
skip() {
  echo "SKIPPED: the Slurm test did not run: $*" >&2
  echo "SKIPPED: the Slurm test did not run: $*"
  exit 77
}

# Misuse is refused (exit 2) before anything is submitted; no daemon needed.
cd "$(dirname "$0")/../.."
for bad_args in "sweep experiments/quickstart.yaml --dry-run" "run experiments/quickstart.yaml --slurm" \
  "sweep experiments/quickstart.yaml --slurm --index 1" "sweep experiments/quickstart.yaml --slurm --collect"; do
  # shellcheck disable=SC2086
  msg=$("$exe" $bad_args 2>&1)
  rc=$?
  [ $rc -eq 2 ] && grep -q "slurm" <<<"$msg" && ok "refused: cachelab $bad_args" || bad "cachelab $bad_args (exit $rc): $msg"
done

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
  [ "$(id -u)" -eq 0 ] || skip "slurmctld/slurmd/munged are not installed and this is not root (bash tools/setup.sh)"
  echo "[slurm test] installing slurm-wlm and munge"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge; } \
    >/dev/null 2>&1 || skip "apt-get could not install slurm-wlm and munge"
fi

tmp=$(mktemp -d /tmp/cachelab_slurm.XXXXXX)
chmod 755 "$tmp"
export SLURM_CONF=$tmp/slurm.conf
# The daemons run in the foreground as this script's background jobs, so their pids are
# known from the start and the trap can always stop exactly them.
pids=() stopped=()
shutdown() {
  [ ${#pids[@]} -gt 0 ] || return 0
  scontrol shutdown >/dev/null 2>&1
  for _ in $(seq 50); do
    alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ $alive -eq 0 ] && break
    sleep 0.2
  done
  # What `scontrol shutdown` did not stop (munged, or daemons that never came up).
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null; done
  stopped=("${pids[@]}")
  pids=()
}
cleanup() { shutdown; rm -rf "$tmp"; }
trap cleanup EXIT
# The daemons' own words, when something about them goes wrong.
daemon_logs() { tail -n 15 "$tmp"/log/* 2>/dev/null; }

# --- the daemons --------------------------------------------------------------------------
mkdir -p "$tmp"/{munge,state,spool,log,exp}
chmod 700 "$tmp/munge"
head -c 1024 /dev/urandom >"$tmp/munge/munge.key"
chmod 400 "$tmp/munge/munge.key"
munged --foreground --force --key-file="$tmp/munge/munge.key" --socket="$tmp/munge/munge.sock" \
  --pid-file="$tmp/munged.pid" --log-file="$tmp/log/munged.log" --seed-file="$tmp/munge/seed" \
  >"$tmp/log/munged.out" 2>&1 &
pids+=($!)
for _ in $(seq 25); do [ -S "$tmp/munge/munge.sock" ] && break; sleep 0.2; done
[ -S "$tmp/munge/munge.sock" ] || skip "munged did not start: $(tail -n 5 "$tmp"/log/munged.*)"
host=$(hostname -s)
user=$(id -un)
port=$((20000 + RANDOM % 20000))
cat >"$SLURM_CONF" <<EOF
ClusterName=cachelabtest
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=$user
SlurmdUser=$user
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$tmp/munge/munge.sock
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
StateSaveLocation=$tmp/state
SlurmdSpoolDir=$tmp/spool
SlurmctldPidFile=$tmp/slurmctld.pid
SlurmdPidFile=$tmp/slurmd.pid
SlurmctldLogFile=$tmp/log/slurmctld.log
SlurmdLogFile=$tmp/log/slurmd.log
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
KillWait=10
MinJobAge=600
NodeName=$host NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=1000 State=UNKNOWN
PartitionName=test Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
slurmctld -D -f "$SLURM_CONF" >"$tmp/log/slurmctld.out" 2>&1 &
pids+=($!)
slurmd -D -f "$SLURM_CONF" >"$tmp/log/slurmd.out" 2>&1 &
pids+=($!)
for _ in $(seq 60); do
  state=$(sinfo -h -o %T 2>/dev/null)
  [ "$state" = idle ] && break
  sleep 0.5
done
[ "${state:-}" = idle ] || skip "the node did not come up (sinfo: ${state:-nothing}): $(daemon_logs)"
echo "[slurm test] slurmctld + slurmd up on $host (ports $port, $((port + 1))), $(nproc) CPU(s)"

# --- the sweep ----------------------------------------------------------------------------
# 2 references (two sampler step counts) and 4 runs; `slow` times itself many times, so it
# is still running when it is cancelled.
export OMP_WAIT_POLICY=PASSIVE
cat >"$tmp/exp/tinyslurm.yaml" <<'YAML'
name: tinyslurm
base: [backbones/dit-mnist.yaml]
sampler: {type: ddim, steps: 4}
run: {samples: 2, batch: 2, save_samples: 2, timing_reps: 1}
metrics: [psnr, mse]
variants:
  fora_n2: {cache: {type: fora, interval: 2}}
  fora_n3: {cache: {type: fora, interval: 3}}
  steps6: {sampler.steps: 6, cache: {type: fora, interval: 2}}
  slow: {cache: {type: fora, interval: 2}, run: {timing_reps: 40}}
YAML
exp=$tmp/exp/tinyslurm.yaml
res=$tmp/results
dir=$res/tinyslurm
val=$("$exe" validate "$exp" 2>&1) || { bad "validate: $val"; exit 1; }
mapfile -t ids < <(awk '$1 ~ /^[0-9]+$/ {print $3}' <<<"$val")
slow_index=$(awk '$2 == "slow" {print $1}' <<<"$val")
slow_id=$(awk '$2 == "slow" {print $3}' <<<"$val")
[ ${#ids[@]} -eq 4 ] && [ -n "$slow_index" ] || { bad "validate lists 4 runs: $val"; exit 1; }

# Waits until this private cluster's queue is empty (at most $1 seconds).
wait_queue() {
  for _ in $(seq $(($1 * 2))); do
    [ -z "$(squeue -h 2>/dev/null)" ] && return 0
    sleep 0.5
  done
  return 1
}

out=$("$exe" sweep "$exp" --results "$res" --slurm --dry-run --time 00:10:00 --cpus-per-task 1 2>&1)
if grep -q -- "--array=0-1" <<<"$out" && grep -q -- "--array=0-3" <<<"$out" && grep -q -- "--reference \"\$SLURM_ARRAY_TASK_ID\"" <<<"$out" \
  && grep -q -- "--dependency=afterany" <<<"$out" && [ -z "$(squeue -h)" ] && [ ! -e "$dir/slurm" ]; then
  ok "--dry-run prints both scripts and submits nothing"
else bad "--dry-run: $out"; fi

t0=$(date +%s)
out=$("$exe" sweep "$exp" --results "$res" --slurm --time 00:10:00 --cpus-per-task 1 2>&1)
rc=$?
echo "$out"
ref_job=$(awk '$1 == "references" {print $3}' <<<"$out" | tr -d ,)
run_job=$(awk '$1 == "runs" {print $3}' <<<"$out" | tr -d ,)
[ $rc -eq 0 ] && [ -n "$ref_job" ] && [ -n "$run_job" ] && ok "submitted: references job $ref_job, runs job $run_job" \
  || { bad "submission (exit $rc): $out"; daemon_logs; exit 1; }
dep=$(scontrol show job "$run_job" 2>/dev/null | grep -o "Dependency=[^ ]*" | head -n 1)
grep -q "afterany:$ref_job" <<<"$dep" && ok "the runs wait for the references ($dep)" || bad "runs dependency: $dep"

# Cancel slow once its run file is being written.
cancelled=0
for _ in $(seq 600); do
  if compgen -G "$dir/$slow_id.h5.tmp*" >/dev/null; then
    live=$("$exe" sweep "$exp" --results "$res" --collect 2>&1)
    rc=$?
    scancel "${run_job}_${slow_index}" && cancelled=1
    [ $rc -eq 4 ] && grep -Eq "$slow_id +in progress" <<<"$live" && ok "--collect while it runs: in progress, exit 4" \
      || bad "--collect while slow runs (exit $rc): $live"
    break
  fi
  sleep 0.2
done
[ $cancelled -eq 1 ] && ok "cancelled task ${run_job}_${slow_index} ($slow_id) in the middle of its run" \
  || bad "slow never started writing its run file: $(ls -a "$dir" 2>&1)"
wait_queue 120 || bad "first submission still queued after 120 s: $(squeue)"
state=$(scontrol show job "${run_job}_${slow_index}" 2>/dev/null | grep -o "JobState=[A-Z]*")
[ "$state" = "JobState=CANCELLED" ] && ok "the cancelled task ended as $state" || bad "cancelled task state: $state"
st=$(/usr/bin/python3 -c "
import h5py
s = h5py.File('$dir/$slow_id.h5', 'r').attrs['status']
print(s.decode() if isinstance(s, bytes) else s)" 2>/dev/null)
[ "$st" != done ] && ok "the cancelled run is not done (run file status: ${st:-no file})" || bad "cancelled run is done"
echo "[slurm test] the cancelled task's log ends:"
tail -n 3 "$dir"/slurm/logs/cl-tinyslurm-runs_"${run_job}_${slow_index}".out | sed 's/^/    /'

out=$("$exe" sweep "$exp" --results "$res" --collect 2>&1)
rc=$?
[ $rc -eq 4 ] && grep -q "$slow_id" <<<"$out" && grep -q "5 of 6 run(s) done" <<<"$out" \
  && ok "--collect: exit 4, lists the cancelled run" || bad "--collect before resubmission (exit $rc): $out"
before=$(cd "$dir" && stat -c '%n %i %Y' ./*.h5 | sort)

out=$("$exe" sweep "$exp" --results "$res" --slurm --time 00:10:00 --cpus-per-task 1 2>&1)
rc=$?
echo "$out"
grep -q "references " <<<"$out" && bad "resubmission submitted references again: $out"
grep -Eq "runs +job [0-9]+, 1 task\(s\) \[$slow_index\]" <<<"$out" && [ $rc -eq 0 ] \
  && ok "resubmission: one task, the cancelled run" || bad "resubmission (exit $rc): $out"
wait_queue 120 || bad "resubmission still queued after 120 s: $(squeue)"
echo "[slurm test] both submissions took $(($(date +%s) - t0)) s"

out=$("$exe" sweep "$exp" --results "$res" --collect 2>&1)
rc=$?
[ $rc -eq 0 ] && grep -q "6 of 6 run(s) done" <<<"$out" && ok "--collect: exit 0, all done" \
  || bad "--collect after resubmission (exit $rc): $out"
# Exactly once: one done file per run id, finished runs were not redone, nothing temporary.
n=$(find "$dir" -maxdepth 1 -name '*.h5' ! -name '.*' | wc -l)
[ "$n" -eq 6 ] && ok "6 run files (2 references + 4 runs)" || bad "run files: $(ls "$dir")"
missing=0
for id in "${ids[@]}"; do [ -f "$dir/$id.h5" ] || missing=$((missing + 1)); done
[ $missing -eq 0 ] && ok "one file per run id" || bad "$missing run id(s) without a file"
after=$(cd "$dir" && stat -c '%n %i %Y' ./*.h5 | sort | grep -v "$slow_id")
[ "$before" = "$after" ] && ok "runs finished before the cancel were not redone" \
  || bad "finished run files changed: before: $before after: $after"
rows=$(/usr/bin/python3 -c "
import csv, sys
rows = list(csv.DictReader(open('$dir/index.csv')))
print(len(rows), len({r['run_id'] for r in rows}), sum(r['status'] == 'done' for r in rows))")
[ "$rows" = "6 6 6" ] && ok "index.csv: 6 rows, 6 distinct run ids, all done" || bad "index.csv rows/distinct/done: $rows"
left=$(find "$dir" -name '*.tmp*')
[ -z "$left" ] && ok "no temporary file left" || bad "temporaries left: $left"
# The references ran first, in their own tasks: no runs task computed one.
if grep -l "reference .*done in" "$dir"/slurm/logs/cl-tinyslurm-runs_*.out >/dev/null 2>&1; then
  bad "a runs task computed a reference: $(grep -l "reference .*done in" "$dir"/slurm/logs/cl-tinyslurm-runs_*.out)"
else ok "no runs task computed a reference"; fi
nlogs=$(ls "$dir"/slurm/logs/ | wc -l)
[ "$nlogs" -eq 7 ] && ok "7 task logs (2 references + 4 runs + 1 resubmitted)" || bad "task logs: $(ls "$dir/slurm/logs")"

shutdown
for pid in "${stopped[@]}"; do kill -0 "$pid" 2>/dev/null && bad "daemon $pid still running after shutdown"; done
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
