"""``ps.sweep`` / ``purestep sweep``: every member is its config's solo run, groups share
one step (one compiled graph), stopped members freeze, and the output contract."""

from __future__ import annotations

import csv
import json
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

from purestep.cli import main
from purestep.parity.compare import COMPILED_ATOL, COMPILED_RTOL
from purestep.pytree import tree_bitwise_equal, tree_named_leaves
from purestep.train._grid import member_config, parse_axis, parse_seeds, split_values
from purestep.train._members import _build, _plan
from purestep.train.checkpoint import load_checkpoint
from purestep.train.config import ConfigError, load_config
from purestep.train.run import build_experiment, train_run
from purestep.train.sweep import sweep

# Dropout (random draws), metrics, a per-batch scheduler and early stopping: everything a
# member must reproduce to be its solo run.
CONFIG = """
model: {name: mlp, hidden: [16], out_features: 1, dropout: 0.2}
data: {name: sprites, n_train: 96, n_val: 64, n_test: 32, batch_size: 32}
loss: bce_with_logits
optimizer: {name: Adam, lr: 1e-2}
scheduler: {name: CosineAnnealingLR, T_max: 9}
metrics: [accuracy]
early_stopping: {monitor: val_loss, patience: 2}
train: {epochs: 3, compile: false}
log: {progress: false, tensorboard: false, plots: false}
"""


