"""What the ranks of the spawned test jobs run (module-level, so the children import it).

Each worker writes JSON results with ``write_result``; the tests read and check them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from tests.train.distributed._spawn import write_result

STEPS = 200
GLOBAL_BATCH = 16


def bn_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 3))


def dropout_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 3))


def plain_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 3))


def big_net() -> nn.Module:
    """2.7 MiB of gradients: two rebuilt DDP buckets (the first capped at 1 MiB)."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(64, 600), nn.Tanh(), nn.Linear(600, 600), nn.Tanh(), nn.Linear(600, 500),
        nn.Tanh(), nn.Linear(500, 3),
    )  # fmt: skip


def global_batches(n: int = 10, features: int = 8) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [
        (
            torch.randn(GLOBAL_BATCH, features, generator=g),
            torch.randint(0, 3, (GLOBAL_BATCH,), generator=g),
        )
        for _ in range(n)
    ]


def adam(params: Any) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=1e-2, foreach=False)


def sgd_momentum(params: Any) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=0.05, momentum=0.9, foreach=False)


PARITY_CASES = {
    "batchnorm-adam": (bn_net, adam, "shared"),
    "batchnorm-sgd_momentum": (bn_net, sgd_momentum, "shared"),
    "dropout-adam": (dropout_net, adam, "shared"),
    "dropout-sgd_momentum": (dropout_net, sgd_momentum, "shared"),
    "dropout-adam-per_rank_rng": (dropout_net, adam, "per_rank"),
}


def _report(report: Any) -> dict[str, Any]:
    return {
        "ok": report.ok,
        "summary": report.summary(),
        "steps": report.steps,
        "counts": report.compared_counts(),
        "info": {k: v for k, v in report.info.items() if isinstance(v, str | int | float)},
    }


def suite(rank: int, world: int, out: Path) -> None:
    """Everything the in-process 2-rank tests check, in one job (startup is the cost)."""
    import purestep as ps
    from purestep import distributed

    results: dict[str, Any] = {}
    for name, (factory, opt, rng) in PARITY_CASES.items():
        report = ps.parity.compare_ddp(
            factory, nn.CrossEntropyLoss(), opt, global_batches(), steps=STEPS, rng=rng
        )
        results[name] = _report(report)
    results["layout"] = _layout_vs_ddp(rank)
    results["one_vs_two"] = _one_vs_two(rank, world)
    results["drift"] = _drift(rank)
    results["errors"] = _errors()
    del distributed
    write_result(out, "suite", rank, results)


def _layout_vs_ddp(rank: int) -> dict[str, Any]:
    """DDP's buckets after its rebuild (its logging data) vs ours, for a 2.7 MiB model."""
    import purestep as ps
    from purestep import distributed

    torch.manual_seed(rank)
    ddp = nn.parallel.DistributedDataParallel(big_net())
    for _ in range(10):  # DDP records its runtime stats at iteration 10
        ddp(torch.randn(4, 64)).sum().backward()
    data = ddp._get_ddp_logging_data()
    model = big_net()
    opt = ps.optim.sgd(lr=0.1)
    step = distributed.data_parallel(ps.make_train_step(model, nn.CrossEntropyLoss(), opt))
    state = ps.TrainState.create(model, opt)
    state, _ = step(state, (torch.randn(4, 64), torch.randint(0, 3, (4,))))
    assert step.layout is not None and step.first_layout is not None
    index = {k: i for i, k in enumerate(step._trainable)}
    return {
        "ddp_indices": data["rebuilt_per_bucket_param_indices"],
        "ddp_sizes": data["rebuilt_bucket_sizes"],
        "ddp_first_sizes": data["bucket_sizes"],
        "ours_indices": ", ".join(" ".join(str(index[k]) for k in b) for b in step.layout.buckets),
        "ours_sizes": ", ".join(str(n) for n in step.layout.nbytes),
        "ours_first_sizes": ", ".join(str(n) for n in step.first_layout.nbytes),
    }


def _one_vs_two(rank: int, world: int) -> dict[str, Any]:
    """The data-parallel trajectory vs one process on the whole global batches."""
    import purestep as ps
    from purestep import distributed

    batches = global_batches()
    opt = ps.optim.adam(lr=1e-2)
    dp = distributed.data_parallel(ps.make_train_step(plain_net(), nn.CrossEntropyLoss(), opt))
    one = ps.make_train_step(plain_net(), nn.CrossEntropyLoss(), opt)
    dp_state = one_state = ps.TrainState.create(plain_net(), opt)
    loss_diff = 0.0
    for t in range(STEPS):
        x, y = batches[t % len(batches)]
        dp_state, dp_m = dp(dp_state, (x.tensor_split(world)[rank], y.tensor_split(world)[rank]))
        one_state, one_m = one(one_state, (x, y))
        loss_diff = max(loss_diff, abs(float(dp_m["loss"]) - float(one_m["loss"])))
    abs_diff = max(
        float((dp_state.params[k] - one_state.params[k]).abs().max()) for k in dp_state.params
    )
    scale = max(float(p.abs().max()) for p in one_state.params.values())
    bitwise = all(torch.equal(dp_state.params[k], one_state.params[k]) for k in dp_state.params)
    return {"loss": loss_diff, "params_abs": abs_diff, "params_scale": scale, "bitwise": bitwise}


