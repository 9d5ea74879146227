"""save_state / load_state / state_to_tensors / state_from_tensors: bitwise round trips,
exact resume, no pickle, and every way a file or a dict can fail to fit."""

from __future__ import annotations

import hashlib
import json
import pickle
import struct
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import purestep as ps
from purestep.core import serialize
from purestep.core.pytree import tree_leaves
from tests.support import mlp, tree_equal


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(7, 5)
        self.out = nn.Linear(5, 7, bias=False)
        self.out.weight = self.emb.weight

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.out(self.emb(idx))


def bn_mlp(hidden: int = 8) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(6, hidden),
        nn.BatchNorm1d(hidden),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.Linear(hidden, 3),
    )


OPTIMIZERS = {
    "adam": lambda: ps.optim.adam(lr=1e-2),
    "sgd_momentum": lambda: ps.optim.sgd(lr=0.1, momentum=0.9, nesterov=True),
    "scheduled": lambda: ps.optim.scheduled(
        ps.optim.sgd(lr=0.1, momentum=0.9), ps.optim.schedules.cosine_annealing_lr(T_max=5)
    ),
    "param_groups": lambda: ps.optim.param_groups(
        ps.optim.adamw, [{"params": r"bias", "weight_decay": 0.0}], lr=1e-2, weight_decay=0.1
    ),
    "chain": lambda: ps.optim.chain(ps.optim.clip_by_global_norm(1.0), ps.optim.adam(lr=1e-2)),
}


def bn_batches(n: int = 4) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [
        (torch.randn(8, 6, generator=g), torch.randint(0, 3, (8,), generator=g)) for _ in range(n)
    ]


def trained(model: nn.Module, opt, data, steps: int = 3):
    step = ps.make_train_step(model, F.cross_entropy, opt)
    state = ps.TrainState.create(model, opt, seed=7)
    for t in range(steps):
        state, _ = step(state, data[t % len(data)])
    return state, step


def same_state(a: ps.TrainState, b: ps.TrainState) -> bool:
    """Same structure, and every leaf the same dtype, shape, device and bits."""
    la, lb = tree_leaves(a), tree_leaves(b)
    return tree_equal(a, b) and all(x.device == y.device for x, y in zip(la, lb, strict=True))


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- round trips ----------------------------------------------------------------------------
@pytest.mark.parametrize("rule", sorted(OPTIMIZERS))
def test_round_trip_is_bitwise(tmp_path, rule):
    opt = OPTIMIZERS[rule]()
    state, step = trained(bn_mlp(), opt, bn_batches())
    assert state.buffers["1.num_batches_tracked"].dtype == torch.int64
    path = tmp_path / "s.safetensors"
    ps.save_state(path, state)
    for like in (state, step, ps.TrainState.create(bn_mlp(), opt, seed=3)):
        loaded = ps.load_state(path, like=like)
        assert same_state(loaded, state)
        assert type(loaded.opt_state) is type(state.opt_state)
    assert same_state(ps.core.state_from_tensors(ps.core.state_to_tensors(state), step), state)


def test_round_trip_tied_weights(tmp_path):
    model = Tied()
    opt = ps.optim.sgd(lr=0.1, momentum=0.9)
    idx = torch.randint(0, 7, (6,))
    state, step = trained(model, opt, [(idx, idx)])
    assert list(state.params) == ["emb.weight"]
    ps.save_state(tmp_path / "t.safetensors", state)
    assert same_state(ps.load_state(tmp_path / "t.safetensors", like=step), state)


def test_keys_follow_the_documented_layout():
    model = bn_mlp()
    tensors = ps.core.state_to_tensors(ps.TrainState.create(model, OPTIMIZERS["chain"]()))
    assert {"params/0.weight", "buffers/1.running_mean", "step", "rng"} <= tensors.keys()
    assert "opt_state/1/exp_avg/0.weight" in tensors
    assert "opt_state/1/hyperparams/lr" in tensors
    adam = ps.core.state_to_tensors(ps.TrainState.create(model, OPTIMIZERS["adam"]()))
    assert "opt_state/exp_avg_sq/4.bias" in adam and "opt_state/step" in adam


