"""Reports: built from run folders the tests write (partial and empty ones too), checked in Chromium."""
import json
import math
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from bench import cli
from bench.curves import train_curves
from bench.data import LABELS
from bench.gate.check import key_of
from bench.grid import AXES, AXIS
from bench.regress.verdicts import compare_runs
from bench.report import figures, shot, sources
from bench.report import page as report
from bench.runs.run_folder import COLUMNS, CURVES, PREDICTIONS, SAMPLE_COLUMNS, SAMPLES, SCHEMA, Run
from bench.runs.store import Store
from bench.timing import runner

CHROMIUM = shot.chromium()


def write_run(folder, rows, **meta):
    """A run folder in the runner's own schema (Store), holding ``rows`` over the given axes."""
    meta = {"schema": SCHEMA, "run_id": folder.name, "config": {},
            "env": {"cpu": "test cpu", "threads": 2, "commit": "abc123", "torch": "x"},
            "peaks": {"cpu": {"gflops": 100.0, "gbps": 20.0}}, **meta}
    folder.mkdir(parents=True)
    store = Store(folder, meta)
    for r in rows:
        row = {c: math.nan for c in COLUMNS}
        row.update({"threads": 2, "reason": "", **r})
        store.put(row)
    store.write()
    return folder


def ok_row(form, batch, rate, loader="resident", workers=0, model="softmax"):
    return dict(model=model, form=form, device="cpu", loader=loader, workers=workers, batch_size=batch, status="ok",
                samples_per_s=rate, epoch_s=60000 / rate, epoch_s_iqr=0.01, n=3, step_ms=1.0, loader_epoch_s=0.01,
                gflops=10.0, gbps=5.0, roofline_frac=0.1, epoch_roofline_frac=0.05, peak_rss_mb=900.0,
                rss_growth_mb=5.0, compile_s=1.0 if form == "compiled" else math.nan)  # NaN: nothing compiled


def full_rows(scale=1.0):
    rows = [ok_row(f, b, scale * r * b) for f, r in [("module", 100), ("compiled", 150)] for b in (64, 256, 1024)]
    rows += [ok_row("module", 256, scale * (w + 1) * 1000, "torchvision", w) for w in (0, 2, 4)]
    rows += [dict(model="softmax", form="loop", device="cuda", loader="resident", workers=0, batch_size=256,
                  status="skipped", reason="loop runs on cpu only"),
             dict(model="softmax", form="vectorized", device="cpu", loader="resident", workers=0, batch_size=256,
                  status="failed-equivalence", reason="W[3, 4]: got 1, oracle 2"),
             dict(model="linreg", form="compiled", device="cpu", loader="resident", workers=0, batch_size=10,
                  status="error", reason="RuntimeError: out of memory")]
    return rows


def test_full_report_has_every_figure_and_table(tmp_path):
    run = write_run(tmp_path / "run-a", full_rows(), curves_skipped={"loop on cpu": "too slow for 10 epochs"})
    pd.DataFrame([dict(form="module", device="cpu", epoch=e, train_loss=1 / e, train_acc=0.7, test_acc=0.75,
                       seconds=e) for e in (1, 2)]).to_csv(run / CURVES, index=False)
    index = report.build([Run(run)], tmp_path / "out")
    page = index.read_text()
    for name in ("throughput_vs_batch_size", "epoch_time_vs_workers", "where_the_time_goes", "roofline",
                 "compile_time_and_memory", "training_curves"):
        assert f'src="figures/{name}.png"' in page and (tmp_path / "out" / "figures" / f"{name}.png").stat().st_size > 0
    assert "fastest softmax on cpu: compiled" in page and "speedup" in page
    assert "failed-equivalence" in page and "W[3, 4]" in page and "loop runs on cpu only" in page
    assert "RuntimeError: out of memory" in page and "the run has no gate.csv" in page
    assert "Not trained: loop on cpu: too slow for 10 epochs" in page
    assert "Not shown: prediction grid: the run has no predictions.csv" in page  # missing parts are said
    results = pd.read_csv(tmp_path / "out" / "tables" / "results.csv")  # timed or failed: the skipped one is not
    assert len(results) == len(full_rows()) - 1 and "skipped" not in set(results["status"])
    shown = [a for a in AXES if AXIS[a].implicit is None]  # an axis at its implicit value in every row is left out
    assert list(results.columns[:len(shown) + 3]) == [*shown, "status", "samples_per_s", "epoch_s"]  # key columns first
    assert "cuda_peak_mb" not in results.columns  # no cell has it: left out of the table
    assert len(pd.read_csv(tmp_path / "out" / "tables" / "not_timed.csv")) == 3  # every cell not timed
    environment = pd.read_csv(tmp_path / "out" / "tables" / "environment.csv")  # one run: one column of values
    assert list(environment.columns) == ["key", "value"] and '<tr class="differs">' not in page
    headline = pd.read_csv(tmp_path / "out" / "tables" / "headline.csv")
    assert headline[["form", "batch_size"]].values.tolist() == [["compiled", 1024]]
    assert headline["speedup"].iloc[0] == pytest.approx(150 * 1024 / 5000)  # over torchvision w4 module b256
    assert pd.read_csv(tmp_path / "out" / "tables" / "training.csv")["epochs"].tolist() == [2]
    md = (tmp_path / "out" / "report.md").read_text()
    assert md.count("](figures/") == 6 and "| softmax | cpu | compiled |" in md
    assert "Every cell not timed, one row each: [not_timed.csv](tables/not_timed.csv)" in md


