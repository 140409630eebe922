"""One axis of the benchmark grid as data (:class:`Axis`), and the checks axes share; the table of them is
``bench.grid.AXIS_TABLE``."""
from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from impls.models import MODELS, train_examples


@dataclass(frozen=True)
class Axis:
    """One axis of the grid: everything the CLI, validation, results, asv and the report need to know.

    ``name`` is the cell field and the results column; ``flag`` the ``linbench run`` option (comma-
    separated values); ``parse`` turns one value's text into the value; ``choices`` (names) or ``check``
    (a value and every axis's overrides -> what is wrong, or None) validate it; ``default`` gives the values a
    sub-grid that does not name the axis takes; ``prefix`` marks the value in a cell label (``w4``, ``b256``);
    ``apply`` makes a cell's value take effect before it is built and timed (None: the value is data the cell reads);
    a value equal to ``implicit`` is left out of labels (an axis added later keeps the labels of earlier cells);
    ``gated``: its value changes a form's results, so the equal-results gate judges each value apart (the gate's
    key is the cell's gated values) and the form is built with it (:meth:`Cell.setup`); ``specialize`` (a spec
    and the value -> the spec the cell trains, e.g. wider inputs at a larger image size) makes the model its own.
    """
    name: str
    flag: str
    help: str
    parse: Callable[[str], object] = str
    choices: Callable[[], Sequence[str]] | None = None
    check: Callable[[object, dict], str | None] | None = None
    default: Callable[[], list] = list
    prefix: str = ""
    apply: Callable[[object], None] | None = None
    implicit: object = None
    gated: bool = False
    specialize: Callable[[object, object], object] | None = None

    @property
    def dest(self) -> str:
        """The argparse attribute of the axis's flag (``--batch-sizes``: ``batch_sizes``)."""
        return self.flag.lstrip("-").replace("-", "_")

    def values(self, text: str) -> list:
        """The flag's argparse type: comma-separated values, each once, each parsed as the axis says;
        an empty list is a mistake (leave the flag out for the default)."""
        names = list(dict.fromkeys(v for part in text.split(",") for v in part.split() if v))
        if not names:
            raise argparse.ArgumentTypeError(f"expected at least one value, got {text!r} (leave the flag out for "
                                             "the default)")
        try:
            return list(dict.fromkeys(self.parse(v) for v in names))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated values, got {text!r}") from None


def _at_least(low: int):
    return lambda v, overrides: None if v >= low else f"must be >= {low}, got {v}"


def _fits_the_data(b: int, overrides: dict) -> str | None:
    if b <= 0:
        return f"must be positive, got {b}"
    largest = max(train_examples(m) for m in overrides.get("model") or MODELS)
    return f"{b} is larger than the data ({largest} training examples)" if b > largest else None
