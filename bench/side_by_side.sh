#!/usr/bin/env bash
# Runs side by side against one run on every core: the study's student (unet-resnet18d, width
# 0.25, 48x48 crops, batch 2) trained STEPS steps (a) once with every core as LibTorch threads,
# (b) once with one thread, and (c) as one run per core side by side, one thread each. Prints the
# steps per second of each and their ratios to (a); checks that a seed trained with one thread gives
# the same loss alone and beside another run (side by side changes the speed, not the result).
#   bench/side_by_side.sh <kdseg> <work dir>     STEPS (600), SIZE (48), CASES (150)
set -euo pipefail
kdseg=$(realpath "$1")
work=$2
steps=${STEPS:-600}
size=${SIZE:-48}
cases=${CASES:-150}
cores=$(nproc)
mkdir -p "$work"
cd "$work"
[ -e prepared.h5 ] || {
  "$kdseg" synth --layout qubiq --raters 3 --rater-model kits23 --cases "$cases" --size "$size" --slices 12 \
    --seed 0 --output raw --force --log-level warn
  "$kdseg" prepare --input raw --output prepared.h5 --size "$size" --slices organ --folds 5 --log-level warn > /dev/null
}
# train <output> <seed> <threads>: prints the last loss
train() {
  "$kdseg" train --data prepared.h5 --labels majority --arch unet-resnet18d --width 0.25 --max-steps "$steps" \
    --batch-size 2 --seed "$2" --output "$1" --force --crop-size "$size" --validate-every 0 --log-every 10 \
    --task tumor --fold 0 --exclude-folds 1 --log-level warn --threads "$3" 2> /dev/null | sed 's/.*last loss \([^;]*\);.*/\1/'
}
seconds() { python3 -c "import time; print(time.monotonic())"; }
t0=$(seconds); train every 0 "$cores" > every.loss; t1=$(seconds)
train one 0 1 > one.loss; t2=$(seconds)
for ((r = 0; r < cores; ++r)); do train "side$r" "$r" 1 > "side$r.loss" & done
wait
t3=$(seconds)
[ "$(cat one.loss)" = "$(cat side0.loss)" ] || { echo "seed 0 alone ($(cat one.loss)) and side by side ($(cat side0.loss)) differ" >&2; exit 1; }
python3 - "$steps" "$cores" "$t0" "$t1" "$t2" "$t3" <<'PY'
import sys
steps, cores = int(sys.argv[1]), int(sys.argv[2])
t0, t1, t2, t3 = map(float, sys.argv[3:])
rows = [(f"one run, {cores} threads", t1 - t0, steps), ("one run, 1 thread", t2 - t1, steps),
        (f"{cores} runs side by side, 1 thread each", t3 - t2, cores * steps)]
base = steps / (t1 - t0)
print("| runs | seconds | steps/s | ratio |\n|---|---|---|---|")
for name, sec, n in rows:
    print(f"| {name} | {sec:.1f} | {n / sec:.1f} | {n / sec / base:.2f} |")
PY
echo "seed 0: the same loss alone and side by side ($(cat one.loss)); $cores threads: $(cat every.loss)"