def section(page, title):
    """The HTML of one section of the page: from its heading to the next."""
    start = page.index(f">{title}</h2>")
    end = page.find("<h2", start)
    return page[start:end if end > 0 else len(page)]


def test_skipped_cells_are_listed_once_one_row_per_reason(tmp_path):
    cuda = [dict(model=m, form=f, device="cuda", loader=loader, workers=0, batch_size=256, status="skipped",
                 reason="no CUDA device on this machine")
            for m in ("linreg", "softmax") for f in ("module", "compiled") for loader in ("resident", "tensor")]
    run = write_run(tmp_path / "run", full_rows() + cuda + [{**cuda[0], "form": "loop", "loader": "tensor",
                                                             "reason": "loop runs on cpu only"}])
    page = report.build([Run(run)], tmp_path / "out").read_text()
    tables = tmp_path / "out" / "tables"
    assert "no CUDA device" not in section(page, "All cells") and ">skipped</td>" not in section(page, "All cells")
    assert set(pd.read_csv(tables / "results.csv")["status"]) == {"ok", "failed-equivalence", "error"}
    by_reason = pd.read_csv(tables / "not_timed_by_reason.csv")
    assert by_reason[["cells", "status", "reason"]].values.tolist() == [
        [8, "skipped", "no CUDA device on this machine"], [2, "skipped", "loop runs on cpu only"],
        [1, "failed-equivalence", "W[3, 4]: got 1, oracle 2"], [1, "error", "RuntimeError: out of memory"]]
    assert by_reason["which"].tolist() == [
        "linreg on cuda: module, compiled (4 cells); softmax on cuda: module, compiled (4 cells)",
        "softmax on cuda: loop; linreg on cuda: loop", "softmax/vectorized/cpu/resident/w0/b256/t2",
        "linreg/compiled/cpu/resident/w0/b10/t2"]
    not_timed = section(page, "Cells not timed, and why")
    assert not_timed.count("<tr") == 1 + 4 and "12 cells, one row per reason" in not_timed  # a head, 4 reasons
    assert '<a href="tables/not_timed.csv">not_timed.csv</a>' in not_timed
    every = pd.read_csv(tables / "not_timed.csv")  # every cell not timed, one row each
    assert len(every) == 12 and every["reason"].value_counts()["no CUDA device on this machine"] == 8


def drawn(monkeypatch):
    """The axes of every figure a report draws, by figure name (figures._save records them)."""
    axes, save = {}, figures._save

    def recording(fig, folder, name):
        axes[name] = [ax for ax in fig.axes if ax.get_visible()]
        return save(fig, folder, name)

    monkeypatch.setattr(figures, "_save", recording)
    return axes


