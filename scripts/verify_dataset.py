#!/usr/bin/env python
"""Check demo files against a key mapping before training.

Exit 0 and a summary when every demo has the mapped keys with the right shapes and finite values;
exit 2 and one line per problem (file, demo, key, fix) otherwise: missing key, wrong shape or dim,
NaN/Inf, empty demo, action dim not 7, unreadable file.

    python scripts/verify_dataset.py demos/stack.hdf5 --key_mapping isaaclab_stack
    python scripts/verify_dataset.py cosmos/*.hdf5 --key_mapping nvidia_cosmos
"""

from __future__ import annotations

import argparse
import sys

from vla.data.key_mapping import KeyMapping, KeyMappingError, available_key_mappings
from vla.data.verify import DatasetSummary, verify_files

MAX_LINES = 50


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+", help="HDF5 demo files")
    ap.add_argument(
        "--key_mapping",
        default="isaaclab_stack",
        help=f"name in config/key_mappings ({', '.join(available_key_mappings())}) or a .json path",
    )
    args = ap.parse_args(argv)
    try:
        mapping = KeyMapping.load(args.key_mapping)
    except KeyMappingError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    summary = DatasetSummary()
    problems = verify_files(args.files, mapping, summary)
    if problems:
        for line in problems[:MAX_LINES]:
            print(f"error: {line}", file=sys.stderr)
        if len(problems) > MAX_LINES:
            print(f"error: ... and {len(problems) - MAX_LINES} more problem(s)", file=sys.stderr)
        print(f"{len(problems)} problem(s) in {len(args.files)} file(s)", file=sys.stderr)
        return 2
    print("ok: " + "\n    ".join(summary.lines(mapping)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
