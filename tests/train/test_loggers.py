"""Loggers: TensorBoard scalars (and resume purging), the history files, progress bars,
the optional W&B / MLflow trackers and their missing-extra errors."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import struct
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from purestep.train import loggers as lg
from purestep.train.loggers import (
    Logger,
    MissingExtraError,
    Progress,
    TensorBoardLogger,
    epoch_scalars,
    make_loggers,
    read_history,
    write_atomic,
    write_history,
)

RECORD = {
    "epoch": 3,
    "step": 120,
    "loss": 0.41,
    "val_loss": None,
    "accuracy": 0.9,
    "val_accuracy": 0.88,
    "lr": 0.001,
    "lr_group1": 0.01,
    "seconds": 1.7,
    "val_confusion_matrix": [[40, 2], [3, 55]],
}


def f32(x: float) -> float:
    """What TensorBoard stores for ``x`` (float32)."""
    return float(torch.tensor(x, dtype=torch.float32))


def read_scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {
        tag: [(e.step, e.value) for e in acc.Scalars(tag)]
        for tag in acc.Tags()["scalars"]
        if acc.Scalars(tag)  # a tag whose events were all purged has none
    }


# --- scalars ---------------------------------------------------------------------------


def test_epoch_scalars_keeps_numbers_and_drops_index_none_and_matrices():
    scalars = epoch_scalars({**RECORD, "flag": True, "note": "x", "t": torch.tensor(2.5)})
    assert scalars == {
        "loss": 0.41,
        "accuracy": 0.9,
        "val_accuracy": 0.88,
        "lr": 0.001,
        "lr_group1": 0.01,
        "seconds": 1.7,
        "t": 2.5,
    }


def test_tensorboard_event_file_holds_the_scalars(tmp_path):
    logger = TensorBoardLogger(tmp_path / "tb")
    assert isinstance(logger, Logger)
    logger.log_scalars(40, {"train/loss_running": 0.7, "lr": 0.001})
    logger.log_scalars(80, {"train/loss_running": 0.5, "lr": 0.001})
    logger.log_scalars(RECORD["step"], epoch_scalars(RECORD))
    logger.close()
    logger.close()  # idempotent

    scalars = read_scalars(tmp_path / "tb")
    assert set(scalars) == {
        "train/loss_running",
        "lr",
        "loss",
        "accuracy",
        "val_accuracy",
        "lr_group1",
        "seconds",
    }
    assert scalars["train/loss_running"] == [(40, f32(0.7)), (80, f32(0.5))]
    assert scalars["lr"] == [(40, f32(0.001)), (80, f32(0.001)), (120, f32(0.001))]
    assert scalars["val_accuracy"] == [(120, f32(0.88))]


def test_tensorboard_purge_step_drops_scalars_after_the_resumed_checkpoint(tmp_path):
    # The interrupted run: loss at steps 0..9, one validation at step 8, then killed;
    # its last checkpoint was at step 5.
    first = TensorBoardLogger(tmp_path / "tb")
    for step in range(10):
        first.log_scalars(step, {"loss": float(step)})
    first.log_scalars(8, {"val_loss": 8.5})
    first.close()
    # Event files are read in name order, and names start with the creation second; the
    # resumed run is created in the same second here, so date the first file a second
    # earlier, as it would be in real life.
    (old,) = (tmp_path / "tb").iterdir()
    parts = old.name.split(".")  # events.out.tfevents.<seconds>.<host>.<pid>.<n>
    parts[3] = f"{int(parts[3]) - 1:010d}"
    old.rename(old.with_name(".".join(parts)))

    resumed = TensorBoardLogger(tmp_path / "tb", purge_step=5)
    for step in (5, 6):
        resumed.log_scalars(step, {"loss": 100.0 + step})
    resumed.close()

    scalars = read_scalars(tmp_path / "tb")
    assert scalars["loss"] == [(s, float(s)) for s in range(5)] + [(5, 105.0), (6, 106.0)]
    assert "val_loss" not in scalars  # written after the checkpoint by the lost run


def test_logger_rejects_bad_steps_and_use_after_close(tmp_path):
    logger = TensorBoardLogger(tmp_path / "tb")
    with pytest.raises(TypeError, match="step must be an int"):
        logger.log_scalars(1.0, {"loss": 1.0})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="step must be >= 0"):
        logger.log_scalars(-1, {"loss": 1.0})
    with pytest.raises(TypeError, match="scalar names must be str"):
        logger.log_scalars(1, {3: 1.0})  # type: ignore[dict-item]
    logger.close()
    with pytest.raises(ValueError, match="closed"):
        logger.log_scalars(1, {"loss": 1.0})
    with pytest.raises(ValueError, match="step must be >= 0"):
        TensorBoardLogger(tmp_path / "tb2", purge_step=-3)


# --- make_loggers ----------------------------------------------------------------------


def test_make_loggers_tensorboard_into_out_tb_by_default(tmp_path):
    loggers = make_loggers({"csv": True, "plots": False}, tmp_path, run_config={}, purge_step=None)
    assert len(loggers) == 1 and isinstance(loggers[0], TensorBoardLogger)
    loggers[0].log_scalars(1, {"loss": 0.5})
    loggers[0].close()
    assert read_scalars(tmp_path / "tb") == {"loss": [(1, 0.5)]}
    assert make_loggers({"tensorboard": False}, tmp_path, run_config=None, purge_step=None) == []


@pytest.mark.parametrize(
    ("log_cfg", "message"),
    [
        ({"tensorboard": "yes"}, "log.tensorboard: expected true/false"),
        ({"tensorboard": False, "wandb": "proj"}, "log.wandb: expected a mapping"),
        ({"tensorboard": False, "wandb": {"mode": "offline"}}, "log.wandb.project: required"),
        ({"tensorboard": False, "wandb": {"project": "p", "entity": "x"}}, "log.wandb.entity"),
        ({"tensorboard": False, "mlflow": {"uri": "sqlite:///x.db"}}, "log.mlflow.uri: unknown"),
    ],
)
def test_make_loggers_rejects_bad_sections(tmp_path, log_cfg, message):
    with pytest.raises(ValueError, match=message):
        make_loggers(log_cfg, tmp_path, run_config=None, purge_step=None)
    assert not (tmp_path / "tb").exists()


def test_make_loggers_needs_a_mapping(tmp_path):
    with pytest.raises(TypeError, match="log config must be a mapping"):
        make_loggers([("tensorboard", True)], tmp_path, run_config=None, purge_step=None)  # type: ignore[arg-type]


# --- missing extras (always tested) ------------------------------------------------------


def test_wandb_missing_extra_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "wandb", None)  # makes `import wandb` fail
    with pytest.raises(MissingExtraError, match=r"pip install 'purestep\[wandb\]'") as info:
        lg.WandbLogger("proj", dir=tmp_path)
    assert isinstance(info.value, ValueError)


def test_mlflow_missing_extra_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'purestep\[mlflow\]'"):
        lg.MLflowLogger(f"sqlite:///{tmp_path / 'x.db'}")


def test_make_loggers_missing_extra_closes_what_it_opened(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "wandb", None)
    closed = []
    original = TensorBoardLogger.close

    def close(self):
        closed.append(self.log_dir)
        original(self)

    monkeypatch.setattr(TensorBoardLogger, "close", close)
    with pytest.raises(MissingExtraError, match="purestep.wandb"):
        make_loggers({"wandb": {"project": "p"}}, tmp_path, run_config=None, purge_step=None)
    assert closed == [tmp_path / "tb"]


def test_extra_arguments_are_checked_before_the_import(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(ValueError, match="wandb mode must be one of"):
        lg.WandbLogger("proj", mode="offlne", dir=tmp_path)
    with pytest.raises(ValueError, match="mlflow tracking_uri must be a non-empty string"):
        lg.MLflowLogger("")


# --- W&B and MLflow for real (skipped without the extras) ------------------------------


def _wandb_records(path: Path) -> Iterator[Any]:
    """The protobuf records of an offline run's ``.wandb`` file.

    wandb ships no reader for it, so this follows its layout: a 7-byte header (``:W&B``,
    magic, version) then LevelDB-log framing (32 KiB blocks; each chunk has a 4-byte CRC,
    a 2-byte little-endian length and a type: 1 full, 2 first, 3 middle, 4 last).
    """
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, chunks = 7, 32768, []
    while pos + 7 <= len(data):
        left = block - pos % block
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7]) if left >= 7 else (0, 0, 0)
        if kind == 0:  # block trailer padding
            pos += left
            continue
        chunks.append(data[pos + 7 : pos + 7 + length])
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(chunks))
            chunks = []
            yield record


def _wandb_history(run_dir: Path) -> list[dict[str, Any]]:
    (path,) = run_dir.glob("run-*.wandb")
    rows = []
    for record in _wandb_records(path):
        if record.WhichOneof("record_type") == "history":
            row = {
                i.key or "/".join(i.nested_key): json.loads(i.value_json)
                for i in record.history.item
            }
            rows.append({k: v for k, v in row.items() if not k.startswith("_") or k == "_step"})
    return rows


@pytest.fixture
def wandb_offline(monkeypatch, tmp_path):
    wandb = pytest.importorskip("wandb", reason="the wandb extra is not installed")
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    return wandb


def test_wandb_offline_logs_scalars_and_resumes(wandb_offline, tmp_path):
    loggers = make_loggers(
        {"tensorboard": False, "wandb": {"project": "purestep-test", "name": "a", "dir": None}},
        tmp_path,
        run_config={"optimizer": {"name": "adam", "lr": 1e-3}},
        purge_step=None,
    )
    (logger,) = loggers
    assert isinstance(logger, lg.WandbLogger) and isinstance(logger, Logger)
    logger.log_scalars(40, {"train/loss_running": 0.7, "lr": 0.001})
    logger.log_scalars(120, epoch_scalars(RECORD))
    logger.close()
    # wandb's service writes the run file after finish() returns; teardown waits for it.
    wandb_offline.teardown()
    (run_dir,) = (tmp_path / "wandb").glob(f"offline-run-*-{logger.run_id}")
    history = _wandb_history(run_dir)
    assert history[0] == {"_step": 40, "train/loss_running": 0.7, "lr": 0.001}
    assert history[1] == {"_step": 120, **epoch_scalars(RECORD)}

    resumed = lg.WandbLogger("purestep-test", dir=tmp_path, resume_id=logger.run_id)
    assert resumed.run_id == logger.run_id
    resumed.log_scalars(160, {"loss": 0.3})
    resumed.close()
    wandb_offline.teardown()
    # Offline, a resumed run is a second directory for the same id (`wandb sync` joins them).
    (resumed_dir,) = set((tmp_path / "wandb").glob(f"offline-run-*-{logger.run_id}*")) - {run_dir}
    assert _wandb_history(resumed_dir) == [{"_step": 160, "loss": 0.3}]


def _quiet_mlflow_store():
    """MLflow's SQLite store trips a SQLAlchemy 2.1 deprecation warning inside MLflow."""
    sqlalchemy = pytest.importorskip("sqlalchemy")
    warnings.filterwarnings("ignore", category=sqlalchemy.exc.SADeprecationWarning)