def test_bar_charts_are_linear_and_compile_bars_only_for_forms_that_compile(tmp_path, monkeypatch):
    axes = drawn(monkeypatch)
    compiles = {"softmax/compiled/cpu": [{"batch_size": 64, "seconds": 2.0}, {"batch_size": 1, "seconds": 0.5}]}
    loop = {**ok_row("loop", 256, 30), "step_ms": 5000.0}  # 2000 s end to end, 1175 s compute: far past the rest
    run = write_run(tmp_path / "run", full_rows() + [loop], compiles=compiles)
    page = report.build([Run(run)], tmp_path / "out").read_text()
    ok = Run(run).results.query("status == 'ok'")
    seconds = figures.compile_seconds(ok, compiles)
    assert seconds[["model", "form", "device", "compile_s"]].values.tolist() == [["softmax", "compiled", "cpu", 2.5]]
    compile_ax, memory_ax = axes["compile_time_and_memory"]
    assert len(compile_ax.patches) == 1 and compile_ax.get_xscale() == "linear"  # module and loop did not compile
    widths = sorted(p.get_width() for p in memory_ax.patches)
    assert widths == [5.0] * 3 and memory_ax.get_xscale() == "linear"  # rss_growth_mb per form; no 900 MB peak RSS
    assert "peak_rss_mb (All cells) is not charted: it is the whole process&#x27;s peak RSS, shared by every" in page
    (breakdown,) = axes["where_the_time_goes"]
    assert breakdown.get_xscale() == "linear" and "axis cut at" in breakdown.get_xlabel()
    assert breakdown.get_xlim()[1] == pytest.approx(1.15 * 60)  # cut past the longest of the rest (torchvision w0)
    assert sorted(t.get_text() for t in breakdown.texts if "\u2192" in t.get_text()) == ["1.18e+03 \u2192",
                                                                                       "2e+03 \u2192"]
    assert [ax.get_yscale() for ax in axes["throughput_vs_batch_size"]] == ["log"]  # a line over decades: log-log
    (workers,) = axes["epoch_time_vs_workers"]  # 60 s to 0.01 s: over 30x, so log, and the label says so
    assert workers.get_yscale() == "log" and "log scale" in workers.get_ylabel()
    assert figures.span_scale([1.0, 2.0, 29.0]) == "linear" and figures.span_scale([1.0, 31.0]) == "log"
    assert figures.cut_at([30, 25, 1.4, 1.2, 0.1, 0.05]) == pytest.approx(1.15 * 1.4)
    assert figures.cut_at([3, 2, 1, 0.5]) is None and figures.cut_at([10, 1]) is None  # no minority that long


def test_a_run_with_no_compiled_form_and_no_memory_of_its_own_says_so(tmp_path, monkeypatch):
    axes = drawn(monkeypatch)
    rows = [{**r, "rss_growth_mb": math.nan} for r in full_rows() if r.get("form") != "compiled"]
    page = report.build([Run(write_run(tmp_path / "run", rows))], tmp_path / "out").read_text()
    assert "compile_time_and_memory" not in axes
    assert "Not shown: compile time and memory: no form compiled, and the run recorded no memory" in page
    assert "No timed form compiled in this run" in page and "this run recorded neither" in page


@pytest.mark.usefixtures("real_data")
def test_prediction_grid_from_the_real_test_images(tmp_path):
    run = write_run(tmp_path / "run", full_rows())
    pd.DataFrame([dict(form="module", device="cpu", index=i, true="ankle boot", predicted=p)
                  for i, p in enumerate(["ankle boot", "shirt"])]).to_csv(run / PREDICTIONS, index=False)
    page = report.build([Run(run)], tmp_path / "out").read_text()
    assert 'src="figures/predictions.png"' in page and (tmp_path / "out" / "figures" / "predictions.png").exists()


def test_empty_run_still_gives_a_readable_page(tmp_path):
    rows = [dict(model="softmax", form="module", device="cuda", loader="resident", workers=0, batch_size=256,
                 status="skipped", reason="no CUDA device on this machine")]
    page = report.build([Run(write_run(tmp_path / "empty", rows))], tmp_path / "out").read_text()
    assert "no cell was timed in this run" in page and "no CUDA device on this machine" in page
    assert "Not shown: roofline: no timed cell" in page
    assert "no softmax speedups: its baseline cell" in page
    assert "no form of a classifier was timed in this run" in page


