"""Training curves of softmax regression per form: the chart d2l's ``train_ch3`` draws with its Animator.

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
from impls.common import MODELS, init_params

PREDICTIONS = 8


def train_curves(forms, device: str = "cpu", epochs: int = 10, seed: int = 0, data_dir=None, tick=None):
    """(curves frame, predictions frame, {form: reason not trained}) for the softmax ``forms``; ``tick()`` is
    called after each epoch trained (a progress bar's update)."""
    spec = MODELS["softmax"]
    train, test = load_split("softmax", True, data_dir), load_split("softmax", False, data_dir)
    X_test, y_test = test.features().to(device), test.y.to(device)
    rows, predictions, skipped = [], [], {}
    for form in forms:
        reason = impls.unavailable("softmax", form, device) or (
            impls.sample_cap("softmax", form) and f"too slow for whole epochs (its timed passes are capped at "
                                                  f"{impls.sample_cap('softmax', form)} samples)")
        if reason:
            skipped[form] = reason
            continue
        model = impls.build("softmax", form, init_params("softmax", seed), spec.lr, device)
        batches = Resident(train.X, train.y, spec.batch_size, device, seed)
        start = time.perf_counter()
        for epoch in range(1, epochs + 1):
            loss_sum = correct = seen = 0.0
            for X, y in batches:
                correct += float((model.predict(X).argmax(1) == y).sum())
                loss_sum += float(model.step(X, y)) * len(y)
                seen += len(y)
            test_acc = float((model.predict(X_test).argmax(1) == y_test).float().mean())
            rows.append(dict(form=form, device=device, epoch=epoch, train_loss=loss_sum / seen,
                             train_acc=correct / seen, test_acc=test_acc, seconds=time.perf_counter() - start))
            if tick:
                tick()
        predicted = model.predict(X_test[:PREDICTIONS]).argmax(1).tolist()
        predictions += [dict(form=form, device=device, index=i, true=LABELS[int(y_test[i])], predicted=LABELS[p])
                        for i, p in enumerate(predicted)]
    return pd.DataFrame(rows), pd.DataFrame(predictions), skipped


def record_curves(store, epochs: int, seed: int, data_dir, say, bar) -> None:
    """The curves and predictions of every softmax form a run timed, per device, into its folder (``say``: a
    stage line; ``bar(total, desc, unit)``: a progress bar)."""
    from bench.store import CURVES, PREDICTIONS

    ok = [r for r in store.rows.values() if r["status"] == "ok" and r["model"] == "softmax"]
    curves, predictions, skipped = [], [], {}
    for device in dict.fromkeys(r["device"] for r in ok):
        forms = list(dict.fromkeys(r["form"] for r in ok if r["device"] == device))
        say(f"training curves on {device}: {epochs} epochs of each softmax form")
        with bar(len(forms) * epochs, f"curves {device}", "epoch") as progress:
            c, p, s = train_curves(forms, device, epochs, seed, data_dir, progress.update)
        curves.append(c), predictions.append(p)
        skipped.update({f"{form} on {device}": reason for form, reason in s.items()})
    if curves:
        store.write_table(PREDICTIONS, pd.concat(predictions))
        store.write_table(CURVES, pd.concat(curves))
        store.meta["curves_skipped"] = skipped
