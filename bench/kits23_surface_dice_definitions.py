#!/usr/bin/env python3
"""How far the voxel-centre NSD (core/surface_distance.h, surface_metrics' nsd) is from the
surfel-based surface Dice (surfel_surface_dice, KiTS23's definition) on real KiTS23 annotations:
per case, the organisers' majority (segmentation.nii.gz) against annotation slot 1 (the union of
every instance's annotation-1), per HEC region, at KiTS23's tolerance, at the CT's own spacing.

    kits23_surface_dice_definitions.py [folder] [cases]

The surfel number comes from the independent reference of the tests (tests/core/surfel_reference.py);
the voxel-centre one from scipy, as core/surface_distance.h defines it (surface voxels with a
6-neighbour outside the mask or the grid, distances between voxel centres, counted not weighed).
"""
import glob
import os
import sys
import time

import nibabel as nib
import numpy as np
from scipy import ndimage

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "core"))
import surfel_reference  # noqa: E402

HECS = {"kidney_and_mass": ((1, 2, 3), 1.0330772532390826), "mass": ((2, 3), 1.1328796488598762),
        "tumor": ((2,), 1.1498198361434828)}


def voxel_centre_nsd(a, b, spacing, tolerance):
    if not a.any() and not b.any():
        return 1.0
    if not a.any() or not b.any():
        return 0.0
    six = ndimage.generate_binary_structure(3, 1)
    surfaces = [m & ~ndimage.binary_erosion(m, six, border_value=0) for m in (a, b)]
    dist = [ndimage.distance_transform_edt(~s, sampling=spacing) for s in surfaces]
    within = (dist[1][surfaces[0]] <= tolerance).sum() + (dist[0][surfaces[1]] <= tolerance).sum()
    return within / (surfaces[0].sum() + surfaces[1].sum())


def slot_map(case, slot, shape):
    out = np.zeros(shape, np.uint8)
    for name, value in (("kidney", 1), ("cyst", 3), ("tumor", 2)):
        for f in sorted(glob.glob(f"{case}/instances/{name}_instance-*_annotation-{slot}.nii.gz")):
            out[np.asanyarray(nib.load(f).dataobj) > 0] = value
    return out


def main():
    folder = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("KDSEG_KITS23_RATERS",
                                                                  "/work/shared/data/kits23-raters")
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 12
    cases = sorted(glob.glob(f"{folder}/case_*"))
    cases = cases[:: max(1, len(cases) // count)][:count]
    rows = {name: [] for name in HECS}
    start = time.time()
    for case in cases:
        image = nib.load(f"{case}/segmentation.nii.gz")
        reference = np.asanyarray(image.dataobj)
        spacing = tuple(float(z) for z in image.header.get_zooms())
        prediction = slot_map(case, 1, reference.shape)
        for name, (values, tolerance) in HECS.items():
            a, b = np.isin(prediction, values), np.isin(reference, values)
            rows[name].append((voxel_centre_nsd(a, b, spacing, tolerance),
                               surfel_reference.surface_dice(b, a, spacing, tolerance)))
    print(f"{len(cases)} cases of {folder}, {time.time() - start:.0f} s")
    print("| region | cases | voxel-centre NSD mean | surfel surface Dice mean | mean difference | largest |difference| |")
    print("|---|---|---|---|---|---|")
    for name, values in rows.items():
        v = np.array(values)
        d = v[:, 0] - v[:, 1]
        print(f"| {name} | {len(v)} | {v[:, 0].mean():.4f} | {v[:, 1].mean():.4f} | {d.mean():+.4f} | "
              f"{np.abs(d).max():.4f} |")


if __name__ == "__main__":
    main()
