"""A compiled step's caches in one file, so that a new process (or machine) starts warm.

A compiled step's first call spends seconds to a minute in AOT autograd and inductor
(code generation, then one C++ compile per CPU kernel). torch keeps the results in
on-disk caches, which a second process on the same machine reuses (W2: 47 s cold, 6 s
warm on the 2-core benchmark VM). On a fresh machine (a resumed run on another host, a CI
job) those caches are empty. ``save_compile_cache(path)`` writes, as one zip file:

* ``artifacts.bin``: ``torch.compiler.save_cache_artifacts()``, the FX-graph and
  AOTAutograd cache entries of what this process compiled (or loaded);
* ``kernels/<dir>/<name>.so``: the compiled C++ kernel libraries this process has
  loaded from inductor's cache directory (read from ``/proc/self/maps``), and the small
  instruction-set probes inductor builds once per directory. torch's artifacts carry the
  kernels' C++ source but not the binaries, so without these a fresh machine would
  still run every C++ compile (W2: 15 of its 17 s);
* ``meta.json``: format, torch and Python versions, machine, sha256 of each member.

``load_compile_cache(path, into)``, called before the step's first call inside
``private_inductor_cache()`` (a fresh, private inductor cache directory for this run,
never the user's global one), puts the kernels there and hands the artifacts to
``torch.compiler.load_cache_artifacts``.
Kernel files are content-addressed (their name is a hash of source and compiler flags),
so a kernel built for another CPU is simply never looked up. Dynamo still traces the step
in the new process (W2: ~3.5 s); only what follows is served from the caches.

A file for another torch, Python or machine type, or whose bytes do not match their
sha256, is skipped with the reason (``CacheLoad``), never an error: a cache can only make
a compile faster. The contents are native code and pickles: ``meta.json`` is signed with
this user's key (``purestep._trust``), and a cache whose signature does not verify (made
by someone else, or edited) is skipped unless ``trust_code``. Writes are atomic (temp
file, fsync, rename).
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import io
import json
import os
import platform
import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from purestep._compat import temporary_inductor_cache_dir
from purestep._io import write_atomic
from purestep._trust import sign_json, signature_status

__all__ = [
    "CacheLoad",
    "inductor_cache_dir",
    "load_compile_cache",
    "private_inductor_cache",
    "save_compile_cache",
]

FORMAT = 1
_MAX_META_BYTES = 1 << 20
_ARTIFACTS = "artifacts.bin"
_META = "meta.json"
_KERNELS = "kernels/"


def inductor_cache_dir() -> Path:
    """Where inductor keeps its on-disk caches: ``TORCHINDUCTOR_CACHE_DIR``, or torch's
    default, ``<tempdir>/torchinductor_<user>`` (torch's own rule, restated here to keep
    to torch's public API)."""
    configured = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if configured:
        return Path(configured)
    try:
        user = getpass.getuser()
    except (KeyError, ModuleNotFoundError, OSError):
        getuid = getattr(os, "getuid", None)
        user = f"uid_{getuid()}" if callable(getuid) else "unknown_user"
    return Path(tempfile.gettempdir(), "torchinductor_" + re.sub(r'[\\/:*?"<>|]', "_", user))


def _kernel_files(root: Path) -> list[Path]:
    """The kernel libraries under ``root`` that this process has mapped (Linux), and the
    small instruction-set probe libraries inductor builds once per cache directory (and
    loads in a subprocess, so they are never mapped here): every ``<dir>/<name>.so``
    that is not a kernel's ``.main.so``."""
    root = root.resolve()
    found: dict[str, Path] = {}
    try:
        with open("/proc/self/maps") as f:
            lines = f.read().splitlines()
    except OSError:
        lines = []
    for line in lines:
        parts = line.split(maxsplit=5)
        if len(parts) < 6 or not parts[5].endswith(".so"):
            continue
        path = Path(parts[5])
        if path.parent.parent == root and path.is_file():
            found[str(path)] = path
    if found:  # probes only next to kernels of this process (a directory in use)
        for probe in root.glob("*/*.so"):
            if not probe.name.endswith(".main.so"):
                found[str(probe)] = probe
    return sorted(found.values())


def _versions() -> dict[str, str]:
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data)


def save_compile_cache(path: str | os.PathLike[str]) -> int:
    """Write this process's compile caches to ``path`` (one zip file); returns its size
    in bytes, or 0 (nothing written) when nothing has been compiled yet."""
    saved = torch.compiler.save_cache_artifacts()
    artifacts = saved[0] if saved is not None else b""
    root = inductor_cache_dir()
    kernels = _kernel_files(root)
    if not artifacts and not kernels:
        return 0
    members: dict[str, bytes] = {_ARTIFACTS: artifacts}
    for kernel in kernels:
        members[_KERNELS + kernel.relative_to(root.resolve()).as_posix()] = kernel.read_bytes()
    meta: dict[str, object] = {
        "format": FORMAT,
        **_versions(),
        "sha256": {name: hashlib.sha256(data).hexdigest() for name, data in members.items()},
    }
    with contextlib.suppress(OSError):  # no key to be had: saved unsigned (never loaded)
        meta = sign_json(meta)
    buffer = io.BytesIO()
    # Stored, not deflated: kernels and artifacts barely compress and this is on the
    # path of every checkpoint that carries them.
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr(_META, json.dumps(meta, indent=1))
        for name, data in members.items():
            archive.writestr(name, data)
    data = buffer.getvalue()
    _write_atomic(Path(path), data)
    return len(data)


