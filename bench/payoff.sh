#!/usr/bin/env bash
# The distillation payoff: what a student saves over its teacher at inference, by `kdseg predict`
# on one SIZE x SIZE x SLICES CT volume: each model's parameters, slices per second, seconds per
# 512x512x200 volume (from the rate) and peak memory (the process's maximum resident set), for
#   teacher   TEACHER_ARCH at width 1 (unet-resnet50d, the paper's teacher)
#   student   STUDENT_ARCH at width 1 (unet-resnet18d)
#   ensemble  two students (seeds 0 and 1), probabilities averaged
# with ratios against the teacher. Weights come from a few training steps on SIZE-pixel slices:
# throughput and memory depend on the network and the input, not on the weights. Every timed
# run's labels are checked to open in the input's shape and affine (nibabel).
#   bench/payoff.sh <kdseg> <work dir>
#   SIZE (512) SLICES (40) THREADS (the cores) DEVICE (cpu, or cuda) TEACHER_ARCH STUDENT_ARCH
set -euo pipefail
kdseg=$(realpath "$1")
work=$2
size=${SIZE:-512}
slices=${SLICES:-40}
threads=${THREADS:-$(nproc)}
device=${DEVICE:-cpu}
teacher_arch=${TEACHER_ARCH:-unet-resnet50d}
student_arch=${STUDENT_ARCH:-unet-resnet18d}
quiet=(--log-level warn --threads "$threads")
mkdir -p "$work"
cd "$work"

[ -e p.h5 ] || {
  "$kdseg" synth --layout lits --cases 2 --size "$size" --slices 4 --output train-raw --force "${quiet[@]}" > /dev/null
  "$kdseg" prepare --input train-raw --output p.h5 --size "$size" --folds 2 --slices all "${quiet[@]}" > /dev/null
}
[ -d scan ] || "$kdseg" synth --layout lits --cases 1 --size "$size" --slices "$slices" --output scan "${quiet[@]}" > /dev/null
train() {  # train <output> <arch> <seed>
  [ -e "$1/last.pt" ] || "$kdseg" train --data p.h5 --output "$1" --arch "$2" --seed "$3" --fold 0 --crop-size "$size" \
    --batch-size 1 --max-steps 2 --validate-every 0 --device "$device" "${quiet[@]}" > /dev/null 2>&1
}
train teacher "$teacher_arch" 0
train student "$student_arch" 0
train student-1 "$student_arch" 1
parameters() { "$kdseg" export --model "$1" --output "$1.ts" --force "${quiet[@]}" | sed 's/.* \([0-9]*\) parameters.*/\1/'; }
declare -A params=([teacher]=$(parameters teacher/last.pt) [student]=$(parameters student/last.pt))
params[ensemble]=$((2 * params[student]))
/usr/bin/python3 - "$kdseg" "$size" "$slices" "$device" "$threads" "${params[teacher]}" "${params[student]}" \
  "${params[ensemble]}" << 'PY'
import glob, json, os, subprocess, sys
import nibabel as nib, numpy as np
kdseg, size, slices, device, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
params = dict(zip(("teacher", "student", "ensemble"), map(int, sys.argv[6:9])))
models = {"teacher": ["teacher/last.pt"], "student": ["student/last.pt"],
          "ensemble": ["student/last.pt", "student-1/last.pt"]}
source = nib.load(sorted(glob.glob("scan/*/volume-0.nii*"))[0])
rows = {}
for name, files in models.items():
    command = [kdseg, "predict", "--input", "scan", "--output", f"out-{name}", "--force", "--batch-size", "4",
               "--device", device, "--log-level", "warn", "--threads", threads]
    for f in files:
        command += ["--model", f]
    with open(f"{name}.log", "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)  # this run's own peak memory
    assert os.waitstatus_to_exitcode(status) == 0, (name, open(f"{name}.log").read())
    labels = nib.load(f"out-{name}/volume-0.nii.gz")
    assert labels.shape == source.shape and np.allclose(labels.affine, source.affine), (name, labels.shape)
    case = json.load(open(f"out-{name}/predictions.json"))["cases"][0]
    rate = case["slices"] / case["seconds"]
    rows[name] = (params[name], rate, 200 / rate, usage.ru_maxrss / 1024)
base = rows["teacher"]
print(f"| model | parameters | slices/s | s per {size}x{size}x200 volume | peak memory (MiB) | speed vs teacher |")
print("|---|---|---|---|---|---|")
for name, (p, rate, volume, mib) in rows.items():
    print(f"| {name} | {p / 1e6:.2f} M | {rate:.2f} | {volume:.0f} | {mib:.0f} | {rate / base[1]:.2f}x |")
print(f"({size}x{size} slices on {device}, {slices} of them timed; a volume of 200 slices takes 200 / the rate)")
PY
