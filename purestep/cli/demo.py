"""``purestep demo``: train, evaluate and check the circles-vs-squares example."""

from __future__ import annotations

import argparse
from typing import Any

from purestep.cli._common import EXIT_FAILURE, EXIT_OK, non_negative_int, positive_int


def demo(args: argparse.Namespace) -> int:
    from purestep.demo import main as demo_main

    result = demo_main(epochs=args.epochs, compile=args.compile, parity_steps=args.parity_steps)
    return EXIT_OK if result.get("parity_ok", 1.0) == 1.0 else EXIT_FAILURE


def register(sub: Any) -> None:
    """Add the ``demo`` subcommand(s)."""
    demo_parser = sub.add_parser(
        "demo", help="train circles-vs-squares with the compiled pure step"
    )
    demo_parser.add_argument("--epochs", type=positive_int, default=5)
    demo_parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True)
    demo_parser.add_argument("--parity-steps", type=non_negative_int, default=100)
    demo_parser.set_defaults(func=demo)
