"""The benchmark grid: its axes as one table (:data:`AXIS_TABLE`), the cells, and the skip rules.

Every axis (model, form, device, loader, workers, batch size, ...) is a row of the table; the CLI
flags, validation, the :class:`Cell` fields and labels, the results' columns, asv's parameters and the
report's groupings are all derived from it, so a new axis is one new row.

The embedded default is a union of small product grids (each a dict of axis -> values) chosen to
run in a few minutes on a 2-core CPU machine; command-line flags replace an axis in every one of
them. Cells that cannot or should not run are kept, as ``skipped`` rows with the reason.
"""
from __future__ import annotations

import argparse
import itertools
import math
import os
from dataclasses import field, make_dataclass

import torch

import impls
from bench import UserError
from bench.axis import Axis, _at_least, _fits_the_data
from bench.defaults import DEFAULT_GRID, FRONT_END_THREADS, QUICK_GRID  # noqa: F401 - the grid's data
from bench.loaders import DATALOADER_KINDS, LOADERS
from impls.contract import Setup
from impls.models import MODELS, ModelError, baselines, train_examples  # noqa: F401 - the models' data
from impls.precision import DEFAULT as DEFAULT_PRECISION
from impls.precision import PRECISIONS

AXIS_TABLE: tuple[Axis, ...] = (
    Axis("model", "--models", "comma-separated models", choices=lambda: list(MODELS), gated=True),
    Axis("form", "--forms", "comma-separated forms", choices=lambda: list(impls.FORM_MODULES), gated=True),
    Axis("device", "--devices", "comma-separated devices (cpu, cuda)", choices=lambda: list(impls.DEVICES),
         gated=True),
    Axis("loader", "--loaders", "comma-separated loaders (torchvision, tensor, resident)", choices=lambda: LOADERS),
    Axis("workers", "--workers", "comma-separated DataLoader worker counts", parse=int,
         check=_at_least(0), prefix="w"),
    Axis("batch_size", "--batch-sizes", "comma-separated batch sizes", parse=int, check=_fits_the_data,
         prefix="b"),
    Axis("threads", "--threads", "comma-separated torch thread counts (default: torch's own, the cores)", parse=int,
         check=_at_least(1), default=lambda: [torch.get_num_threads()], prefix="t", apply=torch.set_num_threads),
    Axis("world_size", "--world-sizes", "comma-separated process counts (ranks) of a distributed form such as ddp; "
         "--threads is then per rank", parse=int, check=_at_least(1), default=lambda: [1], prefix="k", implicit=1),
    Axis("precision", "--precisions", "comma-separated precisions: " + ", ".join(
         f"{p.name} ({p.about})" for p in PRECISIONS.values()), choices=lambda: list(PRECISIONS),
         default=lambda: [DEFAULT_PRECISION], implicit=DEFAULT_PRECISION, gated=True),
    Axis("image_size", "--image-sizes", "comma-separated image sizes: the side in pixels after transforms.Resize, "
         "as the seeds' resize= (28: the images as stored; image data sets only)", parse=int, check=_at_least(1),
         default=lambda: [28], prefix="px", implicit=28, gated=True, specialize=lambda spec, v: spec.at(v)),
)
AXES = tuple(a.name for a in AXIS_TABLE)
AXIS = {a.name: a for a in AXIS_TABLE}
GATED = tuple(a.name for a in AXIS_TABLE if a.gated)  # the gate's key: the axes that change a form's results
BUILT_FROM = ("model", "form")  # gated axes that choose the spec and the form class; the others make its Setup


def add_axis_flags(parser, only: tuple[str, ...] | None = None, says: str = "replaces the grid's axis",
                   **options) -> None:
    """One flag per axis on ``parser`` (``only``: those axes); each replaces that axis in every sub-grid
    (``linbench run``, ``ab``, ``counts``), or selects what ``linbench check`` checks (``says``: how, in the help)."""
    for axis in AXIS_TABLE:
        if only is None or axis.name in only:
            parser.add_argument(axis.flag, dest=axis.dest, type=axis.values, help=f"{axis.help} ({says})", **options)


def axis_overrides(args) -> dict:
    """Axis name -> the values its flag gave (None where left out)."""
    return {a.name: getattr(args, a.dest, None) for a in AXIS_TABLE}

def _value(values, a: str):
    """Axis ``a``'s value in a cell, a row or a Series; absent or empty (an older row): its ``implicit`` value."""
    v = values[a] if a in values else None
    return AXIS[a].implicit if v is None or (isinstance(v, float) and math.isnan(v)) else v


