"""``purestep bench``: the step variants timed side by side, as ratios (the options and
what running them does live in ``purestep.bench.command``)."""

from __future__ import annotations

from typing import Any


def register(sub: Any) -> None:
    """Add the ``bench`` subcommand."""
    from purestep.bench.command import add_arguments, run

    bench_parser = sub.add_parser(
        "bench", help="time the step variants side by side and report ratios"
    )
    add_arguments(bench_parser)
    bench_parser.set_defaults(func=run)
