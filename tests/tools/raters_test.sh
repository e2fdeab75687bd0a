#!/usr/bin/env bash
# Several raters per case, through the command line on real files:
#   - prepare reads folders written by nibabel (tests/data/write_rater_folders.py): KiTS23
#     instances with 2 raters, KiTS21 segmentations/ with 3, QUBIQ with 7; every rater's label
#     counts and the stored label (KiTS: the aggregated file; QUBIQ: the majority, computed here
#     in numpy) match what the writer recorded; a missing annotation and a rater of another shape
#     are errors naming the file (nothing written), or skipped with --skip-bad-cases; --raters none
#     keeps none;
#   - on synthetic KiTS23 and QUBIQ data (kdseg synth --raters 3), train learns from each of
#     majority, random, mean and weighted, and evaluate reports Dice against the majority with
#     threshold Dice, L1 and Brier against the rater mean for every model.
#   raters_test.sh <kdseg> <work dir>
set -uo pipefail
kdseg=$1
work=$2
here=$(cd "$(dirname "$0")" && pwd)
source "$here/test_lib.sh"
start_in "$work"
python=/usr/bin/python3

"$python" "$here/../data/write_rater_folders.py" files > /dev/null || exit 1

# check_store <store> <folder key in expected.json>: rater and label counts per case.
check_store() {
  "$python" - "$1" files/expected.json "$2" <<'PY'
import json, sys
import h5py
import numpy as np
store, expected, key = h5py.File(sys.argv[1], "r"), json.load(open(sys.argv[2])), sys.argv[3]
ids = [i.decode() for i in store["cases/id"][:]]
raters, label, case = store["slices/raters"][:], store["slices/label"][:], store["slices/case"][:]
problems = []
for row, cid in enumerate(ids):
    want = expected[key][cid]
    mine = case == row
    if store["cases/raters"][row] != want["raters"] or raters.shape[1] != want["raters"]:
        problems.append(f"{cid}: {raters.shape[1]} raters, expected {want['raters']}")
    for j, counts in enumerate(want["rater_counts"]):
        got = {str(v): int((raters[mine, j] == v).sum()) for v in map(int, counts)}
        if got != counts:
            problems.append(f"{cid} rater {j + 1}: {got} != {counts}")
    # KiTS stores the aggregated file; QUBIQ the raters' majority (ties to the lower value).
    want_label = want.get("aggregated_counts", want["majority_counts"])
    got = {str(v): int((label[mine] == v).sum()) for v in map(int, want_label)}
    if got != want_label:
        problems.append(f"{cid} label: {got} != {want_label}")
    votes = np.stack([(raters[mine] == v).sum(1) for v in range(4)])
    majority = votes.argmax(0)  # numpy: the first maximum, the lowest value
    got = {str(v): int((majority == v).sum()) for v in map(int, want["majority_counts"])}
    if got != want["majority_counts"]:
        problems.append(f"{cid} majority: {got} != {want['majority_counts']}")
    agreement = store["cases/rater_agreement"][row]
    if not (np.all(agreement > 0) and np.all(agreement <= 1)):
        problems.append(f"{cid}: rater agreement {agreement} outside (0, 1]")
if problems:
    sys.exit("\n".join(problems))
print(f"{sys.argv[1]}: {len(ids)} cases of {raters.shape[1]} raters as written")
PY
}

prepare=(prepare --size native --slices all --folds 2 "${quiet[@]}")
"$kdseg" "${prepare[@]}" --input files/kits23_r2 --output k23.h5 > /dev/null || fail "prepare kits23_r2"
check_store k23.h5 kits23_r2 || fail "kits23_r2 store"
"$kdseg" "${prepare[@]}" --input files/kits21_r3 --output k21.h5 > /dev/null || fail "prepare kits21_r3"
check_store k21.h5 kits21_r3 || fail "kits21_r3 store"
"$kdseg" "${prepare[@]}" --input files/qubiq_r7 --output q7.h5 > /dev/null || fail "prepare qubiq_r7"
check_store q7.h5 qubiq_r7 || fail "qubiq_r7 store"
[ "$("$python" -c 'import h5py; print(h5py.File("q7.h5")["cases/id"][0].decode())')" = kidney/Training/case01 ] ||
  fail "qubiq case ids are not their folders under --input"

