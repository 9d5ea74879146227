"""The examples as a user runs them: each YAML through ``purestep train`` (and
``predict``), each script as ``python examples/<name>.py``, with short epochs. The full
runs that take seconds check their quality targets by default; the two that take
longer (circles vs squares, the compiled tiny LM config) are marked slow."""

from __future__ import annotations

import json
import re
import runpy
import sys
from pathlib import Path
from typing import Any

import pytest

from purestep.cli import main
from purestep.train.checkpoint import read_meta, resolve_checkpoint

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch):
    # Configs import examples.tutorial_data from the repo root, as the README runs them
    # (their data files are relative to examples/); scripts import tutorial_data from
    # their own directory.
    monkeypatch.chdir(REPO)
    monkeypatch.syspath_prepend(str(EXAMPLES))


def script(monkeypatch, name: str, *args: str) -> dict[str, Any]:
    """Run ``examples/<name>`` as ``__main__`` with ``args``; its globals."""
    monkeypatch.setattr(sys, "argv", [name, *args])
    return runpy.run_path(str(EXAMPLES / name), run_name="__main__")


def train(config: str, out: Path, *args: str) -> None:
    code = main(["train", "--config", f"examples/{config}", "--out", str(out), "--no-plots", *args])
    assert code == 0


def predict(capsys, *args: str) -> str:
    capsys.readouterr()
    code = main(["predict", *args])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


def test_every_config_has_a_script_and_a_test():
    configs = {p.stem for p in EXAMPLES.glob("*.yaml")}
    scripts = {p.stem for p in EXAMPLES.glob("*.py")} - {"tutorial_data"}
    # sprites.yaml is the `make demo` run (circles_squares.py is its tutorial version);
    # sprite_generator_rgb.yaml is sprite_generator.py --size 16.
    assert configs - scripts == {"sprites", "sprite_generator_rgb"}
    assert scripts - configs == set()
    source = Path(__file__).read_text()
    for name in (configs | scripts) - {"sprites"}:  # the demo has its own tests
        assert f'"{name}.' in source, f"{name} is not run by this file"


# -- house prices: the full run takes seconds, so its quality is checked by default ------


def _dollars(text: str) -> list[float]:
    return [float(v.replace(",", "")) for v in re.findall(r"price ([\d,.]+)", text)]


def test_house_prices_config_predicts_within_one_percent(tmp_path, capsys):
    train("house_prices.yaml", tmp_path / "run")
    for sqft in (1500, 2000, 2500, 3000):
        out = predict(capsys, "--checkpoint", str(tmp_path / "run"), "--input", f"sqft={sqft}")
        (price,) = _dollars(out)
        assert price == pytest.approx(200 * sqft, rel=0.01)


def test_house_prices_script_learns_the_line(monkeypatch, capsys):
    g = script(monkeypatch, "house_prices.py")
    assert g["slope"] == pytest.approx(200, rel=0.01)
    for sqft, price in zip([1500, 2000, 2500, 3000], g["predicted"].tolist(), strict=True):
        assert price == pytest.approx(200 * sqft, rel=0.01)
    assert "3,000 sq ft -> $6" in capsys.readouterr().out


# -- sprite generator ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "side"), [("sprite_generator.yaml", 8), ("sprite_generator_rgb.yaml", 16)]
)
def test_sprite_generator_config_checkpoints_draw_a_progression(tmp_path, capsys, config, side):
    from PIL import Image

    run = tmp_path / "run"
    train(config, run, "--epochs", "3")
    steps = sorted(str(p) for p in (run / "checkpoints").glob("step-*"))
    assert len(steps) == 3  # one per epoch
    png = tmp_path / "progression.png"
    out = predict(capsys, "--checkpoint", *steps, "--json", "[[1, 0], [0, 1]]", "--image", str(png))
    assert "wrote" in out and "(3 x 2 images)" in out
    with Image.open(png) as img:  # 3 rows x 2 sprites at scale 8, 1-pixel gutters
        assert img.size == (8 * (2 * side + 3), 8 * (3 * side + 4))
        assert img.mode == ("L" if side == 8 else "RGB")


def test_sprite_generator_script_writes_pngs_every_n_epochs(monkeypatch, tmp_path):
    g = script(
        monkeypatch, "sprite_generator.py", "--epochs", "4", "--every", "2", "--out", str(tmp_path)
    )
    assert sorted(p.name for p in tmp_path.glob("*.png")) == [
        "epoch-002.png",
        "epoch-004.png",
        "progression.png",
    ]
    assert len(g["frames"]) == 2 and g["error"] < 0.5


@pytest.mark.parametrize(
    ("size", "loss"),
    [("8", "mse"), ("8", "l1"), ("16", "mse"), ("16", "l1")],
)
def test_sprite_generator_full_run_draws_the_sprites(monkeypatch, tmp_path, size, loss):
    args = ("--size", size, "--loss", loss, "--every", "5", "--out", str(tmp_path))
    g = script(monkeypatch, "sprite_generator.py", *args)
    assert g["error"] < 0.03  # mean absolute pixel error after 10 epochs
    assert (tmp_path / "progression.png").is_file()


# -- circles vs squares -------------------------------------------------------------------

SMALL_SPRITES = ("--set", "data.n_train=256", "--set", "data.n_val=64", "--set", "data.n_test=64")


