"""The ways of running one training step (forward, loss, backward, Adam update) that the
benchmark compares. Each ``make_*`` returns a ``Variant``: ``step()`` runs one training
step, ``loss()`` reads the last loss (to check that variants agree numerically)."""

from __future__ import annotations

import contextlib
import copy
import io
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

import purestep as ps
from purestep.bench.workloads import Workload

__all__ = ["FLOOR", "VARIANTS", "Unavailable", "Variant", "matmul_shapes", "resolve_variant"]

LR = 1e-3
K = 8  # models in a vmapped sweep


class Unavailable(Exception):
    """A variant that cannot run here (no GPU, peer not installed); reported, not raised."""


@dataclass
class Variant:
    """``loss()`` reads the loss of the first training step of the last call (so variants
    can be checked against each other), or None where a call has no such figure."""

    name: str
    step: Callable[[], Any]
    loss: Callable[[], float | None]
    steps_per_call: int = 1  # training steps one call performs (K for sweeps)
    compiled: bool = False
    notes: list[str] = field(default_factory=list)


def _autocast(workload: Workload, device: torch.device) -> Any:
    if workload.amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def imperative(workload: Workload, device: torch.device, compiled: bool = False) -> Variant:
    """The textbook loop; compiled: ``torch.compile(model)`` and a compiled ``opt.step``
    with a tensor lr (torch's recommended recipe)."""
    model = workload.build().to(device)
    x, y = workload.batch(device)
    lr: Any = torch.tensor(LR, device=device) if compiled else LR
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    forward: Callable[..., Any] = torch.compile(model) if compiled else model
    opt_step: Callable[[], Any] = torch.compile(opt.step, fullgraph=False) if compiled else opt.step
    last: list[torch.Tensor] = []

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with _autocast(workload, device):
            loss = workload.criterion(forward(x), y)
        loss.backward()
        opt_step()
        last[:] = [loss.detach()]

    return Variant(
        "imperative compiled" if compiled else "imperative eager",
        step,
        lambda: float(last[0]),
        compiled=compiled,
    )


def functional(
    workload: Workload,
    device: torch.device,
    compiled: bool = False,
    cudagraphs: bool = False,
    donate: bool = False,
    foreach: bool = False,
    cpp_wrapper: bool = False,
    options: dict[str, Any] | None = None,
) -> Variant:
    """The pure step, eager or ``purestep.compile``d (optionally with CUDA graphs);
    ``foreach``: Adam's multi-tensor eager fast mode; ``options``: inductor options."""
    if cudagraphs and device.type != "cuda":
        raise Unavailable("CUDA graphs need a CUDA device")
    model = workload.build().to(device)
    batch = workload.batch(device)
    opt = ps.optim.adam(lr=LR, foreach=foreach)
    autocast = torch.bfloat16 if workload.amp and device.type == "cuda" else None
    train_step = ps.make_train_step(model, workload.criterion, opt, autocast=autocast)
    if compiled:
        inductor = {**(options or {}), **({"cpp_wrapper": True} if cpp_wrapper else {})}
        train_step = ps.compile(
            train_step, cudagraphs=cudagraphs, donate=donate, options=inductor or None
        )
    holder: list[Any] = [ps.TrainState.create(model, opt, seed=0), None]

    def step() -> None:
        holder[0], holder[1] = train_step(holder[0], batch)

    name = (
        "functional + CUDA graphs"
        if cudagraphs
        else ("functional compiled" if compiled else "functional eager")
    )
    if donate:
        name += " (donated)"
    if cpp_wrapper:
        name = name.replace("(donated)", "(donated, C++ wrapper)")
    if foreach:
        name += " (foreach)"
    return Variant(name, step, lambda: float(holder[1]["loss"]), compiled=compiled)


def _member_states(model: nn.Module, opt: Any, k: int) -> list[Any]:
    """K states of one model: seeds 0..K-1, learning rates LR * (1 + i/K)."""
    return [
        ps.TrainState.create(model, opt, seed=i)._replace(
            opt_state=ps.optim.set_hyperparam(
                ps.TrainState.create(model, opt).opt_state, "lr", LR * (1 + i / k)
            )
        )
        for i in range(k)
    ]


