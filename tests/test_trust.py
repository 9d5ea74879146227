"""``purestep._trust``: the per-user signing key, signatures, and the import policy."""

from __future__ import annotations

import json
import stat
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from purestep._trust import (
    UntrustedCodeError,
    code_allowed,
    import_allowed,
    sign_json,
    signature_status,
    verify_json,
)

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return tmp_path / "config"


def test_the_key_is_created_once_private_and_kept(home):
    signed = sign_json({"a": 1})
    key = home / "purestep" / "key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    first = key.read_text()
    assert len(first.strip()) == 64
    sign_json({"b": 2})
    assert key.read_text() == first  # never replaced
    assert verify_json(signed)


@given(obj=st.dictionaries(st.text(), JSON, max_size=6))
def test_a_signature_survives_a_json_round_trip_and_any_indent(obj):
    signed = sign_json(obj)
    for indent in (None, 1, 4):
        assert verify_json(json.loads(json.dumps(signed, indent=indent)))


@given(obj=st.dictionaries(st.text(min_size=1), JSON, min_size=1, max_size=6), data=st.data())
def test_any_edit_breaks_the_signature(obj, data):
    signed = sign_json(obj)
    key = data.draw(st.sampled_from(sorted(obj)))
    value = data.draw(JSON.filter(lambda v: v != obj[key]))
    edited = {**signed, key: value}
    assert signature_status(edited) == "signature does not match (edited after signing)"
    removed = {k: v for k, v in signed.items() if k != key}
    assert not verify_json(removed)


def test_foreign_signatures_say_why(home, tmp_path, monkeypatch):
    mine = sign_json({"a": 1})
    assert signature_status({"a": 1}) == "unsigned"
    assert signature_status({"a": 1, "signature": "x"}) == "malformed signature"
    assert signature_status([1, 2]) == "unsigned"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "someone-else"))
    assert signature_status(mine) == "signed with another key"  # no key here yet
    sign_json({})  # now this user has a key of their own: still not theirs
    assert signature_status(mine) == "signed with another key"


def test_a_malformed_key_file_is_never_overwritten(home):
    key = home / "purestep" / "key"
    key.parent.mkdir(parents=True)
    key.write_text("not hex")
    with pytest.raises(OSError, match="malformed"):
        sign_json({"a": 1})
    assert key.read_text() == "not hex"
    assert (
        signature_status(
            {"a": 1, "signature": {"alg": "hmac-sha256", "key_id": "0" * 16, "mac": "0"}}
        )
        == "signed with another key"
    )


def test_imports_are_refused_only_inside_a_foreign_block():
    import_allowed("os:system", "model")  # a config the user wrote: allowed
    with code_allowed(False, "run/meta.json (unsigned)"):
        with pytest.raises(UntrustedCodeError) as err:
            import_allowed("os:system", "model")
        message = str(err.value)
        assert "'os'" in message and "--trust-code" in message and "run/meta.json" in message
        with code_allowed(True):
            import_allowed("os:system", "model")  # nested opt-in
    import_allowed("os:system", "model")


def test_config_folders_are_searched_after_installed_libraries(tmp_path, monkeypatch):
    """A tqdm.py/yaml.py beside a config never shadows the library (issue 18, item 3)."""
    from purestep.train.build import add_import_paths

    monkeypatch.setattr(sys, "path", list(sys.path))
    (tmp_path / "tqdm.py").write_text("raise SystemExit('shadowed')\n")
    add_import_paths(tmp_path)
    assert sys.path[-1] == str(tmp_path.resolve())
    site = next(i for i, p in enumerate(sys.path) if p.endswith("site-packages"))
    assert sys.path.index(str(tmp_path.resolve())) > site
