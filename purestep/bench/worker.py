"""The worker process of ``purestep bench --isolate``: one variant, built and timed here.

``python -m purestep.bench.worker --threads N --device D`` reads JSON requests, one per
line, on stdin and answers each with one JSON line on stdout (see
``purestep.bench.isolate``): ``prepare`` (with a spec), ``time`` (with a step count),
``reset_graphs``, ``graphs``, ``quit``. Anything else that writes to stdout (a library's
print) is sent to stderr, so the protocol stream stays clean.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from typing import IO, Any

import torch

from purestep.bench.timing import InProcess, Runner, Spec
from purestep.bench.variants import Unavailable
from purestep.core.allocator import retain_freed_cpu_memory


def _answer(stream: IO[str], payload: dict[str, Any]) -> None:
    stream.write(json.dumps(payload) + "\n")
    stream.flush()


def serve(requests: IO[str], answers: IO[str], device: torch.device) -> None:
    """Answer requests until ``quit`` or the end of ``requests``."""
    runner: Runner | None = None
    for line in requests:
        request = json.loads(line)
        op = request.get("op")
        try:
            if op == "quit":
                _answer(answers, {"ok": True})
                return
            if op == "prepare":
                runner = InProcess(Spec(**request["spec"]), device)
                prepared = runner.prepare()
                runner.reset_graphs()  # count only what timing compiles
                _answer(answers, {"prepared": asdict(prepared)})
                continue
            if runner is None:
                raise RuntimeError(f"{op!r} before prepare")
            if op == "time":
                _answer(answers, {"ms": runner.time(int(request["steps"]))})
            elif op == "reset_graphs":
                runner.reset_graphs()
                _answer(answers, {"ok": True})
            elif op == "graphs":
                _answer(answers, {"graphs": runner.graphs()})
            else:
                raise ValueError(f"unknown op {op!r}")
        except Unavailable as why:
            _answer(answers, {"unavailable": str(why)})
        except Exception as err:  # reported to the parent, which records the variant failed
            first = (str(err).splitlines() or [""])[0][:200]
            _answer(answers, {"error": f"{type(err).__name__}: {first}"})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m purestep.bench.worker")
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-retain-memory", action="store_true")
    args = parser.parse_args(argv)
    # The protocol keeps the real stdout; everything printed goes to stderr.
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cpu" and not args.no_retain_memory:
        retain_freed_cpu_memory()
    serve(sys.stdin, answers, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
