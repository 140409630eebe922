"""The runner: grid and skip rules, the gate before the clock, honest timing, interruption and resume."""
import csv
import math
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

import impls
from bench import UserError, grid
from bench.defaults import ALL_FORMS
from bench.grid import Cell
from bench.loaders import make_loader
from bench.report.analysis import derived
from bench.runs.run_folder import GATE, RESULTS, read_meta, read_results, read_samples
from bench.timing import runner
from bench.timing.timer import time_autorange, time_repeats
from impls.contract import Setup
from impls.models import MODELS
from tests.conftest import default_sigint, run_cli


def cell(**kw):
    base = dict(model="softmax", form="module", device="cpu", loader="resident", workers=0, batch_size=256,
                threads=torch.get_num_threads())
    return Cell(**{**base, **kw})


@pytest.mark.parametrize("kw,reason", [
    (dict(loader="resident", workers=2), "resident loader has no workers"),
    (dict(form="loop", device="cuda"), "loop runs on cpu only"),
    (dict(model="linreg", batch_size=4096), "larger than the 1000 training examples"),
])
def test_skip_rules(kw, reason):
    assert reason in grid.skip_reason(cell(**kw))


def test_cuda_cells_skip_without_a_gpu():
    if torch.cuda.is_available():
        assert grid.skip_reason(cell(device="cuda")) is None
    else:
        assert grid.skip_reason(cell(device="cuda")) == "no CUDA device on this machine"


def test_no_skip_for_a_plain_cell_and_loop_is_capped():
    assert grid.skip_reason(cell(loader="tensor", workers=2)) is None
    assert grid.sample_cap(cell(form="loop")) == impls.form_class("softmax", "loop").sample_cap == 1280
    assert grid.sample_cap(cell()) is None


def test_default_grid_holds_every_baseline_and_every_form():
    cells = grid.expand(grid.DEFAULT_GRID)
    keys = {c.key() for c in cells}
    assert len(keys) == len(cells)
    for base in grid.baselines().values():  # every model's, from its spec
        assert Cell(**base, threads=torch.get_num_threads()).key() in keys  # at torch's own thread count
    assert {c.form for c in cells} == set(impls.FORM_MODULES)


def test_overrides_replace_an_axis_everywhere():
    cells = grid.expand(grid.DEFAULT_GRID, {"model": ["linreg"], "batch_size": [5, 20]})
    assert {c.model for c in cells} == {"linreg"} and {c.batch_size for c in cells} == {5, 20}


@pytest.mark.parametrize("overrides,message", [
    ({"model": ["ridge"]}, "unknown model"), ({"loader": ["hdf5"]}, "unknown loader"),
    ({"workers": [-1]}, "--workers must be >= 0"), ({"batch_size": [0]}, "must be positive"),
    ({"model": ["linreg"], "batch_size": [1001]}, "larger than the data"),
])
def test_validate_refuses_bad_axes(overrides, message):
    with pytest.raises((UserError, impls.UnknownName), match=message):
        grid.validate(overrides)


@pytest.mark.parametrize("model, image_size", [("linreg", 28), ("softmax", 28), ("softmax", 64)])
def test_every_loader_yields_the_same_batches(model, image_size, real_data):
    """At 64 pixels: the torchvision loader resizes each image as it goes, the others hold the split resized
    once by the same transform."""
    batch = 10 if model == "linreg" else 512
    model = MODELS[model].at(image_size)
    reference = None
    for kind, workers in [("resident", 0), ("tensor", 0), ("tensor", 2), ("torchvision", 0)]:
        loader = make_loader(kind, model, batch, workers)
        for _ in range(2):  # the second epoch is a new permutation, the same for every kind
            batches = [b for _, b in zip(range(3), loader)]
        if reference is None:
            reference = batches
        for (X, y), (X0, y0) in zip(batches, reference):
            assert torch.equal(X.reshape(X0.shape), X0) and torch.equal(y.reshape(y0.shape), y0), (kind, workers)
            assert X0[0].numel() == model.widths[0]  # 4,096 inputs at 64 pixels


def test_timer_measures_a_known_sleep():
    stats = time_repeats(lambda: time.sleep(0.05), repeats=5, warmup=1)
    assert stats.n == 5 and abs(stats.median - 0.05) / 0.05 < 0.03
    auto = time_autorange(lambda: time.sleep(0.01), min_run_time=0.2)
    assert abs(auto.median - 0.01) / 0.01 < 0.05


class Wrong(impls.form_class("linreg", "vectorized")):
    """A planted bug: a learning rate 1% too large."""

    def __init__(self, params, setup):
        super().__init__(params, Setup(setup.lr * 1.01, setup.device))


