#!/usr/bin/python3
"""Writes small multi-rater folders in the KiTS23, KiTS21 and QUBIQ layouts, and what to expect of them.

    write_rater_folders.py OUT_DIR

Every volume is 24x24x6 voxels with 0.8 mm spacing and a flipped first axis, written by nibabel
(Debian's python3-nibabel, hence /usr/bin/python3). The masks are boxes, so that a test can also
reason about them by hand:

  kits23_r2/case_0000{0,1,2}/      imaging, segmentation (per-instance majority painted kidney,
                                   cyst, tumour) and instances/ with 2 float64 0/1 annotations
                                   of kidney 1 and 2, tumor 1 and cyst 1
  kits21_r3/case_0000{0,1}/        imaging, aggregated_MAJ_seg and segmentations/ (3 raters)
  qubiq_r7/kidney/Training/case0{1,2,3}/  image and task01_seg01..07 (uint8 0/1)
  kits23_missing/                  kits23_r2 whose case_00001 lacks tumor_instance-1_annotation-2
  qubiq_bad_shape/kidney/Training/ 2 raters; case02's task01_seg02 is 20x24x6

OUT_DIR/expected.json holds, per folder and case id: "raters"; "rater_counts", the voxel count of
each label value in each rater's painted label map; "majority_counts", the same of the per-voxel
majority of those maps (most votes, a tie to the lowest value); for KiTS "aggregated_counts" of the
aggregated file; and for a broken case "problem", the file at fault, instead of counts. Computed
here in numpy, independently of kdseg.
"""
import json
import os
import sys

import nibabel as nib
import numpy as np

SHAPE = (24, 24, 6)
AFFINE = np.array([[-0.8, 0, 0, 18.4], [0, 0.8, 0, -10.0], [0, 0, 0.8, -30.0], [0, 0, 0, 1]])
KITS_PAINT = [("kidney", 1), ("cyst", 3), ("tumor", 2)]  # later over earlier


def box(x0, x1, y0, y1, z0, z1, shape=SHAPE):
    m = np.zeros(shape, bool)
    m[x0:x1, y0:y1, z0:z1] = True
    return m


def save(path, data, dtype):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    img = nib.Nifti1Image(np.asarray(data).astype(dtype), AFFINE)
    img.set_qform(AFFINE, code=1)
    img.set_sform(AFFINE, code=1)
    nib.save(img, path)


def counts(label_map, values):
    return {str(v): int((label_map == v).sum()) for v in values}


def majority(maps, values):
    votes = np.stack([sum(m == v for m in maps) for v in values])
    return np.asarray(values)[votes.argmax(axis=0)]  # argmax: the first (lowest) value on a tie


def image(masks):
    hu = np.full(SHAPE, -1000, np.int16)
    hu[1:23, 1:23, :] = 40
    hu[masks > 0] = 150
    return hu


def kits_instances(case, rater):
    """Rater `rater`'s instances of case `case`: {(region, instance): mask}."""
    tumor = box(4, 8 + rater, 5 + case, 9 + case, 2, 4)
    cyst = box(7, 10, 8, 12, 2 + rater % 2, 5)  # overlaps the tumour: tumour is painted over it
    kidney1 = box(2, 11, 3, 15 + rater, 1, 5) | tumor | cyst  # a kidney covers its lesions
    kidney2 = box(13 + rater % 2, 22, 4, 16, 1 + case % 2, 5)
    return {("kidney", 1): kidney1, ("kidney", 2): kidney2, ("tumor", 1): tumor, ("cyst", 1): cyst}


def paint(instances):
    label = np.zeros(SHAPE, np.uint8)
    for region, value in KITS_PAINT:
        for (name, _), mask in sorted(instances.items()):
            if name == region:
                label[mask] = value
    return label


def write_kits(folder, cases, raters, subfolder, seg_name, skip=None):
    expected = {}
    for c in range(cases):
        case = os.path.join(folder, f"case_{c:05d}")
        per_rater = [kits_instances(c, j) for j in range(raters)]
        agg = {key: sum(r[key] for r in per_rater) >= raters // 2 + 1 for key in per_rater[0]}
        save(os.path.join(case, "imaging.nii.gz"), image(paint(agg)), np.int16)
        save(os.path.join(case, seg_name), paint(agg), np.uint8)
        entry = {"raters": raters, "aggregated_counts": counts(paint(agg), range(4))}
        for j, instances in enumerate(per_rater):
            for (region, i), mask in instances.items():
                name = f"{region}_instance-{i}_annotation-{j + 1}.nii.gz"
                if skip == (c, name):
                    entry = {"raters": raters, "problem": name}
                    continue
                save(os.path.join(case, subfolder, name), mask, np.float64)
        if "problem" not in entry:
            maps = [paint(r) for r in per_rater]
            entry["rater_counts"] = [counts(m, range(4)) for m in maps]
            entry["majority_counts"] = counts(majority(maps, range(4)), range(4))
        expected[f"case_{c:05d}"] = entry
    return expected


def write_qubiq(folder, cases, raters, bad=None):
    expected = {}
    for c in range(1, cases + 1):
        case = os.path.join(folder, "kidney", "Training", f"case{c:02d}")
        masks = [box(6, 12 + r % 3, 8, 14 + (r * c) % 4, 2, 4 + r % 2) for r in range(1, raters + 1)]
        save(os.path.join(case, "image.nii.gz"), image(sum(masks)), np.int16)
        entry = {"raters": raters}
        for r, mask in enumerate(masks, start=1):
            name = f"task01_seg{r:02d}.nii.gz"
            if bad == (c, r):
                mask, entry = box(6, 12, 8, 14, 2, 4, shape=(20, 24, 6)), {"raters": raters, "problem": name}
            save(os.path.join(case, name), mask, np.uint8)
        if "problem" not in entry:
            entry["rater_counts"] = [counts(m.astype(np.uint8), range(2)) for m in masks]
            entry["majority_counts"] = counts(majority([m.astype(np.uint8) for m in masks], range(2)), range(2))
        expected[f"kidney/Training/case{c:02d}"] = entry
    return expected


def main(out):
    expected = {
        "kits23_r2": write_kits(os.path.join(out, "kits23_r2"), 3, 2, "instances", "segmentation.nii.gz"),
        "kits21_r3": write_kits(os.path.join(out, "kits21_r3"), 2, 3, "segmentations", "aggregated_MAJ_seg.nii.gz"),
        "qubiq_r7": write_qubiq(os.path.join(out, "qubiq_r7"), 3, 7),
        "kits23_missing": write_kits(os.path.join(out, "kits23_missing"), 3, 2, "instances", "segmentation.nii.gz",
                                     skip=(1, "tumor_instance-1_annotation-2.nii.gz")),
        "qubiq_bad_shape": write_qubiq(os.path.join(out, "qubiq_bad_shape"), 3, 2, bad=(2, 2)),
    }
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1, sort_keys=True)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
