r"""optax's names and signatures, in torch: for code ported from JAX.

``import purestep.optax as optax`` and an optax training loop runs with its optax calls
unchanged::

    schedule = optax.warmup_cosine_decay_schedule(0.0, 1e-3, 10, 100)
    opt = optax.MultiSteps(
        optax.chain(optax.clip_by_global_norm(1.0),
                    optax.adamw(schedule, weight_decay=1e-4, mask=decay_mask)),
        every_k_schedule=4)
    opt_state = opt.init(params)                       # params: dict[str, Tensor]
    updates, opt_state = opt.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)

Every function follows optax 0.2's definition operation for operation (``adam`` is
``chain(scale_by_adam(...), scale_by_learning_rate(lr))``, moments as
``(1 - b) * g**k + b * m``, bias corrections in float32, step counts as int32 tensors),
so results match optax's within float32 rounding (tested against optax itself: 100 steps,
parameters within 1e-5). What they return is a ``purestep.optim.GradientTransformation``
(``MultiSteps`` is one too), so it also goes straight into ``ps.make_train_step``,
``ps.compile`` and ``ps.vmap``; no branch depends on a tensor's value (``torch.where``
picks), so one graph serves every step.

Arguments are optax's: ``learning_rate`` is a number or a schedule ``count -> value``;
``b1``, ``b2``, ``eps``, ``eps_root``; ``mask`` is a Mapping of bools by parameter name or
a function ``params -> Mapping`` (see ``purestep.optim.masked`` for the other forms).
Schedules take an int or an int tensor and return a 0-d float32 tensor. Not carried over:
``mu_dtype``/``accumulator_dtype`` other than None, ``GradientTransformationExtraArgs``
extra arguments, stateful schedules.

For torch.optim's semantics and bitwise parity with it, use ``purestep.optim`` instead:
optax and torch differ in places (optax's ``adamw`` decays by ``lr * wd`` after the Adam
scaling, its default ``weight_decay`` is 1e-4, its ``rmsprop`` puts ``eps`` inside the
square root, its ``clip_by_global_norm`` has no ``1e-6``).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import torch

from purestep.optim import partition as _partition
from purestep.optim.base import (
    _RULE_STATE_MARK,
    EmptyState,
    GradientTransformation,
    Params,
    Updates,
    identity,
)
from purestep.optim.base import apply_updates as _apply_updates
from purestep.optim.base import chain as _chain
from purestep.pytree import tree_map

__all__ = [
    "ApplyIfFiniteState",
    "EmptyState",
    "GradientTransformation",
    "InjectHyperparamsState",
    "MultiSteps",
    "MultiStepsState",
    "ScaleByAdamState",
    "ScaleByLionState",
    "ScaleByRStdDevState",
    "ScaleByRmsState",
    "ScaleByRssState",
    "ScaleByScheduleState",
    "TraceState",
    "adagrad",
    "adam",
    "adamw",
    "add_decayed_weights",
    "apply_if_finite",
    "apply_updates",
    "chain",
    "clip",
    "clip_by_global_norm",
    "constant_schedule",
    "cosine_decay_schedule",
    "exponential_decay",
    "global_norm",
    "identity",
    "inject_hyperparams",
    "join_schedules",
    "linear_schedule",
    "lion",
    "masked",
    "multi_transform",
    "piecewise_constant_schedule",
    "polynomial_schedule",
    "rmsprop",
    "scale",
    "scale_by_adam",
    "scale_by_learning_rate",
    "scale_by_lion",
    "scale_by_rms",
    "scale_by_rss",
    "scale_by_schedule",
    "scale_by_stddev",
    "sgd",
    "trace",
    "warmup_cosine_decay_schedule",
]

Schedule = Callable[[Any], Any]
ScalarOrSchedule = float | torch.Tensor | Schedule
_INT32_MAX = 2**31 - 1


# ----------------------------------------------------------------------------- helpers


def _count0(params: Params) -> torch.Tensor:
    """optax's step counter: a 0-d int32 zero, on the parameters' device."""
    device = next(iter(params.values())).device if params else None
    return torch.zeros((), dtype=torch.int32, device=device)


def _increment(count: torch.Tensor) -> torch.Tensor:
    """``numerics.safe_increment``: ``count + 1``, saturating at the int32 maximum."""
    return torch.where(count < _INT32_MAX, count + 1, count)


def _f32(x: Any) -> torch.Tensor:
    """``x`` (an int, float or tensor) as float32, as jnp does with a count."""
    if isinstance(x, torch.Tensor):
        return x.to(torch.float32)
    return torch.tensor(x, dtype=torch.float32)


def _bias_correction(moment: Updates, decay: Any, count: torch.Tensor) -> Updates:
    """``moment / (1 - decay**count)``, the correction in float32 as optax computes it."""
    correction = 1 - torch.pow(_f32(decay), count.to(torch.float32))
    return {k: t / correction.to(t.dtype) for k, t in moment.items()}


def _moment(updates: Updates, moments: Updates, decay: Any, order: int) -> Updates:
    """``(1 - decay) * g**order + decay * m`` (optax's ``update_moment``)."""
    return {k: (1 - decay) * g**order + decay * moments[k] for k, g in updates.items()}


# -------------------------------------------------------------------------- combinators


def chain(*args: GradientTransformation) -> GradientTransformation:
    """``optax.chain``: the transforms applied in order; state is a tuple, one per link."""
    inner = _chain(*args)

    def update(updates: Updates, state: Any, params: Params | None = None) -> tuple[Updates, Any]:
        return inner.update(updates, state, params)

    return GradientTransformation(inner.init, update)


def apply_updates(params: Params, updates: Updates) -> Params:
    """``optax.apply_updates``: ``p + u`` for every parameter."""
    return _apply_updates(params, updates)


def masked(inner: GradientTransformation, mask: Any) -> GradientTransformation:
    """``optax.masked``: ``inner`` on the parameters ``mask`` selects (a Mapping of bools by
    name, or ``params -> Mapping``); the other updates pass through unchanged."""
    return _with_optional_params(_partition.masked(inner, mask))


def multi_transform(
    transforms: Mapping[str, GradientTransformation],
    param_labels: Mapping[str, str] | Callable[[Params], Mapping[str, str]],
) -> GradientTransformation:
    """``optax.multi_transform``: ``transforms[label]`` on the parameters labelled so."""
    return _with_optional_params(_partition.multi_transform(transforms, param_labels))


def _with_optional_params(t: GradientTransformation) -> GradientTransformation:
    def update(updates: Updates, state: Any, params: Params | None = None) -> tuple[Updates, Any]:
        if params is None:  # the mask or labels are read from the parameters
            raise ValueError(
                "masked/multi_transform need the params: update(updates, state, params)"
            )
        return t.update(updates, state, params)

    return GradientTransformation(t.init, update)


# -------------------------------------------------------------------------- transforms


def _stateless(fn: Callable[[Updates, Params | None], Updates]) -> GradientTransformation:
    def init(params: Params) -> EmptyState:
        return EmptyState()

    def update(
        updates: Updates, state: EmptyState, params: Params | None = None
    ) -> tuple[Updates, EmptyState]:
        return fn(updates, params), state

    return GradientTransformation(init, update)


def scale(step_size: float | torch.Tensor) -> GradientTransformation:
    """``optax.scale``: ``step_size * g``."""
    return _stateless(lambda updates, params: {k: step_size * g for k, g in updates.items()})


def clip(max_delta: float | torch.Tensor) -> GradientTransformation:
    """``optax.clip``: every element clamped to ``[-max_delta, max_delta]``."""

    def fn(updates: Updates, params: Params | None) -> Updates:
        if isinstance(max_delta, torch.Tensor):
            return {k: torch.clamp(g, -max_delta, max_delta) for k, g in updates.items()}
        return {k: g.clamp(-max_delta, max_delta) for k, g in updates.items()}

    return _stateless(fn)


def global_norm(updates: Updates) -> torch.Tensor:
    """``optax.global_norm``: ``sqrt`` of the sum of every element's square."""
    total: Any = 0
    for g in updates.values():
        total = total + torch.sum(g * g)
    return torch.sqrt(_f32(total) if not isinstance(total, torch.Tensor) else total)


def clip_by_global_norm(max_norm: float | torch.Tensor) -> GradientTransformation:
    """``optax.clip_by_global_norm``: when the global norm ``n`` reaches ``max_norm``, every
    update becomes ``g / n * max_norm`` (no ``1e-6``, unlike torch's ``clip_grad_norm_``,
    which ``purestep.optim.clip_by_global_norm`` follows)."""

    def fn(updates: Updates, params: Params | None) -> Updates:
        if not updates:
            return updates
        norm = global_norm(updates)
        trigger = norm < max_norm
        return {
            k: torch.where(trigger, g, g / norm.to(g.dtype) * max_norm) for k, g in updates.items()
        }

    return _stateless(fn)


class TraceState(NamedTuple):
    """``optax.TraceState``."""

    trace: dict[str, torch.Tensor]


def trace(
    decay: float | torch.Tensor, nesterov: bool = False, accumulator_dtype: Any = None
) -> GradientTransformation:
    """``optax.trace``: ``t = g + decay * t``; the update is ``t`` (``g + decay * t`` with
    ``nesterov``)."""
    _no_dtype("accumulator_dtype", accumulator_dtype)

    def init(params: Params) -> TraceState:
        return TraceState({k: torch.zeros_like(p) for k, p in params.items()})

    def update(
        updates: Updates, state: TraceState, params: Params | None = None
    ) -> tuple[Updates, TraceState]:
        new = {k: g + decay * state.trace[k] for k, g in updates.items()}
        out = {k: g + decay * new[k] for k, g in updates.items()} if nesterov else new
        return out, TraceState(new)

    return GradientTransformation(init, update)


class WeightDecayScheduleState(NamedTuple):
    """The step count of a scheduled weight decay."""

    count: torch.Tensor  # type: ignore[assignment]  # optax's name (shadows tuple.count)


def add_decayed_weights(
    weight_decay: ScalarOrSchedule = 0.0, mask: Any = None
) -> GradientTransformation:
    """``optax.add_decayed_weights``: ``g + weight_decay * p`` (a number or a schedule),
    on the parameters ``mask`` selects (all without a mask)."""

    def init(params: Params) -> Any:
        return WeightDecayScheduleState(_count0(params)) if callable(weight_decay) else EmptyState()

    def update(updates: Updates, state: Any, params: Params | None = None) -> tuple[Updates, Any]:
        if params is None:
            raise ValueError("add_decayed_weights needs the params: update(updates, state, params)")
        new_state = (
            WeightDecayScheduleState(_increment(state.count)) if callable(weight_decay) else state
        )
        if isinstance(weight_decay, int | float) and weight_decay == 0.0:
            return updates, new_state
        s = weight_decay(state.count) if callable(weight_decay) else weight_decay
        return {k: g + s * params[k] for k, g in updates.items()}, new_state

    t = GradientTransformation(init, update)
    return masked(t, mask) if mask is not None else t


class ScaleByScheduleState(NamedTuple):
    """``optax.ScaleByScheduleState``."""

    count: torch.Tensor  # type: ignore[assignment]  # optax's name (shadows tuple.count)


def scale_by_schedule(step_size_fn: Schedule) -> GradientTransformation:
    """``optax.scale_by_schedule``: ``step_size_fn(count) * g``, count from 0."""
    if not callable(step_size_fn):
        raise TypeError(f"step_size_fn must be a schedule count -> value, got {step_size_fn!r}")

    def init(params: Params) -> ScaleByScheduleState:
        return ScaleByScheduleState(_count0(params))

    def update(
        updates: Updates, state: ScaleByScheduleState, params: Params | None = None
    ) -> tuple[Updates, ScaleByScheduleState]:
        step_size = step_size_fn(state.count)
        out = {k: torch.as_tensor(step_size, dtype=g.dtype) * g for k, g in updates.items()}
        return out, ScaleByScheduleState(_increment(state.count))

    return GradientTransformation(init, update)


def scale_by_learning_rate(
    learning_rate: ScalarOrSchedule | None = None, *, flip_sign: bool = True
) -> GradientTransformation:
    """``optax.scale_by_learning_rate``: ``-learning_rate * g`` (a number or schedule)."""
    if learning_rate is None:
        return identity()
    m = -1 if flip_sign else 1
    if callable(learning_rate):
        lr_fn = learning_rate
        return scale_by_schedule(lambda count: m * lr_fn(count))
    return scale(m * learning_rate)


class ScaleByAdamState(NamedTuple):
    """``optax.ScaleByAdamState``."""

    count: torch.Tensor  # type: ignore[assignment]  # optax's name (shadows tuple.count)
    mu: dict[str, torch.Tensor]
    nu: dict[str, torch.Tensor]


def scale_by_adam(
    b1: float | torch.Tensor = 0.9,
    b2: float | torch.Tensor = 0.999,
    eps: float | torch.Tensor = 1e-8,
    eps_root: float | torch.Tensor = 0.0,
    mu_dtype: Any = None,
    *,
    nesterov: bool = False,
) -> GradientTransformation:
    """``optax.scale_by_adam``: ``m_hat / (sqrt(v_hat + eps_root) + eps)``."""
    _no_dtype("mu_dtype", mu_dtype)

    def init(params: Params) -> ScaleByAdamState:
        zeros = {k: torch.zeros_like(p) for k, p in params.items()}
        return ScaleByAdamState(_count0(params), zeros, {k: z.clone() for k, z in zeros.items()})

    def update(
        updates: Updates, state: ScaleByAdamState, params: Params | None = None
    ) -> tuple[Updates, ScaleByAdamState]:
        mu = _moment(updates, state.mu, b1, 1)
        nu = _moment(updates, state.nu, b2, 2)
        count = _increment(state.count)
        if nesterov:
            m_next = _bias_correction(mu, b1, _increment(count))
            g_now = _bias_correction(updates, b1, count)
            mu_hat = {k: b1 * m_next[k] + (1 - b1) * g_now[k] for k in mu}
        else:
            mu_hat = _bias_correction(mu, b1, count)
        nu_hat = _bias_correction(nu, b2, count)
        out = {k: mu_hat[k] / (torch.sqrt(nu_hat[k] + eps_root) + eps) for k in mu}
        return out, ScaleByAdamState(count, mu, nu)

    return GradientTransformation(init, update)


class ScaleByRssState(NamedTuple):
    """``optax.ScaleByRssState``."""

    sum_of_squares: dict[str, torch.Tensor]


def scale_by_rss(
    initial_accumulator_value: float = 0.1, eps: float | torch.Tensor = 1e-7
) -> GradientTransformation:
    """``optax.scale_by_rss`` (Adagrad's scaling): ``g * rsqrt(sum g^2 + eps)``."""

    def init(params: Params) -> ScaleByRssState:
        return ScaleByRssState(
            {k: torch.full_like(p, initial_accumulator_value) for k, p in params.items()}
        )

    def update(
        updates: Updates, state: ScaleByRssState, params: Params | None = None
    ) -> tuple[Updates, ScaleByRssState]:
        sos = {k: g * g + state.sum_of_squares[k] for k, g in updates.items()}
        inv = {
            k: torch.where(t > 0, torch.rsqrt(t + eps), torch.zeros_like(t)) for k, t in sos.items()
        }
        return {k: inv[k] * g for k, g in updates.items()}, ScaleByRssState(sos)

    return GradientTransformation(init, update)


class ScaleByRmsState(NamedTuple):
    """``optax.ScaleByRmsState`` (``count`` is used with ``bias_correction`` only)."""

    count: torch.Tensor  # type: ignore[assignment]  # optax's name (shadows tuple.count)
    nu: dict[str, torch.Tensor]


def scale_by_rms(
    decay: float | torch.Tensor = 0.9,
    eps: float | torch.Tensor = 1e-8,
    initial_scale: float = 0.0,
    eps_in_sqrt: bool = True,
    bias_correction: bool = False,
) -> GradientTransformation:
    """``optax.scale_by_rms``: ``g * rsqrt(nu + eps)`` (``g / (sqrt(nu) + eps)`` with
    ``eps_in_sqrt=False``)."""

    def init(params: Params) -> ScaleByRmsState:
        return ScaleByRmsState(
            _count0(params), {k: torch.full_like(p, initial_scale) for k, p in params.items()}
        )

    def update(
        updates: Updates, state: ScaleByRmsState, params: Params | None = None
    ) -> tuple[Updates, ScaleByRmsState]:
        nu = _moment(updates, state.nu, decay, 2)
        count = _increment(state.count) if bias_correction else state.count
        nu_hat = _bias_correction(nu, decay, count) if bias_correction else nu
        out = {k: _rms_scaling(nu_hat[k], eps, eps_in_sqrt) * g for k, g in updates.items()}
        return out, ScaleByRmsState(count, nu)

    return GradientTransformation(init, update)


def _rms_scaling(n: torch.Tensor, eps: Any, eps_in_sqrt: bool) -> torch.Tensor:
    return torch.rsqrt(n + eps) if eps_in_sqrt else 1 / (torch.sqrt(n) + eps)


class ScaleByRStdDevState(NamedTuple):
    """``optax.ScaleByRStdDevState`` (``count`` is used with ``bias_correction`` only)."""

    count: torch.Tensor  # type: ignore[assignment]  # optax's name (shadows tuple.count)
    mu: dict[str, torch.Tensor]
    nu: dict[str, torch.Tensor]


def scale_by_stddev(
    decay: float | torch.Tensor = 0.9,
    eps: float | torch.Tensor = 1e-8,
    initial_scale: float = 0.0,
    eps_in_sqrt: bool = True,
    bias_correction: bool = False,
) -> GradientTransformation:
    """``optax.scale_by_stddev`` (centered RMSprop): ``g * rsqrt(nu - mu^2 + eps)``."""

    def init(params: Params) -> ScaleByRStdDevState:
        return ScaleByRStdDevState(
            _count0(params),
            {k: torch.zeros_like(p) for k, p in params.items()},
            {k: torch.full_like(p, initial_scale) for k, p in params.items()},
        )

    def update(
        updates: Updates, state: ScaleByRStdDevState, params: Params | None = None
    ) -> tuple[Updates, ScaleByRStdDevState]:
        mu = _moment(updates, state.mu, decay, 1)
        nu = _moment(updates, state.nu, decay, 2)
        count = _increment(state.count) if bias_correction else state.count
        mu_hat = _bias_correction(mu, decay, count) if bias_correction else mu
        nu_hat = _bias_correction(nu, decay, count) if bias_correction else nu
        out = {
            k: _rms_scaling(nu_hat[k] - mu_hat[k] * mu_hat[k], eps, eps_in_sqrt) * g
            for k, g in updates.items()
        }
        return out, ScaleByRStdDevState(count, mu, nu)

    return GradientTransformation(init, update)


class ScaleByLionState(NamedTuple):
    """``optax.ScaleByLionState``."""

    count: torch.Tensor  # type: ignore[assignment]  # optax's name (shadows tuple.count)
    mu: dict[str, torch.Tensor]


def scale_by_lion(
    b1: float | torch.Tensor = 0.9, b2: float | torch.Tensor = 0.99, mu_dtype: Any = None
) -> GradientTransformation:
    """``optax.scale_by_lion``: ``sign((1 - b1) g + b1 m)``; ``m = (1 - b2) g + b2 m``."""
    _no_dtype("mu_dtype", mu_dtype)

    def init(params: Params) -> ScaleByLionState:
        return ScaleByLionState(
            _count0(params), {k: torch.zeros_like(p) for k, p in params.items()}
        )

    def update(
        updates: Updates, state: ScaleByLionState, params: Params | None = None
    ) -> tuple[Updates, ScaleByLionState]:
        out = {k: torch.sign((1 - b1) * g + b1 * state.mu[k]) for k, g in updates.items()}
        mu = _moment(updates, state.mu, b2, 1)
        return out, ScaleByLionState(_increment(state.count), mu)

    return GradientTransformation(init, update)


def _no_dtype(name: str, value: Any) -> None:
    if value is not None:
        raise ValueError(
            f"purestep.optax keeps state in the parameters' dtype; {name} must be None"
        )


# ------------------------------------------------------------------------------ aliases


def sgd(
    learning_rate: ScalarOrSchedule,
    momentum: float | None = None,
    nesterov: bool = False,
    accumulator_dtype: Any = None,
) -> GradientTransformation:
    """``optax.sgd``: ``chain(trace(momentum, nesterov), scale_by_learning_rate(lr))``."""
    first = trace(momentum, nesterov, accumulator_dtype) if momentum is not None else identity()
    return chain(first, scale_by_learning_rate(learning_rate))


def adam(
    learning_rate: ScalarOrSchedule,
    b1: float | torch.Tensor = 0.9,
    b2: float | torch.Tensor = 0.999,
    eps: float | torch.Tensor = 1e-8,
    eps_root: float | torch.Tensor = 0.0,
    mu_dtype: Any = None,
    *,
    nesterov: bool = False,
) -> GradientTransformation:
    """``optax.adam``: ``chain(scale_by_adam(...), scale_by_learning_rate(lr))``."""
    return chain(
        scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov),
        scale_by_learning_rate(learning_rate),
    )


