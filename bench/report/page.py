"""The report's page: which sections it has, in which order, and what each one says; and its files.

``reports/<run-id>/`` gets ``index.html`` (opens from disk: no server, no network), ``report.md``,
``figures/*.png`` and ``tables/*.csv`` (the data behind every table). :func:`build` is the entry
point; each section is one function returning a :class:`~bench.report.render.Section`, which
:mod:`bench.report.render` writes once as HTML and once as Markdown. The reference sections at the
page's end (all cells, the cells not timed, the environment) come from :mod:`bench.report.listings`.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from bench import UserError
from bench.grid import GATED, baselines
from bench.regress.verdicts import ONLY, compare_runs, environment_differences, summary
from bench.report import figures
from bench.report.analysis import curves_summary, derived, expected_cells, headline_table, headlines, with_model
from bench.report.history import history_section
from bench.report.listings import KEPT, all_cells, environment, informative, not_timed
from bench.report.render import Data, Page, Section, Table, to_html, to_markdown
from bench.report.roofline_why import why_section
from bench.report.scaling import scaling_section
from bench.report.signals import counts_of, instructions, with_counts
from bench.report.sources import combine, read_sources, side_by_side
from bench.runs.run_folder import CURVES, Run
from bench.runs.store import write_atomic
from impls.models import MODELS

__all__ = ["Run", "build"]

GATE_SHOWN = [*GATED, "case", "batches", "status", "loss_max_abs", "loss_max_rel", "param_max_abs",
              "param_max_rel", "predict_max_abs", "tol_used", "rtol", "atol", "tolerance_reason", "reason"]
SOURCES = "sources.csv"  # every row of every source, under tables/


def build(runs: list[Run], out: Path, asv_dir=None, pytest_jsons=(), threshold: float = 0.05,
          cross_machine: bool = False, target_accuracy: float | None = None) -> Path:
    """Write the report of ``runs`` (one, or two to compare) into ``out``; return index.html's path.
    ``cross_machine``: a merged run's speedups also where a cell and its baseline cell ran on different machines."""
    if not runs:
        raise UserError("no results to report: give a run folder")
    run, out = runs[-1], Path(out)
    for r in runs:
        r.results = derived(r.results, r.samples, cross_machine=cross_machine and r is run)
    sources = read_sources(run, asv_dir, pytest_jsons)
    _clear(out)
    ok = run.results[run.results["status"] == "ok"]
    one = ok[ok["world_size"] == 1]  # one process a cell; cells of several ranks: the scaling section
    sections = [
        headline(run, ok),
        comparison(*runs, threshold) if len(runs) == 2 else None,
        throughput(one, out), workers(one, out), breakdown(one, out), roofline(one, run, out),
        compile_memory(ok, run, out),
        scaling_section(ok, out), why_section(run, out), instructions(run, out),
        equal_results(run),
        training(run, out, target_accuracy),
        all_cells(with_counts(run.results, counts_of(run))), not_timed(run.results),
        every_source(sources), history_section(asv_dir, out),
        environment(*runs[-2:]),
    ]
    sections = [s for s in sections if s is not None]
    sections += [s for s in [what_is_missing(sections)] if s is not None]
    for table in (b for s in sections for b in s.blocks if isinstance(b, (Table, Data))):
        _write(out / "tables" / f"{table.name}.csv", table.frame.to_csv(index=False))
    _write(out / "tables" / SOURCES, combine(sources).to_csv(index=False))
    page = _page(runs, sections)
    _write(out / "index.html", to_html(page))
    _write(out / "report.md", to_markdown(page))
    return out / "index.html"


def _clear(out: Path) -> None:
    """``figures/`` and ``tables/`` made, emptied of an earlier report's files."""
    try:
        for sub, pattern in (("figures", "*.png"), ("tables", "*.csv")):
            (out / sub).mkdir(parents=True, exist_ok=True)
            for old in (out / sub).glob(pattern):
                old.unlink()
    except OSError as e:
        raise UserError(f"cannot write the report under {out}: {e.strerror or e}") from None


