#!/usr/bin/env bash
# A smaller demo, end to end: scripts/pipeline.sh with tiny data and networks, then checks of what
# a user gets (a report of four models, against the raters, that renders in a browser, predictions, a sound cache)
# and that a rerun of the same command continues instead of redoing the work.
#   pipeline_test.sh <kdseg> <work dir>
set -euo pipefail
kdseg=$1
work=$2
root=$(cd "$(dirname "$0")/../.." && pwd)
rm -rf "$work"
export CASES=6 SIZE=32 SLICES=12 TEACHER_ARCH=unet-resnet18d TEACHER_EPOCHS=3 STUDENT_EPOCHS=3 WIDTH=0.125 BATCH=4
bash "$root/scripts/pipeline.sh" "$kdseg" "$work" > "$work.log" 2>&1 || { tail -50 "$work.log"; exit 1; }
cd "$work"
/usr/bin/python3 - <<'PY'
import json, sys
r = json.load(open("report/report.json"))
names = [m["name"] for m in r["models"]]
assert names == ["baseline", "rater-mean", "distilled", "teacher"], names
assert r["reference"] == {"label": "majority", "raters": 3, "soft": "rater mean"}, r["reference"]
region = r["regions"][0]
assert "paired" not in r["models"][0] and r["models"][1]["paired"]["reference"] == "baseline"
for m in r["models"]:
    assert m["slices"] > 0 and m["cases"], m["name"]
    assert m["summary"]["dice"][region]["mean"] is not None, m["name"]
    assert m["summary"]["soft_reference"]["threshold_dice"][region]["mean"] is not None, m["name"]
    assert len(m["reliability"]["count"]) == 10
# Figures: the worst, median and best case of the region, each a PNG under the report.
figures = r["figures"]
assert [f["pick"] for f in figures][:1] == ["worst"], figures
for f in figures:
    assert f["columns"] == ["reference"] + names, f["columns"]
    assert open("report/" + f["file"], "rb").read(8) == b"\x89PNG\r\n\x1a\n", f["file"]
# Training curves: every model is a kdseg checkpoint whose run logged steps.
for m in r["models"]:
    assert len(m["curves"]["steps"]) > 0 and len(m["curves"]["loss"]) == len(m["curves"]["steps"]), m["name"]
print("report:", ", ".join(f'{m["name"]} Dice {m["summary"]["dice"][region]["mean"]:.3f}' for m in r["models"]))
PY
EXPECT_FIGURES=1 SCREENSHOT="$work.report.png" bash "$root/tests/eval/report_browser_test.sh" report/report.html
ls report/predictions/distilled/*_probs.nii.gz > /dev/null
"$kdseg" cache verify --cache cache --teacher teacher/last.pt --data prepared.h5
# The same command again: every stage finds its work done.
bash "$root/scripts/pipeline.sh" "$kdseg" "$work" > "$work.rerun.log" 2>&1 || { tail -50 "$work.rerun.log"; exit 1; }
grep -q "cache: sound" "$work.rerun.log" || grep -q ": sound" "$work.rerun.log"
grep -q "resumed from teacher/last.pt at step" "$work.rerun.log"
echo "e2e: pipeline passed"
