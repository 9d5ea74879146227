"""Saving and loading a ``TrainState`` as flat tensors, without pickle.

A state is a pytree whose optimizer part holds optimizer-specific NamedTuples, so
``torch.save`` pickles those classes and ``torch.load(weights_only=True)`` refuses them
unless the user allowlists each one. Here the state is flattened to named tensors instead:

    params/<name>  buffers/<name>  opt_state/<path>  step  rng

where ``<path>`` is the optimizer state's pytree path, segments joined by ``/``
(NamedTuple fields by name, tuple/list items by index, dict entries by key), e.g.
``opt_state/exp_avg/0.weight`` for Adam or ``opt_state/1/hyperparams/lr`` inside a
``chain``. The file is safetensors (a JSON header and raw bytes); a load rebuilds the
containers from a template, ``like`` (a state or the step that will use it), so no
code or class name is ever read from the file, and it checks every key, shape and dtype
against the template before building anything.

``save_state`` writes atomically (temp file in the same directory, fsync, rename) and
records a SHA-256 of the tensor bytes in the header, which ``load_state`` verifies: a
truncated, garbled or bit-flipped file is a ``ValueError``, never a state with wrong values.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from purestep._compat import pytree as _pt
from purestep._io import fsync_dir
from purestep.core.rng import rng_key
from purestep.core.state import TrainState, check_not_donated
from purestep.core.step import TrainStep

__all__ = [
    "FORMAT_VERSION",
    "load_state",
    "read_state_metadata",
    "save_state",
    "state_from_tensors",
    "state_to_tensors",
]

FORMAT_VERSION = "1"
# Header metadata keys this module writes; a user's metadata may not use them.
_FORMAT_KEY = "purestep.format"
_DIGEST_KEY = "purestep.sha256"

# dtypes that safetensors stores (its own table is private); others get a clear error.
_STORABLE = {
    torch.float64,
    torch.float32,
    torch.float16,
    torch.bfloat16,
    torch.int64,
    torch.int32,
    torch.int16,
    torch.int8,
    torch.uint8,
    torch.bool,
    torch.complex64,
    *(
        getattr(torch, name)
        for name in ("uint16", "uint32", "uint64", "float8_e4m3fn", "float8_e5m2")
        if hasattr(torch, name)
    ),
}

_Spec = tuple[torch.Size, torch.dtype]


# -- naming ------------------------------------------------------------------------------
def _segment(entry: Any) -> str:
    if isinstance(entry, _pt.GetAttrKey):
        return entry.name
    if isinstance(entry, _pt.MappingKey):
        return str(entry.key)
    if isinstance(entry, _pt.SequenceKey):
        return str(entry.idx)
    return _pt.keystr((entry,)).strip(".[]'\"")


def _named_leaves(state: TrainState) -> list[tuple[str, Any]]:
    """``(flat key, leaf)`` for every leaf, in ``tree_flatten`` order of each field.

    Raises ``ValueError`` if two leaves get the same key (a dict key containing ``/``)."""
    named: list[tuple[str, Any]] = []
    named += [(f"params/{k}", v) for k, v in state.params.items()]
    named += [(f"buffers/{k}", v) for k, v in state.buffers.items()]
    for path, leaf in _pt.tree_flatten_with_path(state.opt_state)[0]:
        named.append(("/".join(["opt_state", *map(_segment, path)]), leaf))
    named += [("step", state.step), ("rng", state.rng)]
    seen: dict[str, int] = {}
    for i, (key, _) in enumerate(named):
        if key in seen:
            raise ValueError(
                f"two leaves of the state flatten to the same key {key!r} (a dict key that "
                "contains '/'?); rename it so that the state can be saved"
            )
        seen[key] = i
    return named


def _check_state(state: Any) -> None:
    if not isinstance(state, TrainState):
        raise TypeError(f"state must be a purestep.TrainState, got {type(state).__name__}")
    check_not_donated(state)
    for name in ("params", "buffers"):
        if not isinstance(getattr(state, name), Mapping):
            raise TypeError(
                f"state.{name} must be a dict of tensors, got {type(getattr(state, name)).__name__}"
            )


# -- state -> tensors ----------------------------------------------------------------------
def _flat(state: TrainState, *, copy: bool) -> dict[str, torch.Tensor]:
    """Contiguous CPU tensors, no two sharing memory; ``copy``: none sharing the state's."""
    _check_state(state)
    out: dict[str, torch.Tensor] = {}
    storages: set[int] = set()
    for key, leaf in _named_leaves(state):
        if not isinstance(leaf, torch.Tensor):
            raise TypeError(f"{key} must be a torch.Tensor, got {type(leaf).__name__}")
        if leaf.layout != torch.strided:
            raise ValueError(f"{key} is a {leaf.layout} tensor; only dense tensors can be saved")
        if leaf.dtype not in _STORABLE:
            raise ValueError(f"{key} has dtype {leaf.dtype}, which safetensors cannot store")
        t = leaf.detach().to("cpu")
        if t.numel() == 0:  # no bytes to share; safetensors stores the shape alone
            out[key] = torch.empty(t.shape, dtype=t.dtype)
            continue
        ptr = t.untyped_storage().data_ptr()
        # A view of a larger storage (e.g. one model of an unstacked state) shares memory
        # with its siblings as far as safetensors is concerned: it gets its own.
        partial = t.storage_offset() != 0 or t.untyped_storage().nbytes() != t.nbytes
        aliases = copy and ptr == leaf.untyped_storage().data_ptr()
        if ptr in storages or partial or aliases or not t.is_contiguous():
            t = t.clone(memory_format=torch.contiguous_format)
        storages.add(t.untyped_storage().data_ptr())
        out[key] = t
    return out