@dataclass(frozen=True)
class CacheLoad:
    """What ``load_compile_cache`` did: ``loaded`` (also the truth value) when torch took
    the artifacts; ``kernels``: kernel libraries put into inductor's cache directory;
    otherwise ``reason`` says why the file was skipped."""

    loaded: bool
    kernels: int = 0
    reason: str = ""

    def __bool__(self) -> bool:
        return self.loaded


@contextlib.contextmanager
def private_inductor_cache() -> Iterator[Path]:
    """Within this block inductor reads and writes its caches in a fresh directory of its
    own (mode 0700, removed afterwards) instead of the user's global one, so that a run's
    compile cache, loaded into it, never touches what other runs and projects compile."""
    directory = Path(tempfile.mkdtemp(prefix="purestep-inductor-"))
    previous = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    scope = temporary_inductor_cache_dir(str(directory))
    try:
        if scope is not None:
            with scope:
                yield directory
        else:  # pragma: no cover
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(directory)
            yield directory
    finally:
        if previous is None:
            os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
        else:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = previous
        shutil.rmtree(directory, ignore_errors=True)


def load_compile_cache(
    path: str | os.PathLike[str], into: str | os.PathLike[str], *, trust_code: bool = False
) -> CacheLoad:
    """Put the caches saved at ``path`` into the inductor cache directory ``into`` (the
    one ``private_inductor_cache()`` made, which must be in effect) and hand the artifacts
    to torch; call it before the step's first call. A missing, foreign (not signed by
    this user, unless ``trust_code``), corrupted or unreadable file is skipped with the
    reason (the compile then runs as it would have)."""
    source = Path(path)
    root = Path(into)
    if root.resolve() != inductor_cache_dir().resolve():
        raise ValueError(
            f"load_compile_cache: {root} is not inductor's cache directory now "
            f"({inductor_cache_dir()}); call it inside private_inductor_cache()"
        )
    try:
        with zipfile.ZipFile(source) as archive:
            if archive.getinfo(_META).file_size > _MAX_META_BYTES:
                return CacheLoad(False, reason=f"compile cache at {source}: meta.json too large")
            meta = json.loads(archive.read(_META))
            status = "ok" if trust_code else signature_status(meta)
            if status != "ok":
                return CacheLoad(
                    False,
                    reason=f"compile cache at {source} is not this user's ({status}); "
                    "it holds native code and pickles, so it is not loaded (--trust-code "
                    "loads it)",
                )
            digests = meta.get("sha256") if isinstance(meta, dict) else None
            names = [name for name in archive.namelist() if name != _META]
            if not isinstance(digests, dict) or set(digests) != set(names):
                return CacheLoad(False, reason=f"compile cache at {source} lists other members")
            members = {name: archive.read(name) for name in names}
    except FileNotFoundError:
        return CacheLoad(False, reason=f"no compile cache at {source}")
    except (OSError, KeyError, ValueError, RecursionError, zipfile.BadZipFile) as err:
        return CacheLoad(False, reason=f"unreadable compile cache at {source}: {err}")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        return CacheLoad(False, reason=f"compile cache format {found!r} is not {FORMAT}")
    for key, value in _versions().items():
        if meta.get(key) != value:
            return CacheLoad(
                False, reason=f"compile cache made with {key} {meta.get(key)}, this is {value}"
            )
    for name, data in members.items():
        if digests[name] != hashlib.sha256(data).hexdigest():
            return CacheLoad(False, reason=f"compile cache member {name} fails its sha256")
    placed = 0
    for name, data in members.items():
        if not name.startswith(_KERNELS):
            continue
        relative = Path(name[len(_KERNELS) :])
        if relative.is_absolute() or ".." in relative.parts or len(relative.parts) != 2:
            return CacheLoad(False, reason=f"compile cache member {name} has an unsafe path")
        if not relative.name.endswith(".so"):
            return CacheLoad(False, reason=f"compile cache member {name} is not a kernel")
        target = root / relative
        if not target.exists():  # content-addressed: an existing file is the same kernel
            _write_atomic(target, data)
            target.chmod(0o755)
            placed += 1
    artifacts = members.get(_ARTIFACTS, b"")
    if artifacts:
        try:
            info = torch.compiler.load_cache_artifacts(artifacts)
        except Exception as err:  # torch's own format check: a cache never fails a run
            return CacheLoad(
                False, placed, f"torch rejected the compile cache: {type(err).__name__}: {err}"
            )
        if info is None:  # torch logs why and returns None for bytes it cannot read
            return CacheLoad(False, placed, "torch rejected the compile cache artifacts")
    return CacheLoad(True, placed)
