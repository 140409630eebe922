"""Termination signals during a run: SIGTERM (what Slurm sends at a time limit) and Ctrl-C.

While :func:`handled` is in force both raise ``KeyboardInterrupt``, and each signal that arrives is noted, so
:func:`interrupted` can tell an exception that the signal caused from a result: a DataLoader worker or a rank
killed by the same signal (it reaches the whole process group), or an error raised while the interruption
unwound. A cell cut short that way is an interrupted run, never a row.
"""
from __future__ import annotations

import gc
import os
import re
import signal
import sys
import traceback
from contextlib import contextmanager

_received: list[int] = []  # the termination signals that arrived while :func:`handled` was in force
_owner: list[int] = []  # the pid of the process whose handlers they are (a forked child inherits them)

# a DataLoader worker (its message names the signal as strsignal does) or a torch.multiprocessing rank
# ended by SIGTERM or SIGINT
KILLED = re.compile(r"killed by signal: (Terminated|Interrupt)|terminated with signal SIG(TERM|INT)\b")


def _interrupt(signum, frame):
    if os.getpid() != _owner[0]:  # a forked child (a DataLoader worker): it ends as by default, quietly
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    _received.append(signum)
    raise KeyboardInterrupt


def _quiet(hook):
    """``sys.unraisablehook`` for the block, quiet about the interruption: a ``KeyboardInterrupt`` Python could not
    raise (the signal came in an at-fork hook as a DataLoader started its workers; it is noted, and the cell ends
    in an error :func:`interrupted` recognizes, its workers killed by the same signal, or :func:`check` raises it
    once the cell is done), and a DataLoader's complaint, as it is collected, that its workers were killed so, or
    (after a signal) that the signal cut its start short."""
    def unraisable(info):
        if not (os.getpid() == _owner[0] and (isinstance(info.exc_value, KeyboardInterrupt)
                                              or KILLED.search(str(info.exc_value))
                                              or (_received and "DataLoaderIter" in repr(info.object)))):
            hook(info)
    return unraisable


def _release(error: BaseException) -> None:
    """Drop the locals of the finished frames ``error`` (and what it chains to) unwound, and collect them: a
    DataLoader iterator the signal cut short while it started its workers ends them now, quietly, not after the
    run's last line."""
    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        traceback.clear_frames(e.__traceback__)
        e = e.__cause__ or e.__context__
    gc.collect()


@contextmanager
def handled():
    """SIGTERM, and SIGINT where it has Python's default handler (not where it is ignored, as under
    ``nohup ... &``), raise ``KeyboardInterrupt`` in the block; each is noted for :func:`interrupted`. An
    exception that leaves the block because of them leaves it as ``KeyboardInterrupt``."""
    signals = [signal.SIGTERM]
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signals.append(signal.SIGINT)
    _received.clear()
    _owner[:] = [os.getpid()]
    previous = {s: signal.signal(s, _interrupt) for s in signals}
    hook, sys.unraisablehook = sys.unraisablehook, _quiet(sys.unraisablehook)
    try:
        yield
    except BaseException as e:
        if not (isinstance(e, KeyboardInterrupt) or (isinstance(e, Exception) and interrupted(e))):
            raise
        try:
            _release(e)
        except Exception as again:  # a dead worker's SIGCHLD said it once more: the same interruption
            if not interrupted(again):
                raise
        if isinstance(e, KeyboardInterrupt):
            raise
        raise KeyboardInterrupt from e
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        sys.unraisablehook = hook
        _received.clear()


def check() -> None:
    """``KeyboardInterrupt`` if a termination signal arrived in the current :func:`handled` block (the code that
    met it may have swallowed the ``KeyboardInterrupt``)."""
    if _received:
        raise KeyboardInterrupt


def interrupted(error: BaseException) -> bool:
    """Whether ``error`` came of an interruption rather than of the code that raised it: a termination signal
    arrived, it was raised while a ``KeyboardInterrupt`` unwound, or it says a worker or rank was killed by
    SIGTERM or SIGINT."""
    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        if isinstance(e, KeyboardInterrupt) or KILLED.search(str(e)):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return bool(_received)


def raise_if_interrupted(error: Exception) -> None:
    """``KeyboardInterrupt`` from ``error`` where :func:`interrupted` says an interruption caused it."""
    if interrupted(error):
        raise KeyboardInterrupt from error
