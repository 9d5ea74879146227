"""``purestep.core.compile_cache``: a compiled step's caches carried to a fresh process.

The round trip runs two processes with separate, empty inductor cache directories (as
two machines): the first compiles a step and saves its caches, the second loads them and
compiles the same step without building a single C++ kernel, and computes the same bits.
No time is asserted.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from purestep._trust import sign_json
from purestep.core import compile_cache
from purestep.core.compile_cache import CacheLoad, load_compile_cache, save_compile_cache

_load = load_compile_cache

SCRIPT = """
import json, sys, torch
import purestep as ps
from purestep.core import compile_cache

torch.set_num_threads(1)
mode, path = sys.argv[1], sys.argv[2]
loaded = None
if mode == "load":  # as a resumed run: into a private inductor cache directory
    scope = compile_cache.private_inductor_cache()  # kept open to the end (a reference)
    private = scope.__enter__()
    result = compile_cache.load_compile_cache(path, private)
    loaded = {"loaded": result.loaded, "kernels": result.kernels, "reason": result.reason}
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.ReLU(), torch.nn.Linear(7, 3))
opt = ps.optim.adam(lr=1e-2)
step = ps.compile(ps.make_train_step(model, torch.nn.functional.cross_entropy, opt))
state = ps.TrainState.create(model, opt)
batch = (torch.randn(4, 5, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 1, 2, 1]))
state, metrics = step(state, batch)
size = compile_cache.save_compile_cache(path) if mode == "save" else None
used = sorted(p.name for p in compile_cache.inductor_cache_dir().glob("*/*.so"))
print(json.dumps({
    "loaded": loaded,
    "used": used,
    "size": size,
    "loss": metrics["loss"].item(),
    "weight": state.params["0.weight"].flatten().tolist(),
}))
"""


def _run(mode: str, path: Path, cache_dir: Path) -> dict:
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache_dir)}
    env.pop("TORCHINDUCTOR_FORCE_DISABLE_CACHES", None)
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode, str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _kernels(cache_dir: Path) -> set[str]:
    return {p.name for p in cache_dir.glob("*/*.so")}


def test_a_fresh_process_compiles_from_the_saved_caches(tmp_path):
    cache_file = tmp_path / "run" / "compile_cache.zip"
    first_dir, second_dir = tmp_path / "machine-a", tmp_path / "machine-b"
    saved = _run("save", cache_file, first_dir)
    assert saved["size"] == cache_file.stat().st_size > 0
    with zipfile.ZipFile(cache_file) as archive:
        names = archive.namelist()
    kernels_saved = [n for n in names if n.startswith("kernels/")]
    assert "artifacts.bin" in names and "meta.json" in names and kernels_saved
    assert {n.rsplit("/", 1)[1] for n in kernels_saved} <= _kernels(first_dir)

    loaded = _run("load", cache_file, second_dir)
    assert loaded["loaded"] == {"loaded": True, "kernels": len(kernels_saved), "reason": ""}
    # Every kernel the second process uses came from the file: none was compiled there,
    # and nothing went into the machine's global inductor cache.
    assert set(loaded["used"]) == {n.rsplit("/", 1)[1] for n in kernels_saved}
    assert _kernels(second_dir) == set()
    assert loaded["loss"] == saved["loss"] and loaded["weight"] == saved["weight"]


def test_a_cache_signed_by_another_user_is_not_loaded(tmp_path, monkeypatch):
    """A compile_cache.zip from elsewhere holds native code and pickles: loaded only when
    this user's key signed it, or with trust_code."""
    path = tmp_path / "foreign.zip"
    _archive(path, {"artifacts.bin": b"", "kernels/ab/cabc.main.so": b"\x7fELF"})
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "other-user"))
    with compile_cache.private_inductor_cache() as private:
        result = load_compile_cache(path, private)
        assert not result and "not this user's (signed with another key)" in result.reason
        assert "--trust-code" in result.reason and not list(private.iterdir())
        assert load_compile_cache(path, private, trust_code=True) == CacheLoad(True, 1)
    assert not private.exists()  # the private directory goes with the block
    unsigned = tmp_path / "unsigned.zip"
    _archive(unsigned, {"artifacts.bin": b""}, sign=False)
    with compile_cache.private_inductor_cache() as private:
        assert "(unsigned)" in load_compile_cache(unsigned, private).reason


