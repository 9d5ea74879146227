"""``purestep.distributed``: the data-parallel pure step and its launch helpers.

The code lives in ``purestep.train.distributed`` (it belongs to the training layer); this
module re-exports it under the short name (``from purestep import distributed``).
"""

from purestep.train.distributed import *  # noqa: F403
from purestep.train.distributed import __all__ as __all__
