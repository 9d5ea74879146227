"""Checkpoints: the format, the crash-safe save, and the validated load.

A run keeps its checkpoints in ``OUT/checkpoints/``::

    step-00000120/state.safetensors   every tensor: params/<name>, buffers/<name>,
                                      opt_state/<path>, step, rng, data/epoch, data/batch,
                                      loop/... (the epoch's accumulated losses and metric
                                      statistics), data/standardizer/... (if any)
    step-00000120/meta.json           format version, config, epoch, batch, step, history,
                                      best value, versions, sha256 of state.safetensors
    latest, best                      pointer files naming a step directory

Save protocol: write both files into a fresh temp directory beside the others (same
filesystem), fsync each file and the directory, rename it to ``step-XXXXXXXX``, fsync the
parent, then replace the pointer files atomically. A kill at any instant leaves every
complete checkpoint intact and the pointers naming complete ones; a temp directory left
by a kill is never loaded and is removed by the next save (never while another process
holds the run directory's lock, ``purestep.train.run_lock``). No pickle on any path.

Load: everything is checked before anything is built — missing files, a checksum
mismatch, a truncated or corrupted tensor file, a newer format, tensors that do not fit
the model and optimizer — and a problem is a ``CheckpointError`` (a ``ValueError``)
naming the file. Loading never writes.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from purestep._io import fsync_dir, fsync_file, write_atomic
from purestep._trust import sign_json, signature_status
from purestep.core.serialize import state_from_tensors, state_to_tensors
from purestep.core.state import TrainState
from purestep.core.step import TrainStep
from purestep.train.run_lock import writer_gone

__all__ = [
    "FORMAT_VERSION",
    "Checkpoint",
    "CheckpointError",
    "Checkpointer",
    "LoopState",
    "load_checkpoint",
    "read_meta",
    "resolve_checkpoint",
]

FORMAT_VERSION = 1
STATE_FILE = "state.safetensors"
META_FILE = "meta.json"
# Step numbers have 8 to 19 digits (int64): a pointer naming a 5,000-digit "step" is junk.
_STEP_DIR = re.compile(r"^step-(\d{8,19})$")
# meta.json holds the history (a few hundred bytes an epoch): 64 MiB is far past any run's.
_MAX_META_BYTES = 64 << 20
_MAX_POINTER_BYTES = 4096
_STATE_PREFIXES = ("params/", "buffers/", "opt_state/")
_STATE_KEYS = ("step", "rng")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and the problem."""


