#!/usr/bin/env python
"""Export recorded demos (HDF5: this project's recorder files or NVIDIA's Cosmos layout) to a LeRobotDataset v3.0.

    python scripts/export_lerobot.py demos/lift.hdf5 --key_mapping isaaclab_lift --output datasets/lift_lerobot
    python scripts/export_lerobot.py cosmos/*.hdf5 --key_mapping nvidia_cosmos --output datasets/cosmos --fps 20

Both camera views become video features ``observation.images.<key>``, the proprio vector
``observation.state``, the actions ``action``, each demo's instruction its task. Only successful demos
are exported unless ``--include_failed``. The dataset is written through LeRobot's API beside ``--output``
and renamed into place when complete; an existing ``--output`` is refused unless ``--overwrite``.
Needs the optional extra: ``pip install -e ".[lerobot]"``. See docs/lerobot.md.
"""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    from vla.data.key_mapping import KeyMapping, KeyMappingError, available_key_mappings

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+", help="HDF5 demo files")
    ap.add_argument("--key_mapping", required=True,
                    help=f"name in config/key_mappings ({', '.join(available_key_mappings())}) or a .json path")
    ap.add_argument("--output", required=True, help="dataset folder to create (LeRobotDataset root)")
    ap.add_argument("--fps", type=int, default=20, help="frame rate of the recording (Lift-Cube / Stack-Cube step at 20 Hz)")
    ap.add_argument("--repo_id", default=None, help="dataset repo id stored in the metadata (default local/<output name>)")
    ap.add_argument("--robot_type", default="franka")
    ap.add_argument("--include_failed", action="store_true", help="also export demos whose success attribute is False")
    ap.add_argument("--max_demos", type=int, default=None, help="export only the first N (selected) demos")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing --output (only once the new one is complete)")
    ap.add_argument("--no_verify", action="store_true", help="skip scripts/verify_dataset.py's checks (NaN/Inf, shapes)")
    ap.add_argument("--no_progress", action="store_true")
    args = ap.parse_args(argv)

    from pathlib import Path

    from vla.data.hdf5 import DatasetError

    try:
        mapping = KeyMapping.load(args.key_mapping)
    except KeyMappingError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if Path(args.output).exists() and not args.overwrite:
        print(f"error: {args.output}: already exists; pass --overwrite to replace it or choose another --output",
              file=sys.stderr)
        return 2
    if not args.no_verify:
        from vla.data.verify import verify_files

        problems = verify_files(args.files, mapping)
        if problems:
            for line in problems[:20]:
                print(f"error: {line}", file=sys.stderr)
            return 2
    from vla.data.lerobot_export import export_lerobot

    try:
        s = export_lerobot(args.files, mapping, args.output, fps=args.fps, repo_id=args.repo_id,
                           include_failed=args.include_failed, overwrite=args.overwrite, robot_type=args.robot_type,
                           max_demos=args.max_demos, progress=not args.no_progress)
    except ImportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (DatasetError, FileExistsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"exported {s.episodes} episodes, {s.frames} frames at {s.fps} fps ({s.skipped_failed} unsuccessful demos "
          f"skipped), tasks {s.tasks} -> {s.output} (LeRobotDataset v3.0)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
