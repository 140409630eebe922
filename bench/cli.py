"""The ``linbench`` command: one line of error and exit status 2 for any user mistake."""
from __future__ import annotations

import argparse
import os
import sys

import impls
from bench import UserError
from bench.runs.folder import os_error
from impls.models import ModelError


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump
        raise UserError(f"{message} (see '{self.prog} --help')")


def make_parser() -> argparse.ArgumentParser:
    from bench.commands import gate, machine, report, run
    from bench.ranks.torchrun import add_parser as add_ranks
    from bench.regress.ab import add_parser as add_ab
    from bench.regress.compare import add_parser as add_compare
    from bench.regress.history import add_parser as add_history
    from bench.runs.merge import add_parser as add_merge
    from bench.signals.counts import add_parser as add_counts
    from bench.signals.profile import add_parser as add_profile

    parser = _Parser(prog="linbench", description="Benchmarks of d2l chapter 3 models written several ways.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for add in (gate.add_parser, run.add_parser, report.add_parser, add_merge, add_compare, add_ab, add_history,
                add_counts, add_profile, add_ranks, machine.add_parser):
        add(sub)
    return parser


def main(argv=None) -> int:
    try:
        args = make_parser().parse_args(argv)
        status = args.func(args)
        sys.stdout.flush()  # a closed pipe is met here, not at exit
        return status
    except (UserError, impls.UnknownName, ModelError) as e:
        print(f"linbench: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("linbench: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `linbench list | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as e:  # a file problem no caller foresaw: still one line, with the path
        print(f"linbench: error: {os_error(e, doing='use')}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