@dataclass
class LoopState:
    """Where the fit loop is and what it has gathered, saved with every checkpoint so a
    resumed run continues bitwise where the interrupted one was.

    ``epoch``: epochs completed; ``batch``: batches done in epoch ``epoch``; ``step``:
    train-step calls so far. ``losses``/``stats``/``values``: the current epoch's per-step
    losses, metric statistics and other per-step metrics, stacked (the epoch's figures are
    reduced from them at its end, so a resume reduces exactly the same numbers).
    """

    epoch: int = 0
    batch: int = 0
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_value: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = 0
    seconds: float = 0.0
    finished: bool = False
    stop_reason: str | None = None
    losses: torch.Tensor | None = None
    stats: dict[str, torch.Tensor] = field(default_factory=dict)
    values: dict[str, torch.Tensor] = field(default_factory=dict)
    callbacks: list[dict[str, Any]] = field(default_factory=list)  # their state_dicts

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {
            "data/epoch": torch.tensor(self.epoch, dtype=torch.int64),
            "data/batch": torch.tensor(self.batch, dtype=torch.int64),
        }
        if self.losses is not None:
            out["loop/losses"] = self.losses
        out |= {f"loop/stats/{k}": v for k, v in self.stats.items()}
        out |= {f"loop/values/{k}": v for k, v in self.values.items()}
        return {k: v.detach().cpu().contiguous() for k, v in out.items()}

    def meta(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "batch": self.batch,
            "step": self.step,
            "history": self.history,
            "best": {"value": self.best_value, "epoch": self.best_epoch},
            "bad_epochs": self.bad_epochs,
            "seconds": self.seconds,
            "finished": self.finished,
            "stop_reason": self.stop_reason,
            "callbacks": self.callbacks,
        }

    @classmethod
    def restore(cls, meta: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> LoopState:
        epoch, batch = int(tensors["data/epoch"]), int(tensors["data/batch"])
        if (epoch, batch) != (meta["epoch"], meta["batch"]):
            raise CheckpointError(
                f"data position {epoch}/{batch} in {STATE_FILE} differs from meta.json's "
                f"{meta['epoch']}/{meta['batch']}"
            )
        return cls(
            epoch=epoch,
            batch=batch,
            step=int(meta["step"]),
            history=list(meta["history"]),
            best_value=meta["best"]["value"],
            best_epoch=meta["best"]["epoch"],
            bad_epochs=int(meta["bad_epochs"]),
            seconds=float(meta["seconds"]),
            finished=bool(meta["finished"]),
            stop_reason=meta["stop_reason"],
            callbacks=list(meta.get("callbacks") or []),
            losses=tensors.get("loop/losses"),
            stats={
                k.removeprefix("loop/stats/"): v
                for k, v in tensors.items()
                if k.startswith("loop/stats/")
            },
            values={
                k.removeprefix("loop/values/"): v
                for k, v in tensors.items()
                if k.startswith("loop/values/")
            },
        )


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: the train state, the loop's state, ``meta.json``, the extra
    tensors saved with it (``data/standardizer/...``) and where it came from."""

    state: TrainState
    loop: LoopState
    meta: dict[str, Any]
    extra: dict[str, torch.Tensor]
    path: Path


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        purestep_version = version("purestep")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        purestep_version = "unknown"
    return {
        "purestep": purestep_version,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


class Checkpointer:
    """Saves checkpoints into ``directory`` (``OUT/checkpoints``) and keeps the pointers.

    Args:
        directory: created if missing.
        keep: keep only the newest ``keep`` numbered checkpoints (plus the one ``best``
            names, which is never pruned); None keeps all.
        config: the resolved run config, stored in every ``meta.json``.
        extra_tensors: saved with every checkpoint (e.g. ``data/standardizer/...``).
        extra_meta: JSON-able facts saved in every ``meta.json`` (e.g. class names).
        writer: whether this process writes. In a data-parallel run every rank holds the
            same state and only rank 0 writes; on the others ``save`` writes nothing and
            returns the directory rank 0 writes (so every rank reports the same path).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        keep: int | None = None,
        config: Mapping[str, Any] | None = None,
        extra_tensors: Mapping[str, torch.Tensor] | None = None,
        extra_meta: Mapping[str, Any] | None = None,
        writer: bool = True,
    ) -> None:
        if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 1):
            raise ValueError(f"keep must be a positive int or None, got {keep!r}")
        self.directory = Path(directory)
        self.keep = keep
        self.config = dict(config or {})
        self.extra_tensors = {
            k: v.detach().cpu().contiguous() for k, v in (extra_tensors or {}).items()
        }
        self.extra_meta = dict(extra_meta or {})
        self.writer = bool(writer)

    # -- pointers ---------------------------------------------------------------------
    def pointer(self, name: str) -> Path | None:
        """The step directory the pointer ``name`` (``latest``/``best``) names, if any."""
        return _read_pointer(self.directory / name)

    def latest(self) -> Path | None:
        """The checkpoint to resume from: ``latest``, or (if that pointer is missing or
        names a directory that is gone) the newest step directory.

        A step directory appears whole (renamed into place), so one that lacks a file was
        damaged afterwards: it is returned all the same, for the load to refuse with the
        file named, rather than silently resuming from an older one (the error then names
        the newest complete checkpoint to pass to ``--resume``)."""
        named = self.pointer("latest")
        if named is not None and named.is_dir():
            return named
        steps = _step_dirs(self.directory)
        return steps[-1] if steps else None

    def set_best(self, checkpoint: Path) -> Path:
        """Point ``best`` at ``checkpoint``, a complete step directory: one of this run's,
        or another run's (a resume from it), which is first copied here, crash-safe
        (a temp directory renamed into place). Returns the directory ``best`` names."""
        if not self.writer:
            return checkpoint
        self.directory.mkdir(parents=True, exist_ok=True)
        target = self.directory / checkpoint.name
        if checkpoint.resolve() != target.resolve() and not target.exists():
            self._remove_leftovers()
            tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{checkpoint.name}-", dir=self.directory))
            try:
                for name in (STATE_FILE, META_FILE):
                    shutil.copyfile(checkpoint / name, tmp / name)
                    fsync_file(tmp / name)
                fsync_dir(tmp)
                os.rename(tmp, target)
                fsync_dir(self.directory)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        self._set_pointer("best", target)
        return target

    def _set_pointer(self, name: str, target: Path) -> None:
        write_atomic(self.directory / name, f"{target.name}\n".encode())

    # -- saving -----------------------------------------------------------------------
    def save(self, state: TrainState, loop: LoopState, *, best: bool = False) -> Path:
        """Write a checkpoint of ``state`` at ``loop``'s position; returns its directory."""
        name = f"step-{loop.step:08d}"
        if not self.writer:
            return self.directory / name
        self.directory.mkdir(parents=True, exist_ok=True)
        self._remove_leftovers()
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=self.directory))
        try:
            tensors = {**state_to_tensors(state), **loop.tensors(), **self.extra_tensors}
            state_path = tmp / STATE_FILE
            save_file(tensors, str(state_path))
            fsync_file(state_path)
            meta = {
                "format_version": FORMAT_VERSION,
                **loop.meta(),
                "config": self.config,
                **self.extra_meta,
                "versions": _versions(),
                "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "sha256": {STATE_FILE: _sha256(state_path)},
            }
            write_atomic(tmp / META_FILE, (json.dumps(_signed(meta), indent=1) + "\n").encode())
            fsync_dir(tmp)
            target = self.directory / name
            trash = None
            if target.exists():  # the same step saved again (a replayed stretch): swap it
                trash = self.directory / f".trash-{name}-{os.getpid()}-{time.time_ns()}"
                os.rename(target, trash)
            os.rename(tmp, target)
            fsync_dir(self.directory)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)
        self._set_pointer("latest", target)
        if best:
            self._set_pointer("best", target)
        self._prune()
        return target

    def _remove_leftovers(self) -> None:
        """What a kill left behind: temp/trash step directories and half-written pointer
        files (``write_atomic``'s ``.latest.<hex>.tmp``). Only while no other process
        writes the run directory (``run_lock``): another writer's are in progress."""
        with writer_gone(self.directory.parent) as gone:
            if not gone:
                return
            for d in self.directory.iterdir():
                if d.name.startswith((".tmp-", ".trash-")) and d.is_dir():
                    shutil.rmtree(d, ignore_errors=True)
                elif d.name.startswith(".") and d.name.endswith(".tmp") and d.is_file():
                    d.unlink(missing_ok=True)

    def _prune(self) -> None:
        if self.keep is None:
            return
        protected = {self.pointer("best"), self.pointer("latest")}
        steps = _step_dirs(self.directory)
        for d in steps[: max(0, len(steps) - self.keep)]:
            if d not in protected:
                shutil.rmtree(d, ignore_errors=True)


