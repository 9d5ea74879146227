"""README's example runs as written."""

from __future__ import annotations

import re
from pathlib import Path


def test_readme_example_runs(capsys):
    text = Path(__file__).resolve().parents[1].joinpath("README.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    exec(compile(code, "README.md", "exec"), {})
    assert "PARITY OK: 100 steps bitwise" in capsys.readouterr().out


def test_readme_callback_example_runs():
    text = Path(__file__).resolve().parents[1].joinpath("README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    code = next(b for b in blocks if "class GradNorm" in b)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    norms = scope["grad_norm"].norms
    assert len(norms) == 8 and all(n > 0 for n in norms)  # 2 epochs x 4 batches
