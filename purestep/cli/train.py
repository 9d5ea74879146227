"""``purestep train`` and ``purestep evaluate``: a run directory from a config, and a
checkpoint's loss and metrics on a split. A run stopped by SIGTERM/SIGINT saves a
checkpoint and exits 143/130, so ``--resume`` continues it.

``torchrun --nproc-per-node N -m purestep train ...`` trains data-parallel: each rank joins
the job from torchrun's environment (``purestep.train.distributed.init_from_env``), rank 0
writes the run directory, and a rank that fails tells the others, which exit 1 naming it
(or name a rank that died or hangs, within ``--dist-timeout``)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
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
    non_negative_int,
    positive_int,
)

# The default --dist-timeout (purestep.train.distributed.DEFAULT_TIMEOUT; not imported
# from there, so that building the parser does not import torch.distributed).
DEFAULT_TIMEOUT = 60.0


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


def train(args: argparse.Namespace) -> int:
    from purestep.train import distributed

    try:
        return _train(args)
    finally:
        distributed.shutdown()  # a no-op in a single-process run


def _train(args: argparse.Namespace) -> int:
    from purestep.train import distributed
    from purestep.train.build import resolve_device
    from purestep.train.distributed.launch import DataParallelOptions
    from purestep.train.fit import NonFiniteLossError, TrainingInterrupted
    from purestep.train.run import train_run

    bad_input = bad_input_types()
    command = "train"

    def failed(err: BaseException, code: int, text: Any = None) -> int:
        distributed.note_failure(err)  # the other ranks name this one and why
        return fail(command, text if text is not None else err, code)

    try:
        overrides = list(args.set or [])
        if args.epochs is not None:
            overrides.append(f"train.epochs={args.epochs}")
        # JSON is YAML: a path with ': ' or '#' in it stays one string.
        if args.init_from is not None:
            overrides.append(f"train.init_from={json.dumps(os.path.abspath(args.init_from))}")
        if args.init_from_keys is not None:
            overrides.append(f"train.init_from_keys={json.dumps(args.init_from_keys)}")
        args.set = overrides
        cfg = load(args)
        out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
        parallel = DataParallelOptions(
            bucket_cap_mb=args.bucket_cap_mb,
            check_every=args.replica_check_every or None,
            timeout=args.dist_timeout,
        )
        # Under torchrun: join the job (gloo on the CPU, NCCL on CUDA); else nothing.
        ctx = distributed.init_from_env(
            device=resolve_device(args.device or cfg.train.device), timeout=args.dist_timeout
        )
        if ctx.distributed:
            command = f"train (rank {ctx.rank})"
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
                    parallel=parallel,
                    trust_code=args.trust_code,
                )
            except TrainingInterrupted as err:
                where = f"; checkpoint {err.checkpoint}" if err.checkpoint else ""
                if ctx.is_main:
                    print(f"purestep train: {err}{where}; continue with --resume", file=sys.stderr)
                return 128 + (stop.signum or signal.SIGTERM)
    except bad_input as err:
        return failed(err, EXIT_BAD_INPUT)
    except NonFiniteLossError as err:
        return failed(err, EXIT_FAILURE)
    except KeyboardInterrupt as err:
        distributed.note_failure(err)
        return 128 + signal.SIGINT
    except BrokenPipeError:  # `purestep train ... | head`: the command ends quietly
        raise
    except Exception as err:  # a model that rejects its data, an error inside the step ...
        return failed(err, EXIT_FAILURE, f"{type(err).__name__}: {err}")
    return EXIT_OK


def _positive_number(what: str) -> Callable[[str], float]:
    """An argparse type: a finite number > 0, ``what`` naming it in the errors."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not value > 0 or value == float("inf"):
            raise argparse.ArgumentTypeError(f"expected {what} > 0, got {text}")
        return value

    return parse


_seconds = _positive_number("a number of seconds")
_mebibytes = _positive_number("a size in MiB")


# -- evaluate ----------------------------------------------------------------------------


