"""The only code that times a cell, for every front end (the runner, asv, pytest-benchmark).

:class:`CellBench` makes one cell ready (its loader, a fresh form from the seeded init) from one
:class:`Settings` object, and measures three quantities, each as :class:`bench.timing.timer.Stats`:

- :meth:`CellBench.epoch_s`: seconds per epoch end to end (load + step);
- :meth:`CellBench.loader_epoch_s`: seconds per epoch of the loader alone;
- :meth:`CellBench.step_ms`: milliseconds per training step on batches already on the device.

A pass covers one epoch, or the cell's sample cap (``grid.sample_cap``: the pure-Python form, and
DataLoader passes under ``--quick``); the epoch is then extrapolated here, once, for every caller.
A form with the ``train_epoch`` hook takes the resident loader's epoch whole (:attr:`CellBench.owns_epoch`);
its step-by-step path is what :meth:`CellBench.step_ms` and the other loaders time.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

import torch

import impls
from bench.grid import Cell, sample_cap, train_examples
from bench.loaders import Resident, close_loader, make_loader
from bench.timing.machine_load import REMEASURES
from bench.timing.memory import peak_rss_mb, reset_peak_rss, rss_mb
from bench.timing.timer import Stats, Until, slowest, time_repeats
from impls.models import init_params

SLOW_PASS = 0.1  # seconds: a form slower than this per pass of step_batches is timed a batch at a time
SLOW_STEP = 1.0  # seconds: a step slower than this (pure Python on a large batch) is repeated as often as an epoch


@dataclass(frozen=True)
class Settings:
    """How a cell is made ready and timed; the runner builds it from its config, asv and pytest use the default.

    Epochs and loader passes repeat at least ``repeats`` times, then until the median's 95% interval is
    within +-``halfwidth`` or ``seconds`` of passes are spent (at most ``most``); steps likewise, in
    passes over ``step_batches`` batches already on the device (``step_repeats`` at least), for ``step_seconds``
    at most.
    ``--quick`` measures the same way: its grid only has fewer cells.
    """
    seed: int = 0
    quick: bool = False
    persistent_workers: bool = True
    pin_memory: bool | None = None
    data_dir: str | None = None
    repeats: int = 3
    halfwidth: float = 0.03
    seconds: float = 2.0
    most: int = 30
    step_seconds: float = 0.3
    step_batches: int = 16
    step_repeats: int = 5
    warm_steps: int = 3
    remeasures: int = REMEASURES  # tries again of a block others disturbed (an A/B slot: 0, the pairing copes)
    plant: float = 1.0  # > 1: every step slowed by this factor (:class:`Planted`), a change of known size

    @classmethod
    def of(cls, config) -> Settings:
        """From a run config (any object with these attribute names)."""
        names = ("seed", "quick", "persistent_workers", "pin_memory", "data_dir", "repeats", "seconds")
        return cls(**{n: getattr(config, n) for n in names if hasattr(config, n)})

    def until(self, repeats: int | None = None) -> Until:
        return Until(repeats or self.repeats, self.halfwidth, self.seconds, max(self.most, repeats or 0),
                     self.remeasures)

    def step_until(self) -> Until:
        return Until(self.step_repeats, self.halfwidth, self.step_seconds, 400, self.remeasures)


@dataclass
class Timed:
    """A cell's timings before they become a results row: end to end (and the samples its last pass
    covered), compute-only steps (and their mean batch), memory, and any columns of the cell's own."""
    e2e: Stats
    step: Stats
    samples: int
    batch: float
    peak_rss_mb: float = math.nan
    rss_growth_mb: float = math.nan
    cuda_peak_mb: float = math.nan
    loader: Stats | None = None
    extra: dict = field(default_factory=dict)


