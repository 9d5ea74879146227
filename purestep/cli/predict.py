"""``purestep predict``: a trained checkpoint on new inputs, from the command line.

    purestep predict --checkpoint runs/house_prices --input sqft=3000
    purestep predict --checkpoint runs/intent_classifier --text "see you later" --top 3
    purestep predict --checkpoint runs/house_prices --csv new_houses.csv --output preds.csv
    purestep predict --checkpoint runs/sprite_generator/checkpoints/step-* \\
        --json '[[1, 0], [0, 1]]' --image progression.png

Several checkpoints (a run's ``step-*`` directories, in order) predict the same inputs;
with ``--image`` their image outputs form one grid, a row per checkpoint. ``--csv FILE``
predicts every row of a CSV file (its feature columns, as named in training; other
columns pass through) and prints the rows as CSV with a ``prediction`` column (a
classifier's also ``probability``; ``--top K`` adds ``prediction_2``, ``probability_2``
...), or writes them to ``--output``. ``--json @FILE`` reads the JSON from a file
(``@-``: standard input). Exit codes: 0
ok, 1 the model failed on the input, 2 bad input (arguments, checkpoint, inputs that do
not fit it).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path
from typing import Any

from purestep.cli._common import (
    EXIT_BAD_INPUT,
    EXIT_FAILURE,
    EXIT_OK,
    add_trust_code_arg,
    bad_input_types,
    fail,
    positive_int,
)


def _describe(record: dict[str, Any]) -> str:
    if "class" in record:
        if len(record["top"]) > 1:
            return ", ".join(f"{name} {p:.3f}" for name, p in record["top"])
        return f"{record['class']} (probability {record['probability']:.3f})"
    if "value" in record:
        return f"{record['target']} {record['value']:,.2f}"
    if "image" in record:
        shape = "x".join(map(str, record["image"].shape))
        return f"image {shape}"
    return json.dumps(record["output"])


def _labels(args: argparse.Namespace, value: Any, n: int) -> list[str]:
    """How each example is named in the output: its features, text, file or JSON."""
    if args.input:
        return [" ".join(args.input)]
    if args.text:
        return [json.dumps(t) for t in args.text]
    if args.file:
        return list(args.file)
    if isinstance(value, list) and len(value) == n and n > 1:
        return [json.dumps(v) for v in value]
    return [json.dumps(value)] if n == 1 else [f"input {i}" for i in range(n)]


def _read_json(text: str) -> Any:
    """``--json``'s value: JSON text, or ``@FILE`` (``@-``: standard input)."""
    from purestep.train.predict import PredictError

    where = "--json"
    if text.startswith("@"):
        name = text[1:]
        where = f"--json @{name}"
        try:
            text = sys.stdin.read() if name == "-" else Path(name).read_text()
        except (OSError, UnicodeDecodeError) as err:
            reason = err.strerror if isinstance(err, OSError) else str(err)
            raise PredictError(f"{where}: cannot read {name!r}: {reason}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise PredictError(f"{where}: not valid JSON ({err})") from None


def _read_csv(path: str) -> tuple[list[str], list[list[str]], list[int]]:
    """``--csv``'s header, rows (blank lines skipped) and each row's line in the file."""
    from purestep.train.predict import PredictError

    rows: list[list[str]] = []
    lines: list[int] = []
    start = 1
    try:
        with open(path, newline="") as f:
            reader = csv.reader(f)
            for row in reader:
                if row and any(c.strip() for c in row):
                    rows.append([c.strip() for c in row])
                    lines.append(start)
                start = reader.line_num + 1
    except OSError as err:
        raise PredictError(f"--csv: cannot read {path!r}: {err.strerror}") from None
    except (csv.Error, UnicodeDecodeError) as err:
        raise PredictError(f"--csv {path}: line {start}: not valid CSV ({err})") from None
    if len(rows) < 2:
        raise PredictError(f"--csv {path}: needs a header row and at least one data row")
    header = rows[0]
    for row, line in zip(rows[1:], lines[1:], strict=True):
        if len(row) != len(header):
            raise PredictError(
                f"--csv {path}: line {line} has {len(row)} fields, the header has {len(header)}"
            )
    return header, rows[1:], lines[1:]


def _csv_inputs(
    predictor: Any, path: str, header: list[str], rows: list[list[str]], lines: list[int]
) -> Any:
    """The model inputs of ``--csv``'s rows: the checkpoint's named features (other
    columns are ignored), or a text model's text column."""
    from purestep.train.predict import PredictError

    names = predictor.feature_names
    if names is None and predictor.info.get("vocabulary"):
        column = str(predictor.exp.cfg.data.kwargs.get("text_column", "text"))
        if column not in header:
            raise PredictError(
                f"--csv {path}: no column {column!r} (the text column the model was trained "
                f"on; columns: {', '.join(header)})"
            )
        return predictor.from_texts([row[header.index(column)] for row in rows])
    if names is None:
        raise PredictError(
            f"--csv: the checkpoint {predictor.path} has no feature names (meta.json "
            "data.feature_names), so its inputs are not CSV columns; use --json"
        )
    missing = [n for n in names if n not in header]
    if missing:
        raise PredictError(
            f"--csv {path}: missing feature column(s) {', '.join(missing)} (the model reads "
            f"{', '.join(names)}; columns: {', '.join(header)})"
        )
    records = []
    for row, line in zip(rows, lines, strict=True):
        record = {}
        for n in names:
            cell = row[header.index(n)]
            try:
                record[n] = float(cell)
            except ValueError:
                raise PredictError(
                    f"--csv {path}: column {n!r} line {line}: {cell!r} is not a number"
                ) from None
        records.append(record)
    return predictor.from_features(records)


def _prediction_columns(record: dict[str, Any], top: int) -> dict[str, str]:
    """One prediction as CSV cells: ``prediction`` (and classifiers' probabilities)."""
    if "class" in record:
        cells = {"prediction": str(record["class"]), "probability": repr(record["probability"])}
        for k, (name, p) in enumerate(record["top"][1:top], start=2):
            cells |= {f"prediction_{k}": str(name), f"probability_{k}": repr(p)}
        return cells
    if "value" in record:
        return {"prediction": repr(record["value"])}
    if "image" in record:
        return {"prediction": json.dumps(record["image"].reshape(-1).tolist())}
    return {"prediction": json.dumps(record["output"])}


def _predict_csv(args: argparse.Namespace) -> int:
    """``--csv FILE``: every row predicted, printed (or written to ``--output``) as CSV."""
    from purestep.train.predict import PredictError, load_predictor

    bad_input: tuple[type[BaseException], ...] = (*bad_input_types(), PredictError)
    try:
        if len(args.checkpoint) > 1:
            raise PredictError("--csv: give one --checkpoint")
        if args.image is not None:
            raise PredictError("--image does not apply with --csv")
        header, rows, lines = _read_csv(args.csv)
        predictor = load_predictor(args.checkpoint[0], device=args.device)
        x = _csv_inputs(predictor, args.csv, header, rows, lines)
        records = predictor.predict(x, top=args.top)
        cells = [_prediction_columns(r, args.top) for r in records]
        added = list(dict.fromkeys(k for c in cells for k in c))
        taken = [k for k in added if k in header]
        if taken:
            raise PredictError(
                f"--csv {args.csv}: already has a column {taken[0]!r}; rename it (the "
                "predictions are written there)"
            )
    except bad_input as err:
        return fail("predict", err, EXIT_BAD_INPUT)
    except Exception as err:  # the model fails on the input ...
        return fail("predict", f"{type(err).__name__}: {err}", EXIT_FAILURE)  # type: ignore[arg-type]
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow([*header, *added])
    for row, c in zip(rows, cells, strict=True):
        writer.writerow([*row, *(c.get(k, "") for k in added)])
    if args.output is None:
        sys.stdout.write(text.getvalue())
        return EXIT_OK
    from purestep._io import write_atomic

    try:
        write_atomic(args.output, text.getvalue().encode())
    except OSError as err:
        return fail("predict", f"--output {args.output}: {err.strerror}", EXIT_BAD_INPUT)  # type: ignore[arg-type]
    print(f"wrote {len(rows)} predictions to {args.output}")
    return EXIT_OK


def predict(args: argparse.Namespace) -> int:
    from purestep.train.build import add_import_paths
    from purestep.train.predict import PredictError, load_predictor, parse_feature_args

    bad_input: tuple[type[BaseException], ...] = (*bad_input_types(), PredictError)
    add_import_paths(Path.cwd())  # "package.module:function" data names, as train found them
    if args.image is None and args.scale is not None:
        return fail("predict", PredictError("--scale only applies with --image"), EXIT_BAD_INPUT)
    if args.output is not None and args.csv is None:
        return fail("predict", PredictError("--output only applies with --csv"), EXIT_BAD_INPUT)
    if args.csv is not None:
        return _predict_csv(args)
    try:
        value = None
        if args.json is not None:
            value = _read_json(args.json)
        features = parse_feature_args(args.input) if args.input else None
        rows: list[tuple[Path, list[dict[str, Any]], list[bool]]] = []
        predictor = None
        for checkpoint in args.checkpoint:
            predictor = load_predictor(
                checkpoint, device=args.device, like=predictor, trust_code=args.trust_code
            )
            if features is not None:
                x = predictor.from_features([features])
            elif args.text:
                x = predictor.from_texts(args.text)
            elif args.file:
                x = predictor.from_files(args.file)
            else:
                x = predictor.from_json(value)
            records = predictor.predict(x, top=args.top)
            # A text none of whose words the model knows gets its prior: say so.
            unknown = [bool(args.text) and not bool(row.any()) for row in x]
            rows.append((predictor.path, records, unknown))
        images = [[r.get("image") for r in records] for _, records, _ in rows]
        if args.image is not None and any(img is None for row in images for img in row):
            raise PredictError(
                "--image: the model's outputs are not images (their shape is not the "
                "checkpoint's data.info.image_shape)"
            )
    except bad_input as err:
        return fail("predict", err, EXIT_BAD_INPUT)
    except Exception as err:  # the model fails on the input, a user's data function ...
        return fail("predict", f"{type(err).__name__}: {err}", EXIT_FAILURE)  # type: ignore[arg-type]
    for path, records, unknown in rows:
        if all("image" in r for r in records):  # a generator: the PNG shows them
            print(f"{path}: {len(records)} image(s) {_describe(records[0]).split()[-1]}")
            continue
        if len(rows) > 1:
            print(f"{path}:")
        labels = _labels(args, value, len(records))
        for label, record, none_known in zip(labels, records, unknown, strict=True):
            note = " (no word of it is in the vocabulary)" if none_known else ""
            print(f"{'  ' if len(rows) > 1 else ''}{label} -> {_describe(record)}{note}")
    if args.image is not None:
        from purestep.data.image_folder import image_grid, save_image

        tiles = [img for row in images for img in row if img is not None]
        grid = image_grid(tiles, columns=len(images[0]))
        try:
            out = save_image(grid, args.image, scale=args.scale or 8)
        except (OSError, ValueError) as err:
            return fail("predict", f"--image {args.image}: {err}", EXIT_BAD_INPUT)  # type: ignore[arg-type]
        print(f"wrote {out} ({len(images)} x {len(images[0])} images)")
    return EXIT_OK


def register(sub: Any) -> None:
    """Add the ``predict`` subcommand."""
    p = sub.add_parser(
        "predict",
        help="a trained checkpoint on new inputs (features, text, image files, JSON, a CSV file)",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    p.add_argument(
        "--checkpoint",
        required=True,
        nargs="+",
        action="extend",
        metavar="CKPT",
        help="a step directory, a latest/best pointer or a run directory (its best); several "
        "predict the same inputs (with --image: one row each)",
    )
    given = p.add_mutually_exclusive_group(required=True)
    given.add_argument(
        "--input",
        nargs="+",
        action="extend",  # --input a=1 --input b=2 is one example with both
        metavar="NAME=NUMBER",
        help="named feature values of one example, e.g. sqft=3000 (standardised as in training)",
    )
    given.add_argument(
        "--text",
        nargs="+",
        action="extend",
        metavar="TEXT",
        help="text(s) for a model trained on the text dataset",
    )
    given.add_argument(
        "--file",
        nargs="+",
        action="extend",
        metavar="IMAGE",
        help="image file(s) for a model trained on images",
    )
    given.add_argument(
        "--json",
        metavar="JSON",
        help="numbers shaped like one input or a batch, an object of named features, or "
        "text; @FILE reads it from a file (@-: standard input)",
    )
    given.add_argument(
        "--csv",
        metavar="FILE",
        help="a CSV file with the model's feature columns (a header row): each row is "
        "predicted, printed as CSV with a prediction column",
    )
    p.add_argument(
        "--output",
        default=None,
        metavar="FILE",
        help="with --csv: write the CSV here instead of printing it",
    )
    p.add_argument("--top", type=positive_int, default=1, help="classes to show per example")
    p.add_argument(
        "--image", default=None, metavar="PNG", help="write image outputs as one PNG grid"
    )
    p.add_argument(
        "--scale", type=positive_int, default=None, help="PNG pixels per output pixel (--image; 8)"
    )
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu")
    add_trust_code_arg(p)
    p.set_defaults(func=predict)
