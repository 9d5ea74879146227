"""What ``purestep train`` needs to run under torchrun: options, rank-0-only output, and
decisions every rank takes together.

The training loop itself is the single-process one (``purestep.train.fit``); a
distributed run differs only in what it is handed: the data-parallel step, rank-sharded
batches, a checkpointer that writes on rank 0 only, progress that prints on rank 0 only,
and a stop flag that every rank reads at the same step (``AgreedStop``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from purestep.train.distributed.context import DEFAULT_TIMEOUT, agree
from purestep.train.distributed.step import DEFAULT_CHECK_EVERY
from purestep.train.loggers import Progress

__all__ = ["AgreedStop", "DataParallelOptions", "QuietProgress"]


@dataclass(frozen=True)
class DataParallelOptions:
    """How ``purestep train`` runs data-parallel under torchrun.

    ``bucket_cap_mb``: DDP's gradient bucket cap (None: 25 MiB, first bucket 1 MiB);
    ``check_every``: steps between replica checks (None: never); ``timeout``: seconds a
    rank waits for the others (the process-group timeout); ``stop_every``: steps between
    the ranks' agreement on a stop request (SIGTERM/SIGINT), one tiny all-reduce each.
    """

    bucket_cap_mb: float | None = None
    check_every: int | None = DEFAULT_CHECK_EVERY
    timeout: float = DEFAULT_TIMEOUT
    stop_every: int = 10

    def __post_init__(self) -> None:
        if self.bucket_cap_mb is not None and not self.bucket_cap_mb > 0:
            raise ValueError(f"bucket_cap_mb must be > 0, got {self.bucket_cap_mb!r}")
        if self.check_every is not None and self.check_every < 0:
            raise ValueError(f"check_every must be >= 0, got {self.check_every!r}")
        if not self.timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {self.timeout!r}")
        if isinstance(self.stop_every, bool) or self.stop_every < 1:
            raise ValueError(f"stop_every must be an int >= 1, got {self.stop_every!r}")


class QuietProgress(Progress):
    """The progress of a rank other than 0: no bars, no messages."""

    def __init__(self, total_epochs: int) -> None:
        super().__init__(False, total_epochs=total_epochs)

    def write(self, msg: str) -> None:
        del msg


class AgreedStop:
    """``should_stop`` for ``fit`` on every rank: every ``every``-th call, the ranks
    all-reduce their local flag (a signal may reach one rank only), so they stop, save and
    raise at the same step; in between it answers False without communicating."""

    def __init__(self, local: Callable[[], bool] | None, every: int = 10) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be an int >= 1, got {every!r}")
        self.local, self.every = local, every
        self.calls = 0

    def __call__(self) -> bool:
        self.calls += 1
        if self.calls % self.every:
            return False
        flag = bool(self.local()) if self.local is not None else False
        return agree(flag, "agreeing whether to stop")
