"""The trust boundary: which files in a run directory this user wrote, and whether a config
read from one may import code.

A run directory is data. Anyone can hand one over (a download, a shared disk, a colleague's
tarball), and its ``meta.json`` holds a config whose ``"package.module:function"`` names
would import and call code if rebuilt as written. purestep therefore signs what it writes
(each checkpoint's ``meta.json``, ``compile_cache.zip``) with an HMAC-SHA256 key of this
user's, created on first use at ``$XDG_CONFIG_HOME/purestep/key`` (``~/.config/...``
without it), mode 0600. A file whose signature verifies was written by this user's
purestep on a machine holding this key: trusted. Anything else (unsigned, signed with
another key, edited after signing) is *foreign*: its config builds built-in names only and
its compile cache is not loaded, unless the user opts in (``--trust-code``,
``trust_code=True``).

The signature covers a canonical serialisation of the JSON object (sorted keys, no
whitespace), so it survives a round trip through ``json`` and is independent of how the
file was indented; it is stored in the object itself under ``"signature"``.

This module imports nothing heavy (no torch): the CLI and ``purestep.core`` both use it.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "SIGNATURE_KEY",
    "UntrustedCodeError",
    "code_allowed",
    "import_allowed",
    "key_path",
    "sign_json",
    "signature_status",
    "verify_json",
]

SIGNATURE_KEY = "signature"
_ALGORITHM = "hmac-sha256"
_KEY_BYTES = 32


class UntrustedCodeError(ValueError):
    """A config from a foreign run directory names code to import (``module:function``);
    refused before the import. The message names the module and how to opt in."""


def key_path() -> Path:
    """Where this user's signing key lives: ``$XDG_CONFIG_HOME/purestep/key``, or
    ``~/.config/purestep/key``."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "purestep" / "key"


def _read_key(path: Path) -> bytes | None:
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    try:
        key = bytes.fromhex(text)
    except ValueError:
        return None
    return key if len(key) == _KEY_BYTES else None


def _key(create: bool) -> bytes | None:
    """This user's key; created (0600, never replaced) when ``create`` and missing."""
    path = key_path()
    key = _read_key(path)
    if key is not None or not create:
        return key
    if path.exists():  # a key file we cannot read: never overwrite what the user has
        raise OSError(
            f"{path}: the purestep signing key is unreadable or malformed (expected "
            f"{2 * _KEY_BYTES} hex digits); fix or remove it"
        )
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fresh = secrets.token_bytes(_KEY_BYTES)
    try:  # O_EXCL: two processes creating it at once keep one key (the loser reads it)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = _read_key(path)
        if key is None:
            raise OSError(f"{path}: the purestep signing key is malformed") from None
        return key
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(fresh.hex() + "\n")
        f.flush()
        os.fsync(f.fileno())
    return fresh


def _key_id(key: bytes) -> str:
    return hashlib.sha256(b"purestep key id\0" + key).hexdigest()[:16]


def _canonical(obj: Mapping[str, Any]) -> bytes:
    body = {k: v for k, v in obj.items() if k != SIGNATURE_KEY}
    return json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=True
    ).encode("ascii")


def _mac(key: bytes, obj: Mapping[str, Any]) -> str:
    return hmac.new(key, _canonical(obj), hashlib.sha256).hexdigest()


def sign_json(obj: Mapping[str, Any]) -> dict[str, Any]:
    """``obj`` with a ``"signature"`` entry: this user's MAC over its other entries (the key
    is created on first use)."""
    key = _key(create=True)
    assert key is not None
    body = {k: v for k, v in obj.items() if k != SIGNATURE_KEY}
    return {
        **body,
        SIGNATURE_KEY: {"alg": _ALGORITHM, "key_id": _key_id(key), "mac": _mac(key, body)},
    }


def signature_status(obj: Any) -> str:
    """``"ok"`` when ``obj`` carries this user's valid signature; otherwise why it is
    foreign: ``"unsigned"``, ``"signed with another key"``, ``"signature does not match
    (edited after signing)"`` or ``"malformed signature"``."""
    if not isinstance(obj, Mapping) or SIGNATURE_KEY not in obj:
        return "unsigned"
    sig = obj[SIGNATURE_KEY]
    if not (
        isinstance(sig, Mapping)
        and sig.get("alg") == _ALGORITHM
        and isinstance(sig.get("mac"), str)
        and isinstance(sig.get("key_id"), str)
    ):
        return "malformed signature"
    key = _key(create=False)
    if key is None:
        return "signed with another key"  # this user has no key: nothing of theirs is signed
    if not hmac.compare_digest(sig["key_id"], _key_id(key)):
        return "signed with another key"
    try:
        expected = _mac(key, obj)
    except (TypeError, ValueError):  # not JSON-able: cannot be what we signed
        return "malformed signature"
    if not hmac.compare_digest(sig["mac"], expected):
        return "signature does not match (edited after signing)"
    return "ok"


def verify_json(obj: Any) -> bool:
    """Whether ``obj`` carries this user's valid signature."""
    return signature_status(obj) == "ok"


# -- the import policy -------------------------------------------------------------------

# None: imports allowed (a config the user wrote); else the reason they are not.
_REFUSAL: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "purestep_import_refusal", default=None
)


@contextlib.contextmanager
def code_allowed(allowed: bool, source: str = "") -> Iterator[None]:
    """Within this block, ``import_allowed`` refuses ``module:function`` names unless
    ``allowed``; ``source`` (the foreign file and why it is foreign) goes in the message."""
    token = _REFUSAL.set(None if allowed else (source or "an untrusted source"))
    try:
        yield
    finally:
        _REFUSAL.reset(token)


def import_allowed(spec: str, section: str) -> None:
    """Raise ``UntrustedCodeError`` if ``spec`` (``"package.module:function"``, named by
    the config's ``section``) may not be imported here; called before any import."""
    refusal = _REFUSAL.get()
    if refusal is None:
        return
    module = spec.partition(":")[0]
    raise UntrustedCodeError(
        f"{section}.name: {spec!r} would import module {module!r}, code named by {refusal}; "
        "refused (a run directory from elsewhere is data). If you trust its author, "
        "pass --trust-code (Python: trust_code=True)"
    )
