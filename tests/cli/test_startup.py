"""Start-up (issue 20): ``purestep --help`` and every ``purestep <cmd> --help`` import no
torch (nor numpy, pydantic, yaml, tqdm, safetensors, matplotlib, tensorboard, optuna), and
``import purestep`` alone imports none of them until a name is used. What is imported is
asserted, never how long it takes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = {"torch", "numpy", "pydantic", "yaml", "tqdm", "safetensors", "matplotlib",
         "tensorboard", "optuna"}  # fmt: skip
COMMANDS = [
    "train", "evaluate", "predict", "check", "sweep", "tune", "parity", "bench", "demo", "config",
]  # fmt: skip

PROBE = """
import contextlib, io, json, sys
from purestep.cli import main
for argv in [["--help"]] + [[c, "--help"] for c in sys.argv[1:]]:
    with contextlib.redirect_stdout(io.StringIO()) as out:
        try:
            main(argv)
        except SystemExit as exit:
            assert exit.code == 0, (argv, exit.code)
    assert "usage: purestep" in out.getvalue(), argv
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules})))
"""


def _imported(code: str, *args: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_help_imports_no_torch():
    assert _imported(PROBE, *COMMANDS) & HEAVY == set()


def test_import_purestep_is_lazy_until_a_name_is_used():
    code = """
import json, sys
import purestep as ps
before = sorted({m.split(".")[0] for m in sys.modules})
assert "TrainState" in dir(ps) and "fit" in ps.__all__
ps.TrainState, ps.optim.adam, ps.fit
print(json.dumps(before))
"""
    assert _imported(code) & HEAVY == set()


@pytest.mark.parametrize("name", ["TrainState", "make_train_step", "fit", "train", "optim"])
def test_lazy_names_are_the_real_ones(name):
    import importlib

    import purestep as ps

    value = getattr(ps, name)
    assert value is getattr(ps, name)  # cached
    source = ps._EXPORTS[name]
    module = importlib.import_module(source)
    assert value is (module if source == f"purestep.{name}" else getattr(module, name))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        ps.nope  # noqa: B018
