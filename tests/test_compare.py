"""Two runs compared (bench/regress/verdicts.py, bench/regress/compare.py) from synthetic run folders: verdicts per
cell and metric, cells
in one run only, the environments' differences, old runs without raw samples, and ``linbench compare``."""
import argparse
import json
import math

import numpy as np
import pandas as pd
import pytest

from bench.cli import _Parser
from bench.regress.compare import add_parser
from bench.regress.verdicts import compare_runs, environment_differences
from bench.runs.run_folder import COLUMNS, SAMPLE_COLUMNS, SAMPLES, SCHEMA, Run
from bench.runs.store import Store

CELL = dict(model="softmax", form="module", device="cpu", loader="resident", workers=0, batch_size=256, threads=2)


def write_run(folder, cells, env=None, **meta):
    """A run folder through :class:`Store`; ``cells`` maps each cell (a dict of axes) to its raw samples
    (metric -> seconds), None for a run from before samples.csv (results only)."""
    meta = {"schema": SCHEMA, "run_id": folder.name, "config": {},
            "env": {"cpu": "test cpu", "threads": 2, "commit": "abc123", "torch": "2.4", "dirty": False, **(env or {})},
            "peaks": {"cpu": {"gflops": 100.0, "gbps": 20.0}}, **meta}
    folder.mkdir(parents=True)
    store = Store(folder, meta)
    for cell, (samples, extra) in cells:
        epochs = samples["epoch"] if samples else [60000 / 25600]
        steps = samples["step"] if samples else [1e-3]
        row = {c: math.nan for c in COLUMNS}
        row.update(cell, status="ok", reason="", samples_per_s=60000 / np.median(epochs), epoch_s=np.median(epochs),
                   n=len(epochs), step_ms=1e3 * np.median(steps), step_n=len(steps), **{"disturbed": False, **extra})
        store.put(row)
    store.write()
    rows = [{**cell, "metric": metric, "repeat": i, "seconds": v} for cell, (samples, _) in cells if samples
            for metric, values in samples.items() for i, v in enumerate(values)]
    if any(samples for _, (samples, _) in cells):
        pd.DataFrame(rows, columns=SAMPLE_COLUMNS).to_csv(folder / SAMPLES, index=False)
    else:
        (folder / SAMPLES).unlink(missing_ok=True)
    return folder


def timed(rng, scale=1.0, sigma=0.2, n=20):
    """Raw samples of one cell: epochs and steps, lognormal (a busy machine)."""
    return {"epoch": list(scale * 2.3 * rng.lognormal(0, sigma, n)),
            "step": list(scale * 1e-3 * rng.lognormal(0, sigma, n))}


def two_runs(tmp_path, slow=1.3, **meta_b):
    """A and B: b64 slower by ``slow`` in B, b256 unchanged (tight samples), b1024 at 2 threads in A and 1 in B."""
    rng = np.random.default_rng(0)
    b64, b256 = {**CELL, "batch_size": 64}, {**CELL, "batch_size": 256}
    b1024 = {**CELL, "batch_size": 1024}
    a = write_run(tmp_path / "a", [(b64, (timed(rng), {})), (b256, (timed(rng, sigma=0.01, n=30), {})),
                                   (b1024, (timed(rng), {}))])
    b = write_run(tmp_path / "b", [(b64, (timed(rng, slow), {"disturbed": True})),
                                   (b256, (timed(rng, sigma=0.01, n=30), {})),
                                   ({**b1024, "threads": 1}, (timed(rng), {}))], **meta_b)
    return a, b


def test_a_slower_cell_an_unchanged_one_and_one_at_other_threads(tmp_path):
    a, b = two_runs(tmp_path)
    diff = compare_runs(Run(a), Run(b))
    verdicts = {(r["cell"], r["metric"]): r["verdict"] for r in diff.to_dict("records")}
    assert verdicts == {
        ("softmax/module/cpu/resident/w0/b64/t2", "epoch"): "slower",
        ("softmax/module/cpu/resident/w0/b64/t2", "step"): "slower",
        ("softmax/module/cpu/resident/w0/b256/t2", "epoch"): "same",
        ("softmax/module/cpu/resident/w0/b256/t2", "step"): "same",
        ("softmax/module/cpu/resident/w0/b1024/t2", ""): "only in A",  # other thread counts: other cells
        ("softmax/module/cpu/resident/w0/b1024/t1", ""): "only in B"}
    assert diff["verdict"].tolist()[:2] == ["slower", "slower"]  # slower first
    slow = diff[diff["verdict"] == "slower"].iloc[0]
    assert slow["ratio"] == pytest.approx(1.3, rel=0.15) and slow["ratio_lo"] > 1.05 and slow["p_diff"] < 0.05
    assert slow["n_a"] == slow["n_b"] == 20 and bool(slow["disturbed"])  # B's cell was disturbed
    assert not diff[diff["cell"].str.contains("b256")]["disturbed"].any()
    only = diff[diff["verdict"] == "only in A"].iloc[0]
    assert only["reason"] == "not timed in b, which has it at threads 1"


