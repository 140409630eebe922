"""The equal-results gate: every form, from the same init and the same batches, against the fp64 oracle.

A form is checked in *cases*, each one or more *trials* (a fresh instance, a batch sequence, the
oracle's answer for it):

- ``batch B`` for every batch size the run times: full batches of B, then the ragged last batch the
  loader really produces (``len(data) % B``, when not 0), then a batch of 1;
- ``large logits`` (classifiers): parameters giving logits around +-1000, and all-equal logits near
  +1000 and near -1000, where a softmax without the max-subtraction overflows.

In every trial the loss of each step, the final parameters and ``predict()`` on the first and the
last batch must match the oracle elementwise, ``|got - want| <= atol + rtol * |want|``, within the
tolerance the form's class states; a form with the ``train_epoch`` hook is judged a second time through
it, each run of equal batches one resident epoch (:func:`bench.cases.epoch_runs`). ``tol_used`` is the
worst ``|got - want| / (atol + rtol |want|)`` (a case passes when it is <= 1). A form that fails any case
is named with its worst element, and is never timed.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import impls
from bench import interrupt
from bench.cases import DEFAULT_STEPS, Case, Reference, Trial, gate_cases, judge
from bench.grid import DEFAULT_GRID, expand
from impls.models import MODELS


@dataclass
class CheckResult:
    model: str
    form: str
    device: str
    status: str  # pass | fail | skipped
    reason: str = ""
    case: str = ""
    batch_size: int | None = None
    batches: str = ""  # the batch sequence, e.g. "50x256 + 96 + 1"
    loss_max_abs: float = math.nan
    param_max_abs: float = math.nan
    predict_max_abs: float = math.nan
    tol_used: float = math.nan
    rtol: float = math.nan
    atol: float = math.nan
    tolerance_reason: str = ""
    steps: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def check_case(model: str, form: str, device: str, case: Case, cls=None) -> CheckResult:
    """Run one form through every trial of ``case`` and judge it against the oracle."""
    cls = cls or impls.form_class(model, form)
    tol = case.tolerance(model, cls.tolerance)
    result = CheckResult(model, form, device, "pass", case=case.name, batch_size=case.batch_size,
                         batches=case.describe(), rtol=tol.rtol, atol=tol.atol, tolerance_reason=tol.reason,
                         steps=sum(len(t.batches) for t in case.trials))
    worst = {"loss": [], "param": [], "predict": []}
    used, diffs = [], []
    # a form that can own an epoch is judged both ways: step by step, and through train_epoch
    paths = [("", None)] + ([("train_epoch: ", device)] if callable(getattr(cls, "train_epoch", None)) else [])
    for trial in case.trials:
        for path, epochs_on in paths:
            try:
                w, u, d = judge(cls(trial.params, MODELS[model].lr, device), trial, tol, epochs_on)
            except Exception as e:  # noqa: BLE001 - a crashing form fails the gate, with its error as the reason
                interrupt.raise_if_interrupted(e)  # not when a SIGTERM or Ctrl-C caused it
                prefix = f"{trial.name}: " if trial.name else ""
                result.status = "fail"
                result.reason = f"{case.name}: {path}{prefix}{e.__class__.__name__}: {e}".splitlines()[0]
                return result
            for kind in worst:
                worst[kind] += w[kind]
            used += u
            diffs += [path + diff for diff in d]
    result.loss_max_abs, result.param_max_abs, result.predict_max_abs = (
        max(worst[k], default=math.nan) for k in ("loss", "param", "predict"))
    result.tol_used = max(used, default=math.nan)
    if diffs:
        result.status, result.reason = "fail", f"{case.name}: " + "; ".join(diffs)
    return result


def check_form(model: str, form: str, device: str, batches, params, reference: Reference, cls=None) -> CheckResult:
    """One form on one batch sequence from ``params``, judged against the oracle's ``reference``."""
    batch_size = len(batches[0][1]) if batches else None
    case = Case(f"batch {batch_size}", [Trial("", batches, params, reference)], batch_size=batch_size)
    return check_case(model, form, device, case, cls)


def check_if_available(model: str, form: str, device: str, cases: list[Case], cls=None) -> list[CheckResult]:
    """Every case for a form that can run here, else one ``skipped`` result with the reason."""
    reason = None if cls else impls.unavailable(model, form, device)
    if reason:
        return [CheckResult(model, form, device, "skipped", reason)]
    return [check_case(model, form, device, case, cls) for case in cases]


def failures(rows: list[dict]) -> dict[tuple, str]:
    """(model, form, device) -> the reasons of its failed cases, from result rows (``as_dict()``)."""
    out: dict[tuple, list[str]] = {}
    for r in rows:
        if r["status"] == "fail":
            out.setdefault((r["model"], r["form"], r["device"]), []).append(r["reason"])
    return {k: " | ".join(v) for k, v in out.items()}


def default_batch_sizes(model: str, form: str) -> list[int]:
    """The batch sizes the default grid times ``form`` of ``model`` at."""
    return sorted({c.batch_size for c in expand(DEFAULT_GRID) if (c.model, c.form) == (model, form)}
                  or {MODELS[model].batch_size})


def run_check(models=None, forms=None, devices=("cpu",), steps: int = DEFAULT_STEPS, data_dir=None,
              seed: int = 0, batch_sizes=None) -> list[CheckResult]:
    """The gate over a (model x form x device) selection, at ``batch_sizes`` (default: the default
    grid's for each form); unavailable forms come back as skipped."""
    devices = impls.check_names("device", devices, impls.DEVICES)
    selected = impls.entries(models, forms)
    sizes = {(m, f): list(batch_sizes or default_batch_sizes(m, f)) for m, f in selected}
    # all data and every oracle first, so a data problem stops the gate before any form runs
    cases = {(m, f): gate_cases(m, sizes[(m, f)], steps, seed, data_dir) for m, f in selected}
    return [r for m, f in selected for d in devices for r in check_if_available(m, f, d, cases[(m, f)])]
