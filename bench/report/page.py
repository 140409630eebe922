"""Reports: one pandas frame from every result source, written as a static page with its figures.

``reports/<run-id>/`` gets ``index.html`` (opens from disk: no server, no network), ``report.md``,
``figures/*.png`` and ``tables/*.csv`` (the data behind every table). Sources: the runner's run
folders (results, gate, meta, curves), asv's results folder and pytest-benchmark's JSON files.
"""
from __future__ import annotations

import ast
import html
import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import pandas as pd  # noqa: E402

from bench import UserError  # noqa: E402
from bench.grid import AXES, BASELINES, TRAIN_EXAMPLES  # noqa: E402
from bench.report.analysis import compare, expected_cells, headline_table, headlines  # noqa: E402
from bench.store import CURVES, PREDICTIONS, Run, write_atomic  # noqa: E402
from impls.common import step_cost  # noqa: E402

SHOWN = ["model", "form", "device", "loader", "workers", "batch_size", "status", "samples_per_s", "epoch_s",
         "epoch_s_iqr", "n", "step_ms", "loader_epoch_s", "compile_s", "peak_rss_mb", "cuda_peak_mb", "gflops",
         "roofline_frac", "epoch_roofline_frac", "speedup", "reason"]


SOURCE_COLUMNS = ["source", "benchmark", *AXES, "value", "unit", "commit", "machine", "date"]
RUNNER_METRICS = {"epoch_s": "s", "step_ms": "ms", "loader_epoch_s": "s", "compile_s": "s"}


def _literal(text):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def read_runner(run: Run) -> pd.DataFrame:
    """The run's timed cells as tidy rows: one per cell and metric."""
    ok = run.results[run.results["status"] == "ok"]
    frame = ok.melt(id_vars=list(AXES), value_vars=list(RUNNER_METRICS), var_name="benchmark").dropna(subset=["value"])
    frame["source"], frame["unit"] = "linbench", frame["benchmark"].map(RUNNER_METRICS)
    env = run.meta.get("env", {})
    frame["commit"], frame["machine"], frame["date"] = str(env.get("commit") or "")[:8], env.get("host", ""), env.get("time", "")
    return frame.reindex(columns=SOURCE_COLUMNS)


def read_asv(folder) -> pd.DataFrame:
    """asv 0.6 results (``<results_dir>/<machine>/<commit>-<env>.json``): one row per benchmark and params.

    Parameter names and units come from ``<results_dir>/benchmarks.json`` where present; skipped or
    failed combinations (no value) are left out.
    """
    folder, rows = Path(folder), []
    if not folder.is_dir():
        raise UserError(f"{folder}: no such asv results folder")
    try:
        info = json.loads((folder / "benchmarks.json").read_text()) if (folder / "benchmarks.json").exists() else {}
    except (OSError, json.JSONDecodeError):
        raise UserError(f"{folder / 'benchmarks.json'}: not an asv benchmarks file") from None
    files = [p for p in sorted(folder.glob("*/*.json")) if p.name != "machine.json"]
    if not files:
        raise UserError(f"{folder}: no asv results (expected <machine>/<commit>-<env>.json)")
    for path in files:
        try:
            data = json.loads(path.read_text())
            columns, results = data["result_columns"], data["results"]
        except (OSError, json.JSONDecodeError, KeyError, TypeError):
            raise UserError(f"{path}: not an asv results file") from None
        for name, values in results.items():
            entry = dict(zip(columns, values))
            params, meta = entry.get("params") or [], info.get(name, {})
            names = meta.get("param_names") or [f"p{i}" for i in range(len(params))]
            combos = pd.MultiIndex.from_product(params).tolist() if params else [()]
            result = entry.get("result")
            for combo, value in zip(combos, result if isinstance(result, list) else [result]):
                if value is None or (isinstance(value, float) and math.isnan(value)):
                    continue
                row = dict(source="asv", benchmark=name.split(".", 1)[-1] if "." in name else name, value=value,
                           unit=meta.get("unit", ""), commit=str(data.get("commit_hash", ""))[:8],
                           machine=path.parent.name, date=data.get("date"))
                row.update({k: _literal(v) for k, v in zip(names, combo) if k in AXES})
                rows.append(row)
    return pd.DataFrame(rows, columns=SOURCE_COLUMNS)


