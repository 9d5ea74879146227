"""The `purestep` command and the demo job."""

from __future__ import annotations

import subprocess
import sys

import pytest

from purestep.cli import main
from purestep.demo import main as demo


def test_demo_learns_and_reports_parity():
    lines: list[str] = []
    result = demo(epochs=3, compile=False, parity_steps=30, print_fn=lines.append)
    assert result["val_accuracy"] > 0.75, result
    assert result["parity_ok"] == 1.0
    text = "\n".join(lines)
    assert "epoch 3/3" in text and "PARITY OK: 30 steps bitwise" in text


def test_cli_demo_exit_code(capsys):
    assert main(["demo", "--epochs", "1", "--no-compile", "--parity-steps", "5"]) == 0
    assert "PARITY OK" in capsys.readouterr().out


def test_cli_usage_errors():
    with pytest.raises(SystemExit) as err:
        main(["frobnicate"])
    assert err.value.code == 2


def test_console_script_is_installed():
    out = subprocess.run(
        [sys.executable, "-m", "purestep.cli", "--help"], capture_output=True, text=True, check=True
    )
    assert "demo" in out.stdout
