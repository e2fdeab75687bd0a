#!/usr/bin/env bash
# Another user's links and folders, as kdseg meets them when it runs as root on a shared node. The
# attacks run as an unprivileged user (nobody), kdseg as root; each aims at a root-only victim:
#   - the lock file of an output folder pre-placed as a link to the victim, or as nobody's file:
#     `train` refuses the folder, naming the lock file, and the victim is unchanged;
#   - links named like the temporaries of `prepare` and `train` (.kdseg-tmp-<host>-<pid>-<n>-...,
#     placed for the process's own pid while it waits to start): both run as usual, their outputs
#     are regular files with the right content, the victim is unchanged and the links untouched;
#   - an output folder nobody made and owns: `train` writes into it, the victim unchanged;
#   - `mpirun evaluate --save-predictions` with the ranks' old staging folders
#     $TMPDIR/kdseg-evaluate-<pid>-<rank> pre-made by nobody (a folder of nobody's, and a link to
#     a root-only folder): each rank stages in a private folder of its own, the files there and
#     behind the link are unchanged, and the predictions are those of the same run without attacker.
#   security_test.sh <kdseg> <work dir> <mpiexec and its flags...>
# Exit 77 (register with SKIP_RETURN_CODE 77) where root or another user is not available.
set -uo pipefail
kdseg=$(realpath "$1")
work=$2
shift 2
mpirun=("$@")
source "$(dirname "$0")/test_lib.sh"

skip() {
  echo "security_test: skipped: $*"
  exit 77
}
[ "$(id -u)" = 0 ] || skip "kdseg must run as root against an unprivileged attacker"
if command -v setpriv > /dev/null && setpriv --reuid=nobody --regid=nogroup --clear-groups true 2> /dev/null; then
  as_nobody=(setpriv --reuid=nobody --regid=nogroup --clear-groups)
elif command -v runuser > /dev/null && runuser -u nobody -- true 2> /dev/null; then
  as_nobody=(runuser -u nobody --)
else
  skip "neither setpriv nor runuser can act as the user nobody"
fi
start_in "$work"
# The arena: a world-writable folder any user can reach, a root-only folder with the victims.
arena=$(mktemp -d "${TMPDIR:-/tmp}/kdseg-security.XXXXXX") || exit 1
trap 'rm -rf "$arena"' EXIT
chmod 755 "$arena"
mkdir -m 700 "$arena/root-only"
mkdir -m 777 "$arena/shared"
mkdir -m 1777 "$arena/tmp"
victim=$arena/root-only/victim
echo "root's file" > "$victim"
"${as_nobody[@]}" test -w "$arena/shared" || skip "nobody cannot reach $arena/shared"
host=$(hostname)
victim_unchanged() {  # victim_unchanged <attack>
  [ "$(cat "$victim")" = "root's file" ] || fail "$1: the victim file was changed"
}

"$kdseg" synth --layout kits23 --cases 6 --size 24 --slices 8 --output raw "${quiet[@]}" > /dev/null || exit 1
prepare=(prepare --input raw --size 32 --slices organ --folds 2 "${quiet[@]}")
"$kdseg" "${prepare[@]}" --output store.h5 > private.txt || exit 1
content_hash() { grep -o 'content hash [0-9a-f]*' "$1"; }
train=(train --data store.h5 --task organ-tumor --fold 0 --max-steps 2 --width 0.125 --crop-size 32 --batch-size 2
  --validate-every 0 "${quiet[@]}")

# --- the lock file: a link to the victim, or nobody's own file --------------------------------------
"${as_nobody[@]}" mkdir "$arena/shared/linked-lock"
"${as_nobody[@]}" ln -s "$victim" "$arena/shared/linked-lock/.kdseg.lock"
"$kdseg" "${train[@]}" --output "$arena/shared/linked-lock" > out.txt 2>&1 && fail "linked lock: train ran"
grep -q "linked-lock/.kdseg.lock: the lock file is a symbolic link" out.txt ||
  fail "linked lock: no clear refusal: $(tail -2 out.txt)"
victim_unchanged "linked lock"
"${as_nobody[@]}" mkdir "$arena/shared/their-lock"
"${as_nobody[@]}" touch "$arena/shared/their-lock/.kdseg.lock"
"$kdseg" "${train[@]}" --output "$arena/shared/their-lock" > out.txt 2>&1 && fail "nobody's lock: train ran"
grep -q "their-lock/.kdseg.lock: refusing the folder's lock file: it belongs to user $(id -u nobody)" out.txt ||
  fail "nobody's lock: no clear refusal: $(tail -2 out.txt)"
[ -z "$(ls "$arena/shared/their-lock")" ] || fail "nobody's lock: train wrote into the folder"

# --- links named like the temporaries, for the writer's own pid -------------------------------------
# start_stopped <log> <kdseg arguments...>: starts kdseg stopped before its first instruction; sets pid.
start_stopped() {
  local log=$1
  shift
  bash -c 'kill -STOP $$; exec "$0" "$@"' "$kdseg" "$@" > "$log" 2>&1 &
  pid=$!
  for _ in $(seq 1 100); do
    [[ "$(ps -o stat= -p "$pid" | tr -d ' ')" == T* ]] && return 0
    sleep 0.05
  done
  fail "kdseg $1 did not stop before starting"
}
# place_links <folder> <file name>: nobody's links to the victim under the old temporary names of
# the stopped process, n = 0..31.
place_links() {
  "${as_nobody[@]}" bash -c 'for n in $(seq 0 31); do ln -s "$1" "$2/.kdseg-tmp-$3-$4-$n-$5"; done' _ "$victim" \
    "$1" "$host" "$pid" "$2"
}
links_intact() {  # links_intact <attack> <folder> <links placed>
  local count
  count=$(find "$2" -maxdepth 1 -type l -lname "$victim" | wc -l)
  [ "$count" = "$3" ] || fail "$1: $count of nobody's $3 links are left as they were"
}

