"""The two halves of ``linbench ab``'s worker protocol: the worker, a process that times one cell per command
in its own revision's code (``python -m bench.regress.ab_worker``, cwd and PYTHONPATH = that revision's worktree), and
:class:`Worker`, the orchestrator's handle on one (bench/ab.py starts a fresh pair every round).

Protocol: one JSON object per line on stdin, one answer per line on stdout (anything else the process
writes to its stdout is sent to stderr, so it cannot corrupt an answer):

- ``{"cmd": "start", "out": DIR, "run_id": "A", "config": {runner.plan's arguments}, "slot": {Settings
  fields}, "ab": {...}}``: the run folder ``DIR/A`` made (``runner.plan`` + ``runner.start``), the device
  peaks probed, the equal-results gate run for every cell up front; answers ``{"ok": true, "protocol": 2,
  "run": FOLDER, "commit": SHA, "cells": [{"label", "status", "reason"}]}`` with status ``ok`` (to be
  timed), ``skipped`` or ``failed-equivalence``. With ``"run": FOLDER`` instead, a later round's worker
  takes over that folder (``runner.resume``: its config, rows and samples) without gating again;
- ``{"cmd": "measure", "cell": LABEL, "turns": BOOL}``: one slot, ``Runner.measure`` with the Settings' time
  budget replaced by ``slot``; with ``turns``, before each timed block the worker answers ``{"ok": true,
  "ready": true}`` and waits for ``{"cmd": "go"}`` (:class:`Turns`: the other side's blocks alternate with
  this one's, A B B A, while the untimed work of neither overlaps the other's timed block); the new samples
  appended to the cell's earlier ones (each slot's count, and whether it was disturbed, kept in ``meta.json``
  under ``ab.slots``: label -> metric -> counts), the row's medians, intervals and rates recomputed from all
  of them (:func:`pooled`), the run folder rewritten; answers ``{"ok": true, "status": "ok"|"error",
  "reason": ..., "n": {metric: count}}``;
- ``{"cmd": "quit", "complete": BOOL}``: the run marked complete (the last round) or not, answers
  ``{"ok": true}`` and exits.

A user error answers ``{"ok": false, "error": LINE}``; anything else also carries ``"traceback"``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import traceback
import warnings
from pathlib import Path

from bench import UserError
from bench.runs.status import Status

PROTOCOL = 2  # 2: the timed blocks of a slot taken in turns with the other side's
WORKER_MODULES = ("regress.ab_worker", "ab_worker", "worker")  # the worker's module under bench/: now, and before
METRICS = ("epoch", "step", "loader_epoch")


def worker_path(tree: Path, module: str) -> Path:
    """Where ``module`` (a name of :data:`WORKER_MODULES`) lies in the checkout ``tree``."""
    return tree / "bench" / f"{module.replace('.', '/')}.py"


def pooled(row: dict, samples: dict, slots: int, disturbed: int, load: float) -> dict:
    """The cell's row with every median, interval, count and rate recomputed from the samples of all its
    ``slots`` (the last slot's ``row`` gives the rest: memory, compile time, the per-step work)."""
    from bench.timing.timer import Stats

    e, s, ld = Stats.of(samples["epoch"]), Stats.of(samples["step"]).scaled(1e3), Stats.of(samples["loader_epoch"])
    by_epoch, by_step = row["epoch_s"] / e.median, row["step_ms"] / s.median  # rates scale inversely to time
    notes = [n for n in str(row["reason"]).split("; ") if n and not n.startswith(("disturbed", "noisy"))]
    notes.insert(0, f"{slots} slot(s) of an A/B pooled")
    if e.noisy or s.noisy:
        notes.append("noisy (IQR >= 10% of median)")
    if disturbed:
        notes.append(f"disturbed in {disturbed} of {slots} slot(s): others used up to {load:.0%} of the CPU")
    rates = {c: row[c] * by_epoch for c in ("samples_per_s", "epoch_roofline_frac")}
    rates.update({c: row[c] * by_step for c in ("gflops", "gbps", "roofline_frac")})
    return {**row, **rates, "reason": "; ".join(notes),
            "epoch_s": e.median, "epoch_s_lo": e.lo, "epoch_s_hi": e.hi, "epoch_s_iqr": e.iqr, "n": e.n,
            "step_ms": s.median, "step_ms_lo": s.lo, "step_ms_hi": s.hi, "step_ms_iqr": s.iqr, "step_n": s.n,
            "loader_epoch_s": ld.median, "loader_epoch_s_iqr": ld.iqr, "loader_n": ld.n,
            "noisy": e.noisy or s.noisy, "disturbed": bool(disturbed), "load": load}


class Turns:
    """The worker's side of the pairing: before each timed block it says ``{"ok": true, "ready": true}`` and waits
    for ``{"cmd": "go"}``, so the orchestrator lets one side time a block while the other waits."""

    def __init__(self, answers):
        self.answers = answers

    def take(self) -> None:
        self.answers.write(json.dumps({"ok": True, "ready": True}) + "\n")
        line = sys.stdin.readline()
        if not line or json.loads(line).get("cmd") != "go":
            raise UserError(f"the orchestrator left or said {line.strip()!r} instead of go")


def warm_data(cells: list, config) -> None:
    """The data sets of ``cells`` read now, while the worker starts (untimed, both sides at once), not in the
    round's first slot."""
    from bench.data import load_split

    for model in dict.fromkeys(c.model for c in cells):
        with contextlib.suppress(Exception):  # a data problem is the slot's to report
            load_split(model, True, config.data_dir)  # as the loaders call it: one cache entry


class Side:
    """The run this process writes: its store, runner and cells, and each cell's pooled samples."""

    def __init__(self, answers=None):
        self.answers, self.store, self.runner = answers, None, None
        self.cells: dict = {}
        self.samples: dict[str, dict[str, list]] = {}  # label -> metric -> seconds, over every slot

    def start(self, msg: dict) -> dict:
        from bench.runs.meta import environment
        from bench.timing import runner
        from bench.timing.cell import Settings

        budget = msg.get("slot") or {}
        unknown = set(budget) - {f.name for f in dataclasses.fields(Settings)}
        if unknown:
            raise ValueError(f"unknown Settings fields {sorted(unknown)}")

        class SlotSettings:  # Runner.measure reads its Settings through runner.Settings.of
            @staticmethod
            def of(config):
                return dataclasses.replace(Settings.of(config), **budget)

        runner.Settings = SlotSettings
        if msg.get("run"):  # a later round: the folder this side's earlier workers wrote
            store, config, cells = runner.resume(Path(msg["run"]))
            store.meta["complete"] = False
            self.samples = {c.label(): {m: list(store.samples.get((c.key(), m), [])) for m in METRICS} for c in cells}
            warm_data(cells, config)
        else:
            config = runner.plan(**msg["config"])
            store, cells = runner.start(config, Path(msg["out"]), run_id=msg.get("run_id"), progress=False)
            store.meta["ab"] = {**msg.get("ab", {}), "slot": budget, "slots": {}}
        self.store, self.runner = store, runner.Runner(config, store, progress=False)
        self.cells = {c.label(): c for c in cells}
        answer = [] if msg.get("run") else self.gate(cells, config)
        store.write()
        return {"ok": True, "protocol": PROTOCOL, "run": str(store.folder), "commit": environment()["commit"],
                "cells": answer}

    def gate(self, cells: list, config) -> list[dict]:
        """The run's first stage (:meth:`Runner.prepare`: peaks, load, gate); a row for each cell not to be
        timed."""
        untimed, answer = self.runner.prepare(cells), []
        for c in cells:
            status, reason = untimed.get(c.key(), (Status.OK, ""))
            if status != Status.OK:
                self.store.put(self.runner.row(c, status, reason))
            answer.append({"label": c.label(), "status": status, "reason": reason})
        return answer

    def measure(self, label: str, turns: bool = False) -> dict:
        from bench.timing.timer import set_turns

        set_turns(Turns(self.answers) if turns else None)
        try:
            return self._measure(label)
        finally:
            set_turns(None)

    def _measure(self, label: str) -> dict:
        if self.runner is None:
            raise ValueError("measure before start")
        if label not in self.cells:
            raise ValueError(f"no cell {label!r} in this run")
        cell = self.cells[label]
        self.runner.loader_cache.clear()  # the loader is timed in every slot too, not once per process
        row, samples = self.runner.attempt(cell)
        if row["status"] == Status.ERROR:
            self.store.put(row)
            self.store.write()
            return {"ok": True, "status": "error", "reason": row["reason"]}
        pool = self.samples.setdefault(label, {m: [] for m in METRICS})
        slots = self.store.meta["ab"]["slots"].setdefault(label, {m: [] for m in (*METRICS, "load")})
        for metric in METRICS:
            pool[metric] += list(samples[metric])
            slots[metric].append(len(samples[metric]))  # where each slot's samples end: the rounds
        slots["load"].append([bool(row["disturbed"]), float(row["load"])])  # was the slot disturbed, how much
        row = pooled(row, pool, len(slots["load"]), sum(d for d, _ in slots["load"]), max(x for _, x in slots["load"]))
        self.store.put(row, pool)
        self.runner.record_compiles()
        self.store.write()
        return {"ok": True, "status": "ok", "reason": row["reason"], "n": {m: len(v) for m, v in pool.items()}}

    def quit(self, complete: bool) -> dict:
        if self.store is not None:
            self.store.meta["complete"] = complete
            self.store.write()
            getattr(self.store, "unlock", lambda: None)()  # a revision whose Store locks its folder
        return {"ok": True}


class Worker:
    """The orchestrator's handle on one worker process: a JSON command in, a JSON answer out; its stderr
    goes to ``log``."""

    def __init__(self, side: str, tree: Path, log: Path):
        self.side, self.log = side, log
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), *filter(None, [os.environ.get("PYTHONPATH")])])}
        with open(log, "a") as err:
            module = next((f"bench.{m}" for m in WORKER_MODULES if (tree / "bench" / f"{m}.py").exists()),
                          "bench.regress.ab_worker")
            self.proc = subprocess.Popen([sys.executable, "-m", module], cwd=tree, env=env, text=True,
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, bufsize=1)

    def ask(self, **msg) -> dict:
        self.send(**msg)
        return self.receive()

    def send(self, **msg) -> None:
        """A command sent, its answer left to :meth:`receive` (both workers of a round start at once)."""
        try:
            self.proc.stdin.write(json.dumps(msg) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass

    def receive(self) -> dict:
        try:
            line = self.proc.stdout.readline()
        except (BrokenPipeError, OSError):
            line = ""
        if not line:
            tail = [t for t in self.log.read_text(errors="replace").splitlines() if t.strip()][-1:]
            raise UserError(f"worker {self.side} ended (exit {self.proc.wait()}): {' '.join(tail) or 'no message'}; "
                            f"see {self.log}")
        reply = json.loads(line)
        if not reply.get("ok"):
            with open(self.log, "a") as f:
                f.write(reply.get("traceback", ""))
            raise UserError(f"{self.side}: {reply.get('error')}")
        return reply

    def close(self, complete: bool = False) -> None:
        try:
            self.proc.poll() is None and self.ask(cmd="quit", complete=complete) and self.proc.wait(timeout=60)
        except (UserError, subprocess.TimeoutExpired, ValueError):
            self.proc.kill()
            self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):
                pipe.close()


