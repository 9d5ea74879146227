"""The pure training and evaluation steps.

``make_train_step(model, criterion, optimizer)`` returns ``train_step(state, batch) ->
(new_state, metrics)``: forward through ``torch.func.functional_call`` on explicit
parameter and buffer dicts, gradients from ``torch.func.grad_and_value`` (or, in plain
eager mode, ``torch.autograd.grad`` on fresh leaves, for bitwise parity with
``loss.backward()``; see ``TrainStep._grad``), then the optimizer's pure ``step``. Nothing
captured is mutated; no ``.backward()``, no ``.grad`` field.

Each call (1) checks the state and batch and raises a clear error before any math,
(2) sets the device's default generator from ``state.rng`` (so dropout masks are a
function of the state; the caller's global RNG is restored afterwards), (3) runs the pure
function, which ``purestep.compile`` swaps for its ``torch.compile``d twin.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad_and_value

from purestep._compat import is_functorch_wrapped
from purestep.core.masks import EagerMasks
from purestep.core.module import ModelMirror, ModelSpec, make_skeleton
from purestep.core.pytree import check_tensor_leaves, tree_flatten, tree_map, tree_structure
from purestep.core.rng import rng_scope
from purestep.core.state import TrainState, check_not_donated, mark_donated
from purestep.optim.base import GradientTransformation, Optimizer, as_optimizer

__all__ = [
    "EvalStep",
    "LossShapeError",
    "TrainStep",
    "align_targets",
    "call_with_batch",
    "is_elementwise",
    "make_eval_step",
    "make_train_step",
    "model_loss",
]

Metrics = dict[str, Any]
GRAD_ENGINES = ("auto", "func", "autograd")
Criterion = Callable[[Any, Any], torch.Tensor]
MetricsFn = Callable[[Any, Any], Mapping[str, torch.Tensor]]
# loss_fn(apply, params, buffers, batch, rng) -> loss | (loss, aux); apply(params, buffers,
# *inputs, **kwargs) -> outputs runs the model (new buffers are collected by the step).
LossFn = Callable[..., Any]


def call_with_batch(fn: Callable[..., Any], batch: Any) -> Any:
    """``fn(**batch)`` for a Mapping batch (Hugging Face style), ``fn(*batch)`` for a tuple
    or list, ``fn(batch)`` otherwise: how a step without a criterion runs the model."""
    if isinstance(batch, Mapping):
        return fn(**batch)
    if isinstance(batch, tuple | list):
        return fn(*batch)
    return fn(batch)


def model_loss(outputs: Any) -> torch.Tensor:
    """The loss a model computed itself: a 0-d tensor output, ``out["loss"]`` or ``out.loss``
    (a Hugging Face ``ModelOutput`` has both when ``labels=`` is given)."""
    if isinstance(outputs, torch.Tensor):
        loss: Any = outputs
    else:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else None
        if loss is None:
            loss = getattr(outputs, "loss", None)
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
        got = (
            f"a tensor of shape {tuple(outputs.shape)}"
            if isinstance(outputs, torch.Tensor)
            else f"{type(outputs).__name__} without a loss"
        )
        raise ValueError(
            "with no criterion (criterion=None, YAML loss: model) the model must compute its "
            f"own loss (a 0-d tensor, out['loss'] or out.loss), got {got}; pass the labels "
            "in the batch (e.g. a dict batch with 'labels') or give a criterion"
        )
    return loss


def _describe(tree: Any) -> str:
    leaves, _ = tree_flatten(tree)
    parts = [
        f"{tuple(x.shape)}:{str(x.dtype).replace('torch.', '')}"
        if isinstance(x, torch.Tensor)
        else type(x).__name__
        for x in leaves
    ]
    return "[" + ", ".join(parts) + "]"


class _Swap:
    """``functional_call`` on the skeleton, for plain eager calls, at a fraction of its cost.

    ``torch.func.functional_call`` merges the dicts, re-derives the tied-weight map by
    walking the module tree and swaps each tensor through a generic accessor, every call:
    ~40 us of W1's ~1.4 ms eager step. The skeleton's module tree is fixed (``ModelMirror``
    refuses a changed one), so its slots are found once here: each ``_parameters`` /
    ``_buffers`` entry of every skeleton module (tied ones included, each with the state key
    ``named_parameters()`` / ``named_buffers()`` lists it under, as ``functional_call``'s
    untying does) and its meta stand-in. A call puts the given tensors in the slots, runs
    the skeleton and puts the stand-ins back, whatever happens, as ``functional_call``
    does; the given dicts are not touched. Dicts that are not exactly the state's keys
    with tensor values (a ``loss_fn`` may pass its own) go to ``functional_call`` itself,
    and so does every call under ``torch.compile`` (what dynamo traces).
    """

    def __init__(self, skeleton: nn.Module) -> None:
        params, buffers = list(skeleton.named_parameters()), list(skeleton.named_buffers())
        canonical: dict[int, str] = {}
        for name, t in [*params, *buffers]:
            canonical.setdefault(id(t), name)
        slots: list[tuple[dict[str, Any], str, Any]] = []
        keys: list[str] = []
        for module in skeleton.modules(remove_duplicate=False):
            tables: tuple[dict[str, Any], ...] = (module._parameters, module._buffers)
            for table in tables:
                for attr, stand_in in table.items():
                    if stand_in is not None and id(stand_in) in canonical:
                        slots.append((table, attr, stand_in))
                        keys.append(canonical[id(stand_in)])
        self.skeleton = skeleton
        self.slots = tuple(slots)
        self.keys = tuple(keys)
        self.count = len(params) + len(buffers)

    def __call__(
        self,
        params: Mapping[str, torch.Tensor],
        buffers: Mapping[str, torch.Tensor],
        inputs: Any,
        kwargs: Mapping[str, Any] | None = None,
    ) -> Any:
        values = self._values(params, buffers)
        if values is None:
            return functional_call(
                self.skeleton, (dict(params), dict(buffers)), tuple(inputs), dict(kwargs or {})
            )
        slots = self.slots
        try:
            for (table, attr, _), value in zip(slots, values, strict=True):
                table[attr] = value
            return self.skeleton(*inputs, **(kwargs or {}))
        finally:
            for table, attr, stand_in in slots:
                table[attr] = stand_in

    def _values(
        self, params: Mapping[str, torch.Tensor], buffers: Mapping[str, torch.Tensor]
    ) -> list[torch.Tensor] | None:
        """The tensor for each slot, or None if the dicts are not the state's keys."""
        if len(params) + len(buffers) != self.count:
            return None
        try:
            values = [params[k] if k in params else buffers[k] for k in self.keys]
        except KeyError:
            return None
        if not all(isinstance(v, torch.Tensor) for v in values):
            return None
        return values


