"""How the cost grows with the work: batch size, and models per vmapped sweep.

``purestep bench --scaling`` adds two studies, each timed as one interleaved group with
the matmul floor of the same shapes:

* batch: W1's model at batch 16, 64, 256 and 1024: the torch eager loop against the
  donated compiled pure step (small batches are overhead-bound, large ones
  compute-bound);
* K: one vmapped compiled step over K = 1, 2, 4, 8, 16 stacked models (same batch for
  all) on W1 (and W2 when the run includes it), per member-step, against one compiled
  model: what a sweep member costs as the sweep grows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from purestep.bench.timing import Spec
from purestep.bench.variants import FLOOR

if TYPE_CHECKING:
    from purestep.bench.runner import Measurement, Session

__all__ = ["SCALING_BATCHES", "SCALING_KS", "SINGLE", "run_scaling"]

SCALING_BATCHES = (16, 64, 256, 1024)
SCALING_KS = (1, 2, 4, 8, 16)
EAGER = "imperative eager"
SINGLE = "functional compiled (donated)"
K_WORKLOADS = ("W1", "W2")


def run_scaling(
    session: Session,
    workloads: Sequence[str],
    *,
    batches: Sequence[int] = SCALING_BATCHES,
    ks: Sequence[int] = SCALING_KS,
) -> list[Measurement]:
    """The batch study on W1 and the K study on W1/W2 among ``workloads`` (W1 if none)."""
    from purestep.bench.runner import time_group

    out: list[Measurement] = []
    for b in batches:
        specs = [Spec("W1", v, batch=b) for v in (FLOOR, EAGER, SINGLE)]
        out += time_group(session, specs, f"W1 b{b}")
    for name in [w for w in workloads if w in K_WORKLOADS] or ["W1"]:
        specs = [Spec(name, FLOOR), Spec(name, SINGLE)]
        specs += [Spec(name, f"vmap K={k} sweep compiled") for k in ks]
        out += time_group(session, specs, f"{name} K")
    return out
