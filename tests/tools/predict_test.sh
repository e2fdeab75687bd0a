#!/usr/bin/env bash
# kdseg predict on new scans, checked against nibabel and against evaluate's own predictions:
#   - one NIfTI file, a folder of them, an MSD layout (dataset.json, imagesTs/<case>_0000.nii.gz,
#     a macOS "._" file) and a LiTS folder are read; every output has its input's shape and affine
#     (nibabel), uint8 labels of the layout's values and probabilities in [0, 1];
#   - at the store's own size the labels equal `evaluate --save-predictions` voxel for voxel and
#     the probabilities to its 1/65535 steps; a scan stored sagittally, flipped and permuted, gets
#     the same labels as its axial original, in its own voxel order;
#   - an ensemble's probabilities are the mean of its models' (one of them calibrated: its T is
#     applied); --tta flip makes the prediction of a mirrored scan the mirror of the original's;
#   - a rerun skips finished cases but predicts a scan replaced under its name again; a plain
#     folder keeps names like "_0001"; a folder other users may write into is refused;
#   - another model into the same folder is refused without
#     --force; models of other classes, a TorchScript-less window (--window without --size), a 4D
#     scan (refused before anything is written, skipped with --skip-bad-cases) are named;
#   - under mpirun -np 2 the files equal those of one process.
#   predict_test.sh <kdseg> <work dir> [<mpiexec> <flags>...]
set -uo pipefail
kdseg=$1
work=$2
shift 2
mpi=("$@")
here=$(cd "$(dirname "$0")" && pwd)
source "$here/test_lib.sh"
start_in "$work"

tiny_store 4 40 6 2  # 40 pixels: not a multiple of 32, as evaluate feeds the slices
for task in organ-tumor tumor; do tiny_model "run-$task" 40 12 --fold 0 --task "$task"; done
"$kdseg" calibrate --model run-organ-tumor/last.pt --data p.h5 --temperature 1.7 --output cal.pt "${quiet[@]}" \
  > /dev/null || fail "calibrate"
model=run-organ-tumor/last.pt

# Inputs: one file, a folder, MSD, and a scan stored sagittally (axes permuted and flipped).
mkdir -p folder msd/imagesTs msd/imagesTr
v0=$(ls raw/*/volume-0.nii*) && v1=$(ls raw/*/volume-1.nii*)  # synth's LiTS batches
cp "$v0" "$v1" folder/
echo '{"name": "test", "modality": {"0": "CT"}}' > msd/dataset.json
/usr/bin/python3 -c "
import nibabel as nib
for c, v in enumerate(['$v0', '$v1']): nib.save(nib.load(v), f'msd/imagesTs/liver_{c}_0000.nii.gz')" || fail "msd"
echo "not a scan" > msd/imagesTs/._liver_0_0000.nii.gz
/usr/bin/python3 - << 'PY' || fail "making the sagittal scan"
import glob, nibabel as nib, numpy as np
img = nib.load(sorted(glob.glob("raw/*/volume-0.nii*"))[0])
data, a = np.asanyarray(img.dataobj), img.affine
# Voxel axes (k, i, j) with i flipped: a sagittal-first order of the same world.
perm = np.transpose(data, (2, 0, 1))[:, ::-1, :]
n_i = data.shape[0]
flip_i = np.eye(4); flip_i[0, 0] = -1; flip_i[0, 3] = n_i - 1
swap = np.zeros((4, 4)); swap[0, 1] = 1; swap[1, 2] = 1; swap[2, 0] = 1; swap[3, 3] = 1  # (i,j,k) from (k,i',j)
affine = a @ flip_i @ swap
nib.save(nib.Nifti1Image(np.ascontiguousarray(perm), affine, img.header), "sagittal.nii.gz")
PY

"$kdseg" predict --model "$model" --input "$v0" --output one "${quiet[@]}" > one.log 2>&1 ||
  fail "predict one file: $(cat one.log)"
"$kdseg" predict --model "$model" --input folder --output out-folder "${quiet[@]}" > /dev/null 2>&1 ||
  fail "predict a folder"
"$kdseg" predict --model "$model" --input msd --output out-msd "${quiet[@]}" > /dev/null 2>&1 || fail "predict MSD"
"$kdseg" predict --model "$model" --input raw --output out-lits "${quiet[@]}" > /dev/null 2>&1 || fail "predict LiTS"
"$kdseg" predict --model "$model" --input sagittal.nii.gz --output out-sag "${quiet[@]}" > /dev/null 2>&1 ||
  fail "predict the sagittal scan"
"$kdseg" evaluate --model "$model" --data p.h5 --fold 0 --task organ-tumor --output report --save-predictions \
  --no-figures --no-curves --bootstrap 10 --no-surface "${quiet[@]}" > /dev/null 2>&1 || fail "evaluate"
"$kdseg" predict --model "$model" --model cal.pt --input folder --output ens "${quiet[@]}" > /dev/null 2>&1 ||
  fail "predict an ensemble"
"$kdseg" predict --model cal.pt --input folder --output out-cal "${quiet[@]}" > /dev/null 2>&1 || fail "predict cal"
"$kdseg" predict --model "$model" --input folder --output tta --tta flip "${quiet[@]}" > /dev/null 2>&1 ||
  fail "predict --tta flip"
