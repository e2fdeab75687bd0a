#!/usr/bin/env bash
# The study, second version (docs/benchmarks.md "The study, second version: pre-registration"),
# end to end by kdseg: one benchmark's data, one student architecture and one frozen budget per
# row, every row trained from each seed (paired by seed), one `kdseg evaluate` report of every
# model and one of the temperature-scaled models, then study.json / study.md
# (scripts/study_summary.py, the seed-level rule).
#   majority  hard, the raters' majority (KiTS's own aggregation on the KiTS23 layouts)
#   random    hard, one rater per sample
#   mean      soft, the raters' mean           weighted  soft, the mean weighted by agreement
#   ls        soft, boundary label smoothing of the majority
#   kd        distilled from a cached teacher trained with label smoothing
#   kd-cal    the same teacher calibrated first (T fitted on fold 1, precompute --temperature fit)
#   <row>-ts  the row's students after `kdseg calibrate` on fold 1 (TS_ROWS)
# Folds: 0 evaluates, 1 calibrates (the teacher and the students), 2-4 train every model.
#
#   scripts/study.sh <kdseg binary> <output folder>
#   PILOT=1 scripts/study.sh <kdseg binary> <output folder>   the budget pilot (below)
#
# From the environment:
#   DATA            surface-kits23 (default), surface-high (synth --rater-model kits23 | high,
#                   QUBIQ layout), kits23-real (real KiTS23 annotations through
#                   synth --from-annotations; ANNOTATIONS, the folder, REAL_CASES, the cases
#                   taken in order of id, 150, after the first REAL_SKIP, 0) or threshold
#                   (study v1's raters)
#   CASES SIZE SLICES DATA_SEED   synthetic data (150 cases of 48x48x12, data seed 0)
#   STUDENT_ARCH WIDTH STEPS BATCH  every row (unet-resnet18d, 0.25, 600, 8): the budget the
#                   pilot chose, frozen for every row
#   TEACHER_ARCH TEACHER_WIDTH TEACHER_STEPS   (unet-resnet34d, 0.5, 1000)
#   LR WEIGHT_DECAY the optimiser of the teacher and every row (unset: kdseg train's 1e-4 and
#                   0.01; the paper's configs: LR=6e-5 WEIGHT_DECAY=0.01)
#   CLAIM_SEEDS     seeds of the claims' rows (majority mean kd kd-cal), "0 1 ... 9"
#   OTHER_SEEDS     seeds of random, weighted and ls, "0 1 ... 7"; SEEDS sets both
#   ROWS TS_ROWS    "majority random mean weighted ls kd kd-cal", and the rows whose students
#                   are also evaluated temperature-scaled (every row; C5 needs majority and mean)
#   CLAIMS          a JSON list of the claims to decide (study_summary.py --claims); v2's C1-C5
#                   when unset
#   DEVICE          cpu (or cuda)
#   PARALLEL        runs at once (the cores); THREADS, LibTorch threads per run (1 when PARALLEL > 1).
#                   At the study's sizes one thread per run and a run per core gives 6 times the
#                   steps per second of one run on every core (docs/benchmarks.md, "Runs side by side").
#                   Each run's output goes to its log beside it (runs/<row>-s<seed>.log, teacher.log).
# The pilot (PILOT=1; RUNGS, "600:8 1200:4 2400:2", steps:batch): the majority row only, seed 0,
# on data seed DATA_SEED (1 for the pilot) with fold 1 held out; each rung trains and is
# evaluated on fold 1; the first rung whose background bin is calibrated (the bin above 0.9:
# |confidence - accuracy| <= 0.002) or whose NLL does not improve on the rung before is chosen.
# pilot.json and pilot.md record every rung and the choice.
# A rerun resumes: finished runs, caches and reports are kept, unfinished runs continue.
set -euo pipefail
kdseg=$(realpath "$1")
out=$2
here=$(cd "$(dirname "$0")" && pwd)

pilot=${PILOT:-0}
data=${DATA:-surface-kits23}
annotations=${ANNOTATIONS:-/work/shared/data/kits23-raters}
real_cases=${REAL_CASES:-150}
real_skip=${REAL_SKIP:-0}
claims=
if [ -n "${CLAIMS:-}" ]; then  # checked before any run: a mistyped file would fail only at the end
  claims=$(realpath -e "$CLAIMS")
  /usr/bin/python3 "$here/study_summary.py" --check-claims "$claims" > /dev/null
