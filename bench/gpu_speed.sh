#!/usr/bin/env bash
# The GPU proof, part 2: how fast? Eager `bench train` for ResNeXt-50/101 (bf16 channels_last against NCHW,
# fp16, ghost BN over 32 against plain BN, batch 256 and 32, the methods beyond the paper against none),
# `bench data` with the training's loader worker count (and with the V2 recipe's TrivialAugmentWide + random
# erasing against none), `bench e2e` on dali_gpu, and one torch.compile row last.  Usage, from the repo root on a CUDA machine:
#   bash bench/gpu_speed.sh [--dry-run]     # JSON, logs and summary.md under $OUT (default bench-results/gpu)
# Exit code: the number of steps that failed. Budget: under 5 minutes on one H100 (docs/perf/README.md
# says how it was estimated); every step runs under its own timeout.
source "$(dirname "$0")/gpu_lib.sh"
DATA=${DATA:-/tmp/resnext-fake-imagenet}
[ "$DRY" = 1 ] || fake_folder "$DATA" 10 100 10 500x375
WORKERS=$("$PY" -c "from resnext.config import auto_workers; print(auto_workers())")
TRAIN=(train --steps 10 --repeats 3 --device cuda)

bench x50_bf16 120 "${TRAIN[@]}" --model resnext50_32x4d --batch 256 --precision bf16 \
  --memory-format channels_last,nchw --bn-batch 32
bench x101_bf16 120 "${TRAIN[@]}" --model resnext101_32x4d --batch 256 --precision bf16 \
  --memory-format channels_last --bn-batch 32
bench x101_fp16 90 "${TRAIN[@]}" --model resnext101_32x4d --batch 256 --precision fp16 --memory-format channels_last
bench x50_b32 60 "${TRAIN[@]}" --model resnext50_32x4d --batch 32 --precision bf16 --memory-format channels_last
bench x50_methods 90 "${TRAIN[@]}" --model resnext50_32x4d --batch 256 --precision bf16 --memory-format channels_last \
  --with "data.mixup_alpha=0.2 data.cutmix_alpha=1.0 trainer.ema_decay=0.999 optim.clip_grad_norm=1.0 model.drop_path=0.05"
bench data 150 data "$DATA" --batch 256 --workers "$WORKERS" --backends dali_gpu,dali_cpu,torch \
  --with "data.auto_augment=ta_wide data.random_erase=0.1"
bench e2e 120 e2e +recipe=resnext50_32x4d_imagenet "data.root=$DATA" model.num_classes=0 data.backend=dali_gpu \
  "data.workers=$WORKERS" --steps 10 --repeats 3
bench x50_compile 240 "${TRAIN[@]}" --model resnext50_32x4d --batch 256 --precision bf16 \
  --memory-format channels_last --compile compile
summary "gpu_speed"
failed=$?
for f in "$OUT"/*.log; do  # each bench's own table, for the tail of the output
  if grep -q '^| ' "$f" 2>/dev/null; then echo; echo "## $(basename "$f" .log)"; grep '^| ' "$f"; fi
done
exit "$failed"
