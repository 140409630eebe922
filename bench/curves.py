"""Training curves of each classifier per form: the chart d2l's ``train_ch3`` draws with its Animator.

Per epoch: mean train loss and train accuracy over the epoch's batches (of the outputs before each
update, as ``train_epoch_ch3`` counts them) and test accuracy after the epoch. Plus the seeds'
``predict_ch3``: the first test images with their true and predicted labels.

Training is untimed work (time to accuracy multiplies the curves' epochs by the cells' timed epochs), so a run
trains them in a process of their own beside its gate (:class:`Beside`), which is untimed too: the curves are
in before the first timed block, and no clock ever runs beside them.
"""
from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor

import pandas as pd
import torch

import impls
from bench.data import LABELS, load_split
from bench.grid import GATED, apply_gated, gate_key, gate_label, setup_of, spec_of
from bench.loaders import Resident
from impls.common import quiet
from impls.models import MODELS, init_params

PREDICTIONS = 8


def train_curves(key: tuple, epochs: int = 10, seed: int = 0, data_dir=None, tick=None):
    """(curve rows, prediction rows, reason not trained or None) of the form of gate key ``key`` (model, form,
    device, precision, image size, ...), trained at its model's batch size; ``tick()`` is called after each epoch
    trained (a progress bar's update)."""
    values, spec, setup = dict(zip(GATED, key)), spec_of(key), setup_of(key)
    form, device = values["form"], setup.device
    cap = impls.sample_cap(spec, form)
    reason = impls.unavailable(spec, form, setup) or (
        cap and f"too slow for whole epochs (its timed passes are capped at {cap} samples)")
    if reason:
        return [], [], reason
    apply_gated(key)
    train, test = load_split(spec, True, data_dir), load_split(spec, False, data_dir)
    X_test, y_test = test.features().to(device), test.y.to(device)
    instance = impls.build(spec, form, init_params(spec, seed), setup)
    batches = Resident(train.X, train.y, spec.batch_size, device, seed)
    rows, start = [], time.perf_counter()
    for epoch in range(1, epochs + 1):
        loss_sum = correct = seen = 0.0
        for X, y in batches:
            correct += float((instance.predict(X).argmax(1) == y).sum())
            loss_sum += float(instance.step(X, y)) * len(y)
            seen += len(y)
        test_acc = float((instance.predict(X_test).argmax(1) == y_test).float().mean())
        rows.append(dict(values, epoch=epoch, train_loss=loss_sum / seen, train_acc=correct / seen,
                         test_acc=test_acc, seconds=time.perf_counter() - start))
        if tick:
            tick()
    predicted = instance.predict(X_test[:PREDICTIONS]).argmax(1).tolist()
    predictions = [dict(values, index=i, true=LABELS[int(y_test[i])], predicted=LABELS[p])
                   for i, p in enumerate(predicted)]
    return rows, predictions, None


_alone = None  # in the process of :class:`Beside`: set once the caller's own untimed work is done


def _beside(alone) -> None:
    """The process of :class:`Beside` starts: torch's extension builder imported without its no-GPU warning (as in
    the run's process), and the event that says when it has the machine to itself."""
    global _alone
    with quiet():
        from torch.utils import cpp_extension  # noqa: F401
    _alone = alone


def _trained(keys, epochs: int, seed: int, data_dir, tick=None) -> dict:
    """Gate key -> :func:`train_curves` of it, for each of ``keys``; in the process of :class:`Beside`, each on one
    thread while the caller works beside it, on every core once it is done."""
    out = {}
    for key in keys:
        if _alone is not None:
            torch.set_num_threads((os.cpu_count() or 1) if _alone.is_set() else 1)
        out[key] = train_curves(key, epochs, seed, data_dir, tick)
    return out


class Beside:
    """The curves of ``keys`` (classifier gate keys) trained in a spawned process while the caller does other
    untimed work (the gate), each curve on one thread until the caller says it is done (:meth:`result`), then on
    every core; :meth:`result` waits for them (None if that process failed: the curves are then trained at the end,
    in the run's own process)."""

    def __init__(self, keys, epochs: int, seed: int, data_dir):
        self.keys, context = list(keys), multiprocessing.get_context("spawn")
        self._alone = context.Event()
        self._pool = ProcessPoolExecutor(1, mp_context=context, initializer=_beside, initargs=(self._alone,))
        self._job = self._pool.submit(_trained, self.keys, epochs, seed, data_dir)

    def result(self) -> dict | None:
        self._alone.set()
        try:
            return self._job.result()
        except Exception:  # noqa: BLE001 - a broken process: trained again in the run's own process
            return None
        finally:
            self.close()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def abandon(self) -> None:
        """The caller stops (an error, Ctrl-C, a signal): the curves process ended now, not waited for."""
        for process in list(getattr(self._pool, "_processes", {}).values()):
            process.terminate()
        self._pool.shutdown(wait=False, cancel_futures=True)


def beside(curves: Beside | None, work):
    """(``work()``, the curves of ``curves`` trained meanwhile, or None); if ``work`` raises (an error, Ctrl-C, a
    signal), the curves' process is ended at once and the exception goes on."""
    if curves is None:
        return work(), None
    try:
        out = work()
    except BaseException:
        curves.abandon()
        raise
    return out, curves.result()


def classifier_keys(gate_keys) -> list[tuple]:
    """The gate keys (in order, once each) whose model is a classifier: those with training curves."""
    return [k for k in dict.fromkeys(gate_keys) if MODELS[dict(zip(GATED, k))["model"]].classes]


def record_curves(store, epochs: int, seed: int, data_dir, say, bar, trained: dict | None = None) -> None:
    """The curves and predictions of every classifier form a run timed, per gate key (model, form, device,
    precision, image size, ...), into its folder (``say``: a stage line; ``bar(total, desc, unit)``: a progress
    bar). ``trained``: gate key -> curves already trained (:class:`Beside`); the others are trained here."""
    from bench.runs.run_folder import CURVES, PREDICTIONS

    keys = classifier_keys(gate_key(r) for r in store.rows.values() if r["status"] == "ok")
    trained = {k: v for k, v in (trained or {}).items() if k in keys}
    todo = [k for k in keys if k not in trained]
    if todo:
        say(f"training curves: {epochs} epochs of each of {len(todo)} classifier form(s)")
        with bar(len(todo) * epochs, "curves", "epoch") as progress:
            trained.update(_trained(todo, epochs, seed, data_dir, progress.update))
    curves, predictions, skipped = [], [], {}
    for key in keys:
        c, p, reason = trained[key]
        curves += c
        predictions += p
        if reason:
            skipped[gate_label(key)] = reason
    if curves:
        store.write_table(PREDICTIONS, pd.DataFrame(predictions))
        store.write_table(CURVES, pd.DataFrame(curves))
        store.meta["curves_skipped"] = skipped