def adamw(
    learning_rate: ScalarOrSchedule,
    b1: float | torch.Tensor = 0.9,
    b2: float | torch.Tensor = 0.999,
    eps: float | torch.Tensor = 1e-8,
    eps_root: float | torch.Tensor = 0.0,
    mu_dtype: Any = None,
    weight_decay: ScalarOrSchedule = 1e-4,
    mask: Any = None,
    *,
    nesterov: bool = False,
) -> GradientTransformation:
    """``optax.adamw``: ``chain(scale_by_adam, add_decayed_weights(weight_decay, mask),
    scale_by_learning_rate(lr))``."""
    return chain(
        scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )


def rmsprop(
    learning_rate: ScalarOrSchedule,
    decay: float | torch.Tensor = 0.9,
    eps: float | torch.Tensor = 1e-8,
    initial_scale: float = 0.0,
    eps_in_sqrt: bool = True,
    centered: bool = False,
    momentum: float | None = None,
    nesterov: bool = False,
    bias_correction: bool = False,
) -> GradientTransformation:
    """``optax.rmsprop``: ``scale_by_rms`` (``scale_by_stddev`` when centered), the
    learning rate, then ``trace(momentum)``."""
    scaling = scale_by_stddev if centered else scale_by_rms
    return chain(
        scaling(decay, eps, initial_scale, eps_in_sqrt, bias_correction),
        scale_by_learning_rate(learning_rate),
        trace(momentum, nesterov) if momentum is not None else identity(),
    )


