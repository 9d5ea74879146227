"""``OneCycleLR`` as torch runs it by default: the lr *and* the momentum (SGD's and RMSprop's
``momentum``, the Adam family's ``betas[0]``) over the whole cycle, bitwise; through
``scheduled``, through training, and through ``from_torch``."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
import torch.nn.functional as F
import torch.optim.lr_scheduler as tls
from hypothesis import example, given, settings
from hypothesis import strategies as st

import purestep as ps
from purestep.optim.hyperparams import group_hyperparams
from tests.optim.schedules.harness import bits
from tests.support import MODELS, batches, examples, run_bitwise

S = ps.optim.schedules

# torch class, our factory, the hyperparameter OneCycleLR drives (our name)
RULES: dict[str, tuple[type[torch.optim.Optimizer], Any, str]] = {
    "sgd": (torch.optim.SGD, ps.optim.sgd, "momentum"),
    "rmsprop": (torch.optim.RMSprop, ps.optim.rmsprop, "momentum"),
    "adam": (torch.optim.Adam, ps.optim.adam, "beta1"),
    "adamw": (torch.optim.AdamW, ps.optim.adamw, "beta1"),
    "adamax": (torch.optim.Adamax, ps.optim.adamax, "beta1"),
    "nadam": (torch.optim.NAdam, ps.optim.nadam, "beta1"),
    "radam": (torch.optim.RAdam, ps.optim.radam, "beta1"),
}


def floats(lo: float, hi: float) -> st.SearchStrategy[float]:
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


# OneCycleLR's arguments; each strategy's simplest value is torch's default (or typical).
ONE_CYCLE = st.fixed_dictionaries(
    {
        "max_lr": st.just(0.1) | floats(1e-3, 1.0),
        "total_steps": st.integers(40, 300),
        "pct_start": st.just(0.3) | floats(0.05, 0.95),
        "anneal_strategy": st.sampled_from(["cos", "linear"]),
        "three_phase": st.booleans(),
        "base_momentum": st.just(0.85) | floats(0.0, 0.9),
        "max_momentum": st.just(0.95) | floats(0.5, 0.99),
        "div_factor": st.just(25.0) | floats(1.0, 100.0),
        "final_div_factor": st.just(1e4) | floats(1.0, 1e5),
    }
)
DEFAULTS = {
    "max_lr": 0.1,
    "total_steps": 120,
    "pct_start": 0.3,
    "anneal_strategy": "cos",
    "three_phase": False,
    "base_momentum": 0.85,
    "max_momentum": 0.95,
    "div_factor": 25.0,
    "final_div_factor": 1e4,
}


def torch_value(group: dict[str, Any], key: str) -> float:
    return float(group["betas"][0] if key == "beta1" else group[key])


@pytest.mark.parametrize("rule", sorted(RULES))
def test_lr_and_momentum_sequences_bitwise_over_the_whole_cycle(rule: str) -> None:
    """``scheduled(rule, one_cycle_lr(...))``: after construction and after every one of
    ``total_steps`` steps, the lr and the momentum / beta1 in the state are torch's."""
    torch_cls, factory, key = RULES[rule]

    @settings(max_examples=examples(3, 30))
    @given(kw=ONE_CYCLE)
    @example(kw=DEFAULTS)
    def check(kw: dict[str, Any]) -> None:
        torch_opt = torch_cls([torch.zeros(2, requires_grad=True)], lr=0.01, foreach=False)
        torch_sched = tls.OneCycleLR(torch_opt, **kw)
        opt = ps.optim.scheduled(factory(lr=0.01, dynamic=("lr", key)), S.one_cycle_lr(**kw))
        params = {"w": torch.zeros(2)}
        state = opt.init(params)
        for t in range(kw["total_steps"] + 1):
            group, hp = torch_opt.param_groups[0], group_hyperparams(state)[0]
            assert bits(float(hp["lr"])) == bits(group["lr"]), (t, float(hp["lr"]), group["lr"])
            want = torch_value(group, key)
            assert bits(float(hp[key])) == bits(want), (t, key, float(hp[key]), want)
            if t < kw["total_steps"]:
                torch_opt.step()  # no gradients: only tells the scheduler it stepped
                torch_sched.step()
                params, state = opt.step({"w": torch.ones(2)}, state, params)

    check()


