"""The ``purestep`` command: ``demo``, ``parity`` and ``bench`` (train, evaluate, sweep next)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["build_parser", "main"]


def _demo(args: argparse.Namespace) -> int:
    from purestep.demo import main as demo_main

    result = demo_main(epochs=args.epochs, compile=args.compile, parity_steps=args.parity_steps)
    return 0 if result.get("parity_ok", 1.0) == 1.0 else 1


def _parity(args: argparse.Namespace) -> int:
    """Exit 0 on parity, 1 on divergence, 2 on a bad config."""
    import dataclasses

    from purestep.models import build_model
    from purestep.parity import compare
    from purestep.train.config import (
        ConfigError,
        build_batches,
        build_criterion,
        build_torch_optimizer,
        build_torch_scheduler,
        load_config,
    )

    try:
        cfg = load_config(args.config)
        parity = cfg.parity
        if args.steps is not None:
            if args.steps <= 0:
                raise ConfigError(f"--steps: must be > 0, got {args.steps}")
            parity = dataclasses.replace(parity, steps=args.steps)
        if args.mode is not None:
            parity = dataclasses.replace(parity, mode=args.mode)
        batches = build_batches(cfg.data)
        criterion = build_criterion(cfg.loss)
        build_model(cfg.model.name, **cfg.model.kwargs)  # fail early on a bad model section
        per_epoch = cfg.scheduler is not None and cfg.scheduler.every == "epoch"
        report = compare(
            model=lambda: build_model(cfg.model.name, **cfg.model.kwargs),
            criterion=criterion,
            torch_optimizer=lambda model: build_torch_optimizer(cfg.optimizer, model),
            batches=batches,
            steps=parity.steps,
            mode=parity.mode,
            rtol=parity.rtol,
            atol=parity.atol,
            forcing=parity.forcing,
            scheduler=(lambda opt: build_torch_scheduler(cfg.scheduler, opt))
            if cfg.scheduler
            else None,
            scheduler_every=max(1, len(batches) // cfg.train.accumulation_steps)
            if per_epoch
            else 1,
            clip_grad_norm=cfg.train.clip_grad_norm,
            accumulation_steps=cfg.train.accumulation_steps,
            compile=args.compile,
            seed=cfg.train.seed,
            device=cfg.train.device,
        )
    except (ConfigError, ValueError, TypeError) as err:
        print(f"purestep parity: {err}", file=sys.stderr)
        return 2
    print(report.to_markdown(limit=args.rows))
    if args.json:
        Path(args.json).write_text(report.to_json())
        print(f"report written to {args.json}")
    return 0 if report.ok else 1


def _bench(args: argparse.Namespace) -> int:
    import json

    from purestep.bench import run_benchmarks, to_markdown

    try:
        result = run_benchmarks(
            args.workloads,
            args.device,
            quick=args.quick,
            variants=args.variants.split(",") if args.variants else None,
            steps=args.steps,
            repeats=args.repeats,
            retain_memory=args.retain_memory,
            log=lambda line: print(line, file=sys.stderr),
        )
    except ValueError as err:
        print(f"purestep bench: {err}", file=sys.stderr)
        return 2
    print(to_markdown(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result.to_dict(), indent=2))
        print(f"\nJSON written to {args.json}")
    return 0


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

    parity = sub.add_parser(
        "parity", help="compare the pure step with the imperative torch loop, step by step"
    )
    parity.add_argument(
        "--config", required=True, help="YAML run config (model, data, loss, optimizer, scheduler)"
    )
    parity.add_argument("--steps", type=int, default=None, help="override parity.steps")
    parity.add_argument(
        "--mode", choices=["bitwise", "close"], default=None, help="override parity.mode"
    )
    parity.add_argument("--json", default=None, help="also write the full report as JSON here")
    parity.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="compile the functional side",
    )
    parity.add_argument("--rows", type=int, default=12, help="table rows to print")
    parity.set_defaults(func=_parity)

    bench = sub.add_parser("bench", help="time the step variants side by side and report ratios")
    bench.add_argument(
        "--workloads",
        default=None,
        help="comma-separated, e.g. W1,W2 (default: all for the device)",
    )
    bench.add_argument("--device", default="cpu", help="cpu or cuda")
    bench.add_argument(
        "--quick",
        action="store_true",
        help="W1 only (unless --workloads), fewer steps: < 3 min on 2 CPU cores",
    )
    bench.add_argument(
        "--variants", default=None, help="comma-separated variant names (default: all)"
    )
    bench.add_argument("--steps", type=int, default=None, help="timed calls per repeat")
    bench.add_argument("--repeats", type=int, default=None, help="repeats (the median is reported)")
    bench.add_argument("--json", default=None, help="also write the results as JSON here")
    bench.add_argument(
        "--retain-memory",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="let glibc keep freed memory for reuse (all variants; see retain_freed_cpu_memory)",
    )
    bench.set_defaults(func=_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