_unsigned_warned = [False]


def _signed(meta: dict[str, Any]) -> dict[str, Any]:
    """``meta`` signed with this user's key (``purestep._trust``), so that this user's
    tools trust its config later; unsigned (foreign to every reader, which is safe) with
    one warning when the key cannot be created."""
    try:
        return sign_json(meta)
    except OSError as err:
        if not _unsigned_warned[0]:
            _unsigned_warned[0] = True
            import sys

            print(f"purestep: checkpoints are saved unsigned: {err}", file=sys.stderr)
        return meta


def meta_trust(directory: Path, meta: Mapping[str, Any]) -> tuple[bool, str]:
    """Whether ``meta`` (the ``meta.json`` of the step directory ``directory``) was signed
    by this user, and if not, a phrase naming the file and why it is foreign."""
    status = signature_status(meta)
    if status == "ok":
        return True, ""
    return False, f"{directory / META_FILE} ({status}: not written by this user's purestep)"


def _step_dirs(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), d) for d in directory.iterdir() if (m := _STEP_DIR.match(d.name))]
    return [d for _, d in sorted(found)]


def _read_pointer(path: Path) -> Path | None:
    try:
        with path.open("rb") as f:
            raw = f.read(_MAX_POINTER_BYTES + 1)
        if len(raw) > _MAX_POINTER_BYTES:
            return None
        name = raw.decode("utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    if not _STEP_DIR.match(name):
        return None
    return path.parent / name


def best_checkpoint_of(source: Path, loop: LoopState) -> Path | None:
    """The checkpoint that holds the best state of the run ``source`` was saved in, as it
    stood at ``source`` (``loop``): the end of epoch ``loop.best_epoch``, among
    ``source``'s siblings, never one saved after ``source``. None if it is not there."""
    if loop.best_epoch is None:
        return None
    for d in reversed(_step_dirs(source.parent)):
        try:
            meta = read_meta(d)
        except CheckpointError:
            continue
        if (
            meta.get("epoch") == loop.best_epoch
            and meta.get("batch") == 0
            and isinstance(meta.get("step"), int)
            and meta["step"] <= loop.step
            and (d / STATE_FILE).is_file()
        ):
            return d
    return None


def resolve_checkpoint(path: str | os.PathLike[str], prefer: str = "best") -> Path:
    """The step directory ``path`` names: a step directory, a ``latest``/``best`` pointer
    file, a ``checkpoints`` directory or a run directory (its ``prefer`` pointer, ``"best"``
    (for evaluating and predicting) or ``"latest"`` (for resuming), if it has one, else the
    other one, else its last step directory)."""
    if prefer not in ("best", "latest"):
        raise ValueError(f"prefer must be 'best' or 'latest', got {prefer!r}")
    try:
        return _resolve_checkpoint(Path(path), prefer)
    except OSError as err:  # a name too long, a loop of symlinks, a permission ...
        raise CheckpointError(f"{str(path)[:200]!r}: cannot read ({err.strerror or err})") from None


def _resolve_checkpoint(p: Path, prefer: str) -> Path:
    if not p.exists():
        raise CheckpointError(f"{str(p)!r}: no such checkpoint (file or directory)")
    if p.is_file():
        target = _read_pointer(p)
        if target is None:
            raise CheckpointError(
                f"{str(p)!r} is neither a checkpoint directory nor a pointer file naming one"
            )
        if not target.is_dir():
            raise CheckpointError(f"{str(p)!r} names {target.name}, which does not exist")
        return target
    if (p / META_FILE).exists() or (p / STATE_FILE).exists() or _STEP_DIR.match(p.name):
        return p  # a step directory (what it lacks, the load names)
    for directory in (p / "checkpoints", p):
        if not directory.is_dir():
            continue
        for name in (prefer, "latest" if prefer == "best" else "best"):
            pointer = directory / name
            if not pointer.exists() and not pointer.is_symlink():
                continue
            # A pointer is written atomically: one that names nothing was tampered with
            # or damaged, and is refused rather than silently read past.
            target = _read_pointer(pointer) if pointer.is_file() else None
            if target is None:
                raise CheckpointError(
                    f"{pointer}: not a pointer file naming a step directory (damaged?); "
                    "pass a step directory as the checkpoint"
                )
            if not target.is_dir():
                raise CheckpointError(f"{pointer} names {target.name}, which does not exist")
            return target
        steps = _step_dirs(directory)
        if steps:
            return steps[-1]
    raise CheckpointError(f"{str(p)!r} holds no checkpoint")


def read_meta(directory: Path) -> dict[str, Any]:
    """``meta.json`` of a step directory, checked for what a load needs."""
    path = directory / META_FILE
    if path.exists() and not path.is_file():  # a FIFO or a device would block or never end
        raise CheckpointError(f"{path}: not a regular file")
    try:
        with path.open("rb") as f:
            raw = f.read(_MAX_META_BYTES + 1)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing (incomplete checkpoint?)") from None
    except OSError as err:
        raise CheckpointError(f"{path}: not readable ({err.strerror or err})") from None
    if len(raw) > _MAX_META_BYTES:
        raise CheckpointError(f"{path}: larger than {_MAX_META_BYTES >> 20} MiB (not a meta.json)")
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: not readable JSON ({err})") from None
    except RecursionError:
        raise CheckpointError(f"{path}: not readable JSON (nested too deeply)") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    version = meta.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CheckpointError(f"{path}: no format_version (not a purestep checkpoint?)")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format version {version} is newer than this purestep reads "
            f"({FORMAT_VERSION}); upgrade purestep"
        )
    required = ("epoch", "batch", "step", "history", "best", "bad_epochs", "seconds")
    missing = [k for k in (*required, "finished", "stop_reason", "sha256") if k not in meta]
    if missing:
        raise CheckpointError(f"{path}: missing keys {missing}")
    problem = _meta_problem(meta)
    if problem:
        raise CheckpointError(f"{path}: {problem}")
    return meta


