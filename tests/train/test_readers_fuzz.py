"""Fuzzing the readers of a run directory (issue 18): meta.json, pointer files, the
safetensors header and compile_cache.zip are data anyone may have written.

Every mutated case must end in exit 0 (a harmless change) or exit 2 with one line naming
the file, never a traceback or another exit code; nothing on disk changes; no code runs
(a canary module that a mutated config names is never imported). The number of cases per
reader is printed by ``-s`` and listed in the closing note of issue 18.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import sys
import tempfile
import textwrap
import warnings
import zipfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from purestep.cli import main
from purestep.core import compile_cache

CONFIG = """
model: {name: mlp, hidden: [8], out_features: 3}
data: {name: blobs, n_train: 48, n_val: 24, n_features: 4, n_classes: 3, batch_size: 16}
loss: cross_entropy
optimizer: {name: Adam, lr: 1e-2}
train: {epochs: 1, compile: false}
log: {progress: false, plots: false, tensorboard: false}
"""

FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats()
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)

META_KEYS = [
    "format_version", "epoch", "batch", "step", "history", "best", "bad_epochs", "seconds",
    "finished", "stop_reason", "sha256", "config", "task", "data", "versions", "saved_at",
    "import_paths", "signature",
]  # fmt: skip
REQUIRED = {"format_version", "epoch", "batch", "step", "history", "best", "bad_epochs",
            "seconds", "finished", "stop_reason", "sha256", "config"}  # fmt: skip


@pytest.fixture(scope="module")
def step_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    cfg = tmp / "c.yaml"
    cfg.write_text(textwrap.dedent(CONFIG))
    out = tmp / "run"
    assert main(["train", "--config", str(cfg), "--out", str(out)]) == 0
    return next((out / "checkpoints").glob("step-*"))


@pytest.fixture(scope="module")
def canary(tmp_path_factory):
    """A module that leaves a mark when imported: configs name it; it must never run."""
    lib = tmp_path_factory.mktemp("lib")
    mark = lib / "imported"
    (lib / "fuzz_canary.py").write_text(
        f"import pathlib\npathlib.Path({str(mark)!r}).write_text('ran')\nmake = None\n"
    )
    sys.path.insert(0, str(lib))
    yield mark
    sys.path.remove(str(lib))
    sys.modules.pop("fuzz_canary", None)


def _tree(path: Path) -> dict[str, str]:
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


class _Copy:
    """A fresh copy of the step directory per case."""

    def __init__(self, step_dir: Path) -> None:
        self.tmp = tempfile.TemporaryDirectory()
        self.base = Path(self.tmp.name)
        self.dir = self.base / "checkpoints" / step_dir.name
        shutil.copytree(step_dir, self.dir)

    def meta(self) -> dict[str, Any]:
        return json.loads((self.dir / "meta.json").read_text())

    def write_meta(self, meta: Any) -> None:
        (self.dir / "meta.json").write_text(json.dumps(meta))

    def __enter__(self) -> _Copy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.tmp.cleanup()


def _evaluate(
    target: Path, root: Path, capsys, canary: Path, *, must_fail: bool, names: str
) -> int:
    """``purestep evaluate --checkpoint target`` on a copy under ``root``."""
    before = _tree(root)
    capsys.readouterr()
    code = main(["evaluate", "--checkpoint", str(target), "--split", "val"])
    out = capsys.readouterr()
    assert code in ((2,) if must_fail else (0, 2)), (code, out.err[-500:])
    assert "Traceback" not in out.err and len(out.err.strip().splitlines()) <= 1, out.err
    if code == 2:
        assert names in out.err, out.err[:500]
    assert _tree(root) == before  # nothing changed on disk
    assert not canary.exists()  # no code ran
    return code


# -- meta.json ---------------------------------------------------------------------------

COUNTS: dict[str, int] = {}


def _count(reader: str) -> None:
    COUNTS[reader] = COUNTS.get(reader, 0) + 1


@FUZZ
@given(key=st.sampled_from(META_KEYS), value=JSON)
def test_meta_values_of_any_type(step_dir, canary, capsys, key, value):
    _count("meta.json: values")
    with _Copy(step_dir) as c:
        meta = c.meta()
        meta[key] = value
        c.write_meta(meta)
        bad = key in {"format_version", "epoch", "batch", "step", "history", "best", "sha256",
                      "finished", "config"}  # fmt: skip
        _evaluate(c.dir, c.base, capsys, canary, must_fail=bad, names=str(c.dir))


@FUZZ
@given(key=st.sampled_from(sorted(REQUIRED)))
def test_meta_missing_keys(step_dir, canary, capsys, key):
    _count("meta.json: missing keys")
    with _Copy(step_dir) as c:
        meta = c.meta()
        del meta[key]
        c.write_meta(meta)
        _evaluate(c.dir, c.base, capsys, canary, must_fail=True, names="meta.json")


@FUZZ
@given(
    section=st.sampled_from(["model", "data", "loss"]),
    name=st.sampled_from(["fuzz_canary:make", "os:system", "builtins:eval", "subprocess:run"]),
    extra=st.dictionaries(st.sampled_from(["command", "args", "shell"]), JSON, max_size=2),
)
def test_meta_config_naming_code(step_dir, canary, capsys, section, name, extra):
    _count("meta.json: config naming code")
    with _Copy(step_dir) as c:
        meta = c.meta()
        meta["config"][section] = {"name": name, **extra}
        c.write_meta(meta)
        _evaluate(c.dir, c.base, capsys, canary, must_fail=True, names="--trust-code")


@FUZZ
@given(
    raw=st.one_of(
        st.binary(max_size=200),
        st.integers(0, 4000).map(lambda n: ("[" * n).encode()),
        st.sampled_from([b"", b"null", b"[]", b'"x"', b"\xff\xfe", b"[" * 200_000]),
    ),
    version=st.sampled_from([2, 10**100, 0, -1, "1", 1.5, True, None]),
    truncate=st.integers(1, 400),
)
def test_meta_bytes(step_dir, canary, capsys, raw, version, truncate):
    _count("meta.json: bytes")
    with _Copy(step_dir) as c:
        path = c.dir / "meta.json"
        original = path.read_bytes()
        for data in (raw, original[:truncate]):
            path.write_bytes(data)
            _evaluate(c.dir, c.base, capsys, canary, must_fail=True, names="meta.json")
        meta = json.loads(original)
        meta["format_version"] = version
        c.write_meta(meta)
        _evaluate(c.dir, c.base, capsys, canary, must_fail=True, names="meta.json")


def test_meta_special_files(step_dir, canary, capsys):
    with _Copy(step_dir) as c:
        path = c.dir / "meta.json"
        path.unlink()
        os.mkfifo(path)  # a reader that opened it would block forever
        _evaluate(c.dir, c.base, capsys, canary, must_fail=True, names="meta.json")
        path.unlink()
        path.symlink_to(path)  # a loop
        _evaluate(c.dir, c.base, capsys, canary, must_fail=True, names="meta.json")
        path.unlink()
        with path.open("wb") as f:  # 64 MiB + 1 of spaces and a valid object
            f.write(b" " * (64 << 20) + b"{}")
        _evaluate(c.dir, c.base, capsys, canary, must_fail=True, names="meta.json")


# -- pointer files -----------------------------------------------------------------------

POINTERS = st.one_of(
    st.text(max_size=60),
    st.sampled_from(
        [
            "../",
            "../../etc/passwd",
            "/etc/passwd",
            "/",
            "step-00000001/../..",
            "step-" + "1" * 5000,
            "x" * 5000,
            "step-1",
            "\x00",
        ]
    ),
)


@FUZZ
@given(content=POINTERS, name=st.sampled_from(["best", "latest"]))
def test_pointer_contents(step_dir, canary, capsys, content, name):
    _count("pointer files")
    with _Copy(step_dir) as c:
        ckpts = c.dir.parent
        pointer = ckpts / name
        try:
            pointer.write_text(content)
        except (ValueError, UnicodeEncodeError):
            pointer.write_bytes(content.encode("utf-8", "surrogatepass"))
        valid = content.strip() == c.dir.name
        code = _evaluate(pointer, c.base, capsys, canary, must_fail=not valid, names=name)
        assert code == (0 if valid else 2)
        _evaluate(ckpts.parent, c.base, capsys, canary, must_fail=not valid, names=name)


def test_pointer_symlinks(step_dir, canary, capsys, tmp_path):
    outside = tmp_path / "outside"
    outside.write_text("secret\n")
    with _Copy(step_dir) as c:
        pointer = c.dir.parent / "best"
        for target in (outside, Path("/dev/zero"), pointer):  # outside, endless, a loop
            pointer.unlink(missing_ok=True)
            pointer.symlink_to(target)
            _evaluate(pointer, c.base, capsys, canary, must_fail=True, names="best")
            _evaluate(c.dir.parent.parent, c.base, capsys, canary, must_fail=True, names="best")
        assert outside.read_text() == "secret\n"


# -- the safetensors header --------------------------------------------------------------


def _header(data: bytes) -> tuple[dict[str, Any], bytes]:
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def _pack(header: Any, body: bytes, declared: int | None = None) -> bytes:
    raw = json.dumps(header).encode() if not isinstance(header, bytes) else header
    return struct.pack("<Q", len(raw) if declared is None else declared) + raw + body


@st.composite
def tensor_files(draw, original: bytes) -> bytes:
    header, body = _header(original)
    names = sorted(k for k in header if k != "__metadata__")
    name = draw(st.sampled_from(names))
    kind = draw(st.sampled_from(["length", "offsets", "overlap", "dtype", "shape", "junk",
                                 "truncate", "body"]))  # fmt: skip
    if kind == "length":
        extra = draw(st.one_of(st.integers(1, 10**6), st.just(2**63), st.just(2**64 - 1)))
        return _pack(header, body, declared=min(len(json.dumps(header)) + extra, 2**64 - 1))
    if kind == "offsets":
        start = draw(st.integers(-5, 10**9))
        header[name]["data_offsets"] = [start, start + draw(st.integers(-5, 10**9))]
    elif kind == "overlap":
        other = draw(st.sampled_from(names))
        header[name]["data_offsets"] = list(header[other]["data_offsets"])
    elif kind == "dtype":
        header[name]["dtype"] = draw(st.sampled_from(["Q9", "", "F128", "object", "U8x"]))
    elif kind == "shape":
        header[name]["shape"] = draw(st.lists(st.integers(-3, 2**40), max_size=4))
    elif kind == "junk":
        return _pack(draw(st.binary(min_size=1, max_size=64)), body)
    elif kind == "truncate":
        data = _pack(header, body)
        return data[: draw(st.integers(0, len(data) - 1))]
    else:
        return _pack(header, body + draw(st.binary(min_size=1, max_size=16)))
    return _pack(header, body)


@FUZZ
@given(data=st.data())
def test_safetensors_headers(step_dir, canary, capsys, data):
    _count("state.safetensors headers")
    with _Copy(step_dir) as c:
        state = c.dir / "state.safetensors"
        mutated = data.draw(tensor_files(state.read_bytes()))
        state.write_bytes(mutated)
        meta = c.meta()  # as an attacker would: the checksum matches the new bytes
        meta["sha256"]["state.safetensors"] = hashlib.sha256(mutated).hexdigest()
        c.write_meta(meta)
        _evaluate(c.dir, c.base, capsys, canary, must_fail=False, names="state.safetensors")


# -- compile_cache.zip -------------------------------------------------------------------


@st.composite
def cache_files(draw) -> bytes:
    members = draw(
        st.dictionaries(
            st.one_of(
                st.sampled_from(
                    [
                        "artifacts.bin",
                        "kernels/ab/k.main.so",
                        "kernels/../../x.so",
                        "/etc/x.so",
                        "kernels/ab/evil.py",
                        "kernels/a/b/c.so",
                        "kernels/ab/../../../y.so",
                        "meta.json",
                    ]
                ),
                st.text(min_size=1, max_size=30),
            ),
            st.binary(max_size=64),
            max_size=4,
        )
    )
    meta: Any = draw(
        st.one_of(
            JSON,
            st.just(
                {"format": 1, **compile_cache._versions(),
                 "sha256": {n: hashlib.sha256(d).hexdigest() for n, d in members.items()}}
            ),
        )
    )  # fmt: skip
    sign = draw(st.booleans())
    if sign and isinstance(meta, dict):
        from purestep._trust import sign_json

        meta = sign_json(meta)
    buffer = __import__("io").BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a second meta.json member: part of the fuzz
        archive.writestr("meta.json", json.dumps(meta))
        for name, payload in members.items():
            info = zipfile.ZipInfo(name)
            if draw(st.booleans()):  # a symlink member
                info.external_attr = 0o120777 << 16
            archive.writestr(info, payload)
    data = buffer.getvalue()
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return data


@FUZZ
@given(data=cache_files(), trust=st.booleans())
def test_compile_cache_zips(tmp_path, canary, data, trust):
    _count("compile_cache.zip")
    path = tmp_path / "compile_cache.zip"
    path.write_bytes(data)
    outside = tmp_path / "outside"
    outside.mkdir(exist_ok=True)
    before = _tree(tmp_path)
    with compile_cache.private_inductor_cache() as private:
        result = compile_cache.load_compile_cache(path, private, trust_code=trust)
        written = sorted(p.relative_to(private).as_posix() for p in private.rglob("*"))
    assert result.loaded or result.reason
    # Only kernels (two levels deep, .so) ever land, and only in the private directory.
    assert all(p.endswith(".so") or "/" not in p for p in written), written
    assert _tree(tmp_path) == before
    assert not canary.exists()


def test_a_huge_cache_member_is_not_read_when_foreign(tmp_path):
    """A foreign zip declaring a 4 GiB member is refused from its meta alone."""
    path = tmp_path / "compile_cache.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("meta.json", json.dumps({"format": 1}))
        with archive.open("artifacts.bin", "w", force_zip64=True) as f:
            chunk = b"\0" * (1 << 20)
            for _ in range(64):  # 64 MiB of zeros: a few KiB deflated
                f.write(chunk)
    with compile_cache.private_inductor_cache() as private:
        result = compile_cache.load_compile_cache(path, private)
    assert not result and "unsigned" in result.reason


def test_zz_report_counts(capsys):
    with capsys.disabled():
        print("\nfuzzed cases per reader:", json.dumps(COUNTS))
