#!/usr/bin/env bash
# kdseg calibrate: temperature scaling of a trained model on a fold it held out.
#   - a student trained with fold 0 held out and fold 1 excluded is calibrated on fold 1: the NLL
#     there does not rise, and the copy carries T (evaluate names it, precompute uses it);
#   - a deliberately mis-scaled copy (T = 0.2, over-confident) is calibrated back: its NLL falls
#     and the fitted T lands on the plain model's, within the fit's grid step (2 %);
#   - a fold the model trained on, an existing output, a bad temperature and a fit without a fold
#     are refused, naming what is wrong, and write nothing.
#   calibrate_test.sh <kdseg> <work dir>
set -uo pipefail
kdseg=$1
work=$2
here=$(cd "$(dirname "$0")" && pwd)
source "$here/test_lib.sh"
start_in "$work"

tiny_store 6 32 8 3
tiny_model run 32 30 --fold 0 --exclude-folds 1 --task organ-tumor

# T and the two NLLs of calibrate's summary line.
numbers() { sed -n 's/^calibrated: T = \([0-9.e+-]*\) .*NLL \([0-9.]*\) at the model.s T -> \([0-9.]*\)$/\1 \2 \3/p' <<< "$1"; }

out=$("$kdseg" calibrate --model run/last.pt --data p.h5 --fold 1 --output cal.pt "${quiet[@]}" 2>&1) ||
  fail "calibrate: $out"
read -r t before after <<< "$(numbers "$out")"
[ -n "${after:-}" ] || fail "no summary line: $out"
awk -v b="$before" -v a="$after" 'BEGIN { exit !(a <= b) }' || fail "NLL rose on fold 1: $before -> $after"

# Over-confident by a factor of 5: the fit brings it back.
"$kdseg" calibrate --model run/last.pt --data p.h5 --temperature 0.2 --output mis.pt "${quiet[@]}" > /dev/null ||
  fail "calibrate --temperature 0.2"
out=$("$kdseg" calibrate --model mis.pt --data p.h5 --fold 1 --output back.pt "${quiet[@]}" 2>&1) ||
  fail "calibrate of the mis-scaled copy: $out"
read -r t_back before_back after_back <<< "$(numbers "$out")"
awk -v b="$before_back" -v a="$after_back" 'BEGIN { exit !(a < 0.9 * b) }' ||
  fail "the mis-scaled copy's NLL did not fall: $before_back -> $after_back"
awk -v x="$t_back" -v y="$t" 'BEGIN { r = x / y; exit !(r > 0.98 && r < 1.02) }' ||
  fail "the mis-scaled copy's T $t_back is not the plain model's $t"

# The copy is a model like any other: evaluate names its temperature, precompute teaches with it.
"$kdseg" evaluate --data p.h5 --fold 0 --task organ-tumor --model run/last.pt --model cal.pt --output report \
  --bootstrap 20 --no-figures "${quiet[@]}" > /dev/null || fail "evaluate of the calibrated copy"
/usr/bin/python3 - "$t" <<'PY' || fail "report"
import json, sys
r = json.load(open("report/report.json"))
plain, cal = r["models"]
assert "calibrated" not in plain["description"], plain["description"]
assert "calibrated: T = " in cal["description"], cal["description"]
# The same network: the same predicted classes, so the same Dice.
for region, d in plain["summary"]["dice"].items():
    assert abs(d["mean"] - cal["summary"]["dice"][region]["mean"]) < 1e-9, region
PY
"$kdseg" precompute --teacher cal.pt --data p.h5 --task organ-tumor --output cache "${quiet[@]}" > /dev/null || fail "precompute"

expect_error() {  # expect_error <what> <message regex> <command...>
  local what=$1 regex=$2
  shift 2
  local log
  log=$("$@" 2>&1) && fail "$what was accepted"
  grep -Eq -- "$regex" <<< "$log" || fail "$what: unexpected message: $log"
}
expect_error "a fold the model trained on" "last.pt: trained on [0-9]+ case\(s\) of fold 2 .*would leave it over-confident" \
  "$kdseg" calibrate --model run/last.pt --data p.h5 --fold 2 --output other.pt
expect_error "an existing output" "cal.pt: exists; give --force" \
  "$kdseg" calibrate --model run/last.pt --data p.h5 --fold 1 --output cal.pt
expect_error "a bad temperature" "--temperature must be fit or a positive number" \
  "$kdseg" calibrate --model run/last.pt --data p.h5 --temperature -1 --output other.pt
expect_error "a fit without a fold" "--temperature fit needs --fold" \
  "$kdseg" calibrate --model run/last.pt --data p.h5 --output other.pt
[ ! -e other.pt ] || fail "a refused calibrate wrote its output"
finish "calibrate: T = $t (NLL $before -> $after); mis-scaled T = $t_back (NLL $before_back -> $after_back)"
