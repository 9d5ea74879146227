"""The ``purestep`` command (also ``python -m purestep``): one module per subcommand.

``train``, ``evaluate``, ``predict``, ``check``, ``parity``, ``sweep``, ``tune``, ``bench``,
``demo``. Exit codes: 0 ok, 1 a training failure or a parity divergence, 2 bad input
(config, checkpoint, arguments); a run stopped by SIGTERM/SIGINT saves a checkpoint and
exits 143/130.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from purestep.cli import bench, check, demo, parity, predict, sweep, train, tune

__all__ = ["build_parser", "main"]

# Each module's register(sub) adds its subcommand(s), in this order in --help.
_COMMANDS = (train, predict, check, sweep, tune, parity, bench, demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="purestep", description="The PyTorch training step as a pure function."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for command in _COMMANDS:
        command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    return int(func(args))


if __name__ == "__main__":
    sys.exit(main())