def _is_int(value: Any, low: int = 0, high: int = 2**63 - 1) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _meta_problem(meta: Mapping[str, Any]) -> str | None:
    """What is wrong with the types of ``meta``'s entries (a meta.json is data from
    anywhere: every value a load uses is checked before it is used), or None."""
    for key in ("epoch", "batch", "step", "bad_epochs"):
        if not _is_int(meta[key]):
            return f"{key!r} must be an integer in [0, 2**63), got {meta[key]!r:.80}"
    if not _is_number(meta["seconds"]):
        return f"'seconds' must be a number, got {meta['seconds']!r:.80}"
    if not isinstance(meta["finished"], bool):
        return f"'finished' must be true or false, got {meta['finished']!r:.80}"
    if meta["stop_reason"] is not None and not isinstance(meta["stop_reason"], str):
        return f"'stop_reason' must be a string or null, got {meta['stop_reason']!r:.80}"
    history = meta["history"]
    if not isinstance(history, list) or not all(isinstance(r, dict) for r in history):
        return "'history' must be a list of epoch records (objects)"
    for record in history:
        for key in ("epoch", "step"):
            if key in record and not _is_int(record[key]):
                return f"'history' record {str(record)[:80]}: {key} is not an integer >= 0"
    best = meta["best"]
    if not isinstance(best, dict) or not {"value", "epoch"} <= set(best):
        return "'best' must be an object with 'value' and 'epoch'"
    if best["value"] is not None and not _is_number(best["value"]):
        return f"'best.value' must be a number or null, got {best['value']!r:.80}"
    if best["epoch"] is not None and not _is_int(best["epoch"]):
        return f"'best.epoch' must be an integer or null, got {best['epoch']!r:.80}"
    sha = meta["sha256"]
    if not isinstance(sha, dict) or not all(
        isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v) for v in sha.values()
    ):
        return "'sha256' must map file names to hex sha256 digests"
    callbacks = meta.get("callbacks", [])
    if not isinstance(callbacks, list) or not all(isinstance(c, dict) for c in callbacks):
        return "'callbacks' must be a list of objects (the callbacks' state_dicts)"
    if "config" in meta and not isinstance(meta["config"], dict):
        return f"'config' must be an object, got {type(meta['config']).__name__}"
    return None


