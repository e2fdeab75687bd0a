#!/usr/bin/env bash
# kdseg verify: stores, models and caches checked against what kdseg wrote.
#   - a fresh store (compressed and uncompressed), checkpoint, exported module and cache verify
#     as intact, exit 0;
#   - a flipped bit in an uncompressed store's slice changes its recomputed content hash, one in
#     its case table (an affine) the table hash; one in a compressed store's chunk fails the
#     chunk's own check, naming the dataset and row; a store older than the table hash is named so;
#   - a flipped bit in a checkpoint's weight, or in an exported module's deflated code, is named by
#     its record, here and by the commands that load the model (nothing written);
#   - a file that is not a checkpoint, and no file at all, are named; the other files still run.
#   verify_test.sh <kdseg> <work dir>
set -uo pipefail
kdseg=$1
work=$2
here=$(cd "$(dirname "$0")" && pwd)
source "$here/test_lib.sh"
start_in "$work"

tiny_store 4 32 6 2
"$kdseg" prepare --input raw --output u.h5 --size 32 --folds 2 --slices all --compression 0 "${quiet[@]}" \
  > /dev/null || fail "prepare --compression 0"
tiny_model run 32 3
"$kdseg" export --model run/last.pt --output run.ts "${quiet[@]}" > /dev/null || fail "export"
"$kdseg" precompute --teacher run/last.pt --data p.h5 --output cache "${quiet[@]}" > /dev/null || fail "precompute"

out=$("$kdseg" verify --data p.h5 --data u.h5 --model run/last.pt --model run.ts --cache cache "${quiet[@]}" 2>&1) ||
  fail "verify of fresh files: $out"
[ "$(grep -c ': intact (' <<< "$out")" -eq 5 ] || fail "not five intact files: $out"
grep -q "^p.h5: intact (24 slices of 4 cases" <<< "$out" || fail "the store's line: $out"

