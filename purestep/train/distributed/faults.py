"""A rank that dies or hangs stops the others with a message naming it, not a silent hang.

Three pieces work together:

* the process group's own timeout (``init_from_env(timeout=...)``): a collective that
  waits longer than that for a peer raises (gloo honours it; NCCL aborts);
* heartbeats: a daemon thread on every rank bumps its entry in the job's key-value store
  every ``interval`` seconds and watches everyone else's. A rank whose entry stops moving
  for ``heartbeat_timeout`` seconds has died or is frozen: the watcher prints a message
  naming it and ends its own process with exit code 1 (its main thread is usually stuck
  in a collective that would otherwise wait for the full timeout). A rank that fails with
  an exception leaves a note (``note_failure``) that the others quote;
* guards: the collectives of the data-parallel step, barriers and broadcasts run inside
  ``guard(what)``. A communication error raised there becomes a ``RankFailure`` whose
  message names the rank the heartbeats, notes and positions single out; every other
  exception passes through untouched.

Each entry also carries how many guarded sections the rank has entered, so a rank that is
alive but stuck in its own code (its heartbeat thread still beats) is named as the one
that has not reached the collective the others wait in.

Checkpoints need nothing from here: they are written atomically (a temp directory
renamed into place), so a process ended at any instant leaves the last one intact.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import IO, Any

__all__ = [
    "RankFailure",
    "Watchdog",
    "active_watchdog",
    "guard",
    "note_failure",
    "start_watchdog",
    "stop_watchdog",
]

_PREFIX = "purestep/fault/"
# Messages of collectives that failed because of a peer (gloo, NCCL, the store).
_COMM_ERROR = re.compile(
    r"gloo|nccl|connection (reset|closed|refused)|closed by peer|timed out waiting|"
    r"pair closure|broken pipe|ProcessGroup",
    re.IGNORECASE,
)


class RankFailure(RuntimeError):
    """Another rank died, froze or stopped taking part; ``ranks`` are the ones named."""

    def __init__(self, message: str, ranks: Sequence[int] = ()) -> None:
        super().__init__(message)
        self.ranks = tuple(ranks)


@dataclass
class _Seen:
    """The last value read from a rank's heartbeat entry, and when (local monotonic clock;
    comparing counters, never clocks of other machines)."""

    value: str
    since: float


class Watchdog:
    """Heartbeats in the job's store, a watch over the other ranks, and the guards.

    Args:
        store: the job's ``torch.distributed.Store`` (the default process group's); the
            watchdog talks to it over a connection of its own (``store.clone()``).
        rank, world_size: this process's place in the job.
        timeout: seconds a collective may wait for a peer (the process group's timeout).
        heartbeat_timeout: seconds without a heartbeat before a rank counts as dead.
        interval: seconds between heartbeats.
        exit: how to end the process when a peer is gone and this rank's main thread is
            stuck in a collective (``os._exit``; tests pass a recorder).
        stream: where the final message goes (``sys.stderr``).
    """

    def __init__(
        self,
        store: Any,
        rank: int,
        world_size: int,
        *,
        timeout: float,
        heartbeat_timeout: float,
        interval: float = 0.5,
        exit: Callable[[int], Any] = os._exit,
        stream: IO[str] | None = None,
    ) -> None:
        for name, value in (
            ("timeout", timeout),
            ("heartbeat_timeout", heartbeat_timeout),
            ("interval", interval),
        ):
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ValueError(f"{name} must be a number of seconds > 0, got {value!r}")
        if heartbeat_timeout < 2 * interval:
            raise ValueError(
                f"heartbeat_timeout ({heartbeat_timeout} s) must be at least twice the "
                f"heartbeat interval ({interval} s)"
            )
        self.rank, self.world_size = rank, world_size
        self.timeout, self.heartbeat_timeout, self.interval = timeout, heartbeat_timeout, interval
        self._store = store.clone()
        self._store.set_timeout(timedelta(seconds=max(5.0, heartbeat_timeout)))
        self._lock = threading.Lock()  # the store connection is the thread's and guards'
        self._exit = exit
        self._stream = stream
        self.beats = 0
        self.entered = 0  # guarded sections entered so far
        self.section: tuple[str, float] | None = None  # (what, since) while inside one
        self.failure: RankFailure | None = None
        self._failed_at: float | None = None
        self._seen: dict[int, _Seen] = {}
        self._store_down_since: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._leaving = False  # said goodbye: done, not dead

    # -- the store entries --------------------------------------------------------------
    def _key(self, kind: str, rank: int) -> str:
        return f"{_PREFIX}{kind}/{rank}"

    def _payload(self) -> str:
        inside = int(self.section is not None)
        return f"{self.beats} {self.entered} {inside} {int(self._leaving)}"

    def _publish(self) -> None:
        with self._lock:
            self._store.set(self._key("hb", self.rank), self._payload())

    def _observe(self) -> None:
        keys = [self._key("hb", r) for r in range(self.world_size)]
        with self._lock:
            present = [r for r in range(self.world_size) if self._store.check([keys[r]])]
            values = self._store.multi_get([keys[r] for r in present]) if present else []
        now = time.monotonic()
        for r, raw in zip(present, values, strict=True):
            value = raw.decode() if isinstance(raw, bytes) else str(raw)
            seen = self._seen.get(r)
            if seen is None or seen.value != value:
                self._seen[r] = _Seen(value, now)

    def _position(self, rank: int) -> tuple[int, bool] | None:
        """(guarded sections entered, inside one now) as ``rank`` last published them."""
        seen = self._seen.get(rank)
        if seen is None:
            return None
        _, entered, inside, _ = seen.value.split()
        return int(entered), inside == "1"

    def notes(self) -> dict[int, str]:
        """Failure notes other ranks left (``note_failure``)."""
        out = {}
        with self._lock:
            for r in range(self.world_size):
                key = self._key("exit", r)
                if r != self.rank and self._store.check([key]):
                    out[r] = self._store.get(key).decode(errors="replace")
        return out

    def note(self, message: str) -> None:
        """Leave a note for the other ranks: this rank is failing, and why."""
        with self._lock:
            self._store.set(self._key("exit", self.rank), message[:2000])

    def silent_ranks(self, after: float) -> list[int]:
        """Other ranks whose heartbeat has not moved for ``after`` seconds (or that never
        published one since this watchdog started)."""
        now = time.monotonic()
        started = self._started_at
        out = []
        for r in range(self.world_size):
            if r == self.rank:
                continue
            seen = self._seen.get(r)
            if seen is not None and seen.value.endswith(" 1"):
                continue  # it finished and said goodbye
            since = seen.since if seen is not None else started
            if now - since > after:
                out.append(r)
        return out

    # -- the thread ---------------------------------------------------------------------
    def start(self) -> Watchdog:
        """Publish the first heartbeat (so the entry exists) and start watching."""
        self._started_at = time.monotonic()
        self._publish()
        self._thread = threading.Thread(
            target=self._run, name=f"purestep-watchdog-rank{self.rank}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self, *, goodbye: bool = True) -> None:
        """Stop watching; ``goodbye``: tell the others this rank is done, not dead."""
        self._stop.set()
        if goodbye:
            self._leaving = True
            with contextlib.suppress(Exception):  # the store may be gone already
                self._publish()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5 * self.interval)
        self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.beats += 1
            now = time.monotonic()
            try:
                self._publish()
                self._observe()
                self._store_down_since = None
            except Exception as err:  # the store went away: its host (rank 0/launcher) did
                self._store_down_since = self._store_down_since or now
                if now - self._store_down_since > self.heartbeat_timeout:
                    self._fail(
                        RankFailure(
                            "rank 0 or the launcher stopped responding: the job's key-value "
                            "store they host (MASTER_ADDR:MASTER_PORT) has not answered for "
                            f"{now - self._store_down_since:.0f} s ({err})",
                            (0,),
                        )
                    )
                continue
            silent = self.silent_ranks(self.heartbeat_timeout)
            if silent:
                self._fail(
                    RankFailure(
                        _silent_message(silent, self.heartbeat_timeout) + self._where_am_i(now),
                        silent,
                    )
                )
                continue
            section = self.section
            if section is not None and now - section[1] > self.timeout + self.heartbeat_timeout:
                # The backend did not time out on its own (some NCCL setups): diagnose now.
                found = self.diagnose(section[0], None, wait=0.0)
                self._fail(
                    found
                    or RankFailure(
                        f"{section[0]} has waited {now - section[1]:.0f} s, past the "
                        f"{self.timeout:g} s timeout, while every rank is alive and in it"
                    )
                )

    def _where_am_i(self, now: float) -> str:
        section = self.section
        if section is None:
            return ""
        return f"; this rank was waiting in {section[0]} for {now - section[1]:.0f} s"

    def _fail(self, failure: RankFailure) -> None:
        """Record a failure; end the process if the main thread is stuck in a collective
        (or has not picked the failure up at its next guard within the timeout)."""
        now = time.monotonic()
        if self.failure is None:
            self.failure, self._failed_at = failure, now
        assert self._failed_at is not None
        if self.section is not None or now - self._failed_at > self.timeout:
            stream = self._stream if self._stream is not None else sys.stderr
            print(f"purestep: rank {self.rank}: {self.failure}; exiting", file=stream, flush=True)
            self._stop.set()
            self._exit(1)

    # -- diagnosis ------------------------------------------------------------------------
    def diagnose(
        self, what: str, error: BaseException | None, *, wait: float
    ) -> RankFailure | None:
        """Which rank made ``what`` fail: one that left a failure note, one whose heartbeat
        stopped (waiting up to ``wait`` seconds to see one stop), or one that has not
        reached the collective this rank is in; None when no rank can be blamed."""
        cause = f" ({_first_line(error)})" if error is not None else ""
        deadline = time.monotonic() + wait
        while True:
            try:
                notes = self.notes()
            except Exception:  # the store is gone too
                notes = {}
            if notes:
                ranks = sorted(notes)
                told = "; ".join(f"rank {r} failed: {notes[r]}" for r in ranks)
                return RankFailure(f"{what} failed because {told}{cause}", ranks)
            silent = self.silent_ranks(max(4 * self.interval, 1.0))
            if silent:
                return RankFailure(f"{what} failed: {_silent_message(silent, None)}{cause}", silent)
            if time.monotonic() >= deadline:
                break
            time.sleep(self.interval / 2)
        mine = self.entered
        behind = []
        for r in range(self.world_size):
            position = self._position(r)
            if r != self.rank and position is not None and position[0] < mine:
                behind.append(r)
        if behind:
            names = ", ".join(f"rank {r}" for r in behind)
            return RankFailure(
                f"{what} failed: {names} never reached it (alive, but stuck or slower than "
                f"the {self.timeout:g} s timeout in its own code){cause}",
                behind,
            )
        return None

    @contextmanager
    def guarded(self, what: str) -> Iterator[None]:
        if self.failure is not None:
            raise self.failure
        self.entered += 1
        self.section = (what, time.monotonic())
        try:
            yield
        except RankFailure:
            raise
        except Exception as err:
            if not _is_comm_error(err):
                raise
            found = self.diagnose(what, err, wait=self.heartbeat_timeout)
            if found is None:  # every rank alive and in step: nobody to name
                raise
            self.failure = self.failure or found  # later collectives cannot succeed either
            raise found from err
        finally:
            self.section = None


def _silent_message(ranks: Sequence[int], after: float | None) -> str:
    names = ", ".join(str(r) for r in ranks)
    which = f"rank {names}" if len(ranks) == 1 else f"ranks {names}"
    how_long = f" for {after:g} s" if after is not None else ""
    return (
        f"{which} stopped responding (no heartbeat{how_long}: the process died, was "
        "killed or is frozen)"
    )


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:300] if text else ''}"


def _is_comm_error(error: BaseException) -> bool:
    """A collective or the store failed (as opposed to the user's code raising)."""
    import torch.distributed as dist

    if isinstance(error, dist.DistError):
        return True
    return isinstance(error, RuntimeError) and bool(_COMM_ERROR.search(str(error)))


# -- the process's watchdog ---------------------------------------------------------------
_WATCHDOG: Watchdog | None = None


def start_watchdog(*, timeout: float, heartbeat_timeout: float, interval: float = 0.5) -> Watchdog:
    """Start heartbeats over the default process group's store (after
    ``init_process_group``); ``guard`` then diagnoses failures. Replaces a running one."""
    import torch.distributed as dist

    from purestep._compat import default_store

    global _WATCHDOG
    if not dist.is_initialized():
        raise RuntimeError("start_watchdog needs an initialized process group")
    stop_watchdog()
    _WATCHDOG = Watchdog(
        default_store(),
        dist.get_rank(),
        dist.get_world_size(),
        timeout=timeout,
        heartbeat_timeout=heartbeat_timeout,
        interval=interval,
    ).start()
    return _WATCHDOG


def stop_watchdog() -> None:
    global _WATCHDOG
    if _WATCHDOG is not None:
        _WATCHDOG.stop()
        _WATCHDOG = None


def active_watchdog() -> Watchdog | None:
    """The running watchdog, if any."""
    return _WATCHDOG


@contextmanager
def guard(what: str) -> Iterator[None]:
    """Run collectives: a communication failure becomes a ``RankFailure`` naming the rank
    to blame (without a watchdog, exceptions pass through unchanged)."""
    watchdog = _WATCHDOG
    if watchdog is None:
        yield
        return
    with watchdog.guarded(what):
        yield


def note_failure(error: BaseException) -> None:
    """Tell the other ranks this one is failing with ``error`` (best effort)."""
    watchdog = _WATCHDOG
    if watchdog is None or isinstance(error, RankFailure):
        return
    # The store may be gone too: then the others see this rank's heartbeat stop.
    with contextlib.suppress(Exception):
        watchdog.note(_first_line(error))