def read_verified_tensors(
    directory: Path, meta: dict[str, Any], keep: tuple[str, ...] | None = None
) -> tuple[dict[str, torch.Tensor], str]:
    """The tensors of ``directory``'s ``state.safetensors`` (those whose names start with
    one of ``keep``, or all), after checking the file against the sha256 its ``meta.json``
    (already read by ``read_meta``) records; returns them with that digest. Every problem
    is a ``CheckpointError`` naming the file."""
    state_path = directory / STATE_FILE
    if not state_path.is_file():
        raise CheckpointError(f"{state_path}: missing (incomplete checkpoint?)")
    expected = meta["sha256"].get(STATE_FILE) if isinstance(meta["sha256"], dict) else None
    if expected is None:
        raise CheckpointError(f"{directory / META_FILE}: no sha256 for {STATE_FILE}")
    try:
        actual = _sha256(state_path)
    except OSError as err:
        raise CheckpointError(f"{state_path}: not readable ({err.strerror or err})") from None
    if actual != expected:
        raise CheckpointError(
            f"{state_path}: checksum mismatch with meta.json (the file is corrupted, truncated "
            "or was modified)"
        )
    try:
        with safe_open(str(state_path), framework="pt", device="cpu") as f:
            names = [k for k in f.keys() if keep is None or k.startswith(keep)]  # noqa: SIM118
            tensors = {k: f.get_tensor(k) for k in names}
    except (SafetensorError, OSError, ValueError, TypeError, RuntimeError, MemoryError) as err:
        # safetensors checks the header (its length, offsets, dtypes) before any tensor
        raise CheckpointError(f"{state_path}: not a valid safetensors file ({err})") from None
    return tensors, actual


def load_checkpoint(path: str | os.PathLike[str], like: TrainState | TrainStep) -> Checkpoint:
    """Load and check the checkpoint ``path`` names (see ``resolve_checkpoint``) for the
    model and optimizer of ``like`` (a state, or the train step that will use it). A run or
    ``checkpoints`` directory means its ``latest`` checkpoint (what a resume continues from;
    name ``.../best`` for the best one)."""
    directory = resolve_checkpoint(path, prefer="latest")
    meta = read_meta(directory)
    tensors, _ = read_verified_tensors(directory, meta)
    state_path = directory / STATE_FILE
    state_tensors = {
        k: v for k, v in tensors.items() if k.startswith(_STATE_PREFIXES) or k in _STATE_KEYS
    }
    try:
        state = state_from_tensors(state_tensors, like)
    except (TypeError, ValueError, RuntimeError) as err:
        raise CheckpointError(
            f"{state_path}: does not fit this model and optimizer: {err}"
        ) from None
    for key in ("data/epoch", "data/batch"):
        if key not in tensors:
            raise CheckpointError(f"{state_path}: no {key!r} (not a training checkpoint?)")
    try:
        loop = LoopState.restore(meta, tensors)
    except (KeyError, TypeError, ValueError, RuntimeError, OverflowError) as err:
        if isinstance(err, CheckpointError):
            raise
        raise CheckpointError(f"{directory / META_FILE}: malformed ({err!r})") from None
    extra = {
        k: v
        for k, v in tensors.items()
        if k not in state_tensors and not k.startswith(("loop/", "data/epoch", "data/batch"))
    }
    return Checkpoint(state, loop, meta, extra, directory)