def test_mlflow_sqlite_logs_scalars_params_and_resumes(tmp_path):
    pytest.importorskip("mlflow", reason="the mlflow extra is not installed")
    from mlflow.tracking import MlflowClient

    with warnings.catch_warnings():
        _quiet_mlflow_store()
        uri = f"sqlite:///{tmp_path / 'mlflow.db'}"  # make_loggers' default store
        (logger,) = make_loggers(
            {
                "tensorboard": False,
                "mlflow": {"tracking_uri": None, "run_name": "a", "experiment": None},
            },
            tmp_path,
            run_config={"optimizer": {"name": "adam", "lr": 1e-3}, "epochs": 2},
            purge_step=None,
        )
        assert isinstance(logger, lg.MLflowLogger)
        logger.log_scalars(40, {"train/loss_running": 0.7})
        logger.log_scalars(120, epoch_scalars(RECORD))
        logger.close()

        client = MlflowClient(tracking_uri=uri)
        run = client.get_run(logger.run_id)
        assert run.info.status == "FINISHED" and run.info.run_name == "a"
        assert client.get_experiment(run.info.experiment_id).name == "purestep"
        assert run.data.params == {"optimizer.name": "adam", "optimizer.lr": "0.001", "epochs": "2"}
        assert run.data.metrics == epoch_scalars(RECORD) | {"train/loss_running": 0.7}
        history = client.get_metric_history(logger.run_id, "train/loss_running")
        assert [(m.step, m.value) for m in history] == [(40, 0.7)]

        resumed = lg.MLflowLogger(uri, resume_run_id=logger.run_id, config={"epochs": 3})
        assert client.get_run(logger.run_id).info.status == "RUNNING"
        resumed.log_scalars(160, {"loss": 0.3})
        resumed.close()
        loss = client.get_metric_history(logger.run_id, "loss")
        assert [(m.step, m.value) for m in loss] == [(120, 0.41), (160, 0.3)]
        assert client.get_run(logger.run_id).data.params["epochs"] == "2"  # params are fixed


