#!/usr/bin/env bash
# Every check that needs a GPU, for the GPU machine (see ../shared/device/README.md): builds
# against the machine's LibTorch with CUDA, runs the gpu-labelled tests, runs a short pipeline
# with --device cuda (train, mpirun precompute, mpirun distill over NCCL, evaluate), and times
# the training step against PyTorch eager in bf16. What it measures lands in $OUT.
#
#   bash scripts/device-setup.sh                   # here: .device/ with the recipe and packages
#   device run, carry [".device"]:  bash scripts/gpu-check.sh [build] [test] [pipeline] [bench]
#
# With no stage named it runs all four (about 8 minutes after the machine starts on an H100);
# a later call on the same warm machine can run the remaining stages: the build is kept.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu-out}
mkdir -p "$out"
stages=${*:-build test pipeline bench}
log() { echo "== $* ($(date +%T))" | tee -a "$out/summary.txt"; }
want() { [[ " $stages " == *" $1 "* ]]; }

if want build || [ ! -x build-gpu/tools/kdseg ]; then
  log build
  if ! bash .device/build.sh -DKDSEG_BUILD_BENCHMARKS=ON >"$out/build.log" 2>&1; then
    tail -40 "$out/build.log"
    exit 1
  fi
fi
. build-gpu/env.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$out/summary.txt"

if want test; then
  log "gpu tests"
  ctest --test-dir build-gpu -L gpu --output-on-failure --timeout 300 >"$out/gpu-tests.log" 2>&1
  echo "gpu tests rc $?; $(grep -E 'tests passed|tests failed' "$out/gpu-tests.log")" | tee -a "$out/summary.txt"
fi

if want pipeline; then
  log "a short pipeline on the GPU (one rank, NCCL)"
  work=$(mktemp -d)
  DEVICE=cuda RANKS=1 CASES=12 TEACHER_EPOCHS=6 STUDENT_EPOCHS=6 \
    timeout 240 bash scripts/pipeline.sh build-gpu/tools/kdseg "$work" >"$out/pipeline.log" 2>&1
  echo "pipeline rc $?; $(grep '^pipeline:' "$out/pipeline.log")" | tee -a "$out/summary.txt"
  for model in teacher student baseline; do
    grep -h '"images_per_s"' "$work/$model/metrics.jsonl" 2>/dev/null | tail -1 >>"$out/summary.txt"
  done
  cp "$work/report/report.json" "$out/" 2>/dev/null
  tail -20 "$out/pipeline.log"
fi

if want bench; then
  log "training step against PyTorch eager"
  for arch in unet-resnet18d unet-resnet50d; do
    KDSEG_PYTHON=$(command -v python3) timeout 150 build-gpu/bench/step_bench train-step --arch $arch --batch 8 \
      --size 384 --reps 10 --device cuda --python bench/unet_step.py 2>&1 | tee -a "$out/summary.txt"
    build-gpu/bench/step_bench optimizer --arch $arch --reps 20 --device cuda 2>&1 | tee -a "$out/summary.txt"
  done
fi
log done
