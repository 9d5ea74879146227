"""Step-for-step comparison of the pure step with the imperative PyTorch loop."""

from purestep.parity.compare import assert_parity, compare, compare_compiled
from purestep.parity.report import Divergence, ParityReport, StepRecord, ulp_distance

__all__ = [
    "Divergence",
    "ParityReport",
    "StepRecord",
    "assert_parity",
    "compare",
    "compare_compiled",
    "ulp_distance",
]
