"""asv results of two machines: real `asv run`s under two machine names into one results folder, one site
from `asv publish` with both machines, and one linbench report that keeps each machine's values apart."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from bench.cli import main
from bench.grid import AXES, front_end_cells, parse_label
from bench.regress.change_points import find_changes
from bench.report import sources
from bench.runs.run_folder import Run
from tests.test_report import ok_row, write_run

REPO = Path(__file__).resolve().parent.parent
MACHINES = ("alpha", "beta")
CELL = next(c.label() for c in front_end_cells()
            if c.label().startswith("linreg/vectorized/cpu/resident/w0/b10/"))  # asv's cells: one thread
ONE_CELL = re.escape(f"Step.time_step('{CELL}')")
BENCHMARK = "bench_training.Step.time_step"


def asv(*args, home: Path):
    """asv with ``home`` as HOME: the machines it is told of go to a ``.asv-machine.json`` of the test's own."""
    proc = subprocess.run([sys.executable, "-m", "asv", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, HOME=str(home)))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """One results folder with a quick run of one Step cell by each of two machines, and its published site."""
    pytest.importorskip("asv", reason="asv is not installed (pip install asv)")
    tmp = tmp_path_factory.mktemp("asv-machines")
    conf = json.loads((REPO / "asv.conf.json").read_text())
    conf.update(repo=str(REPO), benchmark_dir=str(REPO / conf["benchmark_dir"]), env_dir=str(tmp / "env"),
                results_dir=str(tmp / "results"), html_dir=str(tmp / "html"))
    config = tmp / "asv.conf.json"
    config.write_text(json.dumps(conf))
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                          check=True).stdout.strip()
    for machine in MACHINES:
        asv("machine", "--config", str(config), "--machine", machine, "--yes", home=tmp)
        asv("run", "--config", str(config), "-E", "existing:same", "--machine", machine, "--set-commit-hash", head,
            "--quick", "-b", ONE_CELL, home=tmp)
    asv("publish", "--config", str(config), home=tmp)
    return tmp


def measured(results: Path) -> dict:
    """The cell's value (seconds) in each machine's own results file, as asv wrote it."""
    values = {}
    for machine in MACHINES:
        [path] = [p for p in (results / machine).glob("*.json") if p.name != "machine.json"]
        data = json.loads(path.read_text())
        entry = dict(zip(data["result_columns"], data["results"][BENCHMARK]))
        values[machine] = dict(zip(entry["params"][0], entry["result"]))[repr(CELL)]
    return values


def test_asv_keeps_each_machine_and_publishes_one_site_with_both(published):
    results, html = published / "results", published / "html"
    assert {p.parent.name for p in results.glob("*/machine.json")} == set(MACHINES)
    assert all(isinstance(v, float) and v > 0 for v in measured(results).values())
    index = json.loads((html / "index.json").read_text())
    assert set(index["machines"]) == set(MACHINES) and sorted(index["params"]["machine"]) == sorted(MACHINES)
    for machine in MACHINES:  # a graph of the benchmark per machine, holding that machine's point
        [graph] = html.glob(f"graphs/**/machine-{machine}/**/{BENCHMARK}.json")
        assert json.loads(graph.read_text()), graph


def test_read_asv_and_history_give_each_machine_its_own_row(published):
    frame = sources.read_asv(published / "results")
    mine = frame[(frame["benchmark"] == "step_ms") & (frame["form"] == "vectorized") & (frame["model"] == "linreg")]
    assert sorted(mine["machine"]) == sorted(MACHINES)
    expected = measured(published / "results")
    assert {m: v for m, v in zip(mine["machine"], mine["value"])} == {
        m: pytest.approx(v * 1e3) for m, v in expected.items()}
    series = find_changes(published / "results").series  # linbench history: one series per machine
    assert sorted(series[series["params"] == CELL]["machine"]) == sorted(MACHINES)


def test_report_lists_each_machine_rows_apart(published, tmp_path, capsys):
    row = {**ok_row("vectorized", 10, 50000.0, model="linreg"), **parse_label(CELL).as_dict()}
    run = write_run(tmp_path / "run", [row], env={"cpu": "test cpu", "threads": 2, "commit": "abc123",
                                                   "torch": "x", "host": "alpha"})
    out = tmp_path / "report"
    assert main(["report", str(run), "--asv-results", str(published / "results"), "--out", str(out)]) == 0
    capsys.readouterr()
    page = (out / "index.html").read_text()
    assert "rows of their own" in page and "<th class=t>machine</th>" in page
    assert all(f"<td class=t>{m}</td>" in page and f"| {m} |" in (out / "report.md").read_text() for m in MACHINES)
    table = pd.read_csv(out / "tables" / "side_by_side.csv")
    assert list(table.columns[:len(AXES) + 1]) == ["machine", *AXES]
    cell = table[(table["model"] == "linreg") & (table["form"] == "vectorized")]
    expected = measured(published / "results")
    assert sorted(cell["machine"]) == sorted(MACHINES)  # two rows: neither averaged nor one dropped
    by_machine = cell.set_index("machine")
    for machine, seconds in expected.items():
        assert by_machine.loc[machine, "asv step_ms (ms)"] == pytest.approx(seconds * 1e3)
    # the run's own numbers (its host: alpha) join alpha's row only
    assert by_machine.loc["alpha", "linbench step_ms (ms)"] == 1.0
    assert pd.isna(by_machine.loc["beta", "linbench step_ms (ms)"])
    assert set(pd.read_csv(out / "tables" / "sources.csv").query("source == 'asv'")["machine"]) == set(MACHINES)


def test_one_machine_s_results_keep_one_row_per_cell(published, tmp_path):
    one = tmp_path / "results"
    shutil.copytree(published / "results" / "alpha", one / "alpha")
    shutil.copy(published / "results" / "benchmarks.json", one)
    run = write_run(tmp_path / "run", [{**ok_row("vectorized", 10, 50000.0, model="linreg"),
                                        **parse_label(CELL).as_dict()}])
    table = sources.side_by_side(sources.combine(sources.read_sources(Run(run), one)))
    assert "machine" not in table.columns
    cell = table[(table["model"] == "linreg") & (table["form"] == "vectorized")]
    assert len(cell) == 1 and cell["asv step_ms (ms)"].notna().all() and cell["linbench step_ms (ms)"].notna().all()
