"""The profiler view (``linbench profile``, ``bench.signals.profile``) and the report's "Why not at the roofline".

Two cells profiled directly (softmax ``vectorized`` at batch 256 on the real data, linreg ``module`` at 10):
operator rows, shares in [0, 1], operators + outside = the step within 2%, a Chrome trace that loads. Then
``--run RUN --best`` on a small real run writes ``profiles/`` and the section reads it, with its figure;
bad input is one line and exit status 2.
"""
import json
import math

import pytest
import torch

from bench.cli import main
from bench.grid import parse_label
from bench.runs.run_folder import OP_COLUMNS, OPS, PROFILES, SUMMARY, TRACE, read_profiles
from bench.signals.profile import profile_cell

TOLERANCE = 0.02  # operators + outside against the step: equal by construction, but for events overhanging a parent


@pytest.fixture(autouse=True)
def keep_threads():
    """A cell sets torch's thread count for the process: give the other tests theirs back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def check(result, trace) -> None:
    s, ops = result["summary"], result["ops"]
    assert list(ops.columns) == OP_COLUMNS and (ops["kind"] == "operator").any()
    for key in ("operators_share", "outside_share", "python_share"):
        assert 0 <= s[key] <= 1, (key, s[key])
    assert s["operators_share"] + s["outside_share"] == pytest.approx(1, abs=TOLERANCE)
    assert s["python_share"] <= s["outside_share"] + 1e-9
    assert ops["self_cpu_share"].between(0, 1).all() and ops["calls_per_step"].gt(0).all()
    assert s["step_us"] > 0 and s["step_plain_us"] > 0 and s["flops"] > 0 and math.isnan(s["roofline_us"])
    events = json.loads(trace.read_text())["traceEvents"]
    assert sum(e.get("name") == "step" for e in events) == s["steps"]


def test_softmax_vectorized(tmp_path, real_data):
    result = profile_cell(parse_label("softmax/vectorized/cpu/resident/w0/b256/t1"), steps=10,
                          trace_path=tmp_path / TRACE)
    check(result, tmp_path / TRACE)
    ops = set(result["ops"]["op"])
    assert ops & {"aten::mm", "aten::addmm"}, sorted(ops)


def test_linreg_module_with_peaks(tmp_path):
    peaks = {"gflops": 10.0, "gbps": 10.0}
    result = profile_cell(parse_label("linreg/module/cpu/resident/w0/b10/t1"), steps=10, trace_path=tmp_path / TRACE)
    check(result, tmp_path / TRACE)
    s = profile_cell(parse_label("linreg/module/cpu/resident/w0/b10/t1"), steps=5, peaks=peaks)["summary"]
    flops, bytes_ = s["flops"], s["bytes"]
    assert s["roofline_us"] == pytest.approx(max(flops / 1e10, bytes_ / 1e10) * 1e6)
    assert s["x_roofline"] == pytest.approx(s["step_plain_us"] / s["roofline_us"])


def test_a_form_that_owns_its_epoch_is_profiled_by_epochs(tmp_path, real_data):
    from bench.signals.profile import EPOCHS, line

    result = profile_cell(parse_label("softmax/native/cpu/resident/w0/b256/t1"), steps=10,
                          trace_path=tmp_path / TRACE)
    s = result["summary"]
    check(result, tmp_path / TRACE)
    assert s["unit"] == "epoch" and s["steps"] == EPOCHS and s["batch"] == 60000
    assert "aten::resize_" in set(result["ops"]["op"])  # the scratch's, called from inside the C++ epoch
    assert line(s).startswith("epoch ") and "the form's own code" in line(s)


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    threads = torch.get_num_threads()
    try:
        assert main(["run", "--models", "linreg", "--forms", "vectorized,module", "--loaders", "resident",
                     "--devices", "cpu", "--batch-sizes", "10,256", "--no-curves", "--no-report", "--no-progress",
                     "--threads", "1", "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    return next(p for p in out.iterdir() if (p / "meta.json").exists())


def test_best_of_a_run_and_its_report_section(run_folder, tmp_path, capsys):
    from bench.report.render import Figure, Table
    from bench.report.roofline_why import why_section
    from bench.runs.run_folder import Run

    before = why_section(Run(run_folder), tmp_path)  # no profiles/ yet: the section says how to make them
    assert before.missing and f"linbench profile --run {run_folder} --best" in before.missing[0]
    assert main(["profile", "--run", str(run_folder), "--best", "--steps", "5", "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert "outside any operator (Python and framework overhead); roofline time" in out
    folders = sorted((run_folder / PROFILES).iterdir())
    assert [f.name for f in folders] == ["linreg_module_cpu_resident_w0_b256_t1",
                                         "linreg_vectorized_cpu_resident_w0_b256_t1"]  # b256: the faster of each
    for f in folders:
        assert {p.name for p in f.iterdir()} == {OPS, SUMMARY, TRACE}
        assert json.loads((f / TRACE).read_text())["traceEvents"]
        assert json.loads((f / SUMMARY).read_text())["peaks_from"] == "the run"  # strict JSON: NaN written as null
    profiles = read_profiles(run_folder)
    assert all(p["summary"]["roofline_us"] > 0 for p in profiles)  # the run's probed peaks

    (tmp_path / "figures").mkdir()
    section = why_section(Run(run_folder), tmp_path)
    assert section.title == "Why not at the roofline" and not section.missing
    table = next(b for b in section.blocks if isinstance(b, Table))
    assert len(table.frame) == 2 and table.frame["outside_pct"].between(0, 100).all()
    assert all(table.frame["top_operators"].str.contains("%"))
    figure = next(b for b in section.blocks if isinstance(b, Figure))
    assert (tmp_path / figure.path).stat().st_size > 1000
    readings = next(b for b in section.blocks if hasattr(b, "items")).items
    assert len(readings) == 2 and all("outside operators" in r or "BLAS" in r or "spread" in r for r in readings)


def test_the_readings_follow_the_numbers():
    import pandas as pd

    from bench.report.roofline_why import reading

    base = dict(device="cpu", operators_share=0.8, outside_share=0.2, outside_us=20.0, operator_calls=4.0,
                x_roofline=20.0, device_busy_share=math.nan)
    ops = pd.DataFrame({"op": ["aten::addmm", "aten::mm", "aten::sum"], "kind": "operator",
                        "self_cpu_share": [0.5, 0.2, 0.1], "device_share": math.nan})
    assert "compute-bound in BLAS" in reading(base, ops) and "20x the roofline" in reading(base, ops)
    assert "per-op overhead dominates" in reading({**base, "operators_share": 0.3, "outside_share": 0.7}, ops)
    assert "Python itself" in reading({**base, "operators_share": 0.0, "outside_share": 1.0}, ops)
    assert "the loader takes 90%" in reading(base, ops, loader_share=0.9)
    spread = ops.assign(op=["aten::add", "aten::mul", "aten::sum"])
    assert "many small operators" in reading(base, spread)


def test_bad_input_is_one_line(tmp_path, capsys):
    cases = [(["profile", "softmax/vectorized"], "not a cell label"),
             (["profile", "linreg/loop/cuda/resident/w0/b10/t1"], "cannot run here"),
             (["profile", "--run", str(tmp_path / "nope"), "--best"], "no such run folder"),
             (["profile", "--best"], "--run"),
             (["profile"], "give one or more CELL"),
             (["profile", "linreg/module/cpu/resident/w0/b10/t1", "--steps", "0"], "positive")]
    for argv, words in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("linbench: error:") and words in err[0], (argv, err)
