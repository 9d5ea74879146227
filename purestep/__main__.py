"""``python -m purestep ...`` is the ``purestep`` command (torchrun's ``-m`` needs this)."""

import sys

from purestep.cli import main

if __name__ == "__main__":
    sys.exit(main())
