"""Every figure of the report, drawn with matplotlib (the only module of the package that imports it).

Each ``fig_*`` function draws from the run's frames into ``<out>/figures/<name>.png`` and returns
``(path relative to the page, None)``, or ``(None, why)`` in words when the run holds nothing to draw.
Bar charts have linear axes, each bar labelled with its value (cut, and marked, short of a few bars far
longer than the rest: :func:`cut_at`); lines across batch sizes and the roofline span decades: log-log.
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from bench import UserError  # noqa: E402
from bench.grid import AXES, GATED, gate_key, gate_label, gated_in, spec_of, train_examples  # noqa: E402
from bench.runs.run_folder import PREDICTIONS
from impls.models import MODELS, ModelError, step_cost  # noqa: E402
from impls.precision import PRECISIONS  # noqa: E402

BOOK_BATCH = {model: spec.batch_size for model, spec in MODELS.items()}  # the batch size d2l trains each model with


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
        return None, ("throughput vs batch size: the run timed one batch size per model on the resident loader "
                      "(widen --batch-sizes)")
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


def span_scale(values) -> str:
    """``"log"`` when the positive ``values`` span more than 30x (a linear axis would flatten the small ones),
    else ``"linear"``."""
    v = pd.Series(values, dtype=float)
    v = v[v > 0]
    return "log" if len(v) and v.max() / v.min() > 30 else "linear"


def fig_workers(ok: pd.DataFrame, folder: Path):
    """Epoch time against DataLoader workers, one panel per form (and precision, image size) and batch size:
    where workers start to pay for themselves, with the resident loader's epoch (no loading) as the floor."""
    by = [a for a in AXES if a in ok.columns and a not in ("loader", "workers")]
    data = ok[ok["loader"].isin(["torchvision", "tensor"])]
    groups = [(k, g) for k, g in data.groupby(by, sort=False) if g["workers"].nunique() > 1]
    if not groups:
        return None, "epoch time vs workers: the run timed one worker count per loader (widen --workers)"
    resident = ok[ok["loader"] == "resident"].set_index(by)["epoch_s"]
    fig, axes = _grid_axes(len(groups))
    for ax, (key, g) in zip(axes, groups):
        for loader, f in g.groupby("loader"):
            f = f.sort_values("workers")
            ax.errorbar(f["workers"], f["epoch_s"], yerr=f["epoch_s_iqr"] / 2, marker="o", capsize=3,
                        label=f"{loader}: end to end")
            ax.plot(f["workers"], f["loader_epoch_s"], ls="--", marker="x", label=f"{loader}: loader only")
        if key in resident.index:
            ax.axhline(resident[key], color="grey", ls=":", label="resident: no loading")
        scale = span_scale(pd.concat([g["epoch_s"], g["loader_epoch_s"]]))
        values = dict(zip(by, key))
        ax.set(xlabel="DataLoader workers", ylabel="epoch time (s" + (", log scale)" if scale == "log" else ")"),
               yscale=scale, title=f"{gate_label(gate_key(values))}, batch {values['batch_size']}"
               + (f", {values['threads']} threads" if data["threads"].nunique() > 1 else ""))
        if scale == "linear":
            ax.set_ylim(bottom=0)
        ax.set_xticks(sorted(g["workers"].unique()))
        ax.grid(True, alpha=0.3)
        ax.legend()
    return _save(fig, folder, "epoch_time_vs_workers"), None


