#!/usr/bin/env bash
# The teacher pass and distillation at the paper's sizes, through the real command line:
#   1. precompute: slices/s of the pass, split into teacher compute and HDF5 write, for the
#      logits-f16 and probs-u8 formats, and the cache's bytes per voxel per class;
#   2. distill: the step time of a ResNet-18d student (batch 8, 384x384 crops) with soft labels
#      from the cache against an online ResNet-50d teacher, as a ratio, and the share of the step
#      spent waiting for data.
#   bench/distill_bench.sh <kdseg> <work dir> [device: cpu|cuda] [steps]
set -euo pipefail
kdseg=$(realpath "$1")
work=$2
device=${3:-cpu}
steps=${4:-6}
mkdir -p "$work"
cd "$work"
q=(--log-level warn)

if [ ! -e store.h5 ]; then
  "$kdseg" synth --cases 6 --size 384 --slices 12 --output raw "${q[@]}"
  "$kdseg" prepare --input raw --output store.h5 --size 384 --folds 2 --force "${q[@]}" > /dev/null
fi
if [ ! -e teacher/last.pt ]; then
  # Weights after one step are as costly to run as trained ones.
  "$kdseg" train --data store.h5 --output teacher --arch unet-resnet50d --max-steps 1 --batch-size 2 \
    --crop-size 384 --validate-every 0 "${q[@]}" > /dev/null
fi

echo "== precompute (ResNet-50d teacher, 384x384 slices, $device)"
for format in logits-f16 probs-u8; do
  rm -rf "cache-$format"
  extra=()
  [ "$format" = logits-f16 ] || extra=(--temperature 2)
  "$kdseg" precompute --teacher teacher/last.pt --data store.h5 --output "cache-$format" --format "$format" \
    --device "$device" --batch-size 8 "${q[@]}" "${extra[@]}" | head -1
  "$kdseg" cache inspect --cache "cache-$format" | grep -E "size|compression"
done

cache_bench=$(dirname "$kdseg")/../bench/cache_bench
if [ -x "$cache_bench" ]; then
  rm -rf cache-u8-t1
  "$kdseg" precompute --teacher teacher/last.pt --data store.h5 --output cache-u8-t1 --format probs-u8 \
    --device "$device" "${q[@]}" > /dev/null
  "$cache_bench" store.h5 teacher/last.pt cache-logits-f16 cache-u8-t1
fi

echo "== distill: ResNet-18d student, batch 8, 384x384 crops, $steps steps, $device"
run() {  # run <name> <options...>
  local name=$1
  shift
  rm -rf "$name"
  "$kdseg" distill --data store.h5 --output "$name" --arch unet-resnet18d --batch-size 8 --crop-size 384 \
    --max-steps "$steps" --log-every 1 --validate-every 0 --device "$device" "${q[@]}" "$@" > /dev/null
}
run cached --cache cache-logits-f16 --teacher teacher/last.pt
run online --teacher-mode online --teacher teacher/last.pt
python=$(command -v python3)
"$python" - <<'PY'
import json
def steps(name):
    rows = [json.loads(l) for l in open(f"{name}/metrics.jsonl") if '"loss"' in l]
    return rows[1:]  # the first step warms up
def mean(rows, key):
    return sum(r[key] for r in rows) / len(rows)
c, o = steps("cached"), steps("online")
print(f"{'mode':8} {'step s':>8} {'data wait':>10} {'teacher s':>10}")
for name, rows in (("cache", c), ("online", o)):
    print(f"{name:8} {mean(rows, 'step_s'):8.3f} {mean(rows, 'data_wait_s') / mean(rows, 'step_s'):9.1%} {mean(rows, 'teacher_s'):10.3f}")
print(f"online / cache step time: {mean(o, 'step_s') / mean(c, 'step_s'):.2f}x")
PY