def state_to_tensors(state: TrainState) -> dict[str, torch.Tensor]:
    """The state as a flat ``{key: tensor}`` dict (keys in the module docstring).

    Every value is a contiguous CPU tensor with memory of its own: none shares storage
    with another (safetensors refuses that) or with the state (so a later in-place update
    of the state, e.g. a donated compiled step, cannot change what was taken)."""
    return _flat(state, copy=True)


# -- the template ----------------------------------------------------------------------------
def _template(like: TrainState | TrainStep) -> tuple[TrainState, dict[str, torch.device]]:
    """A state with ``like``'s structure whose leaves carry the expected shapes and dtypes
    (possibly on ``meta``), and the device each leaf is to be rebuilt on."""
    if isinstance(like, TrainState):
        _check_state(like)
        template = like
        devices = {k: v.device for k, v in _named_leaves(like) if isinstance(v, torch.Tensor)}
        return template, devices
    if isinstance(like, TrainStep):
        device = next(
            (p.device for p in like.model.parameters()),
            next((b.device for b in like.model.buffers()), torch.device("cpu")),
        )
        meta = {
            kind: {k: torch.empty(s, dtype=d, device="meta") for k, (s, d) in specs.items()}
            for kind, specs in (("params", like.spec.params), ("buffers", like.spec.buffers))
        }
        key = rng_key(0, device) if device.type in ("cpu", "cuda") else rng_key(0)
        template = TrainState(
            params=meta["params"],
            buffers=meta["buffers"],
            opt_state=like._reference_opt_state(),
            step=torch.empty((), dtype=torch.int64, device="meta"),
            rng=torch.empty(key.shape, dtype=key.dtype, device="meta"),
        )
        devices = {k: device for k, _ in _named_leaves(template)}
        devices["rng"] = key.device  # generator states live on the CPU
        return template, devices
    raise TypeError(
        "like must be a purestep.TrainState or the TrainStep that will use the state, got "
        f"{type(like).__name__}"
    )


def _expected(template: TrainState) -> dict[str, _Spec]:
    return {k: (v.shape, v.dtype) for k, v in _named_leaves(template)}


