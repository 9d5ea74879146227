"""What the examples added to the library: the ``text`` and ``image_folder`` datasets, the
``linear`` and ``convnet`` models, PNG writing, and ``efficiency`` for evaluate."""

from __future__ import annotations

import re

import pytest
import torch

from purestep.data.datasets import DATASETS
from purestep.data.image_folder import image_folder, image_grid, load_image, save_image
from purestep.data.text import bag_of_words, build_vocabulary, text, tokenize
from purestep.models import MODELS, convnet, linear
from purestep.train.config import parse_config
from purestep.train.efficiency import efficiency
from purestep.train.run import build_experiment

# -- text -----------------------------------------------------------------------------


def test_tokenize_and_vocabulary():
    assert tokenize("Hi, what's UP? see-you 2day") == ["hi", "what's", "up", "see", "you", "2day"]
    vocab = build_vocabulary(["b a", "a c", "a b", "d"])
    assert vocab == ("a", "b", "c", "d")  # by count, ties alphabetical
    assert build_vocabulary(["b a", "a c", "a b", "d"], min_count=2) == ("a", "b")
    assert build_vocabulary(["b a", "a c"], max_size=1) == ("a",)
    with pytest.raises(ValueError, match="min_count must be an int >= 1"):
        build_vocabulary([], min_count=0)


def test_bag_of_words_presence_and_counts():
    vocab = ("good", "bad", "very")
    binary = bag_of_words(["very very good", "unknown"], vocab)
    assert binary.tolist() == [[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]]
    counts = bag_of_words(["very very good"], vocab, binary=False)
    assert counts.tolist() == [[1.0, 0.0, 2.0]]
    with pytest.raises(ValueError, match="vocabulary is empty"):
        bag_of_words(["x"], ())


def _texts(tmp_path, header: str, rows: list[str]):
    path = tmp_path / "t.csv"
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return str(path)


def test_text_dataset_split_column_and_train_only_vocabulary(tmp_path):
    path = _texts(
        tmp_path,
        "text,label,split",
        ["hello there,hi,train", "bye now,bye,train", "hello,hi,val", "farewell friend,bye,test"],
    )
    train = text("train", path=path)
    test = text("test", path=path)
    assert train is not None and test is not None
    assert train.classes == ("bye", "hi") == test.classes
    assert train.info["vocabulary"] == ["bye", "hello", "now", "there"]
    assert test.data[0].tolist() == [[0.0, 0.0, 0.0, 0.0]]  # unseen words: all zero
    assert test.data[1].tolist() == [0]
    assert text("val", path=path).data[1].tolist() == [1]


def test_text_dataset_seeded_split_without_a_split_column(tmp_path):
    rows = [f"word{i} common,{'a' if i % 2 else 'b'}" for i in range(20)]
    path = _texts(tmp_path, "text,label", rows)
    sizes = {
        s: len(text(s, 0, path=path, val_fraction=0.2, test_fraction=0.1) or ())
        for s in ("train", "val", "test")
    }
    assert sizes == {"train": 14, "val": 4, "test": 2}
    a = text("val", 0, path=path, val_fraction=0.2)
    b = text("val", 0, path=path, val_fraction=0.2)
    c = text("val", 1, path=path, val_fraction=0.2)
    assert a is not None and b is not None and c is not None
    # The rows picked for training (so the vocabulary) depend on the seed alone.
    assert a.info["vocabulary"] == b.info["vocabulary"] != c.info["vocabulary"]
    assert torch.equal(a.data[0], b.data[0])


@pytest.mark.parametrize(
    ("header", "rows", "kwargs", "message"),
    [
        ("words,label", ["hi,a"], {}, "data.text_column: 'text' is not a column"),
        ("text,label", ["hi,"], {}, "line 2 has an empty text or label"),
        ("text,label,split", ["hi,a,dev"], {}, "split must be one of"),
        ("text,label", ["hi,a"], {"val_fraction": 1.0}, "must be in [0, 1)"),
        ("text,label,split", ["hi,a,test"], {}, "no rows for training"),
        ("text,label", ["!!!,a"], {"val_fraction": 0.0}, "the training texts have no words"),
    ],
)
def test_text_dataset_errors_name_the_problem(tmp_path, header, rows, kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        text("train", path=_texts(tmp_path, header, rows), **kwargs)


# -- images ---------------------------------------------------------------------------


def _folder(root, counts: dict[str, int], size: int = 6):
    from PIL import Image

    for k, (name, n) in enumerate(counts.items()):
        (root / name).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (size, size), (40 * k, 10 * i, 200)).save(root / name / f"{i:03d}.png")
    (root / "notes.txt").write_text("not a class")  # files at the top level are ignored
    return root


def test_image_folder_splits_each_class_by_seed(tmp_path):
    root = _folder(tmp_path / "imgs", {"cat": 20, "dog": 10})
    parts = {s: image_folder(s, 0, root=str(root), size=4) for s in ("train", "val", "test")}
    sizes = {s: len(p) for s, p in parts.items() if p is not None}
    assert sizes == {"train": 14 + 6, "val": 3 + 2, "test": 3 + 2}  # round(n * 0.15) per class
    train = parts["train"]
    assert train is not None and train.classes == ("cat", "dog")
    assert train.data[0].shape == (20, 3, 4, 4) and train.data[0].dtype == torch.float32
    assert train.info["image_shape"] == [3, 4, 4]
    # The splits partition the images (pixel rows identify them) and repeat exactly.
    seen = [tuple(x.flatten().tolist()) for p in parts.values() if p for x in p.data[0]]
    assert len(seen) == len(set(seen)) == 30
    again = image_folder("val", 0, root=str(root), size=4)
    other = image_folder("val", 1, root=str(root), size=4)
    assert again is not None and other is not None
    assert torch.equal(again.data[0], parts["val"].data[0])
    assert not torch.equal(other.data[0], again.data[0])
    gray = image_folder("test", 0, root=str(root), size=5, grayscale=True)
    assert gray is not None and gray.data[0].shape == (5, 1, 5, 5)


