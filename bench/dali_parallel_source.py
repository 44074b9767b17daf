"""Issue 19, item 5: is DALI's external source faster with its Python work in worker processes?

The training pipeline's external source (resnext.data.dali.Source) reads each file, parses its JPEG header
and draws the sample's crop, flip and lighting in Python, on the thread that runs the DALI iterator: the
training thread. DALI can run a stateless per-sample source in worker processes instead
(``parallel=True``, ``py_num_workers``). This measures both on the same decode/crop/resize/normalize graph,
alternating round by round: the training thread's CPU time per batch (``time.thread_time``; for the serial
source also the part spent in the source itself) and the images per second the pipeline delivers.

    python bench/dali_parallel_source.py [--root IMAGENET_ROOT] [--images 1024] [--rounds 5] [--out FILE]

Without --root it writes ``--images`` JPEGs of 500x375 (resnext.data.tools.make_fake) to a temporary folder.
The per-sample source does what Source does per sample, addressed by DALI's SampleInfo; it serves one epoch
in a fixed order, enough to time it (the product's loader would derive the order per epoch in the workers).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from resnext.config import DataConfig
from resnext.data.dali import Source
from resnext.data.imagenet import open_sources
from resnext.data.imagenet_augment import AugConfig, draw, image_size, sample_seed
from resnext.data.imagenet_folder import MEAN, STD
from resnext.data.tools import make_fake


class PerSample:
    """Source's per-sample work (read, header, draw) for one epoch in ``order``, addressed by SampleInfo."""

    def __init__(self, images, cfg, order: list[int], seed: int = 0) -> None:
        self.images, self.aug, self.order, self.seed = images, AugConfig.of(cfg), order, seed

    def __call__(self, info):
        if info.idx_in_epoch >= len(self.order):
            raise StopIteration
        encoded, label = self.images.read(self.order[info.idx_in_epoch])
        data = np.frombuffer(encoded, dtype=np.uint8)
        w, h = image_size(data)
        a = draw(sample_seed(self.seed, 0, info.idx_in_epoch), w, h, self.aug)
        mean = [255 * (m - s) for m, s in zip(MEAN, a.shift, strict=True)]
        return (data, np.array(label, np.int32), np.array([a.x, a.y], np.float32), np.array([a.w, a.h], np.float32),
                np.array(a.flip, np.int32), np.array(mean, np.float32))


def graph(source, parallel: bool, size: int):
    from nvidia.dali import fn, types

    mode = {"parallel": True, "batch": False} if parallel else {"batch": True}
    jpegs, labels, anchor, shape, mirror, mean = fn.external_source(source=source, num_outputs=6, **mode)
    images = fn.decoders.image_slice(jpegs, anchor, shape, axis_names="WH", normalized_anchor=False,
                                     normalized_shape=False, output_type=types.RGB)
    images = fn.resize(images, resize_x=size, resize_y=size, antialias=True)
    images = fn.crop_mirror_normalize(images, dtype=types.FLOAT, output_layout="CHW", mean=mean,
                                      std=[255 * s for s in STD], mirror=mirror)
    return images, labels


def one_epoch(images, cfg, order: list[int], parallel: bool, args) -> dict:
    """One pass over ``order``: images delivered, the training thread's CPU ms per batch (and the serial
    source's share of it), images per second."""
    from nvidia.dali import pipeline_def
    from nvidia.dali.plugin.pytorch import DALIGenericIterator

    spent: list[float] = []
    common = dict(batch_size=args.batch, num_threads=args.threads, device_id=None, prefetch_queue_depth=2)
    if parallel:
        pipe = pipeline_def(graph, **common, py_num_workers=args.workers, py_start_method="fork")(
            PerSample(images, cfg, order), True, args.size)
    else:
        serial = Source(images, cfg, args.batch, True)
        serial.start(order, list(range(len(order))))

        def source():
            t = time.thread_time()
            try:
                return serial()
            finally:
                spent.append(time.thread_time() - t)

        pipe = pipeline_def(graph, **common)(source, False, args.size)
    if parallel:
        pipe.start_py_workers()  # forked before the pipeline is built, as DALI asks of py_start_method="fork"
    pipe.build()
    cpu, wall, n = time.thread_time(), time.perf_counter(), 0  # the iterator prefetches: its start counts
    it = DALIGenericIterator(pipe, ["images", "labels"], size=-1, auto_reset=False)
    for out in it:
        n += int(out[0]["images"].shape[0])
    cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
    batches = n / args.batch
    row = {"images": n, "thread_ms_per_batch": 1e3 * cpu / batches, "images_per_s": n / wall}
    if not parallel:
        row["source_ms_per_batch"] = 1e3 * sum(spent) / batches
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", help="an ImageNet-layout folder (default: --images fake JPEGs of 500x375)")
    ap.add_argument("--images", type=int, default=1024, help="fake images to write without --root")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=176, help="training crop size")
    ap.add_argument("--threads", type=int, default=2, help="DALI's CPU threads (data.workers)")
    ap.add_argument("--workers", type=int, default=2, help="worker processes of the parallel source")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", help="JSON file for the rows and medians")
    args = ap.parse_args(argv)
    root = Path(args.root) if args.root else Path(tempfile.mkdtemp(prefix="dali-source-"))
    if not args.root:
        make_fake(root, 8, args.images // 8, 1, (500, 375))
    cfg = OmegaConf.merge(OmegaConf.structured(DataConfig), {
        "root": str(root), "batch_size": args.batch, "image_size": args.size, "workers": args.threads,
        "color_jitter": 0.0, "lighting": 0.0})
    images, _ = open_sources(cfg)
    order = np.random.default_rng(0).permutation(len(images)).tolist()
    order = order[:len(order) // args.batch * args.batch]  # whole batches only
    rows: dict[str, list[dict]] = {"serial": [], "parallel": []}
    for r in range(args.rounds):
        for name in rows:
            rows[name].append(one_epoch(images, cfg, order, name == "parallel", args))
            print(f"round {r} {name}: {json.dumps(rows[name][-1])}", flush=True)
    summary = {name: {k: statistics.median(row[k] for row in rs) for k in rs[0]} for name, rs in rows.items()}
    summary["parallel_vs_serial_images_per_s"] = statistics.median(
        p["images_per_s"] / s["images_per_s"] for p, s in zip(rows["parallel"], rows["serial"], strict=True))
    print(json.dumps(summary, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps({"settings": {**vars(args), "command": " ".join(sys.argv)},
                                              "rows": rows, "summary": summary}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