def read_pytest_benchmark(paths) -> pd.DataFrame:
    """pytest-benchmark's ``--benchmark-json`` files: one row per benchmark (its median, seconds)."""
    rows = []
    for path in map(Path, paths):
        try:
            data = json.loads(path.read_text())
            benchmarks = data["benchmarks"]
        except FileNotFoundError:
            raise UserError(f"{path}: missing") from None
        except (OSError, json.JSONDecodeError, KeyError, TypeError):
            raise UserError(f"{path}: not a pytest-benchmark JSON file") from None
        for b in benchmarks:
            median = (b.get("stats") or {}).get("median")
            if median is None:
                continue
            extra = b.get("extra_info") or {}
            rows.append(dict(source="pytest-benchmark", benchmark=str(b.get("name", "")).split("[")[0], value=median,
                             unit="s", commit=str((data.get("commit_info") or {}).get("id") or "")[:8],
                             machine=(data.get("machine_info") or {}).get("node", ""), date=data.get("datetime"),
                             **{k: extra[k] for k in AXES if k in extra}))
    return pd.DataFrame(rows, columns=SOURCE_COLUMNS)


def side_by_side(sources: pd.DataFrame) -> pd.DataFrame:
    """One row per cell, one column per source and benchmark (the newest result of each).

    An axis a benchmark does not take (asv's Loader has no form) reads ``any``; rows that name no
    axis at all (a benchmark unknown to asv's ``benchmarks.json``) are left to ``sources.csv``.
    """
    frame = sources[sources[list(AXES)].notna().any(axis=1)]
    frame = frame.sort_values("date", kind="stable", key=lambda d: d.astype(str)).copy()
    for axis in AXES:
        frame[axis] = [("any" if pd.isna(v) else str(int(v)) if isinstance(v, float) else str(v)) for v in frame[axis]]
    units = frame["unit"].fillna("").map(lambda u: f" ({u})" if u else "")
    frame["column"] = frame["source"] + " " + frame["benchmark"] + units
    frame = frame.drop_duplicates(["column", *AXES], keep="last")
    if frame.empty:
        return pd.DataFrame(columns=list(AXES))
    table = frame.pivot(index=list(AXES), columns="column", values="value")
    order = list(dict.fromkeys(frame["column"]))
    return table[[c for c in order if c in table.columns]].reset_index()


def _write(path: Path, text: str) -> None:
    """Written atomically, readable by all (a report is meant to be shared)."""
    write_atomic(path, text)
    path.chmod(0o644)


# -- figures --------------------------------------------------------------------------------------
def _save(fig, folder: Path, name: str) -> str:
    path = folder / "figures" / f"{name}.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return f"figures/{name}.png"


def _grid_axes(n: int, width=5.2, height=3.8, cols=2):
    cols = min(n, cols)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False, layout="constrained")
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat)


def fig_batch_sizes(ok: pd.DataFrame, folder: Path):
    data = ok[ok["loader"] == "resident"]
    groups = [(k, g) for k, g in data.groupby(["model", "device"]) if g["batch_size"].nunique() > 1]
    if not groups:
        return None, "throughput vs batch size: the run timed one batch size per model on the resident loader " \
                     "(widen --batch-sizes)"
    fig, axes = _grid_axes(len(groups))
    for ax, ((model, device), g) in zip(axes, groups):
        for form, f in g.groupby("form", sort=False):
            f = f.sort_values("batch_size")
            ax.plot(f["batch_size"], f["samples_per_s"], marker="o", label=form)
        ax.set(xscale="log", yscale="log", xlabel="batch size", ylabel="throughput (samples/s)",
               title=f"{model} on {device}, resident loader")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(title="form")
    return _save(fig, folder, "throughput_vs_batch_size"), None


