"""asv: the configuration against asv's own keys, `asv check`, the benchmarks as asv discovers them
(real cells only, the thread count, asv's units), and regression detection end to end."""
import ast
import dataclasses
import json
import site
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import torch

import impls
from bench import grid

REPO = Path(__file__).resolve().parent.parent
ASV = [sys.executable, "-m", "asv"]
CELL = next(c.label() for c in grid.expand(grid.DEFAULT_GRID)
            if c.label().startswith("linreg/vectorized/cpu/resident/w0/b10/"))  # at this machine's threads
STEP = r"Step.time_step\('linreg/vectorized/cpu/resident/w0/b10"
# the benchmarks and asv's units: the report maps each to its linbench metric
UNITS = {"Step.time_step": "seconds", "CudaStep.track_step": "seconds", "Epoch.track_epoch_s": "seconds",
         "Epoch.peakmem_epoch": "bytes", "Loader.track_loader_epoch_s": "seconds",
         "Compile.track_compile_s": "seconds", "CudaMemory.track_cuda_peak": "bytes",
         "Instructions.track_instructions": "instructions"}


def asv_schema() -> dict:
    """A JSON schema of asv.conf.json made from asv's own Config: its keys, with the types of their defaults."""
    from asv.config import Config

    types = {str: "string", int: "integer", float: "number", bool: "boolean", list: "array", dict: "object"}
    props = {"version": {"const": Config.api_version}, "build_cache_size": {"type": "integer"}}
    for key, default in vars(Config()).items():
        props[key] = {"type": [types[type(default)], "null"]} if type(default) in types else {}
    props["branches"] = {"type": "array", "items": {"type": "string"}, "minItems": 1}
    props["regressions_thresholds"] = {"type": "object", "additionalProperties": {"type": "number"}}
    return {"type": "object", "properties": props, "required": ["version", "repo"], "additionalProperties": False}


def test_asv_conf_matches_asv_schema():
    conf = json.loads((REPO / "asv.conf.json").read_text())
    jsonschema.validate(conf, asv_schema())
    assert conf["benchmark_dir"].startswith("bench/")
    with pytest.raises(jsonschema.ValidationError):  # the schema is strict: a misspelt key is caught
        jsonschema.validate({**conf, "default_benchmark_timout": 60}, asv_schema())


def discovered(monkeypatch) -> dict:
    """The benchmarks as asv's own discovery sees them, by class.method."""
    from asv_runner.discovery import disc_benchmarks

    monkeypatch.syspath_prepend(str(REPO / "bench"))
    return {b.name.split(".", 1)[1]: b for b in disc_benchmarks(str(REPO / "bench" / "asv_benchmarks"))}


def test_asv_combinations_are_real_cells_in_asv_units(monkeypatch):
    cells = {c.label(): c for c in grid.expand(grid.DEFAULT_GRID)}
    runs_somewhere = {label for label, c in cells.items()  # in one process: several ranks are linbench run's
                      if c.device in impls.form_class(c.model, c.form).devices and c.world_size == 1}
    found = discovered(monkeypatch)
    assert {name: b.unit for name, b in found.items()} == UNITS
    for name, b in found.items():
        assert b.param_names == ["cell"], name
        labels = [ast.literal_eval(v) for v in b.params[0]]
        assert len(labels) == len(set(labels)), name
        if name.startswith("Instructions."):  # counted at one thread: the CPU step cells' labels at t1
            assert set(labels) == {dataclasses.replace(c, threads=1).label() for c in cells.values()
                                   if c.label() in runs_somewhere and c.device == "cpu" and c.loader == "resident"}
        elif name.startswith("Loader."):  # a loader: its cells' label with the form read as "any"
            assert {dataclasses.replace(c, form="any").label()
                    for c in cells.values() if c.label() in runs_somewhere} == set(labels)
        else:
            assert set(labels) <= runs_somewhere, name
    assert set(ast.literal_eval(v) for v in found["Epoch.track_epoch_s"].params[0]) == runs_somewhere


