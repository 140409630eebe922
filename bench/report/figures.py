"""Every figure of the report, drawn with matplotlib (the only module of the package that imports it).

Each ``fig_*`` function draws from the run's frames into ``<out>/figures/<name>.png`` and returns
``(path relative to the page, None)``, or ``(None, why)`` in words when the run holds nothing to draw.
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
from bench.grid import TRAIN_EXAMPLES  # noqa: E402
from bench.store import PREDICTIONS  # noqa: E402
from impls.common import MODELS, step_cost  # noqa: E402

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
    data = ok[(ok["batch_size"] == ok["model"].map(BOOK_BATCH)) & (ok["workers"] == 0)]
    groups = list(data.groupby(["model", "device"]))
    if not groups:
        return None, "where the time goes: no timed cell at the book's batch size with 0 workers"
    fig, axes = _grid_axes(len(groups), width=6.5)
    for ax, ((model, device), g) in zip(axes, groups):
        g = g.sort_values(["loader", "form"])
        labels = [f"{r.form} / {r.loader}" for r in g.itertuples()]
        steps = math.ceil(TRAIN_EXAMPLES[model] / BOOK_BATCH[model])
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
    spec = MODELS["softmax"]
    fig.suptitle(f"softmax regression on Fashion-MNIST, batch {spec.batch_size}, lr {spec.lr:g}", fontsize=10)
    return _save(fig, folder, "training_curves"), None


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
