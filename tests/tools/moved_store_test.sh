#!/usr/bin/env bash
# A checkpoint knows the store it trained on by its content hash, wherever the store is read from:
#   - train with a relative --data path (run/p.h5 typed as p.h5); the run record keeps the
#     store's absolute path and its content hash (version 3);
#   - from another working folder, evaluate on the same store and on a copy at another path
#     (the original then moved away): the fold the model trained on is refused naming its cases,
#     the held-out fold is evaluated.
#   moved_store_test.sh <kdseg> <work dir>
set -uo pipefail
kdseg=$1
work=$2
here=$(cd "$(dirname "$0")" && pwd)
source "$here/test_lib.sh"
start_in "$work"
python=/usr/bin/python3

mkdir -p run elsewhere copy
(
  cd run &&
    "$kdseg" synth --layout lits --cases 4 --size 32 --slices 8 --output raw "${quiet[@]}" &&
    "$kdseg" prepare --input raw --output p.h5 --size 32 --slices organ --folds 2 "${quiet[@]}" &&
    "$kdseg" train --data p.h5 --output model --fold 0 --max-steps 2 --width 0.125 --crop-size 32 --batch-size 2 \
      --validate-every 0 "${quiet[@]}"
) > setup.log 2>&1 || { cat setup.log; exit 1; }

"$python" - "$work/run/p.h5" run/model/config.json <<'PY' || fail "the run record does not name the store by path and hash"
import json, sys
import h5py
store, record = sys.argv[1], json.load(open(sys.argv[2]))
content_hash = h5py.File(store, "r").attrs["content_hash"]
content_hash = content_hash.decode() if isinstance(content_hash, bytes) else str(content_hash)
problems = []
if record.get("version") != 3:
    problems.append(f"version {record.get('version')}, expected 3")
if record.get("data") != store:
    problems.append(f"data {record.get('data')!r}, expected {store!r}")
if record.get("data_hash") != content_hash:
    problems.append(f"data_hash {record.get('data_hash')!r}, expected {content_hash!r}")
if problems:
    sys.exit("\n".join(problems))
PY

# evaluate_fold <store> <fold> <expect: refused|accepted>, run from elsewhere/.
evaluate_fold() {
  local out rc
  out=$(cd elsewhere && "$kdseg" evaluate --data "$1" --fold "$2" --model ../run/model/last.pt --output "report-$2" \
    --bootstrap 10 --no-surface --no-figures --no-curves --force "${quiet[@]}" 2>&1)
  rc=$?
  if [ "$3" = refused ]; then
    [ $rc -ne 0 ] && grep -q "last.pt: trained on [0-9]* case(s) of fold $2 .*it held out fold 0" <<< "$out" ||
      fail "$1 fold $2: not refused (rc $rc): $out"
  else
    [ $rc -eq 0 ] && ! grep -q "is gone" <<< "$out" || fail "$1 fold $2: not evaluated with its check (rc $rc): $out"
  fi
}

evaluate_fold ../run/p.h5 1 refused
evaluate_fold ../run/p.h5 0 accepted
cp run/p.h5 copy/another-name.h5
mv run/p.h5 run/moved.h5
evaluate_fold ../copy/another-name.h5 1 refused
evaluate_fold ../copy/another-name.h5 0 accepted
evaluate_fold "$work/run/moved.h5" 1 refused

finish "the training store is known by its hash from any folder and under any name"
