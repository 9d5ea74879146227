"""What the subcommands share: exit codes, error reporting, config loading, argument types."""

from __future__ import annotations

import argparse
import os
import sys
import sysconfig
import traceback
from pathlib import Path
from typing import Any

from purestep._argtypes import non_negative_int, positive_int

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_FAILURE",
    "EXIT_OK",
    "add_config_args",
    "add_trust_code_arg",
    "bad_input_types",
    "fail",
    "load",
    "non_negative_int",
    "positive_int",
    "set_traceback",
    "traceback_wanted",
    "user_traceback",
]

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = 0, 1, 2


_TRACEBACK = [False]


def set_traceback(on: bool) -> None:
    """``--traceback``: failures print the user's frames too (``PURESTEP_TRACEBACK=1``
    turns it on as well)."""
    _TRACEBACK[0] = on


def traceback_wanted() -> bool:
    return _TRACEBACK[0] or os.environ.get("PURESTEP_TRACEBACK", "") not in ("", "0")


def fail(command: str, err: BaseException, code: int) -> int:
    """Print ``purestep COMMAND: err`` and return ``code``; with ``--traceback``, called
    while handling an exception, the traceback of the user's frames first."""
    if traceback_wanted():
        handled = sys.exc_info()[1]
        if handled is not None:
            print(user_traceback(handled), file=sys.stderr, end="")
    print(f"purestep {command}: {err}", file=sys.stderr)
    return code


def _library_dirs() -> tuple[str, ...]:
    import torch

    import purestep

    dirs = [Path(m.__file__).resolve().parent for m in (purestep, torch) if m.__file__]
    dirs.append(Path(sysconfig.get_paths()["stdlib"]).resolve())
    return tuple(str(d) + os.sep for d in dirs)


def _is_user_frame(filename: str, libraries: tuple[str, ...]) -> bool:
    if filename.startswith("<"):  # <frozen importlib._bootstrap> and the like
        return False
    try:
        path = str(Path(filename).resolve())
    except OSError:
        return True
    return not path.startswith(libraries)


def user_traceback(err: BaseException) -> str:
    """The frames of ``err`` (and of the exceptions it was raised from) that are the user's
    code: not purestep's, torch's or the standard library's; the whole traceback when none
    is."""
    chain: list[BaseException] = []
    e: BaseException | None = err
    while e is not None and all(e is not c for c in chain):
        chain.append(e)
        e = e.__cause__ or (None if e.__suppress_context__ else e.__context__)
    libraries = _library_dirs()
    parts: list[str] = []
    for e in reversed(chain):  # the root cause first, as Python prints a chain
        frames = [
            f
            for f in traceback.extract_tb(e.__traceback__)
            if _is_user_frame(f.filename, libraries)
        ]
        if frames:
            parts += ["Traceback (your code's frames, most recent call last):\n"]
            parts += traceback.format_list(frames)
            parts += traceback.format_exception_only(type(e), e)
    if not parts:
        parts = [
            "(no frame of your code in the traceback; the whole of it:)\n",
            *traceback.format_exception(type(err), err, err.__traceback__),
        ]
    return "".join(parts)


def bad_input_types() -> tuple[type[BaseException], ...]:
    from purestep._trust import UntrustedCodeError
    from purestep.core.step import LossShapeError
    from purestep.train.checkpoint import CheckpointError
    from purestep.train.config import ConfigError
    from purestep.train.loggers import MissingExtraError
    from purestep.train.run_lock import RunDirectoryInUse

    return (
        ConfigError,
        CheckpointError,
        MissingExtraError,
        UntrustedCodeError,
        RunDirectoryInUse,
        LossShapeError,
    )


def load(args: argparse.Namespace) -> Any:
    """The config file with ``--set`` overrides, and its directory importable."""
    from purestep.train.build import add_import_paths
    from purestep.train.config import load_config

    add_import_paths(Path.cwd(), Path(args.config).parent)
    return load_config(args.config, args.set)


TRUST_CODE_HELP = (
    "build the module:function names (model, data, loss, ...) of a run directory that "
    "this user's purestep did not write, and load its compile cache: they run code. "
    "Your own runs (signed with your key) need no flag"
)


def add_trust_code_arg(p: argparse.ArgumentParser, help: str = TRUST_CODE_HELP) -> None:
    p.add_argument("--trust-code", action="store_true", help=help)


def add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="YAML run config")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override a config value (repeatable), e.g. --set optimizer.lr=1e-3",
    )
