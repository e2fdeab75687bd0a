#!/usr/bin/env bash
# Every check that needs a GPU, in one call of the GPU machine (see ../shared/device/README.md).
# In order of value, each stage within what is left of a time budget:
#   build     configure against the machine's LibTorch with CUDA; build the tool, the gpu tests
#             and step_bench first (on failure: the whole tree with -k 0, to list every error)
#   test      the gpu-labelled tests
#   bench     training step against PyTorch eager in bf16 (ResNet-18d student, ResNet-50d teacher)
#   pipeline  a short pipeline with --device cuda: train, mpirun precompute, mpirun distill over
#             NCCL, evaluate
#   rest      the rest of the tree, then the CPU suite against this LibTorch (on the 2026-11
#             image three tests fail for want of Chromium and of h5py for /usr/bin/python3:
#             report_in_browser, e2e_pipeline, precompute_pass)
# What it measures lands in $OUT: summary.txt first, then one log per stage.
#
#   bash scripts/device-setup.sh                   # here: .device/ with the recipe and packages
#   device run, carry [".device"]:  bash scripts/gpu-check.sh [stage...]
#
# GPU_CHECK_BUDGET (seconds, default 540) bounds the whole call: a stage that would not fit is
# skipped and says so, so the logs always come back.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu-out}
mkdir -p "$out"
stages=${*:-build test bench pipeline rest}
budget=${GPU_CHECK_BUDGET:-540}
t0=$(date +%s)
left() { echo $(( budget - ($(date +%s) - t0) )); }
log() { echo "== $* (t+$(( $(date +%s) - t0 )) s)" | tee -a "$out/summary.txt"; }
note() { echo "$*" | tee -a "$out/summary.txt"; }
want() { [[ " $stages " == *" $1 "* ]]; }
# fits SECONDS: true when a stage that needs about SECONDS still fits in the budget.
fits() { if [ "$(left)" -ge "$1" ]; then return 0; fi; note "skipped: $2 needs ~$1 s, $(left) s left"; return 1; }

