#!/usr/bin/env bash
# The teacher pass under mpirun, end to end:
#   - caches made by 1, 2 and 3 ranks are identical (read by h5py through the master file);
#   - a pass whose ranks are killed (SIGKILL, one rank or all) resumes with the same command and
#     produces a cache identical to an uninterrupted run;
#   - a finished cache is not overwritten without --force, and --force replaces it only once the
#     new one is complete (killed midway, the old one stays readable); inspect and verify work;
#   - a corrupted shard is caught by verify.
# usage: precompute_test.sh <kdseg> <work dir> <mpiexec and its flags...>
set -euo pipefail
kdseg=$1
work=$2
shift 2
mpirun=("$@")
python=/usr/bin/python3  # Debian's, with python3-h5py

rm -rf "$work"
mkdir -p "$work"
cd "$work"
quiet=(--log-level warn --threads 1)

"$kdseg" synth --output raw --cases 4 --size 32 --slices 16 "${quiet[@]}"
"$kdseg" prepare --input raw --output store.h5 --size 32 --folds 2 --slices all "${quiet[@]}" > /dev/null
"$kdseg" train --data store.h5 --output teacher --max-steps 1 --batch-size 2 --crop-size 32 --width 0.125 \
  --validate-every 0 "${quiet[@]}" > /dev/null
teacher=teacher/last.pt

pass() {  # pass <ranks> <output> [extra options]
  local ranks=$1 out=$2
  shift 2
  "${mpirun[@]}" -np "$ranks" "$kdseg" precompute --teacher $teacher --data store.h5 --output "$out" \
    --batch-size 4 "${quiet[@]}" "$@"
}

same() {  # same <cache a> <cache b>: /soft_labels and /slice equal, bit for bit
  "$python" - "$1" "$2" <<'PY'
import sys, h5py, numpy as np
a, b = (h5py.File(d + "/soft_labels.h5", "r") for d in sys.argv[1:3])
for name in ("soft_labels", "slice"):
    x, y = a[name][()], b[name][()]
    if x.shape != y.shape or x.dtype != y.dtype or x.tobytes() != y.tobytes():
        sys.exit(f"{sys.argv[1]} and {sys.argv[2]} differ in /{name}: {x.shape} {x.dtype} vs {y.shape} {y.dtype}")
if a["soft_labels"].shape[0] == 0 or not np.isfinite(a["soft_labels"][()]).all():
    sys.exit("empty or non-finite soft labels")
PY
}

pass 1 one
pass 2 two
pass 3 three
same one two
same one three
echo "1, 2 and 3 ranks: identical caches"

# probs-u8 too, and its values sum to 255 per voxel.
pass 2 probs --format probs-u8 --temperature 2
"$kdseg" cache verify --cache probs --teacher $teacher --data store.h5

