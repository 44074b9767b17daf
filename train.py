"""Train a ResNeXt/ResNet/WRN: compose the config (Hydra) -> validate -> build -> fit.

    python train.py +recipe=resnext29_16x64d_cifar10 data.root=/data/cifar10
    torchrun --nproc_per_node=8 train.py +recipe=resnext50_32x4d_imagenet data.root=/data/imagenet
    python train.py -m +recipe=resnext29_cifar10_fig7 model.cardinality=1,2,4,8,16

Rerunning the same command resumes from the run directory (outputs/<name> by default).
Exit codes: 0 done, 2 bad input (one line on stderr), 3 non-finite loss, 75 stopped by a signal
after saving (requeue me).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))  # also works without `pip install -e .`

EXIT_INTERRUPTED = 130  # resnext.errors.EXIT_INTERRUPTED, which may not be imported yet when Ctrl-C comes


def start() -> None:
    """One run: compose once, then the session validates and trains. A multirun: Hydra's main, whose sweeper
    composes and checks every point once before any trains (src/hydra_plugins/resnext_sweeper). A Hydra flag (--help,
    --cfg job, ...): Hydra's main (another option Hydra reads: the run checked first)."""
    # numpy before torch: torch's C start-up imports numpy itself and swallows a Ctrl-C that lands inside that
    # import (numpy left half-built and the run going on, or failing later: seen at 0.3-0.45 s after start)
    import numpy  # noqa: F401

    from resnext.compose import single_run

    one = single_run(sys.argv[1:])
    if one is not None:
        from resnext.session import run

        code = run(*one)
        if code:
            sys.exit(code)
        return

    import hydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import DictConfig

    from resnext.compose import precheck, sweep_dirname
    from resnext.config import register

    register()

    @hydra.main(config_path="conf", config_name="config", version_base="1.3")
    def main(cfg: DictConfig) -> None:
        from resnext.errors import EXIT_REQUEUE
        from resnext.requeue import save_then_requeue
        from resnext.session import run

        with save_then_requeue() as requeue:  # a point of hydra/launcher=submitit_slurm: see resnext/requeue.py
            code = run(cfg, Path(HydraConfig.get().runtime.output_dir))
            if code == EXIT_REQUEUE:
                requeue()  # after submitit's time-limit signal: submitit resubmits this point (and exits)
        if code:
            sys.exit(code)

    precheck(sys.argv[1:])
    sys.argv += sweep_dirname(sys.argv[1:])  # a sweep's run directories are named by the swept keys only
    main()


if __name__ == "__main__":
    try:
        start()
    except KeyboardInterrupt:  # Ctrl-C while importing or composing: the trainer's own handler is not up yet
        print("error: interrupted while starting; nothing was written", file=sys.stderr, flush=True)
        sys.exit(EXIT_INTERRUPTED)