def handle(side: Side, msg: dict) -> dict:
    from impls import UnknownName

    try:
        cmd = msg.get("cmd")
        if cmd == "start":
            return side.start(msg)
        if cmd == "measure":
            return side.measure(msg["cell"], bool(msg.get("turns")))
        if cmd == "quit":
            return side.quit(bool(msg.get("complete")))
        raise ValueError(f"unknown command {cmd!r}")
    except (UserError, UnknownName) as e:
        return {"ok": False, "error": str(e)}
    except Exception as e:  # noqa: BLE001 - said to the orchestrator, which stops
        return {"ok": False, "error": f"{e.__class__.__name__}: {e}".splitlines()[0],
                "traceback": traceback.format_exc()}


def main() -> int:
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # whatever else reaches stdout (a library's print, C code) goes to stderr
    sys.stdout = sys.stderr
    # the seeds' 4 workers on a 2-core machine are part of what is measured, not a mistake to warn of
    warnings.filterwarnings("ignore", message="This DataLoader will create")
    side = Side(answers)
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            msg = json.loads(line)
        except json.JSONDecodeError as e:
            msg = {"cmd": f"<unreadable: {e}>"}
        reply = handle(side, msg)
        answers.write(json.dumps(reply, default=str) + "\n")
        if msg.get("cmd") == "quit":
            break
    return 0


if __name__ == "__main__":
    sys.exit(main())
