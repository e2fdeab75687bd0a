#!/usr/bin/env bash
# A tiny study (scripts/study.sh: 2 rows and their temperature-scaled students, 1 seed, a few
# steps) end to end, then checks that
# study.json has its structure and that every number and verdict in it follows from report.json:
# the rows' means are recomputed from the report's per-case values, and each verdict from its
# per-seed improvements and interval by the seed-level rule study_summary.py documents. A rerun resumes;
# a rerun with CLAIMS decides other claims from the same runs, and a claim on a metric the rule
# cannot decide is refused before any run.
# The rows train side by side (PARALLEL, the cores), each writing its log beside its run.
#   study_test.sh <kdseg> <work dir>
set -euo pipefail
kdseg=$1
work=$2
root=$(cd "$(dirname "$0")/../.." && pwd)
rm -rf "$work"
export CASES=10 SIZE=32 SLICES=6 STEPS=8 WIDTH=0.125 BATCH=4 SEEDS=0 ROWS="majority mean"
bash "$root/scripts/study.sh" "$kdseg" "$work" > "$work.log" 2>&1 || { tail -50 "$work.log"; exit 1; }
cd "$work"
/usr/bin/python3 - <<'PY'
import json
import numpy as np
report, study = json.load(open("report/report.json")), json.load(open("study.json"))
scaled = json.load(open("report-ts/report.json"))
assert [m["name"] for m in scaled["models"]] == ["majority-ts-s0", "mean-ts-s0"], scaled["models"]
assert all("calibrated: T = " in m["description"] for m in scaled["models"]), [m["description"] for m in scaled["models"]]
names = [m["name"] for m in report["models"]]
assert names == ["majority-s0", "mean-s0"], names
assert report["reference"]["label"] == "majority" and report["reference"]["raters"] == 3
region = study["region"]
assert region == report["regions"][0] == "target"
def per_case(name, metric):
    model = next(m for m in report["models"] if m["name"] == name)
    return {c["id"]: (c["dice"][region] if metric == "dice" else c["ece"]) for c in model["cases"]}
for row in ("majority", "mean"):
    for metric in ("dice", "ece"):
        values = [v for v in per_case(f"{row}-s0", metric).values() if v is not None]
        entry = study["rows"][row][metric]
        assert abs(entry["mean"] - np.mean(values)) < 1e-12, (row, metric, entry["mean"], np.mean(values))
        assert entry["seed_means"] == [entry["mean"]], (row, metric, entry)
claims = {c["key"]: c for c in study["claims"]}
assert set(claims) == {"C1", "C2", "C3", "C4", "C5"}, set(claims)
assert all(claims[k]["verdict"] == "not run" for k in ("C3", "C4")), claims
assert claims["C5"]["verdict"] == "cannot tell", claims["C5"]
# The seed-level rule with one seed: no test (fewer than 5 seeds), so "cannot tell"; the effect is
# the seed's mean improvement over the cases, inside its interval.
for key, metric, sign in (("C1", "dice", 1), ("C2", "ece", -1)):
    claim = claims[key]
    a, b = per_case("mean-s0", metric), per_case("majority-s0", metric)
    differences = [sign * (a[c] - b[c]) for c in a if a[c] is not None and b.get(c) is not None]
    assert abs(claim["effect"] - np.mean(differences)) < 1e-12, (key, claim, np.mean(differences))
    assert claim["per_seed"] == [claim["effect"]] and claim["test"] == "too few seeds" and claim["p_value"] is None
    low, high = claim["ci95"]
    assert low <= claim["effect"] <= high, claim
    assert claim["verdict"] == "cannot tell", (key, claim["verdict"])
md = open("study.md").read()
assert "| majority |" in md and "| mean |" in md and "**" + claims["C1"]["verdict"] + "**" in md
print("study:", {k: c["verdict"] for k, c in claims.items()})
PY
# The same command again: every run is found finished and the report kept.
bash "$root/scripts/study.sh" "$kdseg" "$work" > "$work.rerun.log" 2>&1 || { tail -50 "$work.rerun.log"; exit 1; }
[ "$(cat runs/majority-s0.log runs/mean-s0.log | grep -c "already finished, nothing to do")" -eq 2 ] || { echo "the rerun trained again"; exit 1; }
! grep -q "^evaluate " "$work.rerun.log" || { echo "the rerun evaluated again"; exit 1; }
# Claims of a later study (CLAIMS): decided from the same runs, on the metric they name.
echo '[{"key": "A1", "claim": "the mean beats the majority in ACE", "row": "mean", "reference": "majority",
  "metric": "ace"}]' > claims.json
CLAIMS=claims.json bash "$root/scripts/study.sh" "$kdseg" "$work" > "$work.claims.log" 2>&1 ||
  { tail -50 "$work.claims.log"; exit 1; }
/usr/bin/python3 - "$work/study.json" << 'PY'
import json, sys
study = json.load(open(sys.argv[1]))
assert [c["key"] for c in study["claims"]] == ["A1"], study["claims"]
a1 = study["claims"][0]
assert a1["metric"] == "ace" and a1["verdict"] == "cannot tell", a1  # one seed: no test
assert set(study["rows"]["mean"]) == {"dice", "ece", "ace"}, study["rows"]["mean"].keys()
PY
echo '[{"key": "A1", "claim": "x", "row": "mean", "reference": "majority", "metric": "nsd"}]' > bad-claims.json
if CLAIMS=bad-claims.json bash "$root/scripts/study.sh" "$kdseg" "$work" > "$work.bad.log" 2>&1; then
  echo "a claim on a metric the rule cannot decide was accepted"; exit 1
fi
grep -q "metric 'nsd' is not one of" "$work.bad.log" || { cat "$work.bad.log"; exit 1; }
echo "e2e: study passed"
