"""``purestep.compile``: the pure step under ``torch.compile(fullgraph=True)``."""

from __future__ import annotations

import logging
import re
import sys
import types
from collections.abc import Sequence
from typing import Any, TypeVar

import torch

from purestep._compat import dynamo_ignored_logging_functions, portable_guard_filter
from purestep.core.module import ModelMirror
from purestep.core.pytree import structure_of
from purestep.core.step import EvalStep, TrainStep
from purestep.core.vmap import VmappedStep

__all__ = ["compile", "keep_user_guards"]

StepT = TypeVar("StepT", TrainStep, EvalStep, VmappedStep)


def compile(
    step: StepT,
    *,
    cudagraphs: bool = False,
    donate: bool = False,
    dynamic: bool | None = False,
    backend: str = "inductor",
    options: dict[str, Any] | None = None,
    verify: bool = True,
) -> StepT:
    """The same step with its pure function compiled by ``torch.compile(fullgraph=True)``.

    Checks and the RNG bracket stay in Python around the compiled graph, so a graph break
    is an error, never a silent fallback, and changing hyperparameters held in the state
    (lr ...) never recompiles.

    Args:
        step: from ``make_train_step`` or ``make_eval_step``.
        cudagraphs: replay the step as a CUDA graph (inductor's ``triton.cudagraphs``); for
            states on a CUDA device.
        donate: a train step writes the new state into the old state's tensors instead of
            allocating new ones (JAX's ``donate_argnums``): less memory and allocation, but
            the state passed in is consumed, whether the call succeeds or fails inside the
            graph (then its tensors may hold a partial update): any later use of it (a
            step, ``save_state``, ``load_state_into``) raises ``ValueError``; use the
            returned state. A call refused by the checks before the graph runs (a batch or
            state that does not fit) consumes nothing.
        dynamic: passed to ``torch.compile`` (False: specialize on shapes).
        backend: ``torch.compile`` backend.
        options: extra inductor options.
        verify: the first call for each new batch signature compares the compiled step
            with the eager step (which that call runs anyway, see below): loss, metrics,
            gradients, new parameters, buffers and optimizer state, random key, within the
            per-step compiled tolerance (``purestep.core.verify``: rtol 1e-5, atol 1e-6),
            and raises ``purestep.CompiledStepMismatch`` naming the tensor, the index, both
            values and their ulp distance. ``False``: no comparison (the eager run still
            checks the batch).

    Returns:
        A step of the same kind whose ``compiled`` attribute is True.

    Random ops use inductor's ``fallback_random`` so that a compiled step draws exactly the
    dropout masks the eager step draws from the same key; inductor's
    ``reorder_for_peak_memory`` is off, because it can run the in-place draw after the
    kernel that reads the mask (``options`` may turn it back on).

    Errors are the eager step's: a batch signature (structure, shapes, dtypes) not seen
    before first goes through the eager step, so what it rejects is rejected with the same
    exception and message before anything is traced or run (one eager step per new
    signature); a failure inside the graph (e.g. a class index out of range) is diagnosed
    by re-running the eager step on the same inputs (see ``purestep.core.step.call_compiled``).

    No stale user values: what the user can change and the graph reads (the criterion's
    attributes, the model's attributes, which the step's skeleton shares with the model,
    hooks, globals that the loss or the forward reads, and what the user's own optimizer
    transforms and schedule functions read, reached through purestep's closures) stays
    guarded, so a change recompiles as plain ``torch.compile`` would, and the step gives
    what a step made after the change gives. Only guards on purestep's own objects are
    dropped (see ``keep_user_guards``): they cost time on every call and cannot change.

    Conv nets on CPU: inside the compiled function, 4-d CPU weights enter the model
    channels-last (the layout inductor's CPU convolutions want), while the state keeps its
    own layout; NCHW models no longer pay for the joint graph keeping activations in both
    layouts (ResNet-8, batch 128, 2 threads: 165 -> 134 ms per step).
    """
    if not isinstance(step, TrainStep | EvalStep | VmappedStep):
        raise TypeError(
            "purestep.compile takes a step from make_train_step/make_eval_step/vmap, got "
            f"{type(step).__name__}; use torch.compile for other functions"
        )
    if step.compiled:
        raise ValueError("this step is already compiled")
    # fallback_random: the compiled step draws eager's dropout masks (eager's in-place
    # bernoulli_ on an empty buffer). Inductor's peak-memory reordering can move that
    # in-place fallback after the fused kernel that reads the mask (torch 2.13, CPU, seen
    # with BatchNorm + Dropout + SGD at batch 8-16): the step then silently uses an
    # uninitialized mask. Keeping the scheduler's order is what makes the mask correct.
    inductor_options: dict[str, Any] = {"fallback_random": True, "reorder_for_peak_memory": False}
    if cudagraphs:
        inductor_options["triton.cudagraphs"] = True
    inductor_options.update(options or {})
    kwargs: dict[str, Any] = {"fullgraph": True, "dynamic": dynamic, "backend": backend}
    # torch.compile takes the guard filter out of options for every backend; the rest of
    # the options are inductor's.
    kwargs["options"] = dict(inductor_options) if backend == "inductor" else {}
    if donate:
        if isinstance(step, VmappedStep) and step._training:
            raise ValueError(
                "donate=True is not supported for a vmapped train step: compile it without "
                "donate (purestep.compile(purestep.vmap(step))); the stacked state is then "
                "returned as new tensors"
            )
        if not isinstance(step, TrainStep):
            raise ValueError("donate=True is for train steps (an eval step returns no state)")
        donor: TrainStep = step._with_impl(step._pure)  # type: ignore[assignment]
        donor.compiled = False
        donor.donate = True
        step = donor  # type: ignore[assignment]
    pure = step._pure
    checker = _eager_checker(step) if verify else None
    if portable_guard_filter() is not None:
        # A torch recent enough to have dynamo's guard filters; on an older one the
        # compiled step keeps all of dynamo's guards: correct, a little slower per call.
        kwargs["options"]["guard_filter_fn"] = _UserGuards(pure)
    mirror = (step.step if isinstance(step, VmappedStep) else step)._mirror
    twin = step._with_impl(_PerStructure(lambda: torch.compile(_own_code(pure), **kwargs), mirror))
    twin._verify_eager = checker
    return twin


