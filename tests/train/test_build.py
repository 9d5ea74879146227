"""Building what a config names: built-ins and a user's own model, data and loss."""

from __future__ import annotations

import sys
import textwrap

import pytest
import torch

from purestep.data import Batches
from purestep.train.build import (
    UserFunctionError,
    add_import_paths,
    build_criterion,
    build_data,
    build_model,
    build_optimizer,
    build_torch_optimizer,
    build_torch_scheduler,
    infer_task,
    task_from_targets,
)
from purestep.train.config import ConfigError, parse_config

BASE = {
    "model": {"name": "mlp", "in_features": 16, "hidden": [8], "out_features": 4},
    "data": {"name": "blobs", "n_train": 64, "n_val": 32, "batch_size": 16},
    "loss": "cross_entropy",
    "optimizer": {"name": "SGD", "lr": 0.1},
}


def cfg(**patch):
    return parse_config({**BASE, **patch})


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """A module of the user's in a directory on the import path, with a unique name."""
    counter = [0]

    def make(source: str) -> str:
        counter[0] += 1
        name = f"user_mod_{tmp_path.name.replace('-', '_')}_{counter[0]}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        add_import_paths(tmp_path)
        return name

    yield make
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(tmp_path.resolve())])


def test_builtins_by_name():
    c = cfg()
    model = build_model(c)
    assert sum(p.numel() for p in model.parameters()) == 16 * 8 + 8 + 8 * 4 + 4
    train = build_data(c.data, "train")
    assert train is not None and train.data[0].shape == (64, 16)
    assert build_data(c.data, "val").data[0].shape == (32, 16)
    assert build_data(c.data, "test") is not None  # blobs' default test split
    assert infer_task(c) == "multiclass"
    assert isinstance(build_criterion(c.loss), torch.nn.CrossEntropyLoss)
    loss = build_criterion(cfg(loss={"name": "cross_entropy", "label_smoothing": 0.2}).loss)
    assert loss.label_smoothing == 0.2


def test_in_features_from_the_data():
    c = cfg(model={"name": "mlp", "hidden": [8], "out_features": 4})
    x = build_data(c.data, "train").data[0]
    assert build_model(c, input_example=x[:1])[0].in_features == 16


def test_binary_task_makes_float_targets(user_module):
    name = user_module(
        """
        import torch
        def data(split, seed, n=20):
            g = torch.Generator().manual_seed(seed)
            return torch.randn(n, 3, generator=g), torch.randint(0, 2, (n,), generator=g)
        """
    )
    c = cfg(data={"name": f"{name}:data", "batch_size": 4}, loss="bce_with_logits")
    assert infer_task(c) == "binary"
    split = build_data(c.data, "train", "binary")
    assert split.data[1].dtype == torch.float32


def test_multiclass_task_makes_int64_class_indices(user_module):
    """numpy labels often arrive as int32, which cross_entropy refuses."""
    name = user_module(
        """
        import numpy as np
        def data(split, seed, n=20):
            rng = np.random.default_rng(seed)
            return rng.normal(size=(n, 3)), rng.integers(0, 3, n).astype(np.int32)
        """
    )
    c = cfg(data={"name": f"{name}:data", "batch_size": 4}, loss="cross_entropy")
    split = build_data(c.data, "train", infer_task(c))
    assert split.data[1].dtype == torch.int64
    y = split.data[1]
    loss = torch.nn.functional.cross_entropy(torch.zeros(len(y), 3), y)
    assert torch.isfinite(loss)


def test_user_model_data_and_loss(user_module):
    name = user_module(
        """
        import torch
        from torch import nn

        class Net(nn.Module):
            def __init__(self, width: int = 4, scale: float = 1.0):
                super().__init__()
                self.lin = nn.Linear(3, width)
                self.scale = scale
            def forward(self, a, b):
                return self.lin(a + b) * self.scale

        def net(width: int = 4, scale: float = 1.0):
            return Net(width, scale)

        def pairs(split, seed, n_train=32, n_val=0):
            n = n_train if split == "train" else n_val
            if n == 0:
                return None
            g = torch.Generator().manual_seed(seed)
            inputs = (torch.randn(n, 3, generator=g), torch.randn(n, 3, generator=g))
            return inputs, torch.randint(0, 4, (n,), generator=g)

        def my_loss(outputs, targets, weight=1.0):
            return weight * torch.nn.functional.cross_entropy(outputs, targets)
        """
    )
    c = cfg(
        model={"name": f"{name}:net", "width": 4, "scale": 2.0},
        data={"name": f"{name}:pairs", "batch_size": 8},
        loss={"name": f"{name}:my_loss", "weight": 0.5},
        task="multiclass",
    )
    model = build_model(c)
    assert model.scale == 2.0
    train = build_data(c.data, "train")
    assert len(train.data) == 3 and len(train) == 32
    assert build_data(c.data, "val") is None
    crit = build_criterion(c.loss)
    x1, x2, y = train.data
    expected = 0.5 * torch.nn.functional.cross_entropy(model(x1, x2), y)
    assert torch.equal(crit(model(x1, x2), y), expected)
    assert len(list(Batches(train.data, 8).epoch(0))) == 4