TRAIN = {
    "sgd": (
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, foreach=False),
        lambda: ps.optim.sgd(lr=0.05, momentum=0.9, nesterov=True, dynamic=("lr", "momentum")),
    ),
    "adam": (
        lambda p: torch.optim.Adam(p, lr=1e-3, weight_decay=1e-3, foreach=False),
        lambda: ps.optim.adam(lr=1e-3, weight_decay=1e-3, dynamic=("lr", "beta1")),
    ),
}


@pytest.mark.parametrize("rule", sorted(TRAIN))
def test_training_over_the_whole_cycle_bitwise(rule: str) -> None:
    """Parameters, buffers and optimizer state after every step of a whole cycle: the
    imperative optimizer + OneCycleLR loop and ``scheduled(rule, one_cycle_lr)`` agree."""
    make_torch, make_ours = TRAIN[rule]
    build, shape = MODELS["mlp_dropout"]
    data = batches(shape, n=8)

    @settings(max_examples=examples(3, 20))
    @given(kw=ONE_CYCLE, seed=st.integers(0, 2**31 - 1))
    @example(kw=DEFAULTS, seed=0)
    def check(kw: dict[str, Any], seed: int) -> None:
        kw = {**kw, "total_steps": min(kw["total_steps"], 120)}
        model = build(seed % 1000)
        torch_opt = make_torch(model.parameters())
        torch_sched = tls.OneCycleLR(torch_opt, **kw)
        opt = ps.optim.scheduled(make_ours(), S.one_cycle_lr(**kw))
        diverged = run_bitwise(
            model,
            F.cross_entropy,
            torch_opt,
            opt,
            data,
            kw["total_steps"],
            seed=seed,
            torch_scheduler=torch_sched,
        )
        assert diverged is None, f"{kw}: first difference at step {diverged}"

    check()


def _two_groups(model: torch.nn.Module, cls: Any, **kw: Any) -> torch.optim.Optimizer:
    weights = [p for n, p in model.named_parameters() if n.endswith("weight")]
    biases = [p for n, p in model.named_parameters() if n.endswith("bias")]
    return cls([{"params": weights}, {"params": biases, "lr": 0.02}], foreach=False, **kw)


@pytest.mark.parametrize(
    "cls", [torch.optim.SGD, torch.optim.AdamW, torch.optim.RMSprop], ids=lambda c: c.__name__
)
@pytest.mark.parametrize("stepped", [0, 17], ids=["fresh", "mid-cycle"])
def test_from_torch_converts_the_default_one_cycle(cls: Any, stepped: int) -> None:
    """``OneCycleLR(opt, max_lr=..., total_steps=...)`` with torch's defaults (momentum
    cycled) converts, fresh or mid-cycle, and runs on bitwise equal to torch's
    optimizer + scheduler loop to the end of the cycle; two param groups."""
    build, shape = MODELS["mlp_dropout"]
    model = build(3)
    data = batches(shape, n=8)
    torch_opt = _two_groups(model, cls)
    torch_sched = tls.OneCycleLR(torch_opt, max_lr=[0.1, 0.05], total_steps=60)
    for t in range(stepped):  # torch alone first; the conversion continues from there
        x, y = data[t % len(data)]
        torch_opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        torch_opt.step()
        torch_sched.step()
    opt = ps.optim.from_torch(torch_opt, model, torch_sched)
    state = opt.init({n: p.detach() for n, p in model.named_parameters()})
    for g, hp in zip(torch_opt.param_groups, group_hyperparams(state), strict=True):
        key = "beta1" if "betas" in g else "momentum"
        assert float(hp[key]) == torch_value(g, key) and float(hp["lr"]) == g["lr"]
    model.train()
    diverged = run_bitwise(
        model, F.cross_entropy, torch_opt, opt, data, 60 - stepped, torch_scheduler=torch_sched
    )
    assert diverged is None, f"first difference at step {diverged}"


