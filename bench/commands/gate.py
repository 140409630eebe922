"""``linbench check``: the equal-results gate (:mod:`bench.gate.check`) over a selection of gate keys, as a table or
JSON, exit 1 when a form fails."""
from __future__ import annotations

import json

from bench import UserError
from bench.commands import require_devices
from bench.runs.tables import show

GATE_MEASURES = ["case", "batches", "status", "loss_max_abs", "param_max_abs", "predict_max_abs", "tol_used", "rtol",
                 "atol"]


def cmd_check(args) -> int:
    from bench.gate.check import run_check
    if args.steps <= 0:
        raise UserError(f"--steps must be positive, got {args.steps}")
    from bench.grid import GATED, axis_overrides, gate_label, validate

    selection = {a: v for a, v in axis_overrides(args).items() if a in (*GATED, "batch_size")}
    validate(selection)
    require_devices(args.devices or ["cpu"])
    results = run_check(selection, steps=args.steps, data_dir=args.data_dir, batch_sizes=args.batch_sizes)
    rows = [r.as_dict() for r in results]
    if args.format == "json":
        print(json.dumps(rows, indent=2))
    else:
        print(show(rows, [*GATED, *GATE_MEASURES]))
        for r in results:
            if r.status != "pass":
                print(f"{r.status.upper()} {gate_label(r.key)}: {r.reason}")
        for reason in sorted({f"rtol {r.rtol:g} atol {r.atol:g}: {r.tolerance_reason}"
                              for r in results if r.tolerance_reason}):
            print(f"tolerance {reason}")
        print("tol_used: the worst |got - oracle| / (atol + rtol |oracle|) over losses, parameters and "
              "predict(); a case passes at <= 1")
    return 1 if any(r.status == "fail" for r in results) else 0


def add_parser(sub) -> None:
    from bench.grid import GATED, add_axis_flags

    p = sub.add_parser("check", help="the equal-results gate against the fp64 oracle",
                       description="The equal-results gate against the fp64 oracle. By default every model and "
                       "form, on cpu, at the batch sizes the default grid times each at.")
    add_axis_flags(p, only=(*GATED, "batch_size"), says="what to check")
    p.add_argument("--data-dir", default=None, help="folder with the Fashion-MNIST IDX files (or LINBENCH_DATA)")
    p.add_argument("--steps", type=int, default=50, help="full batches per case at most (default: 50)")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(func=cmd_check)
