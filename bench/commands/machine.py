"""``linbench list``, ``env`` and ``data``: what this machine can run and why not, what a run records of it,
and where its Fashion-MNIST is."""
from __future__ import annotations

import itertools

import impls
from bench.runs.tables import show


def cmd_list(args) -> int:
    from bench.grid import AXIS, GATED, axis_overrides, setup_of, validate
    from bench.loaders import LOADERS

    chosen = {a: v for a, v in axis_overrides(args).items() if a in GATED and v}
    validate(chosen)
    # every model, form and device; another gated axis at its default values unless its flag names others
    axes = {a: chosen.get(a) or (AXIS[a].choices() if a in ("model", "form", "device") else AXIS[a].default())
            for a in GATED}
    rows = []
    for values in itertools.product(*axes.values()):
        key = dict(zip(GATED, values))
        reason = impls.unavailable(key["model"], key["form"], setup_of(values))
        rows.append(dict(key, available="no" if reason else "yes", reason=reason or ""))
    print(show(rows, [*GATED, "available", "reason"]))
    for a in GATED:
        if a not in ("model", "form", "device") and AXIS[a].choices:
            print(f"{a}s: {', '.join(map(str, AXIS[a].choices()))} ({AXIS[a].flag} to list others than "
                  f"{', '.join(map(str, axes[a]))})")
    print(f"loaders: {', '.join(LOADERS)} (workers apply to torchvision and tensor)")
    print(f"devices: cpu, cuda ({impls.cuda_unavailable() or 'available'})")
    return 0


def cmd_env(args) -> int:
    from bench.runs.meta import environment

    for key, value in environment().items():
        print(f"{key:12} {value}")
    return 0


def cmd_data(args) -> int:
    from bench.data import fashion_mnist_root

    print(fashion_mnist_root(args.data_dir))
    return 0


def add_parser(sub) -> None:
    from bench.grid import GATED, add_axis_flags

    p = sub.add_parser("list", help="forms, loaders and devices available here, and why not")
    add_axis_flags(p, only=GATED, says="what to list")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("env", help="the environment a run records")
    p.set_defaults(func=cmd_env)
    p = sub.add_parser("data", help="find, validate and prepare Fashion-MNIST; print its torchvision root")
    p.add_argument("--data-dir", default=None)
    p.set_defaults(func=cmd_data)
