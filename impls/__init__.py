"""The model forms and the one registry every tool reads.

The models are specs (:mod:`impls.models`, one module each). A form is one module defining ``FORM``, a class
written against the spec (``self.spec``: layers, loss, learning rate) that keeps the contract
:class:`impls.contract.Form`, with its optional hooks (``unsupported()``, ``unavailable()``, ``compile_log()``,
``sample_cap``) in ``impls.contract.HOOKS``. The class of ``(model, form)`` is ``FORM`` bound to the model's
spec; a form that cannot run a model says why in ``FORM.unsupported(spec, setup)`` (``linbench list`` shows it),
and a precision it does not run is declined by :func:`impls.precision.declined`.

Data loading is not part of a form: any form takes batches from any loader.
A new form is one new module defining ``FORM`` plus one line in ``FORM_MODULES``; a new model is one spec module.
"""
from __future__ import annotations

import importlib
from functools import cache

from impls import precision
from impls.contract import Setup
from impls.models import MODELS, ModelSpec

# form name -> the module defining its FORM: impls.<form>; the order is the order every tool shows.
FORM_MODULES: dict[str, str] = {form: f"impls.{form}" for form in (
    "loop", "vectorized", "module", "compiled", "native", "cuda", "cuda_graph", "cuda_epoch", "cuda_cluster", "triton",
    "ddp")}

DEVICES = ("cpu", "cuda")


class UnknownName(ValueError):
    """A model, form or device name that is not in the registry."""


def check_names(kind: str, names, known) -> list[str]:
    """Return ``names`` as a list, or raise UnknownName naming the first unknown one and the choices."""
    names = list(names)
    for name in names:
        if name not in known:
            raise UnknownName(f"unknown {kind} {name!r} (choose from {', '.join(known)})")
    return names


@cache
def _module(form: str):
    return importlib.import_module(FORM_MODULES[form])


@cache
def _bound(base: type, spec: ModelSpec) -> type:
    return type(f"{base.__name__}[{spec.name}]", (base,), {"spec": spec, "__doc__": base.__doc__})


def form_class(model: str, form: str):
    """The class of ``form`` for ``model``: the form module's ``FORM`` bound to the model's spec."""
    check_names("model", [model], MODELS)
    check_names("form", [form], FORM_MODULES)
    return _bound(_module(form).FORM, MODELS[model])


def as_setup(model: str, setup=None):
    """``setup`` as a :class:`~impls.contract.Setup`: as given, or made from a device name (or None: cpu) with
    the model's lr and the other values at their defaults."""
    if setup is None or isinstance(setup, str):
        return Setup(MODELS[check_names("model", [model], MODELS)[0]].lr, setup or "cpu")
    return setup


def unsupported(model: str, form: str, setup=None) -> str | None:
    """Why ``form`` is not written for ``model`` in ``setup`` (on any machine), or None when it is."""
    try:
        base = _module(check_names("form", [form], FORM_MODULES)[0]).FORM
    except ImportError:
        return None
    spec, setup = MODELS[check_names("model", [model], MODELS)[0]], as_setup(model, setup)
    check = getattr(base, "unsupported", None)
    if reason := check(spec, setup) if check else None:
        return reason
    return None if setup.device not in base.devices else precision.declined(base, setup, form)


def cuda_unavailable() -> str | None:
    import torch

    return None if torch.cuda.is_available() else "no CUDA device on this machine"


def unavailable(model: str, form: str, setup=None, here: bool = True) -> str | None:
    """Why ``form`` of ``model`` cannot run in ``setup`` (a :class:`~impls.contract.Setup` or a device name)
    here, or None when it can. ``here=False``: only what holds on every machine (an exemption, a device the form
    does not list)."""
    setup = as_setup(model, setup)
    device = check_names("device", [setup.device], DEVICES)[0]
    try:
        cls = form_class(model, form)
    except ImportError as e:  # e.g. a torch build without triton
        return (unsupported(model, form, setup) or f"{form} cannot be imported here ({e})") if here else None
    if reason := unsupported(model, form, setup):
        return reason
    if device not in cls.devices:
        return f"{form} runs on {'/'.join(cls.devices)} only"
    if not here:
        return None
    if device == "cuda" and (reason := cuda_unavailable()):
        return reason
    check = getattr(cls, "unavailable", None)
    return check(device) if check else None


def sample_cap(model: str, form: str) -> int | None:
    """The form's own cap on samples per timed pass (a form too slow for whole epochs), or None."""
    return getattr(form_class(model, form), "sample_cap", None)


def distributed(model: str, form: str) -> bool:
    """Whether ``form`` runs as one rank of K (the world_size axis), e.g. ddp."""
    return getattr(form_class(model, form), "distributed", False) is True


def entries(models=None, forms=None):
    """(model, form) pairs of the registry, filtered by name lists (None means all)."""
    models = check_names("model", models or MODELS, MODELS)
    forms = check_names("form", forms or FORM_MODULES, FORM_MODULES)
    return [(m, f) for m in models for f in forms]


def build(model: str, form: str, params, setup=None):
    """An instance of ``form`` for ``model`` from ``params`` in ``setup`` (a Setup or a device name)."""
    return form_class(model, form)(params, as_setup(model, setup))


def compiler_versions() -> dict:
    """The versions of the compilers forms rely on beyond torch (None where one is not installed): a run's
    metadata records them, since a kernel's speed is theirs too."""
    try:
        import triton
    except ImportError:
        return {"triton": None}
    return {"triton": triton.__version__}
