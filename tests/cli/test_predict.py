"""``purestep predict``: named features (standardised in, de-standardised out), text
through the saved vocabulary, image files, JSON, image outputs as PNG grids; bad input
exits 2 with a message naming the problem."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from purestep.cli import main
from purestep.data.datasets import DataSplit
from purestep.data.image_folder import load_image
from purestep.train.config import parse_config
from purestep.train.predict import PredictError, load_predictor
from purestep.train.run import train_run

QUIET = {"log": {"tensorboard": False, "plots": False, "progress": False}}


def _train(out: Path, raw: dict) -> Path:
    cfg = parse_config({**raw, **QUIET})
    train_run(cfg, out, print_fn=lambda _line: None)
    return out


def image_pairs(split: str = "train", seed: int = 0) -> DataSplit | None:
    """Code e_k -> a 2x2 grey image of brightness k (a tiny generator's data)."""
    del seed
    if split != "train":
        return None
    x = torch.eye(2).repeat(4, 1)
    y = torch.tensor([[0.0] * 4, [1.0] * 4]).repeat(4, 1)
    return DataSplit((x, y), info={"image_shape": [1, 2, 2]})


class _Pairs(torch.utils.data.Dataset):
    """A user's Dataset of (features, class) examples."""

    def __init__(self) -> None:
        gen = torch.Generator().manual_seed(0)
        self.x = torch.randn(32, 3, generator=gen)
        self.y = (self.x[:, 0] > 0).long()

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i], self.y[i]


def pairs_dataset(split: str = "train", seed: int = 0) -> _Pairs | None:
    del seed
    return _Pairs() if split == "train" else None