def test_mlflow_file_store(monkeypatch, tmp_path):
    pytest.importorskip("mlflow", reason="the mlflow extra is not installed")
    from mlflow.tracking import MlflowClient

    # MLflow 3.x refuses the file store unless this is set; older releases ignore it.
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.chdir(tmp_path)
    logger = lg.MLflowLogger("file:./mlruns", experiment="exp")
    logger.log_scalars(3, {"loss": 0.5})
    logger.close()
    assert (tmp_path / "mlruns").is_dir()
    client = MlflowClient(tracking_uri="file:./mlruns")
    assert [(m.step, m.value) for m in client.get_metric_history(logger.run_id, "loss")] == [
        (3, 0.5)
    ]


# --- history files ---------------------------------------------------------------------

HISTORY = [
    {"epoch": 1, "step": 40, "loss": 0.1 + 0.2, "accuracy": 0.5, "lr": 0.001, "seconds": 1.5},
    {
        "step": 80,  # keys in another order: epoch and step still lead the CSV
        "epoch": 2,
        "loss": 5e-324,
        "val_loss": 1.7976931348623157e308,
        "accuracy": -0.0,
        "val_accuracy": None,
        "lr": 0.0005,
        "val_confusion_matrix": [[40, 2], [3, 55]],
    },
    {"epoch": 3, "step": 120, "loss": float("nan"), "val_loss": float("inf"), "lr": 2.5e-4},
]


