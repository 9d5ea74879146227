"""Run a function on N CPU processes joined in a gloo process group, from a test.

``spawn(fn, world, out_dir, *args)`` starts ``world`` fresh interpreters (``spawn``, so
nothing of pytest's process leaks in), each with one torch thread, joins them in a gloo
group on a free port and calls ``fn(rank, world, out_dir, *args)``; ``fn`` (a module-level
function, importable by the children) writes what the test checks into ``out_dir``
(``write_result``). A child that raises fails the test with its traceback; a job that
runs past ``timeout`` seconds is killed and fails.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[3]
PYTHON = sys.executable
STORE_TIMEOUT_S = 180


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _child(rank: int, fn: Callable[..., Any], world: int, port: int, out: str, args: tuple) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world)
    )
    # A file store, not a TCP port picked in advance (another process may take it), and a
    # generous timeout: a CI machine shared with other jobs can stall a rank for a while.
    dist.init_process_group(
        "gloo",
        init_method=f"file://{out}/.store",
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=STORE_TIMEOUT_S),
    )
    try:
        fn(rank, world, Path(out), *args)
    finally:
        dist.destroy_process_group()
    # The work is done and written: leave without the interpreter's teardown, where the
    # C++ destructors of gloo's threads once aborted a rank on a loaded CI machine
    # ("terminate called without an active exception", SIGABRT).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def spawn(
    fn: Callable[..., Any], world: int, out: Path, *args: Any, timeout: float = 300.0
) -> None:
    """Run ``fn(rank, world, out, *args)`` on ``world`` gloo ranks; raise if any fails."""
    import torch.multiprocessing as mp

    out.mkdir(parents=True, exist_ok=True)
    ctx = mp.start_processes(
        _child,
        args=(fn, world, free_port(), str(out), args),
        nprocs=world,
        join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + timeout
    while True:
        try:
            if ctx.join(timeout=1.0):
                break
        except Exception as err:  # a rank failed: its last traceback line in the summary
            lines = [ln for ln in str(err).strip().splitlines() if ln.strip()]
            pytest.fail(f"{lines[-1] if lines else type(err).__name__} ({err})")
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"the {world}-rank job did not finish within {timeout} s")


def write_result(out: Path, name: str, rank: int, value: Any) -> None:
    (out / f"{name}-{rank}.json").write_text(json.dumps(value))


def read_results(out: Path, name: str, world: int) -> list[Any]:
    return [json.loads((out / f"{name}-{r}.json").read_text()) for r in range(world)]


def launch_env(rank: int, world: int, port: int) -> dict[str, str]:
    """The environment torchrun gives rank ``rank`` (for jobs launched by hand)."""
    return dict(
        os.environ,
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        OMP_NUM_THREADS="1",
        PYTHONPATH=str(REPO),
    )


def torchrun(
    world: int, argv: Sequence[str], *, cwd: Path, timeout: float = 180.0
) -> subprocess.CompletedProcess[str]:
    """``torchrun --nproc-per-node world -m purestep argv...`` (one thread per rank)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    cmd = [
        PYTHON,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        str(world),
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(free_port()),
        "-m",
        "purestep",
        *argv,
    ]
    return subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def purestep(
    argv: Sequence[str], *, cwd: Path, timeout: float = 180.0
) -> subprocess.CompletedProcess[str]:
    """``python -m purestep argv...`` as a single process."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return subprocess.run(
        [PYTHON, "-m", "purestep", *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
