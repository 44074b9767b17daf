"""The package's imports point one way: no module imports one that (directly or not) imports it back."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "resnext"


def import_graph() -> dict[str, set[str]]:
    """resnext module -> the resnext modules it imports, at module level or inside functions (a deferred
    import is still a dependency)."""
    files = {}
    for f in PACKAGE.rglob("*.py"):
        parts = f.relative_to(PACKAGE.parent).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    graph = {}
    for name, f in files.items():
        package = name if f.name == "__init__.py" else name.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                deps |= {t for t in [target, *(f"{target}.{a.name}" for a in node.names)] if t in files}
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name in files}
        graph[name] = deps - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state, path = [], {}, []

    def visit(n: str) -> None:
        state[n] = "open"
        path.append(n)
        for d in sorted(graph[n]):
            if state.get(d) == "open":
                found.append(path[path.index(d):] + [d])
            elif d not in state:
                visit(d)
        path.pop()
        state[n] = "done"

    for n in sorted(graph):
        if n not in state:
            visit(n)
    return found


def test_the_checker_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c", "a"]]


def test_no_import_circles():
    graph = import_graph()
    assert len(graph) > 40 and "resnext.plan" in graph["resnext.session"]
    assert cycles(graph) == []


#: The library's layers, bottom up, as the README's "How the code is laid out" draws them: a module imports
#: from its own layer and those below only. Everything else (train.py's compose, the programs) sits on top.
LAYERS = [
    {"errors", "crops", "lamb", "schedule", "models", "requeue"},  # models never see the config
    {"data", "optim", "outputs", "footprint"},
    {"config"},  # the schema: its choice lists come from the modules that own them
    {"plan"},
    {"engine"},  # the loop takes built parts
    {"session"},
]


def test_the_library_imports_point_down_its_layers():
    graph = import_graph()
    layer = {name: i for i, names in enumerate(LAYERS) for name in names}
    top = len(LAYERS)
    for name, deps in graph.items():
        own = layer.get(name.split(".")[1] if "." in name else "", top)
        up = {d for d in deps if layer.get(d.split(".")[1], top) > own and own < top}
        assert not up, (name, up)
    assert set().union(*LAYERS) | {"compose", "bench", "evaluate", "export", "info", "launch", "loading",
                                    "predict", "report", "report_groups", "report_plots", "report_runs",
                                    "status"} == {n.split(".")[1] for n in graph if "." in n}  # every module placed


def test_composing_a_command_does_not_import_torchvision():
    """torchvision costs about a second of start-up: train.py --help / --cfg job and every check of a command
    (resnext.compose, the model table) must not load it; the code that uses it imports it where it runs."""
    import subprocess
    import sys

    code = "import sys, resnext.compose, resnext.models; print(sorted(m for m in sys.modules if m.startswith('torchvision')))"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(PACKAGE.parent), "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0 and res.stdout.strip() == "[]", res.stdout + res.stderr


def test_one_run_is_composed_once_and_validated_once(tmp_path, monkeypatch, capsys):
    """train.py on a single run: Hydra composes the command once (the config and its run directory
    together) and the session validates it once, before anything is written (here it refuses: one line,
    exit 2, no run directory)."""
    import importlib.util
    import sys

    import hydra
    import pytest

    import resnext.session

    calls = {"compose": 0, "validate": 0}
    compose, validate = hydra.compose, resnext.session.validate

    def counted_compose(*a, **kw):
        calls["compose"] += 1
        return compose(*a, **kw)

    def counted_validate(*a, **kw):
        calls["validate"] += 1
        return validate(*a, **kw)

    monkeypatch.setattr(hydra, "compose", counted_compose)
    monkeypatch.setattr(resnext.session, "validate", counted_validate)
    spec = importlib.util.spec_from_file_location("train_script", PACKAGE.parents[1] / "train.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    run = tmp_path / "run"
    monkeypatch.setattr(sys, "argv", ["train.py", "+recipe=resnext29_demo_digits", "data.pad=-1", f"hydra.run.dir={run}"])
    with pytest.raises(SystemExit) as e:
        script.start()
    assert e.value.code == 2 and calls == {"compose": 1, "validate": 1}
    assert capsys.readouterr().err == "error: data.pad=-1 must be >= 0 (0 = no padding)\n" and not run.exists()


def test_a_sweep_composes_each_point_once_and_checks_all_before_any_trains(tmp_path, monkeypatch, capsys):
    """train.py -m: Hydra's main with the checked sweeper (src/hydra_plugins/resnext_sweeper): each point is
    composed once (Hydra's own sweeper composed each twice, and train.py's check a third time) and the
    launcher trains it from that config; a point that fails its check stops the sweep in one line, exit 2,
    before any point trains or the multirun folder is made."""
    import importlib.util
    import sys

    import pytest
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from runs import TINY, records

    composed = []
    load = ConfigLoaderImpl.load_sweep_config

    def counted(self, master_config, sweep_overrides):
        composed.append(tuple(o for o in sweep_overrides if o.startswith("model.cardinality")))
        return load(self, master_config, sweep_overrides)

    monkeypatch.setattr(ConfigLoaderImpl, "load_sweep_config", counted)

    def train_py(*argv: str) -> None:  # as `python train.py ARGV`: Hydra finds conf/ beside the __main__ file
        monkeypatch.setattr(sys, "argv", ["train.py", *argv])
        spec = importlib.util.spec_from_file_location("__main__", PACKAGE.parents[1] / "train.py")
        spec.loader.exec_module(importlib.util.module_from_spec(spec))

    fixed = [o for o in TINY if not o.startswith("model.cardinality=")] + [
        "trainer.epochs=1", "trainer.max_steps_per_epoch=1", "trainer.threads=1"]
    threads = __import__("torch").get_num_threads()
    try:
        # a sweep folder named by the time (microseconds): every point lands in the one the sweep started
        train_py("-m", *fixed, f"hydra.sweep.dir={tmp_path}/sweep-${{now:%H%M%S%f}}", "model.cardinality=1,2")
        assert composed == [("model.cardinality=1",), ("model.cardinality=2",)]
        [sweep] = tmp_path.glob("sweep-*")
        assert (sweep / "multirun.yaml").is_file()
        for c in (1, 2):
            assert records(sweep / f"model.cardinality={c}", "end")[-1]["status"] == "finished"
        capsys.readouterr()
        composed.clear()
        with pytest.raises(SystemExit) as e:
            train_py("-m", *fixed, f"hydra.sweep.dir={tmp_path / 'bad'}", "model.cardinality=2,0")
    finally:
        __import__("torch").set_num_threads(threads)
    assert e.value.code == 2 and not (tmp_path / "bad").exists() and len(composed) == 2
    assert capsys.readouterr().err == "error: model.cardinality=0: model.cardinality must be an integer >= 1, got 0\n"
    with pytest.raises(SystemExit) as e:  # the sweep given as Hydra's sweeper parameters: the same check
        train_py("-m", *fixed, f"hydra.sweep.dir={tmp_path / 'bad'}", "hydra.sweeper.params={model.cardinality:'2,0'}")
    assert e.value.code == 2 and not (tmp_path / "bad").exists()
    assert capsys.readouterr().err == "error: model.cardinality=0: model.cardinality must be an integer >= 1, got 0\n"
