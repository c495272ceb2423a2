"""Lightweight, verifiable checkpoints: trainable weights only, safetensors + JSON, nothing unpickled.

A checkpoint is a folder (megabytes, not the backbone's gigabytes):

    config.json            model config, backbone id (+ weights fingerprint for small local backbones),
                           dims, action/proprio layout, key mapping, instruction, extra
    norm_stats.json        action/proprio mean, std, q01, q99
    head.safetensors       projector (+ memory position table) + action expert
    adapter/               LoRA adapter in peft's format (adapter_config.json, adapter_model.safetensors)
    manifest.json          sha256 and size of every file above

It is written through `atomic_dir` (a crash never leaves a half-written folder), and every load
verifies the manifest first, so a tampered, truncated or missing file stops with one line that names
the file and the fix.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from vla.config import ConfigError, VLAConfig
from vla.normalization import NormStats, NormStatsError
from vla.utils.io import atomic_dir, sha256_file

FORMAT = "vla-isaac-checkpoint"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
NORM_FILE = "norm_stats.json"
HEAD_FILE = "head.safetensors"
ADAPTER_DIR = "adapter"
ADAPTER_FILES = ("adapter/adapter_config.json", "adapter/adapter_model.safetensors")
MANIFEST_FILE = "manifest.json"
REQUIRED_FILES = (CONFIG_FILE, NORM_FILE, HEAD_FILE)
FINGERPRINT_MAX_BYTES = 256 << 20  # hash backbone weights only when they are small (the tiny model)


class CheckpointError(ValueError):
    """A checkpoint folder is missing, incomplete, tampered with or truncated."""


# ---------------------------------------------------------------------- writing
def _jsonable_mapping(key_mapping: Any) -> dict | None:
    if key_mapping is None:
        return None
    if hasattr(key_mapping, "to_dict"):
        return key_mapping.to_dict()
    if dataclasses.is_dataclass(key_mapping):
        return dataclasses.asdict(key_mapping)
    return dict(key_mapping)


def backbone_fingerprint(backbone: str) -> str | None:
    """sha256 over a local backbone's *.safetensors when they are small, else None (hub ids, 7B folders)."""
    from vla.backbone.qwen import resolve_backbone

    folder = Path(resolve_backbone(backbone)) if backbone == "tiny" else Path(backbone)
    if not folder.is_dir():
        return None
    files = sorted(folder.glob("*.safetensors"))
    if not files or sum(f.stat().st_size for f in files) > FINGERPRINT_MAX_BYTES:
        return None
    return ",".join(sha256_file(f) for f in files)


def _versions() -> dict[str, str]:
    import peft
    import safetensors
    import transformers

    import vla

    return {"vla": vla.__version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__, "safetensors": safetensors.__version__}