def adagrad(
    learning_rate: ScalarOrSchedule,
    initial_accumulator_value: float = 0.1,
    eps: float | torch.Tensor = 1e-7,
) -> GradientTransformation:
    """``optax.adagrad``: ``chain(scale_by_rss(...), scale_by_learning_rate(lr))``."""
    return chain(
        scale_by_rss(initial_accumulator_value, eps), scale_by_learning_rate(learning_rate)
    )


def lion(
    learning_rate: ScalarOrSchedule,
    b1: float | torch.Tensor = 0.9,
    b2: float | torch.Tensor = 0.99,
    mu_dtype: Any = None,
    weight_decay: ScalarOrSchedule = 1e-3,
    mask: Any = None,
) -> GradientTransformation:
    """``optax.lion``: ``chain(scale_by_lion, add_decayed_weights(weight_decay, mask),
    scale_by_learning_rate(lr))``."""
    return chain(
        scale_by_lion(b1, b2, mu_dtype),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )


# ----------------------------------------------------------------------------- wrappers


def _pick(cond: torch.Tensor, if_true: Any, if_false: Any) -> Any:
    return tree_map(lambda a, b: torch.where(cond, a, b).to(b.dtype), if_true, if_false)


class ApplyIfFiniteState(NamedTuple):
    """``optax.ApplyIfFiniteState``."""

    notfinite_count: torch.Tensor
    last_finite: torch.Tensor
    total_notfinite: torch.Tensor
    inner_state: Any


