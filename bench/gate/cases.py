"""What the equal-results gate checks a form on: its cases, their batches and the oracle's answers.

- ``batch B`` for every batch size the run times: full batches of B, then the ragged last batch the
  loader really produces (``len(data) % B``, when not 0), then a batch of 1;
- ``large logits`` (classifiers): parameters giving logits around +-1000, and all-equal logits near
  +1000 and near -1000, where a softmax without the max-subtraction overflows.

A case is one or more trials (the parameters to start from, a batch sequence, the fp64 oracle's answer),
and gives the tolerance a form is held to there (:meth:`Case.tolerance`); :func:`judge` runs one form
instance through a trial and compares it with the oracle.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import torch

from bench.data import load_split
from impls.common import Tolerance
from impls.contract import EpochData
from impls.models import MODELS, init_params
from impls.oracle import Oracle

DEFAULT_STEPS = 50  # full batches per case at most
MIN_STEPS = 3
# fp32's own error at logits of +-1000, measured (vectorized, module and compiled forms, CPU, against
# the fp64 oracle): losses up to 5e-4 and parameters up to 7e-5 off, the logits of predict() 2.3e-3 off
# (2e-6 of their size, which the form's rtol covers). Losses near log(10) and biases near 0 need an
# absolute floor there: 20x the form's rtol, 2e-3 in fp32 (4x the largest loss error seen).
LARGE_LOGIT_ATOL_PER_RTOL = 20.0
# Rounding's own reach: some trajectories amplify rounding error step by step (softmax regression at batch 1: each
# step moves the logits by ~lr |x|^2 = 10, and fp32 alone drifts past FP32's bound). The oracle's own
# algorithm, run at the form's precision from parameters 1 ulp apart (ROUNDING_RUNS seeds), shows how far
# rounding alone carries a case; a form may go ROUNDING_SAFETY times as far (fp32 forms were seen at up to
# 1.3x the worst such run, and at 4.5x a single one: the runs' spread is what a form's order of summation
# draws from). Below fp32 a form's own algorithm (a fused log-softmax, addmm with the bias, another order of
# rounding the update) rounds apart from the oracle's at every step, not only at the start: bfloat16 forms on
# the CPU were seen at up to 4.1x the worst run (softmax, batch 256 and 1024; shuffling each batch's rows in the
# runs moved their reach by under 1%), so there the factor is LOW_PRECISION_SAFETY.
ROUNDING_RUNS = 6
ROUNDING_SAFETY = 3.0
LOW_PRECISION_SAFETY = 6.0


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
    _rounding: dict = field(default_factory=dict, repr=False)

    def tolerance(self, model: str, form_tolerance: Tolerance) -> Tolerance:
        """The form's tolerance, with the case's absolute floor where it has one, widened where rounding alone
        carries the case further (:meth:`rounding`: ``ROUNDING_SAFETY`` x its reach, when that is over 1)."""
        tol = form_tolerance
        floor = self.atol_per_rtol * tol.rtol
        if floor > tol.atol:
            tol = Tolerance(tol.rtol, floor, f"{self.name}: an absolute floor of {self.atol_per_rtol:g}x rtol "
                            "(fp32's own loss error there: up to 5e-4)", tol.dtype)
        reach = self.rounding(model, tol)
        low = torch.finfo(tol.dtype).eps > torch.finfo(torch.float32).eps
        safety = LOW_PRECISION_SAFETY if low else ROUNDING_SAFETY
        scale = safety * reach
        if scale <= 1:
            return tol
        return Tolerance(tol.rtol * scale, tol.atol * scale, f"{tol.reason}; x{scale:.3g}: rounding alone reaches "
                         f"{reach:.3g} of it here (the oracle's steps in {str(tol.dtype)[6:]} from parameters 1 ulp "
                         f"apart), x{safety:g} that", tol.dtype)

    def rounding(self, model: str, tol: Tolerance) -> float:
        """How far rounding alone carries this case, in units of ``tol``: the worst ``tol_used`` of the oracle's
        algorithm run in ``tol.dtype`` from each trial's parameters, each element moved by 1 ulp up or down
        (``ROUNDING_RUNS`` seeds). Computed once per model and tolerance."""
        key = (model, tol)
        if key not in self._rounding:
            eps = torch.finfo(tol.dtype).eps
            used = []
            for trial in self.trials:
                for seed in range(ROUNDING_RUNS):
                    g = torch.Generator().manual_seed(seed)
                    moved = {k: v.to(tol.dtype).double() * (1 + eps * torch.randint(0, 2, v.shape, generator=g) * 2
                                                            - eps) for k, v in trial.params.items()}
                    used += judge(Oracle(model, moved, MODELS[model].lr, tol.dtype), trial, tol)[1]
            self._rounding[key] = max(used, default=0.0)
        return self._rounding[key]

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

    The number of full batches covers the spec's ``gate_samples``, at least ``MIN_STEPS``, at most ``steps``.
    """
    split, spec = load_split(model, True, data_dir), MODELS[model]
    batch_size = batch_size or spec.batch_size
    full = min(steps, max(MIN_STEPS, -(-spec.gate_samples // batch_size)))
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


@lru_cache(maxsize=32)
def batch_case(model: str, batch_size: int, steps: int = DEFAULT_STEPS, seed: int = 0, data_dir=None) -> Case:
    """The ``batch B`` case of ``model``: one trial from the seeded init (shared by every form)."""
    batches = gate_batches(model, batch_size, steps, seed, data_dir)
    params = init_params(model, seed)
    return Case(f"batch {batch_size}", [Trial("", batches, params, run_oracle(model, batches, params))],
                batch_size=batch_size)


@lru_cache(maxsize=4)
def large_logit_case(model: str, seed: int = 0, data_dir=None) -> Case | None:
    """The ``large logits`` case (classifiers only: a regression has no exponential to overflow)."""
    if not MODELS[model].classes:
        return None
    batches = gate_batches(model, 64, MIN_STEPS, seed, data_dir)
    large = MODELS[model].large_logit_params(init_params(model, seed), batches[0][0], seed)
    trials = [Trial(name, batches, params, run_oracle(model, batches, params)) for name, params in large.items()]
    return Case("large logits", trials, atol_per_rtol=LARGE_LOGIT_ATOL_PER_RTOL)


def gate_cases(model: str, batch_sizes, steps: int = DEFAULT_STEPS, seed: int = 0, data_dir=None) -> list[Case]:
    """Every case a form of ``model`` is checked on before cells at ``batch_sizes`` are timed."""
    cases = [batch_case(model, b, steps, seed, data_dir) for b in sorted(set(batch_sizes))]
    extra = large_logit_case(model, seed, data_dir)
    return cases + ([extra] if extra else [])


def compare(name: str, got: torch.Tensor, want: torch.Tensor, tol: Tolerance) -> tuple[float, float, str]:
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


def epoch_runs(batches) -> list[list]:
    """``batches`` cut into epochs as a resident loader makes them: equal batches, the last one maybe smaller."""
    runs: list[list] = []
    for batch in batches:
        run = runs[-1] if runs else None
        if run and len(batch[1]) <= len(run[0][1]) == len(run[-1][1]):  # the run has no ragged batch yet
            run.append(batch)
        else:
            runs.append([batch])
    return runs


def as_epoch(batches, device) -> EpochData:
    """One run of batches as the resident loader's epoch: the rows stored shuffled (so the order is a real
    gather), as uint8 with divisor 255 where every value is a whole 255th (Fashion-MNIST's pixels)."""
    X, y = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(len(y)))
    pixels = (X * 255).round()
    whole = X.dtype == torch.float32 and torch.equal(pixels / 255, X) and bool(((pixels >= 0) & (pixels <= 255)).all())
    values, divisor = (pixels.to(torch.uint8), 255.0) if whole else (X, 1.0)
    stored, labels = torch.empty_like(values), torch.empty_like(y)
    stored[order], labels[order] = values, y
    return EpochData(stored.to(device), labels.to(device), order.to(device), len(batches[0][1]), divisor)


def judge(instance, trial: Trial, tol: Tolerance, epochs_on=None) -> tuple[dict, list, list]:
    """``instance`` (a fresh form, from the trial's parameters) stepped through the trial and compared with the
    oracle's answer: the largest error per kind (loss, param, predict), every ``tol_used``, the diffs.
    ``epochs_on``: a device; the batches go to the form's ``train_epoch`` hook there, as resident epochs."""
    prefix = f"{trial.name}: " if trial.name else ""
    if epochs_on is not None:
        losses = torch.cat([instance.train_epoch(as_epoch(run, epochs_on)).detach().to("cpu", torch.float64)
                            for run in epoch_runs(trial.batches)])
    else:
        losses = torch.stack([torch.as_tensor(instance.step(X, y), dtype=torch.float64).detach().cpu()
                              for X, y in trial.batches])
    state, ref = instance.state(), trial.reference
    comparisons = [("loss", "loss", losses, ref.losses)]
    worst, used, diffs = {"loss": [], "param": [], "predict": []}, [], []
    for key, want in ref.state.items():
        if key not in state:
            diffs.append(f"{prefix}state() lacks {key!r}")
            continue
        comparisons.append(("param", key, state[key], want))
    for i, (X, want) in enumerate(zip(ref.probes, ref.predictions)):
        comparisons.append(("predict", f"predict(batch {'first' if i == 0 else 'last'})", instance.predict(X), want))
    for kind, name, got, want in comparisons:
        a, u, d = compare(name, got, want, tol)
        worst[kind].append(a), used.append(u)
        if d:
            diffs.append(prefix + d)
    return worst, used, diffs
