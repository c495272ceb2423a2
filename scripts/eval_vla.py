#!/usr/bin/env python
"""``vla-eval`` as a script: ``python scripts/eval_vla.py`` or ``isaaclab -p scripts/eval_vla.py``.

The code and its ``--help`` live in :mod:`vla_isaac.cli.eval`.
"""

import sys

from vla_isaac.cli.eval import build_parser, main  # noqa: F401  (tests and tools import these from the script too)

if __name__ == "__main__":
    sys.exit(main())