def apply_if_finite(
    inner: GradientTransformation, max_consecutive_errors: int
) -> GradientTransformation:
    """``optax.apply_if_finite``: a step whose updates hold a NaN or inf gives zero updates
    and keeps the inner state, unless more than ``max_consecutive_errors`` came in a row."""

    def init(params: Params) -> ApplyIfFiniteState:
        zero = _count0(params)
        return ApplyIfFiniteState(
            zero,
            torch.ones((), dtype=torch.bool, device=zero.device),
            zero.clone(),
            inner.init(params),
        )

    def update(
        updates: Updates, state: ApplyIfFiniteState, params: Params | None = None
    ) -> tuple[Updates, ApplyIfFiniteState]:
        finite = torch.stack([torch.isfinite(g).all() for g in updates.values()]).all()
        notfinite = torch.where(
            finite, torch.zeros_like(state.notfinite_count), _increment(state.notfinite_count)
        )
        apply = finite | (notfinite > max_consecutive_errors)
        new_updates, new_inner = inner.update(updates, state.inner_state, params)  # type: ignore[arg-type]
        zeros = {k: torch.zeros_like(g) for k, g in updates.items()}
        total = torch.where(finite, state.total_notfinite, _increment(state.total_notfinite))
        return _pick(apply, new_updates, zeros), ApplyIfFiniteState(
            notfinite, finite, total, _pick(apply, new_inner, state.inner_state)
        )

    return GradientTransformation(init, update)


