#!/usr/bin/env bash
# The whole kdseg pipeline on synthetic multi-rater CT (QUBIQ's layout: three raters' masks of the
# kidneys per case, who disagree at the boundaries), as a user runs it on real data:
#   synth -> prepare -> train a teacher -> mpirun precompute -> mpirun distill
#   -> train a hard-label baseline (the raters' majority) and a soft-label student (the raters'
#   mean), both with the student's architecture -> evaluate all four against the raters.
#
#   scripts/pipeline.sh <kdseg binary> <output folder>
#
# Sizes and lengths come from the environment (defaults: the demo, ~8 minutes on 2 cores):
#   CASES SIZE SLICES        synthetic data (20 cases of 64x64x12, 3 raters)
#   TEACHER_ARCH TEACHER_EPOCHS STUDENT_ARCH STUDENT_EPOCHS WIDTH BATCH RANKS SEED
#   DEVICE                   cpu (default) or cuda: one GPU per rank, NCCL between them
set -euo pipefail
kdseg=$(realpath "$1")
out=$2

cases=${CASES:-20}
size=${SIZE:-64}
slices=${SLICES:-12}
teacher_arch=${TEACHER_ARCH:-unet-resnet50d}
teacher_epochs=${TEACHER_EPOCHS:-24}
student_arch=${STUDENT_ARCH:-unet-resnet18d}
student_epochs=${STUDENT_EPOCHS:-24}
width=${WIDTH:-0.5}
batch=${BATCH:-8}
ranks=${RANKS:-2}
seed=${SEED:-0}
device=${DEVICE:-cpu}
cores=$(nproc)

mpirun=(mpirun -np "$ranks")
if mpirun --version 2>&1 | grep -q "Open MPI"; then
  mpirun+=(--oversubscribe)
  [ "$(id -u)" -ne 0 ] || mpirun+=(--allow-run-as-root)
fi
# One LibTorch thread per core, shared among the ranks.
rank_threads=$(( cores / ranks > 0 ? cores / ranks : 1 ))

mkdir -p "$out"
cd "$out"
log() { printf '\n== %s\n' "$*"; }
start=$(date +%s)
common=(--crop-size "$size" --batch-size "$batch" --width "$width" --seed "$seed" --validate-every 10 --log-every 10
        --device "$device")

log "synthetic CT with 3 raters (QUBIQ layout): $cases cases of ${size}x${size}x$slices"
"$kdseg" synth --layout qubiq --raters 3 --cases "$cases" --size "$size" --slices "$slices" --output raw --log-level warn
log "prepare: the slices with the target (the kidneys), every rater's labels, 5 folds"
"$kdseg" prepare --input raw --output prepared.h5 --size "$size" --folds 5 --force --log-level warn

log "train the teacher ($teacher_arch) on folds 1-4"
"$kdseg" train --data prepared.h5 --fold 0 --arch "$teacher_arch" --epochs "$teacher_epochs" --output teacher \
  --threads "$cores" "${common[@]}" --resume
log "precompute the teacher's soft labels on $ranks ranks"
# A finished cache of this teacher and store is kept; anything else is (re)made or resumed.
if ! { [ -e cache/soft_labels.h5 ] && "$kdseg" cache verify --cache cache --teacher teacher/last.pt --data prepared.h5; }; then
  force=()
  [ ! -e cache/soft_labels.h5 ] || force=(--force)
  "${mpirun[@]}" "$kdseg" precompute --teacher teacher/last.pt --data prepared.h5 --output cache --folds 1,2,3,4 \
    --threads "$rank_threads" --device "$device" "${force[@]}"
fi
"$kdseg" cache inspect --cache cache

log "distill a $student_arch student with DML on $ranks ranks"
"${mpirun[@]}" "$kdseg" distill --data prepared.h5 --cache cache --teacher teacher/last.pt --fold 0 \
  --arch "$student_arch" --epochs "$student_epochs" --output student --threads "$rank_threads" "${common[@]}" --resume
log "train a hard-label baseline ($student_arch, the raters' majority)"
"$kdseg" train --data prepared.h5 --fold 0 --arch "$student_arch" --epochs "$student_epochs" --output baseline \
  --threads "$cores" "${common[@]}" --resume
log "train a soft-label student ($student_arch, the raters' mean)"
"$kdseg" train --data prepared.h5 --fold 0 --arch "$student_arch" --epochs "$student_epochs" --output rater-mean \
  --labels mean --threads "$cores" "${common[@]}" --resume

log "evaluate the baseline, the students and the teacher on fold 0 (each paired with the baseline)"
"$kdseg" evaluate --data prepared.h5 --fold 0 --output report --threads "$cores" --seed "$seed" --device "$device" \
  --model baseline/last.pt --name baseline --model rater-mean/last.pt --name rater-mean \
  --model student/last.pt --name distilled --model teacher/last.pt --name teacher --save-predictions --force
echo "pipeline: $(( $(date +%s) - start )) s"
