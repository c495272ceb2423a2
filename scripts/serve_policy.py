#!/usr/bin/env python
"""``vla-serve`` as a script: ``python scripts/serve_policy.py`` or ``isaaclab -p scripts/serve_policy.py``.

The code and its ``--help`` live in :mod:`vla.cli.serve`.
"""

import sys

from vla.cli.serve import build_parser, main  # noqa: F401  (tests and tools import these from the script too)

if __name__ == "__main__":
    sys.exit(main())
