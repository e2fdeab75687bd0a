#!/usr/bin/env bash
# Graceful stop and folder ownership, with real signals to real processes:
#   - SIGTERM to `train` (1 rank) and SIGUSR1 to mpirun (forwarded to 2 ranks) stop the run after
#     a step every rank agrees on, with last.pt written and exit code 75; --resume then continues,
#     and every step's loss equals that of an uninterrupted run, bit for bit;
#   - precompute stopped by SIGTERM after a batch exits 75 and a rerun completes the cache;
#   - a second run on a folder in use is refused naming the holder; a killed holder does not
#     block --resume;
#   - the temporaries of a killed writer are removed by the next write of its output, a live
#     writer's are not.
#   stop_test.sh <kdseg> <work dir> <mpiexec and its flags...>
set -uo pipefail
kdseg=$1
work=$2
shift 2
mpirun=("$@")
source "$(dirname "$0")/test_lib.sh"
start_in "$work"

"$kdseg" synth --layout lits --cases 6 --size 64 --slices 12 --output raw "${quiet[@]}" > /dev/null || exit 1
"$kdseg" prepare --input raw --output store.h5 --size 64 --folds 2 --slices all "${quiet[@]}" > /dev/null || exit 1
steps=60
run=(--data store.h5 --max-steps $steps --batch-size 4 --crop-size 64 --width 0.25 --validate-every 0 --log-every 1
  "${quiet[@]}")

logged_steps() { grep -c '"step"' "$1/metrics.jsonl" 2> /dev/null || echo 0; }

# signal_after <folder> <steps> <signal> <pid>: sends the signal once the run has logged that many steps.
signal_after() {
  local folder=$1 n=$2 signal=$3 pid=$4
  for _ in $(seq 1 600); do
    [ "$(logged_steps "$folder")" -ge "$n" ] && break
    kill -0 "$pid" 2> /dev/null || return 1
    sleep 0.05
  done
  kill "-$signal" "$pid"
}

# same_losses <a> <b>: every step's loss terms equal.
same_losses() {
  /usr/bin/python3 - "$1/metrics.jsonl" "$2/metrics.jsonl" <<'PY'
import json, sys
def steps(path):
    out = {}
    for line in open(path):
        j = json.loads(line)
        if "step" in j:
            out[j["step"]] = {k: j[k] for k in ("loss", "ce", "kl", "dml_hard", "dml_soft", "lr")}
    return out
a, b = steps(sys.argv[1]), steps(sys.argv[2])
if sorted(a) != sorted(b):
    sys.exit(f"logged steps differ: {sorted(set(a) ^ set(b))}")
bad = [s for s in a if a[s] != b[s]]
if bad:
    s = bad[0]
    sys.exit(f"{len(bad)} step(s) differ, first {s}: {a[s]} vs {b[s]}")
print(f"{len(a)} steps equal")
PY
}

# stop_and_resume <name> <signal> <launcher...>: reference run, interrupted run, resume, compare.
stop_and_resume() {
  local name=$1 signal=$2
  shift 2
  "$@" "$kdseg" train "${run[@]}" --output "$name-ref" > /dev/null 2>&1 || fail "$name: the reference run failed"
  "$@" "$kdseg" train "${run[@]}" --output "$name-cut" > "$name-cut.out" 2>&1 &
  local pid=$!
  signal_after "$name-cut" 5 "$signal" "$pid" || fail "$name: the run ended before it could be signalled"
  wait "$pid"
  local rc=$?
  [ "$rc" -eq 75 ] || fail "$name: exit $rc after $signal, expected 75: $(tail -3 "$name-cut.out")"
  local stopped_at
  stopped_at=$(logged_steps "$name-cut")
  [ "$stopped_at" -lt $steps ] || fail "$name: the run did not stop early ($stopped_at steps)"
  grep -q "stopped by SIG$signal" "$name-cut.out" || fail "$name: no 'stopped by SIG$signal' line"
  "$@" "$kdseg" train "${run[@]}" --output "$name-cut" --resume > "$name-resume.out" 2>&1 ||
    fail "$name: the resume failed: $(tail -3 "$name-resume.out")"
  grep -q "trained $steps steps" "$name-resume.out" || fail "$name: the resume did not finish"
  same_losses "$name-ref" "$name-cut" || fail "$name: the resumed run differs from the uninterrupted one"
  echo "$name: stopped by SIG$signal after step $stopped_at of $steps, resumed to the same losses"
}

