"""The status of a cell in a run, one enum that every tool writes and reads (a ``str``, so results files and
older rows hold the plain words)."""
from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    """A cell's status in a run (every tool writes and reads these): timed, or why not."""
    OK = "ok"
    SKIPPED = "skipped"  # cannot or should not run here (its reason says why)
    FAILED_EQUIVALENCE = "failed-equivalence"  # its form failed the equal-results gate: never timed
    ERROR = "error"  # it crashed while timed
