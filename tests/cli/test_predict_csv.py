"""``purestep predict --csv FILE [--output FILE]`` and ``--json @FILE``: a file of inputs
in, CSV with the input columns and the predictions out."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pytest

from purestep.cli import main
from purestep.train.config import parse_config
from purestep.train.run import train_run

QUIET = {"log": {"tensorboard": False, "plots": False, "progress": False}}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("predict_csv")
    (tmp / "lin.csv").write_text(
        "a,b,y\n" + "".join(f"{a},{b},{3 * a - 2 * b + 5}\n" for a in range(-5, 6) for b in (-2, 3))
    )
    (tmp / "bin.csv").write_text(
        "x,label\n" + "".join(f"{v},{'yes' if v > 0 else 'no'}\n" for v in range(-20, 21) if v)
    )
    out = {}
    for name, data, loss in (
        ("linear", "lin.csv", "mse"),
        ("binary", "bin.csv", "bce_with_logits"),
    ):
        target = "y" if name == "linear" else "label"
        raw = {
            "model": {"name": "linear"},
            "data": {"name": "csv", "path": str(tmp / data), "target": target},
            "loss": loss,
            "optimizer": {"name": "SGD", "lr": 0.1 if name == "linear" else 0.5},
            "train": {"epochs": 20, "compile": False, "seed": 0},
            **QUIET,
        }
        train_run(parse_config(raw), tmp / name, print_fn=lambda _line: None)
        out[name] = str(tmp / name)
    return out


def _predict(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["predict", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_csv_rows_get_the_prediction_input_gives(runs, capsys, tmp_path):
    rows = tmp_path / "rows.csv"
    # Columns in another order, an extra id column, a blank line: all fine.
    rows.write_text("id,b,a\nfirst,2,1\n\nsecond,-3,4\n")
    code, out, err = _predict(capsys, "--checkpoint", runs["linear"], "--csv", str(rows))
    assert code == 0, err
    got = _rows(out)
    assert [list(r) for r in got] == [["id", "b", "a", "prediction"]] * 2
    assert [(r["id"], r["b"], r["a"]) for r in got] == [("first", "2", "1"), ("second", "-3", "4")]
    for r in got:
        _, one, _ = _predict(
            capsys, "--checkpoint", runs["linear"], "--input", f"a={r['a']}", f"b={r['b']}"
        )
        (value,) = re.findall(r"-> y (-?[\d,.]+)", one)
        assert float(r["prediction"]) == pytest.approx(float(value.replace(",", "")), abs=0.006)
    assert float(got[0]["prediction"]) == pytest.approx(3 * 1 - 2 * 2 + 5, abs=0.1)


def test_classifier_rows_carry_the_class_and_its_probability(runs, capsys, tmp_path):
    rows = tmp_path / "rows.csv"
    rows.write_text("x\n15\n-15\n")
    code, out, err = _predict(capsys, "--checkpoint", runs["binary"], "--csv", str(rows))
    assert code == 0, err
    got = _rows(out)
    assert [r["prediction"] for r in got] == ["yes", "no"]
    assert all(float(r["probability"]) > 0.9 for r in got)
    code, out, _ = _predict(
        capsys, "--checkpoint", runs["binary"], "--csv", str(rows), "--top", "2"
    )
    got = _rows(out)
    assert list(got[0]) == ["x", "prediction", "probability", "prediction_2", "probability_2"]
    assert [r["prediction_2"] for r in got] == ["no", "yes"]
    assert float(got[0]["probability"]) + float(got[0]["probability_2"]) == pytest.approx(1)


def test_output_writes_the_csv(runs, capsys, tmp_path):
    rows, preds = tmp_path / "rows.csv", tmp_path / "preds.csv"
    rows.write_text("a,b\n1,2\n")
    _, printed, _ = _predict(capsys, "--checkpoint", runs["linear"], "--csv", str(rows))
    args = ("--checkpoint", runs["linear"], "--csv", str(rows), "--output", str(preds))
    code, out, err = _predict(capsys, *args)
    assert code == 0, err
    assert preds.read_text() == printed
    assert out == f"wrote 1 predictions to {preds}\n"


def test_json_from_a_file(runs, capsys, tmp_path):
    given = tmp_path / "in.json"
    given.write_text('[{"a": 4, "b": -3}, {"a": 0, "b": 0}]')
    _, inline, _ = _predict(capsys, "--checkpoint", runs["linear"], "--json", given.read_text())
    code, out, err = _predict(capsys, "--checkpoint", runs["linear"], "--json", f"@{given}")
    assert code == 0, err
    assert out.split(" -> ")[1:] == inline.split(" -> ")[1:]


@pytest.mark.parametrize(
    ("content", "extra", "message"),
    [
        ("a\n1\n", (), "missing feature column(s) b"),
        ("a,b\n1,2\n\n1,x\n", (), "column 'b' line 4: 'x' is not a number"),
        ("a,b\n1,2,3\n", (), "line 2 has 3 fields, the header has 2"),
        ("a,b,prediction\n1,2,3\n", (), "already has a column 'prediction'"),
        ("a,b\n", (), "needs a header row and at least one data row"),
        ("a,b\n1,2\n", ("--image", "x.png"), "--image does not apply with --csv"),
    ],
)
def test_bad_csv_exits_2_naming_the_problem(runs, capsys, tmp_path, content, extra, message):
    rows = tmp_path / "rows.csv"
    rows.write_text(content)
    code, out, err = _predict(capsys, "--checkpoint", runs["linear"], "--csv", str(rows), *extra)
    assert code == 2 and out == ""
    assert message in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--csv", "nope.csv"), "--csv: cannot read 'nope.csv'"),
        (("--json", "@nope.json"), "--json @nope.json: cannot read 'nope.json'"),
        (("--input", "a=1", "b=2", "--output", "x.csv"), "--output only applies with --csv"),
    ],
)
def test_bad_files_and_flags_exit_2(runs, capsys, monkeypatch, tmp_path, args, message):
    monkeypatch.chdir(tmp_path)
    code, _, err = _predict(capsys, "--checkpoint", runs["linear"], *args)
    assert code == 2 and message in err
    assert not Path("x.csv").exists()
