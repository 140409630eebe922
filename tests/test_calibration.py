"""Calibration of ``linbench ab`` on a busy machine (one core kept spinning throughout), measured and shown.

In a temporary clone (this working tree's bench/ and impls/ committed over HEAD, so nothing waits on a
commit of them): an A/A (one revision on both sides) gives no ``slower`` or ``faster`` verdict, exits 0 and
writes ``calibration.json``; then one comparison of two commits, B's making the ``module`` form's step 1.5-2.5x
slower (three extra forward passes, no sleep) and ``--plant 1.5`` slowing every B step by a busy wait: it exits
1, names both steps ``slower``, the ``vectorized`` step's interval covering the plant's true ratio (measured apart
from ab: a busy wait slows the step's own work a little too), and calls neither loader (untouched) a change;
``--calibrate``'s rates are summarized and shown. The grid is two softmax cells on the resident loader (one
torch thread: ab's default); ``--quick`` keeps the gate and the peak probe short, and each run stops after 3
rounds (a 1.5x change is decided in 3: a round's ratio spreads about 1%).
"""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from bench.regress.ab_worker import pooled
from bench.runs.run_folder import Run
from bench.timing.timer import Stats

ROOT = Path(__file__).resolve().parent.parent
GRID = ["--quick", "--models", "softmax", "--forms", "module,vectorized", "--loaders", "resident",
        "--batch-sizes", "256", "--devices", "cpu", "--rounds", "3", "--max-rounds", "12", "--budget", "30",
        "--repeats", "3"]
A_A = ["--max-rounds", "3"]  # an A/A stops at its 3 rounds: what matters there is that nothing is called a change
FEW = ["--max-rounds", "3"]  # a 1.5x change: 3 rounds decide it (a round spreads about 1%)
MODULE, VECTORIZED = "softmax/module/cpu/resident/w0/b256/t1", "softmax/vectorized/cpu/resident/w0/b256/t1"
PLANTED = ("        loss = self.loss(self.net(X), y)\n",
           "        self.net(X), self.net(X), self.net(X)  # planted: three extra forward passes, 1.5-2.5x the step\n"
           "        loss = self.loss(self.net(X), y)\n")


def git(repo, *args):
    return subprocess.run(["git", "-c", "user.name=linbench", "-c", "user.email=linbench@localhost", *args],
                          cwd=repo, check=True, capture_output=True, text=True, timeout=120).stdout.strip()


def ab(repo, *args, timeout=600):
    return subprocess.run([sys.executable, "-m", "bench.regress.ab", *args], cwd=repo, capture_output=True, text=True,
                          timeout=timeout)


def folder_of(out: Path) -> Path:
    (folder,) = [p for p in out.iterdir() if p.name.startswith("ab-")]
    return folder


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    """A clone of this repository at HEAD with this working tree's harness and forms committed as ``base``."""
    repo = tmp_path_factory.mktemp("ab") / "repo"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(repo)], check=True, capture_output=True, timeout=300)
    for name in ("bench", "impls"):
        shutil.rmtree(repo / name)
        shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    shutil.copy2(ROOT / "pyproject.toml", repo / "pyproject.toml")
    git(repo, "add", "-A")
    git(repo, "commit", "--quiet", "--allow-empty", "-m", "base")
    return repo


def test_pooled_row_is_recomputed_from_every_slot():
    samples = {"epoch": [1.0, 2.0, 3.0, 4.0, 5.0], "step": [0.001, 0.002, 0.003], "loader_epoch": [0.5, 0.7]}
    last = {"epoch_s": 5.0, "step_ms": 3.0, "samples_per_s": 100.0, "epoch_roofline_frac": 0.1, "gflops": 2.0,
            "gbps": 1.0, "roofline_frac": 0.2, "reason": "disturbed: others used 50%", "disturbed": True}
    row = pooled(last, samples, slots=3, disturbed=1, load=0.5)
    assert (row["epoch_s"], row["n"], row["step_n"], row["loader_n"]) == (3.0, 5, 3, 2)
    assert row["step_ms"] == pytest.approx(2.0) and row["loader_epoch_s"] == pytest.approx(0.6)
    assert (row["epoch_s_lo"], row["epoch_s_hi"]) == (Stats.of(samples["epoch"]).lo, Stats.of(samples["epoch"]).hi)
    assert row["samples_per_s"] == pytest.approx(500 / 3) and row["gflops"] == pytest.approx(3.0)
    assert row["reason"].startswith("3 slot(s) of an A/B pooled") and "disturbed in 1 of 3" in row["reason"]