def fig_workers(ok: pd.DataFrame, folder: Path):
    data = ok[ok["loader"].isin(["torchvision", "tensor"])]
    groups = [(k, g) for k, g in data.groupby(["model", "device", "form", "batch_size"]) if g["workers"].nunique() > 1]
    if not groups:
        return None, "epoch time vs workers: the run timed one worker count per loader (widen --workers)"
    fig, axes = _grid_axes(len(groups))
    for ax, ((model, device, form, batch), g) in zip(axes, groups):
        for loader, f in g.groupby("loader"):
            f = f.sort_values("workers")
            ax.errorbar(f["workers"], f["epoch_s"], yerr=f["epoch_s_iqr"] / 2, marker="o", capsize=3,
                        label=f"{loader}: end to end")
            ax.plot(f["workers"], f["loader_epoch_s"], ls="--", marker="x", label=f"{loader}: loader only")
        ax.set(xlabel="DataLoader workers", ylabel="epoch time (s)", yscale="log",
               title=f"{model} {form} on {device}, batch {batch}")
        ax.set_xticks(sorted(g["workers"].unique()))
        ax.grid(True, alpha=0.3)
        ax.legend()
    return _save(fig, folder, "epoch_time_vs_workers"), None


def fig_breakdown(ok: pd.DataFrame, folder: Path):
    defaults = {"linreg": 10, "softmax": 256}
    data = ok[(ok["batch_size"] == ok["model"].map(defaults)) & (ok["workers"] == 0)]
    groups = list(data.groupby(["model", "device"]))
    if not groups:
        return None, "where the time goes: no timed cell at the book's batch size with 0 workers"
    fig, axes = _grid_axes(len(groups), width=6.5)
    for ax, ((model, device), g) in zip(axes, groups):
        g = g.sort_values(["loader", "form"])
        labels = [f"{r.form} / {r.loader}" for r in g.itertuples()]
        steps = math.ceil(TRAIN_EXAMPLES[model] / defaults[model])
        x = range(len(g))
        w = 0.27
        ax.bar([i - w for i in x], g["loader_epoch_s"], w, label="loader only")
        ax.bar(list(x), g["step_ms"] * steps / 1e3, w, label="compute only (steps on device)")
        ax.bar([i + w for i in x], g["epoch_s"], w, label="end to end")
        ax.set_xticks(list(x), labels, fontsize=8, rotation=35, ha="right")
        ax.set(yscale="log", ylabel="seconds per epoch", title=f"where the time goes: {model} on {device}")
        ax.set_ylim(top=ax.get_ylim()[1] * 10)  # room for the legend above the bars
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=8, ncols=3, loc="upper center")
    return _save(fig, folder, "where_the_time_goes"), None


def fig_roofline(ok: pd.DataFrame, peaks: dict, folder: Path):
    devices = [d for d in ok["device"].unique() if d in peaks]
    if not devices:
        return None, "roofline: no timed cell"
    fig, axes = _grid_axes(len(devices), width=6)
    for ax, device in zip(axes, devices):
        g, peak = ok[ok["device"] == device], peaks[device]
        intensity = [step_cost(r.model, r.batch_size)[0] / step_cost(r.model, r.batch_size)[1] for r in g.itertuples()]
        xs = [0.05, 1000]
        ridge = peak["gflops"] / peak["gbps"]
        ax.plot([xs[0], ridge, xs[1]], [xs[0] * peak["gbps"], peak["gflops"], peak["gflops"]], color="black",
                lw=1.5, label=f"probed peaks: {peak['gflops']:.0f} GFLOP/s, {peak['gbps']:.0f} GB/s")
        for form in g["form"].unique():
            mask = (g["form"] == form).to_numpy()
            ax.scatter([i for i, m in zip(intensity, mask) if m], g.loc[mask, "gflops"], label=form, s=30)
        ax.set(xscale="log", yscale="log", xlabel="arithmetic intensity (FLOP/byte)",
               ylabel="achieved GFLOP/s (compute-only step)", title=f"roofline on {device}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, folder, "roofline"), None


def fig_compile_memory(ok: pd.DataFrame, folder: Path, compiles: dict | None = None):
    """Compile seconds per (model, form, device): every compilation the run logged (``meta['compiles']``:
    the gate's and the cells'), else the cells' ``compile_s``; and peak memory."""
    per_form = ok.groupby(["model", "device", "form"], sort=False).agg(
        compile_s=("compile_s", "max"), peak_rss_mb=("peak_rss_mb", "max"), cuda_peak_mb=("cuda_peak_mb", "max"))
    if per_form.empty:
        return None, "compile time and memory: no timed cell"
    per_form = per_form.reset_index()
    for i, r in per_form.iterrows():
        if (log := (compiles or {}).get(f"{r.model}/{r.form}/{r.device}")) is not None:
            per_form.loc[i, "compile_s"] = sum(e["seconds"] for e in log)
    labels = [f"{r.model}/{r.form}/{r.device}" for r in per_form.itertuples()]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 0.35 * len(labels) + 1.8))
    a.barh(labels, per_form["compile_s"].fillna(0), color="tab:purple", label="torch.compile time")
    a.set(xlabel="compile time (s)", title="compile time per form (0: not compiled)")
    a.legend(fontsize=8)
    b.barh(labels, per_form["peak_rss_mb"].fillna(0), color="tab:green", label="host peak RSS")
    if per_form["cuda_peak_mb"].notna().any():
        b.barh(labels, per_form["cuda_peak_mb"].fillna(0), color="tab:red", alpha=0.7, label="CUDA max allocated")
    b.set(xlabel="peak memory (MiB)", title="peak memory during the cell")
    b.legend(fontsize=8)
    b.tick_params(labelleft=False)
    return _save(fig, folder, "compile_time_and_memory"), None