mkdir -p mirror
/usr/bin/python3 - << 'PY' || fail "making the mirrored scan"
import glob, nibabel as nib, numpy as np
scan = nib.load(sorted(glob.glob("raw/*/volume-1.nii*"))[0])
mirrored = np.ascontiguousarray(np.asanyarray(scan.dataobj)[::-1])
nib.save(nib.Nifti1Image(mirrored, scan.affine, scan.header), "mirror/volume-1.nii.gz")
PY
"$kdseg" predict --model "$model" --input mirror --output tta-mirror --tta flip "${quiet[@]}" > /dev/null 2>&1 ||
  fail "predict --tta flip of the mirrored scan"

/usr/bin/python3 - << 'PY' || fail "outputs"
import glob, json, os, nibabel as nib, numpy as np

def scan(case):
    return nib.load(sorted(glob.glob(f"raw/*/{case}.nii*"))[0])

def check(folder, case, source):
    labels, probs = nib.load(f"{folder}/{case}.nii.gz"), nib.load(f"{folder}/{case}_probs.nii.gz")
    for img in (labels, probs):
        assert img.shape == source.shape, (folder, case, img.shape, source.shape)
        assert np.allclose(img.affine, source.affine, atol=1e-4), (folder, case, img.affine, source.affine)
    l, p = np.asanyarray(labels.dataobj), probs.get_fdata()
    assert l.dtype == np.uint8 and set(np.unique(l)) <= {0, 1, 2}, (folder, case, l.dtype, np.unique(l))
    assert p.min() >= 0 and p.max() <= 1 + 1e-6, (folder, case, p.min(), p.max())
    for k in (1, 2):
        pk = nib.load(f"{folder}/{case}_probs_{k}.nii.gz").get_fdata()
        assert pk.shape == source.shape
    return l, p

for folder, case, source in [("one", "volume-0", "volume-0"), ("out-folder", "volume-1", "volume-1"),
                             ("out-msd", "liver_1", "volume-1"), ("out-lits", "volume-3", "volume-3")]:
    check(folder, case, scan(source))
assert not os.path.exists("out-msd/._liver_0.nii.gz") and not os.path.exists("out-msd/_liver_0.nii.gz")
record = json.load(open("out-msd/predictions.json"))
assert [c["id"] for c in record["cases"]] == ["liver_0", "liver_1"], record["cases"]
assert record["models"][0]["hash"] and record["models"][0]["preprocessing_from"] == "the checkpoint", record["models"]
assert record["models"][0]["preprocessing"]["size"] == 40 and record["models"][0]["preprocessing"]["layout"] == "lits"
assert all(c["seconds"] > 0 and c["slices"] == 6 for c in record["cases"]), record["cases"]

# Against evaluate's predictions of the same cases (fold 0, every slice kept, no resize).
report = json.load(open("report/report.json"))
model_folder = glob.glob("report/predictions/*")[0]
compared = 0
for c in report["models"][0]["cases"]:
    case = c["id"]
    l, p = check("out-lits", case, scan(case))
    le = np.asanyarray(nib.load(f"{model_folder}/{case}.nii.gz").dataobj)
    pe = nib.load(f"{model_folder}/{case}_probs.nii.gz").get_fdata()
    assert np.array_equal(l, le), (case, (l != le).sum())
    assert np.abs(p - pe).max() <= 1.0 / 65535 + 1e-6, (case, np.abs(p - pe).max())
    compared += 1
assert compared >= 1

# The sagittal scan: its own voxel order, the axial original's labels.
sag = nib.load("sagittal.nii.gz")
ls, _ = check("out-sag", "sagittal", sag)
lo = np.asanyarray(nib.load("one/volume-0.nii.gz").dataobj)
assert np.array_equal(ls, np.ascontiguousarray(np.transpose(lo, (2, 0, 1))[:, ::-1, :])), "sagittal differs"

# The ensemble: the mean of its models' probabilities.
for k in (1, 2):
    a = nib.load(f"out-folder/volume-1_probs_{k}.nii.gz").get_fdata()
    b = nib.load(f"out-cal/volume-1_probs_{k}.nii.gz").get_fdata()
    e = nib.load(f"ens/volume-1_probs_{k}.nii.gz").get_fdata()
    assert np.abs(e - (a + b) / 2).max() < 1e-5, ("ensemble", k, np.abs(e - (a + b) / 2).max())
    assert np.abs(a - b).max() > 1e-3, "the calibrated copy's temperature was not applied"
ens = json.load(open("ens/predictions.json"))
assert [round(m["temperature"], 3) for m in ens["models"]] == [1.0, 1.7], ens["models"]

# Flip TTA: equivariant to mirroring the scan.
t = nib.load("tta/volume-1_probs.nii.gz").get_fdata()
m = nib.load("tta-mirror/volume-1_probs.nii.gz").get_fdata()
assert np.abs(m[::-1] - t).max() < 1e-5, ("tta", np.abs(m[::-1] - t).max())
plain = nib.load("out-folder/volume-1_probs.nii.gz").get_fdata()
assert np.abs(plain - t).max() > 1e-4, "--tta flip changed nothing"
assert json.load(open("tta/predictions.json"))["tta"] == "flip"
print("outputs checked")
PY