@pytest.mark.parametrize(
    ("counts", "kwargs", "message"),
    [
        ({"only": 5}, {}, "needs one sub-folder per class (at least 2)"),
        ({"a": 5, "b": 0}, {}, "holds no image"),
        ({"a": 2, "b": 5}, {}, "class 'a' has 2 images, too few"),
        ({"a": 5, "b": 5}, {"size": 0}, "data.size must be an int >= 1"),
        ({"a": 5, "b": 5}, {"val_fraction": 0.6, "test_fraction": 0.5}, "sum < 1"),
    ],
)
def test_image_folder_errors_name_the_problem(tmp_path, counts, kwargs, message):
    root = _folder(tmp_path / "imgs", counts)
    with pytest.raises(ValueError, match=re.escape(message)):
        image_folder(
            "train", 0, root=str(root), **{"val_fraction": 0.3, "test_fraction": 0.3, **kwargs}
        )


def test_image_folder_missing_root(tmp_path):
    with pytest.raises(ValueError, match="data.root: .* is not a directory"):
        image_folder("train", root=str(tmp_path / "nope"))


def test_save_image_and_grid_round_trip(tmp_path):
    a = torch.rand(3, 4, 5)
    b = torch.zeros(3, 4, 5)
    grid = image_grid([a, b, a], 2, pad=1, pad_value=0.25)
    assert grid.shape == (3, 2 * 5 + 1, 2 * 6 + 1)
    assert torch.equal(grid[:, 1:5, 1:6], a) and float(grid[0, 0, 0]) == 0.25
    path = save_image(grid, tmp_path / "g.png", scale=2)
    back = load_image(path)
    assert back.shape == (3, 2 * 11, 2 * 13)
    # 8-bit PNG: within half a level of the clamped values; scale repeats each pixel 2x2.
    assert torch.allclose(back[:, ::2, ::2], grid, atol=0.5 / 255 + 1e-6)
    assert torch.equal(back[:, ::2, ::2], back[:, 1::2, 1::2])
    save_image(torch.ones(4, 4) * 2.0, tmp_path / "gray.png")  # clamped to white
    assert load_image(tmp_path / "gray.png", grayscale=True).eq(1.0).all()
    with pytest.raises(ValueError, match=r"shape \(1\|3, H, W\)"):
        save_image(torch.zeros(2, 4, 4), tmp_path / "x.png")
    with pytest.raises(ValueError, match="one shape"):
        image_grid([a, torch.zeros(3, 4, 4)], 2)


def test_datasets_are_registered():
    assert DATASETS["text"] is text and DATASETS["image_folder"] is image_folder


# -- models ---------------------------------------------------------------------------


def test_linear_and_convnet_shapes():
    assert MODELS["linear"] is linear and MODELS["convnet"] is convnet
    assert linear(3)(torch.zeros(5, 3)).shape == (5,)
    assert linear(3, 2)(torch.zeros(5, 3)).shape == (5, 2)
    net = convnet(in_channels=3, channels=(4, 8), image_size=12, out_features=1, dropout=0.1)
    assert net(torch.zeros(2, 3, 12, 12)).shape == (2,)
    assert convnet(image_size=8, out_features=10)(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    # Same seed, same weights.
    assert torch.equal(linear(4, seed=3)[0].weight, linear(4, seed=3)[0].weight)
    with pytest.raises(ValueError, match="too small for 3 2x2 poolings"):
        convnet(channels=(4, 4, 4), image_size=4)
    with pytest.raises(ValueError, match="at least one conv layer"):
        convnet(channels=())


# -- efficiency -----------------------------------------------------------------------


def test_efficiency_reports_size_and_speed():
    cfg = parse_config(
        {
            "model": {"name": "mlp", "hidden": [16], "out_features": 1, "dropout": 0.5},
            "data": {
                "name": "sprites",
                "n_train": 64,
                "n_val": 32,
                "n_test": 0,
                "batch_size": 16,
                "eval_batch_size": 32,
            },
            "loss": "bce_with_logits",
            "optimizer": {"name": "Adam", "lr": 1e-3},
            "train": {"compile": False},
        }
    )
    exp = build_experiment(cfg)
    state = exp.initial_state()
    result = efficiency(exp, state, repeats=5, warmup=1)
    assert result["parameters"] == 64 * 16 + 16 + 16 + 1 == result["trainable_parameters"]
    assert result["size_mb"] == pytest.approx(result["parameters"] * 4 / 2**20)
    assert result["batch_size"] == 32  # by default, the first validation batch
    assert result["latency_ms"] > 0
    assert result["throughput"] == pytest.approx(32 / (result["latency_ms"] / 1e3))
    assert result["device"] == "cpu" and result["repeats"] == 5
    assert exp.model.training  # left in the mode it was in
    train_first = efficiency(exp, state, exp.train_data, repeats=1, warmup=0)
    assert train_first["batch_size"] == 16
    with pytest.raises(ValueError, match="repeats must be an int >= 1"):
        efficiency(exp, state, repeats=0)
    with pytest.raises(ValueError, match=r"expected batches \(inputs..., targets\)"):
        efficiency(exp, state, [torch.zeros(3)])
