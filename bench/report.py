"""Reports: one pandas frame from every result source, written as a static page with its figures.

``reports/<run-id>/`` gets ``index.html`` (opens from disk: no server, no network), ``report.md``,
``figures/*.png`` and ``tables/*.csv`` (the data behind every table). Sources: the runner's run
folders (results, gate, meta, curves), asv's results folder and pytest-benchmark's JSON files.
"""
from __future__ import annotations

import html
import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from bench import UserError  # noqa: E402
from bench.grid import BASELINES, TRAIN_EXAMPLES  # noqa: E402
from bench.runner import AXES, GATE, headlines, read_meta, read_results, write_atomic  # noqa: E402
from impls.common import step_cost  # noqa: E402

CURVES, PREDICTIONS = "curves.csv", "predictions.csv"
SHOWN = ["model", "form", "device", "loader", "workers", "batch_size", "status", "samples_per_s", "epoch_s",
         "epoch_s_iqr", "n", "step_ms", "loader_epoch_s", "compile_s", "peak_rss_mb", "cuda_peak_mb", "gflops",
         "roofline_frac", "epoch_roofline_frac", "speedup", "reason"]


class Run:
    """One run folder read back: results, metadata, gate and (when present) curves and predictions."""

    def __init__(self, folder):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise UserError(f"{self.folder}: no such run folder")
        self.meta = read_meta(self.folder)
        self.results = read_results(self.folder)
        self.id = self.meta.get("run_id", self.folder.name)
        self.gate = self._optional(GATE)
        self.curves = self._optional(CURVES)
        self.predictions = self._optional(PREDICTIONS)

    def _optional(self, name) -> pd.DataFrame | None:
        path = self.folder / name
        try:
            return pd.read_csv(path, keep_default_na=True) if path.exists() else None
        except (pd.errors.ParserError, pd.errors.EmptyDataError):
            return None


def read_asv(folder) -> pd.DataFrame:
    """asv's results (``<results_dir>/<machine>/<commit>-<env>.json``) as one row per benchmark and params."""
    folder, rows = Path(folder), []
    if not folder.is_dir():
        raise UserError(f"{folder}: no such asv results folder")
    for path in sorted(folder.glob("*/*.json")):
        if path.name == "machine.json":
            continue
        try:
            data = json.loads(path.read_text())
            columns = data["result_columns"]
        except (OSError, json.JSONDecodeError, KeyError):
            raise UserError(f"{path}: not an asv results file") from None
        for name, values in data.get("results", {}).items():
            entry = dict(zip(columns, values))
            params = entry.get("params") or [[]]
            combos = pd.MultiIndex.from_product(params).tolist() if params and params[0] else [()]
            for combo, value in zip(combos, entry.get("result") or []):
                rows.append(dict(source="asv", benchmark=name, params=", ".join(map(str, combo)), value=value,
                                 commit=data.get("commit_hash", "")[:8], machine=path.parent.name))
    return pd.DataFrame(rows, columns=["source", "benchmark", "params", "value", "commit", "machine"])


def read_pytest_benchmark(paths) -> pd.DataFrame:
    """pytest-benchmark's ``--benchmark-json`` files as one row per benchmark."""
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
            stats, extra = b.get("stats", {}), b.get("extra_info", {})
            rows.append(dict(source="pytest-benchmark", benchmark=b.get("name"), group=b.get("group"),
                             median_s=stats.get("median"), iqr_s=stats.get("iqr"), rounds=stats.get("rounds"),
                             samples_per_s=extra.get("samples_per_s"), file=path.name))
    return pd.DataFrame(rows)


# -- figures --------------------------------------------------------------------------------------
def _save(fig, folder: Path, name: str) -> str:
    path = folder / "figures" / f"{name}.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return f"figures/{name}.png"


def _grid_axes(n: int, width=5.2, height=3.8):
    cols = min(n, 2)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat)


def fig_batch_sizes(ok: pd.DataFrame, folder: Path):
    data = ok[ok["loader"] == "resident"]
    groups = [(k, g) for k, g in data.groupby(["model", "device"]) if g["batch_size"].nunique() > 1]
    if not groups:
        return None, "throughput vs batch size: the run timed one batch size per form (widen --batch-sizes)"
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
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=8)
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


def fig_compile_memory(ok: pd.DataFrame, folder: Path):
    per_form = ok.groupby(["model", "device", "form"], sort=False).agg(
        compile_s=("compile_s", "max"), peak_rss_mb=("peak_rss_mb", "max"), cuda_peak_mb=("cuda_peak_mb", "max"))
    if per_form.empty:
        return None, "compile time and memory: no timed cell"
    per_form = per_form.reset_index()
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


