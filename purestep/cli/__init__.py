"""The ``purestep`` command (also ``python -m purestep``): one module per subcommand.

``train``, ``evaluate``, ``predict``, ``check``, ``parity``, ``sweep``, ``tune``, ``bench``,
``demo``, ``config``. Exit codes: 0 ok, 1 a training failure or a parity divergence, 2 bad input
(config, checkpoint, arguments); a run stopped by SIGTERM/SIGINT saves a checkpoint and
exits 143/130; output into a closed pipe (``purestep ... | head``) ends quietly with 141,
as SIGPIPE ends other tools. ``--traceback`` (any subcommand) or ``PURESTEP_TRACEBACK=1``
adds, to the one-line error, the traceback of the user's own frames.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

from purestep.cli import bench, check, config, demo, parity, predict, sweep, train, tune

__all__ = ["build_parser", "main"]

# Each module's register(sub) adds its subcommand(s), in this order in --help.
_COMMANDS = (train, predict, check, sweep, tune, parity, bench, demo, config)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="purestep", description="The PyTorch training step as a pure function."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for command in _COMMANDS:
        command.register(sub)
    for command_parser in dict.fromkeys(sub.choices.values()):
        command_parser.add_argument(
            "--traceback",
            action="store_true",
            help="on a failure, also print the traceback of your own code's frames "
            "(or set PURESTEP_TRACEBACK=1)",
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        code = _dispatch(argv)
    except SystemExit:  # argparse after --help or a usage error: its output first
        if not _flush_stdout():
            return _EXIT_BROKEN_PIPE
        raise
    except BrokenPipeError:
        _silence_stdout()
        return _EXIT_BROKEN_PIPE
    return code if _flush_stdout() else _EXIT_BROKEN_PIPE


# Output into a closed pipe ends the command as SIGPIPE ends other tools (128 + 13).
_EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE


def _dispatch(argv: Sequence[str] | None) -> int:
    from purestep.cli import _common

    args = build_parser().parse_args(argv)
    _common.set_traceback(bool(getattr(args, "traceback", False)))
    func: Callable[[argparse.Namespace], int] = args.func
    if args.command in _LONG_RUNS:
        # `purestep train ... | head`: the run is what matters, its report is not; once
        # the reader is gone the rest of the report goes nowhere and training goes on.
        with _StdoutMayClose():
            return int(func(args))
    return int(func(args))


_LONG_RUNS = ("train", "sweep", "tune")


class _StdoutMayClose:
    """Within it, ``sys.stdout`` drops what is written once its reader is gone."""

    def __enter__(self) -> None:
        self._previous = sys.stdout
        sys.stdout = _Droppable(sys.stdout)

    def __exit__(self, *exc: object) -> None:
        sys.stdout = self._previous


class _Droppable:
    """A text stream's proxy that stops writing, quietly, at a broken pipe."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._broken = False

    def write(self, text: str) -> int:
        if not self._broken:
            try:
                return int(self._stream.write(text))
            except BrokenPipeError:
                self._close()
        return len(text)

    def flush(self) -> None:
        if not self._broken:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._close()

    def _close(self) -> None:
        self._broken = True
        _silence_stdout()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _flush_stdout() -> bool:
    """Flush stdout now (a closed pipe shows here, not in the interpreter's exit); False,
    quietly, if its reader is gone."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()
        return False
    return True


def _silence_stdout() -> None:
    """The reader of stdout is gone (``| head``): what is still buffered goes to
    /dev/null, so that the interpreter's last flush does not raise again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # not a real file (a test's capture)
        pass


if __name__ == "__main__":
    sys.exit(main())