# flip <file> <byte offset>: one bit of one byte.
flip() {
  /usr/bin/python3 - "$1" "$2" << 'PY'
import sys
path, at = sys.argv[1], int(sys.argv[2])
with open(path, "r+b") as f:
    f.seek(at)
    b = f.read(1)[0]
    f.seek(at)
    f.write(bytes([b ^ 0x10]))
PY
}
# record_byte <zip> <stored|deflated>: the largest record of that kind, as "<byte in the middle of
# its data> <name>".
record_byte() {
  /usr/bin/python3 - "$1" "$2" << 'PY'
import struct, sys, zipfile
path, kind = sys.argv[1], {"stored": zipfile.ZIP_STORED, "deflated": zipfile.ZIP_DEFLATED}[sys.argv[2]]
r = max((i for i in zipfile.ZipFile(path).infolist() if i.compress_type == kind), key=lambda i: i.compress_size)
with open(path, "rb") as f:
    f.seek(r.header_offset + 26)
    n, e = struct.unpack("<HH", f.read(4))
print(r.header_offset + 30 + n + e + r.compress_size // 2, r.filename)
PY
}
# chunk_byte <store> <dataset> <row>: a byte in the middle of the row's stored chunk.
chunk_byte() {
  /usr/bin/python3 - "$1" "$2" "$3" << 'PY'
import sys, h5py
with h5py.File(sys.argv[1], "r") as f:
    info = f[sys.argv[2]].id.get_chunk_info(int(sys.argv[3]))
    print(info.byte_offset + info.size // 2)
PY
}

cp u.h5 u-bad.h5
flip u-bad.h5 "$(chunk_byte u-bad.h5 slices/image 5)"
out=$("$kdseg" verify --data u-bad.h5 --data u.h5 "${quiet[@]}" 2>&1) && fail "a flipped slice verified: $out"
grep -q "^u-bad.h5: FAILED: its slices give content hash [0-9a-f]*, not the [0-9a-f]* prepare recorded" <<< "$out" ||
  fail "the uncompressed store's flipped slice is not reported: $out"
grep -q "^u.h5: intact" <<< "$out" || fail "the intact store beside it is not checked: $out"
grep -q "^1 of 2 failed verification" <<< "$out" || fail "no count: $out"

# A store written before the content hash's present definition (2026-12-04) is named as such.
cp u-bad.h5 u-2026-12-01.h5
/usr/bin/python3 -c "import h5py; h5py.File('u-2026-12-01.h5', 'r+').attrs['created'] = '2026-12-01T00:00:00Z'"
out=$("$kdseg" verify --data u-2026-12-01.h5 "${quiet[@]}" 2>&1) && fail "a store of the older hash verified: $out"
grep -q "^u-2026-12-01.h5: FAILED: written 2026-12-01T00:00:00Z, before the content hash took its present" <<< "$out" ||
  fail "the older store's hash definition is not named: $out"

# The case table is not in the content hash: its own table_hash covers it.
cp u.h5 u-affine.h5
at=$(/usr/bin/python3 -c "import h5py; f = h5py.File('u-affine.h5', 'r'); d = f['cases/affine']; print(d.id.get_offset() + d.id.get_storage_size() // 2)")
flip u-affine.h5 "$at"
out=$("$kdseg" verify --data u-affine.h5 "${quiet[@]}" 2>&1) && fail "a flipped affine verified: $out"
grep -q "^u-affine.h5: FAILED: its case table (geometry, files, folds, rater tables) gives table hash" <<< "$out" ||
  fail "the flipped affine is not reported: $out"
# A store written before table_hash: its slices are checked, and the line says the table is not.
cp u.h5 u-old.h5
/usr/bin/python3 -c "import h5py; f = h5py.File('u-old.h5', 'r+'); del f.attrs['table_hash']"
out=$("$kdseg" verify --data u-old.h5 "${quiet[@]}" 2>&1) || fail "a store without table_hash: $out"
grep -q "^u-old.h5: intact (.*its case table has no recorded hash" <<< "$out" || fail "the older store's line: $out"

cp p.h5 p-bad.h5
flip p-bad.h5 "$(chunk_byte p-bad.h5 slices/label 7)"
out=$("$kdseg" verify --data p-bad.h5 "${quiet[@]}" 2>&1) && fail "a damaged chunk verified: $out"
grep -q "^p-bad.h5: FAILED: /slices/label row 7 cannot be read" <<< "$out" ||
  fail "the compressed store's damaged chunk is not named: $out"

# The largest record of the checkpoint (a weight), one bit flipped in its middle.
offset=$(record_byte run/last.pt stored)
cp run/last.pt bad.pt
flip bad.pt "${offset%% *}"
record=${offset#* }
out=$("$kdseg" verify --model bad.pt "${quiet[@]}" 2>&1) && fail "a flipped weight verified: $out"
grep -q "^bad.pt: FAILED: record $record does not match its CRC-32" <<< "$out" || fail "the record is not named: $out"
out=$("$kdseg" export --model bad.pt --output bad.ts "${quiet[@]}" 2>&1) && fail "export of a damaged checkpoint ran"
grep -q "bad.pt: record $record does not match its CRC-32 .*use an intact copy of the checkpoint" <<< "$out" ||
  fail "export does not name the damage: $out"
[ ! -e bad.ts ] || fail "export of a damaged checkpoint wrote bad.ts"
out=$("$kdseg" predict --model bad.pt --input raw --output pred "${quiet[@]}" 2>&1) && fail "predict with a damaged model ran"
grep -q "does not match its CRC-32" <<< "$out" || fail "predict does not name the damage: $out"

# The exported module's TorchScript code, which LibTorch deflates: one bit flipped in its
# compressed bytes.
code=$(record_byte run.ts deflated)
cp run.ts bad.ts
flip bad.ts "${code%% *}"
out=$("$kdseg" verify --model bad.ts "${quiet[@]}" 2>&1) && fail "a flipped bit in deflated code verified: $out"
grep -Eq "^bad.ts: FAILED: record ${code#* } (does not match its CRC-32|does not inflate)" <<< "$out" ||
  fail "the deflated record is not named: $out"
out=$("$kdseg" predict --model bad.ts --input raw --output pred-ts "${quiet[@]}" 2>&1) &&
  fail "predict with a damaged module ran"
grep -q "bad.ts: record .* use an intact copy of the mod" <<< "$out" || fail "predict does not name the module's damage: $out"

out=$("$kdseg" verify --model p.h5 --model missing.pt --cache cache "${quiet[@]}" 2>&1) &&
  fail "verify of a store as a model passed: $out"
grep -q "^p.h5: FAILED: not a zip archive" <<< "$out" || fail "a store given as a model: $out"
grep -q "^missing.pt: FAILED: .*cannot open" <<< "$out" || fail "a missing file: $out"
grep -q "^cache: intact" <<< "$out" || fail "the cache after two failures: $out"
"$kdseg" verify "${quiet[@]}" > /dev/null 2>&1
[ $? -eq 2 ] || fail "verify without files is not a usage error"

finish "verify: fresh stores, models and cache intact; flipped bits in both kinds of store and in a weight named"
