"""The subcommands of ``linbench`` that are not an engine's own: each module one command (or a few small ones),
with its ``add_parser(subparsers)``; ``bench/cli.py`` only dispatches."""
from __future__ import annotations

import impls
from bench import UserError


def require_devices(devices) -> list[str]:
    """The device names, checked: unknown names and a CUDA request without a GPU are user errors."""
    devices = impls.check_names("device", devices, impls.DEVICES)
    if "cuda" in devices and (reason := impls.cuda_unavailable()):
        raise UserError(f"--devices cuda: {reason}")
    return devices
