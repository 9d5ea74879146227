"""Each variant in a process of its own (``purestep bench --isolate``).

In one process, variants share the allocator, inductor's caches, dynamo's state and the
OpenMP pool, and a variant built late runs in a process that already holds every earlier
one. ``Isolated`` starts a worker (``python -m purestep.bench.worker``) per variant,
which builds and warms up that variant alone and then times it when asked, so the
rounds stay interleaved across variants while each runs as a user's program would.
Workers wait on a pipe between their turns (no CPU used). They talk JSON lines over
stdin/stdout; their stderr is the parent's.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from typing import Any

import torch

from purestep.bench.timing import Prepared, Spec
from purestep.bench.variants import Unavailable

__all__ = ["Isolated", "WorkerFailed"]


class WorkerFailed(RuntimeError):
    """The worker process died or answered nonsense."""


class Isolated:
    """A variant built and timed in a worker process of its own."""

    def __init__(
        self,
        spec: Spec,
        device: torch.device,
        *,
        threads: int,
        retain_memory: bool,
        env: dict[str, str] | None = None,
    ) -> None:
        self.spec = spec
        command = [
            sys.executable,
            "-m",
            "purestep.bench.worker",
            "--threads",
            str(threads),
            "--device",
            str(device),
        ]
        if not retain_memory:
            command.append("--no-retain-memory")
        self._proc = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )

    def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        try:
            self._proc.stdin.write(json.dumps(request) + "\n")
            self._proc.stdin.flush()
        except BrokenPipeError as err:
            raise WorkerFailed(f"worker for {self.spec.variant!r} exited") from err
        line = self._proc.stdout.readline()
        if not line:
            code = self._proc.wait()
            raise WorkerFailed(f"worker for {self.spec.variant!r} exited with code {code}")
        answer: dict[str, Any] = json.loads(line)
        if "unavailable" in answer:
            raise Unavailable(answer["unavailable"])
        if "error" in answer:
            raise WorkerFailed(answer["error"])
        return answer

    def prepare(self) -> Prepared:
        return Prepared(**self._ask({"op": "prepare", "spec": self.spec.to_dict()})["prepared"])

    def time(self, steps: int) -> float:
        return float(self._ask({"op": "time", "steps": steps})["ms"])

    def reset_graphs(self) -> None:
        self._ask({"op": "reset_graphs"})

    def graphs(self) -> int:
        return int(self._ask({"op": "graphs"})["graphs"])

    def close(self) -> None:
        if self._proc.poll() is None:
            with contextlib.suppress(WorkerFailed, json.JSONDecodeError):
                self._ask({"op": "quit"})
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        for stream in (self._proc.stdin, self._proc.stdout):
            if stream is not None:
                stream.close()
