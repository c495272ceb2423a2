"""Demo data: key mappings, image preprocessing, the HDF5 dataset, normalisation statistics, checks."""

from .dataset import DemoDataset, collate
from .hdf5 import DatasetError
from .key_mapping import KeyMapping, KeyMappingError, build_proprio
from .preprocess import resize_images
from .stats import compute_norm_stats
from .verify import verify_files

__all__ = [
    "DatasetError", "DemoDataset", "KeyMapping", "KeyMappingError", "build_proprio", "collate",
    "compute_norm_stats", "resize_images", "verify_files",
]