def cut_at(values) -> float | None:
    """Where a linear axis is cut so that a few bars far longer than the rest (over 5x the next) do not
    flatten them: 1.15x the longest of the rest; None when no minority of bars is that long."""
    v = sorted((float(x) for x in values if pd.notna(x) and x > 0), reverse=True)
    return next((1.15 * v[i + 1] for i in range((len(v) - 1) // 2) if v[i] > 5 * v[i + 1]), None)


def _annotate(ax, bars, values, limit: float | None = None) -> None:
    """Each bar's value at its end, so a short bar beside a long one still reads; a bar past the axis's
    ``limit`` is cut there and says its value inside its end, with an arrow."""
    for bar, v in zip(bars, values):
        y = bar.get_y() + bar.get_height() / 2
        if pd.isna(v):
            continue
        if limit is not None and v > limit:
            ax.annotate(f"{v:.3g} \u2192", (limit, y), xytext=(-3, 0), textcoords="offset points", va="center",
                        ha="right", fontsize=7, color="white", fontweight="bold")
        else:
            ax.annotate(f"{v:.3g}", (bar.get_width(), y), xytext=(2, 0), textcoords="offset points", va="center",
                        fontsize=7)


def fig_breakdown(ok: pd.DataFrame, folder: Path):
    """Seconds per epoch of each form and loader: loader only, compute only, end to end; horizontal bars on a
    linear axis, each with its value; the axis cut short of a few bars far longer than the rest."""
    data = ok[(ok["batch_size"] == ok["model"].map(BOOK_BATCH)) & (ok["workers"] == 0)]
    groups = list(data.groupby(["model", "device"]))
    if not groups:
        return None, "where the time goes: no timed cell at the book's batch size with 0 workers"
    rows = max(len(g) for _, g in groups)
    fig, axes = _grid_axes(len(groups), width=6.5, height=0.62 * rows + 1.2)
    parts = {"loader_epoch_s": "loader only", "compute_s": "compute only (steps on device)", "epoch_s": "end to end"}
    for ax, ((model, device), g) in zip(axes, groups):
        g = g.sort_values(["loader", "form"], ascending=False)  # top to bottom: alphabetical
        g = g.assign(compute_s=g["step_ms"] * math.ceil(train_examples(model) / BOOK_BATCH[model]) / 1e3)
        values = g[list(parts)].to_numpy().ravel()
        limit = cut_at(values)
        y, h = range(len(g)), 0.27
        for k, (column, label) in enumerate(parts.items()):
            bars = ax.barh([i + (1 - k) * h for i in y], g[column], h, label=label)
            _annotate(ax, bars, g[column], limit)
        ax.set_yticks(list(y), [f"{r.form} / {r.loader}" for r in g.itertuples()], fontsize=8)
        ax.set_xlim(0, limit or 1.18 * max(v for v in values if pd.notna(v)))  # room for the values
        ax.set(title=f"{model} on {device}", xlabel="seconds per epoch" + (
            f" (axis cut at {limit:.3g} s: a longer bar ends in \u2192)" if limit else ""))
        ax.grid(True, axis="x", alpha=0.3)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=3, fontsize=8)
    fig.suptitle("where the time goes: seconds per epoch", fontsize=10)
    return _save(fig, folder, "where_the_time_goes"), None


def _intensity(row: dict) -> float:
    """FLOPs per byte of a cell's step (its model at its image size, bytes in its precision)."""
    try:
        flops, bytes_ = spec_of(row).cost(row["batch_size"], PRECISIONS[row.get("precision", "fp32")].storage.itemsize)
    except (ModelError, KeyError):
        flops, bytes_ = step_cost(row["model"], row["batch_size"])
    return flops / bytes_


def fig_roofline(ok: pd.DataFrame, peaks: dict, folder: Path):
    devices = [d for d in ok["device"].unique() if d in peaks]
    if not devices:
        return None, "roofline: no timed cell"
    fig, axes = _grid_axes(len(devices), width=6)
    for ax, device in zip(axes, devices):
        g, peak = ok[ok["device"] == device], peaks[device]
        intensity = [_intensity(r) for r in g.to_dict("records")]
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


def compile_seconds(ok: pd.DataFrame, compiles: dict | None = None) -> pd.DataFrame:
    """Compile seconds per gate key (model, form, device, precision, ...) that compiled: the sum of every
    compilation the run logged (``meta['compiles']``: the gate's and the cells'), else the cells' largest
    ``compile_s``. A form with neither did not compile and has no row."""
    per_form = ok.groupby(gated_in(ok), sort=False)["compile_s"].max().reset_index()
    logs = [(compiles or {}).get(gate_label(gate_key(r))) for r in per_form.to_dict("records")]
    logged = [sum(e["seconds"] for e in log) if log else math.nan for log in logs]
    per_form["compile_s"] = pd.Series(logged, index=per_form.index, dtype=float).fillna(per_form["compile_s"])
    return per_form[per_form["compile_s"].notna()].reset_index(drop=True)


MEMORY = {"cuda_peak_mb": "CUDA max allocated", "rss_growth_mb": "host RSS growth during the cell"}


def cell_memory(ok: pd.DataFrame) -> pd.DataFrame:
    """Per gate key (model, form, device, precision, ...), the largest over its cells of each measure of a cell's
    own memory (:data:`MEMORY`) the run recorded; rows with none of them left out. Not ``peak_rss_mb``: that is the
    process's peak, the same for every cell of a run."""
    measures = [c for c in MEMORY if c in ok.columns and ok[c].notna().any()]
    if not measures:
        return pd.DataFrame(columns=gated_in(ok))
    per_form = ok.groupby(gated_in(ok), sort=False)[measures].max().reset_index()
    return per_form[per_form[measures].notna().any(axis=1)].reset_index(drop=True)


def fig_compile_memory(ok: pd.DataFrame, folder: Path, compiles: dict | None = None):
    """Compile seconds of each form that compiled (:func:`compile_seconds`), and the memory of each form's
    own (:func:`cell_memory`): a panel each, linear axes, either left out when the run has none."""
    if ok.empty:
        return None, "compile time and memory: no timed cell"
    seconds, memory = compile_seconds(ok, compiles), cell_memory(ok)
    if seconds.empty and memory.empty:
        return None, ("compile time and memory: no form compiled, and the run recorded no memory of a cell's own "
                      "(cuda_peak_mb, rss_growth_mb)")
    panels = [p for p in ("compile", "memory") if not (seconds if p == "compile" else memory).empty]
    rows = max(len(seconds), len(memory))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 0.4 * rows + 1.6), squeeze=False,
                             layout="constrained")
    for ax, panel in zip(axes[0], panels):
        if panel == "compile":
            labels = [f"{r.model}/{r.form}/{r.device}" for r in seconds.itertuples()]
            _annotate(ax, ax.barh(labels, seconds["compile_s"], color="tab:purple"), seconds["compile_s"])
            ax.set(xlabel="compile time (s)", title="torch.compile time per form that compiles")
            ax.set_xlim(0, seconds["compile_s"].max() * 1.2 or 1)
            continue
        labels = [f"{r.model}/{r.form}/{r.device}" for r in memory.itertuples()]
        measures = [c for c in MEMORY if c in memory.columns]
        h = 0.8 / len(measures)
        for k, c in enumerate(measures):
            bars = ax.barh([i + (k - (len(measures) - 1) / 2) * h for i in range(len(labels))], memory[c], h,
                           label=MEMORY[c])
            _annotate(ax, bars, memory[c])
        ax.set_yticks(range(len(labels)), labels)
        ax.set(xlabel="MiB, the largest of the form's cells", title="memory per form")
        ax.set_xlim(0, memory[measures].max().max() * 1.2 or 1)
        ax.legend(fontsize=8, loc="lower right")
    for ax in axes[0]:
        ax.invert_yaxis()  # first row on top
        ax.grid(True, axis="x", alpha=0.3)
    return _save(fig, folder, "compile_time_and_memory"), None