fi
cases=${CASES:-150}
size=${SIZE:-48}
slices=${SLICES:-12}
data_seed=${DATA_SEED:-$([ "$pilot" = 1 ] && echo 1 || echo 0)}
student_arch=${STUDENT_ARCH:-unet-resnet18d}
width=${WIDTH:-0.25}
steps=${STEPS:-600}
batch=${BATCH:-8}
teacher_arch=${TEACHER_ARCH:-unet-resnet34d}
teacher_width=${TEACHER_WIDTH:-0.5}
teacher_steps=${TEACHER_STEPS:-1000}
claim_seeds=${CLAIM_SEEDS:-${SEEDS:-0 1 2 3 4 5 6 7 8 9}}
other_seeds=${OTHER_SEEDS:-${SEEDS:-0 1 2 3 4 5 6 7}}
rows=${ROWS:-majority random mean weighted ls kd kd-cal}
ts_rows=${TS_ROWS-$rows}
rungs=${RUNGS:-600:8 1200:4 2400:2}
device=${DEVICE:-cpu}
parallel=${PARALLEL:-$([ "$device" = cpu ] && nproc || echo 1)}
threads=${THREADS:-$([ "$parallel" -gt 1 ] && echo 1 || nproc)}

mkdir -p "$out"
cd "$out"
log() { printf '\n== %s\n' "$*"; }
start=$(date +%s)
quiet=(--log-level warn --threads "$threads")
optimiser=()
[ -z "${LR:-}" ] || optimiser+=(--lr "$LR")
[ -z "${WEIGHT_DECAY:-}" ] || optimiser+=(--weight-decay "$WEIGHT_DECAY")

# spawn <log> <command...>: in the background, at most PARALLEL at once; a failure stops the study.
failed() {
  echo "study: a run failed (its log: ${1:-see runs/*.log and teacher.log})" >&2
  kill $(jobs -p) 2> /dev/null || true
  exit 1
}
spawn() {
  local logfile=$1
  shift
  while [ "$(jobs -rp | wc -l)" -ge "$parallel" ]; do wait -n || failed; done
  ("$@" > "$logfile" 2>&1 || { tail -5 "$logfile" >&2; exit 1; }) &
}
drain() { while [ "$(jobs -rp | wc -l)" -gt 0 ]; do wait -n || failed; done; }

# The benchmark's store: prepared.h5, the slices holding the target, every rater.
case $data in
  surface-kits23 | surface-high | threshold)
    model=${data#surface-}
    log "synthetic QUBIQ-layout CT, raters '$model': $cases cases of ${size}x${size}x$slices, data seed $data_seed"
    [ -e prepared.h5 ] || {
      "$kdseg" synth --layout qubiq --raters 3 --rater-model "$model" --cases "$cases" --size "$size" \
        --slices "$slices" --seed "$data_seed" --output raw --force "${quiet[@]}"
      "$kdseg" prepare --input raw --output prepared.h5 --size "$size" --slices organ --folds 5 "${quiet[@]}" > /dev/null
    }
    task=(--task tumor)
    ;;
  kits23-real)
    log "real KiTS23 annotations ($real_cases cases of $annotations after the first $real_skip), simulated CT"
    [ -e prepared.h5 ] || {
      rm -rf annotations raw
      mkdir annotations
      for c in $(ls "$annotations" | grep '^case_' | sort | tail -n "+$((real_skip + 1))" | head -n "$real_cases"); do
        cp -r "$annotations/$c" annotations/
      done
      "$kdseg" synth --from-annotations annotations --output raw --seed "$data_seed" "${quiet[@]}"
      "$kdseg" prepare --input raw --layout kits23 --output prepared.h5 --size "$size" --slices organ --folds 5 \
        "${quiet[@]}" > /dev/null
    }
    # The target is the kidney with its masses: every foreground label one class.
    task=(--task map:0:0,1:1,2:1,3:1)
    ;;
  *) echo "study: unknown DATA '$data'" >&2 && exit 2 ;;
esac

# train_student <labels or cache> <seed> <output> <steps> <batch> <fold options...>
train_student() {
  local kind=$1 seed=$2 output=$3 run_steps=$4 run_batch=$5
  shift 5
  local model=(--arch "$student_arch" --width "$width" --max-steps "$run_steps" --batch-size "$run_batch"
               --seed "$seed" --output "$output" --resume --crop-size "$size" --validate-every 0 --log-every 10
               --device "$device" "${task[@]}" "${optimiser[@]}" "$@" "${quiet[@]}")
  case $kind in
    majority | random | mean | weighted | ls) "$kdseg" train --data prepared.h5 --labels "$kind" "${model[@]}" ;;
    kd) "$kdseg" distill --data prepared.h5 --cache cache --teacher teacher/last.pt "${model[@]}" ;;
    kd-cal) "$kdseg" distill --data prepared.h5 --cache cache-cal --teacher teacher/last.pt "${model[@]}" ;;
    *) echo "study: unknown row '$kind'" >&2 && exit 2 ;;
  esac
}