class _Picky(nn.Module):
    """A linear model that refuses inputs far outside its training range."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool((x.abs() > 100).any()):
            raise ValueError("inputs beyond 100 standard deviations are not supported")
        return self.lin(x).flatten()


def picky(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return _Picky()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("predict")
    # y = 3a - 2b + 5 exactly, on a spread of points: a linear model learns it.
    gen = torch.Generator().manual_seed(0)
    ab = torch.randint(-20, 21, (60, 2), generator=gen).tolist()
    (tmp / "lin.csv").write_text(
        "a,b,y\n" + "".join(f"{a},{b},{3 * a - 2 * b + 5}\n" for a, b in ab)
    )
    (tmp / "bin.csv").write_text(
        "x,label\n" + "".join(f"{v},{'yes' if v > 0 else 'no'}\n" for v in range(-20, 21) if v)
    )
    texts = {
        "pos": ["good", "great", "very good", "so great", "good stuff", "really great"],
        "neg": ["bad", "awful", "very bad", "so awful", "bad stuff", "really awful"],
        "ask": ["why", "how", "why so", "how come", "why really", "how so"],
    }
    (tmp / "text.csv").write_text(
        "text,label\n" + "".join(f"{t},{k}\n" for k, v in texts.items() for t in v)
    )
    common = {"train": {"epochs": 30, "compile": False, "seed": 0}}
    return {
        "linear": _train(
            tmp / "linear",
            {
                "model": {"name": "linear"},
                "data": {"name": "csv", "path": str(tmp / "lin.csv"), "target": "y"},
                "loss": "mse",
                "optimizer": {"name": "SGD", "lr": 0.1},
                **common,
            },
        ),
        "binary": _train(
            tmp / "binary",
            {
                "model": {"name": "linear"},
                "data": {"name": "csv", "path": str(tmp / "bin.csv"), "target": "label"},
                "loss": "bce_with_logits",
                "optimizer": {"name": "SGD", "lr": 0.5},
                **common,
            },
        ),
        "text": _train(
            tmp / "text",
            {
                "model": {"name": "mlp", "hidden": [16], "out_features": 3},
                "data": {
                    "name": "text",
                    "path": str(tmp / "text.csv"),
                    "val_fraction": 0.0,
                    "batch_size": 6,
                },
                "loss": "cross_entropy",
                "optimizer": {"name": "Adam", "lr": 0.05},
                **common,
            },
        ),
        "picky": _train(
            tmp / "picky",
            {
                "model": {"name": "tests.cli.test_predict:picky"},
                "data": {"name": "csv", "path": str(tmp / "lin.csv"), "target": "y"},
                "loss": "mse",
                "optimizer": {"name": "SGD", "lr": 0.1},
                "train": {"epochs": 1, "compile": False, "seed": 0},
            },
        ),
        "dataset": _train(
            tmp / "dataset",
            {
                "model": {"name": "mlp", "in_features": 3, "hidden": [8], "out_features": 2},
                "data": {"name": "tests.cli.test_predict:pairs_dataset", "batch_size": 8},
                "loss": "cross_entropy",
                "optimizer": {"name": "Adam", "lr": 0.05},
                "train": {"epochs": 2, "compile": False, "seed": 0},
            },
        ),
        "images": _train(
            tmp / "images",
            {
                "model": {"name": "mlp", "hidden": [8], "out_features": 4},
                "data": {"name": "tests.cli.test_predict:image_pairs", "batch_size": 2},
                "loss": "mse",
                "optimizer": {"name": "Adam", "lr": 0.05},
                "train": {"epochs": 15, "compile": False, "seed": 0},
            },
        ),
    }


def _predict(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["predict", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def _values(text: str) -> list[float]:
    return [float(v.replace(",", "")) for v in re.findall(r"-> y (-?[\d,.]+)", text)]


# -- named features: standardised in, original units out -----------------------------


def test_input_features_predict_in_the_target_units(runs, capsys):
    code, out, _ = _predict(capsys, "--checkpoint", str(runs["linear"]), "--input", "a=1", "b=2")
    assert code == 0
    (value,) = _values(out)
    assert value == pytest.approx(3 * 1 - 2 * 2 + 5, abs=0.05)
    assert out.startswith("a=1 b=2 -> y ")


def test_json_forms_give_the_same_prediction_as_input(runs, capsys):
    ckpt = str(runs["linear"])
    _, ref, _ = _predict(capsys, "--checkpoint", ckpt, "--input", "b=-3", "a=4")
    (expected,) = _values(ref)
    code, out, err = _predict(capsys, "--checkpoint", ckpt, "--input", "b=-3", "--input", "a=4")
    assert code == 0, err  # a repeated --input adds to the same example
    assert _values(out) == [expected]
    for given in ('{"a": 4, "b": -3}', "[4, -3]", "[[4, -3], [0, 0]]", '[{"a": 4, "b": -3}]'):
        code, out, err = _predict(capsys, "--checkpoint", ckpt, "--json", given)
        assert code == 0, err
        assert _values(out)[0] == expected  # same numbers, same arithmetic
    _, out, _ = _predict(capsys, "--checkpoint", ckpt, "--json", "[[4, -3], [0, 0]]")
    assert _values(out)[1] == pytest.approx(5, abs=0.05)
    assert out.splitlines()[1].startswith("[0, 0] -> y ")


def test_library_predictor_matches_the_model_by_hand(runs):
    predictor = load_predictor(runs["linear"])
    x = predictor.from_features([{"a": 2.0, "b": 1.0}, {"a": -1.0, "b": 4.0}])
    records = predictor.predict(x)
    s = predictor.standardizer
    assert s is not None and s.target_std is not None and s.target_mean is not None
    w, b = predictor.state.params["0.weight"], predictor.state.params["0.bias"]
    raw = torch.tensor([[2.0, 1.0], [-1.0, 4.0]])
    by_hand = ((raw - s.feature_mean) / s.feature_std) @ w.T + b
    by_hand = by_hand[:, 0] * s.target_std + s.target_mean
    assert [r["value"] for r in records] == pytest.approx(by_hand.tolist(), rel=1e-6)
    assert [r["target"] for r in records] == ["y", "y"]
    assert [r["value"] for r in records] == pytest.approx([9.0, -6.0], abs=0.05)
    with pytest.raises(PredictError, match="--top must be an int >= 1"):
        predictor.predict(x, top=0)


# -- classification ------------------------------------------------------------------


def test_binary_prints_the_class_name_and_its_probability(runs, capsys):
    ckpt = str(runs["binary"])
    code, out, _ = _predict(capsys, "--checkpoint", ckpt, "--input", "x=15")
    assert code == 0 and re.fullmatch(r"x=15 -> yes \(probability 0\.9\d\d\)\n", out)
    code, out, _ = _predict(capsys, "--checkpoint", ckpt, "--input", "x=-15", "--top", "2")
    assert code == 0 and re.fullmatch(r"x=-15 -> no 0\.9\d\d, yes 0\.0\d\d\n", out)


def test_a_checkpoint_trained_on_a_dataset_predicts_from_json(runs, capsys):
    code, out, err = _predict(
        capsys, "--checkpoint", str(runs["dataset"]), "--json", "[[1.5, 0, 0], [-1.5, 0, 0]]"
    )
    assert code == 0, err
    assert re.findall(r"-> (\d) \(probability", out) and len(out.strip().splitlines()) == 2


def test_text_goes_through_the_saved_vocabulary(runs, capsys):
    ckpt = str(runs["text"])
    code, out, _ = _predict(capsys, "--checkpoint", ckpt, "--text", "so very good", "awful", "why")
    assert code == 0
    lines = out.splitlines()
    assert [line.split(" -> ")[1].split()[0] for line in lines] == ["pos", "neg", "ask"]
    code, out, _ = _predict(capsys, "--checkpoint", ckpt, "--text", "good", "--top", "3")
    probs = [float(p) for p in re.findall(r"\w+ (\d\.\d+)", out)]
    assert len(probs) == 3 and sum(probs) == pytest.approx(1, abs=2e-3)
    code, out, _ = _predict(capsys, "--checkpoint", ckpt, "--text", "zzz qqq")
    assert code == 0 and "(no word of it is in the vocabulary)" in out
    meta = load_predictor(ckpt).meta
    assert meta["data"]["classes"] == ["ask", "neg", "pos"]
    assert {"good", "awful", "why"} <= set(meta["data"]["info"]["vocabulary"])


# -- image outputs -------------------------------------------------------------------


def test_image_outputs_of_several_checkpoints_make_one_grid(runs, capsys, tmp_path):
    from PIL import Image

    steps = sorted(str(p) for p in (runs["images"] / "checkpoints").glob("step-*"))
    png = tmp_path / "grid.png"
    code, out, err = _predict(
        capsys, "--checkpoint", *steps, "--json", "[[1, 0], [0, 1]]", "--image", str(png),
        "--scale", "3",
    )  # fmt: skip
    assert code == 0, err
    assert f"({len(steps)} x 2 images)" in out
    with Image.open(png) as img:
        assert img.size == (3 * (2 * 2 + 3), 3 * (len(steps) * 3 + 1))
    last_row = load_image(png, grayscale=True)[0, -3 * 3 : -3]
    # The last checkpoint draws image 0 dark and image 1 bright, as trained.
    left, right = last_row[:, 3:9].mean(), last_row[:, 12:18].mean()
    assert left < 0.25 and right > 0.75


# -- bad input: exit 2, the message says what is wrong --------------------------------

BAD = [
    ("linear", ["--input", "c=1", "b=2"], "unknown feature 'c'"),
    ("linear", ["--input", "aa=1", "b=2"], "did you mean 'a'?"),
    ("linear", ["--input", "a=1"], "missing feature(s) b"),
    ("linear", ["--input", "a=x", "b=1"], "'x' is not a number"),
    ("linear", ["--input", "a", "b=1"], "expected NAME=NUMBER"),
    ("linear", ["--input", "a=1", "a=2", "b=1"], "'a' is given twice"),
    ("linear", ["--input", "a=nan", "b=1"], "a must be a finite number"),
    ("linear", ["--text", "hello"], "has no vocabulary"),
    ("linear", ["--file", "x.png"], "not trained on square images"),
    ("linear", ["--json", "[1, 2, 3]"], "got numbers of shape [3]"),
    ("linear", ["--json", "{bad"], "not valid JSON"),
    ("linear", ["--json", '"some text"'], "has no vocabulary"),
    ("linear", ["--json", "[1, 2]", "--image", "o.png"], "outputs are not images"),
    ("linear", ["--input", "a=1", "b=2", "--scale", "2"], "--scale only applies with --image"),
    ("text", ["--input", "a=1"], "no feature names"),
    ("images", ["--json", "[1, 0, 0]"], "one input of shape [2]"),
]


@pytest.mark.parametrize(("run", "args", "message"), BAD, ids=[m for _, _, m in BAD])
def test_bad_input_exits_2_naming_the_problem(runs, capsys, run, args, message):
    code, out, err = _predict(capsys, "--checkpoint", str(runs[run]), *args)
    assert code == 2
    assert message in err and out == ""


def test_a_model_failing_on_the_input_exits_1(runs, capsys):
    ckpt = str(runs["picky"])
    code, out, _ = _predict(capsys, "--checkpoint", ckpt, "--input", "a=1", "b=2")
    assert code == 0 and _values(out)
    code, out, err = _predict(capsys, "--checkpoint", ckpt, "--input", "a=1e9", "b=2")
    assert code == 1 and out == ""
    assert "ValueError: inputs beyond 100 standard deviations are not supported" in err


def test_a_missing_checkpoint_exits_2(capsys, tmp_path):
    code, _, err = _predict(capsys, "--checkpoint", str(tmp_path / "nope"), "--input", "a=1")
    assert code == 2 and "no such checkpoint" in err


@pytest.mark.parametrize(
    "args",
    [
        [],  # no input at all
        ["--input", "a=1", "--text", "hi"],  # two kinds of input
        ["--input", "a=1", "--top", "0"],
    ],
)
def test_argument_errors_exit_2(runs, capsys, args):
    with pytest.raises(SystemExit) as exc:
        main(["predict", "--checkpoint", str(runs["linear"]), *args])
    assert exc.value.code == 2
    assert "usage: purestep predict" in capsys.readouterr().err


def test_predict_writes_nothing(runs, capsys):
    files = {p: p.stat().st_mtime_ns for p in runs["linear"].rglob("*") if p.is_file()}
    _predict(capsys, "--checkpoint", str(runs["linear"]), "--input", "a=1", "b=1")
    after = {p: p.stat().st_mtime_ns for p in runs["linear"].rglob("*") if p.is_file()}
    assert after == files
    assert json.loads((runs["linear"] / "history.json").read_text())
