"""``purestep config --schema``: every key a run config takes, from the pydantic schema
(types, bounds, defaults), the keyword arguments of the built-in models, datasets and
losses, and the ``tune`` search-space syntax. The README's config reference is this
output, checked by a test, so the two cannot drift."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from purestep.cli._common import EXIT_OK


def config(args: argparse.Namespace) -> int:
    from purestep.train.schema import config_reference

    del args
    sys.stdout.write(config_reference())
    return EXIT_OK


def register(sub: Any) -> None:
    """Add the ``config`` subcommand."""
    p = sub.add_parser("config", help="print every config key (--schema)")
    p.add_argument(
        "--schema",
        action="store_true",
        required=True,
        help="every config key with its type and default, built-in names' arguments, and "
        "the tune space syntax",
    )
    p.set_defaults(func=config)
