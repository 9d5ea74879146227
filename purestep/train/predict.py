"""Use a trained checkpoint on new inputs: ``purestep predict``'s library half.

A checkpoint remembers what turning raw inputs into model inputs needs (``meta.json``'s
``data`` entry and the tensors saved beside the state):

- named features (``--input sqft=3000``): ``data.feature_names``, and the training
  split's standardizer (``data/standardizer/...``); a regression output is turned back
  into the target's units (dollars, not standard deviations);
- text (``--text "see you later"``): ``data.info.vocabulary`` (and ``binary``), turned
  into the bag-of-words vector the ``text`` dataset makes;
- image files: ``data.info.image_shape`` (channels and size);
- anything else as numbers shaped like one training input (or a batch of them).

The model and weights come from the stored config and state, as ``purestep evaluate``
builds them (the training split is rebuilt for the input shape and the optimizer's
structure; nothing is trained or written).

Outputs are read by task: binary and multiclass give the class name and its probability
(and the ``top`` best), regression the value in original units, and a model whose output
per example is ``data.info.image_shape`` (a sprite generator) gives images.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.func import functional_call

from purestep.core.state import TrainState
from purestep.data.datasets import Standardizer
from purestep.train.checkpoint import CheckpointError, load_checkpoint, read_meta
from purestep.train.run import Experiment

__all__ = ["PredictError", "Predictor", "load_predictor", "parse_feature_args"]

_STANDARDIZER = "data/standardizer/"


class PredictError(ValueError):
    """Inputs that do not fit the checkpoint; the message says what it expects."""


def parse_feature_args(items: Sequence[str]) -> dict[str, float]:
    """``["sqft=3000", "beds=3"]`` -> ``{"sqft": 3000.0, "beds": 3.0}``."""
    values: dict[str, float] = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise PredictError(f"--input {item!r}: expected NAME=NUMBER, e.g. sqft=3000")
        try:
            value = float(text)
        except ValueError:
            raise PredictError(f"--input {item!r}: {text.strip()!r} is not a number") from None
        if name in values:
            raise PredictError(f"--input: {name!r} is given twice")
        values[name] = value
    return values


@dataclass
class Predictor:
    """A checkpoint ready to predict: its experiment (model, task, training split), its
    state, its ``meta.json`` and the standardizer saved with it."""

    exp: Experiment
    state: TrainState
    path: Path
    meta: dict[str, Any]
    standardizer: Standardizer | None

    # -- what the checkpoint knows about its data ---------------------------------------
    @property
    def data_meta(self) -> dict[str, Any]:
        data = self.meta.get("data")
        return data if isinstance(data, dict) else {}

    @property
    def task(self) -> str | None:
        task = self.meta.get("task", self.exp.task)
        return task if isinstance(task, str) else None

    @property
    def feature_names(self) -> list[str] | None:
        names = self.data_meta.get("feature_names")
        return [str(n) for n in names] if isinstance(names, list) and names else None

    @property
    def classes(self) -> list[str] | None:
        names = self.data_meta.get("classes")
        return [str(n) for n in names] if isinstance(names, list) and names else None

    @property
    def info(self) -> dict[str, Any]:
        info = self.data_meta.get("info")
        return info if isinstance(info, dict) else {}

    @property
    def image_shape(self) -> tuple[int, ...] | None:
        shape = self.info.get("image_shape")
        if isinstance(shape, list) and shape and all(isinstance(s, int) for s in shape):
            return tuple(shape)
        return None

    @property
    def input_example(self) -> torch.Tensor:
        """The training split's first input (shape and dtype of one example)."""
        data = self.exp.train.data
        if isinstance(data, tuple) and len(data) == 2:
            return data[0][0]
        if not isinstance(data, tuple) and len(data) > 0:  # type: ignore[arg-type]
            item = data[0]  # a Dataset (sized, as Batches requires): its first example
            if isinstance(item, tuple | list) and len(item) == 2:
                try:
                    return torch.as_tensor(item[0])
                except (TypeError, ValueError, RuntimeError):
                    pass
        raise PredictError(
            f"{self.path}: predict needs a model with one tensor input; this checkpoint's "
            "data has several inputs (or a Dataset whose examples are not (input, target))"
        )

    # -- raw inputs -> model inputs -----------------------------------------------------
    def from_features(self, rows: Sequence[Mapping[str, Any]]) -> torch.Tensor:
        """Named feature values (one mapping per example), standardised as in training."""
        names = self.feature_names
        if names is None:
            raise PredictError(
                f"{self.path}: the checkpoint's data has no feature names (meta.json "
                "data.feature_names): give the inputs as numbers with --json"
            )
        if not rows:
            raise PredictError("--input: no feature values given")
        out = []
        for row in rows:
            unknown = [k for k in row if k not in names]
            if unknown:
                close = difflib.get_close_matches(unknown[0], names, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise PredictError(
                    f"--input: unknown feature {unknown[0]!r}{hint} (features: {', '.join(names)})"
                )
            missing = [n for n in names if n not in row]
            if missing:
                raise PredictError(
                    f"--input: missing feature(s) {', '.join(missing)} (features: "
                    f"{', '.join(names)})"
                )
            values = []
            for n in names:
                v = row[n]
                if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                    raise PredictError(f"--input: {n} must be a finite number, got {v!r}")
                values.append(float(v))
            out.append(values)
        return self._standardise(torch.tensor(out, dtype=self.input_example.dtype))

    def from_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Bag-of-words vectors over the checkpoint's vocabulary."""
        from purestep.data.text import bag_of_words

        vocabulary = self.info.get("vocabulary")
        if not isinstance(vocabulary, list) or not vocabulary:
            raise PredictError(
                f"--text: the checkpoint {self.path} has no vocabulary (meta.json "
                "data.info.vocabulary), so its model does not read text; use --input or --json"
            )
        if not texts or any(not isinstance(t, str) for t in texts):
            raise PredictError("--text: expected one or more strings")
        return bag_of_words(
            list(texts), [str(w) for w in vocabulary], binary=bool(self.info.get("binary", True))
        )

    def from_files(self, files: Sequence[str | Path]) -> torch.Tensor:
        """Image files, resized like the training images (``data.info.image_shape``)."""
        from purestep.data.image_folder import load_image

        shape = self.image_shape
        if shape is None or len(shape) != 3 or shape[0] not in (1, 3) or shape[1] != shape[2]:
            raise PredictError(
                f"--file: the checkpoint {self.path} was not trained on square images "
                "(meta.json data.info.image_shape)"
            )
        if tuple(self.input_example.shape) != shape:
            raise PredictError(
                f"--file: the model takes inputs of shape {tuple(self.input_example.shape)}, "
                f"not images {shape}"
            )
        images = []
        for f in files:
            try:
                images.append(load_image(f, shape[1], grayscale=shape[0] == 1))
            except ValueError as err:
                raise PredictError(f"--file: {err}") from None
        return torch.stack(images)

    def from_json(self, value: Any) -> torch.Tensor:
        """A JSON value: an object of named features (or a list of them), a string (or a
        list of strings) of text, or numbers shaped like one input or a batch of inputs."""
        if isinstance(value, Mapping):
            return self.from_features([value])
        if isinstance(value, str):
            return self.from_texts([value])
        if isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            return self.from_features(value)
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            return self.from_texts(value)
        example = self.input_example
        try:
            x = torch.tensor(value, dtype=example.dtype)
        except (TypeError, ValueError, RuntimeError) as err:
            raise PredictError(
                f"--json: expected numbers shaped like one input {list(example.shape)} or a "
                f"batch of them, an object of named features, or text ({err})"
            ) from None
        if x.dtype.is_floating_point and not bool(torch.isfinite(x).all()):
            raise PredictError("--json: the inputs must be finite numbers")
        if tuple(x.shape) == tuple(example.shape):
            x = x.unsqueeze(0)
        elif x.dim() == 0 or tuple(x.shape[1:]) != tuple(example.shape) or len(x) == 0:
            raise PredictError(
                f"--json: got numbers of shape {list(x.shape)}; the model takes one input of "
                f"shape {list(example.shape)} or a batch [N, {', '.join(map(str, example.shape))}]"
            )
        return self._standardise(x)

    def _standardise(self, x: torch.Tensor) -> torch.Tensor:
        return self.standardizer.features(x) if self.standardizer is not None else x

    # -- model inputs -> predictions ----------------------------------------------------
    def outputs(self, x: torch.Tensor) -> torch.Tensor:
        """The model's outputs on ``x`` (eval mode, no autograd), regression outputs in the
        target's original units."""
        model = self.exp.model
        was_training = model.training
        model.eval()
        try:
            with torch.inference_mode():
                out = functional_call(
                    model, {**self.state.params, **self.state.buffers}, (x.to(self.exp.device),)
                )
        finally:
            model.train(was_training)
        if not isinstance(out, torch.Tensor):
            raise PredictError(f"the model returned a {type(out).__name__}, not a tensor")
        out = out.detach().cpu()
        s = self.standardizer
        if self.task == "regression" and s is not None and s.target_mean is not None:
            assert s.target_std is not None
            out = out * s.target_std + s.target_mean
        return out

    def images(self, outputs: torch.Tensor) -> torch.Tensor | None:
        """``outputs`` as ``(N, C, H, W)`` images when each example's output has the
        training images' shape (``data.info.image_shape``), else None."""
        shape = self.image_shape
        if shape is None or len(shape) != 3 or outputs.dim() < 1:
            return None
        if outputs[0].numel() != math.prod(shape):
            return None
        return outputs.reshape(len(outputs), *shape)

    def predict(self, x: torch.Tensor, *, top: int = 1) -> list[dict[str, Any]]:
        """One record per example: ``class``/``probability``/``top`` (classification),
        ``value`` (regression, 1 output), ``image`` (an image-shaped output) or ``output``."""
        if isinstance(top, bool) or not isinstance(top, int) or top < 1:
            raise PredictError(f"--top must be an int >= 1, got {top!r}")
        out = self.outputs(x)
        records: list[dict[str, Any]] = []
        images = self.images(out)
        if images is not None:
            return [{"image": img} for img in images]
        task = self.task
        if task == "binary" and out.dim() == 1:
            p1 = torch.sigmoid(out.double())
            names = self.classes or ["0", "1"]
            for p in p1.tolist():
                probs = sorted(zip(names, (1 - p, p), strict=True), key=lambda t: -t[1])
                records.append(_classification(probs, top))
            return records
        if task == "multiclass" and out.dim() == 2:
            probs_all = torch.softmax(out.double(), dim=1)
            names = self.classes or [str(i) for i in range(out.shape[1])]
            if len(names) != out.shape[1]:
                names = [str(i) for i in range(out.shape[1])]
            for row in probs_all.tolist():
                probs = sorted(zip(names, row, strict=True), key=lambda t: -t[1])
                records.append(_classification(probs, top))
            return records
        if task == "regression" and (out.dim() == 1 or (out.dim() == 2 and out.shape[1] == 1)):
            target = str(self.info.get("target") or "prediction")
            return [{"target": target, "value": float(v)} for v in out.reshape(-1).tolist()]
        return [{"output": row.tolist()} for row in out]


def _classification(probs: list[tuple[str, float]], top: int) -> dict[str, Any]:
    best, p = probs[0]
    return {"class": best, "probability": p, "top": probs[:top]}


def load_predictor(
    checkpoint: str | Path,
    *,
    device: str | None = None,
    like: Predictor | None = None,
    trust_code: bool = False,
) -> Predictor:
    """The checkpoint ``checkpoint`` names (a step directory, a pointer, a run directory:
    its best), with its model and data rebuilt from the stored config. ``like``: a
    predictor of the same run (same stored config), whose experiment is reused.
    ``trust_code``: build a foreign run's ``module:function`` names too (a run this
    user's purestep wrote needs no flag; see ``purestep.train.run.stored_experiment``)."""
    from purestep.train.checkpoint import meta_trust, resolve_checkpoint
    from purestep.train.run import stored_experiment

    directory = resolve_checkpoint(checkpoint)
    meta = read_meta(directory)
    raw = meta.get("config")
    if not isinstance(raw, dict):
        raise CheckpointError(f"{directory / 'meta.json'}: no config stored")
    if (
        like is not None
        and like.meta.get("config") == raw
        and (trust_code or meta_trust(directory, meta)[0])
    ):
        exp = like.exp
    else:
        exp = stored_experiment(
            directory, meta, trust_code=trust_code, device=device, splits=("train",)
        )
    loaded = load_checkpoint(directory, exp.train_step)
    scaler_tensors = {
        k.removeprefix(_STANDARDIZER): v
        for k, v in loaded.extra.items()
        if k.startswith(_STANDARDIZER)
    }
    standardizer = None
    if scaler_tensors:
        if not {"feature_mean", "feature_std"} <= set(scaler_tensors):
            raise CheckpointError(
                f"{directory}: incomplete standardizer tensors {sorted(scaler_tensors)}"
            )
        standardizer = Standardizer.from_tensors(scaler_tensors)
    return Predictor(exp, loaded.state.to(exp.device), loaded.path, loaded.meta, standardizer)