def _write(path: Path, text: str) -> None:
    """Written atomically, readable by all (a report is meant to be shared)."""
    write_atomic(path, text)
    path.chmod(0o644)


def _page(runs: list[Run], sections: list[Section]) -> Page:
    run = runs[-1]
    env = run.meta.get("env", {})
    title = f"linbench report: run {run.id}" + (f" vs {runs[0].id}" if len(runs) == 2 else "")
    machine = (f"{env.get('host', '?')}: {env.get('cpu', '?')}, {env.get('cpu_count', '?')} cores, "
               f"{env.get('threads', '?')} torch threads, " + (f"GPU {env['gpu']}" if env.get("gpu") else "no GPU"))
    if others := [h for h in run.meta.get("machines") or {} if h != env.get("host")]:
        machine += f"; and {len(others)} other machine(s): {', '.join(map(str, others))} (see Environment)"
    details = f"{' (dirty)' if env.get('dirty') else ''}, torch {env.get('torch', '?')}, {env.get('time', '?')}"
    return Page(title, machine, str(env.get("commit") or "?")[:10], details, sections)


# -- the sections, in page order ------------------------------------------------------------------
def headline(run: Run, ok: pd.DataFrame) -> Section:
    s = Section("Headline")
    lines = headlines(run.results)
    if ok.empty:
        lines = ["no cell was timed in this run: see the cells not timed, and why, below"] + lines
    s.points(lines, "headline")
    if not ok.empty:
        s.table("headline", headline_table(ok))
    s.text("Speedup is over the baseline cell of each model, the seeds' pipeline: " + "; ".join(
        f"{m}: " + ", ".join(f"{k}={v}" for k, v in b.items() if k != "model") for m, b in baselines().items())
        + ". roofline_pct: the roofline time of an epoch over its measured time.")
    counts = run.results["status"].value_counts()
    s.text("Cells: " + (", ".join(f"{n} {status}" for status, n in counts.items()) or "none") + ".")
    if not run.meta.get("complete", True):
        expected = expected_cells(run.meta)
        s.missing.append("the run is incomplete")
        s.text(f"This run is incomplete: {len(run.results)}" + (f" of {expected}" if expected else "")
               + f" cells finished. Finish it with: linbench run --resume {run.folder}", "warn")
    return s


COMPARED = ["cell", "metric", "rounds", "n_a", "n_b", "median_a", "median_b", "ratio", "ratio_lo", "ratio_hi", "level",
            "verdict", "disturbed", "reason"]
VERDICT_CLASS = {"slower": "worse", "faster": "better", ONLY[0]: "skipped", ONLY[1]: "skipped"}


