"""The ``purestep`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    from purestep.demo import main as demo_main

    result = demo_main(epochs=args.epochs, compile=args.compile, parity_steps=args.parity_steps)
    return 0 if result.get("parity_ok", 1.0) == 1.0 else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="purestep", description="The PyTorch training step as a pure function."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="train circles-vs-squares with the compiled pure step")
    demo.add_argument("--epochs", type=int, default=5)
    demo.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True)
    demo.add_argument("--parity-steps", type=int, default=100)
    demo.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
