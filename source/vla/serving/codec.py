"""msgpack with numpy arrays, wire-compatible with openpi's ``msgpack_numpy`` and safe to decode.

An array travels as ``{"__ndarray__": True, "data": bytes, "dtype": str, "shape": [...]}`` (keys as msgpack
bin, exactly as openpi's packer writes them), a numpy scalar as ``{"__npgeneric__": True, "data", "dtype"}``.
Decoding never unpickles: only plain numeric dtypes (bool, int, uint, float) are rebuilt, from a copy of
the bytes after checking that their length matches the declared shape; object, void, structured and
complex dtypes, msgpack extension types and inconsistent sizes raise ``CodecError``.
"""

from __future__ import annotations

import math
from typing import Any

import msgpack
import numpy as np

ALLOWED_KINDS = frozenset("biuf")  # bool, signed int, unsigned int, float
MAX_NDIM = 8


class CodecError(ValueError):
    """A message is not valid msgpack, or holds an array this decoder refuses to rebuild."""


def _encode(obj: Any) -> Any:
    if isinstance(obj, (np.ndarray, np.generic)) and obj.dtype.kind not in ALLOWED_KINDS:
        raise CodecError(f"cannot send dtype {obj.dtype}: only bool, int, uint and float arrays travel")
    if isinstance(obj, np.ndarray):
        return {b"__ndarray__": True, b"data": np.ascontiguousarray(obj).tobytes(), b"dtype": obj.dtype.str,
                b"shape": list(obj.shape)}
    if isinstance(obj, np.generic):
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    raise TypeError(f"cannot encode {type(obj).__name__}: send numpy arrays, numbers, strings, lists or dicts")


def packb(obj: Any) -> bytes:
    """Encode a message (dicts, lists, str, numbers, numpy arrays) as openpi does."""
    return msgpack.packb(obj, default=_encode, use_bin_type=True)


def _field(d: dict, name: str):
    for key in (name.encode(), name):
        if key in d:
            return d[key]
    raise CodecError(f"array is missing its '{name}' field")


def _dtype(spec) -> np.dtype:
    if isinstance(spec, bytes):
        spec = spec.decode("ascii", "replace")
    if not isinstance(spec, str) or len(spec) > 8:
        raise CodecError(f"array dtype must be a short numpy dtype string like '<f4', got {spec!r}")
    try:
        dtype = np.dtype(spec)
    except (TypeError, ValueError):
        raise CodecError(f"array dtype {spec!r} is not a numpy dtype") from None
    if dtype.kind not in ALLOWED_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise CodecError(f"array dtype {spec!r} refused: only bool, int, uint and float arrays are accepted")
    return dtype


def _decode(d: dict) -> Any:
    if b"__ndarray__" in d or "__ndarray__" in d:
        dtype = _dtype(_field(d, "dtype"))
        shape = _field(d, "shape")
        if (not isinstance(shape, (list, tuple)) or len(shape) > MAX_NDIM
                or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)):
            raise CodecError(f"array shape must be a list of at most {MAX_NDIM} non-negative ints, got {shape!r}")
        data = _field(d, "data")
        if not isinstance(data, bytes):
            raise CodecError(f"array data must be bytes, got {type(data).__name__}")
        expected = math.prod(shape) * dtype.itemsize  # Python ints: no overflow
        if len(data) != expected:
            raise CodecError(f"array data has {len(data)} bytes but shape {list(shape)} of {dtype} needs {expected}")
        arr = np.frombuffer(data, dtype=dtype).reshape(shape)
        return arr.astype(dtype.newbyteorder("="), copy=True)  # native byte order, writable, owns its memory
    if b"__npgeneric__" in d or "__npgeneric__" in d:
        dtype = _dtype(_field(d, "dtype"))
        value = _field(d, "data")
        if not isinstance(value, (bool, int, float)):
            raise CodecError(f"numpy scalar data must be a number, got {type(value).__name__}")
        try:
            return dtype.type(value)
        except (OverflowError, ValueError) as exc:
            raise CodecError(f"numpy scalar {value!r} does not fit {dtype}: {exc}") from None
    return d


def _refuse_ext(code: int, data: bytes):
    raise CodecError(f"msgpack extension type {code} refused (only plain msgpack and numpy arrays are accepted)")


def unpackb(data: bytes) -> Any:
    """Decode a message; raises ``CodecError`` (one line) for anything that is not plain msgpack + arrays."""
    try:
        return msgpack.unpackb(data, object_hook=_decode, ext_hook=_refuse_ext, raw=False, strict_map_key=False,
                               timestamp=0)
    except CodecError:
        raise
    except Exception as exc:  # msgpack raises several types (ExtraData, FormatError, StackError, ValueError...)
        raise CodecError(f"not a valid msgpack message ({type(exc).__name__}: {exc})") from None