def _list(keys: Iterable[str], limit: int = 8) -> str:
    keys = sorted(keys)
    shown = ", ".join(repr(k) for k in keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def _validate(found: Mapping[str, _Spec], expected: Mapping[str, _Spec], where: str) -> None:
    """Raise ``ValueError`` naming every missing/unexpected key, or the first key whose
    shape or dtype differs."""
    missing = [k for k in expected if k not in found]
    extra = [k for k in found if k not in expected]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing keys {_list(missing)}")
        if extra:
            parts.append(f"unexpected keys {_list(extra)}")
        raise ValueError(
            f"{where} does not fit the target state: {'; '.join(parts)} "
            "(state built for another model/optimizer?)"
        )
    for key, (shape, dtype) in expected.items():
        got_shape, got_dtype = found[key]
        if got_shape != shape:
            raise ValueError(
                f"{where}: {key!r} has shape {tuple(got_shape)} but the target state expects "
                f"{tuple(shape)} (state built for another model/optimizer?)"
            )
        if got_dtype != dtype:
            raise ValueError(
                f"{where}: {key!r} has dtype {got_dtype} but the target state expects {dtype} "
                "(state built for another model/optimizer?)"
            )


def _build(
    template: TrainState, devices: Mapping[str, torch.device], tensors: Mapping[str, torch.Tensor]
) -> TrainState:
    """``template``'s structure with leaves from ``tensors`` (already validated)."""
    named = _named_leaves(template)
    leaves = {k: tensors[k].detach().to(devices[k]) for k, _ in named}
    opt_leaves = [leaves[k] for k, _ in named if k.startswith("opt_state/") or k == "opt_state"]
    return TrainState(
        params={k: leaves[f"params/{k}"] for k in template.params},
        buffers={k: leaves[f"buffers/{k}"] for k in template.buffers},
        opt_state=_pt.tree_unflatten(opt_leaves, _pt.tree_structure(template.opt_state)),
        step=leaves["step"],
        rng=leaves["rng"],
    )


def state_from_tensors(
    tensors: Mapping[str, torch.Tensor], like: TrainState | TrainStep
) -> TrainState:
    """The state ``state_to_tensors`` flattened, rebuilt with ``like``'s structure.

    ``like`` is a state of the same model and optimizer, or the ``TrainStep`` that will
    use it (its model spec and optimizer give the structure). The state is built on
    ``like``'s device (a step's: its model's), leaf by leaf like ``like``'s leaves.
    Everything is checked first: a missing or unexpected key, or a shape or dtype that
    differs from ``like``'s, is a ``ValueError`` naming the key. The result shares no
    memory with ``tensors``, which are never modified.
    """
    if not isinstance(tensors, Mapping):
        raise TypeError(f"tensors must be a mapping of str to tensor, got {type(tensors).__name__}")
    for key, value in tensors.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"tensors[{key!r}] must be a torch.Tensor, got {type(value).__name__}")
    template, devices = _template(like)
    _validate({k: (v.shape, v.dtype) for k, v in tensors.items()}, _expected(template), "tensors")
    state = _build(template, devices, tensors)
    # .to() returns the very tensor when it is already on the device: copy those, so that
    # an in-place update of the new state (donation) never writes into the caller's dict.
    inputs = {t.untyped_storage().data_ptr() for t in tensors.values() if t.numel()}
    return _pt.tree_map(
        lambda t: t.clone() if t.numel() and t.untyped_storage().data_ptr() in inputs else t,
        state,
    )


