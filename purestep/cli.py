"""The ``purestep`` command (also ``python -m purestep``).

``train``, ``evaluate``, ``parity``, ``bench``, ``demo``. Exit codes: 0 ok, 1 a training
failure or a parity divergence, 2 bad input (config, checkpoint, arguments); a run stopped
by SIGTERM/SIGINT saves a checkpoint and exits 143/130, so ``--resume`` continues it.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

__all__ = ["build_parser", "main"]

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = 0, 1, 2


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def _fail(command: str, err: BaseException, code: int) -> int:
    print(f"purestep {command}: {err}", file=sys.stderr)
    return code


def _bad_input_types() -> tuple[type[BaseException], ...]:
    from purestep.train.checkpoint import CheckpointError
    from purestep.train.config import ConfigError
    from purestep.train.loggers import MissingExtraError

    return (ConfigError, CheckpointError, MissingExtraError)


def _load(args: argparse.Namespace) -> Any:
    """The config file with ``--set`` overrides, and its directory importable."""
    from purestep.train.build import add_import_paths
    from purestep.train.config import load_config

    add_import_paths(Path.cwd(), Path(args.config).parent)
    return load_config(args.config, args.set)


# -- train -----------------------------------------------------------------------------


class _StopFlag:
    """SIGTERM/SIGINT ask the run to stop after the current step (a second one kills)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        del frame
        if self.signum is not None:  # asked twice: stop now
            signal.signal(signum, signal.SIG_DFL)
            raise KeyboardInterrupt
        self.signum = signum
        print(
            f"\nreceived {signal.Signals(signum).name}: saving a checkpoint after this step "
            "(send it again to stop immediately)",
            file=sys.stderr,
            flush=True,
        )

    def __call__(self) -> bool:
        return self.signum is not None


def _train(args: argparse.Namespace) -> int:
    from purestep.train.fit import NonFiniteLossError, TrainingInterrupted
    from purestep.train.run import train_run

    bad_input = _bad_input_types()
    try:
        overrides = list(args.set or [])
        if args.epochs is not None:
            overrides.append(f"train.epochs={args.epochs}")
        args.set = overrides
        cfg = _load(args)
        out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
        with _StopFlag() as stop:
            try:
                train_run(
                    cfg,
                    out,
                    resume=args.resume or False,
                    overwrite=args.overwrite,
                    device=args.device,
                    compile=args.compile,
                    plots=False if args.no_plots else None,
                    should_stop=stop,
                )
            except TrainingInterrupted as err:
                where = f"; checkpoint {err.checkpoint}" if err.checkpoint else ""
                print(f"purestep train: {err}{where}; continue with --resume", file=sys.stderr)
                return 128 + (stop.signum or signal.SIGTERM)
    except bad_input as err:
        return _fail("train", err, EXIT_BAD_INPUT)
    except NonFiniteLossError as err:
        return _fail("train", err, EXIT_FAILURE)
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    except Exception as err:  # a model that rejects its data, an error inside the step ...
        return _fail("train", f"{type(err).__name__}: {err}", EXIT_FAILURE)  # type: ignore[arg-type]
    return EXIT_OK


# -- evaluate ----------------------------------------------------------------------------


def _evaluate(args: argparse.Namespace) -> int:
    from purestep.train.run import evaluate_checkpoint

    try:
        result = evaluate_checkpoint(args.checkpoint, split=args.split, device=args.device)
    except _bad_input_types() as err:
        return _fail("evaluate", err, EXIT_BAD_INPUT)
    except Exception as err:
        return _fail("evaluate", f"{type(err).__name__}: {err}", EXIT_FAILURE)  # type: ignore[arg-type]
    if args.json:
        print(json.dumps(result, indent=1))
        return EXIT_OK
    print(f"checkpoint: {result['checkpoint']}")
    print(f"split: {result['split']} ({result['examples']} examples)")
    for key, value in result.items():
        if key in ("checkpoint", "split", "examples") or isinstance(value, list):
            continue
        print(f"{key}: {value:.6g}" if isinstance(value, float) else f"{key}: {value}")
    for key, value in result.items():
        if isinstance(value, list):
            print(f"{key} (rows: true class, columns: predicted):")
            for row in value:
                print("  " + " ".join(f"{v:6d}" for v in row))
    return EXIT_OK