def test_to_torch_state_dict_carries_the_cycled_momentum() -> None:
    """Back to torch mid-cycle: the group's ``betas[0]`` is the functional one, so torch's
    next step uses it."""
    model = MODELS["mlp_dropout"][0](0)
    opt = ps.optim.scheduled(
        ps.optim.adam(lr=1e-3, dynamic=("lr", "beta1")), S.one_cycle_lr(0.1, total_steps=50)
    )
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    state = opt.init(params)
    for _ in range(20):
        params, state = opt.step({k: torch.ones_like(p) for k, p in params.items()}, state, params)
    reference = torch.optim.Adam(model.parameters(), lr=1e-3)
    saved = ps.optim.to_torch_state_dict(state, reference, model)
    hp = group_hyperparams(state)[0]
    assert saved["param_groups"][0]["betas"][0] == float(hp["beta1"]) != 0.9
    assert saved["param_groups"][0]["lr"] == float(hp["lr"])


def test_composites_drive_the_momentum_of_their_one_cycle() -> None:
    """SequentialLR (OneCycleLR second: undone, then reset at its milestone, then frozen
    when the next child runs) and ChainedScheduler: the momentum stays torch's."""

    def torch_make(opt: torch.optim.Optimizer) -> Any:
        warm = tls.LinearLR(opt, start_factor=0.1, total_iters=5)
        cyc = tls.OneCycleLR(opt, max_lr=0.5, total_steps=30, anneal_strategy="linear")
        tail = tls.ExponentialLR(opt, gamma=0.9)
        seq = tls.SequentialLR(opt, [warm, cyc, tail], milestones=[8, 30])
        return tls.ChainedScheduler([seq, tls.StepLR(opt, step_size=4, gamma=0.8)])

    ours = S.chained_scheduler(
        [
            S.sequential_lr(
                [
                    S.linear_lr(start_factor=0.1, total_iters=5),
                    S.one_cycle_lr(0.5, total_steps=30, anneal_strategy="linear"),
                    S.exponential_lr(0.9),
                ],
                [8, 30],
            ),
            S.step_lr(step_size=4, gamma=0.8),
        ]
    )
    assert ours.momentum is not None
    torch_opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    torch_sched = torch_make(torch_opt)
    opt = ps.optim.scheduled(ps.optim.sgd(lr=0.1, dynamic=("lr", "momentum")), ours)
    params = {"w": torch.zeros(1)}
    state = opt.init(params)
    momenta = set()
    for t in range(45):
        group, hp = torch_opt.param_groups[0], group_hyperparams(state)[0]
        assert (bits(float(hp["lr"])), bits(float(hp["momentum"]))) == (
            bits(group["lr"]),
            bits(group["momentum"]),
        ), t
        momenta.add(group["momentum"])
        torch_opt.step()
        torch_sched.step()
        params, state = opt.step({"w": torch.zeros(1)}, state, params)
    assert len(momenta) > 10, "the cycle must move the momentum"


@pytest.mark.parametrize("rule", ["sgd", "rmsprop"])
def test_momentum_switched_off_and_on_as_torch_does(rule: str) -> None:
    """A dynamic momentum set to 0 mid-run is plain SGD / RMSprop for those steps (the buffer
    waits), as torch's ``param_groups[0]["momentum"] = 0`` is; SGD built with momentum 0
    starts its buffer (a copy of the gradient, whatever the dampening) at the first step
    with momentum on."""
    build, shape = MODELS["mlp_dropout"]
    model = build(0)
    if rule == "sgd":
        torch_opt = torch.optim.SGD(model.parameters(), lr=0.05, dampening=0.3, foreach=False)
        opt = ps.optim.sgd(lr=0.05, dampening=0.3, dynamic=("lr", "momentum"))
        plan = [0.0] * 3 + [0.9] * 4 + [0.0] * 3 + [0.5] * 4
    else:  # torch's RMSprop creates its buffer only if momentum > 0 at the first step
        torch_opt = torch.optim.RMSprop(model.parameters(), lr=1e-3, momentum=0.5, foreach=False)
        opt = ps.optim.rmsprop(lr=1e-3, momentum=0.5, dynamic=("lr", "momentum"))
        plan = [0.5] * 3 + [0.0] * 4 + [0.8] * 4

    class Plan:
        """Sets the momentum for the next step, on both sides."""

        def __init__(self) -> None:
            self.t = 0

        def step(self) -> None:
            self.t += 1
            if self.t < len(plan):
                torch_opt.param_groups[0]["momentum"] = plan[self.t]

    torch_opt.param_groups[0]["momentum"] = plan[0]
    spec = copy.deepcopy(model)
    state = ps.TrainState.create(model, opt)
    step = ps.make_train_step(spec, F.cross_entropy, opt)
    data = batches(shape)
    sched = Plan()
    for t in range(len(plan)):
        x, y = data[t % len(data)]
        state = state._replace(
            opt_state=ps.optim.set_hyperparam(state.opt_state, "momentum", plan[t])
        )
        with ps.rng_scope(state.rng):
            torch_opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            torch_opt.step()
        sched.step()
        state, _ = step(state, (x, y))
        for n, p in model.named_parameters():
            assert torch.equal(p.detach(), state.params[n]), (t, n)


