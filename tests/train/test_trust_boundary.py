"""The trust boundary end to end (issue 18): a run directory from elsewhere is data.

A run this user's purestep wrote (its meta.json signed with this user's key) evaluates and
predicts as before, from any working directory; a foreign one (unsigned, signed with another
key, or edited) builds built-in names only: a ``module:function`` it names is refused before
anything is imported (exit 2 naming the module and ``--trust-code``), and its compile cache
is not loaded.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import purestep as ps
from purestep._trust import UntrustedCodeError
from purestep.cli import main

MODULE = """
import torch.nn as nn

def make_net(in_features, hidden=8):
    return nn.Sequential(
        nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, 1), nn.Flatten(0)
    )
"""

CONFIG = """
model: {name: "mymod:make_net", in_features: 2, hidden: 8}
data: {name: csv, path: data/houses.csv, target: price, batch_size: 16, val_fraction: 0.25}
loss: mse
optimizer: {name: SGD, lr: 0.05}
train: {epochs: 2, compile: false}
log: {progress: false, plots: false, tensorboard: false}
"""

BUILTIN = """
model: {name: mlp, hidden: [8], out_features: 4}
data: {name: blobs, n_train: 64, n_val: 32, batch_size: 16}
loss: cross_entropy
optimizer: {name: SGD, lr: 0.05}
train: {epochs: 1, compile: false}
log: {progress: false, plots: false, tensorboard: false}
"""


def _tree(path: Path) -> dict[str, str]:
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def _project(root: Path) -> Path:
    """A user's project folder: their model module, a CSV and a config naming both by
    paths relative to the config's folder."""
    root.mkdir(parents=True)
    (root / "mymod.py").write_text(textwrap.dedent(MODULE))
    (root / "data").mkdir()
    lines = ["sqft,rooms,price"] + [
        f"{50 + i},{1 + i % 4},{100 + 3 * i + i % 4}" for i in range(48)
    ]
    (root / "data" / "houses.csv").write_text("\n".join(lines) + "\n")
    (root / "cfg.yaml").write_text(textwrap.dedent(CONFIG))
    return root / "cfg.yaml"


