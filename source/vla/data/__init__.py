"""Demo data: key mappings, image preprocessing, the HDF5 dataset, normalisation statistics, checks.

Names are imported lazily so that light tools (inspect/verify scripts) don't pay for importing torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "DemoDataset": "dataset",
    "collate": "dataset",
    "DatasetError": "hdf5",
    "KeyMapping": "key_mapping",
    "KeyMappingError": "key_mapping",
    "build_proprio": "key_mapping",
    "resize_images": "preprocess",
    "compute_norm_stats": "stats",
    "verify_files": "verify",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
