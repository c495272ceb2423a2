"""Which HDF5 / observation keys feed which model input, and in what order.

A key mapping is the one place that ties a recording layout (this project's Isaac Lab recorder, NVIDIA's
Cosmos stack datasets, a user's own robomimic files) to the model's fixed inputs: two RGB views, a
proprio vector and a 7-dim action. The same mapping is stored in every checkpoint and used by the
Isaac Lab policy at run time, so training and deployment read the same keys in the same order.

Files ship with the package as ``vla/configs/key_mappings/<name>.json`` (``config/key_mappings/`` in a checkout)::

    {"name": "isaaclab_stack",
     "context_image": "table_cam", "wrist_image": "wrist_cam",
     "proprio": [["eef_pos", 3], ["eef_quat", 4], ["gripper_pos", 2], ["joint_pos", 9], ["joint_vel", 9]],
     "actions": "actions", "action_dim": 7,
     "instruction": "stack the red cube on the blue cube", "instruction_attr": "instruction"}
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..configs import available, config_file

_REQUIRED = ("context_image", "wrist_image", "proprio")
_FIELDS = (
    "name",
    "description",
    "context_image",
    "wrist_image",
    "proprio",
    "actions",
    "action_dim",
    "instruction",
    "instruction_attr",
)


class KeyMappingError(ValueError):
    """A key mapping file or an observation dict doesn't fit the expected layout."""


@dataclass(frozen=True)
class KeyMapping:
    """Recording keys -> model inputs.

    Attributes:
        context_image: obs key of the third-person RGB view (uint8, T x H x W x 3).
        wrist_image: obs key of the wrist RGB view.
        proprio: ordered ``(obs_key, dim)`` pairs concatenated into the proprio vector.
        actions: key of the action array at demo level (``data/demo_N/<actions>``).
        action_dim: width of the action array (6 relative IK pose deltas + 1 gripper).
        instruction: default language instruction when the file carries none.
        instruction_attr: demo / ``data`` / file attribute holding a per-demo instruction, if any.
    """

    context_image: str
    wrist_image: str
    proprio: tuple[tuple[str, int], ...]
    actions: str = "actions"
    action_dim: int = 7
    instruction: str = ""
    instruction_attr: str | None = "instruction"
    name: str = "custom"
    description: str = field(default="", compare=False)

    @property
    def proprio_dim(self) -> int:
        return sum(d for _, d in self.proprio)

    @property
    def proprio_keys(self) -> list[str]:
        return [k for k, _ in self.proprio]

    @property
    def obs_keys(self) -> list[str]:
        """Every ``obs/<key>`` a demo must contain."""
        return [self.context_image, self.wrist_image, *self.proprio_keys]

    # ------------------------------------------------------------------ (de)serialisation
    @classmethod
    def from_dict(cls, d: Mapping, source: str = "key mapping") -> KeyMapping:
        unknown = sorted(set(d) - set(_FIELDS))
        if unknown:
            raise KeyMappingError(f"{source}: unknown field(s) {unknown}; allowed: {list(_FIELDS)}")
        missing = [k for k in _REQUIRED if k not in d]
        if missing:
            raise KeyMappingError(f"{source}: missing field(s) {missing}; see config/key_mappings/isaaclab_stack.json")
        try:
            proprio = tuple((str(k), int(n)) for k, n in d["proprio"])
        except (TypeError, ValueError):
            raise KeyMappingError(
                f"{source}: 'proprio' must be a list of [obs_key, dim] pairs, got {d['proprio']!r}"
            ) from None
        if not proprio or any(n <= 0 for _, n in proprio):
            raise KeyMappingError(f"{source}: 'proprio' needs at least one [obs_key, dim] pair with dim > 0")
        action_dim = int(d.get("action_dim", 7))
        if action_dim <= 0:
            raise KeyMappingError(f"{source}: 'action_dim' must be positive, got {action_dim}")
        attr = d.get("instruction_attr", "instruction")
        return cls(
            context_image=str(d["context_image"]),
            wrist_image=str(d["wrist_image"]),
            proprio=proprio,
            actions=str(d.get("actions", "actions")),
            action_dim=action_dim,
            instruction=str(d.get("instruction", "")),
            instruction_attr=str(attr) if attr else None,
            name=str(d.get("name", "custom")),
            description=str(d.get("description", "")),
        )

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "description": self.description,
            "context_image": self.context_image,
            "wrist_image": self.wrist_image,
            "proprio": [[k, n] for k, n in self.proprio],
            "actions": self.actions,
            "action_dim": self.action_dim,
            "instruction": self.instruction,
            "instruction_attr": self.instruction_attr,
        }

    @classmethod
    def load(cls, name_or_path: str | Path | KeyMapping | Mapping) -> KeyMapping:
        """A mapping from a shipped name (``isaaclab_lift``), a JSON path, a dict, or a KeyMapping."""
        if isinstance(name_or_path, KeyMapping):
            return name_or_path
        if isinstance(name_or_path, Mapping):
            return cls.from_dict(name_or_path)
        text = str(name_or_path)
        path = Path(text)
        if not path.suffix and not path.exists():
            path = config_file("key_mappings", text)
        if not path.is_file():
            raise KeyMappingError(
                f"key mapping '{text}' not found; use one of {available_key_mappings()} or a path to a .json file"
            )
        try:
            d = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise KeyMappingError(f"{path}: not valid JSON ({e}); fix the file") from None
        d.setdefault("name", path.stem)
        return cls.from_dict(d, source=str(path))

    def fingerprint(self) -> str:
        """Short hash of the fields that decide what data is read (not the name or description)."""
        d = self.to_dict()
        d.pop("name"), d.pop("description")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def available_key_mappings() -> list[str]:
    return available("key_mappings")


def build_proprio(obs: Mapping, mapping: KeyMapping):
    """Concatenate the mapping's proprio keys of ``obs`` into one float32 ``(B, P)`` array.

    ``obs`` values are ``(B, dim)`` (or ``(dim,)`` for one step) numpy arrays or torch tensors. Returns a
    torch tensor (on the inputs' device) if any input is a tensor, else a numpy array. Shared by the
    dataset and the Isaac Lab policy so both build proprio identically.
    """
    parts, use_torch = [], False
    for key, dim in mapping.proprio:
        if key not in obs:
            raise KeyMappingError(
                f"observation lacks '{key}' required by key mapping '{mapping.name}' (has {sorted(obs)}); "
                "record that key or use a key mapping that matches the data"
            )
        x = obs[key]
        if hasattr(x, "torch"):  # Isaac Lab ProxyArray
            x = x.torch
        use_torch = use_torch or _is_tensor(x)
        shape = tuple(x.shape)
        if len(shape) == 1:
            x = x[None]
            shape = tuple(x.shape)
        if len(shape) != 2 or shape[-1] != dim:
            raise KeyMappingError(
                f"observation '{key}' has shape {shape} but key mapping '{mapping.name}' expects (B, {dim}); "
                "fix the mapping's dim or the recorded observation"
            )
        parts.append(x)
    if use_torch:
        import torch

        device = next(p.device for p in parts if _is_tensor(p))
        return torch.cat([torch.as_tensor(p, device=device).float() for p in parts], dim=-1)
    return np.concatenate([np.asarray(p, dtype=np.float32) for p in parts], axis=-1)


def _is_tensor(x) -> bool:
    return type(x).__module__.startswith("torch")
