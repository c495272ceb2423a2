#!/usr/bin/env python
"""``vla-train`` as a script: ``python scripts/train.py`` or ``isaaclab -p scripts/train.py``.

The code and its ``--help`` live in :mod:`vla.cli.train`.
"""

import sys

from vla.cli.train import main, parse_args  # noqa: F401  (tests and tools import these from the script too)

if __name__ == "__main__":
    sys.exit(main())
