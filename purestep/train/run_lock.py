"""One writer per run directory: an exclusive OS lock on ``OUT/.lock`` for a run's lifetime.

``purestep train``, ``sweep`` and ``tune`` hold it while they write ``OUT`` (under torchrun,
rank 0 does); a second writer is refused at once with ``RunDirectoryInUse`` naming the
directory and the process that holds it (the CLI exits 2). Readers (``evaluate``,
``predict``, TensorBoard) never take it.

The lock is ``fcntl.flock`` on the file: the kernel drops it when its holder dies, so a
``kill -9`` leaves no stale lock (the file may stay, with the dead holder's description;
the next writer takes the lock and rewrites it). The holder deletes the file when it is
done, so a finished run directory holds no trace of it; an acquirer checks that the file
it locked is still the one at the path, so a file deleted under it is never trusted.

A process may take the lock it already holds (``sweep`` inside ``tune``): the holds nest.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import inspect
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

__all__ = ["LOCK_FILE", "RunDirectoryInUse", "hold", "holder", "writer_gone", "writes_run"]

LOCK_FILE = ".lock"

P = ParamSpec("P")
R = TypeVar("R")


class RunDirectoryInUse(RuntimeError):
    """Another process writes this run directory; the message names it and the holder."""


@dataclass
class _Held:
    fd: int
    path: Path
    count: int


# Locks this process holds: the resolved run directory -> its open lock file.
_HELD: dict[str, _Held] = {}


def _key(out: Path) -> str:
    return os.path.realpath(out)


def _try_lock(path: Path, *, create: bool) -> int | None:
    """An fd holding ``flock(LOCK_EX)`` on the file at ``path``; None if another process
    holds it (or, without ``create``, if there is no file). A file unlinked or replaced
    between the open and the lock is not the lock any more: try again on the new one."""
    for _ in range(100):
        try:
            fd = os.open(path, (os.O_RDWR | os.O_CREAT) if create else os.O_RDONLY, 0o644)
        except FileNotFoundError:
            if create:
                raise
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return None
            raise
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # the previous holder deleted it as we locked it: the next one counts
        if not create and not path.exists():
            return None
    raise OSError(f"{path}: could not lock a stable lock file")  # pragma: no cover


def holder(out: str | os.PathLike[str]) -> dict[str, Any] | None:
    """What the lock file of ``out`` says about its holder (pid, host, command, since);
    None if it says nothing readable. Informational: the lock itself is the flock."""
    try:
        info = json.loads((Path(out) / LOCK_FILE).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return info if isinstance(info, dict) else None


def _describe(info: dict[str, Any] | None) -> str:
    if info is None:
        return "another process"
    where = f"pid {info.get('pid')} on {info.get('host')}"
    command = info.get("command")
    since = info.get("since")
    extra = ", ".join(x for x in (f"`{command}`" if command else "", f"since {since}") if x)
    return f"{where} ({extra})" if extra else where


def _command() -> str:
    """This process's command line, as a user would have typed it."""
    if Path(sys.argv[0]).name in ("purestep", "__main__.py"):  # the script, or python -m
        return " ".join(["purestep", *sys.argv[1:]])
    return " ".join([Path(sys.executable).name, *sys.argv])


@contextlib.contextmanager
def hold(out: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold the writer's lock on the run directory ``out`` (created if missing) for the
    ``with`` block; raises ``RunDirectoryInUse`` at once if another process holds it.

    The directories this call created (``out`` and missing parents) are removed again if
    the block leaves them empty (a run refused before it wrote anything leaves no trace)."""
    out = Path(out)
    key = _key(out)
    held = _HELD.get(key)
    if held is not None:  # this process holds it already: nest
        held.count += 1
        try:
            yield out
        finally:
            held.count -= 1
        return
    # The directories this call creates (OUT and missing parents), innermost first.
    created = [d for d in (out, *out.parents) if not d.exists()]
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_FILE
    fd = _try_lock(path, create=True)
    if fd is None:
        _remove_empty(created)
        raise RunDirectoryInUse(
            f"{out} is in use: {_describe(holder(out))} is writing it; wait for that run "
            "to end (or stop it), or use another --out"
        )
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": _command(),
        "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    data = (json.dumps(info) + "\n").encode()
    os.pwrite(fd, data, 0)
    os.ftruncate(fd, len(data))
    _HELD[key] = _Held(fd, path, 1)
    try:
        yield out
    finally:
        del _HELD[key]
        # Deleted while still locked: whoever opened the old file finds it unlinked
        # (``_try_lock``'s check) and takes the lock on a new one.
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        os.close(fd)
        _remove_empty(created)  # a run refused before it wrote anything leaves no trace


def _remove_empty(directories: list[Path]) -> None:
    """Remove ``directories`` (innermost first) while they are empty."""
    for d in directories:
        try:
            d.rmdir()
        except OSError:
            return


@contextlib.contextmanager
def writer_gone(out: str | os.PathLike[str]) -> Iterator[bool]:
    """Whether what a writer of ``out`` left behind (temp checkpoint directories) may be
    removed now: True while this process holds ``out``'s lock, or while no process does
    (then it is held for the block, so no writer starts meanwhile); False if another
    process writes ``out``."""
    out = Path(out)
    if _key(out) in _HELD:
        yield True
        return
    path = out / LOCK_FILE
    if not path.exists():
        yield True
        return
    fd = _try_lock(path, create=False)
    if fd is None:
        yield not path.exists()
        return
    try:
        yield True
    finally:
        os.close(fd)


def writes_run(
    out_arg: str = "out", *, when: Callable[[], bool] | None = None
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a function that writes the run directory passed as its argument
    ``out_arg``: it runs holding that directory's lock (``hold``). Nothing is locked when
    the argument is None, or when ``when()`` is false (torchrun's ranks other than 0)."""

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            out = signature.bind(*args, **kwargs).arguments.get(out_arg)
            if out is None or (when is not None and not when()):
                return fn(*args, **kwargs)
            with hold(out):
                return fn(*args, **kwargs)

        return wrapper

    return decorate
