"""``python -m purestep.cli``."""

import sys

from purestep.cli import main

if __name__ == "__main__":
    sys.exit(main())
