#!/usr/bin/env bash
# Every committed study (docs/study/<benchmark>/ with study.json and its reports, gzipped) is
# recomputed by scripts/study_summary.py from the committed reports and the claims it recorded:
# each claim's verdict, effect, interval, p-values and power, each row's numbers and the
# before/after temperature-scaling table must come out as committed.
#   study_records_test.sh <repository root> <work dir>
set -uo pipefail
root=$1
work=$2
rm -rf "$work" && mkdir -p "$work"
checked=0
for dir in "$root"/docs/study/*/; do
  [ -e "$dir/study.json" ] && [ -e "$dir/report.json.gz" ] || continue
  name=$(basename "$dir")
  reports=("$dir/report.json.gz")
  [ -e "$dir/report-ts.json.gz" ] && reports+=("$dir/report-ts.json.gz")
  read -r rows seeds < <(/usr/bin/python3 -c "
import json, sys
s = json.load(open(sys.argv[1]))
print(','.join(s['rows']), ','.join(str(x) for x in s['seeds']))" "$dir/study.json")
  mkdir -p "$work/$name"
  # The claims the study decided, as it recorded them (v2's C1-C5, or a later study's own).
  /usr/bin/python3 -c "
import json, sys
s = json.load(open(sys.argv[1]))
json.dump([{k: c[k] for k in ('key', 'claim', 'row', 'reference', 'metric')} for c in s['claims']],
          open(sys.argv[2], 'w'))" "$dir/study.json" "$work/$name.claims.json"
  /usr/bin/python3 "$root/scripts/study_summary.py" "${reports[@]}" --rows "${rows//,/ }" --seeds "${seeds//,/ }" \
    --claims "$work/$name.claims.json" --out "$work/$name" > /dev/null || { echo "FAIL: $name: study_summary.py"; exit 1; }
  /usr/bin/python3 - "$dir/study.json" "$work/$name/study.json" << 'PY' || { echo "FAIL: $name differs"; exit 1; }
import json, sys
committed, again = (json.load(open(p)) for p in sys.argv[1:3])

def same(a, b, where):  # numbers to 1e-9 (numpy's sums may round differently on another CPU), the rest exactly
    if isinstance(a, float) or isinstance(b, float):
        assert isinstance(a, (int, float)) and isinstance(b, (int, float)), where
        assert abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b)), (where, a, b)
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), (where, a, b)
        for k in a:
            same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), (where, a, b)
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{where}[{i}]")
    else:
        assert a == b, (where, a, b)

keys = ["region", "seeds", "rows", "claims", "secondary", "rule"]
keys += ["temperature_scaling"] if "temperature_scaling" in committed else []  # the before/after table
for key in keys:
    same(committed[key], again[key], key)
print("recomputed:", sys.argv[1], {c["key"]: c["verdict"] for c in again["claims"]})
PY
  checked=$((checked + 1))
done
echo "study records: $checked recomputed"
