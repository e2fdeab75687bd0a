#!/usr/bin/env bash
# Installs what is missing, builds kdseg and runs the whole pipeline on synthetic multi-rater CT
# (scripts/pipeline.sh) into demo-out/; prints where the report is.
#   bash scripts/demo.sh
#   BUILD_DIR=/tmp/b OUT=/tmp/demo bash scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
build=${BUILD_DIR:-build}
out=${OUT:-demo-out}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release
cmake --build "$build" -j "$(nproc)" --target kdseg
bash scripts/pipeline.sh "$build/tools/kdseg" "$out"
echo
echo "report: $(realpath "$out")/report/report.html"