def test_user_dataset_object(user_module):
    name = user_module(
        """
        import torch
        from torch.utils.data import Dataset
        class Squares(Dataset):
            def __len__(self):
                return 10
            def __getitem__(self, i):
                return torch.tensor([float(i)]), torch.tensor(float(i * i))
        def data(split, seed):
            return Squares() if split == "train" else None
        """
    )
    split = build_data(cfg(data={"name": f"{name}:data", "batch_size": 4}).data, "train")
    batches = list(Batches(split.data, 4, seed=0).epoch(1))
    assert [b[0].shape[0] for b in batches] == [4, 4, 2]
    xs = torch.cat([b[0] for b in batches]).flatten()
    assert sorted(xs.tolist()) == [float(i) for i in range(10)]
    assert torch.equal(torch.cat([b[1] for b in batches]), xs.square())


@pytest.mark.parametrize(
    ("patch", "match"),
    [
        ({"model": {"name": "mlpp"}}, "model.name: unknown model 'mlpp'; did you mean 'mlp'"),
        ({"model": {"name": "mlp", "hiden": [3]}}, "model.hiden: unknown argument of mlp; did"),
        ({"model": {"name": "mlp", "hidden": 64}}, "model.hidden: expected an instance of Seq"),
        ({"model": {"name": "mlp", "dropout": "high"}}, "model.dropout: expected a valid number"),
        ({"model": {"name": "no_such_module_x:f"}}, "cannot import module 'no_such_module_x'"),
        ({"model": {"name": "math:nothing"}}, "module 'math' has no attribute 'nothing'"),
        ({"model": {"name": "math:sqrt"}}, "model"),
    ],
)
def test_model_errors(patch, match):
    with pytest.raises(ConfigError, match=match):
        build_model(cfg(**patch))


@pytest.mark.parametrize(
    ("patch", "match"),
    [
        ({"name": "blob"}, "data.name: unknown data 'blob'; did you mean 'blobs'"),
        ({"name": "blobs", "n_trian": 3}, "data.n_trian: unknown argument of blobs"),
        ({"name": "blobs", "n_classes": 1}, "data: blobs"),
        ({"name": "csv", "target": "y"}, "data: csv"),
    ],
)
def test_data_errors(patch, match):
    with pytest.raises(ConfigError, match=match):
        build_data(cfg(data={"batch_size": 8, **patch}).data, "train")


def test_data_function_contract_errors(user_module):
    name = user_module(
        """
        import torch
        def no_split(seed):
            return None
        def wrong(split, seed):
            return [1, 2, 3]
        def short(split, seed):
            return torch.zeros(3, 2), torch.zeros(4)
        """
    )
    for fn, match in [
        ("no_split", "must accept 'split', 'seed'"),
        ("wrong", "must return \\(inputs, targets\\) tensors"),
        ("short", r"inputs\[0\] of shape \(3, 2\) for 4 targets"),
    ]:
        with pytest.raises(ConfigError, match=match):
            build_data(cfg(data={"name": f"{name}:{fn}", "batch_size": 2}).data, "train")


