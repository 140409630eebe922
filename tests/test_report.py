"""Reports: built from run folders the tests write (partial and empty ones too), checked in Chromium."""
import json
import math
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from bench import UserError, report, runner
from bench.grid import BASELINES

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def write_run(folder, rows, **meta):
    """A run folder in the runner's own schema (Store), holding ``rows`` over the given axes."""
    meta = {"schema": runner.SCHEMA, "run_id": folder.name, "config": {},
            "env": {"cpu": "test cpu", "threads": 2, "commit": "abc123", "torch": "x"},
            "peaks": {"cpu": {"gflops": 100.0, "gbps": 20.0}}, **meta}
    folder.mkdir(parents=True)
    store = runner.Store(folder, meta)
    for r in rows:
        row = {c: math.nan for c in runner.COLUMNS}
        row.update({"threads": 2, "reason": "", **r})
        store.put(row)
    store.write()
    return folder


def ok_row(form, batch, rate, loader="resident", workers=0, model="softmax"):
    return dict(model=model, form=form, device="cpu", loader=loader, workers=workers, batch_size=batch, status="ok",
                samples_per_s=rate, epoch_s=60000 / rate, epoch_s_iqr=0.01, n=3, step_ms=1.0, loader_epoch_s=0.01,
                gflops=10.0, gbps=5.0, roofline_frac=0.1, epoch_roofline_frac=0.05, compile_s=1.0, peak_rss_mb=900.0)


def full_rows(scale=1.0):
    rows = [ok_row(f, b, scale * r * b) for f, r in [("module", 100), ("compiled", 150)] for b in (64, 256, 1024)]
    rows += [ok_row("module", 256, scale * (w + 1) * 1000, "torchvision", w) for w in (0, 2, 4)]
    rows += [dict(model="softmax", form="loop", device="cuda", loader="resident", workers=0, batch_size=256,
                  status="skipped", reason="loop runs on cpu only"),
             dict(model="softmax", form="vectorized", device="cpu", loader="resident", workers=0, batch_size=256,
                  status="failed-equivalence", reason="W[3, 4]: got 1, oracle 2")]
    return rows


def test_full_report_has_every_figure_and_table(tmp_path):
    run = write_run(tmp_path / "run-a", full_rows())
    pd.DataFrame([dict(form="module", device="cpu", epoch=e, train_loss=1 / e, train_acc=0.7, test_acc=0.75,
                       seconds=e) for e in (1, 2)]).to_csv(run / report.CURVES, index=False)
    index = report.build([report.Run(run)], tmp_path / "out")
    page = index.read_text()
    for name in ("throughput_vs_batch_size", "epoch_time_vs_workers", "where_the_time_goes", "roofline",
                 "compile_time_and_memory", "training_curves"):
        assert f'src="figures/{name}.png"' in page and (tmp_path / "out" / "figures" / f"{name}.png").stat().st_size > 0
    assert "fastest softmax on cpu: compiled" in page and "speedup" in page
    assert "failed-equivalence" in page and "W[3, 4]" in page and "loop runs on cpu only" in page
    assert "prediction grid: this run has no predictions" in page  # missing parts are said, not hidden
    results = pd.read_csv(tmp_path / "out" / "tables" / "results.csv")
    assert len(results) == len(full_rows())
    assert (tmp_path / "out" / "report.md").read_text().count("![figures/") == 6


def test_empty_run_still_gives_a_readable_page(tmp_path):
    rows = [dict(model="softmax", form="module", device="cuda", loader="resident", workers=0, batch_size=256,
                 status="skipped", reason="no CUDA device on this machine")]
    page = report.build([report.Run(write_run(tmp_path / "empty", rows))], tmp_path / "out").read_text()
    assert "no cell was timed in this run" in page and "no CUDA device on this machine" in page
    assert "Not shown: roofline: no timed cell" in page
    assert "no softmax speedups: its baseline cell" in page


