#!/usr/bin/env bash
# Real KiTS23 annotations (three annotators per instance, no CT) through the whole pipeline, by
# way of `kdseg synth --from-annotations`:
#   - the simulated CT of each case has the annotations' shape and affine (nibabel), the copied
#     annotation files are byte-identical to their sources, and the source folder is unchanged; a
#     case without segmentation.nii.gz gets KiTS's aggregation, equal to the organisers' on every voxel;
#   - prepare reads the folder as KiTS23 with 3 raters, and the store's rater agreement (pairwise
#     Dice per structure) equals the fixture's agreement.csv for kidney and tumour;
#   - every --labels kind trains, precompute caches a teacher, distill and evaluate run;
#   - a case whose instances are incomplete is refused, naming the missing file, with nothing
#     written.
# The fixture (CC BY-NC-SA, never copied into the repository) is found at $KDSEG_KITS23_RATERS or
# /work/shared/data/kits23-raters; without it the test is skipped (exit 77).
#   from_annotations_test.sh <kdseg> <work dir>
set -uo pipefail
kdseg=$1
work=$2
here=$(cd "$(dirname "$0")" && pwd)
source "$here/test_lib.sh"
fixture=${KDSEG_KITS23_RATERS:-/work/shared/data/kits23-raters}
if [ ! -f "$fixture/agreement.csv" ]; then
  echo "SKIP: no kits23-raters fixture at $fixture (set KDSEG_KITS23_RATERS)"
  exit 77
fi
start_in "$work"
python=/usr/bin/python3