start_stopped prepare.txt "${prepare[@]}" --output "$arena/shared/store.h5"
place_links "$arena/shared" store.h5
kill -CONT "$pid"
wait "$pid" || fail "temporaries: prepare failed: $(tail -2 prepare.txt)"
if [ ! -f "$arena/shared/store.h5" ] || [ -L "$arena/shared/store.h5" ]; then fail "temporaries: store.h5 is not a file"; fi
[ "$(content_hash prepare.txt)" = "$(content_hash private.txt)" ] ||
  fail "temporaries: the store's content differs from a store made in private"
victim_unchanged "prepare's temporaries"
links_intact "prepare's temporaries" "$arena/shared" 32

# The output folder is nobody's, made before the run; the links are for config.json and last.pt.
"${as_nobody[@]}" mkdir -m 777 "$arena/shared/their-run"
start_stopped train.txt "${train[@]}" --output "$arena/shared/their-run"
place_links "$arena/shared/their-run" config.json
place_links "$arena/shared/their-run" last.pt
kill -CONT "$pid"
wait "$pid" || fail "temporaries: train in nobody's folder failed: $(tail -2 train.txt)"
for file in config.json last.pt; do
  if [ ! -f "$arena/shared/their-run/$file" ] || [ -L "$arena/shared/their-run/$file" ]; then
    fail "temporaries: train's $file is not a file"
  fi
done
victim_unchanged "train's temporaries"
links_intact "train's temporaries" "$arena/shared/their-run" 64

# --- evaluate's staging folders, pre-made by nobody ------------------------------------------------
if [ ${#mpirun[@]} -gt 0 ]; then
  evaluate=(evaluate --data store.h5 --task organ-tumor --fold 0 --model "$arena/shared/their-run/last.pt"
    --name student --bootstrap 10 --save-predictions "${quiet[@]}")
  "${mpirun[@]}" -np 3 "$kdseg" "${evaluate[@]}" --output alone > /dev/null 2>&1 ||
    fail "evaluate without attacker failed"
  mkdir pids
  # Each rank writes its pid and stops; the attacker then knows the names the ranks will stage in.
  TMPDIR=$arena/tmp "${mpirun[@]}" -np 3 bash -c \
    'echo $$ > "$0/${OMPI_COMM_WORLD_RANK:-${PMI_RANK:-0}}"; kill -STOP $$; exec "$@"' \
    "$work/pids" "$kdseg" "${evaluate[@]}" --output attacked > evaluate.txt 2>&1 &
  job=$!
  for _ in $(seq 1 200); do
    stopped=0
    for r in 0 1 2; do
      [ -s "pids/$r" ] && [[ "$(ps -o stat= -p "$(cat "pids/$r")" | tr -d ' ')" == T* ]] && stopped=$((stopped + 1))
    done
    [ "$stopped" = 3 ] && break
    sleep 0.05
  done
  [ "$stopped" = 3 ] || fail "evaluate: the ranks did not stop before starting"
  names=()
  for file in alone/predictions/student/*; do names+=("$(basename "$file")"); done
  mkdir -m 700 "$arena/root-only/predictions"
  for name in "${names[@]}"; do echo "root's $name" > "$arena/root-only/predictions/$name"; done
  rank1=$arena/tmp/kdseg-evaluate-$(cat pids/1)-1
  "${as_nobody[@]}" mkdir -m 777 "$rank1"
  for name in "${names[@]}"; do "${as_nobody[@]}" bash -c "echo nobody > '$rank1/$name'"; done
  "${as_nobody[@]}" ln -s "$arena/root-only/predictions" "$arena/tmp/kdseg-evaluate-$(cat pids/2)-2"
  for r in 0 1 2; do kill -CONT "$(cat "pids/$r")"; done
  wait "$job" || fail "evaluate under mpirun failed: $(tail -3 evaluate.txt)"
  for name in "${names[@]}"; do
    cmp -s "alone/predictions/student/$name" "attacked/predictions/student/$name" ||
      fail "evaluate: $name differs from a run without attacker"
    [ "$(cat "$rank1/$name")" = nobody ] || fail "evaluate: a rank wrote into nobody's folder ($name)"
    [ "$(cat "$arena/root-only/predictions/$name")" = "root's $name" ] ||
      fail "evaluate: a rank wrote through nobody's link ($name)"
  done
  [ "$(find "$rank1" -mindepth 1 | wc -l)" = "${#names[@]}" ] ||
    fail "evaluate: files appeared in nobody's folder"
  leftover=$(find "$arena/tmp" -mindepth 1 -maxdepth 1 -name 'kdseg-evaluate-*' -user root | head -3)
  [ -z "$leftover" ] || fail "evaluate: staging folders left behind: $leftover"
fi

finish "security: locks, temporaries and staging folders placed by another user are refused or unused"
