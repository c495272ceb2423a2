"""Small shared helpers: cache locations and atomic file writes."""

from .io import atomic_dir, atomic_write_bytes, atomic_write_text, cache_dir, replace_dir, sha256_file

__all__ = ["atomic_dir", "atomic_write_bytes", "atomic_write_text", "cache_dir", "replace_dir", "sha256_file"]
