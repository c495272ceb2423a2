#!/usr/bin/env python
"""``vla-record`` as a script: ``python scripts/record_demos.py`` or ``isaaclab -p scripts/record_demos.py``.

The code and its ``--help`` live in :mod:`vla_isaac.cli.record`.
"""

import sys

from vla_isaac.cli.record import build_parser, main  # noqa: F401  (tests and tools import these from the script too)

if __name__ == "__main__":
    sys.exit(main())