def sweep(workload: Workload, device: torch.device, compiled: bool = False, k: int = K) -> Variant:
    """K models (different learning rates) trained by one vmapped pure step."""
    model = workload.build().to(device)
    batch = workload.batch(device)
    opt = ps.optim.adam(lr=LR)
    vstep = ps.vmap(ps.make_train_step(model, workload.criterion, opt))
    if compiled:
        vstep = ps.compile(vstep)
    holder: list[Any] = [ps.stack_states(_member_states(model, opt, k)), None]

    def step() -> None:
        holder[0], holder[1] = vstep(holder[0], batch)

    name = f"vmap K={k} sweep " + ("compiled" if compiled else "eager")
    return Variant(
        name, step, lambda: float(holder[1]["loss"][0]), steps_per_call=k, compiled=compiled
    )


def sequential(
    workload: Workload, device: torch.device, compiled: bool = False, k: int = K
) -> Variant:
    """K separate pure steps, one after the other (what the sweep replaces)."""
    model = workload.build().to(device)
    batch = workload.batch(device)
    opt = ps.optim.adam(lr=LR)
    train_step = ps.make_train_step(model, workload.criterion, opt)
    if compiled:
        train_step = ps.compile(train_step, donate=True)
    states = _member_states(model, opt, k)
    last: list[Any] = [None]

    def step() -> None:
        for i in range(k):
            states[i], last[0] = train_step(states[i], batch)

    name = f"{k} sequential " + ("compiled (donated)" if compiled else "eager")
    return Variant(name, step, lambda: float(last[0]["loss"]), steps_per_call=k, compiled=compiled)


_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d)


def matmul_shapes(
    workload: Workload, device: torch.device
) -> list[tuple[tuple[int, int], tuple[int, int], bool]]:
    """Per ``nn.Linear`` of the model, in call order: (input rows x in, out x in, whether
    its input needs a gradient). Read from one forward pass with hooks."""
    model = workload.build().to(device)
    inputs = workload.batch(device)[:-1]
    found: list[tuple[tuple[int, int], tuple[int, int], bool]] = []
    if any(isinstance(m, _CONVS) for m in model.modules()):
        raise Unavailable("the floor counts nn.Linear matmuls; this model has convolutions")

    def hook(module: nn.Module, args: tuple[Any, ...], _out: Any) -> None:
        x = args[0]
        assert isinstance(module, nn.Linear)
        rows = x.numel() // x.shape[-1]
        fan_out, fan_in = module.weight.shape
        found.append(((rows, fan_in), (fan_out, fan_in), bool(x.requires_grad)))

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Linear)]
    try:
        model(*inputs)
    finally:
        for h in handles:
            h.remove()
    if not found:
        raise Unavailable("the model has no nn.Linear layers")
    return found


def matmul_floor(workload: Workload, device: torch.device) -> Variant:
    """The step's matmuls alone, on tensors of the step's shapes: per ``nn.Linear`` the
    forward ``x @ W.T``, the weight gradient ``g.T @ x`` and, where the layer's input needs
    one, the input gradient ``g @ W``; written into preallocated outputs. Nothing else of
    a step (bias, activations, loss, optimizer, Python) is in it: the floor under any
    implementation that calls the same matmul kernels."""
    g = torch.Generator().manual_seed(0)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g).to(device)

    # (a, b, out) of every torch.mm(a, b, out=out), with the layouts autograd uses.
    mms: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    for (rows, fan_in), (fan_out, _), input_grad in matmul_shapes(workload, device):
        x, w, grad = rand(rows, fan_in), rand(fan_out, fan_in), rand(rows, fan_out)
        mms.append((x, w.t(), torch.empty(rows, fan_out, device=device)))  # forward
        mms.append((grad.t(), x, torch.empty_like(w)))  # weight gradient
        if input_grad:
            mms.append((grad, w, torch.empty_like(x)))  # input gradient

    def step() -> None:
        for a, b, out in mms:
            torch.mm(a, b, out=out)

    variant = Variant(FLOOR, step, lambda: None)
    variant.notes.append(f"{len(mms)} matmuls per step")
    return variant


FIT_STEPS = 100  # steps per call of the fit-loop variants: one epoch of this many batches


def _metric_step(workload: Workload, device: torch.device) -> tuple[Any, Any, Any, Any]:
    """A compiled pure step that also returns accuracy statistics, as ``purestep train``
    builds it for a classifier, its state and one epoch of (the same) batches."""
    from purestep.train.metrics import make_metrics

    if workload.name not in ("W1", "W2"):
        raise Unavailable(f"the fit-loop overhead is measured on W1 and W2, not {workload.name}")
    model = workload.build().to(device)
    metrics = make_metrics(["accuracy"], "multiclass")
    opt = ps.optim.adam(lr=LR)
    step = ps.compile(ps.make_train_step(model, workload.criterion, opt, metrics_fn=metrics.stats))
    batch = workload.batch(device)
    return step, ps.TrainState.create(model, opt), [batch] * FIT_STEPS, metrics