def test_a_rule_without_the_dynamic_momentum_is_told_what_to_do() -> None:
    params = {"w": torch.zeros(2)}
    for rule in (ps.optim.sgd(lr=0.1, momentum=0.9), ps.optim.adagrad()):
        opt = ps.optim.scheduled(rule, S.one_cycle_lr(0.1, total_steps=10))
        with pytest.raises(ValueError, match=r"dynamic=\('lr', 'momentum'\)"):
            opt.init(params)
    lr_only = ps.optim.scheduled(
        ps.optim.adam(), S.one_cycle_lr(0.1, total_steps=10, cycle_momentum=False)
    )
    lr_only.init(params)
    with pytest.raises(TypeError, match="cycle_momentum must be a bool"):
        S.one_cycle_lr(0.1, total_steps=10, cycle_momentum="yes")  # type: ignore[arg-type]


@pytest.mark.parametrize("anneal", ["linear", "cos"])
def test_momentum_on_the_tensor_path(anneal: str) -> None:
    """Under ``vmap`` (tensor states, ``torch.where`` for the phase search) the momentum is
    the eager one: bitwise for the linear anneal, within SLEEF's 1 ulp of ``math.cos`` for
    the cosine; epochs before 0 (a SequentialLR child not yet running) read as 0."""
    sched = S.one_cycle_lr(0.3, total_steps=40, three_phase=True, anneal_strategy=anneal)
    assert sched.momentum is not None
    state, _ = sched.init(0.1, 0.1)
    epochs = list(range(-1, 41))
    states = state._replace(
        last_epoch=torch.tensor(epochs), base_lr=state.base_lr.expand(len(epochs))
    )
    got = torch.vmap(sched.momentum)(states).tolist()
    for e, value in zip(epochs, got, strict=True):
        want = sched.momentum(state._replace(last_epoch=torch.tensor(e)))
        assert value == want if anneal == "linear" else abs(value - want) <= 2e-16, (e, value)


@pytest.mark.slow
def test_compiled_one_cycle_with_momentum_never_recompiles() -> None:
    """``ps.compile`` of a scheduled Adam whose beta1 cycles: one graph, and the lr and beta1
    it writes track the eager step's to 1e-12 over the cycle."""
    from purestep._compat import counters

    model = MODELS["mlp_dropout"][0](0)
    opt = ps.optim.scheduled(
        ps.optim.adam(lr=1e-3, dynamic=("lr", "beta1")), S.one_cycle_lr(0.05, total_steps=40)
    )
    eager = ps.make_train_step(model, F.cross_entropy, opt)
    compiled = ps.compile(eager)
    data = batches((10,))
    s_eager = s_comp = ps.TrainState.create(model, opt)
    s_comp, _ = compiled(s_comp, data[0])
    s_eager, _ = eager(s_eager, data[0])
    counters.clear()
    with torch.compiler.set_stance("fail_on_recompile"):
        for t in range(1, 40):
            s_comp, _ = compiled(s_comp, data[t % len(data)])
            s_eager, _ = eager(s_eager, data[t % len(data)])
            for key in ("lr", "beta1"):
                a = group_hyperparams(s_comp.opt_state)[0][key]
                b = group_hyperparams(s_eager.opt_state)[0][key]
                torch.testing.assert_close(a, b, rtol=1e-12, atol=0)
    assert counters["stats"]["unique_graphs"] == 0