# -- files -------------------------------------------------------------------------------------
def _digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over the keys, dtypes, shapes and raw bytes of ``tensors`` in key order."""
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key]
        h.update(f"{key}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        if t.numel():
            h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().data)
    return h.hexdigest()


def _check_metadata(metadata: Any) -> dict[str, str]:
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise TypeError(f"metadata must be a dict of str to str, got {type(metadata).__name__}")
    for k, v in metadata.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError(
                f"metadata must map str to str, got {k!r}: {type(v).__name__} (serialize "
                "other values yourself, e.g. with json.dumps)"
            )
        if k in (_FORMAT_KEY, _DIGEST_KEY):
            raise ValueError(f"metadata key {k!r} is reserved by purestep")
    return dict(metadata)


def save_state(
    path: str | os.PathLike[str], state: TrainState, *, metadata: dict[str, str] | None = None
) -> None:
    """Write ``state`` to ``path`` as a safetensors file, atomically.

    The file is written under a temporary name in the same directory, fsynced and renamed
    over ``path``, so a crash at any instant leaves either the old file or the new one.
    ``metadata`` (str to str) is stored in the header; read it with ``read_state_metadata``.
    """
    extra = _check_metadata(metadata)
    tensors = _flat(state, copy=False)  # safetensors copies the bytes into the file
    header = {**extra, _FORMAT_KEY: FORMAT_VERSION, _DIGEST_KEY: _digest(tensors)}
    target = Path(path)
    if target.is_dir():
        raise ValueError(f"cannot save the state to {str(target)!r}: it is a directory")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=header)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)


def _open(path: str | os.PathLike[str]) -> Any:
    """``safe_open`` with the file's problems as ``ValueError`` naming the path."""
    if not os.path.exists(path):
        raise ValueError(f"cannot load a state from {str(path)!r}: no such file")
    if os.path.isdir(path):
        raise ValueError(f"cannot load a state from {str(path)!r}: it is a directory")
    try:
        return safe_open(path, framework="pt", device="cpu")
    except SafetensorError as err:
        raise ValueError(
            f"cannot load a state from {str(path)!r}: not a valid safetensors file "
            f"(truncated or corrupted?): {err}"
        ) from err


def read_state_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``metadata`` given to ``save_state`` (purestep's own header keys left out)."""
    with _open(path) as f:
        stored = f.metadata() or {}
    return {k: v for k, v in stored.items() if k not in (_FORMAT_KEY, _DIGEST_KEY)}


def load_state(path: str | os.PathLike[str], like: TrainState | TrainStep) -> TrainState:
    """The state saved at ``path``, rebuilt with ``like``'s structure and device.

    Checks, before building anything: the file exists and is a complete safetensors file,
    its format version is known, its keys, shapes and dtypes fit ``like`` (see
    ``state_from_tensors``), and its tensor bytes match the checksum ``save_state``
    recorded. Any failure is a ``ValueError`` naming ``path`` and the problem; the file is
    only read. No pickle is involved.
    """
    template, devices = _template(like)
    where = f"the state file {str(path)!r}"
    with _open(path) as f:
        stored = f.metadata() or {}
        version = stored.get(_FORMAT_KEY)
        if version is not None and version != FORMAT_VERSION:
            raise ValueError(
                f"{where} has format version {version!r}; this purestep reads {FORMAT_VERSION!r}"
            )
        try:
            found: dict[str, _Spec] = {}
            names: list[str] = f.keys()  # a safe_open handle is not a dict
            for key in names:
                piece = f.get_slice(key)
                found[key] = (torch.Size(piece.get_shape()), _dtype(piece.get_dtype(), key, where))
            _validate(found, _expected(template), where)
            tensors = {key: f.get_tensor(key) for key in found}
        except SafetensorError as err:
            raise ValueError(f"{where} cannot be read (truncated or corrupted?): {err}") from err
    digest = stored.get(_DIGEST_KEY)
    if digest is not None and digest != _digest(tensors):
        raise ValueError(
            f"{where} is corrupted: its tensor bytes do not match the checksum saved with them"
        )
    return _build(template, devices, tensors)


_SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "C64": torch.complex64,
    **{
        code: getattr(torch, name)
        for code, name in (
            ("U16", "uint16"),
            ("U32", "uint32"),
            ("U64", "uint64"),
            ("F8_E4M3", "float8_e4m3fn"),
            ("F8_E5M2", "float8_e5m2"),
        )
        if hasattr(torch, name)
    },
}


def _dtype(code: str, key: str, where: str) -> torch.dtype:
    try:
        return _SAFETENSORS_DTYPES[code]
    except KeyError:
        raise ValueError(
            f"{where}: {key!r} has dtype {code!r}, which purestep cannot load"
        ) from None
