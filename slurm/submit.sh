#!/usr/bin/env bash
# Submit a train.py command (a recipe, or any overrides) to Slurm (slurm/train.sbatch) with a stable run
# directory, a job name and a log path.
# The command is checked first as train.py checks it (python -m resnext.compose: one line, exit 2, nothing
# queued), and the run directory is the one a local run of it uses (outputs/<name>), so a requeue or a
# resubmission of the same command resumes the run. Run with --help for the options.
set -euo pipefail

usage() {
  cat <<'TXT'
usage: slurm/submit.sh [RECIPE] [options] [overrides...]

Submits what `train.py [+recipe=RECIPE] overrides...` would train: RECIPE is a name of recipes/*.yaml, or
left out for a command of overrides only (your own folder: model=resnet data.root=/my/folder name=mine).
Checks the command as train.py does (at the job's world size, on its kind of node) and the run
directory's saved settings, then submits slurm/train.sbatch and prints
the job id, the run directory and the log file; a mistake is one line, exit 2, nothing queued. The job
requeues itself when Slurm warns of its time limit (USR1, 120 s before) and the next start resumes
from the run directory.

options:
  --nodes N           nodes, one torchrun each (default 1)
  --gpus-per-node G   GPUs per node, one training process per GPU (default 8);
                      0 = CPU-only nodes: --nproc processes per node with gloo
  --nproc N           training processes per node when --gpus-per-node is 0 (default 1)
  --cpus-per-node C   CPU cores to reserve per node (default 8 per GPU; with 0 GPUs, --nproc)
  --partition P       Slurm partition (default: the cluster's default partition)
  --time T            time limit, e.g. 72:00:00 or 3-00:00:00 (default: the partition's);
                      the job saves and requeues itself --warn seconds before it
  --warn S            seconds of warning before the time limit (default 120): Slurm sends USR1
                      then, and the trainers get S - 20 s to finish their step and save
  --run-dir DIR       run directory (default: a local run's, outputs/<name>: the recipe's name
                      unless name=NEW is given, else "custom"); relative paths are from the repository. The
                      same command resumes it; other training settings (optim.lr=...) are
                      refused before submitting: give them name=NEW
  --dry-run           print the sbatch command instead of running it
  -h, --help          show this text

overrides:            any train.py overrides, e.g. data.root=/data/imagenet optim.lr=0.2

examples:
  slurm/submit.sh resnext50_32x4d_imagenet data.root=/data/imagenet
  slurm/submit.sh resnext101_32x4d_imagenet --nodes 4 --time 24:00:00 data.root=/data/imagenet
  slurm/submit.sh resnext29_demo_digits --gpus-per-node 0 --nproc 2
  slurm/submit.sh model=resnet model.depth=18 data.root=/my/folder name=mine --gpus-per-node 1
TXT
}
die() { echo "error: $*" >&2; exit 2; }
need() { [ $# -ge 2 ] && [ -n "$2" ] || die "$1 needs a value (see --help)"; }
whole() { [[ $2 =~ ^[0-9]+$ ]] || die "$1 must be a whole number, got '$2'"; }

root=$(cd "$(dirname "$0")/.." && pwd)
[ $# -ge 1 ] || die "nothing to train: slurm/submit.sh [RECIPE] [options] [overrides...] (see --help)"
recipe=""
case $1 in
  -h|--help) usage; exit 0 ;;
  -*|*=*) ;;  # no recipe: train.py's defaults and the overrides
  *) recipe=$1; shift ;;
esac
[ -z "$recipe" ] || [ -f "$root/recipes/$recipe.yaml" ] ||
  die "unknown recipe '$recipe' (no recipes/$recipe.yaml); available: $(cd "$root/recipes" && ls -- *.yaml | sed 's/\.yaml$//' | tr '\n' ' ')"

nodes=1 gpus=8 nproc="" cpus="" partition="" time="" warn="" run_dir="" dry=0
overrides=()
while [ $# -gt 0 ]; do
  case $1 in
    --nodes) need "$@"; whole "$1" "$2"; nodes=$2; shift 2 ;;
    --gpus-per-node) need "$@"; whole "$1" "$2"; gpus=$2; shift 2 ;;
    --nproc) need "$@"; whole "$1" "$2"; nproc=$2; shift 2 ;;
    --cpus-per-node) need "$@"; whole "$1" "$2"; cpus=$2; shift 2 ;;
    --partition) need "$@"; partition=$2; shift 2 ;;
    --time) need "$@"; time=$2; shift 2 ;;
    --warn) need "$@"; whole "$1" "$2"; warn=$2; shift 2 ;;
    --run-dir) need "$@"; run_dir=$2; shift 2 ;;
    --dry-run) dry=1; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) die "unknown option '$1' (see --help)" ;;
    *=*) overrides+=("$1"); shift ;;
    *) die "'$1' is neither an option nor a key=value override (see --help)" ;;
  esac
done
[ "$nodes" -ge 1 ] || die "--nodes must be at least 1"
[ -z "$nproc" ] || [ "$nproc" -ge 1 ] || die "--nproc must be at least 1"
[ -z "$nproc" ] || [ "$gpus" -eq 0 ] || die "--nproc is for CPU nodes (--gpus-per-node 0); with GPUs it is one process per GPU"
[ -z "$cpus" ] || [ "$cpus" -ge 1 ] || die "--cpus-per-node must be at least 1"
[ -z "$warn" ] || [ "$warn" -ge 30 ] || die "--warn must be at least 30 (seconds)"
if [ -n "$time" ] && ! [[ $time =~ ^[0-9:-]+$ ]]; then
  die "--time takes Slurm's forms (MM, HH:MM:SS, D-HH:MM:SS), got '$time'"
fi
for o in ${overrides[@]+"${overrides[@]}"}; do
  case $o in hydra.run.dir=*) die "use --run-dir DIR, not $o" ;; esac
done
[ "$dry" = 1 ] || command -v sbatch >/dev/null || die "sbatch not found: run this on a Slurm login node"
py=${PYTHON:-$root/.venv/bin/python}
[ -x "$py" ] || py=python3

if [ "$gpus" -gt 0 ]; then
  nproc=$gpus
  cpus=${cpus:-$((8 * gpus))}
  res=(--gres="gpu:$gpus" --cpus-per-task="$cpus")
  what="$gpus GPU(s)"
else
  nproc=${nproc:-1}
  cpus=${cpus:-$nproc}
  res=(--gres=none --cpus-per-task="$cpus")
  what="$nproc CPU process(es)"
fi

# train.py's own check of what the job will run (train.sbatch's arguments: the recipe, the device on CPU
# nodes, the run dir), at the job's world size; it prints the run directory a local run would use
check=()
[ -z "$recipe" ] || check+=("+recipe=$recipe")
if [ "$gpus" -eq 0 ] && [[ " ${overrides[*]-} " != *" trainer.device="* ]]; then check+=("trainer.device=cpu"); fi
[ -z "$run_dir" ] || check+=("hydra.run.dir=$run_dir")
check+=(${overrides[@]+"${overrides[@]}"})
cuda=()
[ "$gpus" -eq 0 ] || cuda=(--cuda)
derived=$(cd "$root" && PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}" \
  "$py" -m resnext.compose --world "$((nodes * nproc))" ${cuda[@]+"${cuda[@]}"} "${check[@]}") || exit $?
run_dir=${run_dir:-$derived}
case $run_dir in /*) ;; *) run_dir="$root/$run_dir" ;; esac

# the job's name: the recipe's, else the run's name= override, else train.py's default name
job_name=$recipe
for o in ${overrides[@]+"${overrides[@]}"}; do case $o in name=*) job_name=${o#name=} ;; esac; done
args=(--parsable --job-name="resnext-${job_name:-custom}" --nodes="$nodes" "${res[@]}" --output="$run_dir/slurm-%j.out")
[ -n "$partition" ] && args+=(--partition="$partition")
[ -n "$time" ] && args+=(--time="$time")
# the batch script reads these (sbatch copies the script away, so it needs to be told where the repo is)
export_vars="ALL,RESNEXT_ROOT=$root,RUN_DIR=$run_dir,GPUS_PER_NODE=$gpus,NPROC_PER_NODE=$nproc"
if [ -n "$warn" ]; then
  args+=(--signal="B:USR1@$warn")
  export_vars+=",STOP_GRACE=$((warn - 20))"
fi
args+=(--export="$export_vars")
cmd=(sbatch "${args[@]}" "$root/slurm/train.sbatch" ${recipe:+"$recipe"} ${overrides[@]+"${overrides[@]}"})
if [ "$dry" = 1 ]; then
  printf '%q ' "${cmd[@]}"
  echo
  exit 0
fi

mkdir -p "$run_dir"  # Slurm opens the log there and does not create directories
out=$("${cmd[@]}") || exit $?
job=${out%%;*}  # --parsable prints ID or ID;CLUSTER
echo "submitted job $job: ${recipe:-${overrides[*]-}} on $nodes node(s) x $what"
echo "run dir: $run_dir"
echo "log:     $run_dir/slurm-$job.out"
echo "follow:  tail -f $run_dir/slurm-$job.out; stop: scancel $job (it saves first); resume: the same command"
