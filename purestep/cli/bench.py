"""``purestep bench``: the step variants timed side by side, as ratios."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from purestep.cli._common import EXIT_BAD_INPUT, EXIT_OK, fail, positive_int


def bench(args: argparse.Namespace) -> int:
    from purestep.bench import run_benchmarks, to_markdown

    try:
        result = run_benchmarks(
            args.workloads,
            args.device,
            quick=args.quick,
            variants=args.variants,
            steps=args.steps,
            repeats=args.repeats,
            retain_memory=args.retain_memory,
            log=lambda line: print(line, file=sys.stderr),
        )
    except ValueError as err:
        return fail("bench", err, EXIT_BAD_INPUT)
    print(to_markdown(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result.to_dict(), indent=2))
        print(f"\nJSON written to {args.json}")
    return EXIT_OK


def variant_names(text: str) -> list[str]:
    """Comma-separated names; commas inside parentheses belong to a name (``functional
    compiled (donated, C++ wrapper)``)."""
    names, depth, current = [], 0, ""
    for ch in text:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            names.append(current.strip())
            current = ""
        else:
            current += ch
    names.append(current.strip())
    names = [n for n in names if n]
    if not names:
        raise argparse.ArgumentTypeError("expected at least one name")
    return names


def register(sub: Any) -> None:
    """Add the ``bench`` subcommand(s)."""
    bench_parser = sub.add_parser(
        "bench", help="time the step variants side by side and report ratios"
    )
    bench_parser.add_argument(
        "--workloads",
        default=None,
        help="comma-separated, e.g. W1,W2 (default: all for the device)",
    )
    bench_parser.add_argument("--device", default="cpu", help="cpu or cuda")
    bench_parser.add_argument(
        "--quick",
        action="store_true",
        help="W1 only (unless --workloads), fewer steps: < 3 min on 2 CPU cores",
    )
    bench_parser.add_argument(
        "--variants",
        type=variant_names,
        default=None,
        help="comma-separated variant names (default: all)",
    )
    bench_parser.add_argument(
        "--steps", type=positive_int, default=None, help="timed calls per repeat"
    )
    bench_parser.add_argument(
        "--repeats", type=positive_int, default=None, help="repeats (the median is reported)"
    )
    bench_parser.add_argument("--json", default=None, help="also write the results as JSON here")
    bench_parser.add_argument(
        "--retain-memory",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="let glibc keep freed memory for reuse (all variants; see retain_freed_cpu_memory)",
    )
    bench_parser.set_defaults(func=bench)
