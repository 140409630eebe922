"""The analysis of results, apart from drawing: speedups over the seeds' pipeline, headlines, the
fastest cell per model and device, the end of each training curve (two runs compared: bench/compare.py).
pandas only (no matplotlib), so the runner uses it as the report does.
"""
from __future__ import annotations

import math

import pandas as pd

from bench.grid import AXES, baselines, expand, gated_in
from bench.report.scaling import add_scaling
from impls.models import MODELS


def baseline_rows(frame: pd.DataFrame, model: str) -> pd.DataFrame:
    base = frame[frame["status"] == "ok"]
    for axis, value in baselines()[model].items():
        base = base[base[axis] == value]
    return base


def machines(frame: pd.DataFrame) -> list[str]:
    """The hosts that timed the cells of a merged run (its ``machine`` column), in order; empty for a run of
    one machine (no column, or one name)."""
    if "machine" not in frame.columns:
        return []
    names = [str(m) for m in dict.fromkeys(frame["machine"].dropna()) if str(m)]
    return names if len(names) > 1 else []


def _same_machine(rows: pd.DataFrame, base: pd.Series) -> pd.Index:
    """The rows timed on the machine of ``base`` (a row without a machine counts as any)."""
    if "machine" not in rows.columns or pd.isna(base.get("machine")) or not str(base["machine"]):
        return rows.index
    mine = rows["machine"]
    return rows.index[mine.isna() | (mine.astype(str) == "") | (mine.astype(str) == str(base["machine"]))]


def _baselines(frame: pd.DataFrame):
    """(each group's row index, its baseline row) for the groups of :func:`add_speedup` that have one."""
    for model in frame["model"].unique():
        free = [a for a in AXES if a not in baselines()[model]]
        mine = frame["model"] == model
        for _, group in frame[mine].groupby(free, sort=False, dropna=False):
            base = baseline_rows(group, model)
            if len(base):
                yield group, base.iloc[0]


def add_speedup(frame: pd.DataFrame, samples: pd.DataFrame | None = None, cross_machine: bool = False) -> pd.DataFrame:
    """Each row's samples/s over its model's baseline cell (the seeds' pipeline) at the same values of
    the axes the baseline does not name (e.g. the same thread count); NaN without one. With the run's
    raw ``samples``, ``speedup_lo``/``speedup_hi`` bound it (95%, bootstrap over both cells' epochs).
    In a merged run a row timed on another machine than its baseline cell gets NaN (see
    :func:`cross_machine_rows`), unless ``cross_machine``: then it compares two machines."""
    frame["speedup"] = frame["speedup_lo"] = frame["speedup_hi"] = math.nan
    for group, base in _baselines(frame):
        rows = group.index if cross_machine else _same_machine(group, base)
        frame.loc[rows, "speedup"] = frame.loc[rows, "samples_per_s"] / float(base["samples_per_s"])
        if samples is not None and len(samples):
            for i, lo_hi in _speedup_intervals(frame.loc[rows], base, samples).items():
                frame.loc[i, ["speedup_lo", "speedup_hi"]] = lo_hi
    return frame


def derived(frame: pd.DataFrame, samples: pd.DataFrame | None = None, cross_machine: bool = False) -> pd.DataFrame:
    """The columns a run's raw rows give rise to: ``speedup`` (and its interval) over the model's baseline cell
    (:func:`add_speedup`) and the distributed rows' ``scaling_eff`` (:func:`bench.report.scaling.add_scaling`)."""
    return add_scaling(add_speedup(frame.copy(), samples, cross_machine))


