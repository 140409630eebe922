"""Sharded grids and merging shard runs: the split (deterministic, disjoint, whole, balanced by expected
time), ``linbench run --shard I/N``, ``linbench merge`` (what it joins and what it refuses) and the
machine column with speedups never across machines unless asked."""
import json
import shutil

import pytest
import torch

import impls
from bench import UserError, cli
from bench.grid import AXIS_TABLE, DEFAULT_GRID, QUICK_GRID, expand, label_of, sample_cap, skip_reason
from bench.report.analysis import add_speedup, cross_machine_rows, derived, headlines
from bench.runs import shard
from bench.runs.run_folder import META, RESULTS, Run, read_meta, read_results
from bench.runs.summary import compact, wide

# a tiny grid: linreg, two forms, the baseline's loader and the resident one, batch 10: 4 cells of one
# thread group, so the baseline cell (module/torchvision) and the others share a speedup group
TINY = {"--models": "linreg", "--forms": "vectorized,module", "--devices": "cpu", "--loaders": "resident,torchvision",
        "--workers": "0", "--batch-sizes": "10", "--threads": "1"}


def tiny_args() -> list[str]:
    """The tiny grid's flags; an axis it does not name (one added later) pinned to its first default value."""
    given = dict(TINY)
    for axis in AXIS_TABLE:
        if axis.flag not in given and axis.default():
            given[axis.flag] = str(axis.default()[0])
    return [x for flag, value in given.items() for x in (flag, value)]


def tiny_cells():
    overrides = {a.name: a.values(v) for a in AXIS_TABLE for flag, v in zip(tiny_args()[::2], tiny_args()[1::2])
                 if a.flag == flag}
    return expand(QUICK_GRID, overrides)


def linbench(capsys, *args) -> tuple[int, str, str]:
    threads = torch.get_num_threads()
    try:
        status = cli.main([str(a) for a in args])
    finally:
        torch.set_num_threads(threads)  # a cell's threads axis acts on the process
    out, err = capsys.readouterr()
    return status, out, err


def one_line_error(status, err):
    assert status == 2, err
    assert err.count("\n") == 1 and err.startswith("linbench: error:") and "Traceback" not in err


# -- the split ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("count", [1, 2, 3, 4, 7])
def test_split_is_deterministic_disjoint_whole_and_balanced(count):
    cells = expand(DEFAULT_GRID)
    shards = shard.assign(cells, count)
    assert shards == shard.assign(cells, count)
    assert [{c.key() for c in s} for s in shards] == [{c.key() for c in s} for s in shard.assign(cells[::-1], count)]
    keys = [c.key() for s in shards for c in s]
    assert len(keys) == len(set(keys)) and set(keys) == {c.key() for c in cells}
    costs = [sum(map(shard.cost, s)) for s in shards]
    total, largest = sum(costs), max(map(shard.cost, cells))
    assert max(costs) <= total / count + largest  # the greedy bound
    assert max(costs) <= max(1.15 * total / count, largest) or count > len(cells) // 4  # no shard less than a cell
    assert [c.label() for c in shard.select(cells, count, count)] == [c.label() for c in shards[-1]]


def test_the_split_is_the_same_with_and_without_a_gpu(monkeypatch):
    cells = expand(DEFAULT_GRID)
    split = [[c.label() for c in s] for s in shard.assign(cells, 3)]
    monkeypatch.setattr(impls, "cuda_unavailable", lambda: None)  # a machine with GPUs
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    assert [[c.label() for c in s] for s in shard.assign(cells, 3)] == split
    monkeypatch.setattr(impls, "cuda_unavailable", lambda: "no CUDA device on this machine")
    assert [[c.label() for c in s] for s in shard.assign(cells, 3)] == split


def test_cost_follows_the_work():
    cells = {c.label(): c for c in expand(QUICK_GRID)}
    by_cost = sorted(cells.values(), key=shard.cost)
    skipped = [c for c in by_cost if skip_reason(c, here=False)]
    assert all(shard.cost(c) < 0.01 for c in skipped)
    timed = [c for c in by_cost if not skip_reason(c, here=False)]
    assert all(shard.cost(c) > 0.3 for c in timed)
    softmax = [c for c in timed if c.model == "softmax"]
    capped = [c for c in softmax if sample_cap(c)]  # the pure-Python form: slow even capped
    if capped:
        assert shard.cost(capped[0]) > max(shard.cost(c) for c in softmax if not sample_cap(c)
                                           and c.loader == "resident")


