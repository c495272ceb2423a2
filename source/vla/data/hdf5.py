"""Small helpers over the Isaac Lab / robomimic HDF5 layout (``data/demo_N/{actions, obs/<key>}``)."""

from __future__ import annotations

import re
from pathlib import Path

import h5py

DATA_GROUP = "data"
LABEL_VALID_KEY = "label_valid"
"""Optional per-step dataset beside a demo's actions (0/1): 0 marks labels not to learn (a staged grasp miss)."""


class DatasetError(ValueError):
    """A demo file is missing, unreadable or doesn't match the key mapping (one line: file, key, fix)."""


def as_file_list(files) -> list[str]:
    """One path, a list of paths, or a comma-separated string -> list of path strings."""
    if isinstance(files, (str, Path)):
        files = [p for p in str(files).split(",") if p] if "," in str(files) else [files]
    out = [str(Path(f).expanduser()) for f in files]
    if not out:
        raise DatasetError("no dataset files given; pass one or more .hdf5 files recorded with scripts/record_demos.py")
    return out


def open_h5(path: str, rdcc_nbytes: int = 4 << 20) -> h5py.File:
    """Open read-only, turning every failure into one clear DatasetError line."""
    p = Path(path)
    if not p.exists():
        raise DatasetError(f"{path}: file not found; check the path (record demos with scripts/record_demos.py)")
    if p.is_dir():
        raise DatasetError(f"{path}: is a folder, not an HDF5 file; pass the .hdf5 file inside it")
    try:
        return h5py.File(p, "r", rdcc_nbytes=rdcc_nbytes)
    except OSError as e:
        detail = re.search(r"\(([^:)]+)", str(e))  # "... (truncated file: eof = ...)" -> "truncated file"
        reason = detail.group(1).strip() if detail else (str(e).strip() or type(e).__name__)
        raise DatasetError(f"{path}: unreadable as HDF5 ({reason}); re-record or re-copy the file") from None


_DEMO_RE = re.compile(r"^demo_(\d+)$")


def natural_key(name: str) -> list:
    """Sort key that orders the digit runs of a name by value (``demo_2`` before ``demo_10``)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def demo_index(name: str) -> int | None:
    """``N`` of a ``demo_N`` name; None for any other name."""
    match = _DEMO_RE.match(name)
    return int(match.group(1)) if match else None


def sorted_demo_names(names) -> list[str]:
    """The ``demo_N`` names of ``names`` in natural order; other names are dropped."""
    return sorted((n for n in names if demo_index(n) is not None), key=natural_key)


def demo_names(f: h5py.File) -> list[str]:
    """Demo group names under ``data/`` in natural order (demo_2 before demo_10)."""
    if DATA_GROUP not in f or not isinstance(f[DATA_GROUP], h5py.Group):
        return []
    return sorted((k for k, v in f[DATA_GROUP].items() if isinstance(v, h5py.Group)), key=natural_key)


def _attr_str(attrs, name: str) -> str | None:
    if name not in attrs:
        return None
    v = attrs[name]
    if isinstance(v, bytes):
        v = v.decode("utf-8", "replace")
    v = str(v).strip()
    return v or None


def read_instruction(f: h5py.File, demo: str, attr: str | None, default: str) -> str:
    """The demo's instruction attribute, else ``data``'s, else the file's, else ``default``."""
    if attr:
        for attrs in (f[DATA_GROUP][demo].attrs, f[DATA_GROUP].attrs, f.attrs):
            v = _attr_str(attrs, attr)
            if v is not None:
                return v
    return default