def test_asv_step_is_one_steady_step_per_call_and_a_cell_not_runnable_here_says_why(monkeypatch):
    from bench.asv_benchmarks import bench_training

    form = impls.form_class("linreg", "vectorized")
    sizes, one = [], form.step
    monkeypatch.setattr(form, "step", lambda self, X, y: sizes.append(len(y)) or one(self, X, y))
    bench_training.one_step.cache_clear()
    step = bench_training.Step()
    step.setup(CELL)
    sizes.clear()  # the warm-up
    step.time_step(CELL)
    step.setup(CELL)  # asv re-runs setup before every timed call: the warm cell is kept
    step.time_step(CELL)
    assert sizes == [10, 10]
    bench_training.one_step.cache_clear()
    if not torch.cuda.is_available():
        with pytest.raises(NotImplementedError, match="no CUDA device"):
            bench_training.CudaStep().setup(CELL.replace("cpu", "cuda"))


def run(*args, cwd=REPO, timeout=600):
    return subprocess.run([*ASV, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def test_asv_check_passes():
    run("machine", "--yes")
    out = run("check", "-E", "existing:same")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "No problems found" in out.stdout


def git(*args, cwd):
    subprocess.run(["git", "-c", "user.name=linbench", "-c", "user.email=linbench@localhost", *args], cwd=cwd,
                   check=True, capture_output=True)


@pytest.mark.slow
def test_asv_continuous_flags_a_2x_slower_form_and_not_an_unchanged_commit(tmp_path):
    clone = tmp_path / "clone"
    git("clone", "-q", str(REPO), str(clone), cwd=tmp_path)
    conf = json.loads((clone / "asv.conf.json").read_text())
    # the per-commit environment sees this venv's torch through a .pth file instead of a 5 GB install
    host = site.getsitepackages()[0]
    conf.update(repo=str(clone), benchmark_dir=str(clone / conf["benchmark_dir"]), env_dir=str(tmp_path / "env"),
                results_dir=str(tmp_path / "results"), html_dir=str(tmp_path / "html"),
                install_command=[
                    "in-dir={env_dir} python -c \"import site, sys; open(site.getsitepackages()[0] + "
                    "'/host-packages.pth', 'w').write(sys.argv[1])\" " + host,
                    "in-dir={env_dir} python -m pip install --no-deps {wheel_file}"])
    config = tmp_path / "asv.conf.json"
    config.write_text(json.dumps(conf))
    vectorized = clone / "impls" / "vectorized.py"
    source = vectorized.read_text()
    step = "    def step(self, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:\n"
    assert step in source
    # every call does the step twice: exactly twice the work, whatever the machine's load
    twice = "    def step(self, X, y):\n        self._step(X, y)\n        return self._step(X, y)\n\n"
    vectorized.write_text(source.replace(step, twice + step.replace("def step", "def _step"), 1))
    git("commit", "-qam", "a planted slowdown", cwd=clone)
    (clone / "README.md").write_text((clone / "README.md").read_text() + "\nA change that changes no speed.\n")
    git("commit", "-qam", "no speed change", cwd=clone)
    run("machine", "--yes", "--config", str(config), cwd=clone)

    slower = run("continuous", "--config", str(config), "-f", "1.5", "-b", STEP, "HEAD~2", "HEAD~1", cwd=clone)
    assert slower.returncode != 0, slower.stdout + slower.stderr
    assert "PERFORMANCE DECREASED" in slower.stdout and f"Step.time_step('{CELL}')" in slower.stdout

    same = run("continuous", "--config", str(config), "-f", "1.5", "-b", STEP, "HEAD~1", "HEAD", cwd=clone)
    assert same.returncode == 0, same.stdout + same.stderr
    assert "PERFORMANCE DECREASED" not in same.stdout
