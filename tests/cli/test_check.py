"""``purestep check``: every example config passes the quick setup test; each kind of
failure is reported at its item, with exit 1 (the setup fails) or 2 (the config is bad)."""

from __future__ import annotations

import re
import sys
import textwrap
from pathlib import Path

import pytest

from purestep.cli import main
from purestep.train import check as check_module
from purestep.train.check import check_config
from purestep.train.config import parse_config

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted(p.name for p in (REPO / "examples").glob("*.yaml"))


def _check(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["check", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    sys.path.insert(0, str(REPO / "examples"))
    try:
        from tutorial_data import write_shapes
    finally:
        sys.path.remove(str(REPO / "examples"))
    return write_shapes(tmp_path_factory.mktemp("shapes"), per_class=8, size=16)


@pytest.mark.parametrize("config", CONFIGS)
def test_every_example_config_passes(config, capsys, monkeypatch, shapes):
    if config == "digits.yaml":
        pytest.importorskip("sklearn")
    monkeypatch.chdir(REPO)  # configs name data relative to the repo root
    extra = ["--set", f"data.root={shapes}"] if config == "image_folder.yaml" else []
    code, out, err = _check(capsys, "--config", f"examples/{config}", "--no-compile", *extra)
    assert code == 0, out + err
    for name in ("data", "model", "forward", "eager", "parity"):
        assert re.search(rf"^  ✓ {name} ", out, re.M), (name, out)
    assert "  - compiled  skipped" in out
    assert "bitwise equal to the imperative torch step" in out
    assert out.rstrip().splitlines()[-1].startswith("all checks passed in ")


def test_the_compiled_step_is_checked_against_the_eager_one(capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    code, out, _ = _check(capsys, "--config", "examples/house_prices.yaml")
    assert code == 0
    assert re.search(r"✓ compiled  loss, 2 gradients, 0 buffers as eager within rtol 1e-05", out)


LINEAR = """
model: {name: mlp, hidden: [4], out_features: 1}
data: {name: sprites, n_train: 64, n_val: 16, n_test: 0, batch_size: 16}
loss: bce_with_logits
optimizer: {name: SGD, lr: 0.1}
train: {compile: false}
"""


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_a_bad_config_exits_2_before_any_check(capsys, tmp_path):
    code, out, err = _check(capsys, "--config", _write(tmp_path, LINEAR + "optimiser: {}\n"))
    assert code == 2 and "optimiser: unknown key" in err and out == ""


def test_data_that_does_not_load_fails_its_item_with_exit_2(capsys, tmp_path):
    text = f"""
    model: {{name: linear}}
    data: {{name: csv, path: {tmp_path}/none.csv, target: y}}
    loss: mse
    optimizer: {{name: SGD, lr: 0.1}}
    """
    code, out, _ = _check(capsys, "--config", _write(tmp_path, text))
    assert code == 2
    assert re.search(r"✗ data .*data.path: cannot read", out)
    assert "check failed at 'data'" in out and "model" not in out


def test_a_model_that_rejects_its_batch_fails_forward_with_exit_1(capsys, tmp_path):
    text = LINEAR.replace("hidden: [4]", "in_features: 10, hidden: [4]")
    code, out, _ = _check(capsys, "--config", _write(tmp_path, text))
    assert code == 1
    assert re.search(r"✓ model .*\n  ✗ forward .*(shape|size)", out)


def test_a_non_finite_loss_fails_forward(capsys, tmp_path):
    csv = tmp_path / "nan.csv"
    csv.write_text("x,y\n1,1\nnan,2\n3,3\n4,4\n")
    text = f"""
    model: {{name: linear}}
    data: {{name: csv, path: {csv}, target: y, val_fraction: 0, standardize: false}}
    loss: mse
    optimizer: {{name: SGD, lr: 0.1}}
    """
    code, out, _ = _check(capsys, "--config", _write(tmp_path, text))
    assert code == 1 and "✗ forward   the loss of the initial model is nan" in out


def test_a_compiled_step_that_differs_fails(monkeypatch):
    """The compiled item compares what the compiled step returns with the eager step."""

    def off_by_a_bit(step):
        def run(state, batch):
            new, metrics = step(state, batch)
            grads = {k: v + 1e-3 for k, v in metrics["grads"].items()}
            return new, {**metrics, "grads": grads}

        return run

    monkeypatch.setattr(check_module, "compile_step", off_by_a_bit)
    report = check_config(parse_config(_yaml(LINEAR)), parity=False)
    failed = [item for item in report.items if item.ok is False]
    assert [item.name for item in failed] == ["compiled"]
    assert "differ from the eager step's beyond rtol 1e-05" in failed[0].detail
    assert not report.ok and not report.bad_input


def test_a_parity_failure_fails_the_last_item(monkeypatch, capsys, tmp_path):
    class Diverged:
        ok = False

        def summary(self) -> str:
            return "PARITY FAILED (bitwise): first divergence at step 0"

    monkeypatch.setattr(check_module, "parity_run", lambda cfg, steps: Diverged())
    code, out, _ = _check(capsys, "--config", _write(tmp_path, LINEAR), "--no-compile")
    assert code == 1
    assert "✗ parity    PARITY FAILED (bitwise): first divergence at step 0" in out


def _yaml(text: str) -> dict:
    import yaml

    return yaml.safe_load(textwrap.dedent(text))


def test_eager_checks_come_before_the_compile(monkeypatch):
    """The quick, exact items (eager step, parity) answer before the compile starts."""
    monkeypatch.setattr(check_module, "compile_step", lambda step: step)
    report = check_config(parse_config(_yaml(LINEAR)))
    names = [item.name for item in report.items]
    assert names.index("eager") < names.index("parity") < names.index("compiled")
    assert report.ok
