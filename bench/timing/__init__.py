"""Timing a cell: the clock and its turns (:mod:`timer`), a cell made ready to time (:mod:`cell`), the run over a
grid (:mod:`runner`), the machine's load and memory beside it."""