def fig_curves(curves: pd.DataFrame, folder: Path):
    groups = list(curves.groupby(gated_in(curves), sort=False))
    fig, axes = _grid_axes(len(groups), width=4.4, height=3.4, cols=3)
    values = curves[["train_loss", "train_acc", "test_acc"]]
    ylim = (min(0.3, values.min().min() - 0.02), max(0.9, values.max().max() + 0.02))
    for ax, (_, g) in zip(axes, groups):
        model, form, device = (g.iloc[0][a] for a in GATED[:3])
        ax.plot(g["epoch"], g["train_loss"], label="train loss")
        ax.plot(g["epoch"], g["train_acc"], ls="--", label="train acc")
        ax.plot(g["epoch"], g["test_acc"], ls="-.", label="test acc")
        ax.set(xlabel="epoch", ylabel="loss (nats) / accuracy (fraction)", ylim=ylim,
               title=f"{model}: {form} on {device}",
               xlim=(1, max(2, g["epoch"].max())))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    specs = [MODELS[m] for m in curves["model"].unique() if m in MODELS]
    fig.suptitle("; ".join(f"{s.name}: {s.summary}, batch {s.batch_size}, lr {s.lr:g}" for s in specs), fontsize=10)
    return _save(fig, folder, "training_curves"), None


def fig_predictions(predictions: pd.DataFrame | None, data_dir, folder: Path):
    if predictions is None or predictions.empty:
        return None, f"prediction grid: the run has no {PREDICTIONS} (it comes with the training curves)"
    from bench.data import load_split

    firsts = [g[g["form"] == g["form"].iloc[0]] for _, g in predictions.groupby("model", sort=False)]
    try:
        images = [load_split(first["model"].iloc[0], False, data_dir).X for first in firsts]
    except (UserError, KeyError) as e:
        return None, f"prediction grid: test images unavailable ({e})"
    cols = max(len(first) for first in firsts)
    fig, axes = plt.subplots(len(firsts), cols, figsize=(1.5 * cols, 2.3 * len(firsts)), squeeze=False)
    for row, first, X in zip(axes, firsts, images):
        for ax in row:
            ax.axis("off")
        for ax, r in zip(row, first.itertuples()):
            ax.imshow(X[int(r.index), 0].numpy(), cmap="gray")
            ax.set_title(f"{r.true}\n{r.predicted}", fontsize=8, color="black" if r.true == r.predicted else "red")
        row[0].text(-0.1, 0.5, f"{first['model'].iloc[0]}\n{first['form'].iloc[0]}", transform=row[0].transAxes,
                    ha="right", va="center", fontsize=8)
    fig.suptitle("test images: true label above, the first form's prediction below (per model)", fontsize=9)
    return _save(fig, folder, "predictions"), None
