#!/usr/bin/env bash
# The paper's comparison, end to end, by kdseg: on synthetic multi-rater CT (QUBIQ's layout, three
# raters who disagree; docs/benchmarks.md describes the generative model) one student architecture
# and one budget per row, over several seeds:
#   majority  hard labels, the raters' majority vote          random  hard, one rater per sample
#   mean      soft, the raters' mean                          ls      soft, boundary label smoothing
#   kd        distillation from a cached teacher (0.25 CE/KL + 0.75 DML)
#   kd-cal    the same teacher calibrated first: T fitted on fold 1 (precompute --temperature fit)
# Folds: 0 evaluates (every row, one report), 1 calibrates the teacher, 2-4 train every model.
# Then one `kdseg evaluate` report of every model, paired against majority (seed 0), and
# study.json / study.md (scripts/study_summary.py): per row Dice and ECE per seed, and a verdict
# per claim by the seed-level rule (the training seed is the replicate: 8 or more seeds for a
# verdict with the exact sign-flip test, 5-7 with a paired t-test, fewer give "cannot tell").
#
#   scripts/study.sh <kdseg binary> <output folder>
#
# From the environment (defaults: the CPU study, about 35 minutes on 2 cores):
#   CASES SIZE SLICES     synthetic data (150 cases of 48x48x12: 30 per fold)
#   STUDENT_ARCH WIDTH STEPS BATCH   every row (unet-resnet18d, 0.25, 600, 8)
#   TEACHER_ARCH TEACHER_WIDTH TEACHER_STEPS   (unet-resnet34d, 0.5, 1000)
#   SEEDS ROWS            "0 1 2" and "majority random mean ls kd kd-cal"
#   DEVICE THREADS        cpu (or cuda) and LibTorch threads (the cores)
# A larger run on a GPU, e.g. SIZE=384 SLICES=48 WIDTH=1 TEACHER_WIDTH=1 DEVICE=cuda: these are
#   not the paper's settings (its configs train AdamW at lr 6e-5, weight decay 0.01, poly decay,
#   for epochs, with crops of 256 or 384), and the step counts must be chosen, not taken from here.
# A rerun resumes: finished runs, caches and reports are kept, unfinished runs continue.
set -euo pipefail
kdseg=$(realpath "$1")
out=$2
here=$(cd "$(dirname "$0")" && pwd)

cases=${CASES:-150}
size=${SIZE:-48}
slices=${SLICES:-12}
student_arch=${STUDENT_ARCH:-unet-resnet18d}
width=${WIDTH:-0.25}
steps=${STEPS:-600}
batch=${BATCH:-8}
teacher_arch=${TEACHER_ARCH:-unet-resnet34d}
teacher_width=${TEACHER_WIDTH:-0.5}
teacher_steps=${TEACHER_STEPS:-1000}
seeds=${SEEDS:-0 1 2}
rows=${ROWS:-majority random mean ls kd kd-cal}
device=${DEVICE:-cpu}
threads=${THREADS:-$(nproc)}

mkdir -p "$out"
cd "$out"
log() { printf '\n== %s\n' "$*"; }
start=$(date +%s)
quiet=(--log-level warn --threads "$threads")
folds=(--fold 0 --exclude-folds 1)
common=("${folds[@]}" --crop-size "$size" --batch-size "$batch" --validate-every 0 --log-every 10 --device "$device"
        "${quiet[@]}")

log "synthetic QUBIQ-layout CT with 3 raters: $cases cases of ${size}x${size}x$slices"
"$kdseg" synth --layout qubiq --raters 3 --cases "$cases" --size "$size" --slices "$slices" --output raw "${quiet[@]}"
# Every slice: Dice and ECE over whole volumes.
[ -e prepared.h5 ] ||
  "$kdseg" prepare --input raw --output prepared.h5 --size "$size" --slices all --folds 5 "${quiet[@]}" > /dev/null

needs() { [ "${rows/$1/}" != "$rows" ]; }  # needs <row>: whether ROWS holds it

if needs kd; then
  log "teacher ($teacher_arch, width $teacher_width, $teacher_steps steps, majority labels)"
  "$kdseg" train --data prepared.h5 --arch "$teacher_arch" --width "$teacher_width" --max-steps "$teacher_steps" \
    --labels majority --output teacher --resume "${common[@]}"
  # make_cache <folder> <precompute options...>: kept when it is finished and sound.
  make_cache() {
    local folder=$1
    shift
    "$kdseg" cache verify --cache "$folder" --teacher teacher/last.pt --data prepared.h5 > /dev/null 2>&1 && return
    "$kdseg" precompute --teacher teacher/last.pt --data prepared.h5 --folds 2,3,4 --output "$folder" \
      --device "$device" --force "$@" "${quiet[@]}"
  }
  log "its soft labels for folds 2-4: as trained, and calibrated on fold 1"
  make_cache cache
  needs kd-cal && make_cache cache-cal --temperature fit --calibration-folds 1
fi

# train_row <row> <seed> <output>: the row's command, continued where it stopped.
train_row() {
  local row=$1 seed=$2 output=$3
  local model=(--arch "$student_arch" --width "$width" --max-steps "$steps" --seed "$seed" --output "$output" --resume)
  case $row in
    majority | random | mean) "$kdseg" train --data prepared.h5 --labels "$row" "${model[@]}" "${common[@]}" ;;
    ls) "$kdseg" train --data prepared.h5 --labels ls "${model[@]}" "${common[@]}" ;;
    kd) "$kdseg" distill --data prepared.h5 --cache cache --teacher teacher/last.pt "${model[@]}" "${common[@]}" ;;
    kd-cal)
      "$kdseg" distill --data prepared.h5 --cache cache-cal --teacher teacher/last.pt "${model[@]}" "${common[@]}"
      ;;
    *) echo "study: unknown row '$row'" >&2 && exit 2 ;;
  esac
}

models=()
for seed in $seeds; do
  for row in $rows; do
    log "$row, seed $seed"
    train_row "$row" "$seed" "runs/$row-s$seed"
  done
done
# majority of the first seed first: every other model is paired with it.
first_seed=${seeds%% *}
for row in $rows; do
  for seed in $seeds; do
    entry=(--model "runs/$row-s$seed/last.pt" --name "$row-s$seed")
    if [ "$row" = majority ] && [ "$seed" = "$first_seed" ]; then models=("${entry[@]}" "${models[@]}"); else models+=("${entry[@]}"); fi
  done
done
needs kd && models+=(--model teacher/last.pt --name teacher)

log "evaluate every model on fold 0 against the raters' majority and mean"
newest=$(ls -t runs/*/last.pt teacher/last.pt 2> /dev/null | head -1 || true)
if [ ! -e report/report.json ] || [ "$newest" -nt report/report.json ]; then
  "$kdseg" evaluate --data prepared.h5 --fold 0 --output report --device "$device" "${models[@]}" --force \
    "${quiet[@]}" > /dev/null
fi
/usr/bin/python3 "$here/study_summary.py" report/report.json --rows "$rows" --seeds "$seeds" --out .
echo "study: $(( $(date +%s) - start )) s; $(realpath study.md)"