def _eager_checker(step: Any) -> Any:
    """The eager function whose result ``verify`` compares: the step's own, returning its
    gradients too (a train step without ``return_grads``), which tells the parameters
    whose gradient is rounding noise (see ``purestep.core.verify``)."""
    inner = step.step if isinstance(step, VmappedStep) else step
    if isinstance(inner, TrainStep) and not inner.return_grads:
        inner = inner._with_impl(inner._pure)
        inner.compiled = False
        inner.return_grads = True
    if isinstance(step, VmappedStep):
        return torch.func.vmap(inner._pure, in_dims=(0, step.batch_axis), randomness="different")
    return inner._pure


class _PerStructure:
    """One compiled graph per pytree structure of ``(state, batch)`` and set of hooks.

    Dynamo's guards on purestep's own objects are dropped (``keep_user_guards``), the
    inputs' container structure among them: it is keyed here instead, with one cheap
    comparison per call. So are the model's hooks, which dynamo does not guard by default
    (``skip_nnmodule_hook_guards``) but the eager step runs as they are now: a hook added
    or removed gets its own graph.
    """

    def __init__(self, make: Any, mirror: ModelMirror) -> None:
        self._make = make
        self._mirror = mirror
        self._entries: list[tuple[Any, Any]] = []
        self._logging = _logging_functions()

    def __call__(self, state: Any, batch: Any) -> Any:
        key = (structure_of((state, batch)), self._mirror.hooks)
        fn = next((made for known, made in self._entries if known == key), None)
        if fn is None:
            fn = self._make()
            self._entries.append((key, fn))
        # A model's forward may log (Hugging Face's loss path calls logger.warning_once),
        # which dynamo refuses under fullgraph. While this step runs (traces), its log
        # calls are no-ops in the graph; the eager step, run first for each new batch
        # signature, logs them. Dynamo's set is restored afterwards (torch.compile of
        # other functions is untouched); set updates, not config.patch (~100 us a call).
        ignored = dynamo_ignored_logging_functions()
        added = self._logging - ignored
        ignored |= added
        try:
            return fn(state, batch)
        finally:
            ignored -= added


_LOGGER_METHODS = ("debug", "info", "warning", "warn", "error", "exception", "critical", "fatal")


def _logging_functions() -> set[Any]:
    """Logging calls that return None: ``logging.Logger``'s (all instances) and Hugging
    Face's additions to it (``warning_once``, ``info_once``, ``warning_advice``), and the
    module-level ``logging.warning`` etc."""
    found: set[Any] = set()
    for name in (*_LOGGER_METHODS, "log"):
        for owner in (logging.Logger, logging):
            value = getattr(owner, name, None)  # logging.warn is gone in Python 3.13
            if value is not None:
                found.add(value)
    for name, value in vars(logging.Logger).items():
        if callable(value) and (name.endswith("_once") or name == "warning_advice"):
            found.add(value)
    return found


def _own_code(fn: Any) -> Any:
    """``fn`` behind a function with a code object of its own.

    Dynamo caches compiled graphs per code object; every step shares ``_pure``'s code (and
    every vmapped step torch.func.vmap's wrapper's), so each compiled step gets its own
    copy, to keep steps from evicting each other (cache_size_limit) or counting as
    recompiles of one another.
    """

    def call(state: Any, batch: Any) -> Any:
        return fn(state, batch)

    return types.FunctionType(
        call.__code__.replace(),
        call.__globals__,
        call.__name__,
        call.__defaults__,
        call.__closure__,
    )


# Attributes of a step that hold the user's objects: guards under them are kept. The
# skeleton's parameter and buffer dicts (meta stand-ins, swapped by functional_call) are
# purestep's own.
_USER_ATTR = re.compile(r"\.(criterion|loss_fn|metrics_fn|skeleton)\b")
_SKELETON_TENSORS = re.compile(r"\.skeleton\b.*\.(_parameters|_buffers)\b")
# A global reached through a module, e.g. G['__import_my_dot_losses'].SCALE.
_MODULE_GLOBAL = re.compile(r"G\['__import_(\w+?)'\]")
_LIBRARY_ROOTS = frozenset({"torch", "purestep", "builtins"}) | frozenset(sys.stdlib_module_names)


