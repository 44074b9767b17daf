#!/usr/bin/env bash
# The GPU measurements in one command (issue: performance). Run on a CUDA machine from the repo root:
#   bash bench/gpu.sh            # results (JSON + logs) go to $OUT, or bench-results/gpu if unset
# Needs torch/torchvision with CUDA, and DALI + Hydra importable (on the lent machine: install the
# wheels packed by ../shared/tools/gpu-wheels.sh into /tmp/site and export PYTHONPATH=/tmp/site:$PWD/src).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-bench-results/gpu}
mkdir -p "$out"
export PYTHONPATH=${PYTHONPATH:-}:$PWD/src PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
bench() { name=$1; shift; "$py" -m resnext.bench --out "$out/$name.json" "$@" 2>&1 | tee "$out/$name.log"; }

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
# 1. GPU-marked tests (mixed decoder, SyncBatchNorm, CUDA precision paths)
"$py" -m pytest -q -m gpu tests 2>&1 | tee "$out/pytest_gpu.log" || true
# 2. the train step against the hand-written torchvision loop
bench train_x50 train --model resnext50_32x4d --batch 256 --precision bf16 --memory-format channels_last,nchw \
  --compile eager,compile --steps 20 --repeats 5
bench train_x101 train --model resnext101_32x4d --batch 256 --precision bf16,fp16 --memory-format channels_last \
  --compile eager,compile --steps 20 --repeats 5
bench train_cifar train --model resnext29_16x64d --classes 10 --batch 128 --size 32 --precision bf16 \
  --memory-format channels_last --compile eager,compile --steps 50 --repeats 5
# 3. input pipelines on ImageNet-size JPEGs, and end to end with DALI on the GPU
data=/tmp/fake-imagenet
[ -d $data ] || "$py" -m resnext.data make-fake $data --classes 10 --per-class 200 --val-per-class 20 --size 500x375
bench data data $data
bench cifar cifar --images 50000 --batch 128
bench e2e e2e +recipe=resnext50_32x4d_imagenet data.root=$data data.backend=dali_gpu data.batch_size=256 \
  --steps 20 --repeats 3
echo "results in $out"
