#!/usr/bin/env bash
# Installs what is missing, builds kdseg and runs its main job on the embedded default.
# For now that is the command-line entry point; the pipeline stages arrive one by one
# (`kdseg --help` marks the ones not built yet).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
build=${BUILD_DIR:-build}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release
cmake --build "$build" -j "$(nproc)" --target kdseg
"$build/tools/kdseg" --version
"$build/tools/kdseg" --help