def write_checkpoint(out_dir: str | Path, cfg: VLAConfig, head_state: Mapping[str, torch.Tensor],
                     norm_stats: NormStats, *, key_mapping: Any = None, instruction: str = "",
                     extra: dict | None = None, write_adapter: Callable[[Path], None] | None = None) -> Path:
    """Write the checkpoint folder atomically; used by `save_checkpoint` and the legacy converter."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    mapping = _jsonable_mapping(key_mapping)
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "preset": cfg.preset,
        "backbone": cfg.backbone,
        "backbone_fingerprint": backbone_fingerprint(cfg.backbone),
        "dims": {"vlm_hidden": cfg.vlm_hidden, "d_model": cfg.d_model, "num_queries": cfg.num_queries,
                 "action_dim": cfg.action_dim, "proprio_dim": cfg.proprio_dim},
        "action_layout": {"key": (mapping or {}).get("actions"), "dim": cfg.action_dim,
                          "chunk": cfg.num_queries},
        "proprio_layout": (mapping or {}).get("proprio"),
        "key_mapping": mapping,
        "instruction": instruction,
        "has_adapter": write_adapter is not None,
        "model": cfg.to_dict(),
        "extra": extra or {},
        "versions": _versions(),
    }
    with atomic_dir(out_dir) as tmp:
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in head_state.items()}
        save_file(tensors, str(tmp / HEAD_FILE), metadata={"format": FORMAT})
        if write_adapter is not None:
            write_adapter(tmp / ADAPTER_DIR)
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=1))
        (tmp / NORM_FILE).write_text(json.dumps(norm_stats.to_dict(), indent=1))
        files = {p.relative_to(tmp).as_posix(): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
                 for p in sorted(tmp.rglob("*")) if p.is_file()}
        (tmp / MANIFEST_FILE).write_text(json.dumps({"format": FORMAT, "format_version": FORMAT_VERSION,
                                                     "files": files}, indent=1))
    return out_dir


def save_checkpoint(model, out_dir: str | Path, *, key_mapping: Any = None, instruction: str = "",
                    extra: dict | None = None, state_dict: Mapping[str, torch.Tensor] | None = None) -> Path:
    """Save a `VLAModel`'s trainable weights, config and norm stats to `out_dir` (atomically).

    `state_dict`: the model's full state dict gathered by the trainer (``accelerator.get_state_dict``, so
    FSDP-sharded weights are complete and names carry no wrapper prefixes); default ``model.state_dict()``.
    """
    from .modeling import HEAD_MODULES

    if state_dict is None:
        head_state, backbone_state = model.head_state_dict(), None
    else:
        head_state = {k: v for k, v in state_dict.items() if k.split(".", 1)[0] in HEAD_MODULES}
        backbone_state = {k[len("backbone."):]: v for k, v in state_dict.items() if k.startswith("backbone.")}
    write_adapter = None
    if hasattr(model.backbone, "peft_config"):

        def write_adapter(folder: Path) -> None:
            model.backbone.save_pretrained(str(folder), safe_serialization=True, state_dict=backbone_state)
            if any("_fsdp_wrapped_module" in n for n, _ in model.backbone.named_modules()):
                # peft (0.21) finds LoRA layers by module name and strips only a leading FSDP prefix, so under
                # FSDP auto-wrapping (LoRA inside wrapped decoder layers) it writes an empty adapter. Select the
                # adapter by peft's key naming instead: its tensors, with the adapter name dropped.
                from safetensors.torch import save_file

                name = f".{model.backbone.active_adapter}."
                state = model.backbone.state_dict() if backbone_state is None else backbone_state
                tensors = {k.replace(name, "."): v.detach().to("cpu").contiguous()
                           for k, v in state.items() if "lora_" in k and name in k}
                save_file(tensors, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})

    return write_checkpoint(out_dir, model.cfg, head_state, model.get_norm_stats(),
                            key_mapping=key_mapping, instruction=instruction, extra=extra,
                            write_adapter=write_adapter)


# ---------------------------------------------------------------------- verification and loading
REFETCH = "re-copy the whole checkpoint folder or re-export it from training"


def verify_checkpoint(path: str | Path) -> dict[str, Any]:
    """Check the manifest against the files; return the manifest. Raises CheckpointError."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a checkpoint folder (it does not exist or is a file); pass the folder "
                              "written by save_checkpoint / scripts/train.py")
    manifest_path = path / MANIFEST_FILE
    if not manifest_path.is_file():
        raise CheckpointError(f"{manifest_path}: missing, so the checkpoint cannot be verified; {REFETCH} "
                              "(legacy .pt files: convert them with vla-convert-legacy)")
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
        if manifest.get("format") != FORMAT or not isinstance(files, dict):
            raise ValueError(f"not a {FORMAT} manifest")
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{manifest_path}: unreadable or tampered manifest ({exc}); {REFETCH}") from exc
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{manifest_path}: format_version {manifest['format_version']} is newer than this "
                              f"vla-isaac understands ({FORMAT_VERSION}); upgrade vla-isaac")
    for required in REQUIRED_FILES:
        if required not in files:
            raise CheckpointError(f"{manifest_path}: does not list {required}; the manifest was tampered with; "
                                  f"{REFETCH}")
    for rel, info in files.items():
        target = (path / rel).resolve()
        if path.resolve() not in target.parents:
            raise CheckpointError(f"{manifest_path}: entry {rel!r} points outside the checkpoint; {REFETCH}")
        if not target.is_file():
            raise CheckpointError(f"{path / rel}: missing (listed in manifest.json); {REFETCH}")
        size = target.stat().st_size
        try:
            expected_size, expected_sha = int(info["bytes"]), str(info["sha256"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{manifest_path}: entry {rel!r} is malformed ({exc}); {REFETCH}") from exc
        if size != expected_size:
            raise CheckpointError(f"{path / rel}: {size} bytes but manifest.json says {expected_size} "
                                  f"(truncated or modified); {REFETCH}")
        if sha256_file(target) != expected_sha:
            raise CheckpointError(f"{path / rel}: sha256 does not match manifest.json (file modified or corrupted); "
                                  f"{REFETCH}")
    return manifest


def read_checkpoint_config(path: str | Path, *, verify: bool = True) -> dict[str, Any]:
    """config.json of a checkpoint (model config, key_mapping, instruction, layouts, extra)."""
    path = Path(path)
    if verify:
        verify_checkpoint(path)
    try:
        config = json.loads((path / CONFIG_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path / CONFIG_FILE}: unreadable ({exc}); {REFETCH}") from exc
    if config.get("format") != FORMAT or "model" not in config:
        raise CheckpointError(f"{path / CONFIG_FILE}: not a {FORMAT} config; {REFETCH}")
    return config


def load_vla(path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
             *, trainable: bool = False):
    """Rebuild a `VLAModel` from a checkpoint (backbone from its id/path, then the saved weights)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from vla.modeling import VLAModel

    path = Path(path)
    config = read_checkpoint_config(path, verify=True)
    try:
        cfg = VLAConfig.from_dict(config["model"], source=str(path / CONFIG_FILE), checkpoint=True)
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from exc
    recorded = config.get("backbone_fingerprint")
    if recorded and (current := backbone_fingerprint(cfg.backbone)) and current != recorded:
        raise CheckpointError(f"{path / CONFIG_FILE}: backbone '{cfg.backbone}' on this machine has different weights "
                              "than the one the checkpoint was trained with (other torch/transformers versions "
                              "build another random tiny model); retrain, or install the versions in "
                              f"config.json 'versions': {config.get('versions')}")
    if config.get("has_adapter"):
        missing = [f for f in ADAPTER_FILES if not (path / f).is_file()]
        if missing:
            raise CheckpointError(f"{path / missing[0]}: missing LoRA adapter file; {REFETCH}")
    model = VLAModel(cfg, device=device, dtype=dtype, trainable=trainable,
                     adapter_dir=str(path / ADAPTER_DIR) if config.get("has_adapter") else None)
    try:
        state = load_file(str(path / HEAD_FILE))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path / HEAD_FILE}: unreadable safetensors ({exc}); {REFETCH}") from exc
    expected = model.head_state_dict()
    if set(state) != set(expected):
        diff = sorted(set(state) ^ set(expected))[:5]
        raise CheckpointError(f"{path / HEAD_FILE}: tensors do not match the config's head (e.g. {diff}); the "
                              f"config and weights come from different models; {REFETCH}")
    for key, value in state.items():
        if value.shape != expected[key].shape:
            raise CheckpointError(f"{path / HEAD_FILE}: {key} has shape {tuple(value.shape)}, the config expects "
                                  f"{tuple(expected[key].shape)}; {REFETCH}")
    model.load_state_dict(state, strict=False)
    try:
        model.set_norm_stats(NormStats.load(path / NORM_FILE))
    except (NormStatsError, ValueError) as exc:
        raise CheckpointError(f"{path / NORM_FILE}: {exc}; {REFETCH}") from exc
    for name in ("projector", "memory_pos", "expert"):
        module = getattr(model, name)
        if module is not None:
            module.to(device=device, dtype=dtype)
    if not trainable:
        model.requires_grad_(False)
        model.eval()
    return model


def load_vla_for_inference(path: str | Path, device: str | torch.device = "cpu",
                           dtype: torch.dtype = torch.float32):
    """Verified, eval-mode `VLAModel` with no parameter requiring grad (backbone and head in `dtype`)."""
    return load_vla(path, device=device, dtype=dtype, trainable=False)