def test_a_user_function_that_fails_is_named_with_its_section(user_module):
    """ValueError/TypeError from a user's function is a config error (exit 2); anything
    else is the user's code failing (exit 1), reported with the section and the call."""
    name = user_module(
        """
        def model(width=3):
            raise RuntimeError("constructor exploded")
        def data(split, seed):
            raise KeyError("no column")
        def bad_value(split, seed):
            raise ValueError("n must be > 0")
        """
    )
    with pytest.raises(
        UserFunctionError, match=r"model: model\(width=5\) raised RuntimeError: constructor"
    ):
        build_model(cfg(model={"name": f"{name}:model", "width": 5}))
    with pytest.raises(UserFunctionError, match=r"data: data\(.*\) raised KeyError"):
        build_data(cfg(data={"name": f"{name}:data", "batch_size": 2}).data, "train")
    with pytest.raises(ConfigError, match=r"data: bad_value\(.*\) failed: n must be > 0"):
        build_data(cfg(data={"name": f"{name}:bad_value", "batch_size": 2}).data, "train")


def test_optimizer_errors():
    model = build_model(cfg())
    with pytest.raises(ConfigError, match="optimizer.name: torch has no optimizer 'Adamm'; did"):
        build_torch_optimizer(cfg(optimizer={"name": "Adamm"}).optimizer, model)
    with pytest.raises(ConfigError, match="Invalid learning rate"):
        build_torch_optimizer(cfg(optimizer={"name": "SGD", "lr": -1}).optimizer, model)
    with pytest.raises(ConfigError, match="matches no parameter"):
        build_torch_optimizer(
            cfg(optimizer={"name": "SGD", "param_groups": [{"params": "nothing"}]}).optimizer,
            model,
        )
    with pytest.raises(ConfigError, match="is not a regex"):
        build_torch_optimizer(
            cfg(optimizer={"name": "SGD", "param_groups": [{"params": "("}]}).optimizer, model
        )
    opt = build_torch_optimizer(cfg().optimizer, model)
    with pytest.raises(ConfigError, match="scheduler.name: torch has no scheduler"):
        build_torch_scheduler(cfg(scheduler={"name": "nope"}).scheduler, opt)


def test_optimizer_pipeline_matches_torch():
    c = cfg(
        optimizer={"name": "Adam", "lr": 1e-2, "param_groups": [{"params": "bias", "lr": 1e-3}]},
        scheduler={"name": "ReduceLROnPlateau", "patience": 0, "factor": 0.5},
        train={"clip_grad_norm": 1.0, "accumulation_steps": 2, "nan_policy": "skip"},
    )
    built = build_optimizer(c, build_model(c), steps_per_epoch=4, has_val=False)
    assert built.plateau is not None and len(built.plateau) == 2
    assert built.plateau_monitor == "loss"
    params = {k: p.detach() for k, p in build_model(c).named_parameters()}
    state = built.optimizer.init(params)
    assert type(state).__name__ == "MultiStepsState"
    assert type(state.inner).__name__ == "ApplyIfFiniteState"


def test_csv_loader(tmp_path):
    path = tmp_path / "houses.csv"
    rows = ["sqft,rooms,price,city"] + [
        f"{1000 + 100 * i},{1 + i % 4},{200000 + 200 * (1000 + 100 * i)},{'ab'[i % 2]}"
        for i in range(20)
    ]
    path.write_text("\n".join(rows) + "\n")
    data = {"name": "csv", "path": str(path), "target": "price", "features": ["sqft", "rooms"]}
    c = cfg(data={**data, "batch_size": 4, "val_fraction": 0.25})
    train, val = build_data(c.data, "train"), build_data(c.data, "val")
    assert len(train) == 15 and len(val) == 5
    assert train.feature_names == ("sqft", "rooms") and train.classes is None
    x, y = train.data
    assert torch.allclose(x.mean(0), torch.zeros(2), atol=1e-5)
    assert torch.allclose(x.std(0, unbiased=False), torch.ones(2), atol=1e-5)
    s = train.standardizer
    assert s is not None and s.target_mean is not None
    original = y * s.target_std + s.target_mean
    prices = {200000 + 200 * (1000 + 100 * i) for i in range(20)}
    assert all(min(abs(v - p) for p in prices) < 0.1 for v in original.tolist())
    # A string target is a classification target with the labels kept.
    cls = build_data(
        cfg(data={"name": "csv", "path": str(path), "target": "city", "batch_size": 4}).data,
        "train",
    )
    assert cls.classes == ("a", "b") and cls.data[1].dtype == torch.int64
    assert cls.standardizer.target_mean is None
    for patch, match in [
        ({"target": "cost"}, "data.target: 'cost' is not a column"),
        ({"features": ["sqm"]}, "data.features: 'sqm' is not a column"),
        ({"features": ["city"]}, "column 'city' line 2: 'a' is not a number"),
        ({"val_fraction": 1.5}, "val_fraction"),
        ({"path": str(tmp_path / "none.csv")}, "cannot read"),
    ]:
        with pytest.raises(ConfigError, match=match):
            build_data(cfg(data={**data, "batch_size": 4, **patch}).data, "train")