# The environment of .device/build.sh: the Debian packages the image lacks, unpacked into /opt/deb.
rm -rf /opt/deb && mkdir -p /opt/deb
for f in .device/debs/*.deb; do dpkg -x "$f" /opt/deb; done
L=/opt/deb/usr/lib/x86_64-linux-gnu
export LD_LIBRARY_PATH=${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$L
export CPATH=${CPATH:+$CPATH:}/opt/deb/usr/include/nifti
command -v nvcc >/dev/null || export PATH=$PATH:/usr/local/cuda/bin  # a CUDA LibTorch enables CUDA in CMake
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$out/summary.txt"
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "nccl", torch.cuda.nccl.version())' \
  2>&1 | tee -a "$out/summary.txt"
note "cores $(nproc); g++ $(g++ -dumpfullversion); $(cmake --version | head -1); $(mpirun --version 2>&1 | head -1)"

if want build || [ ! -x build-gpu/tools/kdseg ]; then
  log configure
  torch_prefix=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
  if ! cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$torch_prefix;/opt/deb/usr" \
      -DBoost_DIR=$L/cmake/Boost-1.74.0 -DKDSEG_BUILD_BENCHMARKS=ON -DKDSEG_WITH_NCCL=ON >"$out/configure.log" 2>&1; then
    tail -30 "$out/configure.log"; exit 1
  fi
  grep -E "^-- kdseg |CUDA toolkit" "$out/configure.log" | tee -a "$out/summary.txt"
  log "build: kdseg, gpu tests, step_bench"
  targets="kdseg gpu_tests step_bench"
  grep -q '^build nccl_tests' build-gpu/build.ninja && targets+=" nccl_tests"
  if ! ninja -C build-gpu -k 0 $targets >"$out/build.log" 2>&1; then
    note "build failed; building the whole tree with -k 0 to list every error"
    timeout $(( $(left) > 60 ? $(left) - 30 : 30 )) ninja -C build-gpu -k 0 >>"$out/build.log" 2>&1
    grep -E "error|Error" "$out/build.log" | sort -u | head -60 | tee -a "$out/summary.txt"
    exit 1
  fi
  echo "export LD_LIBRARY_PATH=$LD_LIBRARY_PATH" >build-gpu/env.sh
  build-gpu/tools/kdseg --version 2>&1 | tee -a "$out/summary.txt"
  libtorch_cpu=$(python3 -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so"))')
  note "std::filesystem symbols that LibTorch exports: $(nm -D --defined-only "$libtorch_cpu" | grep -c 'St10filesystem')"
fi

if want test && fits 60 "gpu tests"; then
  log "gpu tests"
  timeout $(( $(left) - 20 )) ctest --test-dir build-gpu -L gpu --output-on-failure --timeout 240 \
    >"$out/gpu-tests.log" 2>&1
  note "gpu tests rc $?; $(grep -E 'tests passed|tests failed' "$out/gpu-tests.log")"
  grep -E "Passed|Failed|Skipped|\*\*\*" "$out/gpu-tests.log" | tee -a "$out/summary.txt"
fi

if want bench && fits 90 "bench"; then
  log "training step against PyTorch eager (CUDA bf16)"
  for arch in unet-resnet18d unet-resnet50d; do
    KDSEG_PYTHON=$(command -v python3) timeout 120 build-gpu/bench/step_bench train-step --arch $arch --batch 8 \
      --size 384 --reps 20 --device cuda --python bench/unet_step.py 2>&1 | tee -a "$out/bench.log" "$out/summary.txt"
  done
  timeout 60 build-gpu/bench/step_bench optimizer --arch unet-resnet50d --reps 20 --device cuda 2>&1 \
    | tee -a "$out/bench.log" "$out/summary.txt"
fi

if want pipeline && fits 150 "pipeline"; then
  log "a short pipeline on the GPU (one rank, NCCL)"
  work=$(mktemp -d)
  DEVICE=cuda RANKS=1 CASES=12 TEACHER_EPOCHS=8 STUDENT_EPOCHS=8 \
    timeout $(( $(left) > 200 ? 180 : $(left) - 20 )) bash scripts/pipeline.sh build-gpu/tools/kdseg "$work" \
    >"$out/pipeline.log" 2>&1
  note "pipeline rc $?; $(grep '^pipeline:' "$out/pipeline.log")"
  for model in teacher student baseline; do
    note "$model: $(grep -h '"images_per_s"' "$work/$model/metrics.jsonl" 2>/dev/null | tail -1)"
  done
  grep -E "Dice|HD95" "$out/pipeline.log" | tail -6 | tee -a "$out/summary.txt"
  cp "$work/report/report.json" "$out/" 2>/dev/null
fi

if want rest && fits 120 "the rest of the tree and the CPU suite"; then
  log "build the rest of the tree"
  timeout $(( $(left) - 60 )) ninja -C build-gpu -k 0 >"$out/build-rest.log" 2>&1
  note "rest of the build rc $?; $(grep -c 'error:' "$out/build-rest.log") compiler errors"
  grep -E "error:" "$out/build-rest.log" | sort -u | head -30 | tee -a "$out/summary.txt"
  if fits 40 "the CPU suite"; then
    log "the CPU suite against this LibTorch"
    timeout $(( $(left) - 15 )) ctest --test-dir build-gpu -LE gpu -j 12 --timeout 120 --output-on-failure >"$out/cpu-tests.log" 2>&1
    note "cpu suite rc $?; $(grep -E 'tests passed|tests failed' "$out/cpu-tests.log")"
    grep -E "^\s+[0-9]+ - .*(Failed|Timeout|Not Run)" "$out/cpu-tests.log" | head -20 | tee -a "$out/summary.txt"
  fi
fi
log done
