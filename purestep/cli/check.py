"""``purestep check``: a config's quick setup test (data, model, one eager and one compiled
step, parity with the torch step) as a checklist, in seconds. Exit 0 when every check
passes, 1 when one fails, 2 for a bad config."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from purestep.cli._common import (
    EXIT_BAD_INPUT,
    EXIT_FAILURE,
    EXIT_OK,
    add_config_args,
    add_trust_code_arg,
    bad_input_types,
    fail,
    load,
    traceback_wanted,
    user_traceback,
)


def check(args: argparse.Namespace) -> int:
    from purestep.train.check import check_config

    started = time.perf_counter()
    try:
        cfg = load(args)
    except bad_input_types() as err:
        return fail("check", err, EXIT_BAD_INPUT)
    print(f"checking {args.config}")
    report = check_config(
        cfg,
        compile=args.compile,
        parity=args.parity,
        device=args.device,
        print_fn=lambda line: print("  " + line, flush=True),
    )
    seconds = time.perf_counter() - started
    if report.ok:
        print(f"all checks passed in {seconds:.1f} s")
        return EXIT_OK
    failed = next(item for item in report.items if item.ok is False)
    if report.error is not None and traceback_wanted():
        print(user_traceback(report.error), file=sys.stderr, end="")
    print(f"check failed at {failed.name!r} after {seconds:.1f} s")
    return EXIT_BAD_INPUT if report.bad_input else EXIT_FAILURE


def register(sub: Any) -> None:
    """Add the ``check`` subcommand."""
    p = sub.add_parser(
        "check",
        help="quick setup test of a config: data, model, one eager + compiled step, parity",
    )
    add_config_args(p)
    p.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run the step compiled and compare it with the eager one (default: on)",
    )
    p.add_argument(
        "--parity",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also compare the step with the imperative torch step (default: on)",
    )
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], default=None)
    add_trust_code_arg(
        p,
        "accepted as on evaluate/predict/train; check reads only the --config you pass, "
        "which is your own code and always trusted",
    )
    p.set_defaults(func=check)
