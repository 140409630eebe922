"""Training curves of each classifier per form: the chart d2l's ``train_ch3`` draws with its Animator.

Per epoch: mean train loss and train accuracy over the epoch's batches (of the outputs before each
update, as ``train_epoch_ch3`` counts them) and test accuracy after the epoch. Plus the seeds'
``predict_ch3``: the first test images with their true and predicted labels.
"""
from __future__ import annotations

import time

import pandas as pd

import impls
from bench.data import LABELS, load_split
from bench.grid import GATED, apply_gated, gate_key, gate_label, setup_of, spec_of
from bench.loaders import Resident
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


def record_curves(store, epochs: int, seed: int, data_dir, say, bar) -> None:
    """The curves and predictions of every classifier form a run timed, per gate key (model, form, device,
    precision, image size, ...), into its folder (``say``: a stage line; ``bar(total, desc, unit)``: a progress
    bar)."""
    from bench.runs.run_folder import CURVES, PREDICTIONS

    keys = list(dict.fromkeys(gate_key(r) for r in store.rows.values()
                              if r["status"] == "ok" and MODELS[r["model"]].classes))
    curves, predictions, skipped = [], [], {}
    if keys:
        say(f"training curves: {epochs} epochs of each of {len(keys)} classifier form(s)")
    with bar(len(keys) * epochs, "curves", "epoch") as progress:
        for key in keys:
            progress.set_postfix_str(gate_label(key))
            c, p, reason = train_curves(key, epochs, seed, data_dir, progress.update)
            curves += c
            predictions += p
            if reason:
                skipped[gate_label(key)] = reason
    if curves:
        store.write_table(PREDICTIONS, pd.DataFrame(predictions))
        store.write_table(CURVES, pd.DataFrame(curves))
        store.meta["curves_skipped"] = skipped