def _drift(rank: int) -> dict[str, Any]:
    """A rank whose state changed behind the step's back: named at the next check."""
    import purestep as ps
    from purestep import distributed

    model = plain_net()
    opt = ps.optim.adam(lr=1e-2)
    x, y = global_batches()[0]
    batch = (x[:8], y[:8])
    found: dict[str, Any] = {}
    # At the start: rank 1 begins from other weights.
    step = distributed.data_parallel(ps.make_train_step(model, nn.CrossEntropyLoss(), opt))
    state = ps.TrainState.create(model, opt)
    if rank == 1:
        state = state._replace(params={**state.params, "2.bias": state.params["2.bias"] + 1e-3})
    try:
        step(state, batch)
    except distributed.ReplicaDriftError as err:
        found["start"] = {"message": str(err), "name": err.name, "ranks": list(err.ranks)}
    # Mid-run: rank 1's Adam moment changes after 2 steps; the check after 3 names it.
    step = distributed.data_parallel(
        ps.make_train_step(model, nn.CrossEntropyLoss(), opt), check_every=3
    )
    state = ps.TrainState.create(model, opt)
    for t in range(3):
        if t == 2 and rank == 1:
            exp_avg = dict(state.opt_state.exp_avg)
            exp_avg["0.weight"] = exp_avg["0.weight"].clone().index_fill_(0, torch.tensor([3]), 0.5)
            state = state._replace(opt_state=state.opt_state._replace(exp_avg=exp_avg))
        try:
            state, _ = step(state, batch)
        except distributed.ReplicaDriftError as err:
            found["mid"] = {"message": str(err), "name": err.name, "at_call": t + 1}
            break
    # Broadcast repairs a drifted state (rank 0's everywhere).
    state = ps.TrainState.create(model, opt)
    if rank == 1:
        state = state._replace(params={**state.params, "0.weight": state.params["0.weight"] * 2})
    state = distributed.broadcast_state(state)
    distributed.check_replicas(state, when="after broadcast_state")
    found["broadcast_repairs"] = True
    return found


def _errors() -> dict[str, str]:
    """Clear errors for what cannot work."""
    import purestep as ps
    from purestep import distributed

    out = {}
    model = plain_net()
    opt = ps.optim.adam(lr=1e-2)
    step = ps.make_train_step(model, nn.CrossEntropyLoss(), opt)
    for name, call in {
        "compiled": lambda: distributed.data_parallel(ps.compile(step)),
        "twice": lambda: distributed.data_parallel(distributed.data_parallel(step)),
        "rng": lambda: distributed.data_parallel(step, rng="per_device"),
        "cap": lambda: distributed.data_parallel(step, bucket_cap_mb=0),
    }.items():
        try:
            call()
            out[name] = "no error"
        except (TypeError, ValueError) as err:
            out[name] = f"{type(err).__name__}: {err}"
    return out


def compiled(rank: int, world: int, out: Path) -> None:
    """The data-parallel step compiled with fullgraph=True (a graph break is an error)
    against the eager one, and DDP within the compiled tolerance. (An MLP with SGD: with
    BatchNorm, the bias before it has a zero gradient up to rounding, which Adam turns into
    lr-sized steps of either sign, so compiled and eager part ways by design.)"""
    import purestep as ps
    from purestep import distributed
    from purestep._compat import counters

    opt = ps.optim.sgd(lr=0.05, momentum=0.9)
    eager = distributed.data_parallel(ps.make_train_step(plain_net(), nn.CrossEntropyLoss(), opt))
    fast = ps.compile(
        distributed.data_parallel(ps.make_train_step(plain_net(), nn.CrossEntropyLoss(), opt))
    )
    e_state = c_state = ps.TrainState.create(plain_net(), opt)
    worst = 0.0
    for t in range(20):
        x, y = global_batches()[t % 10]
        batch = (x.tensor_split(world)[rank], y.tensor_split(world)[rank])
        e_state, _ = eager(e_state, batch)
        c_state, _ = fast(c_state, batch)
        for k in e_state.params:
            worst = max(worst, float((e_state.params[k] - c_state.params[k]).abs().max()))
    report = ps.parity.compare_ddp(
        plain_net, nn.CrossEntropyLoss(), sgd_momentum, global_batches(), steps=20, compile=True
    )
    write_result(
        out,
        "compiled",
        rank,
        {
            "params_abs": worst,
            "graph_breaks": sum(counters["graph_break"].values()),
            "ddp": _report(report),
        },
    )


def three_ranks(rank: int, world: int, out: Path) -> None:
    """3 ranks, where the bucket layout and DDP's scale-then-sum decide the last bits:
    the 2.7 MiB MLP in 2 rebuilt buckets (default caps) and in 3 (0.5 MiB)."""
    import purestep as ps

    batches = global_batches(6, features=64)
    batches = [(x[:12], y[:12]) for x, y in batches]  # 4 examples per rank
    found = {}
    for cap in (None, 0.5):
        report = ps.parity.compare_ddp(
            big_net, nn.CrossEntropyLoss(), sgd_momentum, batches, steps=6, bucket_cap_mb=cap
        )
        found[str(cap)] = _report(report)
    write_result(out, "three", rank, found)
