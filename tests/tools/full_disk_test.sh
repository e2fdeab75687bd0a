#!/usr/bin/env bash
# Every command that writes meets a full disk and ends cleanly: exit 1, one message naming the
# file and the free space, no abort or crash, no temporary left behind, and the previous output
# untouched (a store, a run's last.pt, a report). The disk is a small tmpfs filled up where this
# process may mount one (root), else a file size limit (ulimit -f) stands in for it.
#   full_disk_test.sh <kdseg> <work dir>
set -uo pipefail
kdseg=$1
work=$2
source "$(dirname "$0")/test_lib.sh"
start_in "$work"

# Inputs on the ordinary disk.
"$kdseg" synth --layout lits --cases 4 --size 32 --slices 12 --output raw "${quiet[@]}" > /dev/null || exit 1
"$kdseg" prepare --input raw --output store.h5 --size 32 --folds 2 --slices all "${quiet[@]}" > /dev/null || exit 1
train=(--max-steps 2 --batch-size 2 --crop-size 32 --width 0.125 --validate-every 0 "${quiet[@]}")
"$kdseg" train --data store.h5 --output teacher "${train[@]}" > /dev/null || exit 1
"$kdseg" precompute --teacher teacher/last.pt --data store.h5 --output cache "${quiet[@]}" > /dev/null || exit 1
# A run stopped half-way, to resume on the full disk with the same settings.
"$kdseg" train --data store.h5 --output partial --max-steps 4 --stop-after 2 --batch-size 2 --crop-size 32 \
  --width 0.125 --validate-every 0 "${quiet[@]}" > /dev/null || exit 1

mkdir -p disk
mode=ulimit
# KDSEG_TEST_NO_TMPFS=1 tries the file size limit where a tmpfs could be mounted.
if [ -z "${KDSEG_TEST_NO_TMPFS:-}" ] && mount -t tmpfs -o size=8m tmpfs disk 2> /dev/null; then
  mode=tmpfs
  trap 'umount "$work/disk" 2> /dev/null' EXIT
fi
echo "full disk as: $mode"

# The previous outputs, written while there is room.
cp store.h5 disk/store.h5
mkdir -p disk/run && cp partial/last.pt partial/config.json partial/metrics.jsonl disk/run/
"$kdseg" evaluate --data store.h5 --fold 0 --model teacher/last.pt --output disk/report --bootstrap 10 \
  "${quiet[@]}" > /dev/null || exit 1
tar -C disk -cf before.tar . || exit 1  # what must survive

fill() {  # leaves about 40 KiB free on the tmpfs
  [ "$mode" = tmpfs ] || return 0
  rm -f disk/filler
  local free_kib
  free_kib=$(df -k --output=avail disk | tail -1)
  [ "$free_kib" -gt 40 ] && dd if=/dev/zero of=disk/filler bs=1K count=$((free_kib - 40)) status=none
}

# expect_clean <name> <command...>: exit 1 with a write error, nothing else changed.
expect_clean() {
  local name=$1
  shift
  fill
  if [ "$mode" = tmpfs ]; then
    "$@" > "$name.out" 2> "$name.err"
  else
    (ulimit -f "${limit_kib:-40}" && exec "$@") > "$name.out" 2> "$name.err"
  fi
  local rc=$?
  [ "$rc" -eq 1 ] || fail "$name: exit $rc, expected 1"
  grep -q "cannot write" "$name.err" || fail "$name: no 'cannot write' message: $(head -c 600 "$name.err")"
  grep -q "free of" "$name.err" || fail "$name: the message does not give the free space: $(head -c 600 "$name.err")"
  grep -qE "No space left on device|File too large" "$name.err" || fail "$name: no system reason in the message"
  grep -qE "terminate called|Segmentation|Aborted" "$name.err" && fail "$name: crashed: $(head -c 600 "$name.err")"
  rm -f disk/filler
  local left
  left=$(find disk -name '.kdseg-tmp-*' | head -3)
  [ -z "$left" ] || fail "$name: temporaries left behind: $left"
  # Every previous file is as it was; metrics.jsonl may only have grown (a resume drops the
  # lines logged after its checkpoint).
  rm -rf prior && mkdir prior && tar -C prior -xf before.tar
  local file
  while read -r file; do
    if [ "${file##*/}" = metrics.jsonl ]; then
      cmp -s -n "$(stat -c %s "prior/$file")" "prior/$file" "disk/$file" || fail "$name: $file was rewritten"
    else
      cmp -s "prior/$file" "disk/$file" || fail "$name: the previous $file changed"
    fi
  done < <(cd prior && find . -type f)
  rm -rf prior
  echo "$name: $(grep -o 'cannot write.*' "$name.err" | head -1 | cut -c1-160)"
}

expect_clean prepare "$kdseg" prepare --input raw --output disk/store.h5 --size 32 --folds 2 --slices all --force \
  "${quiet[@]}"
expect_clean train "$kdseg" train --data store.h5 --output disk/run --resume --max-steps 4 --batch-size 2 \
  --crop-size 32 --width 0.125 --validate-every 0 "${quiet[@]}"
expect_clean precompute "$kdseg" precompute --teacher teacher/last.pt --data store.h5 --output disk/cache \
  "${quiet[@]}"
rm -rf disk/cache
expect_clean distill "$kdseg" distill --data store.h5 --cache cache --teacher teacher/last.pt --output disk/student \
  --max-steps 2 --batch-size 2 --crop-size 32 --width 0.125 --validate-every 0 "${quiet[@]}"
rm -rf disk/student
limit_kib=8 expect_clean evaluate "$kdseg" evaluate --data store.h5 --fold 0 --model teacher/last.pt --output disk/report \
  --bootstrap 10 --save-predictions --force "${quiet[@]}"

# Messages that say what happened: a checkpoint cut short, a report that is already there.
head -c 200000 teacher/last.pt > truncated.pt
for command in precompute evaluate; do
  if [ $command = precompute ]; then
    "$kdseg" precompute --teacher truncated.pt --data store.h5 --output cache-t "${quiet[@]}" > t.out 2> t.err
  else
    "$kdseg" evaluate --data store.h5 --model truncated.pt --output report-t "${quiet[@]}" > t.out 2> t.err
  fi
  rc=$?
  [ $rc -eq 1 ] && grep -q "truncated.pt: it has no end-of-central-directory record: the file was cut short; use an intact copy" t.err ||
    fail "$command of a truncated checkpoint: exit $rc, $(head -c 400 t.err)"
done
"$kdseg" evaluate --data store.h5 --fold 0 --model teacher/last.pt --output disk/report --bootstrap 10 \
  "${quiet[@]}" > t.out 2> t.err
rc=$?
[ $rc -eq 1 ] && grep -q "disk/report holds a report; pass --force" t.err ||
  fail "evaluate into a report without --force: exit $rc, $(head -c 400 t.err)"
"$kdseg" evaluate --data store.h5 --fold 0 --model teacher/last.pt --output teacher --bootstrap 10 --force \
  "${quiet[@]}" > t.out 2> t.err
rc=$?
[ $rc -eq 1 ] && grep -q "teacher holds files that are not a kdseg report" t.err && [ -f teacher/last.pt ] ||
  fail "evaluate --force into a run's folder: exit $rc, $(head -c 400 t.err)"
echo "messages: a truncated checkpoint, an existing report and a folder that is not a report are named"

finish "every command ended cleanly on a full disk ($mode)"