def test_run_with_no_rows_and_an_incomplete_run_say_so(tmp_path):
    config = {"grid": [dict(model=["softmax"], form=["module", "compiled"], device=["cpu"], loader=["resident"],
                            workers=[0], batch_size=[256])], "curves_epochs": 10}
    nothing = write_run(tmp_path / "nothing", [], complete=False, config=config)
    out = tmp_path / "out"
    report.build([Run(write_run(tmp_path / "full", full_rows()))], out)
    page = report.build([Run(nothing)], out).read_text()
    assert "This run is incomplete: 0 of 2 cells finished" in page and f"--resume {nothing}" in page
    assert "no cell was timed in this run" in page and "Cells: none." in page
    assert not list((out / "figures").iterdir())  # nothing left over from the report built there before
    partial = write_run(tmp_path / "partial", full_rows()[:1], complete=False, config=config)
    page = report.build([Run(partial)], tmp_path / "out2").read_text()
    assert "stopped before its curves phase" in page and "1 of 2 cells finished" in page


def write_epochs(run, scale, cells):
    """Raw epoch samples (samples.csv) for the ``(form, batch)`` cells of ``full_rows``: 20 each, lognormal."""
    rng = np.random.default_rng(0)
    rows = [dict(model="softmax", form=form, device="cpu", loader="resident", workers=0, batch_size=batch, threads=2,
                 metric="epoch", repeat=i, seconds=scale.get((form, batch), 1.0) * t)
            for form, batch in cells for i, t in enumerate(rng.lognormal(0, 0.02, 20))]
    pd.DataFrame(rows, columns=SAMPLE_COLUMNS).to_csv(run / SAMPLES, index=False)


def test_comparison_gives_verdicts_from_raw_samples_slower_first_in_red(tmp_path):
    cells = [("module", 64), ("module", 256), ("compiled", 64)]
    a = write_run(tmp_path / "a", full_rows())
    write_epochs(a, {}, cells)
    b = write_run(tmp_path / "b", full_rows(), env={"cpu": "test cpu", "threads": 4, "commit": "def456", "torch": "x"})
    write_epochs(b, {("module", 64): 2.0, ("compiled", 64): 0.5}, cells)  # module b64 twice as slow, compiled faster
    index = report.build([Run(a), Run(b)], tmp_path / "out")
    page = index.read_text()
    diff = pd.read_csv(tmp_path / "out" / "tables" / "comparison.csv")
    assert diff["verdict"].tolist()[:3] == ["slower", "faster", "inconclusive"]  # slower first
    assert diff["cell"].iloc[0] == "softmax/module/cpu/resident/w0/b64/t2" and diff["metric"].iloc[0] == "epoch"
    assert diff["ratio"].iloc[0] == pytest.approx(2.0, rel=0.05) and diff["verdict"].tolist().count("same") == 1
    assert set(diff[diff["verdict"] == "inconclusive"]["reason"]) == {"no raw samples in a, b"}  # step, loader
    assert page.count('<tr class="worse">') == 1 and page.count('<tr class="better">') == 1
    assert "1 slower, 1 faster" in page and "torch threads 2 vs 4" in page and "commit abc123 vs def456" in page
    assert "inconclusive: the interval reaches across the band" in page and "Holm" in page
    env = pd.read_csv(tmp_path / "out" / "tables" / "environment.csv", dtype=str, keep_default_na=False)
    assert list(env.columns) == ["key", "A: a", "B: b", "differs"]  # both runs' environments, side by side
    assert env.set_index("key").loc[["threads", "commit", "cpu"]].values.tolist() == [
        ["2", "4", "yes"], ["abc123", "def456", "yes"], ["test cpu", "test cpu", ""]]
    assert section(page, "Environment").count('<tr class="differs">') == (env["differs"] == "yes").sum() == 2
    if CHROMIUM:
        check_in_chromium(index, tmp_path)


