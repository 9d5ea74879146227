"""``purestep tune``: an Optuna study, ``--parallel`` trials trained at once.

    purestep tune --config c.yaml --space space.yaml --trials 48 --parallel 8 \\
        [--storage sqlite:///DIR/study.db] [--pruner median|none] [--out DIR]

The study is stored in SQLite (``OUT/study.db`` by default), so the same command started
again after a crash or a kill resumes it. Needs the ``tune`` extra (Optuna): without it
the command says how to install it and exits 2. Exit codes: 0 ok, 1 training failure,
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
    non_negative_int,
    positive_int,
)
from purestep.cli.sweep import add_run_args


def tune(args: argparse.Namespace) -> int:
    from purestep.train.build import add_import_paths
    from purestep.train.tune import PRUNERS, import_optuna
    from purestep.train.tune import tune as run_tune

    try:
        import_optuna()
        if args.pruner not in PRUNERS:  # pragma: no cover - argparse's choices check it
            raise ValueError(args.pruner)
        add_import_paths(Path.cwd(), Path(args.config).parent)
        out = Path(args.out) if args.out else Path("runs") / f"tune-{Path(args.config).stem}"
        run_tune(
            args.config,
            args.space,
            trials=args.trials,
            parallel=args.parallel,
            out=out,
            storage=args.storage,
            study_name=args.study_name,
            pruner=args.pruner,
            pruner_warmup=args.pruner_warmup,
            seed=args.seed,
            chunk=args.chunk,
            overrides=args.set,
            epochs=args.epochs,
            device=args.device,
            compile=args.compile,
            plots=False if args.no_plots else None,
        )
    except bad_input_types() as err:
        return fail("tune", err, EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `... | head`: the command ends quietly
        raise
    except Exception as err:  # a model that rejects its data, an error inside the step ...
        return fail("tune", f"{type(err).__name__}: {err}", EXIT_FAILURE)  # type: ignore[arg-type]
    return EXIT_OK


def register(sub: Any) -> None:
    """Add the ``tune`` subcommand."""
    p = sub.add_parser(
        "tune", help="Optuna hyperparameter search, --parallel trials trained at once"
    )
    p.add_argument("--config", required=True, help="YAML run config (the base of every trial)")
    p.add_argument("--space", required=True, help="YAML search space: key: {log_uniform: [a, b]}")
    p.add_argument("--trials", type=positive_int, required=True, help="finished trials wanted")
    p.add_argument(
        "--parallel", type=positive_int, default=1, help="trials trained together per round"
    )
    p.add_argument(
        "--storage", default=None, help="Optuna storage URL (default: sqlite:///OUT/study.db)"
    )
    p.add_argument("--study-name", default="purestep", help="the study's name in the storage")
    p.add_argument("--pruner", choices=["median", "none"], default="median")
    p.add_argument(
        "--pruner-warmup",
        type=non_negative_int,
        default=None,
        metavar="EPOCHS",
        help="epochs a trial trains before the median pruner may stop it (default: a quarter "
        "of train.epochs, at least 1)",
    )
    p.add_argument("--seed", type=non_negative_int, default=0, help="the sampler's seed")
    p.add_argument("--out", default=None, help="output directory (default: runs/tune-<config>)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override a base config value (repeatable)",
    )
    add_run_args(p)
    p.set_defaults(func=tune)
