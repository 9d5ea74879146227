"""Callbacks: user code that runs at the loop's events, without editing ``fit``.

A callback is any object with some of these methods (duck typing: subclassing
``Callback`` only documents intent and gives no-op defaults)::

    on_fit_start(loop)               before the first step (also on a resume)
    on_step_end(loop, metrics)       after every train step; ``metrics`` are the step's
                                     output tensors (``loss`` 0-d; ``grads`` when the step
                                     was made with ``return_grads=True``, as ``purestep
                                     train`` does for a config with callbacks), never read
                                     back from the device unless the callback reads them
    on_epoch_end(loop, record)       after each epoch's record (train + val figures, lr)
    on_checkpoint(loop, path)        after each checkpoint is saved (its step directory)
    on_fit_end(loop, history)        when training ends (not on an exception)
    state_dict() -> dict             JSON-able state, saved in every checkpoint's meta.json
    load_state_dict(state)           given what state_dict returned, on a resume

``loop`` is a ``Loop``: ``loop.state`` (the current ``TrainState``), ``loop.epoch``
(epochs completed), ``loop.step`` (train steps so far), ``loop.history`` (the epoch
records so far) and ``loop.request_stop(reason)``: the run ends after the current step
(or epoch end) with a checkpoint, as a finished run (``purestep train`` exits 0), and a
``--resume`` of it has nothing left to train.

Because a callback's state travels in every checkpoint, a run with callbacks resumed after
a kill ends with the callbacks' state, like the train state, equal to an uninterrupted
run's. Example, per-step gradient-norm logging::

    class GradNorm:
        def __init__(self, every=10):
            self.every, self.norms = every, []
        def on_step_end(self, loop, metrics):
            if loop.step % self.every == 0:
                g = metrics["grads"]
                self.norms.append(float(torch.linalg.vector_norm(
                    torch.stack([torch.linalg.vector_norm(v) for v in g.values()]))))
        def state_dict(self):
            return {"norms": self.norms}
        def load_state_dict(self, state):
            self.norms = list(state["norms"])

    step = ps.make_train_step(model, loss, opt, return_grads=True)
    ps.fit(state, step, data, epochs=3, callbacks=[GradNorm()])

In a YAML config: ``callbacks: [{name: "mypkg.callbacks:GradNorm", every: 10}]`` (a
user's callback is code: a run directory from elsewhere builds it only with
``--trust-code``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["EVENTS", "Callback", "Loop"]

EVENTS = ("on_fit_start", "on_step_end", "on_epoch_end", "on_checkpoint", "on_fit_end")


class Callback:
    """No-op defaults for every callback method (see the module docstring)."""

    def on_fit_start(self, loop: Loop) -> None:
        """Before the first step."""

    def on_step_end(self, loop: Loop, metrics: Mapping[str, Any]) -> None:
        """After every train step."""

    def on_epoch_end(self, loop: Loop, record: Mapping[str, Any]) -> None:
        """After each epoch's record."""

    def on_checkpoint(self, loop: Loop, path: Any) -> None:
        """After each checkpoint is saved."""

    def on_fit_end(self, loop: Loop, history: Any) -> None:
        """When training ends."""

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state saved in every checkpoint."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""


class Loop:
    """What a callback sees of the running loop (read-only but for ``request_stop``)."""

    def __init__(self, state: Any, progress: Any, history: list[dict[str, Any]]) -> None:
        self.state = state
        self._progress = progress  # the LoopState: epoch, step
        self.history = history
        self.stop_reason: str | None = None

    @property
    def epoch(self) -> int:
        """Epochs completed."""
        return int(self._progress.epoch)

    @property
    def step(self) -> int:
        """Train steps so far."""
        return int(self._progress.step)

    def request_stop(self, reason: str = "requested by a callback") -> None:
        """End the run after the current step (or epoch end), with a checkpoint."""
        if not isinstance(reason, str) or not reason:
            raise ValueError(f"request_stop: reason must be a non-empty string, got {reason!r}")
        self.stop_reason = reason


class Callbacks:
    """The callbacks of one ``fit``, called in order; each event only on those that have
    it."""

    def __init__(self, callbacks: Sequence[Any]) -> None:
        for cb in callbacks:
            if not any(callable(getattr(cb, name, None)) for name in (*EVENTS, "state_dict")):
                raise TypeError(
                    f"callbacks: {type(cb).__name__} has none of the callback methods "
                    f"({', '.join(EVENTS)}, state_dict)"
                )
        self.items = list(callbacks)

    def __bool__(self) -> bool:
        return bool(self.items)

    def emit(self, event: str, *args: Any) -> None:
        for cb in self.items:
            method = getattr(cb, event, None)
            if callable(method):
                method(*args)

    def state_dicts(self) -> list[dict[str, Any]]:
        """Each callback's JSON-able state (``{}`` for one without ``state_dict``)."""
        out = []
        for cb in self.items:
            method = getattr(cb, "state_dict", None)
            state = method() if callable(method) else {}
            if not isinstance(state, dict):
                raise TypeError(
                    f"callbacks: {type(cb).__name__}.state_dict() must return a dict, got "
                    f"{type(state).__name__}"
                )
            try:
                json.dumps(state, allow_nan=True)
            except (TypeError, ValueError) as err:
                raise TypeError(
                    f"callbacks: {type(cb).__name__}.state_dict() must be JSON-able (it is "
                    f"saved in meta.json): {err}"
                ) from None
            out.append(state)
        return out

    def load_state_dicts(self, states: Sequence[Mapping[str, Any]]) -> None:
        """Give each callback the state its twin had when the checkpoint was saved."""
        if not states:
            return
        if len(states) != len(self.items):
            raise ValueError(
                f"callbacks: the checkpoint holds the state of {len(states)} callbacks, this "
                f"run has {len(self.items)}; resume with the same callbacks"
            )
        for cb, state in zip(self.items, states, strict=True):
            method = getattr(cb, "load_state_dict", None)
            if callable(method):
                method(dict(state))
