"""Import legacy `.pt` checkpoints (pickled dicts written with `torch.save`) into the safe checkpoint format.

    vla-convert-legacy OLD.pt OUT/ [--preset qwen2.5-vl-7b] [--instruction TEXT] [--key-mapping NAME|FILE]

Loading such a file with `weights_only=False` executes whatever the pickle says; here it is read with
`torch.load(weights_only=True)` plus an allow-list of plain numpy types (arrays, scalars, numeric dtypes),
so a pickle that references any other global (a class, a function, `os.system`) is refused before anything
runs.

What is mapped (everything else is listed as unmapped in the output's config.json `extra.legacy`):
- the projector: `projector_state_dict`, `projector`, or the `projector.*` keys of `model_state_dict`,
  when they are the legacy 2-layer MLP (Linear vlm_hidden->d, GELU, Linear d->d) -> `projector.0/2.*`;
  vlm_hidden and d_model are taken from its shapes;
- normalisation stats, when present (`norm_stats` / `stats` sub-dicts or top-level `action_mean`,
  `action_std`, `proprio_mean`/`state_mean`, `proprio_std`/`state_std`, optional `*_q01`/`*_q99`);
- `instruction`, when present.
Not mapped: the legacy LoRA tensors (the legacy forward pass never applied them, so they hold their
initial values and the adapter is the identity: the converted model starts from a fresh identity
adapter, which is the same function), and its action head (a different architecture: the expert here
is re-initialised and must be trained before the policy is used).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .configs import available, config_file

LEGACY_KEYS = ("projector_state_dict", "projector", "model_state_dict")
_SAFE_DTYPE_NAMES = ("BoolDType", "Float16DType", "Float32DType", "Float64DType", "Int8DType", "Int16DType",
                     "Int32DType", "Int64DType", "UInt8DType", "UInt16DType", "UInt32DType", "UInt64DType")


class LegacyCheckpointError(ValueError):
    """The file is not a legacy checkpoint this tool can import safely."""


def numpy_safe_globals() -> list:
    """numpy arrays/scalars/numeric dtypes, under numpy 2 names and the numpy 1 names old pickles use."""
    core = np._core.multiarray
    return [core._reconstruct, core.scalar, np.ndarray, np.dtype,
            (core._reconstruct, "numpy.core.multiarray._reconstruct"), (core.scalar, "numpy.core.multiarray.scalar"),
            *(getattr(np.dtypes, n) for n in _SAFE_DTYPE_NAMES if hasattr(np.dtypes, n))]


def load_legacy(path: str | Path) -> dict[str, Any]:
    """Unpickle a legacy checkpoint with weights_only=True and the numpy allow-list; refuse anything else."""
    path = Path(path)
    if not path.is_file():
        raise LegacyCheckpointError(f"{path}: no such file; pass the legacy .pt checkpoint")
    try:
        with torch.serialization.safe_globals(numpy_safe_globals()):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises UnpicklingError/RuntimeError/zip errors
        unsafe = re.search(r"GLOBAL ([\w.]+)", str(exc))
        cause = re.search(r"WeightsUnpickler error:\s*(.+?)\n", str(exc) + "\n", re.S)
        if unsafe:
            detail = f"it references the disallowed global {unsafe.group(1)}"
        else:  # not a pickle torch can read at all (corrupt, truncated, not a .pt)
            detail = f"not a readable torch file: {cause.group(1).strip() if cause else type(exc).__name__}"
        raise LegacyCheckpointError(
            f"{path}: refused to load ({detail}); only tensors, numpy arrays and plain containers are "
            "accepted, never pickled objects or code. Re-save the weights as "
            "{'model_state_dict': model.state_dict()} (tensors only) with the code that wrote it") from exc
    if not isinstance(obj, Mapping) or not any(k in obj for k in LEGACY_KEYS):
        found = sorted(map(str, obj)) if isinstance(obj, Mapping) else type(obj).__name__
        raise LegacyCheckpointError(f"{path}: not a legacy checkpoint: expected a dict with one of {list(LEGACY_KEYS)}, "
                                    f"found {found}")
    return dict(obj)


def _tensor(x: Any) -> torch.Tensor | None:
    if isinstance(x, torch.Tensor):
        return x.detach().float()
    if isinstance(x, np.ndarray) and np.issubdtype(x.dtype, np.number):
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    return None


def _projector_source(obj: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    for key in ("projector_state_dict", "projector"):
        if isinstance(obj.get(key), Mapping):
            return {str(k): t for k, v in obj[key].items() if (t := _tensor(v)) is not None}
    state = obj.get("model_state_dict")
    if isinstance(state, Mapping):
        found = {}
        for k, v in state.items():
            m = re.match(r"^(?:.*\.)?projector\.(.+)$", str(k))
            if m and (t := _tensor(v)) is not None:
                found[m.group(1)] = t
        return found
    return {}


def map_projector(tensors: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Legacy 2-layer MLP (two Linear layers in module order) -> our `projector.{0,2}.{weight,bias}`."""
    weights = [k for k, v in tensors.items() if k.endswith("weight") and v.ndim == 2]
    if len(weights) != 2:
        return {}, sorted(tensors)
    mapped, used = {}, []
    for ours, theirs in zip(("projector.0", "projector.2"), weights, strict=False):
        prefix = theirs[: -len("weight")]
        mapped[f"{ours}.weight"] = tensors[theirs]
        used.append(theirs)
        if f"{prefix}bias" in tensors:
            mapped[f"{ours}.bias"] = tensors[f"{prefix}bias"]
            used.append(f"{prefix}bias")
    first, second = mapped["projector.0.weight"], mapped["projector.2.weight"]
    if second.shape[1] != first.shape[0] or second.shape[0] != second.shape[1]:
        return {}, sorted(tensors)
    return mapped, sorted(set(tensors) - set(used))