class MultiStepsState(NamedTuple):
    """``optax.MultiStepsState``."""

    mini_step: torch.Tensor
    gradient_step: torch.Tensor
    inner_opt_state: Any
    acc_grads: dict[str, torch.Tensor]
    skip_state: tuple[()] = ()


class MultiSteps(GradientTransformation):
    """``optax.MultiSteps``: accumulate ``every_k_schedule`` gradients (their running mean
    with ``use_grad_mean``), then apply ``opt`` once; zero updates in between.

    The object is itself a ``GradientTransformation`` (``.init``, ``.update``), so it goes
    into ``ps.make_train_step`` as it is; ``gradient_transformation()`` and
    ``has_updated(state)`` are there as in optax."""

    def __new__(
        cls,
        opt: GradientTransformation,
        every_k_schedule: int | Schedule,
        use_grad_mean: bool = True,
        should_skip_update_fn: Any = None,
    ) -> MultiSteps:
        if should_skip_update_fn is not None:
            raise ValueError("purestep.optax.MultiSteps does not take should_skip_update_fn")
        if not isinstance(opt, GradientTransformation):
            raise TypeError(f"MultiSteps wraps a GradientTransformation, got {type(opt).__name__}")
        k_fn: Schedule = (
            (lambda step: every_k_schedule)
            if isinstance(every_k_schedule, int)
            else every_k_schedule
        )

        def init(params: Params) -> MultiStepsState:
            zero = _count0(params)
            return MultiStepsState(
                zero,
                zero.clone(),
                opt.init(params),
                {k: torch.zeros_like(p) for k, p in params.items()},
            )

        def update(
            updates: Updates, state: MultiStepsState, params: Params | None = None
        ) -> tuple[Updates, MultiStepsState]:
            k_steps = k_fn(state.gradient_step)
            if use_grad_mean:
                acc = {
                    k: a + (updates[k] - a) / (state.mini_step + 1).to(a.dtype)
                    for k, a in state.acc_grads.items()
                }
            else:
                acc = {k: updates[k] + a for k, a in state.acc_grads.items()}
            final, new_inner = opt.update(acc, state.inner_opt_state, params)  # type: ignore[arg-type]
            emit = state.mini_step == k_steps - 1
            gradient_step = torch.where(emit, _increment(state.gradient_step), state.gradient_step)
            new_state = MultiStepsState(
                _increment(state.mini_step) % k_steps,
                gradient_step,
                _pick(emit, new_inner, state.inner_opt_state),
                {k: torch.where(emit, torch.zeros_like(a), a) for k, a in acc.items()},
            )
            return {
                k: torch.where(emit, u, torch.zeros_like(u)) for k, u in final.items()
            }, new_state

        return super().__new__(cls, init, update)

    def gradient_transformation(self) -> GradientTransformation:
        """The plain ``GradientTransformation`` (optax's accessor)."""
        return GradientTransformation(self.init, self.update)

    @staticmethod
    def has_updated(state: MultiStepsState) -> torch.Tensor:
        """Whether the last ``update`` applied the inner optimizer."""
        return (state.mini_step == 0) & (state.gradient_step > 0)