def fig_curves(curves: pd.DataFrame | None, folder: Path):
    if curves is None or curves.empty:
        return None, "training curves: this run has none (run without --no-curves to record them)"
    groups = list(curves.groupby(["form", "device"], sort=False))
    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 3.4), squeeze=False)
    for ax, ((form, device), g) in zip(axes.flat, groups):
        ax.plot(g["epoch"], g["train_loss"], label="train loss")
        ax.plot(g["epoch"], g["train_acc"], ls="--", label="train acc")
        ax.plot(g["epoch"], g["test_acc"], ls="-.", label="test acc")
        ax.set(xlabel="epoch", ylabel="loss (nats) / accuracy (fraction)", ylim=(0.3, 0.9),
               title=f"{form} on {device}")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("softmax regression on Fashion-MNIST, batch 256, lr 0.1", fontsize=10)
    return _save(fig, folder, "training_curves"), None


def fig_predictions(predictions: pd.DataFrame | None, data_dir, folder: Path):
    if predictions is None or predictions.empty:
        return None, "prediction grid: this run has no predictions"
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
def compare(a: Run, b: Run, threshold: float) -> pd.DataFrame:
    """Per cell timed in both runs: samples/s of B over A, and whether it moved beyond ``threshold``."""
    cols = list(AXES) + ["samples_per_s", "epoch_s", "step_ms"]
    left, right = (r.results[r.results["status"] == "ok"][cols] for r in (a, b))
    both = left.merge(right, on=list(AXES), suffixes=("_a", "_b"))
    both["ratio"] = both["samples_per_s_b"] / both["samples_per_s_a"]
    both["change"] = ["worse" if r < 1 - threshold else "better" if r > 1 + threshold else "same"
                      for r in both["ratio"]]
    return both


