"""``purestep predict``: a trained checkpoint on new inputs, from the command line.

    purestep predict --checkpoint runs/house_prices --input sqft=3000
    purestep predict --checkpoint runs/intent_classifier --text "see you later" --top 3
    purestep predict --checkpoint runs/sprite_generator/checkpoints/step-* \\
        --json '[[1, 0], [0, 1]]' --image progression.png

Several checkpoints (a run's ``step-*`` directories, in order) predict the same inputs;
with ``--image`` their image outputs form one grid, a row per checkpoint. Exit codes: 0
ok, 1 the model failed on the input, 2 bad input (arguments, checkpoint, inputs that do
not fit it).
"""

from __future__ import annotations

import argparse
import json
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


def predict(args: argparse.Namespace) -> int:
    from purestep.train.build import add_import_paths
    from purestep.train.predict import PredictError, load_predictor, parse_feature_args

    bad_input: tuple[type[BaseException], ...] = (*bad_input_types(), PredictError)
    add_import_paths(Path.cwd())  # "package.module:function" data names, as train found them
    if args.image is None and args.scale is not None:
        return fail("predict", PredictError("--scale only applies with --image"), EXIT_BAD_INPUT)
    try:
        value = None
        if args.json is not None:
            try:
                value = json.loads(args.json)
            except json.JSONDecodeError as err:
                raise PredictError(f"--json: not valid JSON ({err})") from None
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
        help="a trained checkpoint on new inputs (features, text, image files, JSON)",
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
        help="numbers shaped like one input or a batch, an object of named features, or text",
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