# The three smallest cases with a cyst (every structure present), copied so that the test can
# break one; their sources' digests, to show that nothing under the fixture changes.
cases=$("$python" - "$fixture/agreement.csv" <<'PY'
import csv, math, sys
rows = [r for r in csv.DictReader(open(sys.argv[1])) if r["cyst_pairwise_dice"]]
rows.sort(key=lambda r: math.prod(int(v) for v in r["shape_zyx"].split("x")))
print(" ".join(r["case"] for r in rows[:3]))
PY
)
mkdir ann
for c in $cases; do cp -r "$fixture/$c" ann/; done
# One case without the organisers' label map: synth writes KiTS's aggregation in its place.
unlabelled=${cases##* }
rm "ann/$unlabelled/segmentation.nii.gz"
before=$(cd "$fixture" && find $cases -type f -exec sha256sum {} + | sort)

"$kdseg" synth --from-annotations ann --output sim --seed 3 "${quiet[@]}" || fail "synth --from-annotations"
"$python" - ann sim "$fixture" "$unlabelled" $cases <<'PY' || fail "geometry or copies"
import filecmp, os, sys
import nibabel as nib
import numpy as np
ann, sim, fixture, unlabelled, cases = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
for case in cases:
    seg = nib.load(f"{fixture}/{case}/segmentation.nii.gz")
    ct = nib.load(f"{sim}/{case}/imaging.nii.gz")
    assert ct.shape == seg.shape, (case, ct.shape, seg.shape)
    assert np.allclose(ct.affine, seg.affine, atol=1e-4), (case, ct.affine, seg.affine)
    assert nib.aff2axcodes(ct.affine) == nib.aff2axcodes(seg.affine)
    hu = np.asanyarray(ct.dataobj)
    labels = np.asanyarray(seg.dataobj)
    # The kidney is enhanced against soft tissue wherever every rater marks it.
    assert hu[labels == 1].mean() > hu[labels == 0].mean() + 60, case
    for name in os.listdir(f"{ann}/{case}/instances"):
        assert filecmp.cmp(f"{ann}/{case}/instances/{name}", f"{sim}/{case}/instances/{name}", shallow=False), name
    if case == unlabelled:
        written = nib.load(f"{sim}/{case}/segmentation.nii.gz")
        assert np.array_equal(np.asanyarray(written.dataobj), labels), case
        assert np.allclose(written.affine, seg.affine, atol=1e-4), case
    else:
        assert filecmp.cmp(f"{ann}/{case}/segmentation.nii.gz", f"{sim}/{case}/segmentation.nii.gz", shallow=False)
PY
after=$(cd "$fixture" && find $cases -type f -exec sha256sum {} + | sort)
[ "$before" = "$after" ] || fail "the fixture changed"
[ -z "$(find ann -name 'imaging*')" ] || fail "an imaging file was written beside the annotations"

"$kdseg" prepare --input sim --output store.h5 --layout kits23 --slices all --size 64 --folds 3 "${quiet[@]}" \
  > prepare.out || fail "prepare"
grep -q "raters' agreement (pairwise Dice" prepare.out || fail "prepare does not print the raters' agreement"
"$python" - store.h5 "$fixture/agreement.csv" <<'PY' || fail "store raters or agreement"
import csv, sys
import h5py
import numpy as np
store = h5py.File(sys.argv[1], "r")
assert store["slices/raters"].shape[1] == 3, store["slices/raters"].shape
assert store.attrs["rater_regions"] in (b"kidney,tumor,cyst", "kidney,tumor,cyst")
ids = [i.decode() for i in store["cases/id"][:]]
table = {r["case"]: r for r in csv.DictReader(open(sys.argv[2]))}
pairwise = store["cases/rater_pairwise_dice"][:]
for row, case in enumerate(ids):
    # Tumour is label 2 in every slot's label map, as the table's tumour instances are.
    want = float(table[case]["tumor_pairwise_dice"])
    assert abs(pairwise[row, 1] - want) < 6e-5, (case, "tumor", pairwise[row, 1], want)
    # The store's kidney is KiTS's "kidney and masses" (labels 1-3); the table's is the kidney
    # instances alone, which differ where a rater's mass reaches past their kidney.
    want = float(table[case]["kidney_pairwise_dice"])
    assert abs(pairwise[row, 0] - want) < 0.005, (case, "kidney", pairwise[row, 0], want)
    # Cyst: a cyst voxel that the same slot also marks as tumour is tumour in the slot's label map.
    assert abs(pairwise[row, 2] - float(table[case]["cyst_pairwise_dice"])) < 0.02, (case, pairwise[row, 2])
PY

# Every label kind trains on the real raters; a teacher is cached and distilled; evaluate reports.
model=(--width 0.125 --crop-size 48 --batch-size 4 --max-steps 3 --validate-every 0 --lr 1e-3 --fold 0 "${quiet[@]}")
models=()
for labels in majority random mean weighted ls; do
  "$kdseg" train --data store.h5 --labels "$labels" --output "train-$labels" "${model[@]}" > /dev/null ||
    fail "train --labels $labels"
  models+=(--model "train-$labels/last.pt")
done
"$kdseg" precompute --teacher train-mean/last.pt --data store.h5 --output cache "${quiet[@]}" > /dev/null ||
  fail "precompute"
"$kdseg" distill --cache cache --data store.h5 --output student "${model[@]}" > /dev/null || fail "distill"
models+=(--model student/last.pt)
"$kdseg" evaluate --data store.h5 --fold 0 "${models[@]}" --output report --bootstrap 50 "${quiet[@]}" > /dev/null ||
  fail "evaluate"
"$python" -c '
import json, sys
r = json.load(open("report/report.json"))
assert r["reference"]["raters"] == 3, r["reference"]
assert len(r["models"]) == 6, len(r["models"])
assert "kidney" in r["rater_agreement"]["pairwise_dice"], r.get("rater_agreement")
' || fail "report"

# An incomplete case is refused, naming the missing annotation; nothing is written.
cp -r ann broken
victim=$(ls broken/*/instances/tumor_instance-1_annotation-2.nii.gz | head -1)
rm "$victim"
log=$("$kdseg" synth --from-annotations broken --output sim-broken "${quiet[@]}" 2>&1) && fail "an incomplete case was accepted"
grep -q "tumor_instance-1_annotation-2.nii.gz: missing" <<< "$log" || fail "the error does not name the file: $log"
[ ! -e sim-broken ] || fail "an incomplete case left sim-broken behind"

finish "from_annotations: $(echo $cases | wc -w) real KiTS23 cases through synth, prepare, train, precompute, distill, evaluate"
