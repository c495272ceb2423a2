#!/usr/bin/env python
"""``vla-play`` as a script: ``python scripts/play_vla.py`` or ``isaaclab -p scripts/play_vla.py``.

The code and its ``--help`` live in :mod:`vla_isaac.cli.play`.
"""

import sys

from vla_isaac.cli.play import build_parser, main  # noqa: F401  (tests and tools import these from the script too)

if __name__ == "__main__":
    sys.exit(main())