def _find_stats(obj: Mapping[str, Any]):
    from vla.normalization import FeatureStats, NormStats

    pools = [obj] + [obj[k] for k in ("norm_stats", "stats", "normalization") if isinstance(obj.get(k), Mapping)]

    def lookup(names: tuple[str, ...], stat: str) -> np.ndarray | None:
        for pool in pools:
            for name in names:
                for key in (f"{name}_{stat}", f"{name}.{stat}"):
                    if (t := _tensor(pool.get(key))) is not None:
                        return t.numpy().reshape(-1)
                if isinstance(pool.get(name), Mapping) and (t := _tensor(pool[name].get(stat))) is not None:
                    return t.numpy().reshape(-1)
        return None

    feats = {}
    for ours, names in (("action", ("action", "actions")), ("proprio", ("proprio", "state", "states"))):
        mean, std = lookup(names, "mean"), lookup(names, "std")
        if mean is None or std is None:
            return None
        q01, q99 = lookup(names, "q01"), lookup(names, "q99")
        feats[ours] = FeatureStats(mean=mean, std=std, q01=mean - 2.33 * std if q01 is None else q01,
                                   q99=mean + 2.33 * std if q99 is None else q99)
    return NormStats(**feats)


def convert_legacy(src: str | Path, out_dir: str | Path, *, preset: str = "qwen2.5-vl-7b",
                   instruction: str | None = None, key_mapping: dict | None = None) -> dict[str, Any]:
    """Convert a legacy checkpoint; returns the summary stored in config.json `extra.legacy`."""
    from vla.checkpoint import write_checkpoint
    from vla.config import load_model_preset
    from vla.modeling import build_head
    from vla.normalization import NormStats

    src = Path(src)
    obj = load_legacy(src)
    mapped, unmapped_projector = map_projector(_projector_source(obj))
    if not mapped:
        raise LegacyCheckpointError(f"{src}: found no 2-layer MLP projector (two Linear weights) in "
                                    f"{[k for k in LEGACY_KEYS if k in obj]}; nothing to import")
    vlm_hidden, d_model = mapped["projector.0.weight"].shape[1], mapped["projector.0.weight"].shape[0]
    cfg = load_model_preset(preset)
    if cfg.projector != "mlp" or cfg.vlm_hidden != vlm_hidden or cfg.d_model != d_model:
        cfg = cfg.replace(projector="mlp", vlm_hidden=int(vlm_hidden), d_model=int(d_model),
                          expert_heads=cfg.expert_heads if d_model % cfg.expert_heads == 0 else 1)
    torch.manual_seed(0)
    head = build_head(cfg)
    state = head.state_dict()
    for key, value in mapped.items():
        state[key] = value.to(state[key].dtype)
    stats = _find_stats(obj)
    if stats is not None and (stats.action.dim != cfg.action_dim or stats.proprio.dim != cfg.proprio_dim):
        stats = None
    text = instruction if instruction is not None else str(obj.get("instruction", "") or "")
    other_keys = sorted(str(k) for k in obj if k not in LEGACY_KEYS)
    state_keys = list(obj["model_state_dict"]) if isinstance(obj.get("model_state_dict"), Mapping) else []
    summary = {
        "source": src.name,
        "source_sha256": hashlib.sha256(src.read_bytes()).hexdigest(),
        "mapped": sorted(mapped),
        "unmapped_projector_keys": unmapped_projector,
        "skipped_lora_keys": sum("lora_" in str(k) for k in state_keys),
        "unmapped_model_keys": sorted(str(k) for k in state_keys
                                      if "projector." not in str(k) and "lora_" not in str(k))[:200],
        "other_top_level_keys": other_keys,
        "norm_stats": "imported" if stats is not None else "not found: identity (set them before training)",
        "expert": "re-initialised (the legacy action head has a different architecture)",
    }
    write_checkpoint(out_dir, cfg, state, stats or NormStats.identity(cfg.action_dim, cfg.proprio_dim),
                     key_mapping=key_mapping, instruction=text, extra={"legacy": summary})
    return summary