def keep_user_guards(entries: Sequence[Any]) -> list[bool]:
    """Dynamo ``guard_filter_fn``: keep the guards on what a user can change, drop the rest.

    Kept, so that a change recompiles as plain ``torch.compile`` would: tensor metadata of
    the inputs, global context (grad mode, autocast ...), everything reached through the
    step's user objects (the criterion's attributes such as ``label_smoothing``, the
    ``loss_fn``/``metrics_fn`` closures and defaults, and the model's attributes, which the
    skeleton shares with the user's model, see ``purestep.core.module``), and globals of
    user modules (a ``SCALE`` read by ``loss_fn`` or the model's forward).

    Dropped, because nothing can change them behind purestep's back: the step object
    itself, the skeleton's meta parameters and buffers, the optimizer's closures, torch's,
    purestep's and the standard library's own module globals and builtins, and the input
    containers' structure (keyed by ``_PerStructure`` instead). For W1 (an MLP with
    ``F.cross_entropy`` and Adam) this keeps 131 of dynamo's 500 guards, against 32 for
    tensor metadata and global state alone.
    """
    return [_keep(entry) for entry in entries]


class _UserGuards:
    """``keep_user_guards`` plus the guards that reach a user's object through the step's
    own (e.g. a transform of the user's in ``chain(my_scale(knob), sgd(...))`` whose update
    reads ``knob.scale``: without its guard, a changed ``knob.scale`` went unseen).

    A guard's name is a path from the compiled function's closure (``fn`` is the step's
    pure function); each prefix of the path is looked up once (attribute and index reads on
    the step's objects only), and a path through a function, method or object defined
    outside torch, purestep and the standard library is the user's."""

    def __init__(self, root: Any) -> None:
        self._root = root
        self._verdicts: dict[str, bool] = {}

    def __call__(self, entries: Sequence[Any]) -> list[bool]:
        return [_keep(entry) or self._through_user_object(entry.name) for entry in entries]

    def _through_user_object(self, name: str) -> bool:
        start = name.find("fn.")
        if start < 0 or (start > 0 and name[start - 1] != "("):
            return False
        depth, end = 0, len(name)
        for i in range(start, len(name)):
            c = name[i]
            if c in "([":
                if c == "[" and depth == 0 and self._user(name[start:i]):
                    return True
                depth += 1
            elif c in ")]":
                depth -= 1
                if depth < 0:
                    end = i
                    break
            elif c == "." and depth == 0 and i > start + 2 and self._user(name[start:i]):
                return True
        return self._user(name[start:end])

    def _user(self, path: str) -> bool:
        verdict = self._verdicts.get(path)
        if verdict is None:
            verdict = self._verdicts[path] = _is_user_object(_lookup(path, self._root))
        return verdict


def _lookup(path: str, root: Any) -> Any:
    """The object ``path`` (``fn.a.b[0].c['k']``: attribute and constant index reads from
    ``fn``) names, or None if it is anything else or does not resolve."""
    obj = root
    for step in re.finditer(r"\.(\w+)|\[(\d+|'[^']*')\]", path[2:]):
        if step.group(1) is not None:
            obj = getattr(obj, step.group(1), None)
        else:
            key = step.group(2)
            try:
                obj = obj[key[1:-1]] if key.startswith("'") else obj[int(key)]
            except (LookupError, TypeError):
                return None
        if obj is None:
            return None
    return obj


_NEUTRAL = (
    type(None),
    bool,
    int,
    float,
    complex,
    str,
    bytes,
    tuple,
    list,
    dict,
    set,
    frozenset,
    torch.Tensor,
)


def _is_user_object(obj: Any) -> bool:
    if isinstance(obj, _NEUTRAL):
        return False
    if isinstance(obj, types.MethodType):
        obj = obj.__func__
    if isinstance(obj, types.FunctionType):
        module = obj.__module__ or ""
    elif isinstance(obj, types.CellType | types.ModuleType | types.BuiltinFunctionType):
        return False
    else:
        module = type(obj).__module__ or ""
    return module.split(".")[0] not in _LIBRARY_ROOTS


def _keep(entry: Any) -> bool:
    kind, name = entry.guard_type, entry.name
    if kind in ("GLOBAL_STATE", "SHAPE_ENV"):
        return True
    if _SKELETON_TENSORS.search(name):
        return False
    if _USER_ATTR.search(name):
        return True
    module = _MODULE_GLOBAL.search(name)
    if module is not None:
        return module.group(1).replace("_dot_", ".").split(".")[0] not in _LIBRARY_ROOTS
    # The step's own attributes (fn...), other frame globals (this module's, builtins,
    # namedtuple scopes) and the inputs' containers: only tensor metadata is kept.
    return kind == "TENSOR_MATCH" and not entry.is_global