def test_circles_squares_config_short_run(tmp_path):
    train("circles_squares.yaml", tmp_path / "run", "--epochs", "1", *SMALL_SPRITES)
    test = json.loads((tmp_path / "run" / "test_metrics.json").read_text())
    assert 0 <= test["accuracy"] <= 1
    assert sum(map(sum, test["confusion_matrix"])) == 64


def test_circles_squares_script_short_run(monkeypatch, tmp_path):
    g = script(
        monkeypatch,
        "circles_squares.py",
        "--epochs",
        "1",
        "--n-train",
        "256",
        "--out",
        str(tmp_path),
    )
    assert sum(map(sum, g["result"]["confusion_matrix"])) == 2048
    assert (tmp_path / "confusion_matrix.png").is_file()


@pytest.mark.slow
def test_circles_squares_full_run_reaches_98_percent(tmp_path):
    train("circles_squares.yaml", tmp_path / "run")
    test = json.loads((tmp_path / "run" / "test_metrics.json").read_text())
    assert test["accuracy"] >= 0.98


# -- intent classifier: the full run takes seconds ----------------------------------------


def test_intent_classifier_config_held_out_accuracy_and_predict(tmp_path, capsys):
    run = tmp_path / "run"
    train("intent_classifier.yaml", run)
    test = json.loads((run / "test_metrics.json").read_text())
    assert test["accuracy"] >= 0.9  # the 32 held-out phrasings
    out = predict(
        capsys, "--checkpoint", str(run), "--text", "see you later", "are you open on sunday"
    )
    assert '"see you later" -> goodbye (probability' in out
    assert '"are you open on sunday" -> hours' in out
    meta = read_meta(resolve_checkpoint(run))  # the vocabulary travels with it
    assert "goodbye" in meta["data"]["classes"] and "later" in meta["data"]["info"]["vocabulary"]


def test_intent_classifier_script_held_out_accuracy(monkeypatch, capsys):
    g = script(monkeypatch, "intent_classifier.py")
    assert g["result"]["accuracy"] >= 0.9
    assert "'see you later' -> goodbye" in capsys.readouterr().out


# -- digits (scikit-learn's bundled data) -------------------------------------------------


def test_digits_script_short_run(monkeypatch, tmp_path):
    pytest.importorskip("sklearn")
    g = script(monkeypatch, "digits.py", "--epochs", "1", "--out", str(tmp_path))
    assert (tmp_path / "checkpoints" / "best").is_file()
    assert (tmp_path / "confusion_matrix.png").is_file()
    assert 0 <= g["result"]["accuracy"] <= 1


def test_digits_without_scikit_learn_says_how_to_get_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # import fails
    code = main(["train", "--config", "examples/digits.yaml", "--out", str(tmp_path / "r")])
    assert code == 2
    assert "pip install scikit-learn" in capsys.readouterr().err


def test_digits_config_full_run_reaches_95_percent(tmp_path):
    pytest.importorskip("sklearn")
    run = tmp_path / "run"
    train("digits.yaml", run)
    test = json.loads((run / "test_metrics.json").read_text())
    assert test["accuracy"] >= 0.95
    assert {"precision_macro", "recall_macro", "f1_macro"} <= set(test)
    assert len(test["confusion_matrix"]) == 10
    history = json.loads((run / "history.json").read_text())
    assert len(history) < 60  # early stopping ended it
    assert history[-1]["lr"] < history[0]["lr"]  # ReduceLROnPlateau lowered the lr
    assert (run / "checkpoints" / "best").is_file()


# -- tiny LM ------------------------------------------------------------------------------


def test_tiny_lm_config_trains(tmp_path):
    args = ("--epochs", "1", "--no-compile", "--set", "data.n_train=64", "--set", "data.n_val=16")
    train("tiny_lm.yaml", tmp_path / "run", *args)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history[0]["loss"] > 0 and history[0]["val_loss"] > 0


@pytest.mark.slow
def test_tiny_lm_config_full_compiled_run(tmp_path):
    train("tiny_lm.yaml", tmp_path / "run")
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history[-1]["val_loss"] < history[0]["val_loss"]


def test_tiny_lm_script_full_run_recites_its_text(monkeypatch):
    g = script(monkeypatch, "tiny_lm.py")
    assert g["sample"].startswith(g["TEXT"][:60])


# -- your own images ----------------------------------------------------------------------


def test_image_folder_script_and_config(monkeypatch, tmp_path, capsys):
    root = tmp_path / "shapes"
    script(
        monkeypatch, "image_folder.py", "--root", str(root), "--per-class", "14", "--epochs", "1"
    )
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["circle", "square", "triangle"]
    assert (root / "samples.png").is_file()
    run = tmp_path / "run"
    train("image_folder.yaml", run, "--epochs", "1", "--set", f"data.root={root}")
    out = predict(
        capsys, "--checkpoint", str(run), "--file", str(root / "square" / "0000.png"), "--top", "3"
    )
    assert re.fullmatch(r"\S+0000\.png -> (\w+ \d\.\d{3}(, )?){3}\n", out)


def test_image_folder_full_run_reaches_95_percent(monkeypatch, tmp_path):
    g = script(monkeypatch, "image_folder.py", "--root", str(tmp_path / "shapes"))
    assert g["result"]["accuracy"] >= 0.95