def evaluate(args: argparse.Namespace) -> int:
    from purestep.train.build import add_import_paths
    from purestep.train.run import evaluate_checkpoint

    # The stored config may name "package.module:function"s importable from here.
    add_import_paths(Path.cwd())
    try:
        result = evaluate_checkpoint(
            args.checkpoint, split=args.split, device=args.device, trust_code=args.trust_code
        )
    except bad_input_types() as err:
        return fail("evaluate", err, EXIT_BAD_INPUT)
    except Exception as err:
        return fail("evaluate", f"{type(err).__name__}: {err}", EXIT_FAILURE)  # type: ignore[arg-type]
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


def register(sub: Any) -> None:
    """Add the ``train/evaluate`` subcommand(s)."""
    train_parser = sub.add_parser(
        "train", help="train a model from a YAML config into a run directory"
    )
    add_config_args(train_parser)
    train_parser.add_argument(
        "--out", default=None, help="run directory (default: runs/<config name>)"
    )
    train_parser.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=None,
        metavar="CKPT",
        help="continue from OUT's latest checkpoint (a fresh start, with a warning, if there "
        "is none; --resume=must refuses instead), or from CKPT",
    )
    train_parser.add_argument(
        "--overwrite", action="store_true", help="replace the checkpoints of an existing run"
    )
    train_parser.add_argument(
        "--init-from",
        default=None,
        metavar="PATH",
        help="start a new run from this checkpoint's parameters and buffers (a run directory: "
        "its best, else its latest; a step directory or pointer file); fresh optimizer state, "
        "step, random key and history (train.init_from)",
    )
    train_parser.add_argument(
        "--init-from-keys",
        default=None,
        metavar="REGEX",
        help="with --init-from: load only the tensors whose names match (re.search), e.g. "
        "'^backbone\\.'; the others keep their initial values (train.init_from_keys)",
    )
    train_parser.add_argument(
        "--epochs", type=positive_int, default=None, help="override train.epochs"
    )
    train_parser.add_argument(
        "--no-plots", action="store_true", help="do not write OUT/plots/*.png"
    )
    add_trust_code_arg(
        train_parser,
        "on --resume, load OUT/compile_cache.zip (native code and pickles) even if this "
        "user's purestep did not write it (the --config itself is always your own code)",
    )
    train_parser.add_argument("--device", choices=["cpu", "cuda", "auto"], default=None)
    train_parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="compile the pure step, or not (default: train.compile, whose default auto "
        "compiles when it pays for itself on this run)",
    )
    dist = train_parser.add_argument_group(
        "data-parallel (under torchrun --nproc-per-node N -m purestep train ...)"
    )
    dist.add_argument(
        "--dist-timeout",
        type=_seconds,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help="how long a rank waits for the others before the job fails naming the rank "
        f"that died or hangs (default {DEFAULT_TIMEOUT:g})",
    )
    dist.add_argument(
        "--bucket-cap-mb",
        type=_mebibytes,
        default=None,
        metavar="MB",
        help="gradient all-reduce bucket size, as DDP's bucket_cap_mb (default 25, the "
        "first bucket 1)",
    )
    dist.add_argument(
        "--replica-check-every",
        type=non_negative_int,
        default=100,
        metavar="N",
        help="check every N steps that all ranks hold the same state (0: never; default 100)",
    )
    train_parser.set_defaults(func=train)

    evaluate_parser = sub.add_parser(
        "evaluate", help="loss and metrics of a checkpoint on a data split"
    )
    evaluate_parser.add_argument(
        "--checkpoint",
        required=True,
        help="a step directory, a latest/best pointer, or a run directory (its best)",
    )
    evaluate_parser.add_argument("--split", choices=["train", "val", "test"], default="val")
    evaluate_parser.add_argument("--device", choices=["cpu", "cuda", "auto"], default=None)
    evaluate_parser.add_argument("--json", action="store_true", help="print the result as JSON")
    add_trust_code_arg(evaluate_parser)
    evaluate_parser.set_defaults(func=evaluate)