def fit_loop(workload: Workload, device: torch.device) -> Variant:
    """``ps.fit`` over an epoch of ``FIT_STEPS`` batches: metrics accumulated on the device,
    the running loss read every 50 steps (the default), TensorBoard scalars, a History; no
    checkpoints."""
    import tempfile

    from purestep.train.fit import fit
    from purestep.train.loggers import TensorBoardLogger

    step, state, epoch, metrics = _metric_step(workload, device)
    logger = TensorBoardLogger(tempfile.mkdtemp(prefix="purestep-bench-tb-"))
    holder: list[Any] = [state, None]

    sink = io.StringIO()

    def call() -> None:
        # fit prints one line per epoch on stdout: keep it out of the report
        with contextlib.redirect_stdout(sink):
            holder[0], holder[1] = fit(
                holder[0], step, epoch, epochs=1, metrics=metrics, loggers=[logger]
            )
        sink.seek(0)
        sink.truncate()

    return Variant(
        "fit loop (compiled, metrics + logging)",
        call,
        lambda: None,  # a call is a whole epoch: its figure is the epoch mean
        steps_per_call=FIT_STEPS,
        compiled=True,
    )


def bare_loop(workload: Workload, device: torch.device) -> Variant:
    """The same compiled step (accuracy statistics included) in a bare Python loop: what
    ``fit_loop`` costs on top of it."""
    step, state, epoch, _ = _metric_step(workload, device)
    holder: list[Any] = [state, None]

    def call() -> None:
        for i, batch in enumerate(epoch):
            holder[0], metrics = step(holder[0], batch)
            if i == 0:
                holder[1] = metrics

    return Variant(
        "bare loop (same compiled step)",
        call,
        lambda: float(holder[1]["loss"]),
        steps_per_call=FIT_STEPS,
        compiled=True,
    )


def checkpoint_save(workload: Workload, device: torch.device) -> Variant:
    """One crash-safe checkpoint of the workload's Adam state (temp dir, fsync, rename,
    pointer): the per-call time is the time of one save."""
    import tempfile

    from purestep.train.checkpoint import Checkpointer, LoopState

    model = workload.build().to(device)
    opt = ps.optim.adam(lr=LR)
    state = ps.TrainState.create(model, opt)
    directory = tempfile.mkdtemp(prefix="purestep-bench-ckpt-")
    saver = Checkpointer(directory, keep=2)
    count = [0]

    def call() -> None:
        count[0] += 1
        saver.save(state, LoopState(step=count[0]))

    nbytes = sum(t.numel() * t.element_size() for t in ps.core.pytree.tree_leaves(state))
    variant = Variant("checkpoint save", call, lambda: None)
    variant.notes.append(f"{nbytes / 2**20:.1f} MB of state per save, in {directory}")
    return variant


def torchopt_functional(workload: Workload, device: torch.device) -> Variant:
    """torchopt's functional Adam with torch.func gradients (peer)."""
    try:
        import torchopt
    except ImportError as err:
        raise Unavailable("torchopt is not installed (pip install 'purestep[bench]')") from err
    from torch.func import functional_call, grad_and_value

    model = workload.build().to(device)
    x, y = workload.batch(device)
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    buffers = {k: v.detach().clone() for k, v in model.named_buffers()}
    opt = torchopt.adam(lr=LR)
    holder: list[Any] = [params, opt.init(params), None]
    skeleton = copy.deepcopy(model)

    def loss_fn(p: dict[str, torch.Tensor]) -> torch.Tensor:
        return workload.criterion(functional_call(skeleton, (p, buffers), (x,)), y)

    def step() -> None:
        grads, loss = grad_and_value(loss_fn)(holder[0])
        updates, holder[1] = opt.update(grads, holder[1], inplace=False)
        holder[0] = torchopt.apply_updates(holder[0], updates, inplace=False)
        holder[2] = loss

    return Variant("torchopt functional Adam", step, lambda: float(holder[2]))