def label_of(values) -> str:
    """The label of a cell given as axis -> value (a dict, a results row, a pandas Series); an axis at its
    ``implicit`` value (or absent from an older row) is left out."""
    def shown(a):
        return AXIS[a].implicit is None or _value(values, a) != AXIS[a].implicit

    return "/".join(f"{AXIS[a].prefix}{values[a]}" for a in AXES if shown(a))


def gate_key(values) -> tuple:
    """The gate's key of a cell or a gate row (axis -> value; an older row without an axis: its ``implicit``)."""
    return tuple(_value(values, a) for a in GATED)


def gate_label(key: tuple) -> str:
    """A gate key in words, as a label: ``softmax/module/cpu`` (``/bf16`` where not fp32)."""
    return "/".join(f"{AXIS[a].prefix}{v}" for a, v in zip(GATED, key) if AXIS[a].implicit is None
                    or v != AXIS[a].implicit)


def gated_in(frame) -> list[str]:
    """The gated axes among a table's columns (an older run's table lacks the axes added since)."""
    return [a for a in GATED if a in frame.columns]


def spec_of(values):
    r"""The spec a cell (axis -> value, or a gate key) trains: its model's, as each axis that ``specialize``\s
    makes it (e.g. wider inputs at a larger image size); a :class:`~impls.models.ModelError` where it cannot."""
    values = dict(zip(GATED, values)) if isinstance(values, tuple) else values
    spec = MODELS[values["model"]]
    for axis in AXIS_TABLE:
        if axis.specialize and axis.name in values:
            spec = axis.specialize(spec, values[axis.name])
    return spec


def setup_of(key: tuple) -> Setup:
    """The :class:`~impls.contract.Setup` a form of gate key ``key`` is built with: the model's lr and every
    gated axis but model and form, by name."""
    values = dict(zip(GATED, key))
    try:
        lr = spec_of(values).lr
    except ModelError:
        lr = MODELS[values["model"]].lr
    return Setup(lr, **{a: v for a, v in values.items() if a not in BUILT_FROM})


def apply_gated(key: tuple) -> None:
    """Make the gated axes' values that act on the process take effect (before the gate builds a form)."""
    for a, v in zip(GATED, key):
        if AXIS[a].apply:
            AXIS[a].apply(v)


class _CellMethods:
    def key(self) -> tuple:
        return tuple(getattr(self, a) for a in AXES)

    def gate_key(self) -> tuple:
        """The values of the axes that change results (:data:`GATED`): the gate judges each key once."""
        return gate_key(self.as_dict())

    def setup(self) -> Setup:
        """What the cell's form is built with (:func:`setup_of`)."""
        return setup_of(self.gate_key())

    @property
    def spec(self):
        """The spec the cell trains (:func:`spec_of`): its model's, at its image size."""
        return spec_of(self.as_dict())

    def form_class(self):
        return impls.form_class(self.spec, self.form)

    def label(self) -> str:
        """``model/form/device/loader/w4/b256``: every axis, in table order (see :func:`parse_label`)."""
        return label_of(self.as_dict())

    def as_dict(self) -> dict:
        return {a: getattr(self, a) for a in AXES}

    def apply(self) -> None:
        """Make the values of the axes that act on the process (e.g. thread count) take effect."""
        for axis in AXIS_TABLE:
            if axis.apply:
                axis.apply(getattr(self, axis.name))


# One field per axis, made from the table, so a new axis needs no edit here.
Cell = make_dataclass("Cell", [(a.name, object) if a.implicit is None else (a.name, object, field(default=a.implicit))
                               for a in AXIS_TABLE], bases=(_CellMethods,), frozen=True)
Cell.__module__ = __name__


def _names(axis, part: str) -> bool:
    """Whether a label's ``part`` gives ``axis``'s value: one an axis left out at its ``implicit`` value must
    parse and be among its choices (``bf16``; ``px64`` is the image size's)."""
    if not part.startswith(axis.prefix) or (axis.implicit is not None and part == axis.prefix):
        return False
    if axis.implicit is None:
        return True
    try:
        value = axis.parse(part[len(axis.prefix):])
    except ValueError:
        return False
    return axis.choices is None or str(value) in axis.choices()


def parse_label(label: str) -> Cell:
    """The cell a :meth:`Cell.label` names (asv's and pytest-benchmark's parameter); axes at their
    ``implicit`` value may be left out."""
    parts, values = label.split("/"), []
    try:
        for axis in AXIS_TABLE:
            if parts and _names(axis, parts[0]):
                values.append(axis.parse(parts.pop(0)[len(axis.prefix):]))
            elif axis.implicit is not None:
                values.append(axis.implicit)
            else:
                raise ValueError
        if parts:
            raise ValueError
        return Cell(*values)
    except ValueError:
        raise UserError(f"{label!r} is not a cell label (" + "/".join(a.prefix + a.name for a in AXIS_TABLE)
                        + ")") from None


