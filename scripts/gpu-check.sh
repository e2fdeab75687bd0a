#!/usr/bin/env bash
# Every check that needs a GPU, in one run on the GPU machine (see ../shared/device/README.md):
# builds against the machine's LibTorch with CUDA, runs the gpu-labelled tests, runs the demo's
# pipeline with --device cuda (train, mpirun precompute, mpirun distill over NCCL, evaluate), and
# times the training step against PyTorch eager (bf16). Everything it measures lands in $OUT.
#
#   bash scripts/device-setup.sh                 # here: .device/ with the recipe and packages
#   device run, carry [".device"]:  bash scripts/gpu-check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu-out}
mkdir -p "$out"
log() { echo "== $* ($(date +%T))" | tee -a "$out/summary.txt"; }

log build
if ! bash .device/build.sh -DKDSEG_BUILD_BENCHMARKS=ON >"$out/build.log" 2>&1; then
  tail -40 "$out/build.log"
  exit 1
fi
. build-gpu/env.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$out/summary.txt"

log "gpu tests"
ctest --test-dir build-gpu -L gpu --output-on-failure >"$out/gpu-tests.log" 2>&1
echo "gpu tests rc $?; $(grep -E 'tests passed|tests failed' "$out/gpu-tests.log")" | tee -a "$out/summary.txt"

log "the demo's pipeline on the GPU (one rank, NCCL)"
work=$(mktemp -d)
DEVICE=cuda RANKS=1 bash scripts/pipeline.sh build-gpu/tools/kdseg "$work" >"$out/pipeline.log" 2>&1
echo "pipeline rc $?; $(grep '^pipeline:' "$out/pipeline.log")" | tee -a "$out/summary.txt"
for model in teacher student baseline; do
  grep -h '"validation"' "$work/$model/metrics.jsonl" 2>/dev/null | tail -1 | cut -c1-200 >>"$out/summary.txt"
  grep -h '"images_per_s"' "$work/$model/metrics.jsonl" 2>/dev/null | tail -1 >>"$out/summary.txt"
done
cp "$work/report/report.json" "$out/" 2>/dev/null

log "training step against PyTorch eager"
for arch in unet-resnet18d unet-resnet50d; do
  KDSEG_PYTHON=$(command -v python3) build-gpu/bench/step_bench train-step --arch $arch --batch 8 --size 384 \
    --reps 20 --device cuda --python bench/unet_step.py 2>&1 | tee -a "$out/summary.txt"
done
log done
