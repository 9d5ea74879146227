r"""Float64 NumPy reference implementations of every optimizer rule and lr schedule.

Written from the papers and the math in the torch.optim documentation (the "algorithm"
boxes of ``torch.optim.X`` and the formulas of ``torch.optim.lr_scheduler``), in plain
NumPy with no torch and no attempt to reproduce torch's operation order: each rule is the
textbook formula, so agreement with ``purestep.optim`` to ~1e-12 in float64 checks the
*math* (which formula, which step count, which term where), independently of the bitwise
tests against torch.optim itself.

Optimizers: ``rule(theta0, grads, **hyperparameters) -> trajectory``, with ``theta0`` the
initial parameter array, ``grads`` the gradient of each step, and the trajectory an array of
shape ``(len(grads), *theta0.shape)``: the parameters after each step. ``maximize`` ascends
(the gradient is negated before anything else, as every torch.optim rule does). Every
operation runs in ``dtype``: float64 by default; ``np.longdouble`` (x87 extended precision
on x86-64 Linux, 11 more bits) gives a reference for the same float64 inputs that is ~2000
times closer to exact arithmetic, which tells how far float64 itself can be trusted on a
given run.

Schedules: closed forms. ``name_at(base_lr, t, **arguments)`` is the lr at epoch ``t``
(``t = 0`` after construction, ``t`` after the ``t``-th ``scheduler.step()``), and
``trajectory(name_at, base_lr, steps, **arguments)`` the lrs ``[lr(0), ..., lr(steps)]``
as a float64 array. ``reduce_lr_on_plateau(lr, metrics, ...)`` gives that trajectory for
a metric sequence.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

Array = np.ndarray
LrAt = Callable[[float, int], float]  # (base_lr, epoch) -> lr


# --------------------------------------------------------------------------------------
# Optimizer rules
# --------------------------------------------------------------------------------------


def _start(theta0: Array, dtype: type) -> Array:
    return np.array(theta0, dtype=dtype, copy=True)


def _scalars(dtype: type, *values: float) -> list[np.floating]:
    """The hyperparameters as ``dtype`` scalars, so that every operation of a rule (bias
    corrections and powers included) runs in ``dtype``."""
    return [dtype(x) for x in values]


def _gradient(grad: Array, maximize: bool, dtype: type) -> Array:
    g = np.asarray(grad, dtype=dtype)
    return -g if maximize else g


def sgd(
    theta0: Array,
    grads: Sequence[Array],
    *,
    lr: float,
    momentum: float = 0.0,
    dampening: float = 0.0,
    weight_decay: float = 0.0,
    nesterov: bool = False,
    maximize: bool = False,
    dtype: type = np.float64,
) -> Array:
    """SGD with (heavy-ball or Nesterov) momentum, dampening and L2 weight decay.

    b_1 = g_1, b_t = mu b_{t-1} + (1 - tau) g_t; step g + mu b (Nesterov) or b.
    """
    lr, mu, tau, wd = _scalars(dtype, lr, momentum, dampening, weight_decay)
    theta = _start(theta0, dtype)
    buf = np.zeros_like(theta)
    out = []
    for t, grad in enumerate(grads, start=1):
        g = _gradient(grad, maximize, dtype)
        if wd != 0:
            g = g + wd * theta
        if mu != 0:
            buf = g.copy() if t == 1 else mu * buf + (1 - tau) * g
            g = g + mu * buf if nesterov else buf
        theta = theta - lr * g
        out.append(theta)
    return np.stack(out)


def adam(
    theta0: Array,
    grads: Sequence[Array],
    *,
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    amsgrad: bool = False,
    maximize: bool = False,
    decoupled_weight_decay: bool = False,
    dtype: type = np.float64,
) -> Array:
    """Adam (Kingma & Ba 2015) with L2 weight decay, or decoupled decay (AdamW,
    Loshchilov & Hutter 2019), and the AMSGrad running maximum (Reddi et al. 2018).

    m_t = b1 m + (1-b1) g, v_t = b2 v + (1-b2) g^2, m^ = m/(1-b1^t),
    v^ = max_{s<=t} v_s / (1-b2^t) (AMSGrad) or v_t/(1-b2^t),
    theta -= lr m^ / (sqrt(v^) + eps).
    """
    lr, b1, b2, eps, wd = _scalars(dtype, lr, *betas, eps, weight_decay)
    theta = _start(theta0, dtype)
    m = np.zeros_like(theta)
    v = np.zeros_like(theta)
    v_max = np.zeros_like(theta)
    out = []
    for t, grad in enumerate(grads, start=1):
        g = _gradient(grad, maximize, dtype)
        if wd != 0:
            if decoupled_weight_decay:
                theta = theta - lr * wd * theta
            else:
                g = g + wd * theta
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat = m / (1 - b1**t)
        if amsgrad:
            v_max = np.maximum(v_max, v)
            v_hat = v_max / (1 - b2**t)
        else:
            v_hat = v / (1 - b2**t)
        theta = theta - lr * m_hat / (np.sqrt(v_hat) + eps)
        out.append(theta)
    return np.stack(out)


def adamw(
    theta0: Array,
    grads: Sequence[Array],
    *,
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 1e-2,
    amsgrad: bool = False,
    maximize: bool = False,
    dtype: type = np.float64,
) -> Array:
    """AdamW: Adam with the decay applied to the parameters, theta -= lr wd theta."""
    return adam(
        theta0,
        grads,
        lr=lr,
        betas=betas,
        eps=eps,
        weight_decay=weight_decay,
        amsgrad=amsgrad,
        maximize=maximize,
        decoupled_weight_decay=True,
        dtype=dtype,
    )


def rmsprop(
    theta0: Array,
    grads: Sequence[Array],
    *,
    lr: float,
    alpha: float = 0.99,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    centered: bool = False,
    maximize: bool = False,
    dtype: type = np.float64,
) -> Array:
    """RMSprop (Hinton's lecture 6e; centered variant from Graves 2013).

    v = a v + (1-a) g^2; centered: gbar = a gbar + (1-a) g, v~ = v - gbar^2;
    d = sqrt(v~) + eps; momentum: b = mu b + g/d, theta -= lr b; else theta -= lr g/d.
    """
    lr, alpha, eps, wd, mu = _scalars(dtype, lr, alpha, eps, weight_decay, momentum)
    theta = _start(theta0, dtype)
    v = np.zeros_like(theta)
    g_avg = np.zeros_like(theta)
    buf = np.zeros_like(theta)
    out = []
    for grad in grads:
        g = _gradient(grad, maximize, dtype)
        if wd != 0:
            g = g + wd * theta
        v = alpha * v + (1 - alpha) * g * g
        v_tilde = v
        if centered:
            g_avg = alpha * g_avg + (1 - alpha) * g
            v_tilde = v - g_avg * g_avg
        denom = np.sqrt(v_tilde) + eps
        if mu > 0:
            buf = mu * buf + g / denom
            theta = theta - lr * buf
        else:
            theta = theta - lr * g / denom
        out.append(theta)
    return np.stack(out)


def adagrad(
    theta0: Array,
    grads: Sequence[Array],
    *,
    lr: float,
    lr_decay: float = 0.0,
    weight_decay: float = 0.0,
    initial_accumulator_value: float = 0.0,
    eps: float = 1e-10,
    maximize: bool = False,
    dtype: type = np.float64,
) -> Array:
    """Adagrad (Duchi et al. 2011): s = s + g^2 from s_0 = initial_accumulator_value,
    theta -= lr / (1 + (t-1) lr_decay) * g / (sqrt(s) + eps)."""
    lr, eta, wd, s0, eps = _scalars(
        dtype, lr, lr_decay, weight_decay, initial_accumulator_value, eps
    )
    theta = _start(theta0, dtype)
    s = np.full_like(theta, s0)
    out = []
    for t, grad in enumerate(grads, start=1):
        g = _gradient(grad, maximize, dtype)
        lr_t = lr / (1 + (t - 1) * eta)
        if wd != 0:
            g = g + wd * theta
        s = s + g * g
        theta = theta - lr_t * g / (np.sqrt(s) + eps)
        out.append(theta)
    return np.stack(out)


def adamax(
    theta0: Array,
    grads: Sequence[Array],
    *,
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    maximize: bool = False,
    dtype: type = np.float64,
) -> Array:
    """Adamax (Kingma & Ba 2015, section 7): the infinity-norm Adam.

    m = b1 m + (1-b1) g, u = max(b2 u, |g| + eps), theta -= lr m / ((1-b1^t) u).
    """
    lr, b1, b2, eps, wd = _scalars(dtype, lr, *betas, eps, weight_decay)
    theta = _start(theta0, dtype)
    m = np.zeros_like(theta)
    u = np.zeros_like(theta)
    out = []
    for t, grad in enumerate(grads, start=1):
        g = _gradient(grad, maximize, dtype)
        if wd != 0:
            g = g + wd * theta
        m = b1 * m + (1 - b1) * g
        u = np.maximum(b2 * u, np.abs(g) + eps)
        theta = theta - lr * m / ((1 - b1**t) * u)
        out.append(theta)
    return np.stack(out)


def nadam(
    theta0: Array,
    grads: Sequence[Array],
    *,
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    momentum_decay: float = 4e-3,
    decoupled_weight_decay: bool = False,
    maximize: bool = False,
    dtype: type = np.float64,
) -> Array:
    """NAdam (Dozat 2016) with the momentum schedule mu_t = b1 (1 - 0.96^(t psi) / 2).

    m^ = mu_{t+1} m / (1 - prod_{i<=t+1} mu_i) + (1 - mu_t) g / (1 - prod_{i<=t} mu_i),
    v^ = v / (1 - b2^t), theta -= lr m^ / (sqrt(v^) + eps).
    """
    lr, b1, b2, eps, wd, psi, base = _scalars(
        dtype, lr, *betas, eps, weight_decay, momentum_decay, 0.96
    )
    theta = _start(theta0, dtype)
    m = np.zeros_like(theta)
    v = np.zeros_like(theta)
    mu_prod = dtype(1)
    out = []
    for t, grad in enumerate(grads, start=1):
        g = _gradient(grad, maximize, dtype)
        if wd != 0:
            if decoupled_weight_decay:
                theta = theta - lr * wd * theta
            else:
                g = g + wd * theta
        mu_t = b1 * (1 - base ** (t * psi) / 2)
        mu_next = b1 * (1 - base ** ((t + 1) * psi) / 2)
        mu_prod = mu_prod * mu_t
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat = mu_next * m / (1 - mu_prod * mu_next) + (1 - mu_t) * g / (1 - mu_prod)
        v_hat = v / (1 - b2**t)
        theta = theta - lr * m_hat / (np.sqrt(v_hat) + eps)
        out.append(theta)
    return np.stack(out)


def radam(
    theta0: Array,
    grads: Sequence[Array],
    *,
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    decoupled_weight_decay: bool = False,
    maximize: bool = False,
    dtype: type = np.float64,
) -> Array:
    """RAdam (Liu et al. 2020): Adam with the variance rectification r_t once the
    approximated SMA length rho_t exceeds 5, plain bias-corrected momentum before.

    rho_inf = 2/(1-b2) - 1, rho_t = rho_inf - 2 t b2^t / (1 - b2^t),
    r_t = sqrt((rho_t-4)(rho_t-2) rho_inf / ((rho_inf-4)(rho_inf-2) rho_t)),
    l_t = sqrt(1 - b2^t) / (sqrt(v) + eps).
    """
    lr, b1, b2, eps, wd = _scalars(dtype, lr, *betas, eps, weight_decay)
    theta = _start(theta0, dtype)
    m = np.zeros_like(theta)
    v = np.zeros_like(theta)
    rho_inf = 2 / (1 - b2) - 1
    out = []
    for t, grad in enumerate(grads, start=1):
        g = _gradient(grad, maximize, dtype)
        if wd != 0:
            if decoupled_weight_decay:
                theta = theta - lr * wd * theta
            else:
                g = g + wd * theta
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat = m / (1 - b1**t)
        rho_t = rho_inf - 2 * t * b2**t / (1 - b2**t)
        if rho_t > 5:
            l_t = np.sqrt(1 - b2**t) / (np.sqrt(v) + eps)
            r_t = np.sqrt(
                (rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)
            )
            theta = theta - lr * m_hat * r_t * l_t
        else:
            theta = theta - lr * m_hat
        out.append(theta)
    return np.stack(out)


def adadelta(
    theta0: Array,
    grads: Sequence[Array],
    *,
    lr: float = 1.0,
    rho: float = 0.9,
    eps: float = 1e-6,
    weight_decay: float = 0.0,
    maximize: bool = False,
    dtype: type = np.float64,
) -> Array:
    """Adadelta (Zeiler 2012): v = rho v + (1-rho) g^2,
    dx = sqrt(u + eps) / sqrt(v + eps) g, u = rho u + (1-rho) dx^2, theta -= lr dx."""
    lr, rho, eps, wd = _scalars(dtype, lr, rho, eps, weight_decay)
    theta = _start(theta0, dtype)
    v = np.zeros_like(theta)
    u = np.zeros_like(theta)
    out = []
    for grad in grads:
        g = _gradient(grad, maximize, dtype)
        if wd != 0:
            g = g + wd * theta
        v = rho * v + (1 - rho) * g * g
        dx = np.sqrt(u + eps) / np.sqrt(v + eps) * g
        u = rho * u + (1 - rho) * dx * dx
        theta = theta - lr * dx
        out.append(theta)
    return np.stack(out)


# --------------------------------------------------------------------------------------
# Learning-rate schedules: closed forms at epoch t
# --------------------------------------------------------------------------------------


def trajectory(lr_at: Callable[..., float], base_lr: float, steps: int, **arguments: Any) -> Array:
    """``[lr_at(base_lr, 0, **arguments), ..., lr_at(base_lr, steps, **arguments)]``."""
    return np.array([lr_at(base_lr, t, **arguments) for t in range(steps + 1)], dtype=np.float64)


def step_lr_at(base_lr: float, t: int, *, step_size: int, gamma: float = 0.1) -> float:
    """StepLR: base_lr gamma^floor(t / step_size)."""
    return base_lr * gamma ** (t // step_size)


def multi_step_lr_at(
    base_lr: float, t: int, *, milestones: Sequence[int], gamma: float = 0.1
) -> float:
    """MultiStepLR: base_lr gamma^(number of milestones <= t, repeats counted)."""
    return base_lr * gamma ** sum(1 for m in milestones if m <= t)


def exponential_lr_at(base_lr: float, t: int, *, gamma: float) -> float:
    """ExponentialLR: base_lr gamma^t."""
    return base_lr * gamma**t


def cosine_annealing_lr_at(base_lr: float, t: int, *, T_max: int, eta_min: float = 0.0) -> float:
    """CosineAnnealingLR (SGDR without restarts, Loshchilov & Hutter 2017):
    eta_min + (base_lr - eta_min) (1 + cos(pi t / T_max)) / 2, for every t (the cosine
    keeps going: back up after T_max)."""
    return eta_min + 0.5 * (base_lr - eta_min) * (1.0 + math.cos(math.pi * t / T_max))


def cosine_annealing_warm_restarts_at(
    base_lr: float, t: int, *, T_0: int, T_mult: int = 1, eta_min: float = 0.0
) -> float:
    """CosineAnnealingWarmRestarts (SGDR): cycles of lengths T_0, T_0 T_mult, T_0 T_mult^2,
    ...; with T_cur the epochs since the start of the cycle holding t and T_i its length,
    eta_min + (base_lr - eta_min) (1 + cos(pi T_cur / T_i)) / 2."""
    start, length = 0, T_0
    while t >= start + length:
        start, length = start + length, length * T_mult
    t_cur = t - start
    return eta_min + 0.5 * (base_lr - eta_min) * (1.0 + math.cos(math.pi * t_cur / length))


def linear_lr_at(
    base_lr: float,
    t: int,
    *,
    start_factor: float = 1.0 / 3,
    end_factor: float = 1.0,
    total_iters: int = 5,
) -> float:
    """LinearLR: base_lr (s + (e - s) min(t, T) / T)."""
    frac = min(t, total_iters) / total_iters
    return base_lr * (start_factor + (end_factor - start_factor) * frac)


def constant_lr_at(
    base_lr: float, t: int, *, factor: float = 1.0 / 3, total_iters: int = 5
) -> float:
    """ConstantLR: base_lr factor before epoch total_iters, base_lr from then on."""
    return base_lr * factor if t < total_iters else base_lr


def polynomial_lr_at(base_lr: float, t: int, *, total_iters: int = 5, power: float = 1.0) -> float:
    """PolynomialLR: base_lr (1 - min(t, T) / T)^power."""
    return base_lr * (1.0 - min(t, total_iters) / total_iters) ** power


def lambda_lr_at(base_lr: float, t: int, *, lr_lambda: Callable[[int], float]) -> float:
    """LambdaLR: base_lr lr_lambda(t), construction (t = 0) included."""
    return base_lr * lr_lambda(t)


def multiplicative_lr_at(base_lr: float, t: int, *, lr_lambda: Callable[[int], float]) -> float:
    """MultiplicativeLR: base_lr prod_{k=1..t} lr_lambda(k) (construction does not multiply)."""
    factor = 1.0
    for k in range(1, t + 1):
        factor *= lr_lambda(k)
    return base_lr * factor


def one_cycle_lr_at(
    base_lr: float,
    t: int,
    *,
    max_lr: float,
    total_steps: int,
    pct_start: float = 0.3,
    anneal_strategy: str = "cos",
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    three_phase: bool = False,
) -> float:
    """OneCycleLR (Smith & Topin 2017; fastai's two phases, or the paper's three); the
    optimizer's ``base_lr`` plays no part.

    initial = max_lr / div_factor, minimum = initial / final_div_factor, N = total_steps;
    phases (as [start step, end step]: from lr -> to lr), the last one also holding any
    later step:

    * two phases: [0, pN - 1]: initial -> max_lr, [pN - 1, N - 1]: max_lr -> minimum;
    * three: [0, pN - 1]: initial -> max_lr, [pN - 1, 2pN - 2]: max_lr -> initial,
      [2pN - 2, N - 1]: initial -> minimum;

    and within a phase, with pct = (t - start) / (end - start), the cosine anneal
    to + (from - to) (1 + cos(pi pct)) / 2 or the linear one from + (to - from) pct.
    """
    initial = max_lr / div_factor
    minimum = initial / final_div_factor
    p, n = pct_start, total_steps
    if three_phase:
        phases = [
            (0.0, p * n - 1, initial, max_lr),
            (p * n - 1, 2 * p * n - 2, max_lr, initial),
            (2 * p * n - 2, n - 1, initial, minimum),
        ]
    else:
        phases = [(0.0, p * n - 1, initial, max_lr), (p * n - 1, n - 1, max_lr, minimum)]
    start, end, lr_from, lr_to = next(
        (ph for ph in phases if t <= ph[1]),
        phases[-1],
    )
    pct = (t - start) / (end - start)
    if anneal_strategy == "cos":
        return lr_to + 0.5 * (lr_from - lr_to) * (1.0 + math.cos(math.pi * pct))
    return lr_from + (lr_to - lr_from) * pct


def sequential_lr_at(
    base_lr: float, t: int, *, children: Sequence[LrAt], milestones: Sequence[int]
) -> float:
    """SequentialLR: child i = #{milestones <= t} runs, restarted at its milestone, so the lr
    is child_i(base_lr, t - milestones[i-1]) (t itself for the first child). Holds for
    children with a closed form (every schedule except MultiplicativeLR, whose restart
    multiplies the current lr)."""
    i = bisect_right(list(milestones), t)
    start = milestones[i - 1] if i > 0 else 0
    return children[i](base_lr, t - start)


def chained_scheduler_at(base_lr: float, t: int, *, children: Sequence[LrAt]) -> float:
    """ChainedScheduler of multiplicative schedules (each lr_t = lr_{t-1} times a factor
    of t alone: StepLR, MultiStepLR, ExponentialLR, LinearLR, ConstantLR, PolynomialLR,
    MultiplicativeLR): the product of their factors, base_lr prod_i child_i(1, t)."""
    lr = base_lr
    for child in children:
        lr *= child(1.0, t)
    return lr


def reduce_lr_on_plateau(
    lr: float,
    metrics: Sequence[float],
    *,
    mode: str = "min",
    factor: float = 0.1,
    patience: int = 10,
    threshold: float = 1e-4,
    threshold_mode: str = "rel",
    cooldown: int = 0,
    min_lr: float = 0.0,
    eps: float = 1e-8,
) -> Array:
    """ReduceLROnPlateau: ``[lr, lr after metrics[0], ...]``.

    A metric is an improvement over the best so far (+-inf at first) when it is below
    best (1 - threshold) / best - threshold (mode min, rel / abs) or above best
    (1 + threshold) / best + threshold (mode max). An epoch without improvement is a bad
    epoch, except during the ``cooldown`` epochs after a reduction, which do not count.
    When the bad epochs since the last improvement or reduction exceed ``patience``, the lr
    becomes max(lr factor, min_lr), unless that lowers it by eps or less.
    """
    best = math.inf if mode == "min" else -math.inf
    bad = 0
    cooling = 0
    out = [lr]
    for metric in metrics:
        a = float(metric)
        if mode == "min":
            better = a < (best * (1.0 - threshold) if threshold_mode == "rel" else best - threshold)
        else:
            better = a > (best * (1.0 + threshold) if threshold_mode == "rel" else best + threshold)
        if better:
            best, bad = a, 0
        else:
            bad += 1
        if cooling > 0:
            cooling -= 1
            bad = 0
        if bad > patience:
            new_lr = max(lr * factor, min_lr)
            if lr - new_lr > eps:
                lr = new_lr
            cooling, bad = cooldown, 0
        out.append(lr)
    return np.array(out, dtype=np.float64)