def _config(tmp_path: Path, text: str = CONFIG, name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def _quiet(*args: object) -> None:
    del args


def _no_seconds(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in history]


def _solo(cfg_path: Path, settings: dict, out: Path, **overrides: object):
    raw = yaml.safe_load(cfg_path.read_text())
    cfg = member_config(raw, {**settings, **overrides})
    return train_run(cfg, out, print_fn=_quiet, plots=False)


def test_members_are_their_solo_runs_bitwise(tmp_path):
    """lr x weight_decay x seed, eager: each member's final state and history are bitwise
    those of `purestep train` on its config (dropout masks included)."""
    cfg = _config(tmp_path)
    grid = {"optimizer.lr": [1e-3, 3e-2], "optimizer.weight_decay": [0.0, 0.01]}
    result = sweep(cfg, grid, seeds=[0, 1], out=tmp_path / "sweep", print_fn=None)
    assert len(result.members) == 8
    # weight_decay 0 vs 0.01 switches the rule's decay term on: two groups of four.
    assert sorted(len(g.members) for g in result.groups) == [4, 4]
    assert all(g.plan == "sequential" and g.exact == "bitwise" for g in result.groups)
    assert all(g.random for g in result.groups)  # the dropout draws were seen
    for m, settings in zip(result.members, result.settings, strict=True):
        solo = _solo(cfg, settings, tmp_path / f"solo{m.index}")
        assert m.status == "finished"
        assert tree_bitwise_equal(m.state, solo.state), settings
        assert _no_seconds(m.history) == solo.history.without_timing(), settings
    # The members really differ (the test would pass vacuously otherwise).
    finals = {m.history[-1]["val_loss"] for m in result.members}
    assert len(finals) == 8


def test_best_run_directory_reproduces_with_purestep_train(tmp_path, capsys):
    """`purestep sweep` end to end: sweep.csv/json and plot, best/ is a run directory that
    `purestep evaluate` reads and `purestep train --config best/config.yaml` reproduces."""
    cfg = _config(tmp_path)
    out = tmp_path / "sweep"
    argv = ["sweep", "--config", str(cfg), "--set", "optimizer.lr=1e-3,1e-2,3e-2"]
    argv += ["--seeds", "0,1", "--out", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "group 1/1: 6 members, sequential (eager)" in text
    with (out / "sweep.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["member"]) for r in rows] == list(range(6))
    assert [(float(r["optimizer.lr"]), int(r["train.seed"])) for r in rows] == [
        (lr, s) for lr in (1e-3, 1e-2, 3e-2) for s in (0, 1)
    ]
    for column in ("status", "loss", "val_loss", "accuracy", "val_accuracy", "best_epoch"):
        assert column in rows[0]
    report = json.loads((out / "sweep.json").read_text())
    best = report["best"]
    values = [float(r["best_val_loss"]) for r in rows]
    assert values[best] == min(values)
    assert len(report["members"][best]["history"]) == int(rows[best]["epochs"])
    # best/: the run directory contract.
    run = out / "best"
    best_cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert best_cfg["optimizer"]["lr"] == float(rows[best]["optimizer.lr"])
    assert best_cfg["train"]["seed"] == int(rows[best]["train.seed"])
    history = json.loads((run / "history.json").read_text())
    assert history == report["members"][best]["history"]
    assert (run / "history.csv").is_file() and (run / "test_metrics.json").is_file()
    assert main(["evaluate", "--checkpoint", str(run), "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    best_epoch = int(rows[best]["best_epoch"])
    assert evaluated["loss"] == history[best_epoch - 1]["val_loss"]
    # Trained alone from best/config.yaml: the same checkpoints, bitwise.
    solo = tmp_path / "solo"
    assert main(["train", "--config", str(run / "config.yaml"), "--out", str(solo)]) == 0
    exp = build_experiment(load_config(run / "config.yaml"), compile=False)
    for pointer in ("latest", "best"):
        a = load_checkpoint(run / "checkpoints" / pointer, exp.train_step)
        b = load_checkpoint(solo / "checkpoints" / pointer, exp.train_step)
        assert a.path.name == b.path.name
        assert tree_bitwise_equal(a.state, b.state)
        assert _no_seconds(a.loop.history) == _no_seconds(b.loop.history)
    # ... and the same test figures, of the same (best) checkpoint.
    tested = json.loads((run / "test_metrics.json").read_text())
    assert tested == json.loads((solo / "test_metrics.json").read_text())
    assert tested["checkpoint"] == (run / "checkpoints" / "best").read_text().strip()


def test_structure_changing_values_split_groups(tmp_path):
    """Optimizer name, amsgrad and model sizes change the step or the state: one group per
    value; lr and seeds never split."""
    cfg = _config(tmp_path)
    grid = {
        "optimizer.name": ["SGD", "Adam"],
        "model.hidden": [[8], [16]],
        "optimizer.lr": [1e-3, 1e-2],
    }
    result = sweep(cfg, grid, epochs=1, out=None, print_fn=None)
    assert len(result.groups) == 4
    for g in result.groups:
        names = {result.settings[i]["optimizer.name"] for i in g.members}
        hidden = {json.dumps(result.settings[i]["model.hidden"]) for i in g.members}
        assert len(names) == 1 and len(hidden) == 1 and len(g.members) == 2
    amsgrad = sweep(cfg, {"optimizer.amsgrad": [False, True]}, epochs=1, print_fn=None)
    assert len(amsgrad.groups) == 2


def test_early_stopped_member_freezes_while_others_go_on(tmp_path):
    """lr 0 never improves: that member early-stops after `patience` epochs and keeps
    that state; the other trains all epochs; both equal their solo runs."""
    cfg = _config(tmp_path)
    result = sweep(cfg, {"optimizer.lr": [0.0, 1e-2]}, epochs=5, out=None, print_fn=None)
    stopped, trained = result.members
    assert stopped.status == "early_stopping" and len(stopped.history) == 3
    assert trained.status == "finished" and len(trained.history) == 5
    assert stopped.last is not None and stopped.last[1].step == 3 * 3
    for m, settings in zip(result.members, result.settings, strict=True):
        solo = _solo(cfg, settings, tmp_path / f"solo{m.index}", **{"train.epochs": 5})
        assert tree_bitwise_equal(m.state, solo.state)
        assert _no_seconds(m.history) == solo.history.without_timing()


# SGD: Adam turns a gradient that is zero up to cancellation noise into a step of up to
# lr (m/sqrt(v) ~ +-1), so even the solo compiled step differs from the eager one by
# ~lr*1e-3 in such weights (compare_compiled reports it; 1.7e-5 here at lr 1e-2).
COMPILED = """
model: {name: mlp, hidden: [16], out_features: 1}
data: {name: sprites, n_train: 64, n_val: 64, batch_size: 32}
loss: bce_with_logits
optimizer: {name: SGD, lr: 1e-2, momentum: 0.9}
metrics: [accuracy]
train: {epochs: 3, compile: true}
log: {progress: false, tensorboard: false, plots: false}
"""


def test_vmapped_group_one_graph_frozen_member_and_tolerance(tmp_path):
    """Compiled, chunk 4 over lr x data.seed (each member its own batches): one graph
    (no recompile after the first epoch), a member stopped by the callback keeps the state
    it had then while the others go on, and after one epoch (two steps) each member is
    within the compiled step's per-step tolerance of its solo eager run (what
    `compare_compiled` measures)."""
    cfg = _config(tmp_path, COMPILED)
    seen: dict[int, dict] = {}

    def callback(member, record, state):
        seen.setdefault(member.index, {})[record["epoch"]] = state
        if record["epoch"] == 1 and member.index == 3:
            torch.compiler.set_stance("fail_on_recompile")  # warm-up over: one graph
        return member.index == 0 and record["epoch"] == 1

    try:
        result = sweep(
            cfg,
            {"optimizer.lr": [1e-3, 1e-2], "data.seed": [0, 1]},
            chunk=4,
            out=None,
            callback=callback,
            print_fn=None,
        )
    finally:
        torch.compiler.set_stance("default")
    (group,) = result.groups
    assert group.plan == "vmap" and group.chunk == 4 and group.compiled
    assert group.exact == "compiled per-step tolerance"
    first = result.members[0]
    assert first.status == "stopped" and len(first.history) == 1
    assert tree_bitwise_equal(first.state, seen[0][1])
    assert all(len(m.history) == 3 and m.status == "finished" for m in result.members[1:])
    assert not tree_bitwise_equal(result.members[1].state, seen[1][1])  # it went on
    for m, settings in zip(result.members, result.settings, strict=True):
        overrides = {"train.epochs": 1, "train.compile": False}
        solo = _solo(cfg, settings, tmp_path / f"solo{m.index}", **overrides)
        for (name, a), (_, b) in zip(
            tree_named_leaves(seen[m.index][1].params),
            tree_named_leaves(solo.state.params),
            strict=True,
        ):
            torch.testing.assert_close(a, b, rtol=COMPILED_RTOL, atol=COMPILED_ATOL, msg=name)
        assert m.history[0]["val_loss"] == pytest.approx(solo.history["val_loss"][0], rel=1e-5)
        # Each member kept its own random key (the chunk shares one generator).
        assert torch.equal(m.state.rng, solo.state.rng)


def test_auto_plan_says_why(tmp_path):
    """auto: eager -> sequential (bitwise); a step that draws random numbers ->
    sequential; compiled without draws -> a timed probe decides."""
    raw = yaml.safe_load(CONFIG)
    eager = [member_config(raw, {"optimizer.lr": lr}) for lr in (1e-3, 1e-2)]
    (group,) = _build(eager, None)
    plan, chunk, reason, probe, random = _plan(group, "auto", None)
    assert (plan, chunk, probe, random) == ("sequential", 1, None, True)
    assert "random" in reason
    raw_det = yaml.safe_load(COMPILED)
    (group,) = _build([member_config(raw_det, {"optimizer.lr": lr}) for lr in (1e-3, 1e-2)], None)
    plan, chunk, reason, probe, random = _plan(group, "auto", None)
    assert not random
    assert probe is not None and set(probe) == {"sequential", "vmap"}
    assert plan in ("vmap", "sequential") and "probe" in reason
    assert chunk == (2 if plan == "vmap" else 1)
    eager_det = [member_config(raw_det, {"train.compile": False})] * 2
    (group,) = _build(eager_det, None)
    plan, _, reason, probe, _ = _plan(group, "auto", None)
    assert plan == "sequential" and probe is None and "bitwise" in reason


def test_grid_values_and_seeds_parse():
    assert split_values("1e-3,[32,32],'a,b',{x: 1, y: 2}", "k") == [
        "1e-3",
        "[32,32]",
        "'a,b'",
        "{x: 1, y: 2}",
    ]
    assert parse_axis("model.hidden=[32,32],[64]") == ("model.hidden", [[32, 32], [64]])
    assert parse_axis("optimizer.lr=1e-4,1e-3") == ("optimizer.lr", [1e-4, 1e-3])
    assert parse_seeds("0,2-4") == [0, 2, 3, 4]


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--set", "optimizer.lr="], "optimizer.lr"),
        (["--set", "optimizer.lr=1e-3,,1e-2"], "optimizer.lr"),
        (["--set", "model.hidden=[32,32"], "model.hidden"),
        (["--set", "optimizer.lrr=1e-3,1e-2"], "lrr"),
        (["--set", "optimzer.lr=1e-3,1e-2"], "optimzer"),
        (["--set", "optimizer.betas=[0.9,0.99],[0.9]"], "optimizer.betas"),
        (["--set", "optimizer.lr=-1,1e-2"], "optimizer"),
        (["--set", "optimizer.lr=1e-3", "--set", "optimizer.lr=1e-2"], "optimizer.lr"),
        (["--seeds", "0,,1"], "--seeds"),
        (["--seeds", "1,1"], "--seeds"),
        (["--seeds", "0", "--set", "train.seed=1,2"], "train.seed"),
    ],
)
def test_bad_specs_exit_2_naming_the_key(tmp_path, capsys, argv, named):
    cfg = _config(tmp_path)
    out = tmp_path / "out"
    code = main(["sweep", "--config", str(cfg), "--out", str(out), *argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert named in err
    assert not out.exists()  # refused before anything was written


def test_bad_chunk_and_existing_output(tmp_path, capsys):
    cfg = _config(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["sweep", "--config", str(cfg), "--chunk", "0"])
    assert exit_info.value.code == 2
    assert "--chunk" in capsys.readouterr().err
    out = tmp_path / "out"
    sweep(cfg, {"optimizer.lr": [1e-2]}, epochs=1, out=out, print_fn=None)
    with pytest.raises(ConfigError, match="already holds a sweep"):
        sweep(cfg, {"optimizer.lr": [1e-2]}, epochs=1, out=out, print_fn=None)
    again = sweep(cfg, {"optimizer.lr": [1e-3]}, epochs=1, out=out, overwrite=True, print_fn=None)
    assert again.best == 0


DIVERGING = """
model: {name: mlp, hidden: [8], out_features: 1}
data: {name: sprites, n_train: 128, n_val: 32, batch_size: 16}
loss: mse
optimizer: {name: SGD, lr: 1e-2}
train: {epochs: 2, compile: false, log_every: 3}
log: {progress: false, tensorboard: false, plots: false}
"""


@pytest.mark.parametrize("policy", ["raise", "stop", "skip"])
def test_a_diverging_member_follows_its_nan_policy_alone(tmp_path, policy):
    """lr 1e4 on an MSE loss overflows within a few steps: under `raise` that member is
    `diverged` with the error its solo run raises, under `stop`/`skip` it ends as its solo
    run does; the other member is untouched and the best."""
    from purestep.train.fit import NonFiniteLossError

    cfg = _config(
        tmp_path, DIVERGING.replace("log_every: 3", f"log_every: 3, nan_policy: {policy}")
    )
    result = sweep(cfg, {"optimizer.lr": [1e-2, 1e4]}, out=tmp_path / "out", print_fn=None)
    good, bad = result.members
    assert result.best == 0 and good.status == "finished"
    solo = _solo(cfg, result.settings[0], tmp_path / "solo0")
    assert tree_bitwise_equal(good.state, solo.state)
    if policy == "raise":
        assert bad.status == "diverged" and bad.state is None
        with pytest.raises(NonFiniteLossError) as err:
            _solo(cfg, result.settings[1], tmp_path / "solo1")
        assert bad.error == str(err.value)
        with (tmp_path / "out" / "sweep.csv").open() as f:
            rows = list(csv.DictReader(f))
        assert rows[1]["status"] == "diverged" and "non-finite" in rows[1]["error"]
        return
    solo = _solo(cfg, result.settings[1], tmp_path / "solo1")
    assert bad.status == ("nan" if policy == "stop" else "finished")
    assert tree_bitwise_equal(bad.state, solo.state)
    assert _no_seconds(bad.history) == solo.history.without_timing()
    if policy == "skip":
        assert sum(r["skipped_steps"] for r in bad.history) > 0


def test_refused_under_a_distributed_launch(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    cfg = _config(tmp_path)
    assert main(["sweep", "--config", str(cfg), "--set", "optimizer.lr=1e-3,1e-2"]) == 2
    assert "purestep sweep does not run under torchrun" in capsys.readouterr().err


def test_a_sweep_killed_while_writing_is_not_finished(tmp_path, monkeypatch):
    """sweep.csv marks a finished sweep, so it is written after best/: a sweep that died
    before that (here: while writing best/) is run again by the same call, not refused."""
    import importlib

    sweep_module = importlib.import_module("purestep.train.sweep")

    cfg = _config(tmp_path)
    out = tmp_path / "out"
    real = sweep_module.write_run

    def dies(*args, **kwargs):
        raise RuntimeError("killed while writing best/")

    monkeypatch.setattr(sweep_module, "write_run", dies)
    with pytest.raises(RuntimeError, match="killed while writing"):
        sweep(cfg, {"optimizer.lr": [1e-2]}, epochs=1, out=out, print_fn=None)
    assert (out / "sweep.json").exists() and not (out / "sweep.csv").exists()
    monkeypatch.setattr(sweep_module, "write_run", real)
    sweep(cfg, {"optimizer.lr": [1e-2]}, epochs=1, out=out, print_fn=None)
    assert (out / "sweep.csv").exists() and (out / "best" / "checkpoints" / "best").exists()