def test_bad_revisions_and_a_dirty_worktree_are_one_line_errors(clone, tmp_path, monkeypatch, capsys):
    from bench.regress.ab import main

    monkeypatch.chdir(clone)
    first = git(clone, "rev-list", "--max-parents=0", "HEAD").splitlines()[0]
    sha = git(clone, "rev-parse", "HEAD")
    tree = clone / ".linbench" / "ab" / sha[:12]

    def dirty():
        git(clone, "worktree", "add", "--detach", str(tree), sha)
        (tree / "README.md").write_text("edited\n")

    for args, message, before in [(["nosuchrev", "HEAD"], "is not a revision", None),
                                  ([first, "HEAD"], "predates bench/ab_worker.py", None),
                                  (["HEAD", "HEAD", "--rounds", "0"], "--rounds", None),
                                  (["HEAD", "HEAD", "--plant", "0.5"], "--plant", None),
                                  (["HEAD"], "two revisions", None),
                                  (["HEAD", "HEAD~1", "--calibrate", "1"], "one REV", None),
                                  (["HEAD", "--calibrate", "1", "--plants", "0.9"], "--plants", None),
                                  (["HEAD", "HEAD", "--forms", "fortran"], "fortran", None),
                                  (["HEAD", "HEAD"], "has local changes", dirty)]:
        if before:
            before()
        assert main([*args, "--out", str(tmp_path)]) == 2, args
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("linbench: error:") and message in err, err
    git(tree, "checkout", "--", "README.md")  # clean again: the next tests reuse it


def test_a_a_gives_no_false_verdict_and_writes_its_calibration(clone, busy_core, real_data, tmp_path):
    out = ab(clone, "HEAD", "HEAD", *GRID, *A_A, "--out", str(tmp_path))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    folder = folder_of(tmp_path)
    frame = pd.read_csv(folder / "compare.csv")
    assert set(frame["cell"]) == {MODULE, VECTORIZED} and set(frame["metric"]) == {"epoch", "step", "loader_epoch"}
    assert not frame["verdict"].isin(["slower", "faster"]).any(), out.stdout
    per_slot = frame["metric"].map({"epoch": 3, "step": 20, "loader_epoch": 3})  # --repeats 3, 20 step passes
    assert (frame["rounds"] == 3).all() and (frame["n_a"] == 3 * per_slot).all()  # one slot a side and round
    assert frame["reason"].str.contains("Holm over 6 comparison").all()
    cal = json.loads((folder / "calibration.json").read_text())
    assert cal["comparisons"] == 6 and cal["cells"] == 2 and cal["slower"] == cal["faster"] == 0
    assert cal["false_positive_rate"] == 0 and cal["rounds"] == 3
    assert f"{cal['non_same']} of 6 comparisons were not `same`" in out.stdout
    sha = git(clone, "rev-parse", "HEAD")
    for side in "AB":  # ordinary run folders, each timed by the revision's own worker, at one torch thread
        run = Run(folder / side)
        assert run.meta["complete"] and run.meta["ab"]["side"] == side and run.meta["env"]["commit"] == sha
        assert (run.results.set_index("form").loc["module", "status"] == "ok").any()
        assert set(run.results["threads"]) == {1}
    assert (folder / "report" / "index.html").exists(), out.stderr[-2000:]
    print(out.stdout)  # the measured calibration, shown with -s / in the report of a failure