@pytest.fixture
def isolated(monkeypatch):
    """sys.path and the user's module as they were: each test imports afresh."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    for name in ("mymod", "canary_mod"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    yield
    for name in ("mymod", "canary_mod"):
        sys.modules.pop(name, None)


@pytest.fixture
def own_run(tmp_path, monkeypatch, isolated):
    cfg = _project(tmp_path / "project")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # trained from another folder: paths follow the config
    out = tmp_path / "runs" / "houses"
    assert main(["train", "--config", str(cfg), "--out", str(out)]) == 0
    sys.modules.pop("mymod", None)
    project = str((tmp_path / "project").resolve())  # what train added to sys.path
    monkeypatch.setattr(sys, "path", [p for p in sys.path if not p.startswith(project)])
    return out


def _edit_meta(run: Path, change) -> Path:
    """Apply ``change`` to every meta.json of ``run`` (as someone would before handing it
    over), keeping the rest of the file as it was."""
    for meta_path in (run / "checkpoints").glob("step-*/meta.json"):
        meta = json.loads(meta_path.read_text())
        change(meta)
        meta_path.write_text(json.dumps(meta, indent=1))
    return run


def test_own_run_evaluates_and_predicts_from_any_folder(own_run, tmp_path, monkeypatch, capsys):
    other = tmp_path / "other"
    other.mkdir()
    monkeypatch.chdir(other)
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(own_run), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["examples"] == 12 and result["loss"] > 0
    assert main(["predict", "--checkpoint", str(own_run), "--input", "sqft=60", "rooms=2"]) == 0
    assert "price" in capsys.readouterr().out
    # What made that possible is in the run directory: absolute paths and import folders.
    meta = json.loads(next((own_run / "checkpoints").glob("step-*/meta.json")).read_text())
    assert meta["config"]["data"]["path"] == str(tmp_path / "project" / "data" / "houses.csv")
    assert str(tmp_path / "project") in meta["import_paths"]
    assert meta["signature"]["alg"] == "hmac-sha256"


def test_a_foreign_config_runs_no_code(own_run, tmp_path, monkeypatch, capsys):
    """The reproduction from the issue: meta.json edited to call os.system."""
    pwned = tmp_path / "PWNED"

    def attack(meta):
        meta["config"]["model"] = {"name": "os:system", "command": f"touch {pwned}"}
        meta.pop("signature")

    _edit_meta(own_run, attack)
    before = _tree(own_run)
    capsys.readouterr()
    for command in (["evaluate"], ["predict", "--input", "sqft=60", "rooms=2"]):
        assert main([*command, "--checkpoint", str(own_run)]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1, err
        assert "module 'os'" in err and "--trust-code" in err and "meta.json" in err, err
        assert "unsigned" in err
    assert not pwned.exists()
    assert _tree(own_run) == before
    with pytest.raises(UntrustedCodeError, match="module 'os'"):
        ps.train.load_run(own_run)


def test_another_users_run_needs_trust_code_for_its_modules(own_run, tmp_path, monkeypatch, capsys):
    """Signed with another key (the same run read by another user): the user's module is
    refused, and imported only with --trust-code."""
    canary = tmp_path / "imported"
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "canary_mod.py").write_text(
        textwrap.dedent(MODULE)
        + f"\nimport pathlib\npathlib.Path({str(canary)!r}).write_text('ran')\n"
    )
    monkeypatch.syspath_prepend(str(lib))
    _edit_meta(own_run, lambda meta: meta["config"]["model"].update(name="canary_mod:make_net"))
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(own_run)]) == 2
    err = capsys.readouterr().err
    assert "module 'canary_mod'" in err and "edited after signing" in err, err
    assert not canary.exists()

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "another-user"))
    assert main(["evaluate", "--checkpoint", str(own_run)]) == 2
    assert "signed with another key" in capsys.readouterr().err
    assert not canary.exists()

    assert main(["evaluate", "--checkpoint", str(own_run), "--trust-code"]) == 0
    assert canary.read_text() == "ran"  # the opt-in does import it


def test_a_foreign_builtin_only_run_needs_nothing(tmp_path, monkeypatch, capsys):
    cfg = tmp_path / "b.yaml"
    cfg.write_text(textwrap.dedent(BUILTIN))
    out = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--out", str(out)]) == 0
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "another-user"))
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["examples"] == 32


def test_relative_paths_in_a_config_are_relative_to_its_folder(tmp_path, monkeypatch):
    from purestep.train.config import load_config

    cfg = _project(tmp_path / "p")
    monkeypatch.chdir(tmp_path)
    loaded = load_config(cfg)
    assert loaded.data.kwargs["path"] == str(tmp_path / "p" / "data" / "houses.csv")
    # A --set typed on the command line is relative to where it was typed.
    loaded = load_config(cfg, ["data.path=elsewhere.csv"])
    assert loaded.data.kwargs["path"] == str(tmp_path / "elsewhere.csv")


def test_a_module_beside_the_config_never_shadows_a_library(tmp_path):
    """yaml.py / tqdm.py next to a config (a downloaded run directory holding them) are
    not imported in place of the libraries purestep uses."""
    project = tmp_path / "project"
    _project(project)
    marker = tmp_path / "shadowed"
    for name in ("yaml", "tqdm", "safetensors", "matplotlib"):
        (project / f"{name}.py").write_text(
            f"import os\nos.close(os.open({str(marker)!r}, os.O_CREAT))\n"
        )
    out = tmp_path / "run"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "purestep",
            "train",
            "--config",
            str(project / "cfg.yaml"),
            "--out",
            str(out),
            "--epochs",
            "1",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not marker.exists(), marker.read_text()


def test_a_foreign_compile_cache_is_ignored_on_resume(tmp_path, capsys):
    """OUT/compile_cache.zip from elsewhere is native code: a --resume says so in one line
    and compiles afresh, in a private cache directory (the global one is untouched)."""
    import zipfile

    cfg = tmp_path / "b.yaml"
    cfg.write_text(textwrap.dedent(BUILTIN).replace("compile: false", "compile: true"))
    out = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--out", str(out)]) == 0
    cache = out / "compile_cache.zip"
    with zipfile.ZipFile(cache) as archive:
        members = {n: archive.read(n) for n in archive.namelist()}
    meta = json.loads(members["meta.json"])
    meta["signature"]["mac"] = "0" * 64  # a cache someone else made
    members["meta.json"] = json.dumps(meta).encode()
    with zipfile.ZipFile(cache, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    capsys.readouterr()
    args = ["train", "--config", str(cfg), "--out", str(out), "--resume", "--epochs", "2"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "compile cache: not used" in text and "not this user's" in text, text
    assert "--trust-code" in text


def test_damaged_pointer_files_are_refused_naming_them(tmp_path, capsys):
    cfg = tmp_path / "b.yaml"
    cfg.write_text(textwrap.dedent(BUILTIN))
    out = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--out", str(out)]) == 0
    best = out / "checkpoints" / "best"
    for junk in ("../../etc", "/etc/passwd", "step-" + "9" * 5000, "x" * 5000, "\x00\xff"):
        best.write_text(junk)
        for target in (out, best):
            capsys.readouterr()
            assert main(["evaluate", "--checkpoint", str(target)]) == 2, junk[:20]
            err = capsys.readouterr().err
            assert "best" in err and len(err.strip().splitlines()) == 1, err[:300]
    shutil.rmtree(out / "checkpoints")
    assert main(["evaluate", "--checkpoint", str(out)]) == 2
    assert "holds no checkpoint" in capsys.readouterr().err
