"""The equal-results gate: every form, from the same init and the same batches, against the fp64 oracle.

A form is checked in *cases*, each one or more *trials* (a fresh instance, a batch sequence, the
oracle's answer for it):

- ``batch B`` for every batch size the run times: full batches of B, then the ragged last batch the
  loader really produces (``len(data) % B``, when not 0), then a batch of 1;
- ``large logits`` (softmax): parameters giving logits around +-1000, and all-equal logits near
  +1000 and near -1000, where a softmax without the max-subtraction overflows.

In every trial the loss of each step, the final parameters and ``predict()`` on the first and the
last batch must match the oracle elementwise, ``|got - want| <= atol + rtol * |want|``, within the
tolerance the form's class states. ``tol_used`` is the worst ``|got - want| / (atol + rtol |want|)``
(a case passes when it is <= 1). A form that fails any case is named with its worst element, and
is never timed.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache

import torch

import impls
from bench.data import load_split
from impls.common import MODELS, Tolerance, init_params
from impls.oracle import Oracle

DEFAULT_STEPS = 50  # full batches per case at most
GATE_SAMPLES = 12800  # full batches per case: enough to cover this many samples (at least MIN_STEPS)
MIN_STEPS = 3
# fp32's own error at logits of +-1000, measured (vectorized, module and compiled forms, CPU, against
# the fp64 oracle): losses up to 5e-4 and parameters up to 7e-5 off, the logits of predict() 2.3e-3 off
# (2e-6 of their size, which the form's rtol covers). Losses near log(10) and biases near 0 need an
# absolute floor there: 20x the form's rtol, 2e-3 in fp32 (4x the largest loss error seen).
LARGE_LOGIT_ATOL_PER_RTOL = 20.0


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


@dataclass
class Reference:
    """The oracle's answer for one batch sequence: losses, final state, predictions on probe inputs."""
    losses: torch.Tensor
    state: dict[str, torch.Tensor]
    probes: list[torch.Tensor]
    predictions: list[torch.Tensor]


@dataclass
class Trial:
    name: str
    batches: list
    params: dict[str, torch.Tensor]
    reference: Reference


@dataclass
class Case:
    name: str
    trials: list[Trial]
    batch_size: int | None = None
    atol_per_rtol: float = 0.0  # an absolute floor of the case, in units of the form's rtol

    def tolerance(self, form_tolerance: Tolerance) -> Tolerance:
        """The form's tolerance, with the case's absolute floor where it has one."""
        floor = self.atol_per_rtol * form_tolerance.rtol
        if floor <= form_tolerance.atol:
            return form_tolerance
        return Tolerance(form_tolerance.rtol, floor, f"{self.name}: an absolute floor of "
                         f"{self.atol_per_rtol:g}x rtol (fp32's own loss error there: up to 5e-4)")

    def describe(self) -> str:
        return "; ".join(_describe(t.batches) for t in self.trials[:1])


def _describe(batches) -> str:
    """A batch sequence in short: ``50x256 + 96 + 1``."""
    parts, sizes = [], [len(y) for _, y in batches]
    for size in dict.fromkeys(sizes):
        count = sum(1 for s in sizes if s == size)
        parts.append(f"{count}x{size}" if count > 1 else str(size))
    return " + ".join(parts)