def comparison(a: Run, b: Run, min_effect: float = 0.05, alpha: float = 0.05) -> Section:
    """Run B against run A: what differs between their environments, then a verdict per cell timed in
    both and metric, from the raw samples (bench/compare.py), slower first."""
    from bench.regress.calibration import lines, machine_rates
    from bench.regress.stats import meanings

    decided = a.folder.parent / "compare.csv"  # an ab folder's verdicts, from its paired rounds
    if a.folder.name == "A" and b.folder.parent == a.folder.parent and decided.exists():
        diff = pd.read_csv(decided).fillna({"metric": "", "reason": ""})
    else:
        diff = compare_runs(a, b, min_effect, alpha)
    s = Section(f"Comparison: {b.id} against {a.id}")
    env = environment_differences(a, b)
    s.text(f"What differs between A ({a.id}) and B ({b.id}):" if env else
           f"A ({a.id}) and B ({b.id}) recorded the same environment (host, commit, threads, torch, CPU, GPU, "
           "peaks, load at start).")
    if env:
        s.points(env)
    paired = "rounds" in diff.columns
    s.text("Per cell timed in both runs and metric: the median seconds of each, their ratio B/A (above 1: B is "
           "slower) with its interval at the level the verdict was reached at ("
           + ("paired rounds A B B A, each round's ratio of slots measured side by side" if paired else
              "Yuen's t on the logs of the raw samples")
           + f"), and the verdict (min effect {min_effect:.0%}; every verdict of the comparison controlled together, "
           f"Holm, alpha {alpha:g}). Cells join on every axis, so cells at other thread counts are not compared. "
           + ("The runs share no device: cells join on the other axes. " if "device_b" in diff.columns else "")
           + summary(diff) + ". The rest of the page shows run B.")
    s.points([f"{verdict}: {meaning}" for verdict, meaning in meanings(min_effect, alpha).items()]
             + [f"{ONLY[0]} / {ONLY[1]}: the cell was timed in one run only, and is not compared."])
    calibration = a.folder.parent / "calibration.json"  # written by an A/A `linbench ab` beside its runs
    if calibration.exists():
        c = json.loads(calibration.read_text())
        s.text(f"This comparison is an A/A (one revision on both sides): {c['non_same']} of {c['comparisons']} "
               f"comparisons were not `same` ({c['slower']} slower, {c['faster']} faster).")
    host = (b.meta.get("env") or {}).get("host")
    rates = machine_rates(host)
    if rates:
        s.text(f"What these verdicts are worth on {host}, measured there by `linbench ab --calibrate` "
               f"({rates.get('date', '?')}, {rates['settings']}):")
        s.points(lines(rates["rates"]))
    else:
        s.text(f"No calibration of {host or 'this machine'} is recorded: `linbench ab --calibrate 5` measures the "
               "false-positive rate and the power of these verdicts there.", "warn")
    if diff["disturbed"].any():
        s.text(f"{int(diff['disturbed'].sum())} comparisons are of cells the machine's load disturbed in A or B: "
               "their verdicts are less sure; compare again on a quieter machine.", "warn")
    if diff.empty:
        s.not_shown("comparison: neither run has a timed cell")
    else:
        shown = diff[[c for c in COMPARED if c in diff.columns]]
        shown = shown.assign(disturbed=diff["disturbed"].map({True: "yes", False: ""}))
        s.table("comparison", shown, classes=[VERDICT_CLASS.get(v, "") for v in diff["verdict"]])
    return s


def _figure(title: str, drawn, alt: str, *intro: str) -> Section:
    s = Section(title)
    for text in intro:
        s.text(text)
    s.figure(drawn, alt)
    return s


def throughput(ok: pd.DataFrame, out: Path) -> Section:
    return _figure("Throughput vs batch size", figures.fig_batch_sizes(ok, out),
                   "throughput against batch size, one line per form")


def workers(ok: pd.DataFrame, out: Path) -> Section:
    return _figure("Epoch time vs DataLoader workers", figures.fig_workers(ok, out),
                   "epoch time against DataLoader workers, per loader")


def breakdown(ok: pd.DataFrame, out: Path) -> Section:
    return _figure("Where the time goes: loader only, compute only, end to end", figures.fig_breakdown(ok, out),
                   "seconds per epoch: loader only, compute only, end to end, per form",
                   "Compute only is the step time on batches already on the device times the steps of an epoch.")


def roofline(ok: pd.DataFrame, run: Run, out: Path) -> Section:
    return _figure("Roofline", figures.fig_roofline(ok, run.meta.get("peaks", {}), out),
                   "achieved GFLOP/s against arithmetic intensity with the probed ceilings")