stop_and_resume one-rank TERM env
stop_and_resume two-ranks USR1 "${mpirun[@]}" -np 2

# precompute: every rank stops after its second batch; the rerun completes the cache.
"$kdseg" train --data store.h5 --output teacher --max-steps 1 --batch-size 2 --crop-size 64 --width 0.125 \
  --validate-every 0 "${quiet[@]}" > /dev/null || exit 1
KDSEG_TEST_KILL_AFTER_BATCHES='*:2:TERM' "${mpirun[@]}" -np 2 "$kdseg" precompute --teacher teacher/last.pt \
  --data store.h5 --output cache --batch-size 2 "${quiet[@]}" > precompute-cut.out 2>&1
rc=$?
[ "$rc" -eq 75 ] || fail "precompute: exit $rc after SIGTERM, expected 75: $(tail -3 precompute-cut.out)"
grep -q "stopped by SIGTERM" precompute-cut.out || fail "precompute: no 'stopped by SIGTERM' line"
"${mpirun[@]}" -np 2 "$kdseg" precompute --teacher teacher/last.pt --data store.h5 --output cache --batch-size 2 \
  "${quiet[@]}" > precompute-rerun.out 2>&1 || fail "precompute: the rerun failed: $(tail -3 precompute-rerun.out)"
grep -qE "\(([1-9][0-9]*) computed now, [1-9][0-9]* resumed\)" precompute-rerun.out ||
  fail "precompute: the rerun did not resume: $(head -2 precompute-rerun.out)"
"$kdseg" cache verify --cache cache --teacher teacher/last.pt --data store.h5 > /dev/null ||
  fail "precompute: the resumed cache does not verify"
# Only rank 1 is signalled: rank 0 finishes its share, and both end stopped, with no master.
KDSEG_TEST_KILL_AFTER_BATCHES='1:1:TERM' "${mpirun[@]}" -np 2 "$kdseg" precompute --teacher teacher/last.pt \
  --data store.h5 --output cache-one --batch-size 2 "${quiet[@]}" > precompute-one.out 2>&1
rc=$?
[ "$rc" -eq 75 ] || fail "precompute, one rank signalled: exit $rc, expected 75: $(tail -3 precompute-one.out)"
[ ! -e cache-one/soft_labels.h5 ] || fail "precompute, one rank signalled: the master was written"
grep -q "stopped by a stop signal to another rank" precompute-one.out || fail "precompute: rank 0 did not report the stop"
echo "precompute: stopped by SIGTERM after a batch on 2 ranks, rerun completed and verified; one rank signalled stops both"

# Ownership: a second run on a folder in use is refused; a killed holder does not block --resume.
"$kdseg" train "${run[@]}" --output owned > owned.out 2>&1 &
holder=$!
signal_after owned 1 0 "$holder" || fail "lock: the first run ended too early"
"$kdseg" train "${run[@]}" --output owned --resume > second.out 2>&1
rc=$?
[ "$rc" -eq 1 ] || fail "lock: the second run exited $rc, expected 1"
grep -q "owned is in use by kdseg train (pid $holder on $(hostname)" second.out ||
  fail "lock: the refusal does not name the holder: $(cat second.out)"
kill -KILL "$holder"
wait "$holder" 2> /dev/null
"$kdseg" train "${run[@]}" --output owned --resume > third.out 2>&1 ||
  fail "lock: --resume after the holder was killed failed: $(tail -3 third.out)"
echo "lock: a second run refused naming pid $holder; --resume after SIGKILL of the holder works"

# Temporaries: those of a killed writer go with the next write of the same output; a live
# writer's stay.
sleep 120 &
live=$!
bash -c 'exit 0' &
dead=$!
wait "$dead"
host=$(hostname)
touch ".kdseg-tmp-$host-$dead-0-store2.h5" ".kdseg-tmp-$host-$live-0-store2.h5"
"$kdseg" prepare --input raw --output store2.h5 --size 64 --folds 2 --slices all "${quiet[@]}" > /dev/null ||
  fail "temporaries: prepare failed"
[ ! -e ".kdseg-tmp-$host-$dead-0-store2.h5" ] || fail "temporaries: a dead writer's temporary was kept"
[ -e ".kdseg-tmp-$host-$live-0-store2.h5" ] || fail "temporaries: a live writer's temporary was removed"
kill "$live"
echo "temporaries: a dead writer's removed, a live writer's kept"

finish "graceful stop, resume and folder ownership: all checks passed"