def cross_machine_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The timed rows of a merged run whose baseline cell was timed on another machine: their speedup is
    not computed (one machine's cells are compared with its own baseline only), ``base_machine`` added."""
    if not machines(frame):
        return frame.iloc[:0].assign(base_machine=pd.Series(dtype=object))
    out = []
    for group, base in _baselines(frame):
        ok = group[group["status"] == "ok"]
        other = ok.drop(index=_same_machine(ok, base))
        out.append(other.assign(base_machine=str(base["machine"])))
    return pd.concat(out) if out else frame.iloc[:0].assign(base_machine=pd.Series(dtype=object))


def cross_machine_note(frame: pd.DataFrame) -> str | None:
    """The merged run's rule on speedups across machines in words, or None where no row crosses machines."""
    rows = cross_machine_rows(frame)
    if rows.empty:
        return None
    where = ", ".join(f"{m}: {n} on {b}" for (m, b), n in rows.groupby(["model", "base_machine"], sort=False).size()
                      .items())
    if rows["speedup"].notna().any():
        return (f"{len(rows)} speedup(s) compare different machines (--cross-machine): the cell and its model's "
                f"baseline cell were timed on different hosts (baseline {where}), so they measure the machines too")
    return (f"no speedup for {len(rows)} cell(s) timed on another machine than their model's baseline cell "
            f"(baseline {where}): speedups are computed within one machine only (linbench report --cross-machine "
            "computes them across machines)")


def _speedup_intervals(rows: pd.DataFrame, base: pd.Series, samples: pd.DataFrame) -> dict:
    """Row index -> (lo, hi) of the speedup, from both cells' epoch samples."""
    from bench.regress.stats import speedup_ci

    epochs = samples[samples["metric"] == "epoch"]
    by_cell = {k: g["seconds"].to_numpy() for k, g in epochs.groupby(list(AXES), sort=False)}
    base_times = by_cell.get(tuple(base[a] for a in AXES))
    out = {}
    for i, row in rows.iterrows():
        times = by_cell.get(tuple(row[a] for a in AXES))
        if base_times is not None and times is not None and row["status"] == "ok":
            out[i] = speedup_ci(base_times, times)
    return out


def _speedup_text(row) -> str:
    """``28.1x (95%: 27.5-28.9x)``, or without the interval where the run has no samples for it."""
    text = f"{row['speedup']:.1f}x"
    if pd.notna(row.get("speedup_lo")) and pd.notna(row.get("speedup_hi")):
        text += f" (95%: {row['speedup_lo']:.1f}-{row['speedup_hi']:.1f}x)"
    return text


def headlines(frame: pd.DataFrame) -> list[str]:
    """The run's findings in words: the fastest form per model and device, and the loader ratio."""
    lines = []
    ok = frame[frame["status"] == "ok"]
    for (model, device), group in ok.groupby(["model", "device"], sort=False):
        best = group.loc[group["samples_per_s"].idxmax()]
        lines.append(f"fastest {model} on {device}: {best['form']} ({best['loader']}, w{best['workers']}, "
                     f"b{best['batch_size']}) {best['samples_per_s']:,.0f} samples/s, "
                     f"epoch {best['epoch_s']:.3g} s, "
                     + (f"{_speedup_text(best)} the seeds' pipeline, " if pd.notna(best["speedup"]) else "")
                     + f"{100 * best['epoch_roofline_frac']:.2g}% of the roofline")
    for model in ok["model"].unique():  # the seeds' loader against the data resident on the device
        base = baselines().get(model)
        if not base or base["loader"] == "resident" or base["workers"] == 0:
            continue
        loaders = ok[(ok["model"] == model) & (ok["device"] == base["device"])
                     & (ok["batch_size"] == base["batch_size"])]
        seeds = loaders[(loaders["loader"] == base["loader"]) & (loaders["workers"] == base["workers"])]
        res = loaders[loaders["loader"] == "resident"]["loader_epoch_s"]
        if len(seeds) and len(res):
            lines.append(f"{model} loader epoch on {base['device']}: resident {res.min():.3g} s vs {base['loader']} "
                         f"with {base['workers']} workers {seeds['loader_epoch_s'].min():.3g} s "
                         f"({seeds['loader_epoch_s'].min() / res.min():,.0f}x)")
    if note := cross_machine_note(frame):
        lines.append(note)
    for model in frame["model"].unique():
        if not len(baseline_rows(frame, model)):
            lines.append(f"no {model} speedups: its baseline cell ("
                         + ", ".join(f"{k}={v}" for k, v in baselines()[model].items()) + ") is not in this run")
    return lines


def headline_table(ok: pd.DataFrame) -> pd.DataFrame:
    """The fastest cell per model and device, with its speedup and fraction of the roofline."""
    best = ok.loc[ok.groupby(["model", "device"], sort=False)["samples_per_s"].idxmax()]
    best = best.assign(roofline_pct=100 * best["epoch_roofline_frac"])
    axes = ["model", "device", *(a for a in AXES if a not in ("model", "device"))]
    axes += ["machine"] if machines(ok) else []
    return best[[*axes, "samples_per_s", "epoch_s", "speedup", "speedup_lo", "speedup_hi", "roofline_pct"]]


def expected_cells(meta: dict) -> int | None:
    """The cells the run was to have: its grid's, or its shard's (``linbench run --shard``)."""
    if isinstance((meta.get("shard") or {}).get("cells"), list):
        return len(meta["shard"]["cells"])
    config = meta.get("config") or {}
    try:
        return len(expand(config["grid"], config.get("overrides") or {}))
    except Exception:  # noqa: BLE001 - an older or hand-written config: the count is only informative
        return None


TARGET_BELOW_BOOK = 0.02  # the default accuracy target: the book's test accuracy less this


def target_accuracy(model: str, target: float | None = None) -> float:
    """The test accuracy time to accuracy is measured to: ``target``, else the book's less 2 points."""
    book = MODELS[model].book_accuracy if model in MODELS else None
    return target if target is not None else (book - TARGET_BELOW_BOOK if book else math.nan)


def curves_summary(curves: pd.DataFrame, results: pd.DataFrame | None = None,
                   target: float | None = None) -> pd.DataFrame:
    """The last epoch of each form's training curve (per gate key: model, form, device, precision, ...), with the
    book's test accuracy where it gives one; and **time to accuracy** (MLPerf's measure): the epochs until the
    test accuracy first reaches the target (:func:`target_accuracy`) times the form's fastest timed epoch at
    the model's batch size in ``results`` (its own best loader and workers), so a faster epoch in a lower
    precision that needs more epochs shows it. Below fp32, ``x_fp32`` is fp32's epoch over this one's, and
    ``test_acc_fp32`` fp32's accuracy, of the same form and other axes."""
    keys = gated_in(curves)
    last = curves.sort_values("epoch").groupby(keys, sort=False).tail(1)
    book = {m: MODELS[m].book_accuracy for m in last["model"].unique() if m in MODELS}
    last = last.assign(book_test_acc=last["model"].map(book))
    reached = {}
    for key, g in curves.sort_values("epoch").groupby(keys, sort=False):
        hit = g[g["test_acc"] >= target_accuracy(g["model"].iloc[0], target)]
        reached[key] = int(hit["epoch"].iloc[0]) if len(hit) else math.nan
    last["target_acc"] = [target_accuracy(m, target) for m in last["model"]]
    last["epochs_to_target"] = [reached[tuple(r)] for r in last[keys].itertuples(index=False)]
    epoch = _fastest_epoch(results, keys)
    last["epoch_s"] = [epoch.get(tuple(r), math.nan) for r in last[keys].itertuples(index=False)]
    last["time_to_target_s"] = last["epochs_to_target"] * last["epoch_s"]
    columns = [*keys, "epochs", "train_loss", "train_acc", "test_acc", "book_test_acc", "train_s", "target_acc",
               "epochs_to_target", "epoch_s", "time_to_target_s"]
    if "precision" in keys and (last["precision"] != "fp32").any():
        others = [k for k in keys if k != "precision"]
        fp32 = last[last["precision"] == "fp32"].set_index(others)
        base = [tuple(r) for r in last[others].itertuples(index=False)]
        last["x_fp32"] = [fp32["epoch_s"].get(k, math.nan) / e for k, e in zip(base, last["epoch_s"])]
        last["test_acc_fp32"] = [fp32["test_acc"].get(k, math.nan) for k in base]
        columns += ["x_fp32", "test_acc_fp32"]
    return last.rename(columns={"epoch": "epochs", "seconds": "train_s"})[columns]


def _fastest_epoch(results: pd.DataFrame | None, keys: list[str]) -> dict:
    """Gate key -> the fastest timed epoch (s) of its cells at the model's batch size."""
    if results is None or results.empty or "epoch_s" not in results:
        return {}
    ok = results[(results["status"] == "ok") & results["world_size"].fillna(1).eq(1)]
    ok = ok[[b == MODELS[m].batch_size if m in MODELS else False for m, b in zip(ok["model"], ok["batch_size"])]]
    return ok.groupby(gated_in(ok), sort=False)["epoch_s"].min().to_dict()


def with_model(frame: pd.DataFrame | None, results: pd.DataFrame) -> pd.DataFrame | None:
    """Curves or predictions with their ``model`` column: a run from before it had one trained its one classifier."""
    if frame is None or "model" in frame.columns:
        return frame
    classifiers = [m for m in results["model"].unique() if m in MODELS and MODELS[m].classes]
    return frame.assign(model=classifiers[0] if len(classifiers) == 1 else "?")
