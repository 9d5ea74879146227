"""Step-for-step comparison of the pure step with the imperative PyTorch loop."""

from purestep.parity.compare import assert_parity, compare, compare_compiled
from purestep.parity.ddp import compare_ddp
from purestep.parity.report import Divergence, ParityReport, StepRecord, ulp_distance
from purestep.parity.state_match import NO_COUNTERPART, StateMatch, match_optimizer_state

__all__ = [
    "NO_COUNTERPART",
    "Divergence",
    "ParityReport",
    "StateMatch",
    "StepRecord",
    "assert_parity",
    "compare",
    "compare_compiled",
    "compare_ddp",
    "match_optimizer_state",
    "ulp_distance",
]
