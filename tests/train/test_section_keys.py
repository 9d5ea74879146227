"""A misspelt key inside a section is a config error naming ``section.key`` with a
did-you-mean, for torch's optimizers, schedulers and param groups as for built-in models,
data and losses; ``purestep train`` exits 2 with that one line."""

from __future__ import annotations

import textwrap

import pytest

from purestep.cli import main

CONFIG = """
model: {name: mlp, hidden: [4], out_features: 1}
data: {name: sprites, n_train: 32, n_val: 0, n_test: 0, batch_size: 16}
loss: bce_with_logits
optimizer: {name: SGD, lr: 0.1}
train: {epochs: 1, compile: false}
log: {tensorboard: false, plots: false, progress: false}
"""


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optimizer.lrr=1e-2", "optimizer.lrr: unknown argument of SGD; did you mean 'lr'?"),
        (
            "optimizer.momentun=0.9",
            "optimizer.momentun: unknown argument of SGD; did you mean 'momentum'?",
        ),
        (
            "optimizer.param_groups=[{params: bias, weight_decy: 0}]",
            "optimizer.param_groups[0].weight_decy: not a setting of SGD; did you mean "
            "'weight_decay'?",
        ),
        (
            "scheduler={name: StepLR, step_sise: 2}",
            "scheduler.step_sise: unknown argument of StepLR; did you mean 'step_size'?",
        ),
        ("scheduler.name=StepLR", "scheduler.step_size: required by StepLR, but not given"),
        ("model.hiden=[4]", "model.hiden: unknown argument of mlp; did you mean 'hidden'?"),
        ("data.n_trian=8", "data.n_trian: unknown argument of sprites; did you mean 'n_train'?"),
        (
            "loss.pos_wieght=2",
            "loss.pos_wieght: unknown argument of BCEWithLogitsLoss; did you mean 'pos_weight'?",
        ),
    ],
)
def test_misspelt_section_key_exits_2_with_a_did_you_mean(tmp_path, capsys, override, message):
    config = tmp_path / "cfg.yaml"
    config.write_text(textwrap.dedent(CONFIG))
    out = tmp_path / "out"
    code = main(["train", "--config", str(config), "--out", str(out), "--set", override])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith(f"purestep train: {message}")
    assert err.count("\n") == 1 and "TypeError" not in err
    assert not out.exists()
