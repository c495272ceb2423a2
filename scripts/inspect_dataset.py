#!/usr/bin/env python
"""Print the layout of an Isaac Lab / robomimic demo file: groups, keys, shapes, dtypes, demos, attributes.

Reads metadata only (no image data), so it is instant even on multi-GB recordings. Use it to write a
key mapping for a new dataset (config/key_mappings/*.json), then check the file with verify_dataset.py.

    python scripts/inspect_dataset.py demos/stack.hdf5
    isaaclab -p scripts/inspect_dataset.py demos/stack.hdf5 --demo demo_3
"""

from __future__ import annotations

import argparse
import json
import sys

import h5py
import numpy as np
from vla.data.hdf5 import DATA_GROUP, DatasetError, demo_names, open_h5


def _fmt_attr(v) -> str:
    if isinstance(v, bytes):
        v = v.decode("utf-8", "replace")
    if isinstance(v, str):
        try:  # env_args and friends are JSON strings
            v = json.dumps(json.loads(v), separators=(",", ":"))
        except ValueError:
            pass
        return v if len(v) <= 160 else v[:157] + "..."
    if isinstance(v, np.ndarray) and v.size > 8:
        return f"array{v.shape} {v.dtype}"
    return str(v.item() if isinstance(v, np.generic) else v)


def _attrs(obj, indent: str) -> list[str]:
    return [f"{indent}@{k} = {_fmt_attr(v)}" for k, v in obj.attrs.items()]


def tree(group: h5py.Group, indent: str = "  ") -> list[str]:
    lines = []
    for key, item in group.items():
        if isinstance(item, h5py.Group):
            lines.append(f"{indent}{key}/")
            lines += _attrs(item, indent + "  ")
            lines += tree(item, indent + "  ")
        else:
            comp = f" {item.compression}" if item.compression else ""
            lines.append(f"{indent}{key:<28} {str(item.shape):<22} {str(item.dtype):<8}{comp}")
    return lines


def _signature(g: h5py.Group) -> dict:
    out = {}
    g.visititems(
        lambda name, item: (
            out.__setitem__(name, (item.shape[1:], str(item.dtype))) if isinstance(item, h5py.Dataset) else None
        )
    )
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("file", help="HDF5 file (Isaac Lab recorder / robomimic / NVIDIA Cosmos layout)")
    ap.add_argument("--demo", default=None, help="demo group to expand (default: the first demo)")
    args = ap.parse_args(argv)
    try:
        f = open_h5(args.file)
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    with f:
        print(f"{args.file}")
        print("\n".join(_attrs(f, "  ")))
        names = demo_names(f)
        if DATA_GROUP not in f:
            print(f"  (no '{DATA_GROUP}' group; top-level keys: {list(f.keys())})")
            return 2
        print(f"  {DATA_GROUP}/")
        print("\n".join(_attrs(f[DATA_GROUP], "    ")))
        if not names:
            print("    (no demos)")
            return 0
        lengths = []
        for n in names:
            g = f[DATA_GROUP][n]
            lengths.append(int(g["actions"].shape[0]) if "actions" in g else int(g.attrs.get("num_samples", 0)))
        ls = np.array(lengths)
        print(
            f"  demos: {len(names)} ({names[0]} .. {names[-1]}), steps: {int(ls.sum())}, "
            f"length min/mean/max: {ls.min()}/{ls.mean():.1f}/{ls.max()}"
        )
        if len(names) <= 20:
            print("  lengths: " + ", ".join(f"{n}={t}" for n, t in zip(names, lengths)))
        show = args.demo or names[0]
        if show not in f[DATA_GROUP]:
            print(f"error: {args.file}: no demo '{show}' (demos: {names[0]} .. {names[-1]})", file=sys.stderr)
            return 2
        g = f[DATA_GROUP][show]
        print(f"  {DATA_GROUP}/{show}/")
        print("\n".join(_attrs(g, "    ")))
        print("\n".join(tree(g, "    ")))
        ref = _signature(g)
        differ = [n for n in names if n != show and _signature(f[DATA_GROUP][n]) != ref]
        if differ:
            print(
                f"  note: {len(differ)} demo(s) have other keys/shapes than {show}, e.g. {differ[:5]} "
                "(--demo NAME shows one)"
            )
        else:
            print(f"  all {len(names)} demos share this layout")
    return 0


if __name__ == "__main__":
    sys.exit(main())