def test_the_gate_blocks_a_wrong_form_from_the_clock(tmp_path, monkeypatch):
    import types

    monkeypatch.setitem(sys.modules, "planted_form", types.SimpleNamespace(FORM=Wrong))
    monkeypatch.setitem(impls.FORM_MODULES, "planted", "planted_form")
    config = runner.RunConfig(grid=[dict(model=["linreg"], form=["planted", "vectorized"], device=["cpu"],
                                         loader=["resident"], workers=[0], batch_size=[10])],
                              repeats=1, quick=True, gate_steps=20)
    store, cells = runner.start(config, tmp_path)
    frame = runner.execute(store, config, cells, progress=False).set_index("form")
    assert frame.loc["planted", "status"] == "failed-equivalence"
    assert "out of tolerance" in frame.loc["planted", "reason"]
    assert math.isnan(frame.loc["planted", "samples_per_s"])  # never timed
    assert frame.loc["vectorized", "status"] == "ok" and frame.loc["vectorized", "samples_per_s"] > 0
    gate = pd.read_csv(store.folder / GATE)
    assert set(gate["status"]) == {"pass", "fail"}


def linbench(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "bench.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def rows_of(folder):
    path = folder / RESULTS
    return list(csv.DictReader(path.open())) if path.exists() else []


def test_sigint_keeps_finished_cells_and_resume_completes_without_duplicates(tmp_path):
    args = ["run", "--models", "linreg", "--forms", "loop", "--devices", "cpu", "--loaders", "resident",
            "--workers", "0", "--batch-sizes", "1,2,3,4,5,6,7,8", "--repeats", "25", "--out", str(tmp_path),
            "--no-progress", "--no-report"]
    proc = linbench(*args, preexec_fn=default_sigint)
    deadline = time.time() + 120
    folder = None
    while time.time() < deadline and proc.poll() is None:
        folders = [p for p in tmp_path.iterdir() if p.is_dir()]
        if folders and any(r["status"] == "ok" for r in rows_of(folders[0])):
            folder = folders[0]
            break
        time.sleep(0.02)
    assert folder is not None, "no cell finished in time"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "--resume" in err
    kept = rows_of(folder)
    assert 1 <= len(kept) < 8
    proc = linbench("run", "--resume", str(folder), "--no-progress", "--no-report")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    final = rows_of(folder)
    assert sorted(int(r["batch_size"]) for r in final) == [1, 2, 3, 4, 5, 6, 7, 8]
    assert all(r["status"] == "ok" for r in final)
    by_batch = {r["batch_size"]: r for r in final}
    for r in kept:  # finished cells are kept as they were, not re-run
        assert by_batch[r["batch_size"]]["samples_per_s"] == r["samples_per_s"]
    assert not [p for p in folder.iterdir() if p.name.startswith(".")], "no temporary files left behind"


def test_quick_run_writes_results_metadata_and_summary(tmp_path, real_data):
    # --repeats 1: each cell's timed epochs and loader passes at least once, then as the rule goes (the 6 s
    # baseline epoch once); what is tested is what a quick run writes, not its intervals
    proc = linbench("run", "--quick", "--repeats", "1", "--out", str(tmp_path / "results"), "--no-progress",
                    "--report-dir", str(tmp_path / "reports"), env=dict(os.environ, COLUMNS="100"))
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    folder = next((tmp_path / "results").iterdir())
    frame = read_results(folder)
    meta = read_meta(folder)
    assert set(frame["status"]) <= {"ok", "skipped"}
    ok = frame[frame["status"] == "ok"]
    assert set(ok["form"]) == {f for f in ALL_FORMS if not impls.unavailable("softmax", f, "cpu")}
    assert (ok["samples_per_s"] > 0).all() and (ok["epoch_roofline_frac"] > 0).all()
    assert "speedup" not in frame  # the store keeps what was measured; the report derives the rest
    assert derived(ok, read_samples(folder))["speedup"].notna().all()
    assert meta["env"]["torch"] == torch.__version__ and meta["peaks"]["cpu"]["gflops"] > 0
    assert "speedup" in out and "fastest softmax on cpu" in out
    table = out.split("fastest ")[0].splitlines()  # the summary: skipped cells one line a reason
    # every line within 100 columns (the run's folder named in full, wherever it is)
    assert all(len(line) <= 100 for line in (out + err).replace(str(tmp_path), "T").splitlines()), out + err
    skipped = frame[frame["status"] == "skipped"]
    if len(skipped):
        assert f"{len(skipped)} not timed:" in out and len(table) == len(ok) + 2 + skipped["reason"].nunique()
    curves = pd.read_csv(folder / "curves.csv")
    assert set(curves["epoch"]) == {1, 2} and (curves["test_acc"] > 0.7).all()  # d2l: ~0.79 after one epoch
    assert (tmp_path / "reports" / folder.name / "index.html").exists()


BAD_RUNS = [
    ["--models", "ridge"], ["--forms", "fortran"], ["--loaders", "hdf5"], ["--batch-sizes", "0"],
    ["--batch-sizes", "70000"], ["--workers", "-1"], ["--workers", "two"], ["--repeats", "0"],
    ["--resume", "/nonexistent/run"], ["--out", "/proc/linbench-results"],
]
if not torch.cuda.is_available():
    BAD_RUNS.append(["--devices", "cuda"])


@pytest.mark.parametrize("args", BAD_RUNS, ids=" ".join)
def test_bad_run_input_is_one_line_and_exit_2(args, tmp_path, monkeypatch, capsys):
    """Through ``main`` in this process; the first one also through the command, in a process of its own."""
    monkeypatch.chdir(tmp_path)
    if args == BAD_RUNS[0]:
        proc = linbench("run", *args, cwd=tmp_path)
        _, err = proc.communicate(timeout=120)
        code = proc.returncode
    else:
        code, err = run_cli(capsys, "run", *args)
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("linbench: error:") and "Traceback" not in err


def test_compiled_cells_at_ragged_batch_sizes_run_and_compiles_are_logged_per_form(tmp_path, real_data):
    config = runner.RunConfig(grid=[dict(model=["linreg"], form=["compiled"], device=["cpu"], loader=["resident"],
                                         workers=[0], batch_size=[1, 9, 37])],
                              repeats=1, quick=True, gate_steps=5, curves_epochs=0)
    store, cells = runner.start(config, tmp_path)
    frame = runner.execute(store, config, cells, progress=False)
    assert list(frame["status"]) == ["ok"] * 3, frame["reason"].tolist()
    log = store.meta["compiles"]["linreg/compiled/cpu"]
    assert 1 <= len(log) <= 2 and all(e["seconds"] > 0 for e in log)
    # the gate ran every batch size (and its batch of 1) first, so no cell compiled inside its timed passes
    assert (frame["compile_s"] == 0).all()
    gate = pd.read_csv(store.folder / GATE)
    assert list(gate["batch_size"]) == [1, 9, 37] and set(gate["status"]) == {"pass"}


class CompiledNothing(impls.form_class("linreg", "compiled")):
    """The compiled form with torch.compile taken out: the same step, run eagerly, and nothing in its log."""
    def step(self, X, y):
        return self.compiled._step(self.params, self.lr, X.reshape(len(X), -1), y.reshape(-1, 1))

    def compile_log(self):
        return []


def test_a_compiling_form_that_runs_eagerly_is_flagged(tmp_path, monkeypatch, real_data):
    import types

    from bench.runs.summary import compact

    monkeypatch.setitem(sys.modules, "planted_eager", types.SimpleNamespace(FORM=CompiledNothing))
    monkeypatch.setitem(impls.FORM_MODULES, "uncompiled", "planted_eager")
    config = runner.RunConfig(grid=[dict(model=["linreg"], form=["compiled", "uncompiled", "module"], device=["cpu"],
                                         loader=["resident"], workers=[0], batch_size=[10])],
                              repeats=1, quick=True, gate_steps=5, curves_epochs=0)
    store, cells = runner.start(config, tmp_path)
    with torch.compiler.set_stance("force_eager"):  # dynamo runs the compiled form's step eagerly
        frame = runner.execute(store, config, cells, progress=False).set_index("form")
    assert (frame["status"] == "ok").all(), frame["reason"].tolist()
    assert frame.loc["compiled", "eager"] is True and "ran no compiled graph" in frame.loc["compiled", "reason"]
    assert frame.loc["uncompiled", "eager"] is True and "nothing compiled" in frame.loc["uncompiled", "reason"]
    assert pd.isna(frame.loc["module", "eager"])  # a form that does not compile
    lines = compact(read_results(store.folder))
    assert sum(line.rstrip().endswith("EAGER") for line in lines) == 2, lines
    config.overrides = {"form": ["compiled"]}
    store, cells = runner.start(config, tmp_path / "compiled")
    row = runner.execute(store, config, cells, progress=False).iloc[0]  # dynamo as usual: the graphs run
    assert row["eager"] in (False,) and "EAGER" not in row["reason"], row["reason"]


def test_curves_trained_beside_are_those_trained_in_the_run(real_data):
    """A run of many curve epochs trains them in a process of its own beside the gate (bench.curves.Beside): the
    same curves as the run's own process trains (to the last digits a thread count may move), and a failing gate
    ends that process at once."""
    from bench.curves import Beside, _trained, beside

    key = grid.parse_label("softmax/vectorized/cpu/resident/w0/b256/t1").gate_key()
    (gate, got) = beside(Beside([key], 1, 0, None), lambda: "gated")
    want = _trained([key], 1, 0, None)
    assert gate == "gated" and got is not None
    for a, b in zip(got[key][0], want[key][0]):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["test_acc"] == pytest.approx(b["test_acc"], abs=0.005)
    started = time.perf_counter()
    with pytest.raises(ZeroDivisionError):
        beside(Beside([key] * 20, 10, 0, None), lambda: 1 / 0)  # 200 epochs: not waited for
    assert time.perf_counter() - started < 30