class InjectHyperparamsState(NamedTuple):
    """``optax.InjectHyperparamsState``: ``hyperparams`` holds each numeric or scheduled
    hyperparameter as a 0-d tensor; change one with ``purestep.optim.set_hyperparam``
    (a new state) rather than by assigning into the dict."""

    count: torch.Tensor  # type: ignore[assignment]  # optax's name (shadows tuple.count)
    hyperparams: dict[str, torch.Tensor]
    inner_state: Any


# Found by get_hyperparam/set_hyperparam as a rule state is (they read only .hyperparams);
# not through rule_state, which wants torch's field name "step" for optax's "count".
setattr(InjectHyperparamsState, _RULE_STATE_MARK, True)


def inject_hyperparams(
    inner_factory: Callable[..., GradientTransformation],
    static_args: str | Iterable[str] = (),
    hyperparam_dtype: torch.dtype | None = None,
) -> Callable[..., GradientTransformation]:
    """``optax.inject_hyperparams``: ``inner_factory``'s numeric arguments held as tensors in
    the state, and callables (schedules) evaluated at the step count every update."""
    static = {static_args} if isinstance(static_args, str) else set(static_args)
    signature = inspect.signature(inner_factory)
    if not static.issubset(signature.parameters):
        raise ValueError(
            f"static_args must name parameters of {inner_factory.__name__}: "
            f"{sorted(static - set(signature.parameters))} are not"
        )

    def wrapped(*args: Any, **kwargs: Any) -> GradientTransformation:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        scheduled: dict[str, Schedule] = {}
        numeric: dict[str, Any] = {}
        other: dict[str, Any] = {}
        for name, value in bound.arguments.items():
            if name in static or isinstance(value, bool):
                other[name] = value
            elif callable(value):
                scheduled[name] = value
            elif isinstance(value, int | float | torch.Tensor):
                numeric[name] = value
            else:
                other[name] = value

        def dtype_of(params: Params) -> torch.dtype:
            if hyperparam_dtype is not None:
                return hyperparam_dtype
            floats = [p.dtype for p in params.values() if p.is_floating_point()]
            return max(floats, key=lambda d: torch.finfo(d).bits) if floats else torch.float32

        def as_tensor(value: Any, dtype: torch.dtype, device: Any) -> torch.Tensor:
            t = torch.as_tensor(value, device=device)
            return t.to(dtype) if t.is_floating_point() or isinstance(value, float) else t

        def init(params: Params) -> InjectHyperparamsState:
            count = _count0(params)
            dtype = dtype_of(params)
            hp = {k: as_tensor(v, dtype, count.device) for k, v in numeric.items()}
            hp.update({k: as_tensor(f(count), dtype, count.device) for k, f in scheduled.items()})
            return InjectHyperparamsState(count, hp, inner_factory(**other, **hp).init(params))

        def update(
            updates: Updates, state: InjectHyperparamsState, params: Params | None = None
        ) -> tuple[Updates, InjectHyperparamsState]:
            dtype = dtype_of(params if params is not None else updates)
            hp = dict(state.hyperparams)
            hp.update(
                {
                    k: as_tensor(f(state.count), dtype, state.count.device)
                    for k, f in scheduled.items()
                }
            )
            new_updates, inner = inner_factory(**other, **hp).update(
                updates,
                state.inner_state,
                params,  # type: ignore[arg-type]
            )
            return new_updates, InjectHyperparamsState(_increment(state.count), hp, inner)

        return GradientTransformation(init, update)

    wrapped.__name__ = f"inject_hyperparams({getattr(inner_factory, '__name__', 'factory')})"
    wrapped.__doc__ = inner_factory.__doc__
    return wrapped