class _Step:
    """What train and eval steps share: checks, the RNG bracket, eager/compiled dispatch."""

    _training: bool

    def __init__(
        self,
        model: nn.Module,
        criterion: Criterion | None,
        *,
        loss_fn: LossFn | None,
        metrics_fn: MetricsFn | None,
        autocast: torch.dtype | None = None,
    ) -> None:
        self.spec = ModelSpec.of(model)
        if autocast is not None and not isinstance(autocast, torch.dtype):
            raise TypeError(
                f"autocast must be a torch.dtype such as torch.bfloat16, got {autocast!r}"
            )
        self.autocast = autocast
        if criterion is not None and loss_fn is not None:
            raise TypeError(
                "give at most one of criterion=(outputs, targets) -> loss and loss_fn= "
                "(neither: the model computes its own loss)"
            )
        if criterion is not None and not callable(criterion):
            raise TypeError(f"criterion must be callable, got {type(criterion).__name__}")
        if loss_fn is not None and not callable(loss_fn):
            raise TypeError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
        if metrics_fn is not None and not callable(metrics_fn):
            raise TypeError(f"metrics_fn must be callable, got {type(metrics_fn).__name__}")
        self.model = model
        self.criterion = criterion
        self._elementwise = criterion is not None and is_elementwise(criterion)
        self.loss_fn = loss_fn
        self.metrics_fn = metrics_fn
        self.skeleton = make_skeleton(model, training=self._training)
        # The skeleton shares the model's non-tensor attributes; the mirror re-points the
        # ones the user rebinds, before every call (see purestep.core.module).
        self._mirror = ModelMirror(model, self.skeleton)
        self._swap = _Swap(self.skeleton)
        self.compiled = False
        self._impl: Callable[[TrainState, Any], Any] = self._pure
        self._validated: list[Any] = []  # batch signatures the eager step accepted (compiled)
        self._state_treedef: Any = None
        self._last_output: Any = None
        self.donate = False
        # purestep.compile(verify=True): the eager function whose first result per batch
        # signature is compared with the compiled one (see purestep.core.verify).
        self._verify_eager: Callable[[TrainState, Any], Any] | None = None

    # -- checks -------------------------------------------------------------------------
    def check_state(self, state: Any) -> None:
        """Raise a clear ``TypeError``/``ValueError`` if ``state`` does not fit this step."""
        if not isinstance(state, TrainState):
            raise TypeError(f"state must be a purestep.TrainState, got {type(state).__name__}")
        check_not_donated(state)
        self.spec.check("params", state.params)
        self.spec.check("buffers", state.buffers)
        for name in ("step", "rng"):
            value = getattr(state, name)
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"state.{name} must be a torch.Tensor, got {type(value).__name__}")
        treedef = tree_structure(state.opt_state)
        if treedef != self._state_treedef:
            check_tensor_leaves(state.opt_state, "state.opt_state")
            self._check_opt_state(state)
            self._state_treedef = treedef

    def _check_opt_state(self, state: TrainState) -> None:
        """Hook: train steps check the optimizer state's structure."""

    def check_batch(self, batch: Any, state: TrainState) -> None:
        """Raise a clear error if ``batch`` has the wrong structure, leaf type or device."""
        if type(batch) is tuple and len(batch) >= 2 and all(type(x) is torch.Tensor for x in batch):
            # The common case, (inputs, targets) as plain tensors: only the device is left
            # to check (the general walk below costs ~10 us per call).
            device = state.device
            for x in batch:
                if x.device != device:
                    raise ValueError(
                        f"batch tensor {tuple(x.shape)} is on {x.device} but the state is on "
                        f"{device}"
                    )
            return
        if self.criterion is not None and (not isinstance(batch, tuple | list) or len(batch) < 2):
            length = f" of length {len(batch)}" if isinstance(batch, tuple | list) else ""
            hint = (
                " (a dict batch goes to the model as keyword arguments when the model computes "
                "its own loss: criterion=None)"
                if isinstance(batch, Mapping)
                else ""
            )
            raise ValueError(
                "batch must be a tuple (inputs..., targets) of at least 2 tensors when a "
                f"criterion is given, got {type(batch).__name__}{length}{hint}"
            )
        if self.loss_fn is None and isinstance(batch, Mapping):
            bad = [k for k in batch if not isinstance(k, str)]
            if bad:
                raise TypeError(
                    "a dict batch is passed as keyword arguments: its keys must be str, got "
                    f"{bad!r}"
                )
        check_tensor_leaves(batch, "batch", allow_none=self.criterion is None)
        device = state.device
        for x in tree_flatten(batch)[0]:
            if isinstance(x, torch.Tensor) and x.device != device:
                raise ValueError(
                    f"batch tensor {tuple(x.shape)} is on {x.device} but the state is on {device}"
                )

    # -- the model, wrapped so that a rejected batch is a clear ValueError ----------------
    def _apply(
        self,
        params: Mapping[str, torch.Tensor],
        buffers: dict[str, torch.Tensor],
        *inputs: Any,
        **kwargs: Any,
    ) -> Any:
        if torch.compiler.is_compiling():
            return functional_call(self.skeleton, (dict(params), buffers), tuple(inputs), kwargs)
        try:
            return self._swap(params, buffers, inputs, kwargs)
        except (RuntimeError, ValueError, TypeError, IndexError) as err:
            described = _describe(inputs) + (
                f" and keyword arguments {sorted(kwargs)} {_describe(kwargs)}" if kwargs else ""
            )
            raise ValueError(
                f"{self.spec.model_name} rejected the batch inputs {described}: {err}"
            ) from err

    def _criterion(self, outputs: Any, targets: Any) -> torch.Tensor:
        assert self.criterion is not None
        targets = align_targets(outputs, targets, elementwise=self._elementwise)
        if torch.compiler.is_compiling():
            loss = self.criterion(outputs, targets)
        else:
            try:
                loss = self.criterion(outputs, targets)
            except (RuntimeError, ValueError, TypeError, IndexError) as err:
                raise ValueError(
                    f"criterion rejected outputs {_describe(outputs)} and targets "
                    f"{_describe(targets)}: {err}"
                ) from err
        return _check_loss(loss)

    def _forward_loss(
        self,
        params: Mapping[str, torch.Tensor],
        buffers: Mapping[str, torch.Tensor],
        batch: Any,
        rng: torch.Tensor,
    ) -> tuple[torch.Tensor, Metrics, dict[str, torch.Tensor], Any, Any]:
        """Loss, aux metrics, new buffers, outputs and targets (the last two for metrics_fn)."""
        if self.autocast is None:
            return self._forward_loss_impl(params, buffers, batch, rng)
        device_type = next(iter(params.values())).device.type if params else "cpu"
        with torch.autocast(device_type=device_type, dtype=self.autocast):
            return self._forward_loss_impl(params, buffers, batch, rng)

    def _forward_loss_impl(
        self,
        params: Mapping[str, torch.Tensor],
        buffers: Mapping[str, torch.Tensor],
        batch: Any,
        rng: torch.Tensor,
    ) -> tuple[torch.Tensor, Metrics, dict[str, torch.Tensor], Any, Any]:
        if self.loss_fn is None and self.criterion is None:  # the model's own loss
            new_buffers = {k: b.clone() for k, b in buffers.items()}
            outputs = call_with_batch(partial(self._apply, params, new_buffers), batch)
            loss = _check_loss(model_loss(outputs))
            return loss, {}, new_buffers, outputs, self._targets(batch)
        if self.loss_fn is None:
            *inputs, targets = batch
            new_buffers = {k: b.clone() for k, b in buffers.items()}
            outputs = self._apply(params, new_buffers, *inputs)
            return self._criterion(outputs, targets), {}, new_buffers, outputs, targets

        collected: list[dict[str, torch.Tensor]] = [dict(buffers)]

        def apply(
            p: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], *a: Any, **kw: Any
        ) -> Any:
            fresh = {k: v.clone() for k, v in b.items()}
            collected[0] = fresh
            return self._apply(p, fresh, *a, **kw)

        result = self.loss_fn(apply, params, buffers, batch, rng)
        if isinstance(result, tuple):
            if len(result) != 2:
                raise ValueError(
                    f"loss_fn must return loss or (loss, aux), got a {len(result)}-tuple"
                )
            loss, aux = result
        else:
            loss, aux = result, {}
        if not isinstance(aux, Mapping):
            # JAX's has_aux takes any pytree: a tensor, tuple, NamedTuple ... of tensors
            # comes back whole as metrics["aux"].
            check_tensor_leaves(aux, "loss_fn's aux")
            aux = {"aux": aux}
        return _check_loss(loss), dict(aux), collected[0], None, None

    def _targets(self, batch: Any) -> Any:
        """What ``metrics_fn`` gets as targets: the batch's last item with a criterion, the
        ``labels`` of a dict batch without one (else None)."""
        if self.criterion is not None:
            return batch[-1]
        return batch.get("labels") if isinstance(batch, Mapping) else None

    def _extra_metrics(self, outputs: Any, targets: Any) -> Metrics:
        if self.metrics_fn is None or outputs is None:
            return {}
        with torch.no_grad():
            return dict(self.metrics_fn(outputs, targets))

    # -- calling --------------------------------------------------------------------------
    def _pure(self, state: TrainState, batch: Any) -> Any:
        raise NotImplementedError

    def _with_impl(self, impl: Callable[[TrainState, Any], Any]) -> Any:
        twin = object.__new__(type(self))
        twin.__dict__.update(self.__dict__)
        twin._impl = impl
        twin.compiled = True
        twin._last_output = None
        twin._validated = []
        return twin