def test_loading_outside_a_private_cache_directory_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "global"))
    path = tmp_path / "k.zip"
    _archive(path, {"artifacts.bin": b""})
    with pytest.raises(ValueError, match="private_inductor_cache"):
        load_compile_cache(path, tmp_path / "elsewhere")
    assert not (tmp_path / "global").exists()


def _archive(
    path: Path, members: dict[str, bytes], sign: bool = True, **meta_changes: object
) -> None:
    meta = {
        "format": compile_cache.FORMAT,
        **compile_cache._versions(),
        "sha256": {n: __import__("hashlib").sha256(d).hexdigest() for n, d in members.items()},
    }
    meta.update(meta_changes)
    if sign:
        meta = sign_json(meta)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("meta.json", json.dumps(meta))
        for name, data in members.items():
            archive.writestr(name, data)


def test_foreign_or_damaged_files_are_skipped_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    load_compile_cache = functools.partial(_load, into=tmp_path / "cache")
    assert load_compile_cache(tmp_path / "none.zip") == CacheLoad(
        False, reason=f"no compile cache at {tmp_path / 'none.zip'}"
    )
    garbage = tmp_path / "garbage.zip"
    garbage.write_bytes(b"not a zip")
    assert "unreadable compile cache" in load_compile_cache(garbage).reason

    cases = {
        "torch 1.0": ({"artifacts.bin": b""}, {"torch": "1.0"}, "made with torch 1.0"),
        "format": ({"artifacts.bin": b""}, {"format": 99}, "format 99 is not 1"),
        "listing": ({"artifacts.bin": b""}, {"sha256": {}}, "lists other members"),
        "unsafe": ({"kernels/../../evil.so": b"x"}, {}, "unsafe path"),
        "python": ({"kernels/ab/evil.py": b"import os"}, {}, "is not a kernel"),
    }
    for label, (members, changes, reason) in cases.items():
        path = tmp_path / f"{label}.zip"
        _archive(path, members, **changes)
        result = load_compile_cache(path)
        assert not result and reason in result.reason, (label, result)
    tampered = tmp_path / "tampered.zip"
    _archive(tampered, {"kernels/ab/cabc.main.so": b"x"}, sha256={"kernels/ab/cabc.main.so": "0"})
    assert "fails its sha256" in load_compile_cache(tampered).reason
    assert not list((tmp_path / "cache").iterdir())  # nothing was written by a skipped file


def test_kernels_land_in_the_private_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "global"))
    path = tmp_path / "k.zip"
    _archive(path, {"artifacts.bin": b"", "kernels/ab/cabc.main.so": b"\x7fELF"})
    with compile_cache.private_inductor_cache() as private:
        assert compile_cache.inductor_cache_dir() == private != tmp_path / "global"
        assert load_compile_cache(path, private) == CacheLoad(True, 1)
        target = private / "ab" / "cabc.main.so"
        assert target.read_bytes() == b"\x7fELF" and os.access(target, os.X_OK)
        assert load_compile_cache(path, private) == CacheLoad(True, 0)  # there: left alone
    assert compile_cache.inductor_cache_dir() == tmp_path / "global"
    assert not (tmp_path / "global").exists()
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR")
    assert compile_cache.inductor_cache_dir().name.startswith("torchinductor_")


def test_torch_rejecting_the_artifacts_is_a_reason_not_an_error(tmp_path):
    path = tmp_path / "bad.zip"
    _archive(path, {"artifacts.bin": b"garbage bytes"})
    with compile_cache.private_inductor_cache() as private:
        result = load_compile_cache(path, private)
    assert not result and result.reason.startswith("torch rejected the compile cache")


@pytest.mark.skipif(not hasattr(torch.compiler, "save_cache_artifacts"), reason="old torch")
def test_save_writes_nothing_before_anything_compiled(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.compiler, "save_cache_artifacts", lambda: None)
    monkeypatch.setattr(compile_cache, "_kernel_files", lambda root: [])
    assert save_compile_cache(tmp_path / "c.zip") == 0
    assert not (tmp_path / "c.zip").exists()
