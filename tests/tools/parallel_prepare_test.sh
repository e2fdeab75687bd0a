#!/usr/bin/env bash
# prepare and evaluate split across threads and ranks, on real files and real mpirun processes:
#   - `kdseg prepare` with --threads 1 and 3 and under `mpirun -np 2` and `-np 3` writes the same
#     store byte for byte (SOURCE_DATE_EPOCH fixes its "created" time), also when two runs write
#     the same output at once, and with a bad case
#     skipped; without --skip-bad-cases every rank's bad case is listed, nothing is written and no
#     part file stays behind;
#   - the store reads back in nibabel's canonical orientation (the slices are the volumes' own);
#   - `kdseg evaluate --save-predictions` under mpirun writes the same report numbers and the same
#     prediction files as one process, and nibabel reads the files (one gzip member per plane);
#   - the dataset benchmark runs at a small size.
#   parallel_prepare_test.sh <kdseg> <work dir> <dataset_bench> <mpiexec> [mpiexec flags...]
set -uo pipefail
kdseg=$1
work=$2
bench=$3
mpiexec=$4
shift 4
mpi_flags=("$@")
here=$(cd "$(dirname "$0")" && pwd)
source "$here/test_lib.sh"
start_in "$work"
python=/usr/bin/python3
export SOURCE_DATE_EPOCH=1767225600

"$kdseg" synth --layout lits --cases 5 --size 40 --slices 12 --seed 3 --output raw "${quiet[@]}" > /dev/null ||
  exit 1
prepare() {  # prepare <output> [more options]: the store of raw/, every slice, at native size
  local out=$1
  shift
  "$kdseg" prepare --input raw --output "$out" --slices all --size native --folds 2 --force --log-level warn "$@"
}
prepare one.h5 --threads 1 > one.txt || fail "prepare --threads 1 failed"
prepare three.h5 --threads 3 > /dev/null || fail "prepare --threads 3 failed"
cmp -s one.h5 three.h5 || fail "--threads 3 wrote other bytes than --threads 1"
for n in 2 3; do
  "$mpiexec" "${mpi_flags[@]}" -np $n "$kdseg" prepare --input raw --output mpi$n.h5 --slices all --size native \
    --folds 2 --force --log-level warn --threads 1 > mpi$n.txt 2>&1 || fail "mpirun -np $n prepare failed"
  cmp -s one.h5 mpi$n.h5 || fail "mpirun -np $n prepare wrote other bytes than one process"
  grep -q "content hash" mpi$n.txt || fail "mpirun -np $n prepare printed no summary"
done

# Two runs at once on the same output: neither takes the other's parts, the last to finish wins.
for run in a b; do
  "$mpiexec" "${mpi_flags[@]}" -np 2 "$kdseg" prepare --input raw --output twice.h5 --slices all --size native \
    --folds 2 --force --log-level warn --threads 1 > twice-$run.txt 2>&1 &
done
wait %1 || fail "the first of two concurrent mpirun prepares failed: $(tail -2 twice-a.txt)"
wait %2 || fail "the second of two concurrent mpirun prepares failed: $(tail -2 twice-b.txt)"
cmp -s one.h5 twice.h5 || fail "concurrent mpirun prepares wrote other bytes"

# The slices are nibabel's canonical slices of the volumes.
"$python" - one.h5 <<'PY' || fail "the store's slices differ from nibabel's canonical volumes"
import sys
import h5py, nibabel as nib, numpy as np
store = h5py.File(sys.argv[1], "r")
files = [f.decode() for f in store["cases/image_file"][:]]
rows = store["slices/case"][:]
for c, f in enumerate(files):
    volume = np.asarray(nib.as_closest_canonical(nib.load(f)).dataobj)
    kept = store["slices/index"][:][rows == c]
    stored = store["slices/image"][:][rows == c]
    assert np.array_equal(np.moveaxis(volume[:, :, kept], 2, 0), stored), f
PY