def _load_key_mapping(name_or_path: str | None) -> dict | None:
    if not name_or_path:
        return None
    path = Path(name_or_path)
    if not path.is_file():
        path = config_file("key_mappings", name_or_path)
    if not path.is_file():
        raise LegacyCheckpointError(f"--key-mapping {name_or_path}: no such file or shipped key mapping "
                                    f"({', '.join(available('key_mappings'))})")
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise LegacyCheckpointError(f"{path}: not valid JSON ({exc})") from exc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="vla-convert-legacy",
        description="Convert a legacy .pt checkpoint into a safe vla-isaac checkpoint folder "
                    "(safetensors + JSON + manifest). The .pt is read with torch.load(weights_only=True) and a "
                    "numpy allow-list; pickled objects or code are refused.")
    parser.add_argument("src", help="the legacy .pt file (a dict with projector_state_dict, projector or "
                                    "model_state_dict)")
    parser.add_argument("out", help="output checkpoint folder (written atomically)")
    parser.add_argument("--preset", default="qwen2.5-vl-7b", help="model preset the legacy model matches (default: %(default)s)")
    parser.add_argument("--instruction", default=None, help="task instruction to store (default: the file's, if any)")
    parser.add_argument("--key-mapping", default=None, help="shipped key mapping name (e.g. isaaclab_stack) or JSON file")
    args = parser.parse_args(argv)
    from vla.config import ConfigError

    try:
        summary = convert_legacy(args.src, args.out, preset=args.preset, instruction=args.instruction,
                                 key_mapping=_load_key_mapping(args.key_mapping))
    except (LegacyCheckpointError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: mapped {len(summary['mapped'])} projector tensors; norm stats {summary['norm_stats']}; "
          f"expert {summary['expert']}; skipped {summary['skipped_lora_keys']} LoRA tensors "
          "(never applied by the legacy forward pass)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
