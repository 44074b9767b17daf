#!/usr/bin/env bash
# The GPU proof, part 1: does the CUDA path run? Versions, the GPU JPEG decoder (crop-region decoding in its
# own process with faulthandler: a decoder crash is a SIGSEGV), every GPU test, and a 2-epoch training on
# dali_gpu, dali_cpu and torch.  Usage, from the repo root on a CUDA machine:
#   bash bench/gpu_check.sh [--dry-run]     # logs and summary.md under $OUT (default bench-results/gpu)
# Exit code: the number of steps that failed. Budget: under 5 minutes on one H100 (docs/perf/README.md
# says how it was estimated); every step runs under its own timeout.
source "$(dirname "$0")/gpu_lib.sh"
DATA=${DATA:-/tmp/resnext-fake-small}
[ "$DRY" = 1 ] || fake_folder "$DATA" 10 24 4 320x240
SMOKE=(data=imagenet "data.root=$DATA" model=resnet model.depth=18 model.num_classes=0 data.image_size=64
       data.batch_size=32 data.workers=4 trainer.epochs=2 schedule=cosine trainer.progress=false trainer.device=cuda)

run versions 60 "$PY" -c "import torch, nvidia.dali as d, hydra, omegaconf; print('torch', torch.__version__,
  'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), torch.cuda.get_device_name(0),
  '| dali', d.__version__, '| hydra', hydra.__version__, '| omegaconf', omegaconf.__version__)"
run decoder 120 "$PY" -X faulthandler bench/gpu_decoder_probe.py "$DATA"
tests pytest_gpu 300 -m gpu tests
for backend in dali_gpu dali_cpu torch; do
  train "smoke_$backend" 150 "${SMOKE[@]}" "data.backend=$backend"
done
summary "gpu_check"
