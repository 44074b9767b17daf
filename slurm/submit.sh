#!/usr/bin/env bash
# Submit a recipe to Slurm with a stable run directory (so requeues and resubmissions resume).
set -euo pipefail
usage() {
  cat <<'TXT'
usage: slurm/submit.sh RECIPE [options] [overrides...]

Submits slurm/train.sbatch for recipes/RECIPE.yaml and prints the job id and where logs go.

options:
  --nodes N           nodes (default 1)
  --gpus-per-node G   GPUs per node, one training process each (default 8); 0 = CPU nodes
  --nproc N           processes per node when --gpus-per-node 0 (default 1)
  --partition P       Slurm partition (default: the cluster's default)
  --time T            time limit, e.g. 72:00:00 (default: the partition's); the job saves and
                      requeues itself 120 s before it
  --run-dir DIR       run directory (default outputs/RECIPE, plus -<hash> when overrides are given)
  --dry-run           print the sbatch command instead of running it
  -h, --help          this text
overrides:            any train.py overrides, e.g. data.root=/data/imagenet optim.lr=0.2

The same RECIPE and overrides always map to the same run directory: submitting again resumes.
TXT
}
die() { echo "error: $*" >&2; exit 2; }

root=$(cd "$(dirname "$0")/.." && pwd)
[ $# -ge 1 ] || { usage >&2; exit 2; }
case $1 in -h|--help) usage; exit 0 ;; -*) die "the first argument must be a recipe name (see recipes/)" ;; esac
recipe=$1; shift
[ -f "$root/recipes/$recipe.yaml" ] || die "unknown recipe '$recipe'; available: $(cd "$root/recipes" && ls *.yaml | sed 's/\.yaml$//' | tr '\n' ' ')"

nodes=1 gpus=8 nproc="" partition="" time="" run_dir="" dry=0 overrides=()
need() { [ $# -ge 2 ] && [ -n "$2" ] || die "$1 needs a value"; }
int() { [[ $2 =~ ^[0-9]+$ ]] || die "$1 must be a whole number, got '$2'"; }
while [ $# -gt 0 ]; do
  case $1 in
    --nodes) need "$@"; int "$1" "$2"; nodes=$2; shift 2 ;;
    --gpus-per-node) need "$@"; int "$1" "$2"; gpus=$2; shift 2 ;;
    --nproc) need "$@"; int "$1" "$2"; nproc=$2; shift 2 ;;
    --partition) need "$@"; partition=$2; shift 2 ;;
    --time) need "$@"; time=$2; shift 2 ;;
    --run-dir) need "$@"; run_dir=$2; shift 2 ;;
    --dry-run) dry=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --*) die "unknown option '$1' (see --help)" ;;
    *=*) overrides+=("$1"); shift ;;
    *) die "'$1' is neither an option nor a key=value override" ;;
  esac
done
[ "$nodes" -ge 1 ] || die "--nodes must be >= 1"
if [ -z "$run_dir" ]; then
  run_dir="outputs/$recipe"
  if [ ${#overrides[@]} -gt 0 ]; then
    run_dir="$run_dir-$(printf '%s\n' "${overrides[@]}" | sort | sha1sum | cut -c1-8)"
  fi
fi
case $run_dir in /*) ;; *) run_dir="$root/$run_dir" ;; esac
if [ "$gpus" -gt 0 ]; then nproc=${nproc:-$gpus}; else nproc=${nproc:-1}; fi

args=(--parsable --job-name="resnext-$recipe" --nodes="$nodes" --output="$run_dir/slurm-%j.out")
if [ "$gpus" -gt 0 ]; then
  args+=(--gres="gpu:$gpus")
else
  args+=(--gres=none --cpus-per-task="$nproc")
fi
[ -n "$partition" ] && args+=(--partition="$partition")
[ -n "$time" ] && args+=(--time="$time")
args+=(--export="ALL,RESNEXT_ROOT=$root,RUN_DIR=$run_dir,GPUS_PER_NODE=$gpus,NPROC_PER_NODE=$nproc")
cmd=(sbatch "${args[@]}" "$root/slurm/train.sbatch" "$recipe" ${overrides[@]+"${overrides[@]}"})
if [ "$dry" = 1 ]; then
  printf '%q ' "${cmd[@]}"; echo
  exit 0
fi
mkdir -p "$run_dir"
job=$("${cmd[@]}")
job=${job%%;*}
echo "submitted job $job: $recipe on $nodes node(s) x $([ "$gpus" -gt 0 ] && echo "$gpus GPU(s)" || echo "$nproc CPU process(es)")"
echo "run dir: $run_dir"
echo "log:     $run_dir/slurm-$job.out"