def test_comparison_of_a_cpu_run_and_a_gpu_run_joins_on_the_other_axes(tmp_path):
    a = write_run(tmp_path / "cpu", full_rows())
    b = write_run(tmp_path / "gpu", [{**r, "device": "cuda", "samples_per_s": r["samples_per_s"] * 20,
                                      "epoch_s": r["epoch_s"] / 20} for r in full_rows() if r["status"] == "ok"])
    diff = compare_runs(Run(a), Run(b))
    epochs = diff[diff["metric"] == "epoch"]
    assert len(epochs) == 9 and set(diff["device_b"]) == {"cuda"} and set(diff["verdict"]) == {"inconclusive"}
    assert epochs["ratio"].tolist() == pytest.approx([1 / 20] * 9)  # B's time over A's
    assert epochs["cell"].iloc[0].startswith("softmax/module/cpu-vs-cuda/")


CELL = dict(model="softmax", form="module", device="cpu", loader="resident", workers=0, batch_size=256, threads=2)
ASV_COLUMNS = ["result", "params", "version", "started_at", "duration", "stats_ci_99_a", "stats_ci_99_b",
               "stats_q_25", "stats_q_75", "stats_number", "stats_repeat", "samples", "profile"]


def write_asv(folder, results):
    """An asv 0.6 results folder as ``asv run`` writes it: ``benchmarks.json``, ``<machine>/machine.json``
    and one ``<commit>-<env>.json``, params as Python reprs, one value per combination (None: skipped)."""
    (folder / "vm").mkdir(parents=True)
    (folder / "vm" / "machine.json").write_text(json.dumps({"machine": "vm", "num_cpu": "2", "version": 1}))
    info = {"version": 2}
    for name, (params, _) in results.items():
        kind = name.rsplit(".", 1)[-1].split("_")[0]
        info[name] = {"name": name, "param_names": ["cell"], "params": params, "type": kind,
                      "unit": "bytes" if kind == "peakmem" else "seconds", "version": "4f1d"}
    (folder / "benchmarks.json").write_text(json.dumps(info))
    rows = {name: [values, params, "4f1d", 1700000000000, 12.5] for name, (params, values) in results.items()}
    (folder / "vm" / "abc12345-existing-py_venv_bin_python.json").write_text(json.dumps({
        "commit_hash": "abc12345deadbeef", "env_name": "existing-py_venv_bin_python", "date": 1700000000000,
        "params": {"machine": "vm", "python": "3.11"}, "python": "3.11", "requirements": {}, "env_vars": {},
        "result_columns": ASV_COLUMNS, "results": rows, "durations": {}}))
    return folder


def pytest_benchmark_entry(test, extra):
    label = "softmax/module/cpu/resident/w0/b256/t2"
    return {"group": "g", "name": f"{test}[{label.replace('/', '-')}]", "fullname": f"bench/test_benchmarks.py::{test}",
            "params": {"cell": label}, "param": label.replace("/", "-"), "extra_info": {**CELL, **extra},
            "options": {"disable_gc": False, "timer": "perf_counter"},
            "stats": {"min": 0.2, "max": 0.3, "mean": 0.25, "median": 0.25, "iqr": 0.01, "rounds": 3}}