def test_a_planted_commit_and_a_busy_wait_plant_are_slower_and_exit_1(clone, busy_core, real_data, tmp_path):
    """One comparison of two commits: B makes the ``module`` form's step 1.5-2.5x slower (three extra forward
    passes), and ``--plant 1.5`` slows every B step by a busy wait, so B's ``vectorized`` step (its code unchanged)
    is slower by the plant alone, whose true ratio is measured apart from ab."""
    from bench.regress.calibration import plant_reference

    path = clone / "impls" / "module.py"
    text = path.read_text()
    assert text.count(PLANTED[0]) == 1
    path.write_text(text.replace(*PLANTED))
    git(clone, "commit", "--quiet", "-am", "planted: the module form's step does three extra forward passes")
    out = ab(clone, "HEAD~1", "HEAD", *GRID, "--plant", "1.5", *FEW, "--no-report", "--out", str(tmp_path))
    assert out.returncode == 1, out.stdout[-3000:] + out.stderr[-3000:]
    frame = pd.read_csv(folder_of(tmp_path) / "compare.csv").set_index(["cell", "metric"])
    assert frame.loc[(MODULE, "step"), "verdict"] == "slower", out.stdout
    assert frame.loc[(MODULE, "step"), "ratio"] >= 1.3 * 1.45, out.stdout  # the commit's change times the plant
    truth = plant_reference(VECTORIZED, 1.5, chunks=5, pairs=10)["true_ratio"]  # the plant's step ratio, apart from ab
    # the busy wait slows the step's own work too (1.71 in one run on the 2-core EPYC with a core busy): what
    # matters is that ab's interval covers the ratio measured here, whatever it is
    assert 1.45 <= truth <= 2.0, truth
    step = frame.loc[(VECTORIZED, "step")]
    assert step["verdict"] == "slower" and step["ratio_lo"] <= truth <= step["ratio_hi"], (truth, out.stdout)
    for cell in (MODULE, VECTORIZED):  # the loader is neither changed nor planted
        assert frame.loc[(cell, "loader_epoch"), "verdict"] not in ("slower", "faster"), out.stdout
    assert "calibration" not in out.stdout  # two revisions and a plant: no A/A record
    print(out.stdout)


def test_calibrate_summarizes_rates_with_intervals_and_the_report_shows_them(tmp_path, monkeypatch):
    from bench.regress.calibration import lines, machine_rates, summarize_runs, write

    monkeypatch.setenv("LINBENCH_CACHE", str(tmp_path / "cache"))
    rows = []
    for run in range(5):  # 5 A/A runs of 2 comparisons, one false `slower`; 5 planted x1.3 runs, truly 1.33
        for metric in ("step", "loader_epoch"):
            wrong = (run, metric) == (0, "step")
            rows.append(dict(run=f"aa-{run}", plant=1.0, seconds=60.0, rounds=8, metric=metric, ratio=1.0,
                             ratio_lo=0.97, ratio_hi=1.03, verdict="slower" if wrong else "same"))
            rows.append(dict(run=f"x1.3-{run}", plant=1.3, seconds=50.0, rounds=5, metric=metric,
                             ratio=1.3 if metric == "step" else 1.0, ratio_lo=1.2 if run else 1.31,
                             ratio_hi=1.4 if run else 1.32, verdict="slower" if metric == "step" else "same",
                             **({"true_ratio": 1.33} if metric == "step" else {})))
    rates = summarize_runs(pd.DataFrame(rows))
    aa, planted = rates["A/A"], rates["x1.3"]
    assert aa["false_verdicts"]["k"] == 1 and aa["false_verdicts"]["n"] == 10
    assert aa["false_verdicts"]["lo"] < 0.1 < aa["false_verdicts"]["hi"]  # Clopper-Pearson around 1/10
    assert aa["runs_with_a_false_verdict"]["k"] == 1 and aa["same"]["k"] == 9
    assert planted["power_step"]["k"] == 5 and planted["coverage_step"]["k"] == 4  # run 0's missed 1.33
    assert planted["false_loader"]["k"] == 0 and aa["seconds_median"] == 60
    text = lines(rates)
    assert text[0].startswith("A/A (5 runs") and "1/10 = 10%" in text[0]
    assert "covered the true ratio (1.330, measured apart) 4/5 = 80%" in text[1]
    summary = {"host": "testhost", "date": "today", "commit": "f" * 40, "settings": {"budget": 180},
               "overrides": {"model": ["softmax"]}, "rates": rates}
    write(tmp_path / "report", pd.DataFrame(rows), summary, tmp_path)
    assert "1/10 = 10%" in (tmp_path / "report" / "README.md").read_text()
    assert len(pd.read_csv(tmp_path / "report" / "runs.csv")) == 20
    assert machine_rates("testhost")["rates"]["x1.3"]["power_step"]["k"] == 5 and machine_rates("other") is None