if [ "$pilot" = 1 ]; then
  names=()
  for rung in $rungs; do
    run_steps=${rung%%:*} run_batch=${rung##*:}
    log "pilot: majority, seed 0, $run_steps steps of batch $run_batch, fold 1 held out"
    t0=$(date +%s)
    train_student majority 0 "pilot/$run_steps" "$run_steps" "$run_batch" --fold 1
    echo "$(( $(date +%s) - t0 ))" > "pilot/$run_steps/seconds"
    names+=(--model "pilot/$run_steps/last.pt" --name "rung-$run_steps")
  done
  newest=$(ls -t pilot/*/last.pt | head -1)
  if [ ! -e pilot-report/report.json ] || [ "$newest" -nt pilot-report/report.json ]; then
    "$kdseg" evaluate --data prepared.h5 --fold 1 --output pilot-report --device "$device" "${task[@]}" "${names[@]}" \
      --force --no-figures --bootstrap 200 "${quiet[@]}" > /dev/null
  fi
  /usr/bin/python3 - "$rungs" <<'PY'
import json, sys
rungs = sys.argv[1].split()
report = json.load(open("pilot-report/report.json"))
models = {m["name"]: m for m in report["models"]}
entries, chosen, previous = [], None, None
for rung in rungs:
    steps, batch = (int(v) for v in rung.split(":"))
    m = models[f"rung-{steps}"]
    rel = m["reliability"]
    conf, acc = rel["confidence"][-1], rel["accuracy"][-1]
    gap = None if conf is None or acc is None else abs(conf - acc)
    nll = m["summary"]["nll"]
    seconds = int(open(f"pilot/{steps}/seconds").read())
    calibrated = gap is not None and gap <= 0.002
    stalled = previous is not None and nll >= previous
    entries.append({"steps": steps, "batch": batch, "seconds": seconds, "top_bin_confidence": conf,
                    "top_bin_accuracy": acc, "top_bin_gap": gap, "nll": nll, "ece": m["summary"]["ece"]["mean"],
                    "dice": m["summary"]["dice"][report["regions"][0]]["mean"], "calibrated": calibrated,
                    "nll_stalled": stalled})
    if chosen is None and (calibrated or stalled):
        chosen = {"steps": steps, "batch": batch, "why": "background bin calibrated" if calibrated else
                  "NLL no better than the rung before"}
    previous = nll
if chosen is None:
    last = entries[-1]
    chosen = {"steps": last["steps"], "batch": last["batch"], "why": "no rung met the rule: the last rung"}
json.dump({"rungs": entries, "chosen": chosen}, open("pilot.json", "w"), indent=1)
with open("pilot.md", "w") as f:
    f.write("| steps | batch | seconds | top bin confidence | accuracy | gap | NLL | ECE | Dice |\n|---|---|---|---|---|---|---|---|---|\n")
    for e in entries:
        fmt = lambda v, d=4: "–" if v is None else f"{v:.{d}f}"
        f.write(f"| {e['steps']} | {e['batch']} | {e['seconds']} | {fmt(e['top_bin_confidence'])} | "
                f"{fmt(e['top_bin_accuracy'])} | {fmt(e['top_bin_gap'])} | {fmt(e['nll'])} | {fmt(e['ece'])} | "
                f"{fmt(e['dice'])} |\n")
    f.write(f"\nChosen: {chosen['steps']} steps of batch {chosen['batch']} ({chosen['why']}).\n")
print(open("pilot.md").read())
PY
  echo "pilot: $(( $(date +%s) - start )) s; $(realpath pilot.md)"
  exit 0
fi

needs() { [[ " $rows " == *" $1 "* ]]; }  # needs <row>: whether ROWS holds it
seeds_of() {                              # seeds_of <row>
  case $1 in majority | mean | kd | kd-cal) echo "$claim_seeds" ;; *) echo "$other_seeds" ;; esac
}
fold_options=(--fold 0 --exclude-folds 1)

# teacher_and_caches: the teacher, then its soft labels for folds 2-4, as trained and calibrated
# on fold 1; caches are kept when they are finished and sound.
teacher_and_caches() {
  echo "teacher ($teacher_arch, width $teacher_width, $teacher_steps steps, label smoothing)"
  "$kdseg" train --data prepared.h5 --arch "$teacher_arch" --width "$teacher_width" --max-steps "$teacher_steps" \
    --batch-size "$batch" --crop-size "$size" --labels ls --output teacher --resume --validate-every 0 \
    --log-every 10 --device "$device" "${task[@]}" "${optimiser[@]}" "${fold_options[@]}" "${quiet[@]}"
  make_cache() {
    local folder=$1
    shift
    "$kdseg" cache verify --cache "$folder" --teacher teacher/last.pt --data prepared.h5 > /dev/null 2>&1 && return
    "$kdseg" precompute --teacher teacher/last.pt --data prepared.h5 --folds 2,3,4 --output "$folder" \
      --device "$device" --force "${task[@]}" "$@" "${quiet[@]}"
  }
  if needs kd; then make_cache cache; fi
  if needs kd-cal; then make_cache cache-cal --temperature fit --calibration-folds 1; fi
}

mkdir -p runs
teacher_pid=
if needs kd || needs kd-cal; then
  log "teacher and its caches, beside the rows without a teacher (teacher.log)"
  spawn teacher.log teacher_and_caches
  teacher_pid=$!
fi

# Every row from each of its seeds: the rows without a teacher first, then the distilled rows.
for stage in labels teacher; do
  if [ "$stage" = teacher ] && [ -n "$teacher_pid" ]; then
    wait "$teacher_pid" || failed teacher.log
  fi
  for seed in $(printf '%s\n' $claim_seeds $other_seeds | awk '!seen[$0]++'); do
    for row in $rows; do
      case $row in kd | kd-cal) [ "$stage" = teacher ] || continue ;; *) [ "$stage" = labels ] || continue ;; esac
      [[ " $(seeds_of "$row") " == *" $seed "* ]] || continue
      log "$row, seed $seed"
      spawn "runs/$row-s$seed.log" train_student "$row" "$seed" "runs/$row-s$seed" "$steps" "$batch" \
        "${fold_options[@]}"
    done
  done
done
drain

# Temperature scaling of each TS_ROWS student on fold 1 (kdseg calibrate), kept when done.
for row in $ts_rows; do
  needs "$row" || continue
  for seed in $(seeds_of "$row"); do
    [ -e "runs/$row-s$seed/cal.pt" ] && [ "runs/$row-s$seed/cal.pt" -nt "runs/$row-s$seed/last.pt" ] && continue
    spawn "runs/$row-s$seed.calibrate.log" "$kdseg" calibrate --model "runs/$row-s$seed/last.pt" --data prepared.h5 \
      --fold 1 --output "runs/$row-s$seed/cal.pt" --force --device "$device" "${quiet[@]}"
  done
done
drain

# evaluate_models <report folder> <model options...>: again only when a model is newer.
evaluate_models() {
  local folder=$1
  shift
  local newest
  newest=$(ls -t runs/*/*.pt teacher/last.pt 2> /dev/null | head -1 || true)
  if [ ! -e "$folder/report.json" ] || [ "$newest" -nt "$folder/report.json" ]; then
    "$kdseg" evaluate --data prepared.h5 --fold 0 --output "$folder" --device "$device" "${task[@]}" "$@" --force \
      "${quiet[@]}" > /dev/null
  fi
}
models=()
for row in $rows; do  # majority first: every other model is paired with its first seed
  for seed in $(seeds_of "$row"); do models+=(--model "runs/$row-s$seed/last.pt" --name "$row-s$seed"); done
done
(needs kd || needs kd-cal) && models+=(--model teacher/last.pt --name teacher)
log "evaluate every model on fold 0 against the raters' majority and mean"
evaluate_models report "${models[@]}"
reports=(report/report.json)
ts_models=()
for row in $ts_rows; do
  needs "$row" || continue
  for seed in $(seeds_of "$row"); do ts_models+=(--model "runs/$row-s$seed/cal.pt" --name "$row-ts-s$seed"); done
done
if [ ${#ts_models[@]} -gt 0 ]; then
  log "evaluate the temperature-scaled students on fold 0"
  evaluate_models report-ts "${ts_models[@]}"
  reports+=(report-ts/report.json)
fi
/usr/bin/python3 "$here/study_summary.py" "${reports[@]}" --rows "$rows" --seeds "$claim_seeds" --out . \
  ${claims:+--claims "$claims"}
echo "study: $(( $(date +%s) - start )) s; $(realpath study.md)"