def fig_curves(curves: pd.DataFrame, folder: Path):
    groups = list(curves.groupby(["form", "device"], sort=False))
    fig, axes = _grid_axes(len(groups), width=4.4, height=3.4, cols=3)
    values = curves[["train_loss", "train_acc", "test_acc"]]
    ylim = (min(0.3, values.min().min() - 0.02), max(0.9, values.max().max() + 0.02))
    for ax, ((form, device), g) in zip(axes, groups):
        ax.plot(g["epoch"], g["train_loss"], label="train loss")
        ax.plot(g["epoch"], g["train_acc"], ls="--", label="train acc")
        ax.plot(g["epoch"], g["test_acc"], ls="-.", label="test acc")
        ax.set(xlabel="epoch", ylabel="loss (nats) / accuracy (fraction)", ylim=ylim, title=f"{form} on {device}",
               xlim=(1, max(2, g["epoch"].max())))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle("softmax regression on Fashion-MNIST, batch 256, lr 0.1", fontsize=10)
    return _save(fig, folder, "training_curves"), None


def curves_missing(run: Run) -> str:
    """Why the run has no training curves, in words."""
    epochs = run.meta.get("config", {}).get("curves_epochs")
    ok = run.results[(run.results["status"] == "ok") & (run.results["model"] == "softmax")]
    if epochs == 0:
        return "training curves: the run was made with --no-curves"
    if ok.empty:
        return "training curves: no softmax form was timed in this run, so none was trained"
    if not run.meta.get("complete", True):
        return "training curves: the run stopped before its curves phase (finish it with linbench run --resume)"
    return f"training curves: {CURVES} is missing from the run folder"


def curves_summary(curves: pd.DataFrame) -> pd.DataFrame:
    last = curves.sort_values("epoch").groupby(["form", "device"], sort=False).tail(1)
    return last.rename(columns={"epoch": "epochs", "seconds": "train_s"})[
        ["form", "device", "epochs", "train_loss", "train_acc", "test_acc", "train_s"]]


def fig_predictions(predictions: pd.DataFrame | None, data_dir, folder: Path):
    if predictions is None or predictions.empty:
        return None, f"prediction grid: the run has no {PREDICTIONS} (it comes with the training curves)"
    from bench.data import load_split

    try:
        images = load_split("softmax", False, data_dir).X
    except UserError as e:
        return None, f"prediction grid: test images unavailable ({e})"
    first = predictions[predictions["form"] == predictions["form"].iloc[0]]
    fig, axes = plt.subplots(1, len(first), figsize=(1.5 * len(first), 2.1))
    for ax, r in zip(axes, first.itertuples()):
        ax.imshow(images[int(r.index), 0].numpy(), cmap="gray")
        ax.set_title(f"{r.true}\n{r.predicted}", fontsize=8, color="black" if r.true == r.predicted else "red")
        ax.axis("off")
    fig.suptitle(f"test images: true label above, {first['form'].iloc[0]}'s prediction below", fontsize=9)
    return _save(fig, folder, "predictions"), None


# -- tables ---------------------------------------------------------------------------------------
def _fmt(v):
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:,.0f}" if abs(v) >= 1e4 else f"{v:.4g}"
    return str(v)


