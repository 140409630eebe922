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
it, each run of equal batches one resident epoch (:func:`bench.gate.cases.epoch_runs`). ``tol_used`` is the
worst ``|got - want| / (atol + rtol |want|)`` (a case passes when it is <= 1). A form that fails any case
is named with its worst element, and is never timed.
"""
from __future__ import annotations

import contextlib
import itertools
import math
from dataclasses import asdict, dataclass

import torch

import impls
from bench.gate.cases import DEFAULT_STEPS, MIN_STEPS, Case, Reference, Trial, gate_cases, judge
from bench.grid import AXIS, BUILT_FROM, DEFAULT_GRID, GATED, apply_gated, expand, gate_key, setup_of, spec_of
from bench.runs import interrupt
from impls import precision
from impls.models import MODELS, ModelError, train_examples


@dataclass
class CheckResult:
    key: tuple  # the gate key: the values of the gated axes (bench.grid.GATED), e.g. model, form, device, precision
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

    def __getattr__(self, name):  # result.model, result.form, ...: the key's values by axis name
        if name in GATED:
            return self.key[GATED.index(name)]
        raise AttributeError(name)

    def as_dict(self) -> dict:
        row = asdict(self)
        return {**dict(zip(GATED, row.pop("key"))), **row}


def key_of(model: str, form: str, device: str = "cpu", **axes) -> tuple:
    """A gate key from axis values by name, the axes not named at their defaults (fp32, ...)."""
    return gate_key(dict(model=model, form=form, device=device, **axes))


def check_case(key: tuple, case: Case, cls=None) -> CheckResult:
    """Run one form (gate key ``key``) through every trial of ``case`` and judge it against the oracle."""
    setup, values = setup_of(key), dict(zip(GATED, key))
    model = spec_of(values)
    cls = cls or impls.form_class(model, values["form"])
    tol = case.tolerance(model, precision.tolerance(cls.tolerance, setup))
    result = CheckResult(key, "pass", case=case.name, batch_size=case.batch_size, batches=case.describe(),
                         rtol=tol.rtol, atol=tol.atol, tolerance_reason=tol.reason,
                         steps=sum(len(t.batches) for t in case.trials))
    worst = {"loss": [], "param": [], "predict": []}
    used, diffs = [], []
    # a form that can own an epoch is judged both ways: step by step, and through train_epoch
    paths = [("", None)] + ([("train_epoch: ", setup.device)] if callable(getattr(cls, "train_epoch", None)) else [])
    apply_gated(key)
    for trial in case.trials:
        for path, epochs_on in paths:
            try:
                w, u, d = judge(cls(trial.params, setup), trial, tol, epochs_on)
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
    if case.trials and (flag := precision_flag(cls, setup, case.trials[0])):
        diffs.append(flag)
    if diffs:
        result.status, result.reason = "fail", f"{case.name}: " + "; ".join(diffs)
    return result


MATMULS = {"mm", "addmm", "bmm", "baddbmm", "matmul", "linear", "_addmm_activation"}


def precision_flag(cls, setup, trial: Trial) -> str | None:
    """Why a form asked for a precision below fp32 does not train in it, or None: its parameters (``state()``,
    after a step) must be of the precision's type, and the matmuls of its step, where torch's dispatcher sees
    them (not in a form that compiles: dynamo does not trace under a dispatch mode), of its compute type. As a
    ``compiled`` form that compiled nothing is flagged, so is a form that runs fp32 under another name."""
    from torch.utils._python_dispatch import TorchDispatchMode

    p = precision.of(setup)
    if p.name == precision.DEFAULT or not trial.batches:
        return None
    seen = set()

    class Matmuls(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.__name__.split(".")[0] in MATMULS:
                seen.add(args[0].dtype if hasattr(args[0], "dtype") else None)
            return func(*args, **(kwargs or {}))

    instance = cls(trial.params, setup)
    with contextlib.nullcontext() if hasattr(cls, "compile_log") else Matmuls():  # dynamo refuses to trace in a mode
        instance.step(*trial.batches[0])
    state = instance.state()
    wrong = sorted({str(v.dtype)[6:] for v in state.values() if v.dtype != p.storage})
    if wrong:
        return f"asked for {p.name}, its parameters are {'/'.join(wrong)}, not {str(p.storage)[6:]}"
    if p.autocast is not None and all(torch.equal(v, v.to(p.compute).to(v.dtype)) for v in state.values()):
        return (f"asked for {p.name}, its {str(p.storage)[6:]} parameters hold only {str(p.compute)[6:]} values "
                "after a step: the update was rounded, the master weights lost")
    if seen and p.compute not in seen:
        return (f"asked for {p.name}, its matmuls ran in {'/'.join(sorted(str(d)[6:] for d in seen if d))}, "
                f"not {str(p.compute)[6:]}")
    return None


def check_form(model: str, form: str, device: str, batches, params, reference: Reference, cls=None,
               **axes) -> CheckResult:
    """One form on one batch sequence from ``params``, judged against the oracle's ``reference``."""
    batch_size = len(batches[0][1]) if batches else None
    case = Case(f"batch {batch_size}", [Trial("", batches, params, reference)], batch_size=batch_size)
    return check_case(key_of(model, form, device, **axes), case, cls)