def call_compiled(
    impl: Callable[[Any, Any], Any],
    eager: Callable[[Any, Any], Any],
    validated: list[Any],
    state: TrainState,
    batch: Any,
    *,
    key: torch.Tensor | None = None,
    device: torch.device | None = None,
    donate: bool = False,
    verify: Callable[[Any, Any], Any] | None = None,
) -> tuple[Any, torch.Tensor]:
    """Run a compiled step's function ``impl`` so that it fails exactly as ``eager`` does.

    Returns ``impl``'s result and the advanced RNG key (``key``, default ``state.rng``,
    drawn on ``device``, default ``state.device``).

    A batch signature (structure, shapes, dtypes) not seen before is first run through
    the eager function: what it rejects (float64 inputs for a float32 model, int32 class
    targets, a wrong feature size ...) is rejected with its very exception and message,
    before any graph is traced, run or handed a donated state; what it accepts is
    remembered, so this costs one eager step per new signature. A failure inside the
    graph on a known signature (a class index out of range trips an inductor kernel
    assertion) is diagnosed by re-running the eager function on the same inputs: its
    exception is raised instead, with the compiled error in a note; if eager succeeds,
    the compiled error stands. ``donate``: the state is marked consumed just before the
    graph runs (see ``purestep.compile``).
    """
    key = state.rng if key is None else key
    device = state.device if device is None else device
    signature = _signature(batch)
    expected: Any = None
    if signature not in validated:
        with rng_scope(key, device) as eager_scope:
            result = (verify or eager)(state, batch)
        if verify is not None:
            expected = (result, eager_scope.key)
        validated.append(signature)
    if donate:
        mark_donated(state)
    try:
        with rng_scope(key, device) as scope:
            out = impl(state, batch)
    except Exception as compiled_error:
        if donate:
            _add_note(compiled_error, _CONSUMED_NOTE)
        try:
            with rng_scope(key, device):
                eager(state, batch)
        except Exception as eager_error:
            first_line = (str(compiled_error).strip().splitlines() or [""])[0]
            _add_note(
                eager_error,
                "(the eager step's diagnosis: the compiled step failed on the same input "
                f"with {type(compiled_error).__name__}: {first_line[:200]})",
            )
            if donate:
                _add_note(eager_error, _CONSUMED_NOTE)
            eager_error.__suppress_context__ = True  # the compiled error is in the note
            raise eager_error from eager_error.__cause__
        raise
    if expected is not None:
        from purestep.core.verify import check_compiled_step, noise_masks

        metrics = expected[0][1] if isinstance(expected[0], tuple) else None
        grads = metrics.get("grads") if isinstance(metrics, Mapping) else None
        check_compiled_step(expected, (out, scope.key), noise_masks(grads))
    return out, scope.key