def _same(a: Any, b: Any) -> bool:
    """Equal, bit for bit for floats (NaN equals NaN, -0.0 differs from 0.0)."""
    if isinstance(a, float) and isinstance(b, float):
        return struct.pack("<d", a) == struct.pack("<d", b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def _read_csv(out: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(out / "history.csv", newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], [dict(zip(rows[0], row, strict=True)) for row in rows[1:]]


def test_history_json_round_trips_exactly(tmp_path):
    write_history(HISTORY, tmp_path)
    back = read_history(tmp_path)
    assert _same(back, HISTORY)
    assert list(back[1]) == list(HISTORY[1])  # key order kept


def test_history_csv_columns_and_cells_agree_with_json(tmp_path):
    write_history(HISTORY, tmp_path)
    header, rows = _read_csv(tmp_path)
    assert header == [
        "epoch",
        "step",
        "loss",
        "accuracy",
        "lr",
        "seconds",
        "val_loss",
        "val_accuracy",
    ]
    assert len(rows) == len(HISTORY)
    for row, record in zip(rows, read_history(tmp_path), strict=True):
        for key in header:
            value = record.get(key)
            if value is None:
                assert row[key] == ""
            elif isinstance(value, int):
                assert int(row[key]) == value
            else:
                assert _same(float(row[key]), value)
    assert rows[1]["seconds"] == "" and rows[2]["accuracy"] == ""


finite_floats = st.floats(allow_nan=False)


@settings(max_examples=40)
@given(
    st.lists(
        st.fixed_dictionaries(
            {"loss": finite_floats | st.none(), "lr": finite_floats},
            optional={"val_loss": finite_floats, "val_accuracy": finite_floats | st.none()},
        ),
        max_size=6,
    )
)
def test_history_files_round_trip_any_floats(records):
    history = [{"epoch": i + 1, "step": 10 * (i + 1), **r} for i, r in enumerate(records)]
    with tempfile.TemporaryDirectory() as tmp:
        write_history(history, tmp)
        assert _same(read_history(tmp), history)
        _header, rows = _read_csv(Path(tmp))
        for row, record in zip(rows, history, strict=True):
            for key, cell in row.items():
                value = record.get(key)
                assert cell == "" if value is None else _same(type(value)(cell), value)


def test_failed_history_write_leaves_the_previous_files(tmp_path):
    write_history(HISTORY[:1], tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    bad = [*HISTORY[:1], {"epoch": 2, "step": 80, "loss": torch.tensor(0.5)}]
    with pytest.raises(TypeError, match=r"history\[1\]\['loss'\] is a Tensor"):
        write_history(bad, tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_write_atomic_keeps_the_old_file_when_interrupted(monkeypatch, tmp_path):
    target = tmp_path / "history.json"
    target.write_text("old")

    def crash(fd):
        raise OSError("disk gone")  # the kill/crash between writing and renaming

    monkeypatch.setattr(lg.os, "fsync", crash)
    with pytest.raises(OSError, match="disk gone"):
        write_atomic(target, b"new")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["history.json"]  # no temp file left behind
    monkeypatch.undo()
    write_atomic(target, b"new")
    assert target.read_text() == "new" and os.listdir(tmp_path) == ["history.json"]


@pytest.mark.parametrize(
    ("history", "error", "message"),
    [
        ({"epoch": 1}, TypeError, "history must be a list"),
        ([[1, 2]], TypeError, r"history\[0\] must be a dict"),
        ([{1: 0.5}], TypeError, r"history\[0\]: keys must be str"),
        ([{"m": [[1, object()]]}], TypeError, r"history\[0\]\['m'\]\[0\]\[1\] is a object"),
    ],
)
def test_write_history_rejects_what_json_cannot_hold(tmp_path, history, error, message):
    with pytest.raises(error, match=message):
        write_history(history, tmp_path)
    assert not (tmp_path / "history.json").exists()


def test_write_history_csv_false_writes_json_only(tmp_path):
    write_history(HISTORY, tmp_path / "run", csv=False)
    assert os.listdir(tmp_path / "run") == ["history.json"]


def test_read_history_errors_name_the_file(tmp_path):
    (tmp_path / "history.json").write_text('[{"epoch": 1}')
    with pytest.raises(ValueError, match=r"history\.json: not valid JSON"):
        read_history(tmp_path)
    (tmp_path / "history.json").write_text('{"epoch": 1}')
    with pytest.raises(ValueError, match="expected a JSON list of objects"):
        read_history(tmp_path)
    with pytest.raises(FileNotFoundError):
        read_history(tmp_path / "missing")


# --- progress --------------------------------------------------------------------------


def _drive(progress: Progress) -> None:
    progress.start_epoch(1, 10)
    progress.update(5, loss=0.5)
    progress.write("saved checkpoint step-00000005")
    progress.update(5, loss=0.4)
    progress.end_epoch({"loss": 0.41, "val_loss": None})
    progress.start_epoch(2, 10, initial=3)  # resumed mid-epoch
    progress.update(7, loss=0.3)
    progress.end_epoch({"loss": 0.3, "val_accuracy": 0.88})
    progress.close()


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_disabled_prints_only_messages(capsys):
    stream = io.StringIO()
    progress = Progress(False, total_epochs=2, file=stream)
    _drive(progress)
    assert stream.getvalue() == ""
    out, err = capsys.readouterr()
    assert out == "saved checkpoint step-00000005\n" and err == ""


def test_progress_off_when_not_a_terminal(capsys):
    assert not Progress(total_epochs=2, file=io.StringIO()).enabled
    assert Progress(total_epochs=2, file=_Terminal()).enabled
    progress = Progress(total_epochs=1)  # sys.stderr, captured here: not a TTY
    progress.start_epoch(1, 3)
    progress.update(3, loss=0.5)
    progress.end_epoch({"loss": 0.5})
    progress.close()
    assert capsys.readouterr() == ("", "")


def test_progress_enabled_draws_bars(capsys):
    stream = io.StringIO()
    _drive(Progress(True, total_epochs=2, file=stream))
    text = stream.getvalue()
    assert "epochs:" in text and "2/2" in text  # the epoch bar, finished
    assert "epoch 1/2:" in text and "0/10" in text  # a batch bar
    assert "3/10" in text  # the resumed epoch starts at its initial batch
    assert "loss=0.3" in text  # the last summary, as the epoch bar's postfix
    out = capsys.readouterr().out
    assert "saved checkpoint step-00000005\n" in out
    assert "epoch 1/2  loss 0.41\n" in out and "epoch 2/2  loss 0.3  val_accuracy 0.88\n" in out


def test_progress_rejects_misuse():
    progress = Progress(False, total_epochs=2)
    with pytest.raises(ValueError, match="before start_epoch"):
        progress.update(1)
    with pytest.raises(ValueError, match="1-based"):
        progress.start_epoch(0, 10)
    with pytest.raises(ValueError, match=r"initial \(11\) exceeds total_batches \(10\)"):
        progress.start_epoch(1, 10, initial=11)
    with pytest.raises(TypeError, match="total_epochs must be an int"):
        Progress(False, total_epochs=2.0)  # type: ignore[arg-type]
    progress.start_epoch(1, None)  # unknown length (an iterable without len) is fine
    with pytest.raises(ValueError, match="n must be an int >= 0"):
        progress.update(-1)


def test_nan_loss_is_still_a_scalar_for_trackers(tmp_path):
    logger = TensorBoardLogger(tmp_path / "tb")
    logger.log_scalars(1, {"loss": float("nan")})
    logger.close()
    ((step, value),) = read_scalars(tmp_path / "tb")["loss"]
    assert step == 1 and math.isnan(value)