@pytest.mark.parametrize("text", ["3/2", "x", "0/2", "1/0", "1-2", "", "2/2/2"])
def test_bad_shard_spellings_are_one_line_errors(text, capsys, tmp_path):
    with pytest.raises(UserError):
        shard.parse(text)
    status, _, err = linbench(capsys, "run", *tiny_args(), "--shard", text, "--out", tmp_path, "--no-progress",
                              "--no-report")
    one_line_error(status, err)
    assert not list(tmp_path.iterdir()), "nothing is run"


# -- shard runs and their merge ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Both shards of the tiny grid, each run as its own ``linbench run --shard I/2``."""
    out = tmp_path_factory.mktemp("shards")
    folders = []
    threads = torch.get_num_threads()
    try:
        for i in (1, 2):
            assert cli.main(["run", *tiny_args(), "--shard", f"{i}/2", "--quick", "--repeats", "1", "--no-curves",
                             "--no-progress", "--no-report", "--out", str(out / f"s{i}")]) == 0
            folders.append(next((out / f"s{i}").iterdir()))
    finally:
        torch.set_num_threads(threads)
    return folders


def copy(folder, to, **edit):
    """A copy of a run folder, its meta.json edited: ``edit`` maps a dotted key to a value (None: removed)."""
    shutil.copytree(folder, to)
    meta = json.loads((to / META).read_text())
    for dotted, value in edit.items():
        *path, last = dotted.split(".")
        node = meta
        for k in path:
            node = node[k]
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    (to / META).write_text(json.dumps(meta))
    return to


def test_each_shard_records_the_whole_grid_and_its_own_cells(shards):
    cells = tiny_cells()
    metas = [read_meta(f) for f in shards]
    for i, (folder, meta) in enumerate(zip(shards, metas), 1):
        assert folder.name.endswith(f"-shard{i}of2") and meta["complete"]
        assert meta["shard"]["index"] == i and meta["shard"]["count"] == 2
        assert meta["shard"]["grid_cells"] == len(cells)
        assert meta["config"]["overrides"]["model"] == ["linreg"]
        assert sorted(read_results(folder).apply(lambda r: label_of(r), axis=1)) == sorted(meta["shard"]["cells"])
        gated = {(g["model"], g["form"], g["device"]) for g in meta["gate"]}
        assert gated == {(c.model, c.form, c.device) for c in cells if c.label() in meta["shard"]["cells"]
                         and not skip_reason(c)}  # the gate only for the shard's forms
    assert not set(metas[0]["shard"]["cells"]) & set(metas[1]["shard"]["cells"])
    assert {*metas[0]["shard"]["cells"], *metas[1]["shard"]["cells"]} == {c.label() for c in cells}


def test_resume_of_a_shard_finishes_only_its_cells(shards, tmp_path, capsys):
    folder = copy(shards[0], tmp_path / shards[0].name, complete=False)
    frame = read_results(folder)
    frame.iloc[1:].to_csv(folder / RESULTS, index=False)  # the first cell "was not finished"
    status, _, err = linbench(capsys, "run", "--resume", folder, "--shard", "1/2", "--no-progress", "--no-report")
    one_line_error(status, err)
    status, _, err = linbench(capsys, "run", "--resume", folder, "--no-progress", "--no-report")
    assert status == 0, err
    again, meta = read_results(folder), read_meta(folder)
    assert meta["complete"] and sorted(again.apply(label_of, axis=1)) == sorted(meta["shard"]["cells"])


def test_merged_shards_hold_the_grid_and_report_like_a_run(shards, tmp_path, capsys):
    status, out, err = linbench(capsys, "merge", *shards, "--out", tmp_path / "merged")
    assert status == 0, err
    run = Run(tmp_path / "merged")
    assert sorted(run.results.apply(label_of, axis=1)) == sorted(c.label() for c in tiny_cells())
    assert run.meta["complete"] and run.meta["merged_from"] == [f.name for f in shards]
    assert list(run.meta["machines"]) == [run.meta["env"]["host"]] and "shard" not in run.meta
    assert "speedup" not in run.results and "scaling_eff" not in run.results  # the store keeps what was measured
    results = derived(run.results, run.samples)
    assert results["speedup"].notna().sum() == (results["status"] == "ok").sum()  # one machine: all
    assert "machine" not in out.splitlines()[0]  # one machine: the summary as before
    assert not [p for p in (tmp_path / "merged").iterdir() if p.name.startswith(".")]
    assert (tmp_path / "merged" / "gate.csv").exists() and len(run.gate) == len(
        {(g["model"], g["form"], g["device"], g["case"]) for g in run.meta["gate"]})
    status, out, err = linbench(capsys, "report", tmp_path / "merged", "--out", tmp_path / "report")
    assert status == 0, err
    page = (tmp_path / "report" / "report.md").read_text()
    assert "| machine |" not in page and "cross-machine" not in page
    status, out, err = linbench(capsys, "compare", shards[0], tmp_path / "merged")
    assert status in (0, 1), err