# A rerun skips; another model into the folder is refused, then replaced with --force.
before=$(stat -c %Y out-folder/volume-1.nii.gz)
sleep 1
"$kdseg" predict --model "$model" --input folder --output out-folder "${quiet[@]}" > rerun.log 2>&1 || fail "rerun"
[ "$(stat -c %Y out-folder/volume-1.nii.gz)" = "$before" ] || fail "the rerun predicted a finished case again"
out=$("$kdseg" predict --model cal.pt --input folder --output out-folder "${quiet[@]}" 2>&1) &&
  fail "another model's predictions were overwritten"
grep -q "holds predictions of other models" <<< "$out" || fail "no clear refusal: $out"
"$kdseg" predict --model cal.pt --input folder --output out-folder --force "${quiet[@]}" > /dev/null 2>&1 ||
  fail "--force"
cmp -s out-folder/volume-1_probs.nii.gz out-cal/volume-1_probs.nii.gz || fail "--force did not replace the files"

# A rerun predicts a scan again when the file under its name changed; a plain folder keeps names
# that look like channels; a folder other users may write into is refused.
mkdir -p swap plain
/usr/bin/python3 -c "
import nibabel as nib
nib.save(nib.load('$v0'), 'swap/scan.nii.gz'); nib.save(nib.load('$v0'), 'plain/patient_0001.nii.gz')" || fail "copies"
"$kdseg" predict --model "$model" --input swap --output out-swap "${quiet[@]}" > /dev/null 2>&1 || fail "swap"
first=$(stat -c %Y out-swap/scan.nii.gz)
sleep 1
/usr/bin/python3 -c "
import nibabel as nib
nib.save(nib.load('$v1'), 'swap/scan.nii.gz')" || fail "swapping the scan"
"$kdseg" predict --model "$model" --input swap --output out-swap "${quiet[@]}" > /dev/null 2>&1 || fail "swap rerun"
[ "$(stat -c %Y out-swap/scan.nii.gz)" != "$first" ] || fail "a changed scan was taken as finished"
"$kdseg" predict --model "$model" --input plain --output out-plain "${quiet[@]}" > /dev/null 2>&1 || fail "plain folder"
[ -e out-plain/patient_0001.nii.gz ] || fail "a plain folder's _0001 name was not kept: $(ls out-plain)"
mkdir -m 777 shared
out=$("$kdseg" predict --model "$model" --input plain --output shared "${quiet[@]}" 2>&1) &&
  fail "a folder other users may write into was used"
grep -q "other users may write into it" <<< "$out" || fail "no clear refusal of the shared folder: $out"

# Bad input: each named, nothing written.
out=$("$kdseg" predict --model "$model" --model run-tumor/last.pt --input folder --output bad1 "${quiet[@]}" 2>&1) &&
  fail "models of different classes were averaged"
grep -q "run-tumor/last.pt: 2 classes" <<< "$out" || fail "classes not named: $out"
out=$("$kdseg" predict --model "$model" --input folder --output bad2 --window 10 "${quiet[@]}" 2>&1) &&
  fail "--window 10 was taken"
grep -q "LOW,HIGH" <<< "$out" || fail "--window not explained: $out"
mkdir -p four && cp folder/* four/
/usr/bin/python3 -c "
import nibabel as nib, numpy as np
nib.save(nib.Nifti1Image(np.zeros((8, 8, 4, 2), np.int16), np.eye(4)), 'four/volume-9.nii.gz')" || fail "4D file"
out=$("$kdseg" predict --model "$model" --input four --output bad3 "${quiet[@]}" 2>&1) && fail "a 4D scan was taken"
grep -q "four/volume-9.nii.gz: 4D volume" <<< "$out" || fail "the 4D scan not named: $out"
[ ! -e bad3 ] || fail "bad3 was written after a refusal"
"$kdseg" predict --model "$model" --input four --output skip --skip-bad-cases "${quiet[@]}" > skip.log 2>&1 ||
  fail "--skip-bad-cases: $(cat skip.log)"
grep -q "skipped volume-9" skip.log || fail "the skipped case not reported: $(cat skip.log)"
[ -e skip/volume-1.nii.gz ] && [ ! -e skip/volume-9.nii.gz ] || fail "--skip-bad-cases wrote the wrong files"

# mpirun: the same files as one process.
if [ ${#mpi[@]} -gt 0 ]; then
  "${mpi[@]}" -np 2 "$kdseg" predict --model "$model" --input raw --output out-mpi "${quiet[@]}" > mpi.log 2>&1 ||
    fail "mpirun predict: $(tail -5 mpi.log)"
  for f in out-lits/*.nii.gz; do
    cmp -s "$f" "out-mpi/$(basename "$f")" || fail "mpirun: $(basename "$f") differs"
  done
fi
finish "predict: files, geometry, evaluate's predictions, ensembles, TTA, reruns and bad input checked"