def test_comparison_flags_changes_beyond_the_threshold_in_red(tmp_path):
    a = write_run(tmp_path / "a", full_rows())
    rows = full_rows()
    rows[0] = {**rows[0], "samples_per_s": rows[0]["samples_per_s"] * 0.5}  # module b64: twice as slow
    rows[1] = {**rows[1], "samples_per_s": rows[1]["samples_per_s"] * 1.05}  # within 10%: not flagged
    b = write_run(tmp_path / "b", rows)
    page = report.build([report.Run(a), report.Run(b)], tmp_path / "out").read_text()
    diff = pd.read_csv(tmp_path / "out" / "tables" / "comparison.csv")
    assert diff["change"].tolist().count("worse") == 1 and diff["change"].tolist().count("same") == len(diff) - 1
    assert page.count('<tr class="worse">') == 1


def test_pytest_benchmark_and_asv_sources(tmp_path):
    bj = tmp_path / "pb.json"
    bj.write_text(json.dumps({"benchmarks": [{"name": "test_step[softmax-module]", "group": "g",
                                              "stats": {"median": 0.001, "iqr": 0.0001, "rounds": 5},
                                              "extra_info": {"samples_per_s": 256000.0}}]}))
    asv = tmp_path / "asv" / "machine"
    asv.mkdir(parents=True)
    (asv / "machine.json").write_text("{}")
    (asv / "abc-existing.json").write_text(json.dumps({
        "commit_hash": "abcdef123", "result_columns": ["result", "params"],
        "results": {"bench.TimeStep.time_step": [[0.5, 0.25], [["'linreg'", "'softmax'"]]]}}))
    frame = report.read_pytest_benchmark([bj])
    assert frame.loc[0, "samples_per_s"] == 256000.0
    assert report.read_asv(tmp_path / "asv")["value"].tolist() == [0.5, 0.25]
    page = report.build([report.Run(write_run(tmp_path / "r", full_rows()))], tmp_path / "out",
                        tmp_path / "asv", [bj]).read_text()
    assert "test_step[softmax-module]" in page and "bench.TimeStep.time_step" in page


def linbench(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "bench.cli", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


def test_bad_report_input_is_one_line(tmp_path):
    newer = write_run(tmp_path / "newer", full_rows(), schema=runner.SCHEMA + 1)
    not_json = tmp_path / "bad.json"
    not_json.write_text("{")
    for args in (["report"], ["report", str(tmp_path / "missing")], ["report", str(newer)],
                 ["report", str(write_run(tmp_path / "ok", full_rows())), "--pytest-benchmark", str(not_json)]):
        out = linbench(*args, cwd=tmp_path)
        assert out.returncode == 2, (args, out.stderr)
        assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr


def render(index, tmp_path):
    """Chromium's view of the page: the body's check attributes, and a screenshot."""
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(flags + ["--virtual-time-budget=5000", "--dump-dom", index.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    shot = tmp_path / "screenshot.png"
    subprocess.run(flags + ["--window-size=1280,4000", f"--screenshot={shot}", index.as_uri()],
                   capture_output=True, timeout=120)
    body = dom[dom.find("<body"):dom.find(">", dom.find("<body")) + 1]
    return body, shot


@pytest.mark.skipif(not CHROMIUM, reason="Chromium not installed (apt-get install chromium)")
def test_page_renders_in_chromium_without_broken_images_or_errors(tmp_path):
    run = write_run(tmp_path / "run", full_rows())
    index = report.build([report.Run(run)], tmp_path / "out")
    body, shot = render(index, tmp_path)
    assert 'data-checked="yes"' in body, body
    assert 'data-broken-images="0"' in body and 'data-errors="0"' in body, body
    assert shot.stat().st_size > 10_000
    (tmp_path / "out" / "figures" / "roofline.png").unlink()  # the check can fail: a broken image is seen
    body, _ = render(index, tmp_path)
    assert 'data-broken-images="1"' in body, body
