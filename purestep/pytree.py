"""Pytree helpers over nested dicts, lists, tuples and NamedTuples of tensors (public:
``purestep.pytree``, ``ps.pytree``).

For JAX users, ``jax.tree_util``'s names: ``tree_map(fn, tree, *rest)`` (several trees of
one structure, as ``jax.tree.map``), ``tree_leaves``, ``tree_flatten`` /
``tree_unflatten(leaves, spec)``, ``tree_structure``, ``tree_flatten_with_path`` and
``keystr``; plus ``tree_map_with_name`` (the key path as a string), ``tree_clone``,
``tree_bitwise_equal`` and ``check_tensor_leaves``. A ``TrainState``, an optimizer state,
params and batches are all such trees.

These are torch's own pytrees, the containers ``torch.compile`` and ``torch.func``
understand natively. torch 2.13 has no public pytree module (``torch.utils.pytree`` is
not in this release), so the functions come from ``torch.utils._pytree`` through
``purestep._compat`` (the one place that names torch's private APIs); these names are
purestep's stable contract whichever torch module backs them. Also here: the checks
purestep needs (every leaf a tensor, readable key paths in error messages) and the one
walker over *nodes* (``map_nodes``/``find_nodes``) that optimizer code uses to reach the
states it owns inside whatever containers ``chain``, ``multi_transform`` and the wrappers
built.

Top-level (not under ``core``) so that ``core``, ``optim`` and ``parity`` all use it
without one importing another's internals.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from purestep._compat import fast_pytree as _fast
from purestep._compat import pytree as _pt

PyTree = Any

tree_map = _pt.tree_map
tree_leaves = _pt.tree_leaves
tree_flatten = _pt.tree_flatten
tree_unflatten = _pt.tree_unflatten
tree_structure = _pt.tree_structure
tree_flatten_with_path = _pt.tree_flatten_with_path
keystr = _pt.keystr

__all__ = [
    "PyTree",
    "check_tensor_leaves",
    "find_nodes",
    "keystr",
    "map_nodes",
    "structure_of",
    "tree_bitwise_equal",
    "tree_clone",
    "tree_flatten",
    "tree_flatten_with_path",
    "tree_leaves",
    "tree_map",
    "tree_map_with_name",
    "tree_named_leaves",
    "tree_structure",
    "tree_unflatten",
]


def structure_of(tree: PyTree) -> Any:
    """The tree's structure, for equality tests on hot paths (the C++ pytree when
    available; compare only structures made by this function)."""
    return _fast.tree_structure(tree)


def tree_named_leaves(tree: PyTree, prefix: str = "") -> list[tuple[str, Any]]:
    """Leaves with a readable path, e.g. ``("opt_state[1].exp_avg['0.weight']", tensor)``."""
    leaves, _ = _pt.tree_flatten_with_path(tree)
    return [(prefix + _pt.keystr(path), leaf) for path, leaf in leaves]


def check_tensor_leaves(tree: PyTree, name: str, *, allow_none: bool = False) -> None:
    """Raise ``TypeError`` naming the first leaf of ``tree`` that is not a tensor."""
    for path, leaf in tree_named_leaves(tree, name):
        if isinstance(leaf, torch.Tensor) or (allow_none and leaf is None):
            continue
        raise TypeError(f"{path} must be a torch.Tensor, got {type(leaf).__name__} ({leaf!r:.60})")


def tree_clone(tree: PyTree) -> PyTree:
    """Detached copies of every tensor leaf (non-tensor leaves are kept)."""
    return tree_map(lambda t: t.detach().clone() if isinstance(t, torch.Tensor) else t, tree)


def tree_bitwise_equal(a: PyTree, b: PyTree) -> bool:
    """True when both trees have the same structure and every leaf pair is ``torch.equal``."""
    la, sa = tree_flatten(a)
    lb, sb = tree_flatten(b)
    if sa != sb:
        return False
    return all(_leaf_equal(x, y) for x, y in zip(la, lb, strict=True))


def _leaf_equal(x: Any, y: Any) -> bool:
    if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor):
        return x.dtype == y.dtype and x.shape == y.shape and torch.equal(x, y)
    return bool(x == y)


def tree_map_with_name(fn: Callable[[str, Any], Any], tree: PyTree) -> PyTree:
    """``tree_map`` whose function also receives the leaf's key path as a string."""
    return _pt.tree_map_with_path(lambda path, leaf: fn(_pt.keystr(path), leaf), tree)


def map_nodes(fn: Callable[[Any], Any], tree: PyTree, is_node: Callable[[Any], bool]) -> PyTree:
    """``tree`` rebuilt with every node ``n`` for which ``is_node(n)`` holds replaced by
    ``fn(n)``; everything else is kept as it is (pure: nothing is changed in place).

    The walk is the pytree order (dicts in insertion order, then lists, tuples and
    NamedTuples field by field), outermost first, and a matched node is handed to ``fn``
    whole, not descended into: for nested matches (a scheduled optimizer inside another)
    ``fn`` calls ``map_nodes`` on the children it wants walked.
    """
    return _pt.tree_map(lambda node: fn(node) if is_node(node) else node, tree, is_leaf=is_node)


def find_nodes(tree: PyTree, is_node: Callable[[Any], bool]) -> list[Any]:
    """The outermost nodes of ``tree`` for which ``is_node`` holds, in ``map_nodes`` order."""
    return [node for node in _pt.tree_leaves(tree, is_leaf=is_node) if is_node(node)]
