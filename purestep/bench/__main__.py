"""``python -m purestep.bench``: the ``purestep bench`` command."""

import sys

from purestep.bench.command import main

sys.exit(main())