def test_environment_differences_say_what_and_by_how_much(tmp_path):
    a, b = two_runs(tmp_path, env={"commit": "def4567890abcdef", "threads": 4, "dirty": True},
                    peaks={"cpu": {"gflops": 120.0, "gbps": 20.0}, "cuda": {"gflops": 5e4, "gbps": 2e3}},
                    load_at_start={"others": 0.6, "loadavg": 2.1, "cores": 2})
    lines = environment_differences(Run(a), Run(b))
    assert lines == ["commit abc123 vs def4567890", "uncommitted changes no vs yes", "torch threads 2 vs 4",
                     "cpu gflops 100 vs 120 (+20%)", "cuda peaks probed in b only",
                     "load at start: not recorded vs others 60% of the CPU, load average 2.1"]
    assert environment_differences(Run(a), Run(a)) == []


def test_runs_without_raw_samples_compare_medians_inconclusively(tmp_path):
    a = write_run(tmp_path / "old", [(CELL, (None, {}))])
    b = write_run(tmp_path / "new", [(CELL, (timed(np.random.default_rng(1)), {}))])
    assert Run(a).samples is None
    diff = compare_runs(Run(a), Run(b))
    assert diff["verdict"].tolist() == ["inconclusive", "inconclusive"] and diff["metric"].tolist() == ["epoch", "step"]
    assert set(diff["reason"]) == {"no raw samples in old"} and diff["n_a"].tolist() == [1, 1]
    assert diff["ratio"].iloc[0] == pytest.approx(np.median(Run(b).samples.query("metric == 'epoch'")["seconds"])
                                                  / (60000 / 25600))


def test_a_cpu_run_and_a_gpu_run_join_on_the_other_axes(tmp_path):
    rng = np.random.default_rng(2)
    a = write_run(tmp_path / "cpu", [(CELL, (timed(rng), {}))])
    b = write_run(tmp_path / "gpu", [({**CELL, "device": "cuda"}, (timed(rng, 1 / 20), {}))])
    diff = compare_runs(Run(a), Run(b))
    assert diff["cell"].tolist() == ["softmax/module/cpu-vs-cuda/resident/w0/b256/t2"] * 2
    assert diff["verdict"].tolist() == ["faster", "faster"] and set(diff["device_b"]) == {"cuda"}
    assert diff["ratio"].tolist() == pytest.approx([0.05, 0.05], rel=0.2)


def compare(*argv) -> int:
    """``linbench compare`` in-process, through the subcommand's own parser."""
    parser = _Parser(prog="linbench")
    add_parser(parser.add_subparsers(dest="command", required=True, parser_class=_Parser))
    args = parser.parse_args(["compare", *map(str, argv)])
    return args.func(args)


def test_linbench_compare_exits_1_on_a_slower_cell_and_0_without(tmp_path, capsys):
    a, b = two_runs(tmp_path)
    out = tmp_path / "diff.csv"
    assert compare(a, b, "--out", out) == 1
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert lines[0].startswith("A: a (") and lines[1].startswith("B: b (")
    assert lines[2] == "environments: no difference recorded" and lines[3].split() == [
        "cell", "metric", "n_a", "n_b", "median_a", "median_b", "ratio", "[lo,", "hi]", "level", "verdict", "disturbed",
        "reason"]
    assert lines[4].split()[:4] == ["softmax/module/cpu/resident/w0/b64/t2", "epoch", "20", "20"]
    assert "slower yes B/A" in " ".join(lines[4].split()) and "Holm over 4 comparison(s)" in lines[4]
    assert lines[-1] == ("4 comparisons: 2 slower, 0 faster, 0 inconclusive, 2 same (2 on disturbed cells); "
                         "cells 1 only in A, 1 only in B")
    assert pd.read_csv(out)["verdict"].tolist()[:2] == ["slower", "slower"]
    assert compare(a, a, "--format", "json") == 0  # A against itself: nothing slower
    report = json.loads(capsys.readouterr().out)
    assert report["counts"]["slower"] == 0 and report["environment"] == [] and len(report["cells"]) == 6
    assert compare(b, a, "--min-effect", "0.5") == 0  # B to A is faster; and 1.3x is below a 50% min effect
    assert "slower" not in capsys.readouterr().out.split("verdict")[1].split("comparisons")[0]


@pytest.mark.parametrize("argv,message", [
    (["missing", "a"], "no such run folder"),
    (["notrun", "a"], "missing (not a linbench run folder)"),
    (["a", "a", "--alpha", "0"], "--alpha must be between 0 and 1"),
    (["a", "a", "--min-effect", "1.5"], "--min-effect must be at least 0"),
    (["a", "a", "--out", "nowhere/x.csv"], "cannot write nowhere/x.csv"),
    (["a", "a", "--format", "html"], "invalid choice"),
])
def test_user_errors_are_one_line(tmp_path, monkeypatch, argv, message):
    from bench import UserError

    write_run(tmp_path / "a", [(CELL, (timed(np.random.default_rng(3)), {}))])
    (tmp_path / "notrun").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=None) as e:
        compare(*argv)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_the_subcommand_registers_on_a_parser():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    add_parser(sub)
    args = parser.parse_args(["compare", "x", "y"])
    assert (args.a, args.b, args.min_effect, args.alpha, args.format, args.out) == ("x", "y", 0.05, 0.05, "table", None)