def compile_memory(ok: pd.DataFrame, run: Run, out: Path) -> Section:
    compiles = run.meta.get("compiles")
    none_compiled = not ok.empty and figures.compile_seconds(ok, compiles).empty
    memory = not figures.cell_memory(ok).empty
    return _figure("Compile time and memory", figures.fig_compile_memory(ok, out, compiles),
                   "compile time of each form that compiles, and the memory of each form's cells",
                   "Compile time: the forms that compile (torch.compile) only, every compilation the run logged "
                   "summed, the gate's included." + (" No timed form compiled in this run." if none_compiled else ""),
                   "Memory: cuda_peak_mb, the CUDA allocator's peak during a cell, and rss_growth_mb, how far the "
                   "host RSS grew during it" + (", where the run recorded them." if memory else
                                                 ": this run recorded neither, so no memory is charted.")
                   + " peak_rss_mb (All cells) is not charted: it is the whole process's peak RSS, shared by every "
                   "cell of the run (the interpreter, torch, the data), and says nothing of a form.")


def equal_results(run: Run) -> Section:
    s = Section("Equal results against the fp64 oracle")
    if run.gate is None or run.gate.empty:
        s.not_shown("equal-results table: the run has no gate.csv (no cell was about to be timed)")
        return s
    gate = run.gate[[c for c in GATE_SHOWN if c in run.gate.columns and (c in KEPT or informative(run.gate[c]))]].copy()
    for c in ("reason", "tolerance_reason"):
        if c in gate.columns:
            gate[c] = gate[c].astype(object).where(gate[c].notna(), "")
    s.table("equal_results", gate, classes=["fail" if status == "fail" else "" for status in gate["status"]])
    return s


def curves_missing(run: Run) -> str:
    """Why the run has no training curves, in words."""
    epochs = run.meta.get("config", {}).get("curves_epochs")
    ok = run.results[(run.results["status"] == "ok")
                     & run.results["model"].map(lambda m: m in MODELS and bool(MODELS[m].classes))]
    if epochs == 0:
        return "training curves: the run was made with --no-curves"
    if ok.empty:
        return "training curves: no form of a classifier was timed in this run, so none was trained"
    if not run.meta.get("complete", True):
        return "training curves: the run stopped before its curves phase (finish it with linbench run --resume)"
    return f"training curves: {CURVES} is missing from the run folder"


def training(run: Run, out: Path, target: float | None = None) -> Section:
    s = Section("Training curves")
    curves = with_model(run.curves, run.results)
    if curves is not None and not curves.empty:
        s.figure(figures.fig_curves(curves, out),
                 "train loss, train accuracy and test accuracy per epoch, per model and form")
        s.table("training", curves_summary(curves, run.results, target))
    else:
        s.not_shown(curves_missing(run))
    if skipped := run.meta.get("curves_skipped", {}):
        s.text("Not trained: " + "; ".join(f"{form}: {reason}" for form, reason in skipped.items()))
    data_dir = run.meta.get("config", {}).get("data_dir")
    s.figure(figures.fig_predictions(with_model(run.predictions, run.results), data_dir, out),
             "test images with true and predicted labels")
    return s


def every_source(sources: dict[str, pd.DataFrame]) -> Section | None:
    if len(sources) < 2:
        return None
    s = Section("Every source side by side: linbench, asv, pytest-benchmark")
    table = side_by_side(combine(sources))
    per = ("machine and cell (results of several machines: each machine's numbers in rows of their own, never "
           "joined)" if "machine" in table.columns else "cell")
    s.text(f"One row per {per}, one column per source and benchmark (the newest result of each), in linbench's "
           "metrics and units: asv's Step and CudaStep and pytest-benchmark's test_step time one training step "
           f"per call, shown as step_ms. Every row of every source: {SOURCES}.")
    for name, data in list(sources.items())[1:]:
        if data.empty:
            s.not_shown(f"{name}: its results hold no measured value")
    s.table("side_by_side", table)
    s.link(f"tables/{SOURCES}")
    return s


def what_is_missing(sections: list[Section]) -> Section | None:
    missing = [why for s in sections for why in s.missing]
    if not missing:
        return None
    s = Section("What is missing")
    s.points(missing)
    return s