class Planted:
    """A form whose every step (and whole epoch) takes ``factor`` times as long: after the real work, a busy wait
    of (factor - 1) x the seconds it took, so B/A is ``factor`` whatever the load (``linbench ab --plant``,
    the calibration's changes of known size; asv's own tests plant a busy wait the same way)."""

    def __init__(self, form, factor: float, device: torch.device):
        self._form, self._factor, self._dev = form, factor, device
        self.step = self._slowed(form.step)
        if callable(getattr(form, "train_epoch", None)):
            self.train_epoch = self._slowed(form.train_epoch)

    def _slowed(self, work):
        def slowed(*args):
            start = time.perf_counter()
            out = work(*args)
            if self._dev.type == "cuda":
                torch.cuda.synchronize(self._dev)
            end = time.perf_counter() + (self._factor - 1) * (time.perf_counter() - start)
            while time.perf_counter() < end:
                pass
            return out
        return slowed

    def __getattr__(self, name):
        return getattr(self._form, name)


class CellBench:
    """One cell made ready to time. Every tool times the same things through it."""

    def __init__(self, cell: Cell, settings: Settings = Settings()):
        ranks = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
        if cell.world_size != ranks:
            raise ValueError(f"{cell.label()} is a cell of {cell.world_size} rank(s), timed by as many processes "
                             f"(linbench run starts them), not here ({ranks})")
        cell.apply()  # the axes that act on the process (e.g. its thread count), before anything is built
        self.cell, self.settings, self.dev = cell, settings, torch.device(cell.device)
        spec = cell.spec  # the model as the cell trains it (e.g. at its image size)
        self.cap, self.total = sample_cap(cell), train_examples(spec)
        self.loader = make_loader(cell.loader, spec, cell.batch_size, cell.workers, cell.device,
                                  settings.seed, settings.persistent_workers, settings.pin_memory,
                                  settings.data_dir)
        self.form = impls.build(spec, cell.form, init_params(spec, settings.seed), cell.setup())
        if settings.plant != 1:
            self.form = Planted(self.form, settings.plant, self.dev)
        self.samples = 0  # samples the last pass covered
        self.loaded = False  # a timed pass went through the loader (its workers and caches are warm)
        # the form trains a whole resident epoch at once (its own loop over the batches, its own kernels)
        self.owns_epoch = (callable(getattr(self.form, "train_epoch", None)) and isinstance(self.loader, Resident)
                           and not self.cap)

    def close(self) -> None:
        """End the loader's worker processes (the runner calls it in a ``finally``)."""
        close_loader(self.loader)

    # -- passes ------------------------------------------------------------------------------
    def batches(self):
        """One pass of batches, moved to the device."""
        seen, limit = 0, self.cap or self.total
        for X, y in self.loader:
            yield X.to(self.dev, non_blocking=True), y.to(self.dev, non_blocking=True)
            seen += len(y)
            if seen >= limit:
                return

    def train_pass(self) -> None:
        """End to end: load and step through one pass; ``samples`` counts what it covered."""
        if self.owns_epoch:
            self.form.train_epoch(self.loader.next_epoch())
            self.samples = self.total
            return
        self.samples = 0
        for X, y in self.batches():
            self.form.step(X, y)
            self.samples += len(y)
        self.loaded = True

    def loader_pass(self) -> None:
        self.samples = 0
        for _, y in self.batches():
            self.samples += len(y)

    def warm(self) -> None:
        """Untimed: a few steps, then one on the epoch's ragged last batch (a form that compiles or captures
        per batch size does so here, not in a timed epoch), or one whole epoch for a form that owns it, or a step on
        one row for a capped form;
        compilation, allocator and caches warm, workers started, the next epochs' orders made."""
        self.prepare(self.settings.most + 1)
        if self.owns_epoch:
            self.form.train_epoch(self.loader.next_epoch())
            return
        batch = None
        for _, batch in zip(range(self.settings.warm_steps), self.batches()):
            if self.cap:  # a form too slow for whole epochs (pure Python): nothing to compile; one row runs its code
                self.form.step(batch[0][:1], batch[1][:1])
                return
            self.form.step(*batch)
        ragged = self.total % self.cell.batch_size
        if batch is not None and ragged and not self.cap:
            self.form.step(batch[0][:ragged], batch[1][:ragged])

    def prepare(self, epochs: int) -> None:
        """The loader's orders for the next ``epochs`` epochs, made ahead where it can (the resident loader)."""
        if isinstance(self.loader, Resident):
            self.loader.prepare(epochs)

    def device_batches(self, count: int | None = None) -> list:
        """The first ``count`` batches of a pass, already on the device (for compute-only timing)."""
        return [b for _, b in zip(range(count or self.settings.step_batches), self.batches())]

    def steps(self, batches) -> None:
        for X, y in batches:
            self.form.step(X, y)

    @property
    def epoch_scale(self) -> float:
        """Epoch samples over the samples of the last pass (1 for an uncapped pass)."""
        return self.total / self.samples if self.samples else 1.0

    # -- the three measurements ----------------------------------------------------------------
    def epoch_s(self, repeats: int | None = None, warmup: int = 0) -> Stats:
        """Seconds per epoch, end to end (call :meth:`warm` first), extrapolated from a capped pass."""
        until = self.settings.until(repeats)
        self.prepare(until.most + warmup)
        stats = time_repeats(self.train_pass, until, self.dev, warmup=warmup)
        return stats.scaled(self.epoch_scale)

    def loader_epoch_s(self, repeats: int | None = None) -> Stats:
        """Seconds per epoch of the loader alone, extrapolated likewise; one untimed pass first, unless the
        cell's timed epochs already went through the loader (after :meth:`timings`: workers up, pages cached)."""
        until = self.settings.until(repeats)
        warmup = 0 if self.loaded else 1
        self.prepare(until.most + warmup)
        stats = time_repeats(self.loader_pass, until, self.dev, warmup=warmup)
        return stats.scaled(self.epoch_scale)

    def timings(self) -> Timed:
        """Warm, then end to end and compute-only steps, with the memory they took."""
        if self.dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.dev)
        rss_reset, rss_start = reset_peak_rss(), rss_mb()
        self.warm()
        e2e = self.epoch_s()
        samples = self.samples
        peak_rss = peak_rss_mb() if rss_reset else math.nan
        cuda_peak = torch.cuda.max_memory_allocated(self.dev) / 2**20 if self.dev.type == "cuda" else math.nan
        resident = self.device_batches()
        # a capped form's timed passes were these steps (pure Python: nothing to warm), so they say how slow it is
        known = e2e.median / self.total * sum(len(y) for _, y in resident) if self.cap else None
        step = self.step_ms(resident, known)
        timed = Timed(e2e, step, samples, sum(len(y) for _, y in resident) / len(resident), peak_rss,
                      peak_rss - rss_start, cuda_peak, extra={"whole_epoch": self.owns_epoch})
        if self.owns_epoch:
            timed.extra["notes"] = ["whole epochs through the form's train_epoch: no loader pass in epoch_s "
                                    "(loader_epoch_s is the loader's own)"]
        return timed

    def step_ms(self, batches=None, known: float | None = None) -> Stats:
        """Milliseconds per training step on ``batches`` already on the device (default: the first
        ``step_batches`` of a pass): each sample is one pass over them, synchronized at its edges. A warm-up
        pass first, unless ``known`` (seconds a pass over them takes, from passes already timed) says how slow."""
        batches = batches or self.device_batches()
        start = time.perf_counter()
        if known is None:
            self.steps(batches)  # the warm-up pass; a slow form (seconds per pass) is timed a batch at a time
        seconds, until = slowest(time.perf_counter() - start) if known is None else known, self.settings.step_until()
        if seconds / len(batches) > SLOW_STEP:  # a step as long as an epoch of others: as many repeats as epochs
            until = replace(until, repeats=min(until.repeats, self.settings.repeats))
        if seconds > SLOW_PASS:
            batches = batches[:1]
        stats = time_repeats(lambda: self.steps(batches), until, self.dev, warmup=0)
        return stats.scaled(1e3 / len(batches))
