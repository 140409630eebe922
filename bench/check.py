"""The equal-results gate: every form, from the same init and the same batches, against the fp64 oracle.

Each form runs ``steps`` SGD steps next to :class:`impls.oracle.Oracle`; its loss trajectory and its
final parameters must match elementwise within the tolerance its class states. A form that fails
is reported with the first element that is out of tolerance, and is never timed.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

import impls
from bench.data import load_split
from impls.common import MODELS, init_params
from impls.oracle import Oracle

DEFAULT_STEPS = 50


@dataclass
class CheckResult:
    model: str
    form: str
    device: str
    status: str  # pass | fail | skipped
    reason: str = ""
    loss_max_abs: float = float("nan")
    loss_max_rel: float = float("nan")
    param_max_abs: float = float("nan")
    param_max_rel: float = float("nan")
    rtol: float = float("nan")
    atol: float = float("nan")
    tolerance_reason: str = ""
    steps: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def gate_batches(model: str, steps: int = DEFAULT_STEPS, batch_size: int | None = None, seed: int = 0,
                 data_dir=None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``steps`` shuffled minibatches of the real training data, the same for every form."""
    split = load_split(model, True, data_dir)
    batch_size = batch_size or MODELS[model].batch_size
    g = torch.Generator().manual_seed(seed)
    order = torch.cat([torch.randperm(len(split), generator=g)
                       for _ in range(-(-steps * batch_size // len(split)))])
    X = split.features()
    return [(X[idx], split.y[idx]) for idx in order[: steps * batch_size].split(batch_size)]


def _compare(name: str, got: torch.Tensor, want: torch.Tensor, tol) -> tuple[float, float, str]:
    """Max abs and rel error, and a one-line diff of the worst offending element ('' when all within)."""
    got, want = got.detach().to("cpu", torch.float64).reshape(want.shape), want.to(torch.float64)
    err = (got - want).abs()
    rel = err / want.abs().clamp_min(1e-12)
    bound = tol.atol + tol.rtol * want.abs()
    bad = ~(err <= bound)  # NaN counts as bad
    diff = ""
    if bad.any():
        i = int(torch.where(bad, err.nan_to_num(float("inf")), -1.0).flatten().argmax())
        where = tuple(int(v) for v in torch.unravel_index(torch.tensor(i), want.shape))
        diff = (f"{name}{list(where)}: got {got.flatten()[i].item():.9g}, oracle {want.flatten()[i].item():.9g} "
                f"(|diff| {err.flatten()[i].item():.3g} > {bound.flatten()[i].item():.3g}; "
                f"{int(bad.sum())} of {bad.numel()} out of tolerance)")
    return float(err.max()), float(rel.max()), diff


def run_oracle(model: str, batches, params) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    oracle = Oracle(model, params, MODELS[model].lr)
    losses = torch.tensor([oracle.step(X, y) for X, y in batches], dtype=torch.float64)
    return losses, oracle.state()


def check_form(model: str, form: str, device: str, batches, params, reference, cls=None) -> CheckResult:
    """Run one form on ``batches`` and judge it against the oracle's ``reference`` (losses, state)."""
    cls = cls or impls.form_class(model, form)
    tol = cls.tolerance
    result = CheckResult(model, form, device, "pass", rtol=tol.rtol, atol=tol.atol,
                         tolerance_reason=tol.reason, steps=len(batches))
    try:
        instance = cls(params, MODELS[model].lr, device)
        losses = torch.stack([torch.as_tensor(instance.step(X, y), dtype=torch.float64).detach().cpu()
                              for X, y in batches])
        state = instance.state()
    except Exception as e:  # noqa: BLE001 - a crashing form fails the gate, with its error as the reason
        result.status, result.reason = "fail", f"{e.__class__.__name__}: {e}".splitlines()[0]
        return result
    want_losses, want_state = reference
    result.loss_max_abs, result.loss_max_rel, loss_diff = _compare("loss", losses, want_losses, tol)
    diffs = [loss_diff] if loss_diff else []
    abs_errs, rel_errs = [], []
    for key, want in want_state.items():
        if key not in state:
            diffs.append(f"state() lacks {key!r}")
            continue
        a, r, d = _compare(key, state[key], want, tol)
        abs_errs.append(a), rel_errs.append(r)
        if d:
            diffs.append(d)
    result.param_max_abs = max(abs_errs, default=float("nan"))
    result.param_max_rel = max(rel_errs, default=float("nan"))
    if diffs:
        result.status, result.reason = "fail", "; ".join(diffs)
    return result


def gate_inputs(model: str, steps: int = DEFAULT_STEPS, batch_size: int | None = None, seed: int = 0,
                data_dir=None):
    """What every form of ``model`` is checked on: (batches, init params, the oracle's losses and state)."""
    batches = gate_batches(model, steps, batch_size, seed, data_dir)
    params = init_params(model, seed)
    return batches, params, run_oracle(model, batches, params)


def check_if_available(model: str, form: str, device: str, inputs) -> CheckResult:
    """``check_form`` where the form can run here, else a ``skipped`` result with the reason."""
    reason = impls.unavailable(model, form, device)
    if reason:
        return CheckResult(model, form, device, "skipped", reason)
    return check_form(model, form, device, *inputs)


def run_check(models=None, forms=None, devices=("cpu",), steps: int = DEFAULT_STEPS, data_dir=None,
              seed: int = 0, batch_size: int | None = None) -> list[CheckResult]:
    """The gate over a (model x form x device) selection; unavailable forms come back as skipped."""
    devices = impls.check_names("device", devices, impls.DEVICES)
    selected = impls.entries(models, forms)
    # all data first, so a data problem stops the gate before any form runs
    inputs = {m: gate_inputs(m, steps, batch_size, seed, data_dir) for m in dict.fromkeys(m for m, _ in selected)}
    return [check_if_available(m, f, d, inputs[m]) for m, f in selected for d in devices]
