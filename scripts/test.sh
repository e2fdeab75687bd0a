#!/usr/bin/env bash
# Installs what is missing, builds kdseg and runs the whole test suite (unit, MPI, GPU tests
# that skip without a GPU, and the install test), then prints ctest's summary.
#   bash scripts/test.sh            # build in ./build
#   BUILD_DIR=/tmp/b bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
build=${BUILD_DIR:-build}
jobs=$(nproc)
start=$(date +%s)
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release
cmake --build "$build" -j "$jobs"
echo "build: $(( $(date +%s) - start )) s"
# Each test is a process; MPI tests declare how many cores they use (PROCESSORS).
ctest --test-dir "$build" --output-on-failure -j "$jobs" "$@"
