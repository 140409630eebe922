"""The ddp form and the world_size axis: K = 2 ranks with gloo on this machine, NCCL only with GPUs."""
from __future__ import annotations

import csv
import math

import pandas as pd
import pytest
import torch

import impls
from bench import cli, grid
from bench.gate import check
from bench.gate.cases import gate_cases
from bench.gate.check import key_of
from bench.grid import Cell, expand, parse_label, skip_reason
from bench.ranks import distributed
from bench.report.analysis import derived
from bench.report.scaling import add_scaling
from bench.runs.run_folder import Run


def linbench_main(capsys, *args) -> tuple[int, str, str]:
    """``linbench`` in this process: (exit status, stdout, stderr)."""
    capsys.readouterr()
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def ddp_cell(**kw) -> Cell:
    values = dict(model="linreg", form="ddp", device="cpu", loader="resident", workers=0, batch_size=10, threads=1,
                  world_size=2)
    return Cell(**{**values, **kw})


def test_labels_leave_out_one_rank_and_read_back_with_it():
    one, two = ddp_cell(world_size=1), ddp_cell()
    assert one.label() == "linreg/ddp/cpu/resident/w0/b10/t1" and two.label() == "linreg/ddp/cpu/resident/w0/b10/t1/k2"
    assert parse_label(one.label()) == one and parse_label(two.label()) == two
    assert Cell("linreg", "module", "cpu", "resident", 0, 10, 2).world_size == 1  # a cell written before the axis


def test_skip_rules_for_ranks():
    assert "runs as one process" in skip_reason(ddp_cell(form="module"))
    assert skip_reason(ddp_cell()) is None and skip_reason(ddp_cell(world_size=1)) is None
    if torch.cuda.device_count() < 2:
        assert "need as many GPUs" in skip_reason(ddp_cell(device="cuda")) or not torch.cuda.is_available()


def test_the_scaling_sub_grid_holds_only_distributed_forms():
    cells = expand(grid.DEFAULT_GRID)
    ranked = [c for c in cells if c.world_size > 1]
    assert ranked and all(c.form == "ddp" for c in ranked)
    assert {c.world_size for c in cells if c.form == "ddp"} == {1, 2}
    loop_only = expand(grid.DEFAULT_GRID, {"form": ["loop"]})  # --forms loop takes nothing from the ddp sub-grid
    assert all(c.world_size == 1 and c.threads == torch.get_num_threads() for c in loop_only)
    ddp_only = expand(grid.DEFAULT_GRID, {"model": ["softmax"], "form": ["ddp"], "world_size": [1, 2]})
    assert {c.label() for c in ddp_only if c.device == "cpu"} == {  # the acceptance spelling: the scaling cells
        "softmax/ddp/cpu/resident/w0/b256/t1", "softmax/ddp/cpu/resident/w0/b256/t1/k2"}


def test_two_ranks_pass_the_gate_with_uneven_and_empty_shares():
    cases = gate_cases("linreg", [10, 3], steps=12)  # batch 3 over 2 ranks: shares of 2 and 1; a last batch of 1
    results = distributed.check_cases(key_of("linreg", "ddp", "cpu"), cases, [2])
    assert results and all(r.status == "pass" for r in results), [r.reason for r in results]
    assert all(r.case.endswith("2 ranks") for r in results)
    assert max(r.param_max_abs for r in results) < 1e-5


class MeanOfMeans(impls.form_class("linreg", "ddp")):
    """The classic mistake: each rank's batch mean, averaged over ranks (wrong when the shares differ)."""

    def step(self, X, y):
        X, y = self.shard(X.to(self.device), y.to(self.device))
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss_sum(self.net(X), y) / max(len(y), 1)
        loss.backward()
        self.optimizer.step()
        return loss.detach()


def _planted(setup_s, cases):
    cls = distributed._global_loss(MeanOfMeans)
    return [check.check_case(key_of("linreg", "ddp", "cpu"), case, cls) for case in cases]


def test_the_gate_catches_a_mean_of_means_over_uneven_shares():
    cases = gate_cases("linreg", [3], steps=12)
    results = distributed.gang(2, 1, "cpu", _planted, cases)
    assert any(r.status == "fail" for r in results)


