# Shared by the shell tests in tests/tools: a fresh work folder, quiet kdseg options and a count of
# failed checks, so that a test reports every failure before it exits.
# and the tiny store and models most of them start from ($kdseg: the binary under test).
#   source test_lib.sh; start_in <work dir>; ...; fail "what went wrong"; ...; finish "summary"

quiet=(--log-level warn --threads 1)
failures=0

start_in() {  # start_in <work dir>: an empty folder, made the current one
  rm -rf "$1"
  mkdir -p "$1"
  cd "$1" || exit 1
}

fail() {
  echo "FAIL: $*"
  failures=$((failures + 1))
}

finish() {  # finish <what passed>: exit 1 when any check failed
  [ "$failures" -eq 0 ] || { echo "$failures failure(s)"; exit 1; }
  echo "$*"
}

tiny_store() {  # tiny_store <cases> <size> <slices> <folds>: raw/ (synth's LiTS) and p.h5 of every slice
  "$kdseg" synth --layout lits --cases "$1" --size "$2" --slices "$3" --output raw "${quiet[@]}" > /dev/null ||
    fail "synth"
  "$kdseg" prepare --input raw --output p.h5 --size "$2" --folds "$4" --slices all "${quiet[@]}" > /dev/null ||
    fail "prepare"
}

tiny_model() {  # tiny_model <output> <crop size> <steps> [train options...]: a width-0.125 UNet on p.h5
  local out=$1 crop=$2 steps=$3
  shift 3
  "$kdseg" train --data p.h5 --output "$out" --width 0.125 --crop-size "$crop" --batch-size 4 --max-steps "$steps" \
    --validate-every 0 --lr 3e-3 "${quiet[@]}" "$@" > /dev/null 2>&1 || fail "train $out"
}