def test_csv_target_cells_and_classification_losses(tmp_path):
    """An empty target cell, or a word in a number column, is an error naming the line
    (it used to turn the column into class labels); a 0/1 column under a classification
    loss is labels: not standardised, class ids for cross_entropy, floats for BCE."""
    path = tmp_path / "t.csv"
    ys = [str(i % 2) for i in range(20)]
    rows = ["a,b,y"] + [f"{i},{3 * i},{y}" for i, y in enumerate(ys)]
    path.write_text("\n".join(rows) + "\n")
    data = {"name": "csv", "path": str(path), "target": "y", "batch_size": 4}
    for loss, dtype in [("bce_with_logits", torch.float32), ("cross_entropy", torch.int64)]:
        c = cfg(data=data, loss=loss)
        split = build_data(c.data, "train", infer_task(c))
        assert split.classes == ("0", "1") and split.data[1].dtype == dtype
        assert set(split.data[1].tolist()) == {0, 1}
        assert split.standardizer.target_mean is None
    # A regression loss standardises the same column.
    c = cfg(data=data, loss="mse")
    assert build_data(c.data, "train", infer_task(c)).standardizer.target_mean is not None
    for line, cell, match in [
        (5, "", "column 'y' line 5: the target is empty"),
        (7, "12O", "column 'y' line 7: '12O' is not a number, but other values are"),
    ]:
        bad = list(rows)
        bad[line - 1] = bad[line - 1].rsplit(",", 1)[0] + "," + cell
        path.write_text("\n".join(bad) + "\n")
        with pytest.raises(ConfigError, match=match):
            c = cfg(data=data, loss="mse")
            build_data(c.data, "train", infer_task(c))


def test_numpy_data_is_accepted(user_module):
    name = user_module(
        """
        import numpy as np
        def data(split, seed):
            rng = np.random.default_rng(seed)
            x = rng.normal(size=(12, 3))          # float64, as NumPy and scikit-learn give
            return x, (x[:, 0] > 0).astype(np.int64)
        """
    )
    split = build_data(cfg(data={"name": f"{name}:data", "batch_size": 4}).data, "train")
    x, y = split.data
    assert x.dtype == torch.float32 and y.dtype == torch.int64 and x.shape == (12, 3)


def test_task_from_a_user_loss_reads_the_targets(user_module):
    """A user's loss names no task: integer targets (class indices) mean multiclass; float
    targets could be labels or values, so the run asks for ``task`` (a config error)."""
    from torch.utils.data import TensorDataset

    x = torch.randn(6, 3)
    assert task_from_targets((x, torch.tensor([0, 2, 1, 0, 1, 2]))) == "multiclass"
    assert task_from_targets(TensorDataset(x, torch.tensor([0, 1, 1, 0, 1, 1]))) == "multiclass"
    assert task_from_targets((x, torch.rand(6))) is None
    assert task_from_targets([(x[0], 3)]) == "multiclass"
    assert task_from_targets([(x[0], True)]) is None
    from purestep.train.run import build_experiment

    name = user_module(
        """
        import torch
        def data(split, seed, floats=False):
            g = torch.Generator().manual_seed(seed)
            x = torch.randn(32, 16, generator=g)
            y = torch.randint(0, 4, (32,), generator=g)
            return x, (y.float() if floats else y)
        def loss(outputs, targets):
            return torch.nn.functional.cross_entropy(outputs, targets.long())
        """
    )
    c = cfg(
        data={"name": f"{name}:data", "batch_size": 8},
        loss=f"{name}:loss",
        metrics=["accuracy"],
    )
    exp = build_experiment(c, device="cpu", compile=False, splits=("train",))
    assert exp.task == "multiclass"
    floats = cfg(
        data={"name": f"{name}:data", "batch_size": 8, "floats": True},
        loss=f"{name}:loss",
        metrics=["accuracy"],
    )
    with pytest.raises(ConfigError, match="set task: binary, multiclass or regression"):
        build_experiment(floats, device="cpu", compile=False, splits=("train",))
