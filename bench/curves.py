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
from bench.loaders import Resident
from impls.models import MODELS, init_params

PREDICTIONS = 8


def train_curves(model: str, forms, device: str = "cpu", epochs: int = 10, seed: int = 0, data_dir=None, tick=None):
    """(curves frame, predictions frame, {form: reason not trained}) for the ``forms`` of classifier ``model``;
    ``tick()`` is called after each epoch trained (a progress bar's update)."""
    spec = MODELS[model]
    train, test = load_split(model, True, data_dir), load_split(model, False, data_dir)
    X_test, y_test = test.features().to(device), test.y.to(device)
    rows, predictions, skipped = [], [], {}
    for form in forms:
        cap = impls.sample_cap(model, form)
        reason = impls.unavailable(model, form, device) or (
            cap and f"too slow for whole epochs (its timed passes are capped at {cap} samples)")
        if reason:
            skipped[form] = reason
            continue
        instance = impls.build(model, form, init_params(model, seed), device)
        batches = Resident(train.X, train.y, spec.batch_size, device, seed)
        start = time.perf_counter()
        for epoch in range(1, epochs + 1):
            loss_sum = correct = seen = 0.0
            for X, y in batches:
                correct += float((instance.predict(X).argmax(1) == y).sum())
                loss_sum += float(instance.step(X, y)) * len(y)
                seen += len(y)
            test_acc = float((instance.predict(X_test).argmax(1) == y_test).float().mean())
            rows.append(dict(model=model, form=form, device=device, epoch=epoch, train_loss=loss_sum / seen,
                             train_acc=correct / seen, test_acc=test_acc, seconds=time.perf_counter() - start))
            if tick:
                tick()
        predicted = instance.predict(X_test[:PREDICTIONS]).argmax(1).tolist()
        predictions += [dict(model=model, form=form, device=device, index=i, true=LABELS[int(y_test[i])],
                             predicted=LABELS[p])
                        for i, p in enumerate(predicted)]
    return pd.DataFrame(rows), pd.DataFrame(predictions), skipped


def record_curves(store, epochs: int, seed: int, data_dir, say, bar) -> None:
    """The curves and predictions of every classifier's forms a run timed, per model and device, into its folder
    (``say``: a stage line; ``bar(total, desc, unit)``: a progress bar)."""
    from bench.run_folder import CURVES, PREDICTIONS

    ok = [r for r in store.rows.values() if r["status"] == "ok" and MODELS[r["model"]].classes]
    curves, predictions, skipped = [], [], {}
    for model, device in dict.fromkeys((r["model"], r["device"]) for r in ok):
        forms = list(dict.fromkeys(r["form"] for r in ok if (r["model"], r["device"]) == (model, device)))
        say(f"training curves of {model} on {device}: {epochs} epochs of each form")
        with bar(len(forms) * epochs, f"curves {model} {device}", "epoch") as progress:
            c, p, s = train_curves(model, forms, device, epochs, seed, data_dir, progress.update)
        curves.append(c), predictions.append(p)
        skipped.update({f"{model} {form} on {device}": reason for form, reason in s.items()})
    if curves:
        store.write_table(PREDICTIONS, pd.concat(predictions))
        store.write_table(CURVES, pd.concat(curves))
        store.meta["curves_skipped"] = skipped
