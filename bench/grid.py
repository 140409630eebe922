"""The benchmark grid: model x form x device x loader x workers x batch size, and its skip rules.

The embedded default is a union of small product grids (each a dict of axis -> values) chosen to
run in a few minutes on a 2-core CPU machine; command-line flags replace an axis in every one of
them. Cells that cannot or should not run are kept, as ``skipped`` rows with the reason.
"""
from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass

import impls
from bench import UserError
from bench.loaders import DATALOADER_KINDS, LOADERS
from impls.common import LINREG_EXAMPLES, MODELS

AXES = ("model", "form", "device", "loader", "workers", "batch_size")
# The seeds' pipeline per model: every row's speedup is against its model's baseline cell.
BASELINES = {
    "softmax": dict(model="softmax", form="module", device="cpu", loader="torchvision", workers=4, batch_size=256),
    "linreg": dict(model="linreg", form="module", device="cpu", loader="torchvision", workers=0, batch_size=10),
}
TRAIN_EXAMPLES = {"linreg": LINREG_EXAMPLES, "softmax": 60000}
LOOP_SAMPLE_CAP = 2560  # pure Python: time this many samples per pass and extrapolate the epoch

ALL_FORMS = list(impls.FORM_MODULES)
DEFAULT_GRID = [
    # every form of both models on in-memory loaders, at the book's batch sizes
    dict(model=["linreg"], form=ALL_FORMS, device=["cpu", "cuda"], loader=["resident", "tensor", "torchvision"],
         workers=[0], batch_size=[10]),
    dict(model=["softmax"], form=ALL_FORMS, device=["cpu", "cuda"], loader=["resident", "tensor"], workers=[0],
         batch_size=[256]),
    # the seeds' pipeline and its alternatives across worker counts (the baseline cell is here)
    dict(model=["softmax"], form=["module"], device=["cpu", "cuda"], loader=["torchvision", "tensor"],
         workers=[0, 2, 4], batch_size=[256]),
    # throughput against batch size
    dict(model=["softmax"], form=["vectorized", "module", "compiled"], device=["cpu", "cuda"], loader=["resident"],
         workers=[0], batch_size=[64, 1024, 4096]),
]
QUICK_GRID = [
    dict(model=["linreg"], form=ALL_FORMS, device=["cpu", "cuda"], loader=["resident"], workers=[0], batch_size=[10]),
    dict(model=["linreg"], form=["module"], device=["cpu"], loader=["torchvision"], workers=[0], batch_size=[10]),
    dict(model=["softmax"], form=ALL_FORMS, device=["cpu", "cuda"], loader=["resident"], workers=[0],
         batch_size=[256]),
    dict(model=["softmax"], form=["module"], device=["cpu"], loader=["torchvision"], workers=[4], batch_size=[256]),
]


@dataclass(frozen=True)
class Cell:
    model: str
    form: str
    device: str
    loader: str
    workers: int
    batch_size: int

    def key(self) -> tuple:
        return tuple(getattr(self, a) for a in AXES)

    def label(self) -> str:
        return f"{self.model}/{self.form}/{self.device}/{self.loader}/w{self.workers}/b{self.batch_size}"

    def as_dict(self) -> dict:
        return asdict(self)


def expand(grid: list[dict], overrides: dict | None = None) -> list[Cell]:
    """The cells of a union of product grids, each axis replaced by ``overrides[axis]`` when given."""
    overrides = {k: v for k, v in (overrides or {}).items() if v}
    cells = {}
    for sub in grid:
        axes = {a: overrides.get(a, sub[a]) for a in AXES}
        for values in itertools.product(*(axes[a] for a in AXES)):
            cell = Cell(*values)
            cells.setdefault(cell.key(), cell)
    return list(cells.values())


def validate(overrides: dict) -> None:
    """User errors in axis values: unknown names, workers < 0, batch sizes <= 0 or larger than the data."""
    impls.check_names("model", overrides.get("model") or [], MODELS)
    impls.check_names("form", overrides.get("form") or [], impls.FORM_MODULES)
    impls.check_names("device", overrides.get("device") or [], impls.DEVICES)
    impls.check_names("loader", overrides.get("loader") or [], LOADERS)
    for w in overrides.get("workers") or []:
        if w < 0:
            raise UserError(f"--workers must be >= 0, got {w}")
    models = overrides.get("model") or list(MODELS)
    for b in overrides.get("batch_size") or []:
        if b <= 0:
            raise UserError(f"--batch-sizes must be positive, got {b}")
        largest = max(TRAIN_EXAMPLES[m] for m in models)
        if b > largest:
            raise UserError(f"--batch-sizes {b} is larger than the data ({largest} training examples)")


def skip_reason(cell: Cell) -> str | None:
    """Why a cell is not timed, or None. Every rule is here, in one place."""
    reason = impls.unavailable(cell.model, cell.form, cell.device)
    if reason:
        return reason
    if cell.loader not in DATALOADER_KINDS and cell.workers != 0:
        return f"{cell.loader} loader has no workers (only {'/'.join(DATALOADER_KINDS)} do)"
    if cell.batch_size > TRAIN_EXAMPLES[cell.model]:
        return f"batch {cell.batch_size} is larger than the {TRAIN_EXAMPLES[cell.model]} training examples"
    return None


def sample_cap(cell: Cell, quick: bool) -> int | None:
    """How many samples one timed pass covers (None: the whole epoch); the epoch time is extrapolated."""
    caps = []
    if cell.form == "loop":
        caps.append(LOOP_SAMPLE_CAP)
    if quick and cell.loader in DATALOADER_KINDS:
        caps.append(40 * cell.batch_size)
    cap = min(caps, default=None)
    return cap if cap is not None and cap < TRAIN_EXAMPLES[cell.model] else None