# A bad case on whichever rank holds it: skipped the same way, or listed with nothing written.
cp -r raw bad
printf 'not a nifti file' > "$(find bad -name 'volume-3.nii*')"
"$mpiexec" "${mpi_flags[@]}" -np 2 "$kdseg" prepare --input bad --output skipped2.h5 --slices all --size native \
  --folds 2 --force --skip-bad-cases --log-level error --threads 1 > /dev/null 2>&1 ||
  fail "mpirun prepare --skip-bad-cases failed"
"$kdseg" prepare --input bad --output skipped1.h5 --slices all --size native --folds 2 --force --skip-bad-cases \
  --log-level error --threads 2 > /dev/null 2>&1 || fail "prepare --skip-bad-cases failed"
cmp -s skipped1.h5 skipped2.h5 || fail "mpirun skipped the bad case into other bytes"
if "$mpiexec" "${mpi_flags[@]}" -np 3 "$kdseg" prepare --input bad --output refused.h5 --slices all --size native \
  --folds 2 --log-level warn --threads 1 > refused.txt 2>&1; then
  fail "mpirun prepare accepted a bad case"
fi
grep -q "volume-3.nii" refused.txt || fail "the refusal does not name volume-3.nii"
[ ! -e refused.h5 ] || fail "a refused prepare left refused.h5"
ls -A | grep -q "part-" && fail "part files stayed behind: $(ls -A | grep part-)"

# evaluate under mpirun: the same numbers and prediction files as one process.
"$bench" --write-model model.pt > /dev/null || fail "dataset_bench --write-model failed"
evaluate() {  # evaluate <output> [launcher...]
  local out=$1
  shift
  "$@" "$kdseg" evaluate --data one.h5 --fold 0 --model model.pt --output "$out" --save-predictions --no-figures \
    --bootstrap 50 --force --log-level warn --threads 1 > /dev/null 2>&1
}
evaluate single || fail "evaluate failed"
evaluate parallel "$mpiexec" "${mpi_flags[@]}" -np 2 || fail "mpirun evaluate failed"
"$python" - single parallel one.h5 <<'PY' || fail "mpirun evaluate reported or wrote something else"
import glob, json, os, sys
import h5py, nibabel as nib, numpy as np
store = h5py.File(sys.argv[3], "r")
source = {i.decode(): f.decode() for i, f in zip(store["cases/id"][:], store["cases/image_file"][:])}
a, b = (json.load(open(os.path.join(d, "report.json"))) for d in sys.argv[1:3])
assert a["options"]["ranks"] == 1 and b["options"]["ranks"] == 2
for x, y in zip(a["models"][0]["cases"], b["models"][0]["cases"]):
    assert x["id"] == y["id"] and x["dice"] == y["dice"] and x["hd95"] == y["hd95"], (x, y)
files = sorted(os.path.basename(f) for f in glob.glob(sys.argv[1] + "/predictions/*/*.nii.gz"))
assert len(files) == 2 * len(a["models"][0]["cases"]) and len(files) > 2, files
for f in files:
    one, two = (open(glob.glob(d + "/predictions/*/" + f)[0], "rb").read() for d in sys.argv[1:3])
    assert one == two, f
    image = nib.load(glob.glob(sys.argv[1] + "/predictions/*/" + f)[0])
    data = np.asarray(image.dataobj)
    case = f.replace("_probs", "").replace(".nii.gz", "")
    assert data.shape == nib.load(source[case]).shape, (f, data.shape)
    assert np.allclose(image.affine, nib.load(source[case]).affine, atol=1e-4), f
    if f.endswith("_probs.nii.gz"):
        assert 0 <= data.min() and data.max() <= 1
PY

"$bench" --kdseg "$kdseg" --dir bench --size 64 --lits-slices 24 --kits-slices 16 --threads 2 > bench.txt 2>&1 ||
  fail "dataset_bench failed: $(tail -3 bench.txt)"
grep -q FAILED bench.txt && fail "a command of dataset_bench failed: $(grep FAILED bench.txt)"
grep -q "LiTS      kdseg prepare" bench.txt || fail "dataset_bench printed no prepare row"

finish "parallel prepare and evaluate: identical bytes for 1-3 threads and ranks, bad cases, nibabel, benchmark"
