"""The ``purestep bench`` command line: its arguments and what running it does.

``add_arguments(parser)`` defines the options and ``run(args)`` runs the benchmark and
prints the markdown report, so the ``purestep`` CLI registers the subcommand with two
calls; ``python -m purestep.bench`` runs the same command on its own. Importing this
module is cheap (argparse only): the benchmark itself is imported when it runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from purestep._argtypes import positive_int

# torch threads for every variant (the runner's default too; defined here, where the
# command line reads it, so that `purestep bench --help` imports no torch).
DEFAULT_THREADS = 2

__all__ = ["add_arguments", "main", "run", "variant_names"]

EXIT_OK, EXIT_BAD_INPUT = 0, 2


def variant_names(text: str) -> list[str]:
    """Comma-separated names; commas inside parentheses belong to a name (``functional
    compiled (donated, C++ wrapper)``). ``none``: no variant tables (``--scaling`` alone)."""
    if text.strip().lower() == "none":
        return []
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``purestep bench``."""
    parser.add_argument(
        "--workloads",
        default=None,
        help="comma-separated, e.g. W1,W2 (default: all for the device)",
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="W1 only (unless --workloads), fewer steps: < 3 min on 2 CPU cores",
    )
    parser.add_argument(
        "--variants",
        type=variant_names,
        default=None,
        help="comma-separated variant names (default: all; 'none' with --scaling: only the "
        "scaling studies); the matmul floor is always timed",
    )
    parser.add_argument("--steps", type=positive_int, default=None, help="timed calls per round")
    parser.add_argument(
        "--repeats", type=positive_int, default=None, help="rounds (the median is reported)"
    )
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=DEFAULT_THREADS,
        help=f"torch threads for every variant (default {DEFAULT_THREADS}); reported, and the "
        "load limits are judged against it",
    )
    parser.add_argument(
        "--allow-load",
        action="store_true",
        help="time even if other work loads the machine (the report is then flagged); by "
        "default a busy machine is refused (exit 2)",
    )
    parser.add_argument(
        "--isolate",
        action="store_true",
        help="each variant in a process of its own, as a user runs it (rounds still interleaved)",
    )
    parser.add_argument(
        "--scaling",
        action="store_true",
        help="add the batch-size (W1: 16/64/256/1024) and vmapped-K (1..16, W1 and W2) studies",
    )
    parser.add_argument("--json", default=None, help="also write the results as JSON here")
    parser.add_argument(
        "--retain-memory",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="let glibc keep freed memory for reuse (all variants; see retain_freed_cpu_memory)",
    )


def run(args: argparse.Namespace) -> int:
    """Run the benchmark as ``args`` say; print the markdown report. Exit code: 0, or 2
    for bad input or a busy machine."""
    from purestep.bench.report import to_markdown
    from purestep.bench.runner import run_benchmarks

    if args.variants == [] and not args.scaling:
        print("purestep bench: --variants none needs --scaling", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        result = run_benchmarks(
            args.workloads,
            args.device,
            quick=args.quick,
            variants=args.variants,
            steps=args.steps,
            repeats=args.repeats,
            retain_memory=args.retain_memory,
            threads=args.threads,
            allow_load=args.allow_load,
            isolate=args.isolate,
            scaling=args.scaling,
            log=lambda line: print(line, file=sys.stderr),
        )
    except ValueError as err:
        print(f"purestep bench: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(to_markdown(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result.to_dict(), indent=2))
        print(f"\nJSON written to {args.json}")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m purestep.bench``: the same command as ``purestep bench``."""
    parser = argparse.ArgumentParser(
        prog="python -m purestep.bench",
        description="time the step variants side by side and report ratios",
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))
