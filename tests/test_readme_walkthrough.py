"""README's "From a CSV file to predictions" walk-through runs as written, and its config
reference is ``purestep config --schema``'s output."""

from __future__ import annotations

import math
import re
import shlex
import subprocess
from pathlib import Path

from purestep.cli import main
from purestep.train._space import DISTRIBUTIONS
from purestep.train.schema import SPACE_SYNTAX, config_reference

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _section(title: str) -> str:
    start = README.index(f"## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else None]


def _same(got: str, expected: str) -> bool:
    """CSV lines equal, numbers within 0.1 % (floating point may differ across CPUs)."""
    a, b = got.split(","), expected.split(",")
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        try:
            if not math.isclose(float(x), float(y), rel_tol=1e-3):
                return False
        except ValueError:
            if x != y:
                return False
    return True


def test_walkthrough_runs_as_written(tmp_path, monkeypatch, capsys):
    text = _section("From a CSV file to predictions")
    config = re.search(r"```yaml\n# houses.yaml\n(.*?)```", text, re.S).group(1)
    (tmp_path / "houses.yaml").write_text(config)
    (tmp_path / "houses.csv").write_bytes((ROOT / "examples" / "house_prices.csv").read_bytes())
    session = re.search(r"```\n(\$ .*?)```", text, re.S).group(1).splitlines()
    monkeypatch.chdir(tmp_path)
    commands: list[tuple[str, list[str]]] = []
    for line in session:
        if line.startswith("$ "):
            commands.append((line[2:], []))
        else:
            commands[-1][1].append(line)
    assert [c.split()[1] for c, _ in commands if c.startswith("purestep")] == [
        "train",
        "evaluate",
        "predict",
        "predict",
    ]
    for command, expected in commands:
        if not command.startswith("purestep "):
            subprocess.run(command, shell=True, check=True, cwd=tmp_path)
            continue
        capsys.readouterr()
        assert main(shlex.split(command)[1:]) == 0, command
        got = capsys.readouterr().out.splitlines()
        if expected:
            assert len(got) == len(expected), (command, got)
            assert all(_same(g, e) for g, e in zip(got, expected, strict=True)), (command, got)
    assert (tmp_path / "preds.csv").read_text().splitlines()[0] == "id,sqft,prediction"


def test_config_reference_is_the_schema_output():
    block = re.search(r"```text\n(.*?)```", _section("Config reference"), re.S).group(1)
    assert block == config_reference()


def test_config_schema_command_prints_every_key(capsys):
    assert main(["config", "--schema"]) == 0
    out = capsys.readouterr().out
    assert out == config_reference()
    for key in ("checkpoint.every_steps", "train.nan_policy", "optimizer.param_groups[].params"):
        assert re.search(rf"^{re.escape(key)} ", out, re.M), key
    csv_line = next(line for line in out.splitlines() if line.startswith("data: csv("))
    for key in ("val_fraction=0.2", "test_fraction=0.0", "standardize=True", "classification"):
        assert key in csv_line
    assert set(SPACE_SYNTAX) == set(DISTRIBUTIONS)
    assert all(re.search(rf"^{name} ", out, re.M) for name in DISTRIBUTIONS)
