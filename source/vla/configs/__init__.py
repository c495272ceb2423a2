"""The presets that ship with the package: model presets, training configs, key mappings, accelerate configs.

    config_file("model", "tiny")                 # .../vla/configs/model/tiny.yaml
    config_file("key_mappings", "isaaclab_lift") # .../vla/configs/key_mappings/isaaclab_lift.json
    available("training")                        # ["lift_7b", "lift_tiny_cpu", ...]

They are package data read through :mod:`importlib.resources`, so a wheel install finds them from any
folder, the same as a source checkout (where ``config/`` at the repository root holds the same files).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

KINDS: dict[str, str] = {"model": ".yaml", "training": ".yaml", "key_mappings": ".json", "accelerate": ".yaml"}
"""Folder of each kind of preset and the suffix of its files."""


def config_dir(kind: str) -> Path:
    """The folder of one kind of preset (``model``, ``training``, ``key_mappings`` or ``accelerate``)."""
    if kind not in KINDS:
        raise ValueError(f"preset kind {kind!r}: choose one of {', '.join(KINDS)}")
    return Path(str(files(__name__) / kind))  # installed as plain files (the wheel is not zip-safe)


def config_file(kind: str, name: str) -> Path:
    """The file of preset ``name`` of ``kind`` (it may not exist: callers report what is available)."""
    return config_dir(kind) / f"{name}{KINDS[kind]}"


def available(kind: str) -> list[str]:
    """Names of the presets of ``kind``, sorted."""
    return sorted(p.stem for p in config_dir(kind).glob(f"*{KINDS[kind]}"))
