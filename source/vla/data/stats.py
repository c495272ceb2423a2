"""Normalisation statistics of actions and proprio, computed once per file and cached beside it.

The model normalises its inputs and targets with these (mean/std, and the 1st/99th percentiles for
quantile scaling); checkpoints store them so deployment uses the training statistics.

Cache: ``<file>.vla_stats.json`` holds the file's fingerprint (size + mtime) and one entry per
key-mapping hash (only the fields that decide which arrays are read). A changed file or mapping
recomputes; the write is atomic, and a read-only dataset folder just skips caching. Statistics of several
files are merged by count: mean/std exactly (pooled moments), percentiles as the count-weighted mean of
the per-file percentiles (LeRobot's approximation; exact for one file).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np

from ..utils.io import atomic_write_text
from .hdf5 import DATA_GROUP, DatasetError, as_file_list, demo_names, open_h5
from .key_mapping import KeyMapping, build_proprio

CACHE_SUFFIX = ".vla_stats.json"
CACHE_VERSION = 1
GROUPS = ("action", "proprio")


def stats_cache_path(file: str | Path) -> Path:
    return Path(str(file) + CACHE_SUFFIX)


def file_fingerprint(file: str | Path) -> dict:
    st = os.stat(file)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def mapping_hash(mapping: KeyMapping) -> str:
    """Hash of what the statistics depend on: the action key/dim and the ordered proprio keys/dims."""
    d = {"actions": mapping.actions, "action_dim": mapping.action_dim, "proprio": [list(p) for p in mapping.proprio]}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def _summary(x: np.ndarray) -> dict:
    x = x.astype(np.float64)
    return {
        "mean": x.mean(0).tolist(),
        "std": x.std(0).tolist(),
        "q01": np.quantile(x, 0.01, axis=0).tolist(),
        "q99": np.quantile(x, 0.99, axis=0).tolist(),
        "count": int(x.shape[0]),
    }


def compute_file_stats(file: str, mapping: KeyMapping) -> dict:
    """``{"action": {...}, "proprio": {...}}`` over every step of every demo of one file (no cache)."""
    actions, proprio = [], []
    with open_h5(file) as f:
        for name in demo_names(f):
            g = f[DATA_GROUP][name]
            if mapping.actions not in g:
                raise DatasetError(
                    f"{file}: {DATA_GROUP}/{name}/{mapping.actions} missing; run scripts/verify_dataset.py"
                )
            a = np.asarray(g[mapping.actions][()], dtype=np.float32)
            if a.shape[0] == 0:
                continue
            actions.append(a.reshape(a.shape[0], -1))
            obs = g["obs"]
            proprio.append(build_proprio({k: np.asarray(obs[k][()]) for k in mapping.proprio_keys}, mapping))
    if not actions:
        raise DatasetError(f"{file}: no non-empty demos to compute normalisation statistics from")
    a, p = np.concatenate(actions), np.concatenate(proprio)
    if not (np.isfinite(a).all() and np.isfinite(p).all()):
        raise DatasetError(
            f"{file}: actions or proprio contain NaN/Inf; run scripts/verify_dataset.py to find the demo"
        )
    return {"action": _summary(a), "proprio": _summary(p)}


def load_or_compute_file_stats(file: str, mapping: KeyMapping, use_cache: bool = True) -> dict:
    """Per-file statistics from the cache when its fingerprint matches, else computed and cached."""
    cache = stats_cache_path(file)
    fp, key = file_fingerprint(file), mapping_hash(mapping)
    doc = None
    if use_cache and cache.is_file():
        try:
            doc = json.loads(cache.read_text())
        except (OSError, json.JSONDecodeError):
            doc = None
    if not (isinstance(doc, dict) and doc.get("version") == CACHE_VERSION and doc.get("file") == fp):
        doc = {"version": CACHE_VERSION, "file": fp, "entries": {}}
    if use_cache and key in doc["entries"]:
        return doc["entries"][key]
    stats = compute_file_stats(file, mapping)
    if use_cache:
        doc["entries"][key] = stats
        try:
            atomic_write_text(cache, json.dumps(doc, indent=1))
        except OSError as e:
            print(f"warning: could not cache statistics at {cache} ({e}); they will be recomputed", file=sys.stderr)
    return stats


def merge_stats(parts: list[dict]) -> dict:
    """Count-weighted merge of per-file statistics (exact mean/std, approximate percentiles)."""
    out = {}
    for group in GROUPS:
        ps = [p[group] for p in parts]
        n = np.array([p["count"] for p in ps], dtype=np.float64)
        w = n / n.sum()
        mean = sum(wi * np.asarray(p["mean"]) for wi, p in zip(w, ps))
        second = sum(wi * (np.asarray(p["std"]) ** 2 + np.asarray(p["mean"]) ** 2) for wi, p in zip(w, ps))
        out[group] = {
            "mean": mean.tolist(),
            "std": np.sqrt(np.maximum(second - mean**2, 0.0)).tolist(),
            "q01": sum(wi * np.asarray(p["q01"]) for wi, p in zip(w, ps)).tolist(),
            "q99": sum(wi * np.asarray(p["q99"]) for wi, p in zip(w, ps)).tolist(),
            "count": int(n.sum()),
        }
    return out


def compute_stats_dict(files, mapping: KeyMapping | str, use_cache: bool = True) -> dict:
    """Merged statistics as a plain dict (``{"action"|"proprio": {mean, std, q01, q99, count}}``)."""
    mapping = KeyMapping.load(mapping)
    parts = [load_or_compute_file_stats(f, mapping, use_cache) for f in as_file_list(files)]
    return parts[0] if len(parts) == 1 else merge_stats(parts)


def compute_norm_stats(files, mapping: KeyMapping | str, use_cache: bool = True):
    """``vla.normalization.NormStats`` for ``files`` under ``mapping`` (cached per file)."""
    return to_norm_stats(compute_stats_dict(files, mapping, use_cache))


def to_norm_stats(stats: dict):
    """Plain statistics dict -> the model's ``NormStats`` (the ``count`` fields are dropped)."""
    from ..normalization import NormStats

    return NormStats.from_dict(stats)