def test_two_machines_get_a_machine_column_and_no_speedup_across_them(shards, tmp_path, capsys):
    other = copy(shards[1], tmp_path / shards[1].name, **{"env.host": "other-box"})
    status, out, err = linbench(capsys, "merge", shards[0], other, "--out", tmp_path / "merged")
    assert status == 0, err
    run = Run(tmp_path / "merged")
    run.results = derived(run.results, run.samples)
    assert set(run.results["machine"]) == {run.meta["env"]["host"], "other-box"}
    assert set(run.meta["machines"]) == {run.meta["env"]["host"], "other-box"}
    crossing = cross_machine_rows(run.results)
    assert len(crossing) and crossing["speedup"].isna().all()  # the baseline is on one machine only
    same = run.results[(run.results["status"] == "ok") & ~run.results.index.isin(crossing.index)]
    assert same["speedup"].notna().all()
    assert out.splitlines()[0].split()[:2] == ["cell", "machine"] and "other-box" in out
    assert "machine" in wide(run.results)[0].split() and "machine" in compact(run.results)[0]
    assert any("no speedup for" in line and "--cross-machine" in line for line in headlines(run.results))
    status, _, err = linbench(capsys, "report", tmp_path / "merged", "--out", tmp_path / "report")
    assert status == 0, err
    page = (tmp_path / "report" / "report.md").read_text()
    assert "| machine |" in page and "other-box" in page and "computed within one machine only" in page
    status, _, err = linbench(capsys, "report", tmp_path / "merged", "--out", tmp_path / "across", "--cross-machine")
    assert status == 0, err
    assert "compare different machines" in (tmp_path / "across" / "report.md").read_text()
    across = add_speedup(run.results.copy(), run.samples, cross_machine=True)
    assert across.loc[crossing.index, "speedup"].notna().all()


REFUSED = {
    "different grids": ({"config.repeats": 7}, "different grids"),
    "different schemas": ({"schema": 99}, "different results schemas"),
    "interrupted": ({"complete": False}, "interrupted"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_merge_refuses_mismatched_runs_in_one_line(case, shards, tmp_path, capsys):
    edit, words = REFUSED[case]
    other = copy(shards[1], tmp_path / "other", **edit)
    status, _, err = linbench(capsys, "merge", shards[0], other, "--out", tmp_path / "merged")
    one_line_error(status, err)
    assert words in err and not (tmp_path / "merged").exists()


def test_merge_refuses_other_threads_a_missing_shard_and_overlapping_cells(shards, tmp_path, capsys):
    def refused(words, *runs):
        status, _, err = linbench(capsys, "merge", *runs, "--out", tmp_path / "merged")
        one_line_error(status, err)
        assert words in err, err
        assert not (tmp_path / "merged").exists()

    # thread settings: both left to torch's own threads, one machine with 16
    a = copy(shards[0], tmp_path / "a", **{"config.overrides.threads": None})
    b = copy(shards[1], tmp_path / "b", **{"config.overrides.threads": None, "env.threads": 16})
    refused("thread settings", a, b)
    refused("shard 2 of 2 is missing", shards[0])
    c = copy(shards[0], tmp_path / "c", **{"shard.count": 3})
    d = copy(shards[1], tmp_path / "d", **{"shard.count": 3})
    refused("shard 3 of 3 is missing", c, d)
    refused("given twice", shards[0], copy(shards[0], tmp_path / "again"))
    e = copy(shards[0], tmp_path / "e", shard=None)
    f = copy(shards[0], tmp_path / "f", shard=None)
    refused("is in both", e, f)  # unsharded runs whose cells overlap
    refused("not a shard run", shards[0], copy(shards[1], tmp_path / "g", shard=None))
