"""The GPU stages of the short GPU check (:mod:`bench.commands.gpu_check`): ``equal`` (bit-for-bit equality of the
epoch forms) and ``figures`` (the resident softmax epoch at batch 256 of each form, wall clock and CUDA events, and
the kernels of one epoch from the profiler, L2 warm and cold). Both need a GPU; both write CSV files into the
check's folder and print what they found.
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path

import pandas as pd
import torch

from bench.defaults import GPU_CHECK_EPOCH_FORMS as EPOCH_FORMS
from bench.defaults import GPU_CHECK_FIGURE_FORMS as FIGURE_FORMS
from bench.defaults import GPU_CHECK_MODEL, GPU_CHECK_NAN_KERNELS

BATCH, SEED, REPEATS = 256, 0, 5
L2_FLUSH_BYTES = 256 * 2**20  # written between epochs for a cold L2 (the H100's L2 is 50 MB, the H200's 60 MB)


def _split():
    from bench.data import load_split

    split = load_split(GPU_CHECK_MODEL, True)
    return split.X.to("cuda"), split.y.to("cuda")


def _form(form: str):
    import impls
    from impls.contract import Setup
    from impls.models import MODELS, init_params

    spec = MODELS[GPU_CHECK_MODEL]
    if form not in impls.FORM_MODULES:
        return None, f"no {form} form in this commit"
    if reason := impls.unavailable(spec, form, Setup(spec.lr, "cuda")):
        return None, reason
    return impls.build(spec, form, init_params(spec, SEED), Setup(spec.lr, "cuda")), None


def _epoch(X, y, order):
    from impls.contract import EpochData

    return EpochData(X, y, order, BATCH, 255.0 if X.dtype == torch.uint8 else 1.0)


def _orders(n: int, count: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(SEED)
    return [torch.randperm(n, generator=g).to("cuda") for _ in range(count)]


def _same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def equal_stage(out: Path) -> int:
    """Two runs of each epoch form bit for bit, each form against the first bit for bit, a form whose epoch is a
    captured graph replayed on a second order against the ops' CPU reference (the gate's fp32 tolerance), a bad
    label and a bad index NaN through the raw extension."""
    import impls
    from impls import cuda
    from impls.common import FP32
    from impls.epoch_graph import EpochGraph

    X, y = _split()
    orders = _orders(len(y), 2)
    rows, states = [], {}
    for form in EPOCH_FORMS:
        runs = []
        for _ in range(2):
            instance, reason = _form(form)
            if instance is None:
                rows.append(dict(check=f"{form}: two runs", ok=None, detail=reason))
                break
            losses = [instance.train_epoch(_epoch(X, y, o)) for o in orders]
            torch.cuda.synchronize()
            runs.append((torch.cat(losses).cpu(), instance.state()))
        if len(runs) == 2:
            same = torch.equal(runs[0][0], runs[1][0]) and _same(runs[0][1], runs[1][1])
            rows.append(dict(check=f"{form}: two runs", ok=same, detail="losses and weights bit for bit"))
            states[form] = runs[0]
    first = EPOCH_FORMS[0]
    for form, (losses, state) in states.items():
        if form != first and first in states:
            same = torch.equal(losses, states[first][0]) and _same(state, states[first][1])
            rows.append(dict(check=f"{form} = {first}", ok=same, detail="losses and weights bit for bit"))
    for form in [f for f in states if issubclass(impls.form_class(GPU_CHECK_MODEL, f), EpochGraph)]:
        # a captured epoch's second run replayed it on a new order: the ops' CPU reference of both epochs
        instance, _ = _form(first)
        W, b = instance.weight.cpu().clone(), instance.b.cpu().clone()
        lr = instance.lr.cpu()
        want = torch.cat([cuda.softmax_epoch(W, b, X.cpu(), y.cpu(), o.cpu(), BATCH, 255.0, lr) for o in orders])
        got = states[form][0]
        ok = torch.allclose(got, want, rtol=FP32.rtol, atol=FP32.atol)
        rows.append(dict(check=f"{form} replayed on a new order = CPU reference", ok=ok,
                         detail=f"max |diff| {float((got - want).abs().max()):.3g}"))
    instance, _ = _form(first)
    if instance is not None:
        rows += _nan_checks(instance, X, y, states)
    frame = pd.DataFrame(rows)
    frame.to_csv(out / "equal.csv", index=False)
    print(frame.to_string(index=False))
    return 0 if frame["ok"].dropna().all() else 1


def _nan_checks(instance, X: torch.Tensor, y: torch.Tensor, states: dict) -> list[dict]:
    """A bad label and a bad index give NaN in each epoch kernel whose form ran (the extension called directly: the
    Python wrappers refuse a bad index before a launch)."""
    from impls import cuda

    ext, rows = cuda.extension(), []
    for name in [k for k, form in GPU_CHECK_NAN_KERNELS.items() if form in states]:
        for bad in ("label", "index"):
            small, labels, order = X[:512].clone(), y[:512].clone(), torch.arange(512, device="cuda")
            if bad == "label":
                labels[3] = 10  # a label past the classes
            else:
                order[7] = 10**9  # a row index past the split
            loss = getattr(ext, name)(instance.weight.clone(), instance.b.clone(), small, labels, order, BATCH, 255.0,
                                      instance.lr)
            rows.append(dict(check=f"{name}: bad {bad}: NaN", ok=bool(torch.isnan(loss).any()),
                             detail=str(loss.tolist())))
    return rows


def _flush_l2(buffer: torch.Tensor) -> None:
    buffer.add_(1)


def figures_stage(out: Path) -> int:
    """The epoch of each form by wall clock and CUDA events (``figures.csv``), each one's ratio to ``module``; the
    kernels of one epoch of each fused form from the profiler, L2 warm and cold (``kernels.csv``)."""
    from torch.profiler import ProfilerActivity, profile


    X, y = _split()
    orders = _orders(len(y), REPEATS + 1)
    flush = torch.empty(L2_FLUSH_BYTES // 4, device="cuda")
    rows, kernels = [], []
    for form in FIGURE_FORMS:
        instance, reason = _form(form)
        if instance is None:
            rows.append(dict(form=form, note=reason))
            continue
        def train(o, instance=instance):
            if callable(getattr(instance, "train_epoch", None)):
                return instance.train_epoch(_epoch(X, y, o))
            return [instance.step(*b) for b in _epoch(X, y, o).batches()]

        train(orders[0])  # warm: builds, compiles, captures
        torch.cuda.synchronize()
        wall, device = [], []
        for o in orders[1:]:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            t0 = time.perf_counter()
            start.record()
            train(o)
            end.record()
            torch.cuda.synchronize()
            wall.append(time.perf_counter() - t0)
            device.append(start.elapsed_time(end) / 1e3)
        rows.append(dict(form=form, wall_s=statistics.median(wall), events_s=statistics.median(device),
                         wall_min_s=min(wall), n=len(wall)))
        if form in EPOCH_FORMS:
            for l2 in ("warm", "cold"):
                if l2 == "cold":
                    _flush_l2(flush)
                torch.cuda.synchronize()
                with profile(activities=[ProfilerActivity.CUDA]) as prof:
                    train(orders[1])
                    torch.cuda.synchronize()
                for e in prof.key_averages():
                    if e.device_time_total > 0:
                        kernels.append(dict(form=form, l2=l2, kernel=e.key, calls=e.count,
                                            device_us=e.device_time_total))
    frame = pd.DataFrame(rows)
    base = FIGURE_FORMS[0]
    if "wall_s" in frame and frame["form"].eq(base).any():
        row = frame.loc[frame["form"] == base].iloc[0]
        frame[f"x_{base}_wall"] = row["wall_s"] / frame["wall_s"]
        frame[f"x_{base}_events"] = row["events_s"] / frame["events_s"]
    frame.to_csv(out / "figures.csv", index=False)
    pd.DataFrame(kernels).to_csv(out / "kernels.csv", index=False)
    print(frame.to_string(index=False))
    return 0