def gate_batches(model: str, batch_size: int | None = None, steps: int = DEFAULT_STEPS, seed: int = 0,
                 data_dir=None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Full batches of the real training data, then the loader's ragged last batch, then a batch of 1.

    The number of full batches covers ``GATE_SAMPLES`` samples, at least ``MIN_STEPS``, at most ``steps``.
    """
    split = load_split(model, True, data_dir)
    batch_size = batch_size or MODELS[model].batch_size
    full = min(steps, max(MIN_STEPS, -(-GATE_SAMPLES // batch_size)))
    sizes = [batch_size] * full + ([len(split) % batch_size] if len(split) % batch_size else []) + [1]
    g = torch.Generator().manual_seed(seed)
    order = torch.cat([torch.randperm(len(split), generator=g) for _ in range(-(-sum(sizes) // len(split)))])
    X = split.features()
    return [(X[idx], split.y[idx]) for idx in order[: sum(sizes)].split(sizes)]


def run_oracle(model: str, batches, params) -> Reference:
    """The fp64 oracle over ``batches``: losses, final state and predictions on the first and last batch."""
    oracle = Oracle(model, params, MODELS[model].lr)
    losses = torch.tensor([oracle.step(X, y) for X, y in batches], dtype=torch.float64)
    probes = [batches[0][0], batches[-1][0]]
    return Reference(losses, oracle.state(), probes, [oracle.predict(X) for X in probes])


def large_logit_params(model: str, seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    """Softmax parameters whose logits on real images are around +-1000, or all equal near +-1000."""
    params = init_params(model, seed)
    g = torch.Generator().manual_seed(seed + 1)
    # a pixel row has |x| ~ 11 (Fashion-MNIST), so weights of std 90 give logits of std ~1000
    spread = {**params, "W": torch.randn(params["W"].shape, generator=g, dtype=torch.float64) * 90.0}
    zero = torch.zeros_like(params["W"])
    return {"logits +-1000": spread,
            "all logits +1000": {"W": zero, "b": torch.full_like(params["b"], 1000.0)},
            "all logits -1000": {"W": zero, "b": torch.full_like(params["b"], -1000.0)}}


@lru_cache(maxsize=32)
def batch_case(model: str, batch_size: int, steps: int = DEFAULT_STEPS, seed: int = 0, data_dir=None) -> Case:
    """The ``batch B`` case of ``model``: one trial from the seeded init (shared by every form)."""
    batches = gate_batches(model, batch_size, steps, seed, data_dir)
    params = init_params(model, seed)
    return Case(f"batch {batch_size}", [Trial("", batches, params, run_oracle(model, batches, params))],
                batch_size=batch_size)


@lru_cache(maxsize=4)
def large_logit_case(model: str, seed: int = 0, data_dir=None) -> Case | None:
    """The ``large logits`` case (softmax only: linreg has no exponential to overflow)."""
    if model != "softmax":
        return None
    batches = gate_batches(model, 64, MIN_STEPS, seed, data_dir)
    trials = [Trial(name, batches, params, run_oracle(model, batches, params))
              for name, params in large_logit_params(model, seed).items()]
    return Case("large logits", trials, atol_per_rtol=LARGE_LOGIT_ATOL_PER_RTOL)


def gate_cases(model: str, batch_sizes, steps: int = DEFAULT_STEPS, seed: int = 0, data_dir=None) -> list[Case]:
    """Every case a form of ``model`` is checked on before cells at ``batch_sizes`` are timed."""
    cases = [batch_case(model, b, steps, seed, data_dir) for b in sorted(set(batch_sizes))]
    extra = large_logit_case(model, seed, data_dir)
    return cases + ([extra] if extra else [])


def _compare(name: str, got: torch.Tensor, want: torch.Tensor, tol: Tolerance) -> tuple[float, float, str]:
    """Max abs error, the tolerance used (max err/bound) and a one-line diff of the worst element ('' if within)."""
    got, want = got.detach().to("cpu", torch.float64).reshape(want.shape), want.to(torch.float64)
    err = (got - want).abs()
    bound = tol.atol + tol.rtol * want.abs()
    used = (err / bound).nan_to_num(math.inf)
    bad = ~(err <= bound)  # NaN counts as bad
    diff = ""
    if bad.any():
        i = int(used.flatten().argmax())
        where = tuple(int(v) for v in torch.unravel_index(torch.tensor(i), want.shape))
        diff = (f"{name}{list(where)}: got {got.flatten()[i].item():.9g}, oracle {want.flatten()[i].item():.9g} "
                f"(|diff| {err.flatten()[i].item():.3g} > {bound.flatten()[i].item():.3g}; "
                f"{int(bad.sum())} of {bad.numel()} out of tolerance)")
    return float(err.max()) if err.numel() else 0.0, float(used.max()) if used.numel() else 0.0, diff


def _run_trial(cls, model: str, device: str, trial: Trial):
    """A fresh form through the trial: (losses, state, predictions)."""
    instance = cls(trial.params, MODELS[model].lr, device)
    losses = torch.stack([torch.as_tensor(instance.step(X, y), dtype=torch.float64).detach().cpu()
                          for X, y in trial.batches])
    return losses, instance.state(), [instance.predict(X) for X in trial.reference.probes]


def check_case(model: str, form: str, device: str, case: Case, cls=None) -> CheckResult:
    """Run one form through every trial of ``case`` and judge it against the oracle."""
    cls = cls or impls.form_class(model, form)
    tol = case.tolerance(cls.tolerance)
    result = CheckResult(model, form, device, "pass", case=case.name, batch_size=case.batch_size,
                         batches=case.describe(), rtol=tol.rtol, atol=tol.atol, tolerance_reason=tol.reason,
                         steps=sum(len(t.batches) for t in case.trials))
    worst = {"loss": [], "param": [], "predict": []}
    used, diffs = [], []
    for trial in case.trials:
        prefix = f"{trial.name}: " if trial.name else ""
        try:
            losses, state, predictions = _run_trial(cls, model, device, trial)
        except Exception as e:  # noqa: BLE001 - a crashing form fails the gate, with its error as the reason
            result.status = "fail"
            result.reason = f"{case.name}: {prefix}{e.__class__.__name__}: {e}".splitlines()[0]
            return result
        ref = trial.reference
        comparisons = [("loss", "loss", losses, ref.losses)]
        for key, want in ref.state.items():
            if key not in state:
                diffs.append(f"{prefix}state() lacks {key!r}")
                continue
            comparisons.append(("param", key, state[key], want))
        for i, (got, want) in enumerate(zip(predictions, ref.predictions)):
            comparisons.append(("predict", f"predict(batch {'first' if i == 0 else 'last'})", got, want))
        for kind, name, got, want in comparisons:
            a, u, d = _compare(name, got, want, tol)
            worst[kind].append(a), used.append(u)
            if d:
                diffs.append(prefix + d)
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
    from bench.grid import DEFAULT_GRID, expand

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