def _html_table(frame: pd.DataFrame, classes=None) -> str:
    """A table: numbers right-aligned, words left, reasons wrapped; ``classes`` per row (e.g. worse)."""
    kinds = ["w" if "reason" in str(c) else "n" if pd.api.types.is_numeric_dtype(frame[c]) else "t"
             for c in frame.columns]
    rows = []
    for i, row in enumerate(frame.itertuples(index=False)):
        cls = f' class="{classes[i]}"' if classes and classes[i] else ""
        cells = "".join(f"<td class={k}>{html.escape(_fmt(v))}</td>" for k, v in zip(kinds, row))
        rows.append(f"<tr{cls}>{cells}</tr>")
    head = "".join(f"<th class={k}>{html.escape(str(c))}</th>" for k, c in zip(kinds, frame.columns))
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'


def _md_table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "(no rows)\n"
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(_fmt(v).replace("|", "\\|") for v in row) + " |")
    return "\n".join(lines) + "\n"


PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<script>window.pageErrors=[];window.addEventListener("error",function(e){{window.pageErrors.push(String(e.message||e))}},true);
(function(){{var log=console.error;console.error=function(){{window.pageErrors.push([].join.call(arguments," "));log.apply(console,arguments)}}}})();
window.addEventListener("load",function(){{var bad=[].filter.call(document.images,function(i){{return !i.complete||i.naturalWidth===0}});
document.body.setAttribute("data-broken-images",bad.length);document.body.setAttribute("data-errors",window.pageErrors.length);
document.body.setAttribute("data-checked","yes")}});</script>
<style>body{{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#222}}
h1{{font-size:1.6em;margin-bottom:.2em}}h2{{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}}
nav{{font-size:13px;margin:.6em 0 1em}}nav a{{margin-right:.9em;white-space:nowrap}}
.scroll{{overflow-x:auto;max-width:100%}}table{{border-collapse:collapse;font-size:12px;margin:.5em 0}}
td,th{{border:1px solid #ddd;padding:2px 6px;text-align:left;white-space:nowrap}}th{{background:#f3f3f3}}
.n{{text-align:right}}td.w{{white-space:normal;min-width:22em;max-width:40em}}
tr.worse td{{background:#fdd;color:#a00;font-weight:600}}tr.better td{{background:#dfd}}tr.fail td{{background:#fdd}}
tr.skipped td{{color:#777}}.headline{{background:#f5f9ff;border-left:4px solid #36c;padding:.4em 1em}}
.missing{{color:#a35a00}}.warn{{background:#fff4e0;border-left:4px solid #e90;padding:.4em 1em}}
.machine{{color:#444}}img{{max-width:100%;border:1px solid #eee;margin:.4em 0}}code{{background:#f3f3f3;padding:0 3px}}</style></head>
<body><h1>{title}</h1>{body}</body></html>"""


def build(runs: list[Run], out: Path, asv_dir=None, pytest_jsons=(), threshold: float = 0.10) -> Path:
    """Write the report of ``runs`` (one, or two to compare) into ``out``; return index.html's path."""
    if not runs:
        raise UserError("no results to report: give a run folder")
    run = runs[-1]
    sources = [read_runner(run)]
    if asv_dir:
        sources.append(read_asv(asv_dir))
    if pytest_jsons:
        sources.append(read_pytest_benchmark(pytest_jsons))
    try:
        for sub in ("figures", "tables"):
            (out / sub).mkdir(parents=True, exist_ok=True)
            for old in (out / sub).glob("*.png" if sub == "figures" else "*.csv"):
                old.unlink()  # a report rebuilt in place keeps no figure or table of an earlier one
    except OSError as e:
        raise UserError(f"cannot write the report under {out}: {e.strerror or e}") from None
    html_parts, md_parts, missing, toc = [], [], [], []
    env, peaks = run.meta.get("env", {}), run.meta.get("peaks", {})
    frame = run.results
    ok = frame[frame["status"] == "ok"]

    def section(title, text_html="", text_md=""):
        anchor = f"s{len(toc)}"
        toc.append(f'<a href="#{anchor}">{html.escape(title.split(":")[0])}</a>')
        html_parts.append(f'<h2 id="{anchor}">{html.escape(title)}</h2>{text_html}')
        md_parts.append(f"\n## {title}\n\n{text_md}")

    def para(text, cls=""):
        html_parts.append(f'<p class="{cls}">{html.escape(text)}</p>' if cls else f"<p>{html.escape(text)}</p>")
        md_parts.append(f"\n{text}\n")

    def table(name, data: pd.DataFrame, classes=None):
        _write(out / "tables" / f"{name}.csv", data.to_csv(index=False))
        link = f'<p><a href="tables/{name}.csv">{name}.csv</a></p>'
        html_parts.append(_html_table(data, classes) + link)
        md_parts.append("\n" + _md_table(data) + f"\n[{name}.csv](tables/{name}.csv)\n")

    def not_shown(why):
        missing.append(why)
        para(f"Not shown: {why}", "missing")

    def figure(result, alt):
        path, why = result
        if path:
            html_parts.append(f'<img src="{path}" alt="{html.escape(alt)}">')
            md_parts.append(f"\n![{alt}]({path})\n")
        else:
            not_shown(why)

    # -- headline and state of the run
    section("Headline")
    lines = headlines(frame)
    if ok.empty:
        lines = ["no cell was timed in this run: see the cells not timed, and why, below"] + lines
    html_parts.append('<div class="headline">' + "".join(f"<p>{html.escape(l)}</p>" for l in lines) + "</div>")
    md_parts.append("".join(f"- {l}\n" for l in lines))
    if not ok.empty:
        table("headline", headline_table(ok))
    para("Speedup is over the baseline cell of each model, the seeds' pipeline: " + "; ".join(
        f"{m}: " + ", ".join(f"{k}={v}" for k, v in b.items() if k != "model") for m, b in BASELINES.items())
        + ". roofline_pct: the roofline time of an epoch over its measured time.")
    counts = frame["status"].value_counts()
    para("Cells: " + (", ".join(f"{n} {s}" for s, n in counts.items()) or "none") + ".")
    if not run.meta.get("complete", True):
        expected = expected_cells(run.meta)
        missing.append("the run is incomplete")
        para(f"This run is incomplete: {len(frame)}" + (f" of {expected}" if expected else "") + " cells finished. "
             f"Finish it with: linbench run --resume {run.folder}", "warn")

    if len(runs) == 2:
        diff = compare(runs[0], runs[1], threshold)
        section(f"Comparison: {runs[1].id} over {runs[0].id}")
        para(f"samples/s of B ({runs[1].id}) over A ({runs[0].id}) per cell timed in both; changes beyond "
             f"{threshold:.0%} are flagged, worse in red. "
             + ("The runs share no device: cells join on the other axes. " if "device_a" in diff.columns else "")
             + f"{(diff['change'] == 'worse').sum()} worse, {(diff['change'] == 'better').sum()} better, "
             f"{(diff['change'] == 'same').sum()} within the threshold. The rest of the page shows run B.")
        if diff.empty:
            not_shown("comparison: the two runs have no timed cell in common")
        else:
            table("comparison", diff, classes=diff["change"].tolist())

    # -- figures of the run
    section("Throughput vs batch size")
    figure(fig_batch_sizes(ok, out), "throughput against batch size, one line per form")
    section("Epoch time vs DataLoader workers")
    figure(fig_workers(ok, out), "epoch time against DataLoader workers, per loader")
    section("Where the time goes: loader only, compute only, end to end")
    para("Compute only is the step time on batches already on the device times the steps of an epoch.")
    figure(fig_breakdown(ok, out), "seconds per epoch: loader only, compute only, end to end, per form")
    section("Roofline")
    figure(fig_roofline(ok, peaks, out), "achieved GFLOP/s against arithmetic intensity with the probed ceilings")
    section("Compile time and peak memory")
    figure(fig_compile_memory(ok, out, run.meta.get("compiles")), "compile time and peak memory per form")

    section("Equal results against the fp64 oracle")
    if run.gate is not None and not run.gate.empty:
        gate = run.gate[[c for c in ["model", "form", "device", "case", "batches", "status", "loss_max_abs",
                                     "loss_max_rel", "param_max_abs", "param_max_rel", "predict_max_abs",
                                     "tol_used", "rtol", "atol", "tolerance_reason", "reason"]
                         if c in run.gate.columns]].copy()
        for c in ("reason", "tolerance_reason"):
            if c in gate.columns:
                gate[c] = gate[c].astype(object).where(gate[c].notna(), "")
        table("equal_results", gate, classes=["fail" if s == "fail" else "" for s in gate["status"]])
    else:
        not_shown("equal-results table: the run has no gate.csv (no cell was about to be timed)")

    section("Training curves: softmax regression")
    if run.curves is not None and not run.curves.empty:
        figure(fig_curves(run.curves, out), "train loss, train accuracy and test accuracy per epoch, per form")
        table("training", curves_summary(run.curves))
    else:
        not_shown(curves_missing(run))
    skipped_curves = run.meta.get("curves_skipped", {})
    if skipped_curves:
        para("Not trained: " + "; ".join(f"{f}: {r}" for f, r in skipped_curves.items()))
    figure(fig_predictions(run.predictions, run.meta.get("config", {}).get("data_dir"), out),
           "test images with true and predicted labels")

    section("All cells")
    table("results", frame[[c for c in SHOWN if c in frame.columns]],
          classes=["fail" if s in ("failed-equivalence", "error") else "skipped" if s == "skipped" else ""
                   for s in frame["status"]])
    not_timed = frame[frame["status"] != "ok"][["model", "form", "device", "loader", "workers", "batch_size",
                                                 "status", "reason"]]
    if not not_timed.empty:
        section("Cells not timed, and why")
        table("not_timed", not_timed, classes=["fail" if s != "skipped" else "" for s in not_timed["status"]])

    combined = pd.concat([s for s in sources if not s.empty] or [sources[0]], ignore_index=True)
    _write(out / "tables" / "sources.csv", combined.to_csv(index=False))
    if len(sources) > 1:
        section("Every source side by side: linbench, asv, pytest-benchmark")
        para("One row per cell, one column per source and benchmark (the newest result of each; asv's Step and "
             "pytest-benchmark's test_step time a few steps, not one). Every row of every source: sources.csv.")
        for data, name in zip(sources[1:], [n for n, given in (("asv", asv_dir), ("pytest-benchmark", pytest_jsons))
                                            if given]):
            if data.empty:
                not_shown(f"{name}: its results hold no measured value")
        table("side_by_side", side_by_side(combined))
        html_parts.append('<p><a href="tables/sources.csv">sources.csv</a></p>')

    section("Environment")
    env_rows = pd.DataFrame([{"key": k, "value": str(v)} for k, v in env.items()] +
                            [{"key": f"peak {d}", "value": f"{p['gflops']:.0f} GFLOP/s, {p['gbps']:.1f} GB/s"}
                             for d, p in peaks.items()] +
                            [{"key": f"config {k}", "value": str(v)} for k, v in run.meta.get("config", {}).items()
                             if k not in ("grid", "overrides")])
    table("environment", env_rows)
    if missing:
        section("What is missing")
        html_parts.append("<ul>" + "".join(f"<li>{html.escape(w)}</li>" for w in missing) + "</ul>")
        md_parts.append("".join(f"- {w}\n" for w in missing))

    title = f"linbench report: run {run.id}" + (f" vs {runs[0].id}" if len(runs) == 2 else "")
    machine = (f"{env.get('host', '?')}: {env.get('cpu', '?')}, {env.get('cpu_count', '?')} cores, "
               f"{env.get('threads', '?')} torch threads, " + (f"GPU {env['gpu']}" if env.get("gpu") else "no GPU"))
    intro = (f'<p class="machine">Machine {html.escape(machine)}. Commit <code>{html.escape(str(env.get("commit") or "?")[:10])}'
             f'</code>{" (dirty)" if env.get("dirty") else ""}, torch {html.escape(str(env.get("torch", "?")))}, '
             f'{html.escape(str(env.get("time", "?")))}.</p><nav>' + " ".join(toc) + "</nav>")
    _write(out / "index.html", PAGE.format(title=html.escape(title), body=intro + "".join(html_parts)))
    _write(out / "report.md", f"# {title}\n\nMachine {machine}. Commit `{str(env.get('commit') or '?')[:10]}`.\n"
                 + "".join(md_parts))
    return out / "index.html"
