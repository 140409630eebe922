"""The ``linbench`` command: one line of error and exit status 2 for any user mistake."""
from __future__ import annotations

import argparse
import json
import sys

import impls
from bench import UserError


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump
        raise UserError(f"{message} (see '{self.prog} --help')")


def _names(text: str) -> list[str]:
    return [name for part in text.split(",") for name in part.split() if name]


def _add_selection(p, devices_default="cpu"):
    p.add_argument("--models", type=_names, default=None, help="comma-separated models (default: all)")
    p.add_argument("--forms", type=_names, default=None, help="comma-separated forms (default: all)")
    p.add_argument("--devices", type=_names, default=_names(devices_default),
                   help=f"comma-separated devices (default: {devices_default})")
    p.add_argument("--data-dir", default=None, help="folder with the Fashion-MNIST IDX files (or LINBENCH_DATA)")


def require_devices(devices) -> list[str]:
    """The device names, checked: unknown names and a CUDA request without a GPU are user errors."""
    devices = impls.check_names("device", devices, impls.DEVICES)
    if "cuda" in devices and (reason := impls.cuda_unavailable()):
        raise UserError(f"--devices cuda: {reason}")
    return devices


def cmd_check(args) -> int:
    from bench.check import run_check
    from bench.tables import show

    if args.steps <= 0:
        raise UserError(f"--steps must be positive, got {args.steps}")
    results = run_check(args.models, args.forms, require_devices(args.devices), steps=args.steps, data_dir=args.data_dir)
    rows = [r.as_dict() for r in results]
    if args.format == "json":
        print(json.dumps(rows, indent=2))
    else:
        cols = ["model", "form", "device", "status", "loss_max_abs", "loss_max_rel", "param_max_abs",
                "param_max_rel", "rtol", "atol"]
        print(show(rows, cols))
        for r in results:
            if r.status != "pass":
                print(f"{r.status.upper()} {r.model}/{r.form}/{r.device}: {r.reason}")
        for reason in sorted({f"rtol {r.rtol:g} atol {r.atol:g}: {r.tolerance_reason}"
                              for r in results if r.tolerance_reason}):
            print(f"tolerance {reason}")
    return 1 if any(r.status == "fail" for r in results) else 0


def cmd_data(args) -> int:
    from bench.data import fashion_mnist_root

    print(fashion_mnist_root(args.data_dir))
    return 0


def make_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="linbench", description="Benchmarks of d2l chapter 3 models written several ways.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("check", help="the equal-results gate against the fp64 oracle")
    _add_selection(p)
    p.add_argument("--steps", type=int, default=50, help="SGD steps per form (default: 50)")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(func=cmd_check)
    p = sub.add_parser("data", help="find, validate and prepare Fashion-MNIST; print its torchvision root")
    p.add_argument("--data-dir", default=None)
    p.set_defaults(func=cmd_data)
    return parser


def main(argv=None) -> int:
    try:
        args = make_parser().parse_args(argv)
        return args.func(args)
    except (UserError, impls.UnknownName) as e:
        print(f"linbench: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("linbench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