# Kill one rank after its first batch, then every rank still working after its next batch; rerun.
set +e
KDSEG_TEST_KILL_AFTER_BATCHES=1:1 pass 3 killed > kill1.log 2>&1
rc=$?
set -e
[ $rc -ne 0 ] || { echo "the killed pass exited 0"; exit 1; }
[ ! -e killed/soft_labels.h5 ] || { echo "a killed pass left a master file"; exit 1; }
ls killed/*.partial > /dev/null || { echo "no partial shard after the kill"; exit 1; }
set +e
KDSEG_TEST_KILL_AFTER_BATCHES='*:1' pass 3 killed > kill2.log 2>&1
rc=$?
set -e
[ $rc -ne 0 ] || { echo "the second killed pass exited 0"; exit 1; }
pass 3 killed | tee resume.log
grep -Eq "computed now, [1-9][0-9]* resumed" resume.log
same one killed
echo "killed and resumed: identical to an uninterrupted run"

# A finished cache is never overwritten without --force.
if pass 2 two > refuse.log 2>&1; then echo "overwrote a finished cache"; exit 1; fi
grep -q "a finished cache is already there" refuse.log
same one two
pass 2 two --force > /dev/null
same one two
# --force replaces a cache only once the new one is complete: killed midway, the old one is
# intact and readable; the same command then resumes the replacement.
set +e
KDSEG_TEST_KILL_AFTER_BATCHES='*:1' pass 2 two --force > kill3.log 2>&1
rc=$?
set -e
[ $rc -ne 0 ] || { echo "the killed replacement exited 0"; exit 1; }
same one two
"$kdseg" cache verify --cache two --teacher $teacher --data store.h5 > /dev/null
pass 2 two --force | tee replace.log
grep -Eq "computed now, [1-9][0-9]* resumed" replace.log
same one two
[ ! -e two/.kdseg-replacement ] || { echo "the replacement's staging folder was left behind"; exit 1; }

"$kdseg" cache inspect --cache two | tee inspect.log
grep -q "shape        \[" inspect.log
grep -q "format       logits-f16" inspect.log
"$kdseg" cache verify --cache two --teacher $teacher --data store.h5

# Another teacher: verify names the difference.
cp $teacher other.pt
printf 'x' >> other.pt
if "$kdseg" cache verify --cache two --teacher other.pt > verify.log 2>&1; then echo "verify accepted another teacher"; exit 1; fi
grep -q "teacher: the cache was made by" verify.log

# Fold teachers as an ensemble (--teacher twice): teacher held out fold 0, teacher2 fold 1. The
# cache is the mean of the two teachers' probabilities, the same from 1 and 2 ranks, and names
# both hashes; --fold refuses a teacher that trained on the students' evaluation fold.
"$kdseg" train --data store.h5 --output teacher2 --fold 1 --seed 7 --max-steps 1 --batch-size 2 --crop-size 32 \
  --width 0.125 --validate-every 0 "${quiet[@]}" > /dev/null
pass 1 ensemble --teacher teacher2/last.pt > /dev/null
pass 2 ensemble2 --teacher teacher2/last.pt > /dev/null
same ensemble ensemble2
"${mpirun[@]}" -np 1 "$kdseg" precompute --teacher teacher2/last.pt --data store.h5 --output second --batch-size 4 \
  "${quiet[@]}" > /dev/null
"$python" - one second ensemble <<'PY'
import sys, h5py, numpy as np
def probs(d):
    z = h5py.File(d + "/soft_labels.h5", "r")["soft_labels"][()].astype(np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)
a, b, ab = (probs(d) for d in sys.argv[1:4])
err, spread = np.abs(ab - (a + b) / 2).max(), np.abs(a - b).max()
print(f"ensemble: largest difference from the mean probability {err:.2e}; the teachers differ by up to {spread:.3f}")
if not err < 4e-3: sys.exit("the ensemble's cache is not the mean of its teachers' probabilities")
if not spread > 0.01: sys.exit("the two teachers agree: the check would not see an average")
PY
"$kdseg" cache inspect --cache ensemble > inspect2.log
grep -q "teacher .*/teacher/last.pt + .*/teacher2/last.pt (hash [0-9a-f]*+[0-9a-f]*)" inspect2.log ||
  { cat inspect2.log; echo "the ensemble's provenance lacks a teacher"; exit 1; }
if pass 1 refused --teacher teacher2/last.pt --fold 0 > fold.log 2>&1; then echo "--fold 0 accepted teacher2"; exit 1; fi
grep -q "teacher2/last.pt: trained on 2 case(s) of fold 0 .*scored on cases it taught them" fold.log || { cat fold.log; exit 1; }
if pass 1 refused --teacher teacher2/last.pt --fold 1 > fold.log 2>&1; then echo "--fold 1 accepted teacher"; exit 1; fi
grep -q "teacher/last.pt: trained on 2 case(s) of fold 1" fold.log || { cat fold.log; exit 1; }
[ ! -e refused/soft_labels.h5 ] || { echo "a refused ensemble was cached"; exit 1; }
pass 1 held-out --fold 0 > /dev/null
echo "ensembles: the mean of the teachers, both hashes recorded, --fold refuses a teacher of the evaluation fold"

# A corrupted shard: flip bytes in its middle.
shard=two/shard-00001-of-00002.h5
size=$(stat -c %s $shard)
printf 'corrupt!corrupt!' | dd of=$shard bs=1 seek=$((size / 2)) conv=notrunc status=none
if "$kdseg" cache verify --cache two > corrupt.log 2>&1; then echo "verify missed a corrupted shard"; exit 1; fi
cat corrupt.log
echo "precompute: all checks passed"