# ---------------------------------------------------------------------------- schedules


def constant_schedule(value: float) -> Schedule:
    """``optax.constant_schedule``."""
    return lambda count: _f32(value)


def polynomial_schedule(
    init_value: float,
    end_value: float,
    power: float,
    transition_steps: int,
    transition_begin: int = 0,
) -> Schedule:
    """``optax.polynomial_schedule``: from ``init_value`` to ``end_value`` over
    ``transition_steps`` as ``(init - end) * (1 - t/T)**power + end``."""
    if transition_steps <= 0:
        return constant_schedule(init_value)
    transition_begin = max(transition_begin, 0)

    def schedule(count: Any) -> torch.Tensor:
        c = torch.clamp(torch.as_tensor(count) - transition_begin, 0, transition_steps)
        frac = 1 - _f32(c) / transition_steps
        return (init_value - end_value) * frac**power + end_value

    return schedule


def linear_schedule(
    init_value: float, end_value: float, transition_steps: int, transition_begin: int = 0
) -> Schedule:
    """``optax.linear_schedule``: ``polynomial_schedule`` with ``power=1``."""
    return polynomial_schedule(init_value, end_value, 1, transition_steps, transition_begin)


def piecewise_constant_schedule(
    init_value: float, boundaries_and_scales: Mapping[int, float] | None = None
) -> Schedule:
    """``optax.piecewise_constant_schedule``: ``init_value`` times every ``scale`` whose
    boundary the count has reached."""
    if boundaries_and_scales is not None and not all(
        s >= 0.0 for s in boundaries_and_scales.values()
    ):
        raise ValueError("piecewise_constant_schedule expects non-negative scale factors")

    def schedule(count: Any) -> torch.Tensor:
        v = _f32(init_value)
        c = torch.as_tensor(count)
        for threshold, s in sorted((boundaries_and_scales or {}).items()):
            indicator = torch.clamp(torch.sign(_f32(threshold - c)), min=0.0)
            v = v * indicator + (1 - indicator) * s * v
        return v

    return schedule


