"""Step times of the demo model (MLP 64-64-64-1 + dropout, BCEWithLogits + Adam, batch 64).

    .venv/bin/python benchmarks/demo_step_times.py
    TORCHINDUCTOR_FORCE_DISABLE_CACHES=1 .venv/bin/python benchmarks/demo_step_times.py  # cold

Imperative eager, functional eager and functional compiled, each timed in 500-step rounds
(median of 7), plus the first compiled call (compile included).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import nn

import purestep as ps
from purestep.data import make_sprites
from purestep.demo import sprite_mlp


def median_ms(fn: Callable[[], None], n: int = 500, rounds: int = 7) -> float:
    for _ in range(50):
        fn()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        times.append((time.perf_counter() - start) / n * 1e3)
    return sorted(times)[rounds // 2]


def main() -> None:
    x, y = make_sprites(64, seed=0)
    criterion = nn.BCEWithLogitsLoss()
    model, opt = sprite_mlp(), ps.optim.adam(lr=3e-3)
    eager = ps.make_train_step(model, criterion, opt)
    start = time.perf_counter()
    compiled = ps.compile(ps.make_train_step(model, criterion, opt))
    states = {"eager": ps.TrainState.create(model, opt, seed=0)}
    states["compiled"], _ = compiled(states["eager"], (x, y))
    first_call = time.perf_counter() - start

    def functional_eager() -> None:
        states["eager"], _ = eager(states["eager"], (x, y))

    def functional_compiled() -> None:
        states["compiled"], _ = compiled(states["compiled"], (x, y))

    reference = sprite_mlp()
    torch_opt = torch.optim.Adam(reference.parameters(), lr=3e-3)

    def imperative_eager() -> None:
        torch_opt.zero_grad()
        criterion(reference(x), y).backward()
        torch_opt.step()

    times = {
        "imperative eager": median_ms(imperative_eager),
        "functional eager": median_ms(functional_eager),
        "functional compiled": median_ms(functional_compiled),
    }
    for name, ms in times.items():
        print(f"{name}: {ms:.3f} ms/step")
    fast = times["functional compiled"]
    print(
        f"compiled vs functional eager: {times['functional eager'] / fast:.2f}x;"
        f" vs imperative eager: {times['imperative eager'] / fast:.2f}x"
    )
    print(f"first compiled call (compile included): {first_call:.1f} s")


if __name__ == "__main__":
    main()
