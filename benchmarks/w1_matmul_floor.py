"""W1's eight matmuls alone (forward, input grads, weight grads): the floor under any W1 step.

.venv/bin/python benchmarks/w1_matmul_floor.py
"""

from __future__ import annotations

import time

import torch


def main() -> None:
    x = torch.randn(64, 784)
    w1, w2, w3 = torch.randn(256, 784), torch.randn(256, 256), torch.randn(10, 256)
    h1, h2 = torch.randn(64, 256), torch.randn(64, 256)
    g1, g2, g3 = torch.randn(64, 256), torch.randn(64, 256), torch.randn(64, 10)

    def matmuls() -> None:
        x @ w1.t(), h1 @ w2.t(), h2 @ w3.t()  # forward
        g3 @ w3, g2 @ w2  # input grads (none for the data)
        g3.t() @ h2, g2.t() @ h1, g1.t() @ x  # weight grads

    for _ in range(200):
        matmuls()
    times = []
    for _ in range(11):
        start = time.perf_counter()
        for _ in range(200):
            matmuls()
        times.append((time.perf_counter() - start) / 200 * 1e3)
    print(f"W1 matmuls only: {sorted(times)[5]:.3f} ms/step, {torch.get_num_threads()} threads")


if __name__ == "__main__":
    main()
