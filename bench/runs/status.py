"""The status of a cell in a run, one enum that every tool writes and reads (a ``str``, so results files and
older rows hold the plain words)."""
from __future__ import annotations

from enum import Enum


class Status(str, Enum):
    """A cell's status in a run (every tool writes and reads these): timed, or why not."""

    def __str__(self) -> str:  # the word itself, in f-strings and files (as 3.11's StrEnum)
        return self.value

    OK = "ok"
    SKIPPED = "skipped"  # cannot or should not run here (its reason says why)
    FAILED_EQUIVALENCE = "failed-equivalence"  # its form failed the equal-results gate: never timed
    ERROR = "error"  # it crashed while timed
