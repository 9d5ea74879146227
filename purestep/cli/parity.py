"""``purestep parity``: the config's pure step against the imperative torch loop."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from purestep.cli._common import (
    EXIT_BAD_INPUT,
    EXIT_FAILURE,
    EXIT_OK,
    add_config_args,
    bad_input_types,
    fail,
    load,
    positive_int,
)


def parity(args: argparse.Namespace) -> int:
    """Exit 0 on parity, 1 on divergence or a failure while running, 2 on a bad config."""
    from purestep.train.run import parity_run

    try:
        report = parity_run(load(args), steps=args.steps, mode=args.mode, compile=args.compile)
    except bad_input_types() as err:
        return fail("parity", err, EXIT_BAD_INPUT)
    except BrokenPipeError:  # `... | head`: the command ends quietly
        raise
    except Exception as err:  # the model rejects its batch, an internal error ...
        return fail("parity", f"{type(err).__name__}: {err}", EXIT_FAILURE)  # type: ignore[arg-type]
    from purestep.train.distributed import context

    if context().is_main:  # under torchrun every rank holds the merged report: print it once
        print(report.to_markdown(limit=args.rows))
        if args.json:
            Path(args.json).write_text(report.to_json())
            print(f"report written to {args.json}")
    return EXIT_OK if report.ok else EXIT_FAILURE


def register(sub: Any) -> None:
    """Add the ``parity`` subcommand(s)."""
    parity_parser = sub.add_parser(
        "parity", help="compare the pure step with the imperative torch loop, step by step"
    )
    add_config_args(parity_parser)
    parity_parser.add_argument(
        "--steps", type=positive_int, default=None, help="override parity.steps"
    )
    parity_parser.add_argument(
        "--mode", choices=["bitwise", "close"], default=None, help="override parity.mode"
    )
    parity_parser.add_argument(
        "--json", default=None, help="also write the full report as JSON here"
    )
    parity_parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="compile the functional side",
    )
    parity_parser.add_argument("--rows", type=positive_int, default=12, help="table rows to print")
    parity_parser.set_defaults(func=parity)