def jax_optax(workload: Workload, device: torch.device) -> Variant:
    """The same net and batch as a ``jax.jit``-compiled JAX + optax step (peer, JAX's CPU)."""
    if workload.jax_spec is None:
        raise Unavailable(f"no JAX twin for {workload.name}")
    try:
        import jax
        import jax.numpy as jnp
        import optax
    except ImportError as err:
        raise Unavailable("jax/optax are not installed (pip install 'purestep[bench]')") from err
    model = workload.build()
    x, y = workload.batch(torch.device("cpu"))
    params = [
        (jnp.asarray(m.weight.detach().numpy().T), jnp.asarray(m.bias.detach().numpy()))
        for m in model.modules()
        if isinstance(m, nn.Linear)
    ]
    norms = [
        (jnp.asarray(m.weight.detach().numpy()), jnp.asarray(m.bias.detach().numpy()))
        for m in model.modules()
        if isinstance(m, nn.LayerNorm)
    ]
    spec = workload.jax_spec
    xj, yj = jnp.asarray(x.numpy()), jnp.asarray(y.numpy())

    def forward(p: Any, inputs: Any) -> Any:
        linears, lns = p
        h = inputs
        if spec["kind"] == "mlp":
            for w, b in linears[:-1]:
                h = jax.nn.relu(h @ w + b)
        else:
            for (w, b), (g, beta) in zip(linears[:-1], lns, strict=True):
                h = h @ w + b
                mean = h.mean(-1, keepdims=True)
                var = ((h - mean) ** 2).mean(-1, keepdims=True)
                h = jax.nn.gelu((h - mean) / jnp.sqrt(var + 1e-5) * g + beta, approximate=False)
        w, b = linears[-1]
        return h @ w + b

    def loss_fn(p: Any) -> Any:
        logits = forward(p, xj)
        return optax.softmax_cross_entropy_with_integer_labels(logits, yj).mean()

    tx = optax.adam(LR)

    @jax.jit
    def train(p: Any, s: Any) -> Any:
        loss, grads = jax.value_and_grad(loss_fn)(p)
        updates, s = tx.update(grads, s, p)
        return optax.apply_updates(p, updates), s, loss

    p0 = (params, norms)
    holder: list[Any] = [p0, tx.init(p0), None]

    def step() -> None:
        holder[0], holder[1], holder[2] = train(holder[0], holder[1])
        holder[2].block_until_ready()

    return Variant(
        f"JAX {jax.__version__} + optax jit", step, lambda: float(holder[2]), compiled=True
    )


FLOOR = "matmul floor (the step's matmuls alone)"

VARIANTS: dict[str, Callable[[Workload, torch.device], Variant]] = {
    FLOOR: matmul_floor,
    "imperative eager": lambda w, d: imperative(w, d),
    "imperative compiled": lambda w, d: imperative(w, d, compiled=True),
    "functional eager": lambda w, d: functional(w, d),
    "functional eager (foreach)": lambda w, d: functional(w, d, foreach=True),
    "functional compiled": lambda w, d: functional(w, d, compiled=True),
    "functional compiled (donated)": lambda w, d: functional(w, d, compiled=True, donate=True),
    "functional compiled (donated, C++ wrapper)": lambda w, d: functional(
        w, d, compiled=True, donate=True, cpp_wrapper=True
    ),
    "functional + CUDA graphs (donated)": lambda w, d: functional(
        w, d, compiled=True, cudagraphs=True, donate=True
    ),
    f"vmap K={K} sweep eager": lambda w, d: sweep(w, d),
    f"{K} sequential eager": lambda w, d: sequential(w, d),
    f"vmap K={K} sweep compiled": lambda w, d: sweep(w, d, compiled=True),
    f"{K} sequential compiled (donated)": lambda w, d: sequential(w, d, compiled=True),
    "fit loop (compiled, metrics + logging)": fit_loop,
    "bare loop (same compiled step)": bare_loop,
    "checkpoint save": checkpoint_save,
    "torchopt functional Adam": torchopt_functional,
    "JAX + optax jit": jax_optax,
}


_SWEEP_NAME = re.compile(r"vmap K=(\d+) sweep (compiled|eager)")
_SEQUENTIAL_NAME = re.compile(r"(\d+) sequential (compiled \(donated\)|eager)")


def resolve_variant(name: str) -> Callable[[Workload, torch.device], Variant]:
    """The builder of a variant by name: one of ``VARIANTS``, or a sweep or sequential run
    with another K (``vmap K=4 sweep compiled``, ``16 sequential eager``)."""
    if name in VARIANTS:
        return VARIANTS[name]
    for pattern, builder in ((_SWEEP_NAME, sweep), (_SEQUENTIAL_NAME, sequential)):
        match = pattern.fullmatch(name)
        if match is not None:
            k, compiled = int(match.group(1)), match.group(2) != "eager"
            if k < 1:
                raise ValueError(f"variant {name!r}: K must be >= 1")
            return lambda w, d: builder(w, d, compiled=compiled, k=k)
    raise ValueError(f"unknown variant {name!r}; choose from {list(VARIANTS)}")