# -- parity ------------------------------------------------------------------------------


def _parity(args: argparse.Namespace) -> int:
    """Exit 0 on parity, 1 on divergence or a failure while running, 2 on a bad config."""
    from purestep.train.run import parity_run

    try:
        report = parity_run(_load(args), steps=args.steps, mode=args.mode, compile=args.compile)
    except _bad_input_types() as err:
        return _fail("parity", err, EXIT_BAD_INPUT)
    except Exception as err:  # the model rejects its batch, an internal error ...
        return _fail("parity", f"{type(err).__name__}: {err}", EXIT_FAILURE)  # type: ignore[arg-type]
    print(report.to_markdown(limit=args.rows))
    if args.json:
        Path(args.json).write_text(report.to_json())
        print(f"report written to {args.json}")
    return EXIT_OK if report.ok else EXIT_FAILURE


# -- demo, bench -------------------------------------------------------------------------


def _demo(args: argparse.Namespace) -> int:
    from purestep.demo import main as demo_main

    result = demo_main(epochs=args.epochs, compile=args.compile, parity_steps=args.parity_steps)
    return EXIT_OK if result.get("parity_ok", 1.0) == 1.0 else EXIT_FAILURE


def _bench(args: argparse.Namespace) -> int:
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
        return _fail("bench", err, EXIT_BAD_INPUT)
    print(to_markdown(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result.to_dict(), indent=2))
        print(f"\nJSON written to {args.json}")
    return EXIT_OK


def _names(text: str) -> list[str]:
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


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="YAML run config")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override a config value (repeatable), e.g. --set optimizer.lr=1e-3",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="purestep", description="The PyTorch training step as a pure function."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a model from a YAML config into a run directory")
    _add_config_args(train)
    train.add_argument("--out", default=None, help="run directory (default: runs/<config name>)")
    train.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=None,
        metavar="CKPT",
        help="continue from OUT's latest checkpoint (fresh start if none), or from CKPT",
    )
    train.add_argument(
        "--overwrite", action="store_true", help="replace the checkpoints of an existing run"
    )
    train.add_argument("--epochs", type=_positive_int, default=None, help="override train.epochs")
    train.add_argument("--no-plots", action="store_true", help="do not write OUT/plots/*.png")
    train.add_argument("--device", choices=["cpu", "cuda", "auto"], default=None)
    train.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="compile the pure step (default: train.compile)",
    )
    train.set_defaults(func=_train)

    evaluate = sub.add_parser("evaluate", help="loss and metrics of a checkpoint on a data split")
    evaluate.add_argument(
        "--checkpoint",
        required=True,
        help="a step directory, a latest/best pointer, or a run directory (its best)",
    )
    evaluate.add_argument("--split", choices=["train", "val", "test"], default="val")
    evaluate.add_argument("--device", choices=["cpu", "cuda", "auto"], default=None)
    evaluate.add_argument("--json", action="store_true", help="print the result as JSON")
    evaluate.set_defaults(func=_evaluate)

    parity = sub.add_parser(
        "parity", help="compare the pure step with the imperative torch loop, step by step"
    )
    _add_config_args(parity)
    parity.add_argument("--steps", type=_positive_int, default=None, help="override parity.steps")
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
    parity.add_argument("--rows", type=_positive_int, default=12, help="table rows to print")
    parity.set_defaults(func=_parity)

    demo = sub.add_parser("demo", help="train circles-vs-squares with the compiled pure step")
    demo.add_argument("--epochs", type=_positive_int, default=5)
    demo.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True)
    demo.add_argument("--parity-steps", type=_non_negative_int, default=100)
    demo.set_defaults(func=_demo)

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
        "--variants",
        type=_names,
        default=None,
        help="comma-separated variant names (default: all)",
    )
    bench.add_argument("--steps", type=_positive_int, default=None, help="timed calls per repeat")
    bench.add_argument(
        "--repeats", type=_positive_int, default=None, help="repeats (the median is reported)"
    )
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
    func: Callable[[argparse.Namespace], int] = args.func
    return int(func(args))


if __name__ == "__main__":
    sys.exit(main())