def expand(grid: list[dict], overrides: dict | None = None) -> list[Cell]:
    """The cells of a union of product grids, each axis replaced by ``overrides[axis]`` when given; an
    axis a sub-grid does not name takes its default. In a grid with sub-grids that name ``world_size``,
    those hold the distributed forms' cells and the others the rest (``--forms loop`` takes nothing from
    the former, ``--forms ddp`` nothing from the latter)."""
    overrides = {k: v for k, v in (overrides or {}).items() if v}
    ranked = any("world_size" in sub for sub in grid)
    cells = {}
    for sub in grid:
        axes = {a.name: overrides.get(a.name) or sub.get(a.name) or a.default() for a in AXIS_TABLE}
        for values in itertools.product(*(axes[a] for a in AXES)):
            cell = Cell(*values)
            if ranked and ("world_size" in sub) != _distributed(cell):
                continue  # distributed forms come from the sub-grids that name world sizes, and only they
            cells.setdefault(cell.key(), cell)
    return list(cells.values())


def front_end_cells() -> list[Cell]:
    """The default grid's one-process cells as asv and pytest-benchmark time them: at the thread counts of
    ``LINBENCH_THREADS`` (comma-separated), by default :data:`FRONT_END_THREADS` (one thread); any other axis
    replaced the same way by ``LINBENCH_<FLAG>`` (``LINBENCH_PRECISIONS=fp32,bf16``, ``LINBENCH_IMAGE_SIZES``).
    The values are in each label (but an axis's default, left out), so cells of another count or precision are
    other cells, never compared with these."""
    overrides = {"threads": FRONT_END_THREADS}
    for axis in AXIS_TABLE:
        name = f"LINBENCH_{axis.dest.upper()}"
        if text := os.environ.get(name, "").strip():
            try:
                overrides[axis.name] = axis.values(text)
            except argparse.ArgumentTypeError as e:
                raise UserError(f"{name}: {e}") from None
    try:
        validate(overrides)
    except impls.UnknownName as e:
        raise UserError(str(e)) from None
    return [c for c in expand(DEFAULT_GRID, overrides) if c.world_size == 1]


def _distributed(cell) -> bool:
    try:
        return impls.distributed(cell.model, cell.form)
    except ImportError:
        return False


def validate(overrides: dict) -> None:
    """User errors in axis values (unknown names, values out of range), each in one line."""
    for axis in AXIS_TABLE:
        values = overrides.get(axis.name) or []
        if axis.choices:
            impls.check_names(axis.name, values, axis.choices())
        for v in values if axis.check else []:
            if why := axis.check(v, overrides):
                raise UserError(f"{axis.flag} {why}")


def skip_reason(cell: Cell, here: bool = True) -> str | None:
    """Why a cell is not timed, or None. Every rule is here, in one place. ``here=False``: only the rules
    that do not depend on the machine (no GPU, no compiler), so every machine answers alike (shards)."""
    try:
        spec = cell.spec
    except ModelError as e:
        return str(e)
    reason = impls.unavailable(spec, cell.form, cell.setup(), here)
    if reason:
        return reason
    if cell.loader not in DATALOADER_KINDS and cell.workers != 0:
        return f"{cell.loader} loader has no workers (only {'/'.join(DATALOADER_KINDS)} do)"
    if cell.batch_size > train_examples(cell.model):
        return f"batch {cell.batch_size} is larger than the {train_examples(cell.model)} training examples"
    if cell.world_size > 1:
        if not impls.distributed(cell.model, cell.form):
            return f"{cell.form} runs as one process (only distributed forms such as ddp take world_size > 1)"
        if here and cell.device == "cuda" and cell.world_size > torch.cuda.device_count():
            return f"{cell.world_size} ranks on cuda need as many GPUs (this machine has {torch.cuda.device_count()})"
    return None


def sample_cap(cell: Cell) -> int | None:
    """How many samples one timed pass covers (None: the whole epoch); the epoch time is extrapolated.

    Only a form's own cap (its ``sample_cap``: the pure-Python form); ``--quick`` measures like the
    default run, on fewer cells.
    """
    cap = impls.sample_cap(cell.model, cell.form)
    return cap if cap is not None and cap < train_examples(cell.model) else None


def example_label(ranks: bool = False) -> str:
    """A cell label to show in help and errors: the default grid's first cell of one process (``ranks``: of more)."""
    cells = [c for c in expand(DEFAULT_GRID) if (c.world_size > 1) == ranks]
    return cells[0].label() if cells else "MODEL/FORM/DEVICE/LOADER/wN/bN"
