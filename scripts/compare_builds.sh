#!/usr/bin/env bash
# Runs the same tiny pipeline with two kdseg binaries and compares what they wrote: the proof
# that a refactor changed no behaviour. Every stage runs (synth, prepare, a teacher, precompute
# on 2 ranks, a student distilled on 2 ranks from the raters' mean and the teacher, a baseline on
# the raters' majority, evaluate with predictions). Compared: NIfTI files, per-case CSV and
# predictions byte for byte; metrics.jsonl's losses exactly (timings left out); stores and caches
# byte for byte or, failing that, every dataset and attribute exactly but the build's version;
# report.json apart from paths, times, the build's version and the checkpoints' file hashes;
# config.json key by key (keys a newer record adds are listed, not counted as differences).
#   bash scripts/compare_builds.sh OLD_KDSEG NEW_KDSEG [WORK_DIR]
set -euo pipefail
old=$(realpath "$1"); new=$(realpath "$2"); work=${3:-$(mktemp -d)}
here=$(cd "$(dirname "$0")" && pwd)
run() {
  local kdseg=$1 out=$2
  export SOURCE_DATE_EPOCH=1700000000 OMP_NUM_THREADS=1
  local mpirun=(mpirun -np 2)
  if mpirun --version 2>&1 | grep -q "Open MPI"; then
    mpirun+=(--oversubscribe)
    [ "$(id -u)" -ne 0 ] || mpirun+=(--allow-run-as-root)
  fi
  rm -rf "$out"; mkdir -p "$out"
  (
    cd "$out"
    local common=(--crop-size 32 --batch-size 4 --width 0.125 --seed 3 --validate-every 1 --log-every 1 --threads 1
      --log-level warn)
    "$kdseg" synth --layout qubiq --raters 3 --cases 6 --size 32 --slices 6 --output raw --log-level warn
    "$kdseg" prepare --input raw --output prepared.h5 --size 32 --folds 3 --log-level warn
    "$kdseg" train --data prepared.h5 --fold 0 --max-steps 4 --output teacher "${common[@]}"
    "${mpirun[@]}" "$kdseg" precompute --teacher teacher/last.pt --data prepared.h5 --output cache --folds 1,2 \
      --threads 1 --log-level warn
    "${mpirun[@]}" "$kdseg" distill --data prepared.h5 --cache cache --teacher teacher/last.pt --fold 0 \
      --labels mean --max-steps 4 --output student "${common[@]}"
    "$kdseg" train --data prepared.h5 --fold 0 --max-steps 4 --output baseline --labels majority "${common[@]}"
    "$kdseg" evaluate --data prepared.h5 --fold 0 --output report --threads 1 --seed 1 --model baseline/last.pt \
      --name baseline --model student/last.pt --name distilled --model teacher/last.pt --name teacher \
      --save-predictions --no-figures --log-level warn
  ) > "$out.log" 2>&1 || { echo "compare_builds: $kdseg failed; see $out.log"; exit 1; }
}
run "$old" "$work/old"
run "$new" "$work/new"
/usr/bin/python3 "$here/compare_outputs.py" "$work/old" "$work/new"