def exponential_decay(
    init_value: float,
    transition_steps: int,
    decay_rate: float,
    transition_begin: int = 0,
    staircase: bool = False,
    end_value: float | None = None,
) -> Schedule:
    """``optax.exponential_decay``: ``init_value * decay_rate ** ((count - begin) /
    transition_steps)`` (floored with ``staircase``), clipped at ``end_value``."""
    if transition_steps <= 0 or decay_rate == 0:
        return constant_schedule(init_value)
    transition_begin = max(transition_begin, 0)

    def schedule(count: Any) -> torch.Tensor:
        decreased = torch.as_tensor(count) - transition_begin
        p = _f32(decreased) / transition_steps
        if staircase:
            p = torch.floor(p)
        value = torch.where(
            decreased <= 0, _f32(init_value), init_value * torch.pow(_f32(decay_rate), p)
        )
        if end_value is not None:
            bound = _f32(end_value)
            value = torch.maximum(value, bound) if decay_rate < 1.0 else torch.minimum(value, bound)
        return value

    return schedule


def cosine_decay_schedule(
    init_value: float, decay_steps: int, alpha: float = 0.0, exponent: float = 1.0
) -> Schedule:
    """``optax.cosine_decay_schedule``: ``init_value * ((1 - alpha) * (0.5 * (1 +
    cos(pi * min(count, T) / T)))**exponent + alpha)``."""
    if not decay_steps > 0:
        raise ValueError(
            f"The cosine_decay_schedule requires positive decay_steps, got {decay_steps=}."
        )

    def schedule(count: Any) -> torch.Tensor:
        c = torch.clamp(_f32(count), max=float(decay_steps))
        cosine = 0.5 * (1 + torch.cos(math.pi * c / float(decay_steps)))
        return init_value * ((1 - alpha) * cosine**exponent + alpha)

    return schedule


def join_schedules(schedules: Sequence[Schedule], boundaries: Sequence[int]) -> Schedule:
    """``optax.join_schedules``: ``schedules[i+1]`` from ``boundaries[i]`` on, fed the count
    since that boundary."""

    def schedule(step: Any) -> torch.Tensor:
        s = torch.as_tensor(step)
        output = _f32(schedules[0](s))
        for boundary, nxt in zip(boundaries, schedules[1:], strict=False):
            output = torch.where(s < boundary, output, _f32(nxt(s - boundary)))
        return output

    return schedule


def warmup_cosine_decay_schedule(
    init_value: float,
    peak_value: float,
    warmup_steps: int,
    decay_steps: int,
    end_value: float = 0.0,
    exponent: float = 1.0,
) -> Schedule:
    """``optax.warmup_cosine_decay_schedule``: linear from ``init_value`` to ``peak_value``
    over ``warmup_steps``, then cosine down to ``end_value`` at ``decay_steps`` (counted from
    the start)."""
    alpha = 0.0 if peak_value == 0.0 else end_value / peak_value
    return join_schedules(
        [
            linear_schedule(init_value, peak_value, warmup_steps),
            cosine_decay_schedule(peak_value, decay_steps - warmup_steps, alpha, exponent),
        ],
        [warmup_steps],
    )