def test_add_scaling_divides_by_k_times_one_rank():
    rows = [dict(ddp_cell(world_size=k).as_dict(), status="ok", samples_per_s=v, allreduce_frac=0.1)
            for k, v in ((1, 100.0), (2, 150.0))]
    rows.append(dict(ddp_cell(world_size=2, batch_size=20).as_dict(), status="ok", samples_per_s=1.0,
                     allreduce_frac=0.1))
    rows.append(dict(ddp_cell(form="module", world_size=1).as_dict(), status="ok", samples_per_s=1.0,
                     allreduce_frac=math.nan))
    eff = add_scaling(pd.DataFrame(rows))["scaling_eff"].tolist()
    assert eff[:2] == [1.0, 0.75] and math.isnan(eff[2]) and math.isnan(eff[3])  # no one-rank cell; not distributed


def test_run_times_one_and_two_ranks_with_scaling_and_allreduce_share(tmp_path, capsys):
    code, out, err = linbench_main(capsys, "run", "--models", "linreg", "--forms", "ddp", "--world-sizes", "1,2",
                                   "--threads", "1", "--devices", "cpu", "--loaders", "resident", "--workers", "0",
                                   "--batch-sizes", "100", "--repeats", "3", "--no-curves", "--no-report",
                                   "--no-progress", "--out", str(tmp_path))
    assert code == 0, err
    folder = next(p for p in tmp_path.iterdir() if p.is_dir())
    run = Run(folder)
    rows = {int(r["world_size"]): r for r in derived(run.results, run.samples).to_dict("records")}
    assert set(rows) == {1, 2} and all(r["status"] == "ok" for r in rows.values()), rows
    one, two = rows[1], rows[2]
    assert float(one["scaling_eff"]) == 1.0
    assert float(two["scaling_eff"]) == pytest.approx(float(two["samples_per_s"]) / (2 * float(one["samples_per_s"])))
    assert float(two["samples_per_s_per_rank"]) == pytest.approx(float(two["samples_per_s"]) / 2)
    for r in rows.values():
        assert 0 <= float(r["allreduce_frac"]) <= 1 and float(r["setup_s"]) > 0 and r["threads"] == 1
        assert "rank(s) x 1 thread(s)" in r["reason"]
    gate = list(csv.DictReader(open(folder / "gate.csv")))
    assert {g["case"].rsplit(", ", 1)[1] for g in gate} == {"1 ranks", "2 ranks"}
    assert all(g["status"] == "pass" for g in gate)
    assert "linreg/ddp/cpu/resident/w0/b100/t1/k2" in out


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="NCCL with 2 ranks needs 2 GPUs (this machine has "
                    f"{torch.cuda.device_count()})")
def test_two_ranks_on_two_gpus_pass_the_gate_with_nccl():
    cases = gate_cases("linreg", [10], steps=12)
    assert all(r.status == "pass" for r in distributed.check_cases(key_of("linreg", "ddp", "cuda"), cases, [2]))


def test_ranks_under_torchrun_write_a_run_folder_with_every_node(tmp_path):
    import json
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun is not installed beside this Python")
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([torchrun, "--standalone", "--nproc-per-node", "2", "-m", "bench.cli", "ranks",
                           "linreg/ddp/cpu/resident/w0/b100/t1/k2", "--out", str(tmp_path), "--steps", "12"],
                          cwd=root, capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "PYTHONPATH": str(root)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ok" in proc.stdout and "2 ranks, 1 node(s)" in proc.stdout
    folder = next(p for p in tmp_path.iterdir() if p.is_dir())
    meta = json.loads((folder / "meta.json").read_text())
    assert [n["rank"] for n in meta["nodes"]] == [0, 1] and all(n["host"] for n in meta["nodes"])
    # linbench run's lifecycle on rank 0: peaks and the load before the clock, the folder complete after it
    assert meta["complete"] and meta["peaks"]["cpu"]["gflops"] > 0 and "load_at_start" in meta
    rows = list(csv.DictReader(open(folder / "results.csv")))
    assert len(rows) == 1 and rows[0]["status"] == "ok" and rows[0]["world_size"] == "2"
    assert all(g["status"] == "pass" for g in csv.DictReader(open(folder / "gate.csv")))


def test_ranks_outside_torchrun_is_a_one_line_error(capsys):
    code, _, err = linbench_main(capsys, "ranks", "linreg/ddp/cpu/resident/w0/b100/t1/k2")
    assert code == 2 and err.count("\n") == 1 and "torchrun" in err
    code, _, err = linbench_main(capsys, "ranks", "linreg/module/cpu/resident/w0/b100/t1")
    assert code == 2 and "not a distributed form" in err