def _html_table(frame: pd.DataFrame, classes=None) -> str:
    def fmt(v):
        return f"{v:.4g}" if isinstance(v, float) and not math.isnan(v) else ("" if isinstance(v, float) else v)

    body = frame.map(fmt) if hasattr(frame, "map") else frame.applymap(fmt)
    rows = []
    for i, (_, row) in enumerate(body.iterrows()):
        cls = f' class="{classes[i]}"' if classes else ""
        rows.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>")
    head = "".join(f"<th>{html.escape(c)}</th>" for c in frame.columns)
    return f'<table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _md_table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "(empty)\n"
    cells = frame.astype(object).where(frame.notna(), "")
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    for row in cells.itertuples(index=False):
        lines.append("| " + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<script>window.pageErrors=[];window.addEventListener("error",function(e){{window.pageErrors.push(String(e.message||e))}},true);
(function(){{var log=console.error;console.error=function(){{window.pageErrors.push([].join.call(arguments," "));log.apply(console,arguments)}}}})();
window.addEventListener("load",function(){{var bad=[].filter.call(document.images,function(i){{return !i.complete||i.naturalWidth===0}});
document.body.setAttribute("data-broken-images",bad.length);document.body.setAttribute("data-errors",window.pageErrors.length);
document.body.setAttribute("data-checked","yes")}});</script>
<style>body{{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#222}}
h1{{font-size:1.6em}}h2{{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}}
table{{border-collapse:collapse;font-size:12px;margin:.5em 0;display:block;overflow-x:auto}}
td,th{{border:1px solid #ddd;padding:2px 6px;text-align:right;white-space:nowrap}}th{{background:#f3f3f3}}
tr.worse td{{background:#fdd;color:#a00}}tr.better td{{background:#dfd}}tr.fail td{{background:#fdd}}
.headline{{background:#f5f9ff;border-left:4px solid #36c;padding:.6em 1em}}.missing{{color:#a60}}
img{{max-width:100%;border:1px solid #eee;margin:.4em 0}}code{{background:#f3f3f3;padding:0 3px}}</style></head>
<body><h1>{title}</h1>{body}</body></html>"""


def build(runs: list[Run], out: Path, asv_dir=None, pytest_jsons=(), threshold: float = 0.10) -> Path:
    """Write the report of ``runs`` (one, or two to compare) into ``out``; return index.html's path."""
    if not runs:
        raise UserError("no results to report: give a run folder")
    run = runs[-1]
    (out / "figures").mkdir(parents=True, exist_ok=True)
    (out / "tables").mkdir(exist_ok=True)
    html_parts, md_parts, missing = [], [], []
    env, peaks = run.meta.get("env", {}), run.meta.get("peaks", {})
    frame = run.results
    ok = frame[frame["status"] == "ok"]

    def section(title, text_html="", text_md=""):
        html_parts.append(f"<h2>{html.escape(title)}</h2>{text_html}")
        md_parts.append(f"\n## {title}\n\n{text_md}")

    def table(name, data: pd.DataFrame, classes=None):
        write_atomic(out / "tables" / f"{name}.csv", data.to_csv(index=False))
        link = f'<p><a href="tables/{name}.csv">{name}.csv</a></p>'
        return _html_table(data, classes) + link, _md_table(data) + f"\n[{name}.csv](tables/{name}.csv)\n"

    def figure(result):
        path, why = result
        if path:
            html_parts.append(f'<img src="{path}" alt="{html.escape(path)}">')
            md_parts.append(f"\n![{path}]({path})\n")
        else:
            missing.append(why)
            html_parts.append(f'<p class="missing">Not shown: {html.escape(why)}</p>')
            md_parts.append(f"\n*Not shown: {why}*\n")

    lines = headlines(frame)
    if ok.empty:
        lines = ["no cell was timed in this run: see the reasons below"] + lines
    section("Headline", '<div class="headline">' + "".join(f"<p>{html.escape(l)}</p>" for l in lines) + "</div>",
            "".join(f"- {l}\n" for l in lines))
    html_parts.append("<p>Baseline cells (the seeds' pipeline): " + html.escape("; ".join(
        f"{m}: " + ", ".join(f"{k}={v}" for k, v in b.items() if k != "model") for m, b in BASELINES.items())) + "</p>")

    if len(runs) == 2:
        diff = compare(runs[0], runs[1], threshold)
        h, m = table("comparison", diff, classes=diff["change"].tolist())
        section(f"Comparison: {runs[1].id} over {runs[0].id} (threshold {threshold:.0%}, worse in red)", h, m)

    section("Throughput vs batch size")
    figure(fig_batch_sizes(ok, out))
    section("Epoch time vs DataLoader workers")
    figure(fig_workers(ok, out))
    section("Where the time goes: loader only, compute only, end to end")
    figure(fig_breakdown(ok, out))
    section("Roofline")
    figure(fig_roofline(ok, peaks, out))
    section("Compile time and peak memory")
    figure(fig_compile_memory(ok, out))

    if run.gate is not None and not run.gate.empty:
        gate = run.gate[[c for c in ["model", "form", "device", "status", "loss_max_abs", "loss_max_rel",
                                     "param_max_abs", "param_max_rel", "rtol", "atol", "tolerance_reason", "reason"]
                         if c in run.gate.columns]]
        h, m = table("equal_results", gate, classes=["fail" if s == "fail" else "" for s in gate["status"]])
        section("Equal results against the fp64 oracle", h, m)
    else:
        missing.append("equal-results table: the run has no gate.csv")
        section("Equal results against the fp64 oracle", '<p class="missing">This run has no gate results.</p>',
                "*This run has no gate results.*\n")

    section("Training curves: softmax regression")
    figure(fig_curves(run.curves, out))
    skipped_curves = run.meta.get("curves_skipped", {})
    if skipped_curves:
        html_parts.append("<p>Not trained: " + html.escape("; ".join(f"{f}: {r}" for f, r in skipped_curves.items()))
                          + "</p>")
        md_parts.append("\nNot trained: " + "; ".join(f"{f}: {r}" for f, r in skipped_curves.items()) + "\n")
    figure(fig_predictions(run.predictions, run.meta.get("config", {}).get("data_dir"), out))

    h, m = table("results", frame[[c for c in SHOWN if c in frame.columns]],
                 classes=["fail" if s in ("failed-equivalence", "error") else "" for s in frame["status"]])
    section("All cells", h, m)
    not_timed = frame[frame["status"] != "ok"][["model", "form", "device", "loader", "workers", "batch_size",
                                                 "status", "reason"]]
    if not not_timed.empty:
        h, m = table("not_timed", not_timed)
        section("Cells not timed, and why", h, m)

    extra = []
    if asv_dir:
        extra.append(("asv", read_asv(asv_dir)))
    if pytest_jsons:
        extra.append(("pytest_benchmark", read_pytest_benchmark(pytest_jsons)))
    for name, data in extra:
        h, m = table(name, data)
        section(f"{name.replace('_', '-')} results", h if not data.empty else "<p>(none)</p>", m)

    env_rows = pd.DataFrame([{"key": k, "value": str(v)} for k, v in env.items()] +
                            [{"key": f"peak {d}", "value": f"{p['gflops']:.0f} GFLOP/s, {p['gbps']:.1f} GB/s"}
                             for d, p in peaks.items()])
    h, m = table("environment", env_rows)
    section("Environment", h, m)
    if missing:
        section("What is missing", "<ul>" + "".join(f"<li>{html.escape(w)}</li>" for w in missing) + "</ul>",
                "".join(f"- {w}\n" for w in missing))

    title = f"linbench report: run {run.id}" + (f" vs {runs[0].id}" if len(runs) == 2 else "")
    machine = f"{env.get('cpu', '?')}, {env.get('threads', '?')} threads" + (f", {env['gpu']}" if env.get("gpu") else "")
    intro = (f"<p>Machine: {html.escape(machine)}. Commit <code>{html.escape(str(env.get('commit', ''))[:10])}</code>, "
             f"torch {html.escape(str(env.get('torch')))}, {html.escape(str(env.get('time')))}.</p>")
    write_atomic(out / "index.html", PAGE.format(title=html.escape(title), body=intro + "".join(html_parts)))
    write_atomic(out / "report.md", f"# {title}\n\nMachine: {machine}. Commit `{str(env.get('commit', ''))[:10]}`.\n"
                 + "".join(md_parts))
    return out / "index.html"
