"""What the eager pure step costs on top of the imperative loop, piece by piece.

    .venv/bin/python benchmarks/profile_eager.py W1 [threads]

Times, interleaved (median of rounds): the imperative loop (``zero_grad``, forward, loss,
``backward``, ``Adam.step``), the pure step, and the pure step with one piece of its
per-call Python swapped for a no-op at a time (the mirror sync, the batch check, the RNG
bracket ...): the difference is what that piece costs. The no-op versions are not
correct steps (a skipped RNG bracket draws from the global generator); they exist only
to be timed here.
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch

import purestep as ps
from purestep.bench.workloads import WORKLOADS
from purestep.core import step as step_module
from purestep.core.allocator import retain_freed_cpu_memory


@contextlib.contextmanager
def _no_rng(key: torch.Tensor, device: Any = "cpu") -> Iterator[Any]:
    class Scope:
        pass

    scope = Scope()
    scope.key = key  # type: ignore[attr-defined]
    yield scope


def main() -> None:
    name = sys.argv[1] if len(sys.argv) > 1 else "W1"
    torch.set_num_threads(int(sys.argv[2]) if len(sys.argv) > 2 else 2)
    retain_freed_cpu_memory()
    workload = WORKLOADS[name]
    x, y = workload.batch(torch.device("cpu"))

    model = workload.build()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def imperative() -> None:
        opt.zero_grad(set_to_none=True)
        workload.criterion(model(x), y).backward()
        opt.step()

    def pure_variant(patch: Callable[[Any], contextlib.AbstractContextManager[Any]]) -> Any:
        m = workload.build()
        o = ps.optim.adam(lr=1e-3)
        train_step = ps.make_train_step(m, workload.criterion, o)
        holder = [ps.TrainState.create(m, o)]

        def run() -> None:
            with patch(train_step):
                for _ in range(STEPS):
                    holder[0], _ = train_step(holder[0], (x, y))

        return run

    @contextlib.contextmanager
    def nothing(s: Any) -> Iterator[None]:
        yield

    @contextlib.contextmanager
    def no_sync(s: Any) -> Iterator[None]:
        real = s._mirror.sync
        s._mirror.sync = lambda: None
        yield
        s._mirror.sync = real

    @contextlib.contextmanager
    def no_check(s: Any) -> Iterator[None]:
        real = s.check_batch
        s.check_batch = lambda batch, state: None
        yield
        s.check_batch = real

    @contextlib.contextmanager
    def no_rng(s: Any) -> Iterator[None]:
        real = step_module.rng_scope
        step_module.rng_scope = _no_rng  # type: ignore[assignment]
        yield
        step_module.rng_scope = real

    def imperative_run() -> None:
        for _ in range(STEPS):
            imperative()

    runs = {
        "imperative eager": imperative_run,
        "pure step": pure_variant(nothing),
        "  without mirror sync": pure_variant(no_sync),
        "  without batch check": pure_variant(no_check),
        "  without RNG bracket": pure_variant(no_rng),
    }
    for run in runs.values():
        run()
    samples: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(ROUNDS):
        for k, run in runs.items():
            start = time.perf_counter()
            run()
            samples[k].append((time.perf_counter() - start) / STEPS * 1e3)
    base = statistics.median(samples["pure step"])
    imp = statistics.median(samples["imperative eager"])
    print(f"{name}, {torch.get_num_threads()} threads, median of {ROUNDS} rounds x {STEPS}")
    for k, values in samples.items():
        ms = statistics.median(values)
        extra = f"  (piece costs {1e3 * (base - ms):+.1f} us)" if k.startswith("  ") else ""
        print(f"{k:<26}{ms:8.3f} ms/step  {imp / ms:5.2f}x imperative{extra}")


STEPS, ROUNDS = 100, 15

if __name__ == "__main__":
    main()
