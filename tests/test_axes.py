"""The house's promise that a new axis is one row: a toy axis added to a copy of the tree through the axis table
alone runs through ``list``, ``check`` and a timed cell; the precision axis through the gate; no gate key written
out by hand."""
from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import impls
from bench.gate import check
from bench.gate.cases import gate_cases
from impls.contract import Setup

ROOT = Path(__file__).resolve().parents[1]
TOY_ROW = '''    Axis("jitter", "--jitters", "a test's toy axis", parse=int, default=lambda: [0], prefix="j",
         implicit=0, gated=True, apply=lambda v: open(os.environ["TOY_LOG"], "a").write(f"{v}\\n")),
)
AXES = tuple('''


ONE_PROCESS = """
import contextlib, io, json, pathlib, sys
from bench.cli import main
out, log = [], pathlib.Path(sys.argv[2])
for argv in json.loads(sys.argv[1]):
    log.write_text("")
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert main(argv) == 0, argv
    out.append([buffer.getvalue(), log.read_text().split()])
print(json.dumps(out))
"""


def test_a_toy_axis_from_one_row_of_the_axis_table_runs_through_list_check_and_a_timed_cell(tmp_path):
    tree = tmp_path / "tree"
    for part in ("bench", "impls"):
        shutil.copytree(ROOT / part, tree / part, ignore=shutil.ignore_patterns("__pycache__", "*.so", "build"))
    grid = tree / "bench" / "grid.py"
    text = grid.read_text()
    assert text.count("\n)\nAXES = tuple(") == 1
    grid.write_text(text.replace("\n)\nAXES = tuple(", "\n" + TOY_ROW, 1))
    log = tmp_path / "applied"
    env = {**__import__("os").environ, "PYTHONPATH": str(tree), "TOY_LOG": str(log)}

    commands = [["list", "--models", "linreg", "--jitters", "0,1"],
                ["check", "--models", "linreg", "--forms", "module", "--jitters", "0,1", "--steps", "5", "--format",
                 "json"],
                ["run", "--models", "linreg", "--forms", "module", "--devices", "cpu", "--loaders", "resident",
                 "--workers", "0", "--batch-sizes", "10", "--jitters", "1", "--repeats", "1", "--no-curves", "--out",
                 str(tmp_path / "results"), "--no-report", "--no-progress"]]
    # the three commands in one process of the copied tree (one torch import), each's output and the axis
    # values applied during it
    done = subprocess.run([sys.executable, "-c", ONE_PROCESS, json.dumps(commands), str(log)], cwd=tree, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    (listed, applied_list), (checked, applied_check), (_, applied_run) = json.loads(done.stdout.splitlines()[-1])

    head, *rows = [line.split() for line in listed.splitlines() if line.split()[:1] in (["model"], ["linreg"])]
    listed = [dict(zip(head, row)) for row in rows]
    assert {(r["form"], r["jitter"], r["available"]) for r in listed if r["device"] == "cpu"} >= {
        ("module", "0", "yes"), ("module", "1", "yes")}
    checked = json.loads(checked)
    assert sorted((r["jitter"], r["status"]) for r in checked) == [(0, "pass"), (1, "pass")], checked
    assert applied_check == ["0", "1"]  # applied before each value's form was built
    folder = next((tmp_path / "results").iterdir())
    timed = list(csv.DictReader((folder / "results.csv").open()))
    assert [(r["model"], r["jitter"], r["status"]) for r in timed] == [("linreg", "1", "ok")]
    gated = list(csv.DictReader((folder / "gate.csv").open()))
    assert gated and {(g["jitter"], g["status"]) for g in gated} == {("1", "pass")}
    assert set(applied_run) == {"1"}


def test_low_precisions_pass_the_gate_with_tolerances_derived_from_their_rounding():
    chosen = {"model": ["softmax"], "form": ["module", "vectorized"], "precision": ["bf16", "amp_bf16"]}
    results = check.run_check(chosen, steps=20, batch_sizes=[256])
    assert {(r.form, r.precision) for r in results} == {(f, p) for f in ("module", "vectorized")
                                                        for p in ("bf16", "amp_bf16")}
    assert all(r.status == "pass" for r in results), [r.reason for r in results if r.status != "pass"]
    assert all("bfloat16" in r.tolerance_reason for r in results)
    assert all(r.rtol > 1e-2 for r in results)  # bfloat16's eps is 7.8e-3: no fp32 tolerance was used


def _judged(cls, precision, form="vectorized"):
    cases = gate_cases("softmax", [64], 10, 0, None)
    return [check.check_case(check.key_of("softmax", form, precision=precision), c, cls) for c in cases]


def test_a_form_asked_for_bf16_that_trains_in_fp32_is_flagged():
    class Fp32Anyway(impls.form_class("softmax", "module")):
        def __init__(self, params, setup):
            super().__init__(params, Setup(setup.lr, setup.device))  # the precision dropped on the way in

    results = _judged(Fp32Anyway, "bf16", "module")
    assert all(r.status == "fail" and "its parameters are float32, not bfloat16" in r.reason for r in results)


def test_amp_with_its_autocast_dropped_is_flagged():
    class NoAutocast(impls.form_class("softmax", "vectorized")):
        def step(self, X, y):
            self.setup = Setup(self.setup.lr, self.setup.device)  # a cast dropped: the step runs in fp32
            return super().step(X, y)

    results = _judged(NoAutocast, "amp_bf16")
    assert all(r.status == "fail" and "its matmuls ran in float32, not bfloat16" in r.reason for r in results)


def test_amp_whose_update_rounds_the_master_weights_to_bf16_is_flagged():
    class RoundedMaster(impls.form_class("softmax", "module")):
        def step(self, X, y):
            loss = super().step(X, y)
            with torch.no_grad():  # the update applied in bf16: the fp32 master weights keep no more than bf16
                for p in self.net.parameters():
                    p.copy_(p.to(torch.bfloat16).float())
            return loss

    results = _judged(RoundedMaster, "amp_bf16", "module")
    assert all(r.status == "fail" and "the master weights lost" in r.reason for r in results)


def test_a_declined_precision_says_why():
    assert "has no bf16 path" in impls.unavailable("softmax", "native", Setup(0.1, "cpu", "bf16"))
    assert "cuda precision" in impls.unavailable("softmax", "module", Setup(0.1, "cpu", "amp_fp16"))
    assert impls.unavailable("softmax", "module", Setup(0.1, "cpu", "bf16")) is None


def test_labels_of_the_new_axes_read_back_and_earlier_labels_stay():
    from bench.grid import DEFAULT_GRID, expand, parse_label

    for label in ("softmax/module/cpu/resident/w0/b256/t1/bf16", "softmax/module/cpu/torchvision/w4/b256/t1/px64",
                  "mlp/compiled/cpu/resident/w0/b256/t2/amp_bf16/px64", "softmax/ddp/cpu/resident/w0/b256/t1/k2"):
        assert parse_label(label).label() == label
    cell = parse_label("softmax/module/cpu/torchvision/w4/b256/t1/px64")
    assert (cell.precision, cell.image_size, cell.spec.widths[0]) == ("fp32", 64, 4096)
    assert all("fp32" not in c.label() and "px" not in c.label() for c in expand(DEFAULT_GRID))


def test_no_gate_key_is_written_out_as_a_tuple_of_names_in_bench():
    # a tuple of the three (not a call's arguments): (c.model, c.form, c.device), (model, form, device),
    # (r["model"], r["form"], r["device"]), ["model", "form", "device"]
    pattern = re.compile(r"(?<![\w.])\(\s*(\w+\.)?model\s*,\s*(\w+\.)?form\s*,\s*(\w+\.)?device\s*\)"
                         r"|\w+\[\"model\"\]\s*,\s*\w+\[\"form\"\]\s*,\s*\w+\[\"device\"\]"
                         r"|\[\"model\", \"form\", \"device\"\]")
    found = [f"{p.relative_to(ROOT)}:{n}" for p in (ROOT / "bench").rglob("*.py")
             for n, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not found, found


def test_time_to_accuracy_and_each_precision_against_fp32():
    import pandas as pd

    from bench.report.analysis import curves_summary

    def curve(precision, accs):
        return [dict(model="softmax", form="module", device="cpu", precision=precision, image_size=28, epoch=e,
                     train_loss=0.5, train_acc=a, test_acc=a, seconds=e) for e, a in enumerate(accs, 1)]

    curves = pd.DataFrame(curve("fp32", [0.78, 0.81, 0.83]) + curve("bf16", [0.75, 0.80, 0.82]))
    results = pd.DataFrame([dict(model="softmax", form="module", device="cpu", precision=p, image_size=28,
                                 world_size=1, batch_size=b, status="ok", epoch_s=s)
                            for p, b, s in (("fp32", 256, 2.0), ("fp32", 256, 1.5), ("bf16", 256, 3.0),
                                            ("fp32", 64, 0.5))])  # the fastest at the model's batch size counts
    table = curves_summary(curves, results).set_index("precision")
    assert table.loc["fp32", "target_acc"] == pytest.approx(0.81)  # the book's 0.83 less 0.02
    assert (table.loc["fp32", "epochs_to_target"], table.loc["bf16", "epochs_to_target"]) == (2, 3)
    assert table.loc["fp32", "time_to_target_s"] == pytest.approx(3.0)
    assert table.loc["bf16", "time_to_target_s"] == pytest.approx(9.0)
    assert table.loc["bf16", "x_fp32"] == pytest.approx(0.5) and table.loc["bf16", "test_acc_fp32"] == 0.83
    strict = curves_summary(curves, results, target=0.9)
    assert strict["epochs_to_target"].isna().all() and strict["time_to_target_s"].isna().all()


def test_a_run_folder_reads_back_its_precisions_and_image_sizes(tmp_path):
    from bench.runs.run_folder import read_results
    from tests.test_report import ok_row, write_run

    rows = [dict(ok_row("module", 256, 1000.0), precision=p, image_size=s) for p, s in (("bf16", 28), ("fp32", 64))]
    rows.append(ok_row("compiled", 256, 900.0))  # a row that predates the axes: their defaults
    frame = read_results(write_run(tmp_path / "run", rows))
    assert list(zip(frame["precision"], frame["image_size"])) == [("bf16", 28), ("fp32", 64), ("fp32", 28)]