def test_asv_and_pytest_benchmark_results_join_the_runner_cells(tmp_path):
    bj = tmp_path / "pb.json"
    bj.write_text(json.dumps({
        "machine_info": {"node": "vm", "linbench": {"threads": 2}}, "commit_info": {"id": "abc12345deadbeef"},
        "datetime": "2024-01-01T00:00:00+00:00", "version": "5.3.1", "benchmarks": [
            pytest_benchmark_entry("test_epoch", dict(epoch_s=0.25, samples=60000, epoch_scale=1.0,
                                                      samples_per_s=240000.0)),
            pytest_benchmark_entry("test_step", dict(step_ms=1.5)),
            {**pytest_benchmark_entry("test_step", dict(step_ms=None)), "stats": None}]}))  # --benchmark-disable
    cells = ["'softmax/module/cpu/resident/w0/b256/t2'", "'softmax/compiled/cpu/resident/w0/b256/t2'"]
    results = write_asv(tmp_path / "asv", {
        "bench_training.Epoch.track_epoch_s": ([cells], [0.3, None]),  # compiled: skipped here
        "bench_training.Step.time_step": ([cells[:1]], [0.0012]),
        "bench_training.Loader.track_loader_epoch_s": ([["'softmax/any/cpu/resident/w0/b256/t2'"]], [0.02]),
        "bench_training.Epoch.peakmem_epoch": ([cells[:1]], [9.5e8])})
    asv = sources.read_asv(results)
    assert asv[["benchmark", "form", "workers", "value", "unit"]].values.tolist() == [
        ["epoch_s", "module", 0, 0.3, "s"], ["step_ms", "module", 0, pytest.approx(1.2), "ms"],
        ["loader_epoch_s", "any", 0, 0.02, "s"], ["Epoch.peakmem_epoch", "module", 0, 9.5e8, "bytes"]]
    pb = sources.read_pytest_benchmark([bj])
    assert pb[["benchmark", "value", "unit"]].values.tolist() == [["epoch_s", 0.25, "s"], ["step_ms", 1.5, "ms"]]
    out = tmp_path / "out"
    page = report.build([Run(write_run(tmp_path / "r", full_rows()))], out, results, [bj]).read_text()
    assert "Every source side by side" in page and "time one training step per call" in page
    table = pd.read_csv(out / "tables" / "side_by_side.csv")
    key = (table["model"] == "softmax") & (table["device"] == "cpu") & (table["loader"] == "resident")
    key &= (table["workers"].astype(str) == "0") & (table["batch_size"].astype(str) == "256")
    row = table[key & (table["form"] == "module")]  # one row: every source's numbers of the cell
    assert row[["asv epoch_s (s)", "pytest-benchmark epoch_s (s)", "linbench epoch_s (s)"]].values.tolist() == [
        [0.3, 0.25, pytest.approx(60000 / 25600)]]
    assert row[["asv step_ms (ms)", "pytest-benchmark step_ms (ms)", "linbench step_ms (ms)"]].values.tolist() == [
        [pytest.approx(0.0012 * 1e3), 1.5, 1.0]]
    assert row["asv Epoch.peakmem_epoch (bytes)"].tolist() == [9.5e8]
    assert not any(c.startswith("asv step_ms (s") or "time_step" in c for c in table.columns)
    assert table[key & (table["form"] == "any")]["asv loader_epoch_s (s)"].tolist() == [0.02]
    assert set(pd.read_csv(out / "tables" / "sources.csv")["source"]) == {"linbench", "asv", "pytest-benchmark"}


