"""compare(compile=True): the default tolerance is the compiled one, and a bitwise failure
says why."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import purestep as ps
from purestep.parity.compare import COMPILED_ATOL, COMPILED_RTOL
from tests.support import batches, mlp


def sgd(params):
    return torch.optim.SGD(params, lr=0.05, momentum=0.9, foreach=False)


def dropout_mlp():
    return mlp(p=0.3)


def test_compiled_without_a_mode_compares_within_the_compiled_tolerance():
    # Old code: the default mode was bitwise, and the compiled step's loss is 1 ulp off the
    # eager one at step 0, so this failed with no hint.
    report = ps.parity.compare(
        dropout_mlp, F.cross_entropy, sgd, batches((10,)), steps=10, compile=True
    )
    assert report.ok, str(report)
    assert (report.mode, report.rtol, report.atol) == ("close", COMPILED_RTOL, COMPILED_ATOL)
    assert report.summary().startswith("PARITY OK: 10 steps close (rtol=1e-05, atol=1e-06)")
    text = report.to_markdown()
    assert "compile=True and no mode given: compared in mode='close'" in text
    assert "a compiled step is not bitwise the eager one" in text
    assert ps.parity.compare_compiled.__kwdefaults__["atol"] == COMPILED_ATOL


def test_explicit_bitwise_on_a_compiled_step_hints_at_the_tolerance():
    report = ps.parity.compare(
        dropout_mlp, F.cross_entropy, sgd, batches((10,)), steps=3, compile=True, mode="bitwise"
    )
    # torch 2.13 on CPU: the compiled loss differs from the eager one in the last bit
    assert not report.ok and report.first_divergence.step == 0
    assert report.hint is not None
    assert "a compiled step is not bitwise the eager one" in report.hint
    assert "mode='close', rtol=1e-05, atol=1e-06" in report.summary()
    assert '"hint": "the functional step is compiled' in report.to_json()


def test_eager_defaults_are_bitwise_and_give_no_compile_hint():
    report = ps.parity.compare(
        mlp, F.cross_entropy, sgd, batches((10,)), steps=2, optimizer=ps.optim.sgd(lr=0.04)
    )
    assert (report.mode, report.rtol, report.atol) == ("bitwise", 1e-5, 1e-7)
    assert not report.ok and report.hint is None
    close = ps.parity.compare(mlp, F.cross_entropy, sgd, batches((10,)), steps=2, mode="close")
    assert (close.rtol, close.atol) == (1e-5, 1e-7)
    assert not any("compile=True" in note for note in close.notes)


@pytest.mark.slow
def test_cli_parity_compile_on_the_sprites_config(capsys):
    from purestep.cli import main

    sprites = str(Path(__file__).parents[2] / "examples" / "sprites.yaml")
    # An explicit bitwise mode misses by an ulp when compiled: the report says what to use.
    argv = ["parity", "--config", sprites, "--compile", "--steps", "10"]
    assert main([*argv, "--mode", "bitwise"]) == 1
    assert "Hint: the functional step is compiled" in capsys.readouterr().out
    # No mode given: compiled steps are compared within the compiled tolerance.
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "PARITY OK: 10 steps close (rtol=1e-05, atol=1e-06)" in out
    assert "compile=True and no mode given" in out