def _signature(batch: Any) -> Any:
    """What decides a compiled step's verdict on a batch: structure, shapes and dtypes."""
    if type(batch) is tuple and all(type(x) is torch.Tensor for x in batch):
        return tuple([(x.shape, x.dtype) for x in batch])  # the common case, 1 us
    leaves, spec = tree_flatten(batch)
    kinds = [(x.shape, x.dtype) if isinstance(x, torch.Tensor) else type(x) for x in leaves]
    return (spec, tuple(kinds))


_CONSUMED_NOTE = (
    "(the state given to this donated call is consumed: its tensors may hold a partial "
    "update; use a state saved before)"
)


def _add_note(error: BaseException, note: str) -> None:
    """``error.add_note`` (Python 3.11+), or the ``__notes__`` list it fills, on 3.10."""
    add = getattr(error, "add_note", None)
    if add is not None:
        add(note)
    else:
        error.__notes__ = [*getattr(error, "__notes__", []), note]  # type: ignore[attr-defined]


def _write_into(old: TrainState, new: TrainState) -> TrainState:
    """``new``'s values written into ``old``'s tensors (donation): the compiled graph then
    stores its results in the old state's memory instead of allocating a new state.

    ``step`` is left alone: the new state gets a tensor of its own there, so the old
    state's ``step`` tensor stays the mark of a consumed state (``mark_donated``)."""

    def put(o: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        if n is o or o.shape != n.shape or o.dtype != n.dtype:
            return n
        return o.copy_(n)

    return new._replace(
        params=tree_map(put, old.params, new.params),
        buffers=tree_map(put, old.buffers, new.buffers),
        opt_state=tree_map(put, old.opt_state, new.opt_state),
    )


def _detach(tree: Any) -> Any:
    """Every tensor leaf detached. Plain tuples, lists and dicts are walked here (the step's
    aux output: 13 us per call through the generic ``tree_map``, under 1 us here); other
    nodes (NamedTuples, registered classes) go through ``tree_map``."""
    kind = type(tree)
    if kind is torch.Tensor:
        return tree.detach()
    if kind is tuple or kind is list:
        return kind(_detach(x) for x in tree)
    if kind is dict:
        return {k: _detach(v) for k, v in tree.items()}
    return tree_map(lambda t: t.detach() if isinstance(t, torch.Tensor) else t, tree)


class LossShapeError(ValueError):
    """The model's outputs and the float targets have shapes a loss would broadcast."""


# Losses that compare outputs and targets element by element: for these the two shapes
# must agree (after the (N, 1) / (N,) alignment), whatever their sizes.
_ELEMENTWISE_MODULES: tuple[type[nn.Module], ...] = (
    nn.MSELoss,
    nn.L1Loss,
    nn.SmoothL1Loss,
    nn.HuberLoss,
    nn.BCELoss,
    nn.BCEWithLogitsLoss,
    nn.KLDivLoss,
    nn.PoissonNLLLoss,
    nn.SoftMarginLoss,
    nn.MultiLabelSoftMarginLoss,
    nn.HingeEmbeddingLoss,
)
_ELEMENTWISE_FUNCTIONS = (
    F.mse_loss,
    F.l1_loss,
    F.smooth_l1_loss,
    F.huber_loss,
    F.binary_cross_entropy,
    F.binary_cross_entropy_with_logits,
    F.kl_div,
    F.poisson_nll_loss,
    F.soft_margin_loss,
    F.multilabel_soft_margin_loss,
    F.hinge_embedding_loss,
)


def is_elementwise(criterion: Any) -> bool:
    """Whether ``criterion`` is one of torch's elementwise losses (``nn.MSELoss()``,
    ``F.l1_loss``, ``nn.BCEWithLogitsLoss()`` ...), looking through ``functools.partial``
    and ``__wrapped__``."""
    for _ in range(8):
        if isinstance(criterion, _ELEMENTWISE_MODULES) or any(
            criterion is f for f in _ELEMENTWISE_FUNCTIONS
        ):
            return True
        if isinstance(criterion, functools.partial):
            criterion = criterion.func
        elif hasattr(criterion, "__wrapped__"):
            criterion = criterion.__wrapped__
        else:
            return False
    return False


def align_targets(outputs: Any, targets: Any, *, elementwise: bool = False) -> Any:
    """``targets`` in the shape of ``outputs`` where a loss would otherwise broadcast them;
    a loss never broadcasts.

    The rule covers a tensor output and floating-point tensor targets (integer or bool
    targets are class indices, whose shape differs from the logits' by design, as
    ``cross_entropy``'s ``(N, C)`` against ``(N,)``: the criterion checks those):

    - equal shapes pass;
    - a trailing size-1 axis on one side only (``(N, 1)`` against ``(N,)``, either way
      round) is the one sensible reading: the targets are reshaped to the outputs' shape;
    - for an elementwise loss (``elementwise=True``: torch's ``mse``, ``l1``, ``huber``,
      ``bce_with_logits`` ..., see ``is_elementwise``) any other difference is an error;
    - for another criterion, outputs with one more axis than the targets (``(N, C)``
      against ``(N,)``, ``(N, C, L)`` against ``(N, L)``: a class or parameter axis) are
      left to it; any other difference (``(N, 3)`` against ``(N, 1)``, targets with more
      axes) is an error.

    Errors are ``LossShapeError`` (a ``ValueError``) naming both shapes. A loss that reads
    float targets of another shape on purpose goes through ``loss_fn=``, which is not
    checked.
    """
    if not isinstance(outputs, torch.Tensor) or not isinstance(targets, torch.Tensor):
        return targets
    if outputs.shape == targets.shape or not targets.is_floating_point():
        return targets
    o, t = tuple(outputs.shape), tuple(targets.shape)
    if (o[-1:] == (1,) and o[:-1] == t) or (t[-1:] == (1,) and t[:-1] == o):
        return targets.reshape(outputs.shape)
    extra_axis = len(o) == len(t) + 1 and any(o[:i] + o[i + 1 :] == t for i in range(1, len(o)))
    if extra_axis and not elementwise:
        return targets
    what = "an elementwise loss" if elementwise else "a loss"
    raise LossShapeError(
        f"the model's outputs have shape {o} and the targets {t}: {what} would broadcast "
        "them or fail (only (N, 1) against (N,) is aligned); make the model output the "
        "targets' shape (e.g. out_features: 1 for one target column), or use loss_fn= for "
        "a loss that reads targets of another shape"
    )


def _check_loss(loss: Any) -> torch.Tensor:
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
        shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise ValueError(f"the loss must be a 0-d tensor, got {shape} (reduce it, e.g. .mean())")
    if not loss.is_floating_point():
        raise ValueError(f"the loss must be a floating-point tensor, got {loss.dtype}")
    return loss


class TrainStep(_Step):
    """``train_step(state, batch) -> (new_state, metrics)``; see ``make_train_step``."""

    _training = True

    def __init__(
        self,
        model: nn.Module,
        criterion: Criterion | None,
        optimizer: Optimizer | GradientTransformation,
        *,
        loss_fn: LossFn | None = None,
        metrics_fn: MetricsFn | None = None,
        return_grads: bool = False,
        grad_engine: str = "auto",
        autocast: torch.dtype | None = None,
    ) -> None:
        if grad_engine not in GRAD_ENGINES:
            raise ValueError(f"grad_engine must be one of {GRAD_ENGINES}, got {grad_engine!r}")
        self.grad_engine = grad_engine
        if isinstance(optimizer, GradientTransformation):
            optimizer = as_optimizer(optimizer)
        if not isinstance(optimizer, Optimizer):
            raise TypeError(
                "optimizer must be a purestep.optim Optimizer or GradientTransformation "
                f"(e.g. ps.optim.adam(lr=1e-3)), got {type(optimizer).__name__}"
            )
        super().__init__(
            model, criterion, loss_fn=loss_fn, metrics_fn=metrics_fn, autocast=autocast
        )
        self.optimizer = optimizer
        self.return_grads = return_grads
        self._trainable = self.spec.trainable
        self._frozen = tuple(k for k in self.spec.params if k not in set(self._trainable))

    def _check_opt_state(self, state: TrainState) -> None:
        expected = tree_structure(self._reference_opt_state())
        if tree_structure(state.opt_state) != expected:
            raise ValueError(
                "state.opt_state does not have the structure this optimizer expects for "
                f"{self.spec.model_name}'s trainable parameters (was the state built with "
                "another optimizer or model?)"
            )

    def _reference_opt_state(self) -> Any:
        """``optimizer.init`` over stand-ins of the trainable parameters: meta tensors (no
        memory), or zeros if the optimizer's init needs real values."""
        shapes = {k: self.spec.params[k] for k in self._trainable}
        try:
            return self.optimizer.init(
                {k: torch.empty(s, dtype=d, device="meta") for k, (s, d) in shapes.items()}
            )
        except (RuntimeError, NotImplementedError):
            return self.optimizer.init({k: torch.zeros(s, dtype=d) for k, (s, d) in shapes.items()})

    def __call__(self, state: TrainState, batch: Any) -> tuple[TrainState, Metrics]:
        self._mirror.sync()
        # A state this step returned last time was built from a checked one by this very
        # step, so it fits by construction: skip re-checking it (states are immutable; do
        # not assign into their dicts).
        if state is not self._last_output:
            self.check_state(state)
        self.check_batch(batch, state)
        if self.compiled:
            if self.donate:
                self._last_output = None
            (new_state, metrics), key = call_compiled(
                self._impl,
                self._pure,
                self._validated,
                state,
                batch,
                donate=self.donate,
                verify=self._verify_eager,
            )
        else:
            with rng_scope(state.rng, state.device) as scope:
                new_state, metrics = self._impl(state, batch)
            key = scope.key
        out = new_state._replace(rng=key)
        self._last_output = out
        return out, metrics

    def _pure(self, state: TrainState, batch: Any) -> tuple[TrainState, Metrics]:
        trainable = {k: state.params[k] for k in self._trainable}
        frozen = {k: state.params[k] for k in self._frozen}

        def objective(trainable: dict[str, torch.Tensor]) -> tuple[torch.Tensor, Any]:
            loss, aux, new_buffers, outputs, _targets = self._forward_loss(
                _conv_layout({**frozen, **trainable}), state.buffers, batch, state.rng
            )
            # aux may only hold tensors: outputs travel as a 0- or 1-tuple.
            kept = (
                (_detach(outputs),) if self.metrics_fn is not None and outputs is not None else ()
            )
            return loss, (loss.detach(), aux, new_buffers, kept)

        grads, (loss, aux, new_buffers, kept) = self._grad(objective, trainable)
        new_trainable, opt_state = self.optimizer.step(grads, state.opt_state, trainable)
        params = {k: new_trainable.get(k, p) for k, p in state.params.items()}
        metrics: Metrics = {"loss": loss, **aux}
        if kept:
            metrics.update(self._extra_metrics(kept[0], self._targets(batch)))
        if self.return_grads:
            metrics["grads"] = grads
        if torch.compiler.is_compiling():
            params, new_buffers, opt_state = _layout_like(
                (params, new_buffers, opt_state), (state.params, state.buffers, state.opt_state)
            )
        new_state = TrainState(params, new_buffers, opt_state, state.step + 1, state.rng)
        if self.donate and torch.compiler.is_compiling():
            new_state = _write_into(state, new_state)
        return new_state, metrics

    def _grad(
        self,
        objective: Callable[[dict[str, torch.Tensor]], tuple[torch.Tensor, Any]],
        trainable: dict[str, torch.Tensor],
    ) -> tuple[dict[str, torch.Tensor], Any]:
        """Gradients of ``objective`` w.r.t. ``trainable`` and its aux output.

        Under ``torch.compile`` or another functorch transform (vmap), or with
        ``grad_engine="func"``: ``torch.func.grad_and_value``. In plain eager mode (default
        ``"auto"``): ``torch.autograd.grad`` on fresh leaf views, the very engine behind
        ``loss.backward()``, because functorch transforms rewrite a few ops (e.g.
        ``binary_cross_entropy_with_logits``) into decompositions that round differently,
        and eager steps promise bitwise parity with the imperative loop. Both are pure:
        no ``.grad`` field is touched and no input is changed.
        """
        use_func = self.grad_engine == "func" or (
            self.grad_engine == "auto"
            and (
                torch.compiler.is_compiling()
                or any(is_functorch_wrapped(p) for p in trainable.values())
            )
        )
        if use_func:
            # functorch's dropout draws other masks than eager's (see purestep.core.masks).
            conv_layout = torch.compiler.is_compiling() and any(
                p.dim() == 4 and p.device.type == "cpu" for p in trainable.values()
            )
            with EagerMasks(conv_layout):
                grads, (_, aux) = grad_and_value(objective, has_aux=True)(trainable)
            return grads, aux
        leaves = {k: p.detach().requires_grad_(True) for k, p in trainable.items()}
        with torch.enable_grad():
            loss, aux = objective(leaves)
            found = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
        grads = {
            k: g if g is not None else torch.zeros_like(p)
            for (k, p), g in zip(leaves.items(), found, strict=True)
        }
        return grads, _detach(aux)


def _layout_like(new: Any, old: Any) -> Any:
    """``new``'s tensors in the memory layout of their ``old`` counterparts (same tree).

    Inside a compiled step, conv weights enter the model channels-last (``_conv_layout``);
    what is computed from their gradients (SGD's momentum buffer, ...) then comes out
    channels-last, and the next call, given that state, missed the graph (a stride guard:
    one recompile on every conv net). A copy into the old layout, which inductor fuses
    into the kernel that computes the value, keeps the state's layout fixed."""
    if tree_structure(new) != tree_structure(old):
        return new

    def like(n: Any, o: Any) -> Any:
        if not isinstance(n, torch.Tensor) or not isinstance(o, torch.Tensor):
            return n
        if n.shape != o.shape or n.stride() == o.stride():
            return n
        if o.is_contiguous():
            return n.contiguous()
        if o.dim() == 4 and o.is_contiguous(memory_format=torch.channels_last):
            return n.contiguous(memory_format=torch.channels_last)
        return n

    return tree_map(like, new, old)


def _conv_layout(params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Under ``torch.compile`` on CPU, 4-d CPU weights enter the model channels-last.

    Convolutions then produce channels-last activations throughout, the layout inductor's
    CPU convolutions want. Left NCHW, the joint forward+backward graph keeps activations in
    both layouts (ResNet-8, batch 128: 172 vs 132 ms per step). The state keeps its own
    layout: the conversion is inside the differentiated function, so gradients come back
    in each parameter's layout."""
    if not torch.compiler.is_compiling():
        return params
    return {
        k: p.contiguous(memory_format=torch.channels_last)
        if p.dim() == 4 and p.device.type == "cpu"
        else p
        for k, p in params.items()
    }


class EvalStep(_Step):
    """``eval_step(state, batch) -> metrics`` in eval mode (running stats, no dropout)."""

    _training = False

    def __call__(self, state: TrainState, batch: Any) -> Metrics:
        self._mirror.sync()
        self.check_state(state)
        self.check_batch(batch, state)
        if self.compiled:
            return call_compiled(
                self._impl, self._pure, self._validated, state, batch, verify=self._verify_eager
            )[0]
        with rng_scope(state.rng, state.device):
            return self._impl(state, batch)

    def _pure(self, state: TrainState, batch: Any) -> Metrics:
        with torch.no_grad():
            loss, aux, _, outputs, targets = self._forward_loss(
                state.params, state.buffers, batch, state.rng
            )
            return {"loss": loss, **aux, **self._extra_metrics(outputs, targets)}


def make_train_step(
    model: nn.Module,
    criterion: Criterion | None,
    optimizer: Optimizer | GradientTransformation,
    *,
    loss_fn: LossFn | None = None,
    metrics_fn: MetricsFn | None = None,
    return_grads: bool = False,
    grad_engine: str = "auto",
    autocast: torch.dtype | None = None,
) -> TrainStep:
    """The pure training step for ``model``.

    Args:
        model: the ``nn.Module``. It is never modified; its parameters and buffers come
            from the state, everything else (attributes its forward reads, hooks) is read
            from the model as it is at each call (see ``purestep.core.module``). Its module
            tree is fixed: replacing a submodule later is an error.
        criterion: ``(outputs, targets) -> 0-d loss`` (``nn.CrossEntropyLoss()``, ...); the
            batch is then ``(inputs..., targets)``. ``None`` with ``loss_fn``; ``None``
            without it: the model computes its own loss (``out.loss``, ``out["loss"]`` or a
            0-d tensor output, Hugging Face style), and the batch is the model's arguments:
            a dict is passed as keyword arguments (``model(**batch)``), a tuple
            positionally, a tensor as the one argument (see ``call_with_batch``). A loss
            never broadcasts: float targets whose shape differs from the outputs' are
            aligned only for ``(N, 1)`` against ``(N,)``, other differences are a
            ``LossShapeError`` (see ``align_targets`` for the rule).
        optimizer: a ``purestep.optim`` rule (or a transform, applied as ``p + u``).
        loss_fn: general form ``loss_fn(apply, params, buffers, batch, rng) -> loss | (loss,
            aux)``, where ``apply(params, buffers, *inputs, **kwargs)`` runs the model; aux is a
            dict of metrics (merged into the metrics), or any other pytree of tensors (JAX's
            ``has_aux``), returned whole as ``metrics["aux"]``.
        metrics_fn: ``(outputs, targets) -> {name: tensor}``, computed without gradient
            (without a criterion, targets are a dict batch's ``"labels"``, else None).
        return_grads: add the gradient dict to the metrics under ``"grads"``.
        grad_engine: ``"auto"`` (default): ``torch.autograd.grad`` in plain eager mode
            (bitwise the gradients of ``loss.backward()``), ``torch.func.grad_and_value``
            when compiled or vmapped; ``"func"``: always ``grad_and_value``; ``"autograd"``:
            always the autograd engine (not compilable with ``fullgraph``).
        autocast: run forward and loss under ``torch.autocast`` with this dtype (e.g.
            ``torch.bfloat16``; the update stays in the parameters' dtype).

    Returns:
        ``train_step(state, batch) -> (state, metrics)``; ``metrics["loss"]`` is a 0-d tensor.
    """
    return TrainStep(
        model,
        criterion,
        optimizer,
        loss_fn=loss_fn,
        metrics_fn=metrics_fn,
        return_grads=return_grads,
        grad_engine=grad_engine,
        autocast=autocast,
    )


def make_eval_step(
    model: nn.Module,
    criterion: Criterion | None,
    *,
    loss_fn: LossFn | None = None,
    metrics_fn: MetricsFn | None = None,
    autocast: torch.dtype | None = None,
) -> EvalStep:
    """The pure evaluation step: ``eval_step(state, batch) -> metrics``, model in eval mode,
    no gradient. Arguments as for ``make_train_step``."""
    return EvalStep(model, criterion, loss_fn=loss_fn, metrics_fn=metrics_fn, autocast=autocast)
