"""Signals beside the clock: instruction counts under callgrind (:mod:`counts`, :mod:`callgrind`) and the
profiler's view of a step (:mod:`profile`)."""
