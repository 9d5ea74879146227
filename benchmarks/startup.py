"""Start-up and end-to-end times (issue 20): what a user waits for before and around the
steady-state step.

    .venv/bin/python benchmarks/startup.py [--repeats 5] [--configs examples/sprites.yaml,...]

Part 1, start-up (median of ``--repeats`` fresh processes): ``purestep --help``, ``python
-c "import purestep"``, ``import torch``, and ``import purestep`` + first use of the core
(which imports torch). Part 2, end to end: ``purestep train`` of each config with
``train.compile`` auto (the default), false and true, each in a fresh process with an empty
inductor cache directory (cold: what a first-time user sees), the wall time of the whole
command. Run it on a quiet machine (the load is printed); nothing here is a test.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _time(command: list[str], env: dict[str, str] | None = None, cwd: Path = REPO) -> float:
    start = time.perf_counter()
    out = subprocess.run(
        command, env={**os.environ, **(env or {})}, cwd=cwd, capture_output=True, text=True
    )
    seconds = time.perf_counter() - start
    if out.returncode != 0:
        raise RuntimeError(f"{command}: {out.stderr[-1500:]}")
    return seconds


def startup(repeats: int) -> list[tuple[str, float]]:
    py = sys.executable
    cases = [
        ("purestep --help", [str(BIN / "purestep"), "--help"]),
        ("purestep train --help", [str(BIN / "purestep"), "train", "--help"]),
        ('python -c "import purestep"', [py, "-c", "import purestep"]),
        ('python -c "import torch"', [py, "-c", "import torch"]),
        (
            "import purestep; ps.TrainState (loads torch)",
            [py, "-c", "import purestep as ps; ps.TrainState"],
        ),
    ]
    rows = []
    for label, command in cases:
        _time(command)  # warm the page cache
        rows.append((label, statistics.median(_time(command) for _ in range(repeats))))
    return rows


def end_to_end(configs: list[str]) -> list[tuple[str, str, float, str]]:
    rows = []
    for config in configs:
        for setting in ("auto", "false", "true"):
            with tempfile.TemporaryDirectory(prefix="purestep-e2e-") as tmp:
                env = {"TORCHINDUCTOR_CACHE_DIR": str(Path(tmp, "inductor")),
                       "XDG_CACHE_HOME": str(Path(tmp, "cache"))}  # fmt: skip
                command = [str(BIN / "purestep"), "train", "--config", config, "--out",
                           str(Path(tmp, "run")), "--no-plots", "--set",
                           f"train.compile={setting}", "--set", "log.progress=false"]  # fmt: skip
                start = time.perf_counter()
                out = subprocess.run(
                    command, env={**os.environ, **env}, cwd=REPO, capture_output=True, text=True
                )
                seconds = time.perf_counter() - start
                if out.returncode != 0:
                    raise RuntimeError(out.stderr[-1500:])
                chose = next(
                    (line.split("-> ", 1)[1].split(":")[0] for line in out.stdout.splitlines()
                     if line.startswith("train.compile: auto")),
                    "",
                )  # fmt: skip
                rows.append((config, setting, seconds, chose))
            shutil.rmtree(Path(tmp), ignore_errors=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--configs",
        default="examples/house_prices.yaml,examples/digits.yaml,examples/sprites.yaml",
    )
    parser.add_argument("--skip-e2e", action="store_true")
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    print("\n| start-up | median s |\n|---|---|")
    for label, seconds in startup(args.repeats):
        print(f"| `{label}` | {seconds:.2f} |")
    if args.skip_e2e:
        return
    print("\n| config | train.compile | end to end s | auto chose |\n|---|---|---|---|")
    for config, setting, seconds, chose in end_to_end(args.configs.split(",")):
        print(f"| {config} | {setting} | {seconds:.1f} | {chose} |")
    print(f"\nload average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
