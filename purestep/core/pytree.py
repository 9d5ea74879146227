"""Re-export of ``purestep.pytree`` (its old home), so existing imports keep working."""

from purestep.pytree import (
    PyTree,
    check_tensor_leaves,
    find_nodes,
    keystr,
    map_nodes,
    structure_of,
    tree_bitwise_equal,
    tree_clone,
    tree_flatten,
    tree_flatten_with_path,
    tree_leaves,
    tree_map,
    tree_map_with_name,
    tree_named_leaves,
    tree_structure,
    tree_unflatten,
)

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