def test_tensors_are_contiguous_cpu_and_share_no_memory():
    """Views into one storage (an unstacked sweep's states) and non-contiguous leaves come
    out as separate contiguous tensors, none aliasing the state."""
    model = mlp(p=0.0)
    opt = ps.optim.adam(lr=1e-3)
    stacked = ps.stack_states([ps.TrainState.create(model, opt, seed=s) for s in (0, 1)])
    state = ps.unstack_state(stacked)[1]
    weight = state.params["0.weight"]  # same values, non-contiguous layout
    state = state._replace(params={**state.params, "0.weight": weight.t().contiguous().t()})
    assert not state.params["0.weight"].is_contiguous()
    tensors = ps.core.state_to_tensors(state)
    ptrs = [t.untyped_storage().data_ptr() for t in tensors.values() if t.numel()]
    assert len(ptrs) == len(set(ptrs))
    own = {t.untyped_storage().data_ptr() for t in tree_leaves(stacked)} | {
        t.untyped_storage().data_ptr() for t in tree_leaves(state)
    }
    assert not own & set(ptrs)
    assert all(t.is_contiguous() and t.device.type == "cpu" for t in tensors.values())
    assert same_state(ps.core.state_from_tensors(tensors, state), state)


def test_state_from_tensors_neither_changes_nor_aliases_its_inputs():
    state, step = trained(bn_mlp(), OPTIMIZERS["adam"](), bn_batches())
    tensors = ps.core.state_to_tensors(state)
    before = {k: v.clone() for k, v in tensors.items()}
    rebuilt = ps.core.state_from_tensors(tensors, step)
    ptrs = {t.untyped_storage().data_ptr() for t in tensors.values()}
    assert not ptrs & {t.untyped_storage().data_ptr() for t in tree_leaves(rebuilt)}
    rebuilt.params["0.weight"].add_(1.0)  # e.g. a donated step writing into the state
    assert all(torch.equal(tensors[k], before[k]) for k in before)


def test_resumed_training_is_bitwise_the_uninterrupted_run(tmp_path):
    """Save after k steps, load into a fresh process-like setup, continue: the same bits as
    never stopping (dropout keys, BatchNorm statistics and the schedule included)."""
    data = bn_batches(6)
    opt = OPTIMIZERS["scheduled"]()
    step = ps.make_train_step(bn_mlp(), F.cross_entropy, opt)
    straight = ps.TrainState.create(bn_mlp(), opt, seed=11)
    for t in range(8):
        straight, _ = step(straight, data[t % 6])

    state = ps.TrainState.create(bn_mlp(), opt, seed=11)
    for t in range(3):
        state, _ = step(state, data[t % 6])
    ps.save_state(tmp_path / "k.safetensors", state)
    fresh_step = ps.make_train_step(bn_mlp(), F.cross_entropy, OPTIMIZERS["scheduled"]())
    resumed = ps.load_state(tmp_path / "k.safetensors", like=fresh_step)
    for t in range(3, 8):
        resumed, _ = fresh_step(resumed, data[t % 6])
    assert same_state(resumed, straight)


def test_no_pickle_on_any_path(tmp_path, monkeypatch):
    """save/load work with torch.save, torch.load and pickle all disabled, and the file is
    a plain safetensors file: an 8-byte header length, then a JSON header."""

    def refuse(*args, **kwargs):
        raise AssertionError("pickle used")

    for name in ("save", "load"):
        monkeypatch.setattr(torch, name, refuse)
    for name in ("dump", "dumps", "load", "loads"):
        monkeypatch.setattr(pickle, name, refuse)
    state, step = trained(bn_mlp(), OPTIMIZERS["param_groups"](), bn_batches())
    path = tmp_path / "s.safetensors"
    ps.save_state(path, state, metadata={"epoch": "3"})
    assert same_state(ps.load_state(path, like=step), state)
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + length])
    assert header["__metadata__"]["epoch"] == "3"
    assert "opt_state/inner/group0/exp_avg/1.bias" in header


def test_metadata_round_trip_and_validation(tmp_path):
    state = ps.TrainState.create(mlp(), ps.optim.sgd(lr=0.1))
    path = tmp_path / "m.safetensors"
    ps.save_state(path, state, metadata={"epoch": "2", "note": "ok"})
    assert ps.core.read_state_metadata(path) == {"epoch": "2", "note": "ok"}
    with pytest.raises(TypeError, match="'epoch': int"):
        ps.save_state(path, state, metadata={"epoch": 2})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="'purestep.sha256' is reserved"):
        ps.save_state(path, state, metadata={"purestep.sha256": "x"})


