"""What ``linbench ab``'s verdicts are worth on this machine, measured: an A/A run's record
(:func:`record_aa`), and ``linbench ab --calibrate N`` (:func:`calibrate_machine`), which runs 2N A/A
comparisons and N comparisons per planted effect (B's steps slowed by a busy wait of a known factor,
:class:`bench.timing.cell.Planted`) and writes the false-positive rate, the share decided ``same``, the power per
effect and how often the interval covered the planted ratio, each with its 95% interval (Clopper-Pearson),
into a report folder and into this machine's cache, where the report's verdict view finds it.

A plant slows every step by about its factor, but not exactly: after a busy wait the next step's own work runs a
little slower too (on the 2-core EPYC a plant of 1.1 makes the step 1.12x). So the true ratio of the ``step``
metric is measured apart from ``ab`` (:func:`plant_reference`: the planted and the plain form in one process,
their step passes alternating) and the coverage is judged against it; ``loader_epoch`` is untouched (true ratio
1); an ``epoch`` holds loader work too, so its true ratio lies between 1 and the step's.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import socket
import sys
from pathlib import Path

import pandas as pd

from bench import UserError
from bench.runs.folder import write_atomic

RUNS = "runs.csv"
SUMMARY = "calibration.json"


def record_aa(folder: Path, frame, args, took: float) -> str:
    """An A/A's calibration.json (one revision on both sides: every verdict but ``same`` counted), and its line."""
    done = frame[frame["metric"].astype(str) != ""]
    by = {v: int((done["verdict"] == v).sum()) for v in ("slower", "faster", "inconclusive", "same")}
    m, k = len(done), len(done) - by["same"]
    cal = {"cells": int(done["cell"].nunique()), "comparisons": m, "non_same": k, "false_positive_rate":
           (by["slower"] + by["faster"]) / m if m else None, **by, "significant": by["slower"] + by["faster"],
           "disturbed": int(done["disturbed"].sum()), "rounds": int(done["rounds"].max()) if m else 0,
           "seconds": round(took, 1), **{a: getattr(args, a) for a in ("min_effect", "alpha", "budget", "quick")}}
    write_atomic(folder / "calibration.json", json.dumps(cal, indent=2))
    return (f"A/A calibration: {k} of {m} comparisons were not `same` ({by['slower']} slower, {by['faster']} faster, "
            f"{by['inconclusive']} inconclusive) ({folder / 'calibration.json'})")


