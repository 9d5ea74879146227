"""Each vmapped member draws its random numbers from its own key.

``torch.func.vmap(..., randomness="different")`` makes one draw of shape ``(K, ...)`` from
the one global generator, so member i's dropout mask depends on member 0's key and on its
place in the sweep. ``MemberRandomness`` is a torch-function mode that the vmapped step
runs its members under: a random op on a batched tensor is drawn K times instead, member i
with the generator set from its own key (exactly the draw its solo step makes), and the K
results are stacked into the batched result. Each member's key advances by its own draws,
so after the call ``state.rng[i]`` is the key member i's solo step would return.

Covered: ``F.dropout`` (what ``nn.Dropout`` calls), the creation ops ``rand``, ``randn``,
``randint``, ``randperm``, ``rand_like``, ``randn_like``, ``randint_like``, ``bernoulli``,
``multinomial``, ``poisson``, ``normal`` (their results carry no gradient), and the
in-place fills ``bernoulli_``, ``uniform_``, ``normal_``, ``exponential_``, ``random_``,
``geometric_``, ``cauchy_``, ``log_normal_``. Any other random op (e.g. ``dropout2d``) still
runs under vmap's shared ``randomness="different"`` stream, seeded from member 0's key.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from purestep._compat import (
    add_batch_dim,
    disable_functorch,
    functorch_level,
    is_batched,
    is_functorch_wrapped,
    unwrap_batched,
    unwrap_one_level,
)
from purestep.core.rng import rng_scope
from purestep.pytree import tree_map

__all__ = ["MemberRandomness"]

_CREATE = {
    torch.rand,
    torch.randn,
    torch.randint,
    torch.randperm,
    torch.rand_like,
    torch.randn_like,
    torch.randint_like,
    torch.bernoulli,
    torch.multinomial,
    torch.poisson,
    torch.normal,
    torch.Tensor.bernoulli,
    torch.Tensor.multinomial,
}
_FILL = {
    torch.Tensor.bernoulli_,
    torch.Tensor.uniform_,
    torch.Tensor.normal_,
    torch.Tensor.exponential_,
    torch.Tensor.random_,
    torch.Tensor.geometric_,
    torch.Tensor.cauchy_,
    torch.Tensor.log_normal_,
}


def _member_view(t: torch.Tensor, level: int) -> tuple[torch.Tensor, bool]:
    """The plain tensor behind ``t``: ``(physical (K, ...), True)`` if ``t`` is batched at
    the vmap ``level``, else ``(plain tensor, False)`` (the same for every member)."""
    while is_functorch_wrapped(t):
        if is_batched(t) and functorch_level(t) == level:
            physical, bdim = unwrap_batched(t, level)
            if bdim is None:
                return physical, False
            return physical.movedim(bdim, 0), True
        t = unwrap_one_level(t)
    return t, False


class _View:
    """A tensor argument seen from the members: one plain tensor, or K stacked ones."""

    def __init__(self, value: torch.Tensor, batched: bool) -> None:
        self.value = value
        self.batched = batched

    def member(self, i: int) -> torch.Tensor:
        return self.value[i] if self.batched else self.value


class MemberRandomness(TorchFunctionMode):
    """Draws random numbers per vmapped member, member i from ``keys[i]``; see the module
    docstring. ``keys`` is updated in place as members draw (a list of plain keys).

    ``level`` is the vmap level of the members; the mode is a pass-through until it is set
    (the vmapped function sets it from a batched input on entry)."""

    def __init__(self, keys: list[torch.Tensor], device: torch.device) -> None:
        super().__init__()
        self.keys = keys
        self.device = device
        self.level: int | None = None

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        if self.level is not None:
            if func is F.dropout:
                return self._dropout(*args, **kwargs)
            if func in _CREATE:
                return self._create(func, args, kwargs)
            if func in _FILL:
                return self._fill(func, args, kwargs)
        return func(*args, **kwargs)

    # -- the draws -------------------------------------------------------------------------
    def _per_member(self, draw: Callable[[int], torch.Tensor]) -> torch.Tensor:
        """``draw(i)`` for each member with the generator set from ``keys[i]``, stacked and
        wrapped as a tensor batched at the members' level."""
        assert self.level is not None
        outs = []
        with disable_functorch():
            for i, key in enumerate(self.keys):
                with rng_scope(key, self.device) as scope:
                    outs.append(draw(i))
                self.keys[i] = scope.key
            physical = torch.stack(outs)
        return add_batch_dim(physical, 0, self.level)

    def _member_args(self, tree: Any) -> Callable[[int], Any]:
        """``tree`` with every tensor replaced by member i's plain tensor, as ``i -> tree``."""
        level = self.level
        assert level is not None
        views = tree_map(
            lambda t: _View(*_member_view(t, level)) if isinstance(t, torch.Tensor) else t, tree
        )

        def member(i: int) -> Any:
            return tree_map(
                lambda v: v.member(i) if isinstance(v, _View) else v,
                views,
                is_leaf=lambda v: isinstance(v, _View),
            )

        return member

    def _dropout(
        self, input: torch.Tensor, p: float = 0.5, training: bool = True, inplace: bool = False
    ) -> torch.Tensor:
        if not training or p == 0.0 or p == 1.0:
            return F.dropout(input, p, training, inplace)
        assert self.level is not None
        plain, batched = _member_view(input, self.level)
        q = 1.0 - p

        def draw(i: int) -> torch.Tensor:
            like = plain[i] if batched else plain
            if like.device.type == "cpu":
                # ATen's CPU dropout: noise = empty_like(input).bernoulli_(1 - p) / (1 - p).
                return torch.empty_like(like).bernoulli_(q).div_(q)
            # The fused kernel (CUDA ...) draws its mask in native_dropout.
            mask = torch.native_dropout(torch.empty_like(like), p, True)[1]
            return mask.to(like.dtype).mul_(1.0 / q)

        noise = self._per_member(draw)
        return input.mul_(noise) if inplace else input * noise

    def _create(
        self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> torch.Tensor:
        member = self._member_args((args, kwargs))

        def draw(i: int) -> torch.Tensor:
            a, k = member(i)
            return func(*a, **k)

        return self._per_member(draw)

    def _fill(
        self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> torch.Tensor:
        target, *rest = args
        assert self.level is not None
        if not _member_view(target, self.level)[1]:
            # An unbatched tensor cannot take K fills: vmap's own verdict (an error).
            return func(*args, **kwargs)
        member = self._member_args((target.detach(), tuple(rest), kwargs))

        def draw(i: int) -> torch.Tensor:
            t, a, k = member(i)
            return func(t.clone(), *a, **k)

        return target.copy_(self._per_member(draw))