# -- atomic save --------------------------------------------------------------------------
def test_failed_save_keeps_the_previous_file_and_leaves_no_temp_file(tmp_path, monkeypatch):
    state = ps.TrainState.create(mlp(), ps.optim.sgd(lr=0.1))
    path = tmp_path / "s.safetensors"
    ps.save_state(path, state)
    digest = file_digest(path)

    def crash(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a file")
        raise KeyboardInterrupt  # a kill in the middle of writing

    monkeypatch.setattr(serialize, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        ps.save_state(path, state._replace(step=state.step + 1))
    assert file_digest(path) == digest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.safetensors"]

    bad = state._replace(buffers={"x": torch.zeros(2, dtype=torch.complex128)})
    with pytest.raises(ValueError, match=r"buffers/x has dtype torch.complex128"):
        ps.save_state(path, bad)
    assert file_digest(path) == digest


# -- errors -------------------------------------------------------------------------------
@pytest.fixture
def saved(tmp_path):
    state, step = trained(bn_mlp(), OPTIMIZERS["adam"](), bn_batches())
    path = tmp_path / "s.safetensors"
    ps.save_state(path, state)
    return path, state, step


def test_dict_errors_name_the_key(saved):
    _, state, step = saved
    tensors = ps.core.state_to_tensors(state)
    missing = {k: v for k, v in tensors.items() if k != "opt_state/exp_avg/0.weight"}
    with pytest.raises(ValueError, match=r"missing keys 'opt_state/exp_avg/0.weight'.*another"):
        ps.core.state_from_tensors(missing, step)
    with pytest.raises(ValueError, match=r"unexpected keys 'params/extra'"):
        ps.core.state_from_tensors({**tensors, "params/extra": torch.zeros(1)}, step)
    wrong_shape = {**tensors, "params/0.weight": torch.zeros(8, 7)}
    with pytest.raises(ValueError, match=r"'params/0.weight' has shape \(8, 7\).*expects \(8, 6\)"):
        ps.core.state_from_tensors(wrong_shape, step)
    wrong_dtype = {**tensors, "step": tensors["step"].double()}
    with pytest.raises(ValueError, match=r"'step' has dtype torch.float64.*expects torch.int64"):
        ps.core.state_from_tensors(wrong_dtype, state)
    with pytest.raises(TypeError, match=r"tensors\['step'\] must be a torch.Tensor, got int"):
        ps.core.state_from_tensors({**tensors, "step": 3}, step)
    with pytest.raises(TypeError, match="like must be a purestep.TrainState or the TrainStep"):
        ps.core.state_from_tensors(tensors, bn_mlp())  # type: ignore[arg-type]


def test_file_errors_name_the_path_and_leave_the_file_unchanged(saved, tmp_path):
    path, state, step = saved
    digest = file_digest(path)
    cases = {
        "another model": (
            ps.make_train_step(bn_mlp(hidden=5), F.cross_entropy, OPTIMIZERS["adam"]()),
            r"'params/0.weight' has shape \(8, 6\) but the target state expects \(5, 6\)",
        ),
        "another optimizer": (
            ps.make_train_step(bn_mlp(), F.cross_entropy, OPTIMIZERS["sgd_momentum"]()),
            r"missing keys 'opt_state/momentum_buffer/0.bias'.*unexpected keys "
            r"'opt_state/exp_avg/0.bias'.*another model/optimizer",
        ),
        "another dtype": (
            ps.TrainState.create(bn_mlp().double(), OPTIMIZERS["adam"]()),
            r"'params/0.weight' has dtype torch.float32 but the target state expects "
            r"torch.float64",
        ),
    }
    for like, message in cases.values():
        with pytest.raises(ValueError, match=message) as info:
            ps.load_state(path, like=like)
        assert str(path) in str(info.value)
    assert file_digest(path) == digest
    assert same_state(ps.load_state(path, like=step), state)


def test_broken_files_are_value_errors_naming_the_path(saved, tmp_path):
    path, _, step = saved
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    flipped = bytearray(raw)
    flipped[8 + length + 5] ^= 0x10  # one bit of the tensor bytes
    files = {
        "missing.safetensors": (None, "no such file"),
        "truncated.safetensors": (raw[:-7], "truncated or corrupted"),
        "garbage.safetensors": (b"this is not a state file at all" * 4, "truncated or corrupted"),
        "empty.safetensors": (b"", "truncated or corrupted"),
        "flipped.safetensors": (bytes(flipped), "do not match the checksum"),
    }
    for name, (content, problem) in files.items():
        target = tmp_path / name
        if content is not None:
            target.write_bytes(content)
        with pytest.raises(ValueError, match=problem) as info:
            ps.load_state(target, like=step)
        assert str(target) in str(info.value)
        if content is not None:
            assert target.read_bytes() == content
    with pytest.raises(ValueError, match="is a directory"):
        ps.load_state(tmp_path, like=step)