def plant_reference(label: str, factor: float, data_dir=None, chunks: int = 10, pairs: int = 20) -> dict:
    """The true step ratio of a plant of ``factor`` in the cell ``label``, measured without ``ab``: a planted and a
    plain copy of the form in this process, ``chunks`` x ``pairs`` step passes of each taken in turns (A B B A),
    each chunk one value (:func:`bench.regress.stats.round_log_ratio`); the ratio and its 95% interval."""
    import time

    import torch

    from bench.grid import parse_label
    from bench.regress.stats import paired
    from bench.timing.cell import CellBench, Settings

    cell, threads = parse_label(label), torch.get_num_threads()
    benches = [CellBench(cell, Settings(data_dir=data_dir, plant=f)) for f in (1.0, factor)]
    try:
        batches = []
        for bench in benches:
            bench.warm()
            batches.append(bench.device_batches())
        sides = ([], [])
        for _ in range(chunks):
            chunk = ([], [])
            for k in range(2 * pairs):
                side = (k + k // 2) % 2  # A B B A ...
                start = time.perf_counter()
                benches[side].steps(batches[side])
                chunk[side].append(time.perf_counter() - start)
            for side in (0, 1):
                sides[side].append(chunk[side])
        est = paired(*sides)
        lo, hi = est.interval(0.05)
        return {"true_ratio": est.ratio, "true_lo": lo, "true_hi": hi}
    finally:
        for bench in benches:
            bench.close()
        torch.set_num_threads(threads)  # the cell's thread count was this process's for the measurement only


def rate(k: int, n: int) -> dict:
    """k of n, the share and its exact 95% interval (Clopper-Pearson)."""
    from scipy.stats import binomtest

    if not n:
        return {"k": 0, "n": 0, "rate": None, "lo": None, "hi": None}
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    return {"k": k, "n": n, "rate": k / n, "lo": float(ci.low), "hi": float(ci.high)}


def summarize_runs(runs: pd.DataFrame) -> dict:
    """The rates over every calibration run: per plant (1: the A/A runs) and metric."""
    out = {}
    for plant, group in runs.groupby("plant"):
        kind = "A/A" if plant == 1 else f"x{plant:g}"
        per_run = group.groupby("run")
        entry = {"runs": int(group["run"].nunique()), "seconds_median": float(per_run["seconds"].first().median()),
                 "seconds_max": float(per_run["seconds"].first().max()),
                 "rounds_median": float(group["rounds"].median())}
        if plant == 1:
            wrong = group["verdict"].isin(["slower", "faster"])
            entry.update(false_verdicts=rate(int(wrong.sum()), len(group)),
                         runs_with_a_false_verdict=rate(int(wrong.groupby(group["run"]).any().sum()), entry["runs"]),
                         same=rate(int((group["verdict"] == "same").sum()), len(group)))
        else:
            step, loader = group[group["metric"] == "step"], group[group["metric"] == "loader_epoch"]
            truth = step["true_ratio"] if "true_ratio" in step else plant
            covered = (step["ratio_lo"] <= truth) & (truth <= step["ratio_hi"])
            entry.update(power_step=rate(int((step["verdict"] == "slower").sum()), len(step)),
                         coverage_step=rate(int(covered.sum()), len(step)),
                         step_ratio_median=float(step["ratio"].median()) if len(step) else None,
                         true_ratio_median=float(truth.median()) if len(step) else None,
                         false_loader=rate(int(loader["verdict"].isin(["slower", "faster"]).sum()), len(loader)),
                         epoch_verdicts=group[group["metric"] == "epoch"]["verdict"].value_counts().to_dict())
        out[kind] = entry
    return out


def _pct(r: dict) -> str:
    return "-" if r["rate"] is None else f"{r['k']}/{r['n']} = {r['rate']:.0%} [{r['lo']:.0%}, {r['hi']:.0%}]"


def lines(summary: dict) -> list[str]:
    """The calibration in sentences, for the terminal, its README and the report's verdict view."""
    out = []
    for kind, e in summary.items():
        took = f"{e['runs']} runs, {e['seconds_median']:.0f} s a run (at most {e['seconds_max']:.0f}), " \
               f"{e['rounds_median']:.0f} rounds"
        if kind == "A/A":
            out.append(f"A/A ({took}): false slower/faster {_pct(e['false_verdicts'])} of comparisons, runs with any "
                       f"{_pct(e['runs_with_a_false_verdict'])}; decided same {_pct(e['same'])}")
        else:
            truth = e.get("true_ratio_median") or float(kind[1:])
            out.append(f"planted {kind} ({took}): step called slower {_pct(e['power_step'])}, its interval covered "
                       f"the true ratio ({truth:.3f}, measured apart) {_pct(e['coverage_step'])}, median ratio "
                       f"{e['step_ratio_median']:.3f}; loader "
                       f"(unchanged) called slower/faster {_pct(e['false_loader'])}")
    return out


def cache_file(host: str) -> Path:
    from bench.data import cache_dir

    return cache_dir() / "calibration" / f"{host}.json"


def machine_rates(host: str | None) -> dict | None:
    """The last calibration measured on ``host`` (``linbench ab --calibrate``), or None."""
    path = cache_file(host) if host else None
    try:
        return json.loads(path.read_text()) if path and path.exists() else None
    except (OSError, ValueError):
        return None


def calibrate_machine(args, repo: Path, overrides: dict) -> int:
    """``linbench ab --calibrate N``: N A/A runs and N runs per planted effect, interleaved; the rates written."""
    from bench.regress.revisions import resolve, worktree
    from bench.regress.rounds import judge, measure, new_folder

    try:
        plants = sorted({float(x) for x in str(args.plants).split(",") if x.strip()})
    except ValueError:
        raise UserError(f"--plants takes factors such as 1.05,1.1,1.3, got {args.plants!r}") from None
    if args.calibrate < 1 or not plants or min(plants) <= 1:
        raise UserError(f"--calibrate takes N >= 1 and --plants factors above 1, got {args.calibrate}, {args.plants}")
    if args.rev_b and args.rev_b != args.rev_a:
        raise UserError("--calibrate times one revision against itself: give one REV (default HEAD)")
    sha = resolve(repo, args.rev_a or "HEAD")
    tree, host = worktree(repo, sha), socket.gethostname()
    shas, report = {"A": sha, "B": sha}, Path(args.report_dir or f"reports/calibration-{host}")
    top = new_folder(args.out, shas, prefix="calibrate")
    rows, kinds = [], [1.0, 1.0, *plants]  # twice as many A/A runs: a small rate needs more runs than a power
    for i in range(args.calibrate):
        for plant in kinds:  # interleaved: the machine's changes over the hour hit every kind alike
            run_args = argparse.Namespace(**{**vars(args), "plant": plant, "rev_a": sha, "rev_b": sha})
            print(f"calibration {i + 1}/{args.calibrate}: {'A/A' if plant == 1 else f'planted x{plant:g}'}",
                  file=sys.stderr)
            folder = new_folder(top, shas, prefix="aa" if plant == 1 else f"x{plant:g}")
            _, _, took = measure(folder, {"A": tree, "B": tree}, shas, overrides, run_args)
            frame = judge(folder, run_args)[2]
            frame = frame[frame["metric"].astype(str) != ""]
            truth = {c: plant_reference(c, plant, args.data_dir) if plant != 1 else {"true_ratio": 1.0}
                     for c in frame["cell"].unique()}
            rows += [{"run": folder.name, "plant": plant, "seconds": took, **r,
                      **(truth[r["cell"]] if r["metric"] == "step" else {})} for r in frame.to_dict("records")]
    runs = pd.DataFrame(rows)
    summary = {"host": host, "date": dt.datetime.now().isoformat(timespec="seconds"), "commit": sha,
               "settings": {k: getattr(args, k) for k in ("rounds", "max_rounds", "budget", "min_effect", "alpha",
                                                           "repeats", "quick")},
               "overrides": overrides, "rates": summarize_runs(runs)}
    write(report, runs, summary, top)
    print("\n".join(lines(summary["rates"])))
    print(f"calibration: {report} (and {cache_file(host)})")
    return 0


def write(report: Path, runs: pd.DataFrame, summary: dict, top: Path) -> None:
    """The report folder (``calibration.json``, ``runs.csv``, ``README.md``) and the machine's cache copy."""
    from bench.runs.meta import environment

    summary = {**summary, "env": environment(), "results": str(top)}
    try:
        report.mkdir(parents=True, exist_ok=True)
        write_atomic(report / RUNS, runs.to_csv(index=False))
        write_atomic(report / SUMMARY, json.dumps(summary, indent=2, default=str))
        text = [f"# Calibration of `linbench ab` on {summary['host']}", "",
                f"{summary['date']}, commit {summary['commit'][:12]}, {summary['env'].get('cpu')}; grid "
                f"{json.dumps({k: v for k, v in summary['overrides'].items() if v})}, settings "
                f"{json.dumps(summary['settings'])}.", "", *(f"- {x}" for x in lines(summary["rates"])), "",
                f"Every comparison of every run: `{RUNS}`; the rates: `{SUMMARY}`."]
        write_atomic(report / "README.md", "\n".join(text) + "\n")
        cache_file(summary["host"]).parent.mkdir(parents=True, exist_ok=True)
        write_atomic(cache_file(summary["host"]), json.dumps(summary, indent=2, default=str))
    except OSError as e:
        raise UserError(f"cannot write the calibration to {report}: {e.strerror or e}") from None
