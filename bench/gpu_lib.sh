# Shared by bench/gpu_check.sh and bench/gpu_speed.sh (sourced, not run): options, steps under `timeout`,
# and the summary table. A step that fails or times out is recorded and the script goes on.
#   --dry-run   check every step's arguments without a GPU: bench options parsed (`resnext.bench --dry-run`),
#               train.py overrides composed (`train.py --cfg job`), pytest collected (`--collect-only`)
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DRY=0
for arg in "$@"; do
  case $arg in
    --dry-run) DRY=1 ;;
    -h|--help) sed -n '2,/^source /p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown argument '$arg' (valid: --dry-run, --help)" >&2; exit 2 ;;
  esac
done
OUT=${OUT:-bench-results/gpu}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD/src PYTHONUNBUFFERED=1
RESULTS=()

_record() {  # NAME RC SECONDS
  local status=ok
  [ "$2" = 0 ] || status="FAILED (exit $2)"
  if [ "$2" = 124 ] || [ "$2" = 137 ]; then status="TIMED OUT"; fi
  RESULTS+=("| $1 | $status | $3 |")
}

# run NAME LIMIT CMD...: CMD under `timeout LIMIT`, its output in $OUT/NAME.log (the last lines echoed)
run() {
  local name=$1 limit=$2; shift 2
  if [ "$DRY" = 1 ]; then echo "[dry-run] $name (timeout ${limit}s): $*"; return 0; fi
  local t0=$SECONDS rc=0
  echo "== $name (timeout ${limit}s): $*"
  timeout -k 10 "$limit" "$@" > "$OUT/$name.log" 2>&1 || rc=$?
  tail -n 4 "$OUT/$name.log"
  _record "$name" "$rc" $((SECONDS - t0))
}

# bench NAME LIMIT ARGS...: python -m resnext.bench ARGS, its JSON in $OUT/NAME.json
bench() {
  local name=$1 limit=$2; shift 2
  if [ "$DRY" = 1 ]; then
    local rc=0
    "$PY" -m resnext.bench --dry-run "$@" || rc=$?
    _record "$name" "$rc" 0
    return 0
  fi
  run "$name" "$limit" "$PY" -m resnext.bench --out "$OUT/$name.json" "$@"
}

# train NAME LIMIT OVERRIDES...: train.py with the overrides, its run directory $OUT/NAME
train() {
  local name=$1 limit=$2; shift 2
  if [ "$DRY" = 1 ]; then
    local rc=0
    "$PY" train.py --cfg job "$@" "hydra.run.dir=$OUT/$name" > /dev/null || rc=$?
    echo "[dry-run] train $name: $* (composed: exit $rc)"
    _record "$name" "$rc" 0
    return 0
  fi
  run "$name" "$limit" "$PY" train.py "$@" "hydra.run.dir=$OUT/$name"
}

# tests NAME LIMIT PYTEST_ARGS...
tests() {
  local name=$1 limit=$2; shift 2
  if [ "$DRY" = 1 ]; then
    local rc=0
    "$PY" -m pytest -q --collect-only -p no:cacheprovider "$@" > "$OUT/$name.collect" 2>&1 || rc=$?
    echo "[dry-run] pytest $*: $(tail -n 1 "$OUT/$name.collect")"
    _record "$name" "$rc" 0
    return 0
  fi
  run "$name" "$limit" "$PY" -m pytest -q -p no:cacheprovider "$@"
}

# fake_folder ROOT CLASSES PER_CLASS VAL_PER_CLASS WxH: an ImageNet-layout JPEG folder, made once
fake_folder() {
  [ -d "$1/train" ] || "$PY" -m resnext.data make-fake "$1" --classes "$2" --per-class "$3" \
    --val-per-class "$4" --size "$5" > /dev/null
}

# summary TITLE: the table of steps (also $OUT/summary.md); returns the number of steps not ok
summary() {
  local how="$SECONDS s in all"
  [ "$DRY" = 1 ] && how="dry run: arguments checked, nothing measured"
  echo
  echo "$1 ($how; results in $OUT)"
  { echo "| step | status | seconds |"; echo "|---|---|---|"; printf '%s\n' "${RESULTS[@]}"; } | tee "$OUT/summary.md"
  local failed
  failed=$(printf '%s\n' "${RESULTS[@]}" | grep -vc '| ok |')
  return "$failed"
}
