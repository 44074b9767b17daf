"""The GPU proof scripts check their own arguments without a GPU, under the GPU machine's package set."""

from __future__ import annotations

import re
import subprocess

import pytest
from runs import PY, ROOT, env

# What the lent GPU machine lacks once the wheels of ../shared/tools/gpu-wheels.sh (DALI, Hydra, OmegaConf,
# antlr) are installed there: the Slurm sweep launcher. Imports of these fail in the scripts' processes.
ABSENT_ON_GPU_MACHINE = ("submitit", "hydra_plugins.hydra_submitit_launcher")

BLOCKER = f'''
import importlib.abc, sys
class _Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == m or name.startswith(m + ".") for m in {ABSENT_ON_GPU_MACHINE!r}):
            raise ModuleNotFoundError(f"No module named {{name!r}} (absent on the GPU machine)")
sys.meta_path.insert(0, _Absent())
'''


@pytest.fixture(scope="module")
def gpu_machine_env(tmp_path_factory):
    site = tmp_path_factory.mktemp("site")
    (site / "sitecustomize.py").write_text(BLOCKER)
    return env(PYTHONPATH=str(site), PYTHON=PY, OUT=str(tmp_path_factory.mktemp("out")))


def test_the_blocker_hides_what_the_gpu_machine_lacks(gpu_machine_env):
    res = subprocess.run([PY, "-c", "import submitit"], capture_output=True, text=True, env=gpu_machine_env)
    assert res.returncode == 1 and "absent on the GPU machine" in res.stderr


@pytest.mark.slow
@pytest.mark.parametrize("script, steps", [
    ("gpu_check.sh", ["pytest_gpu", "smoke_dali_gpu", "smoke_dali_cpu", "smoke_torch"]),
    ("gpu_speed.sh", ["x50_bf16", "x101_bf16", "x101_fp16", "x50_b32", "x50_methods", "data", "e2e", "x50_compile"]),
])
def test_gpu_script_dry_run_checks_every_step(gpu_machine_env, script, steps):
    """--dry-run: every bench step's options parsed, every training's overrides composed, the GPU tests
    collected (all of them import without submitit), each recorded ok in the summary table."""
    res = subprocess.run(["bash", str(ROOT / "bench" / script), "--dry-run"], capture_output=True, text=True,
                         env=gpu_machine_env, cwd=ROOT, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    table = re.findall(r"^\| (\S+) \| (.+?) \| \d+ \|$", res.stdout, re.MULTILINE)
    assert table == [(s, "ok") for s in steps]
    if script == "gpu_check.sh":
        collected = re.search(r"(\d+)/\d+ tests collected", res.stdout)
        assert collected and int(collected.group(1)) >= 16, res.stdout


@pytest.mark.parametrize("script", ["gpu_check.sh", "gpu_speed.sh"])
def test_gpu_script_refuses_an_unknown_argument(script, tmp_path):
    res = subprocess.run(["bash", str(ROOT / "bench" / script), "--fast"], capture_output=True, text=True,
                         env=env(OUT=str(tmp_path)), cwd=ROOT, timeout=60)
    assert res.returncode == 2 and res.stderr.strip() == "error: unknown argument '--fast' (valid: --dry-run, --help)"


def test_a_bench_dry_run_parses_and_measures_nothing(tmp_path):
    out = tmp_path / "r.json"
    res = subprocess.run([PY, "-m", "resnext.bench", "--out", str(out), "--dry-run", "train", "--model",
                          "resnext101_32x4d", "--bn-batch", "32"], capture_output=True, text=True, env=env(),
                         cwd=ROOT, timeout=120)
    assert res.returncode == 0 and "bn_batch=32" in res.stdout and "model=resnext101_32x4d" in res.stdout
    assert not out.exists()
    bad = subprocess.run([PY, "-m", "resnext.bench", "--dry-run", "train", "--modle", "x"], capture_output=True,
                         text=True, env=env(), cwd=ROOT, timeout=120)
    assert bad.returncode == 2 and "unrecognized arguments: --modle x" in bad.stderr
