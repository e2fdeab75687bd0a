# Shared by the shell tests in tests/tools: a fresh work folder, quiet kdseg options and a count of
# failed checks, so that a test reports every failure before it exits.
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
