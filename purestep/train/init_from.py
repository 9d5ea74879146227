"""Warm starts: a new run from another run's parameters and buffers.

``purestep train --init-from PATH`` (YAML ``train.init_from``) starts a new run from the
checkpoint ``PATH`` names: a run directory (its ``best``, else its ``latest``: the model
``evaluate`` and ``predict`` read), a step directory or a ``latest``/``best`` pointer
file. Its parameters and buffers replace the new model's initial values; the optimizer
state (initialised over the loaded parameters), the step, the random key and the history
start fresh, so the config may differ in anything but the shapes of what is loaded.
``--init-from-keys REGEX`` (``train.init_from_keys``) loads only the tensors whose names
(as ``model.named_parameters()``/``named_buffers()`` give them) it matches
(``re.search``): the others keep their initial values, and are listed.

Only tensors are read from the source: its ``state.safetensors``, checked against the
sha256 its ``meta.json`` records. Its config is never built and nothing of it imported,
so a run directory from anywhere is safe to start from. A problem (no such checkpoint, a
damaged file, a tensor missing or of another shape) is a ``CheckpointError`` naming the
first tensor that does not fit, before anything is trained or written.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from purestep.core.state import TrainState
from purestep.train.checkpoint import (
    STATE_FILE,
    CheckpointError,
    read_meta,
    read_verified_tensors,
    resolve_checkpoint,
)
from purestep.train.config import ConfigError

__all__ = ["WarmStart", "initial_state", "load_warm_start", "resolve_init_from"]

_KINDS = ("params", "buffers")


@dataclass(frozen=True)
class WarmStart:
    """Where a run started from, and what it took: ``meta.json``'s ``init_from``."""

    path: Path
    sha256: str
    keys: str | None
    loaded: list[str]
    kept: list[str]  # at their initial values (not selected by ``keys``)

    def meta(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "sha256": {STATE_FILE: self.sha256},
            "keys": self.keys,
            "loaded": len(self.loaded),
            "kept_initial": self.kept,
        }

    def summary(self) -> str:
        line = f"init from {self.path}: {len(self.loaded)} tensors loaded"
        if self.keys is not None:
            kept = ", ".join(self.kept[:12]) + (
                f", ... ({len(self.kept)} in all)" if len(self.kept) > 12 else ""
            )
            line += f" (--init-from-keys {self.keys!r}); at their initial values: "
            line += kept or "none"
        return line + "; optimizer state, step, random key and history start fresh"


def resolve_init_from(path: str | os.PathLike[str]) -> Path:
    """The step directory ``path`` names, as ``evaluate`` and ``predict`` read it: a run
    or ``checkpoints`` directory (its ``best`` if it has one, the model the run keeps,
    else its ``latest``), a step directory or a pointer file (``.../checkpoints/latest``
    for the last state of a run that kept an earlier best)."""
    return resolve_checkpoint(path)


def _read_tensors(directory: Path, where: str) -> tuple[dict[str, torch.Tensor], str]:
    """The ``params/`` and ``buffers/`` tensors of a step directory, checked against the
    sha256 in its meta.json (read as data, with the checks every checkpoint read gets:
    nothing of it is built or imported)."""
    try:
        meta = read_meta(directory)
        return read_verified_tensors(directory, meta, keep=("params/", "buffers/"))
    except CheckpointError as err:
        raise CheckpointError(f"{where}: {err}") from None


def load_warm_start(
    model: nn.Module, source: str | os.PathLike[str], keys: str | None = None
) -> WarmStart:
    """Copy the checkpoint ``source``'s parameters and buffers (those whose names match
    ``keys``, or all) into ``model``, in place, after checking every one: a tensor the
    model lacks, one the source lacks, or one of another shape is a ``CheckpointError``
    naming it (the first, in the model's order) and both shapes; the model is then
    unchanged. Dtypes follow the model's."""
    where = f"--init-from {str(source)!r}"
    directory = resolve_init_from(source)
    tensors, digest = _read_tensors(directory, where)
    pattern = re.compile(keys) if keys is not None else None
    targets = {
        f"{kind}/{name}": tensor
        for kind, named in (
            ("params", model.named_parameters()),
            ("buffers", model.named_buffers()),
        )
        for name, tensor in named
    }

    def selected(key: str) -> bool:
        return pattern is None or pattern.search(key.split("/", 1)[1]) is not None

    chosen = [k for k in targets if selected(k)]
    if not chosen:
        raise CheckpointError(
            f"--init-from-keys {keys!r} matches none of the model's parameters or buffers "
            f"(they are named like {next(iter(targets), '-').split('/', 1)[-1]!r})"
        )
    hint = "" if pattern is not None else "; load a subset with --init-from-keys REGEX"
    for key in chosen:
        if key not in tensors:
            raise CheckpointError(
                f"{where}: {directory} has no {key!r}, which this model has{hint}"
            )
        got, want = tuple(tensors[key].shape), tuple(targets[key].shape)
        if got != want:
            raise CheckpointError(
                f"{where}: {key!r} has shape {got} in {directory} but {want} in this model "
                f"(only the shapes must match){hint}"
            )
    unused = [k for k in tensors if selected(k) and k not in targets]
    if unused:
        raise CheckpointError(
            f"{where}: {directory} has {unused[0]!r}, which this model has not"
            + (f" ({len(unused)} such tensors)" if len(unused) > 1 else "")
            + hint
        )
    with torch.no_grad():
        for key in chosen:
            targets[key].copy_(tensors[key])
    kept = [k.split("/", 1)[1] for k in targets if k not in set(chosen)]
    return WarmStart(directory.resolve(), digest, keys, chosen, kept)


def initial_state(
    exp: Any, print_fn: Callable[[str], None] | None = None
) -> tuple[TrainState, WarmStart | None]:
    """``exp.initial_state()`` (an ``Experiment``), from ``train.init_from``'s tensors when
    its config names one: they are loaded into the model first, so the optimizer state is
    initialised over them as over any model's initial values."""
    train = exp.cfg.train
    warm = None
    if train.init_from is not None:
        warm = load_warm_start(exp.model, train.init_from, train.init_from_keys)
        if print_fn is not None:
            print_fn(warm.summary())
    elif train.init_from_keys is not None:
        raise ConfigError("train.init_from_keys: needs train.init_from (--init-from)")
    return exp.initial_state(), warm
