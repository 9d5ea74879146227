"""``purestep sweep``: a grid of configs trained at once; ``OUT/sweep.csv`` and ``OUT/best/``.

    purestep sweep --config c.yaml --set optimizer.lr=1e-4,1e-3,1e-2 \\
        --set optimizer.name=SGD,Adam --seeds 0,1,2 --out runs/sweep [--chunk auto|N]

Every ``--set`` is an axis (one value: a fixed override); the members are the product of
the axes, seeds last. Exit codes: 0 ok, 1 every member diverged (or training failed),
2 bad input.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from purestep.cli._common import (
    EXIT_BAD_INPUT,
    EXIT_FAILURE,
    EXIT_OK,
    bad_input_types,
    fail,
    positive_int,
)


def chunk_arg(text: str) -> int | str:
    """``auto`` or a positive integer (``--chunk``)."""
    if text == "auto":
        return text
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected 'auto' or a positive integer, got {text!r}"
        ) from None


def add_run_args(p: argparse.ArgumentParser) -> None:
    """What ``sweep`` and ``tune`` share: how the members run."""
    p.add_argument(
        "--chunk",
        type=chunk_arg,
        default="auto",
        help="members per vmapped call: auto (a timed probe; sequential where vmap cannot "
        "be exact or is no faster), 1 (sequential) or N",
    )
    p.add_argument("--epochs", type=positive_int, default=None, help="override train.epochs")
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], default=None)
    p.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="compile the step (default: train.compile)",
    )
    p.add_argument("--no-plots", action="store_true", help="write no PNG plots")


def sweep(args: argparse.Namespace) -> int:
    from purestep.train._grid import parse_axis, parse_seeds
    from purestep.train.build import add_import_paths
    from purestep.train.sweep import sweep as run_sweep

    try:
        add_import_paths(Path.cwd(), Path(args.config).parent)
        axes = [parse_axis(item) for item in args.set]
        seeds = parse_seeds(args.seeds) if args.seeds is not None else None
        out = Path(args.out) if args.out else Path("runs") / f"sweep-{Path(args.config).stem}"
        result = run_sweep(
            args.config,
            axes,
            seeds=seeds,
            out=out,
            chunk=args.chunk,
            epochs=args.epochs,
            device=args.device,
            compile=args.compile,
            plots=False if args.no_plots else None,
            overwrite=args.overwrite,
        )
    except bad_input_types() as err:
        return fail("sweep", err, EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `... | head`: the command ends quietly
        raise
    except Exception as err:  # a model that rejects its data, an error inside the step ...
        return fail("sweep", f"{type(err).__name__}: {err}", EXIT_FAILURE)  # type: ignore[arg-type]
    if result.best is None:
        return fail("sweep", RuntimeError("no member finished with a finite loss"), EXIT_FAILURE)
    return EXIT_OK


def register(sub: Any) -> None:
    """Add the ``sweep`` subcommand."""
    p = sub.add_parser(
        "sweep", help="train a grid of configs at once (vmapped where it pays); keep the best"
    )
    p.add_argument("--config", required=True, help="YAML run config (the base of every member)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY.PATH=V1,V2,...",
        help="an axis of the grid (repeatable), e.g. --set optimizer.lr=1e-4,1e-3,1e-2",
    )
    p.add_argument(
        "--seeds", default=None, metavar="S1,S2,...", help="train.seed values, e.g. 0,1,2 or 0-3"
    )
    p.add_argument("--out", default=None, help="output directory (default: runs/sweep-<config>)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier sweep in --out")
    add_run_args(p)
    p.set_defaults(func=sweep)