def linbench(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "bench.cli", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


def test_bad_report_input_is_one_line(tmp_path, monkeypatch, capsys):
    newer = write_run(tmp_path / "newer", full_rows(), schema=SCHEMA + 1)
    not_json = tmp_path / "bad.json"
    not_json.write_text("{")
    good = str(write_run(tmp_path / "ok", full_rows()))
    (tmp_path / "profile").mkdir()  # a folder without asv results
    (tmp_path / "results" / "stub").mkdir(parents=True)
    (tmp_path / "results" / "stub" / "meta.json").write_text("{}")  # a run killed before its first write
    cases = {("report",): "results/stub/meta.json: results schema None",
             ("report", str(tmp_path / "missing")): "no such run folder",
             ("report", str(newer)): f"results schema {SCHEMA + 1} is not the schema",
             ("report", good, "--pytest-benchmark", str(not_json)): "not a pytest-benchmark JSON file",
             ("report", good, "--pytest-benchmark", str(tmp_path / "none.json")): "none.json: missing",
             ("report", good, "--asv-results", str(tmp_path / "no-asv")): "no such asv results folder",
             ("report", good, "--asv-results", str(tmp_path / "profile")): "no asv results",
             ("report", good, good, good): "give one run, or two to compare"}
    monkeypatch.chdir(tmp_path)
    for args, message in cases.items():
        assert cli.main(list(args)) == 2, args
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("linbench: error: ") and message in err, err
    shutil.rmtree(tmp_path / "results")
    out = linbench("report", cwd=tmp_path)  # the installed command, end to end
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "none under results/" in out.stderr, out.stderr


def check_in_chromium(index, tmp_path):
    """Chromium's view of the page in a 1000-pixel window: loaded, no broken image, no console error, no wider
    than the window; and a screenshot of it."""
    checks, why = shot.page_checks(index, width=1000)
    assert checks is not None, why
    assert checks["checked"] == "yes" and checks["broken-images"] == "0" and checks["errors"] == "0", checks
    assert checks["window-width"] == "1000" and int(checks["page-width"]) <= 1000, checks  # tables scroll, not it
    png, why = shot.screenshot(index, tmp_path / "screenshot.png", width=1200)
    assert png is not None, why
    header = png.read_bytes()[:24]  # a PNG: its signature, then the width and height of its IHDR
    assert header[:8] == b"\x89PNG\r\n\x1a\n" and int.from_bytes(header[16:20], "big") == 1200
    tall = int(shot.page_checks(index, width=1200)[0]["page-height"])  # the page's height at the shot's width
    assert int.from_bytes(header[20:24], "big") == tall > 800  # the whole page, not a window of it
    assert png.stat().st_size > 10_000
    return checks


@pytest.mark.skipif(not CHROMIUM, reason="Chromium not installed (apt-get install chromium)")
def test_page_renders_in_chromium_without_broken_images_errors_or_overflow(tmp_path):
    rows = full_rows() + [dict(model="softmax", form="module", device="cuda", loader="resident", workers=0,
                               batch_size=b, status="error", reason="RuntimeError: " + "a long message " * 40)
                          for b in (64, 128)]
    index = report.build([Run(write_run(tmp_path / "run", rows))], tmp_path / "out")
    check_in_chromium(index, tmp_path)
    (tmp_path / "out" / "figures" / "roofline.png").unlink()  # the checks can fail: a broken image is seen,
    page = index.read_text()
    index.write_text(page.replace("</body>", "<script>console.error('boom')</script></body>"))
    checks, _ = shot.page_checks(index, width=1000)
    assert checks["broken-images"] == "1" and checks["errors"] != "0", checks  # and so is a console error,
    index.write_text(page.replace("</h1>", '</h1><div style="width:1500px">wide</div>'))
    checks, _ = shot.page_checks(index, width=1000)
    assert int(checks["page-width"]) >= 1500 > int(checks["window-width"]), checks  # and a page wider than its window
    empty = write_run(tmp_path / "empty", [])
    check_in_chromium(report.build([Run(empty)], tmp_path / "out-empty"), tmp_path)


def test_screenshot_says_why_without_chromium(tmp_path, monkeypatch):
    monkeypatch.setattr(shot, "chromium", lambda: None)
    index = report.build([Run(write_run(tmp_path / "run", full_rows()))], tmp_path / "out")
    assert shot.screenshot(index, tmp_path / "page.png") == (None, "Chromium not found (apt-get install chromium)")
    assert shot.page_checks(index) == (None, "Chromium not found (apt-get install chromium)")
    assert not (tmp_path / "page.png").exists()


@pytest.mark.usefixtures("real_data")
def test_report_of_a_real_run_with_curves(tmp_path):
    """A small real run through the runner, its training curves and predictions, and its page."""
    grid = [dict(model=["softmax"], form=["module"], device=["cpu"], loader=["resident"], workers=[0],
                 batch_size=[256])]
    config = runner.RunConfig(grid=grid, repeats=1, quick=True, gate_steps=5, curves_epochs=1)
    store, cells = runner.start(config, tmp_path / "results")
    runner.execute(store, config, cells, progress=False)
    run = Run(store.folder)
    assert run.curves["form"].tolist() == ["module"] and run.curves["test_acc"].iloc[0] > 0.7  # d2l: ~0.79
    assert len(run.predictions) == 8 and set(run.predictions["true"]) <= set(LABELS)
    index = report.build([run], tmp_path / "report")
    for name in ("training_curves", "predictions", "roofline", "where_the_time_goes"):
        assert (tmp_path / "report" / "figures" / f"{name}.png").exists(), name
    if CHROMIUM:
        check_in_chromium(index, tmp_path)


@pytest.mark.usefixtures("real_data")
def test_loop_form_is_not_trained_for_curves():
    curves, predictions, reason = train_curves(key_of("softmax", "loop"), epochs=10)
    assert curves == [] and predictions == [] and "too slow" in reason