def check_if_available(key: tuple, cases: list[Case], cls=None) -> list[CheckResult]:
    """Every case for a form that can run here, else one ``skipped`` result with the reason."""
    values = dict(zip(GATED, key))
    try:
        reason = None if cls else impls.unavailable(spec_of(values), values["form"], setup_of(key))
    except ModelError as e:
        reason = str(e)
    if reason:
        return [CheckResult(key, "skipped", reason)]
    return [check_case(key, case, cls) for case in cases]


def form_steps(spec, form: str, steps: int) -> int:
    """The full batches a case of ``form`` covers at most: ``steps``, but ``MIN_STEPS`` for a form too slow for
    whole epochs (its timed passes capped: the pure-Python loop, itself computing in fp64, a second oracle)."""
    cap = impls.sample_cap(spec, form)
    return min(steps, MIN_STEPS) if cap is not None and cap < train_examples(spec) else steps


def gate_cells(cells, rows: list[dict], steps: int = DEFAULT_STEPS, seed: int = 0, data_dir=None,
               ranks=None) -> list[dict]:
    """``rows`` (the gate's rows so far, ``as_dict()``) and those of every gate key of ``cells`` (timed cells,
    :class:`bench.grid.Cell`) not among them, each at every batch size it is timed at; a distributed form's by
    ``ranks(key, cases, world sizes)`` (:func:`bench.ranks.distributed.check_cases`)."""
    done, todo = {gate_key(r) for r in rows}, {}
    for c in cells:
        if c.gate_key() not in done:
            todo.setdefault(c.gate_key(), []).append(c)
    rows = list(rows)
    for key, group in todo.items():
        first = group[0]
        cases = gate_cases(first.spec, {c.batch_size for c in group}, form_steps(first.spec, first.form, steps),
                           seed, data_dir)
        by_ranks = ranks is not None and impls.distributed(first.model, first.form)
        results = (ranks(key, cases, sorted({c.world_size for c in group})) if by_ranks
                   else check_if_available(key, cases))
        rows += [r.as_dict() for r in results]
    return rows


def failures(rows: list[dict]) -> dict[tuple, str]:
    """Gate key -> the reasons of its failed cases, from result rows (``as_dict()``)."""
    out: dict[tuple, list[str]] = {}
    for r in rows:
        if r["status"] == "fail":
            out.setdefault(gate_key(r), []).append(r["reason"])
    return {k: " | ".join(v) for k, v in out.items()}


def default_batch_sizes(model: str, form: str) -> list[int]:
    """The batch sizes the default grid times ``form`` of ``model`` at."""
    return sorted({c.batch_size for c in expand(DEFAULT_GRID) if (c.model, c.form) == (model, form)}
                  or {MODELS[model].batch_size})


def run_check(selection: dict | None = None, steps: int = DEFAULT_STEPS, data_dir=None, seed: int = 0,
              batch_sizes=None) -> list[CheckResult]:
    """The gate over a selection (gated axis -> values; a model or form left out: all of them; another axis:
    its default, cpu for the device), at ``batch_sizes`` (default: the default grid's for each form);
    unavailable forms come back as skipped."""
    selection = {a: v for a, v in (selection or {}).items() if v}
    selected = impls.entries(selection.get("model"), selection.get("form"))
    others = [a for a in GATED if a not in BUILT_FROM]
    axes = [selection.get(a) or (["cpu"] if a == "device" else AXIS[a].default()) for a in others]
    keys = [key_of(m, f, **dict(zip(others, values))) for m, f in selected for values in itertools.product(*axes)]
    # all data and every oracle first, so a data problem stops the gate before any form runs
    cases: dict[tuple, list[Case]] = {}  # (spec, form) -> its cases; a key whose spec cannot be made has none
    keyed = []
    for key in keys:
        values = dict(zip(GATED, key))
        try:
            spec = spec_of(values)
        except ModelError:  # check_if_available says why
            keyed.append((key, []))
            continue
        if (spec, values["form"]) not in cases:
            sizes = batch_sizes or default_batch_sizes(values["model"], values["form"])
            cases[(spec, values["form"])] = gate_cases(spec, sizes, form_steps(spec, values["form"], steps), seed,
                                                       data_dir)
        keyed.append((key, cases[(spec, values["form"])]))
    return [r for key, key_cases in keyed for r in check_if_available(key, key_cases)]
