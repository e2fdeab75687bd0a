"""Compares two output folders of scripts/compare_builds.sh; exits 1 on any difference."""
import filecmp
import json
import os
import sys

import h5py
import numpy as np

TIMINGS = {"images_per_s", "step_s", "data_wait_s", "teacher_s"}
# Paths, times, the build's version and the hashes of checkpoint files (which hold the run
# record) differ by design.
VOLATILE = {"created", "file", "file_hash", "source", "data", "store_file", "teacher_file", "teacher_hash",
            "tool_version"}


def strip(value):
    if isinstance(value, dict):
        return {k: strip(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [strip(v) for v in value]
    return value


def same_attributes(a, b):
    keys = (set(a.attrs) | set(b.attrs)) - VOLATILE
    return all(k in a.attrs and k in b.attrs and str(a.attrs[k]) == str(b.attrs[k]) for k in keys)


def same_hdf5(a, b):
    """Every dataset and every attribute but the volatile ones (the version of the build)."""
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        names = [""]
        fa.visit(names.append)
        for name in names:
            ga, gb = (fa[name], fb[name]) if name else (fa, fb)
            if not same_attributes(ga, gb):
                return False
            if isinstance(ga, h5py.Dataset) and not np.array_equal(ga[()], gb[()]):
                return False
        return True


def compare(rel, a, b):
    if rel.endswith(".kdseg.lock") or rel.endswith(".pt") or rel.endswith(".html"):
        return None  # the holder, the checkpoint's record and times
    if rel.endswith("metrics.jsonl"):
        lines = [[{k: v for k, v in json.loads(l).items() if k not in TIMINGS} for l in open(p)] for p in (a, b)]
        return lines[0] == lines[1]
    if rel.endswith("config.json"):
        ja, jb = json.load(open(a)), json.load(open(b))
        added = sorted(k for k in jb if k not in ja)
        if added:
            print(f"     {rel}: keys added {added}")
        return all(ja[k] == jb.get(k) for k in ja)
    if rel.endswith("report.json"):
        return strip(json.load(open(a))) == strip(json.load(open(b)))
    if rel.endswith(".h5"):
        return filecmp.cmp(a, b, shallow=False) or same_hdf5(a, b)
    return filecmp.cmp(a, b, shallow=False)


def main(old, new):
    differences = 0
    for root, _, files in os.walk(old):
        for f in sorted(files):
            a = os.path.join(root, f)
            rel = os.path.relpath(a, old)
            b = os.path.join(new, rel)
            if not os.path.exists(b):
                print(f"MISSING {rel}")
                differences += 1
                continue
            same = compare(rel, a, b)
            if same is None:
                continue
            print(("same    " if same else "DIFFER  ") + rel)
            differences += not same
    print(f"compare_builds: {differences} difference(s)")
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
