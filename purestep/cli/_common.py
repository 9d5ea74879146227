"""What the subcommands share: exit codes, error reporting, config loading, argument types."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from purestep._argtypes import non_negative_int, positive_int

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_FAILURE",
    "EXIT_OK",
    "add_config_args",
    "bad_input_types",
    "fail",
    "load",
    "non_negative_int",
    "positive_int",
]

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = 0, 1, 2


def fail(command: str, err: BaseException, code: int) -> int:
    print(f"purestep {command}: {err}", file=sys.stderr)
    return code


def bad_input_types() -> tuple[type[BaseException], ...]:
    from purestep.core.step import LossShapeError
    from purestep.train.checkpoint import CheckpointError
    from purestep.train.config import ConfigError
    from purestep.train.loggers import MissingExtraError

    return (ConfigError, CheckpointError, MissingExtraError, LossShapeError)


def load(args: argparse.Namespace) -> Any:
    """The config file with ``--set`` overrides, and its directory importable."""
    from purestep.train.build import add_import_paths
    from purestep.train.config import load_config

    add_import_paths(Path.cwd(), Path(args.config).parent)
    return load_config(args.config, args.set)


def add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="YAML run config")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override a config value (repeatable), e.g. --set optimizer.lr=1e-3",
    )
