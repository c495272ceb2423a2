"""Which device and dtype a process runs a policy on: one rule for eval, play and diagnose.

Under ``torchrun`` every process is told the same ``--device``; each must take its own GPU, so a CUDA
device is offset by the process's ``LOCAL_RANK`` (``--device cuda`` or ``cuda:0`` -> rank r uses
``cuda:r``; ``cuda:2`` -> ``cuda:2+r``). Policies run in bfloat16 on CUDA (a 7B backbone in float32
needs twice the memory for no accuracy that matters at inference) and float32 on the CPU, where
bfloat16 matmuls are slow; ``--dtype`` overrides either.
"""

from __future__ import annotations

import os

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


class DeviceError(ValueError):
    """A ``--device`` / ``--dtype`` value that cannot be used; the message names the flag and the fix."""


def local_rank_from_env() -> int | None:
    """``LOCAL_RANK`` set by torchrun / accelerate, or None outside a distributed launch."""
    value = os.environ.get("LOCAL_RANK")
    return int(value) if value not in (None, "") else None


def resolve_device(
    device: str | torch.device | None = None,
    *,
    local_rank: int | None = None,
    cuda_count: int | None = None,
) -> str:
    """The device this process should use, as a string (``"cpu"``, ``"cuda:3"``).

    Args:
        device: what the user asked for; ``None`` = ``cuda`` when torch sees a GPU, else ``cpu``.
        local_rank: this process's index on its machine; ``None`` reads ``LOCAL_RANK`` (unset = 0).
        cuda_count: GPUs visible to this process; ``None`` asks torch. Used to reject an index past the last GPU.
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise DeviceError(f"--device {device!r} is not a torch device; use cpu, cuda or cuda:N") from e
    if dev.type != "cuda":
        return str(dev)
    rank = local_rank if local_rank is not None else (local_rank_from_env() or 0)
    index = (dev.index or 0) + rank
    count = cuda_count if cuda_count is not None else torch.cuda.device_count()
    if index >= count:
        where = f" (local rank {rank} of a torchrun launch adds {rank} to the index)" if rank else ""
        raise DeviceError(
            f"--device {device}: this process needs cuda:{index}{where} but {count} GPU(s) are visible; "
            "use fewer processes per node, a lower --device index, or --device cpu"
        )
    return f"cuda:{index}"


def resolve_dtype(dtype: str | torch.dtype | None, device: str | torch.device) -> torch.dtype:
    """The policy's model dtype: ``dtype`` if given (``float32`` / ``bfloat16``), else bf16 on CUDA, fp32 elsewhere."""
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise DeviceError(f"--dtype {dtype}: use float32 or bfloat16")
        return dtype
    if dtype is None:
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise DeviceError(f"--dtype {dtype!r}: use float32 or bfloat16")
    return DTYPES[dtype]