# expect_refusal <output> <text> <prepare arguments...>: exit status 1, the text in the error, no output.
expect_refusal() {
  local output=$1 text=$2
  shift 2
  local log
  log=$("$kdseg" "${prepare[@]}" --output "$output" "$@" 2>&1)
  local status=$?
  [ $status -eq 1 ] || fail "prepare $*: exit status $status, expected 1"
  grep -q -- "$text" <<< "$log" || fail "prepare $*: no '$text' in: $log"
  [ ! -e "$output" ] || fail "prepare $*: wrote $output"
}
expect_refusal missing.h5 "tumor_instance-1_annotation-2.nii.gz: missing" --input files/kits23_missing
expect_refusal shape.h5 "task01_seg02.nii.gz: shape 20x24x6 differs" --input files/qubiq_bad_shape
"$kdseg" "${prepare[@]}" --input files/kits23_missing --output skipped.h5 --skip-bad-cases > /dev/null 2>&1 ||
  fail "prepare --skip-bad-cases kits23_missing"
[ "$("$python" -c 'import h5py; print(len(h5py.File("skipped.h5")["cases/id"]))')" = 2 ] ||
  fail "--skip-bad-cases did not keep the 2 good cases"
"$kdseg" "${prepare[@]}" --input files/kits23_r2 --output none.h5 --raters none > /dev/null || fail "--raters none"
"$python" -c 'import h5py, sys; sys.exit("raters" in h5py.File("none.h5")["slices"])' || fail "--raters none kept raters"

# Synthetic multi-rater data: every label kind trains, evaluate measures against the raters.
model=(--width 0.125 --crop-size 48 --batch-size 4 --max-steps 4 --validate-every 0 --lr 1e-3 "${quiet[@]}")
for layout in kits23 qubiq; do
  "$kdseg" synth --layout "$layout" --raters 3 --cases 4 --size 48 --slices 8 --output "$layout" "${quiet[@]}" ||
    fail "synth $layout"
  "$kdseg" prepare --input "$layout" --output "$layout.h5" --size 48 --slices organ --folds 2 "${quiet[@]}" > /dev/null ||
    fail "prepare $layout"
  models=()
  for labels in majority random mean weighted; do
    "$kdseg" train --data "$layout.h5" --labels "$labels" --output "$layout-$labels" "${model[@]}" > /dev/null ||
      fail "train $layout --labels $labels"
    models+=(--model "$layout-$labels/last.pt")
  done
  "$kdseg" evaluate --data "$layout.h5" "${models[@]}" --output "$layout-report" --bootstrap 100 "${quiet[@]}" \
    > /dev/null || fail "evaluate $layout"
  "$python" - "$layout-report" <<'PY' || fail "$layout report"
import csv, json, sys
folder = sys.argv[1]
report = json.load(open(f"{folder}/report.json"))
assert report["reference"] == {"label": "majority", "raters": 3, "soft": "rater mean"}, report["reference"]
assert len(report["models"]) == 4
for model in report["models"]:
    soft = model["summary"]["soft_reference"]
    for region in report["regions"]:
        assert 0 <= soft["threshold_dice"][region]["mean"] <= 1, soft
    assert 0 <= soft["l1"]["mean"] <= 2 and 0 <= soft["brier"]["mean"] <= 2, soft
    assert all("soft_reference" in case for case in model["cases"])
rows = list(csv.DictReader(open(f"{folder}/per_case.csv")))
assert "soft_l1" in rows[0] and f"{report['regions'][0]}_threshold_dice" in rows[0], list(rows[0])
html = open(f"{folder}/report.html").read()
assert 'id="soft-reference"' in html and "majority vote of 3 raters" in html
PY
done
log=$("$kdseg" train --data none.h5 --output norater --labels mean "${model[@]}" 2>&1)
grep -q "the store keeps none" <<< "$log" || fail "--labels mean on a store without raters: $log"

finish "multi-rater prepare, training and evaluation as expected"
