"""Training configuration: a YAML file in ``config/training/`` plus ``key=value`` overrides.

Every key is declared here, so a typo (``optim.lr_head=...``) fails before anything runs instead of
being silently ignored. The resolved config is written to ``<output_dir>/train_config.yaml`` and a
resumed run must match it on everything that decides the trajectory (model, data, optimisation).
"""

from __future__ import annotations

import dataclasses
import glob
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..configs import config_dir

TRAIN_CONFIG_DIR = config_dir("training")
REPO_ROOT = Path(__file__).resolve().parents[3]  # a checkout's root: relative data paths also resolve against it


class TrainConfigError(ValueError):
    """Unknown key, bad value or missing file in a training config."""


@dataclass
class DataConfig:
    files: list[str] = field(default_factory=list)  # HDF5 demo files (relative paths: from the repo root or cwd)
    key_mapping: str = "isaaclab_stack"  # config/key_mappings/<name>.json or a path
    val_fraction: float = 0.1  # share of demos held out (split by demo)
    max_demos: int | None = None  # first N demos only (overfit checks)
    success_only: bool = False  # skip demos whose `success` attribute is False
    instruction: str | None = None  # override every sample's instruction
    num_workers: int = 0  # DataLoader workers (each opens its own h5py handles)


@dataclass
class OptimConfig:
    lr_heads: float = 1e-3  # projector + action expert
    lr_lora: float = 2e-4  # LoRA adapters in the backbone
    weight_decay: float = 0.01  # on matrices only (not biases / norms / embeddings of size 1-D)
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    warmup_steps: int = 100  # linear warmup, then cosine decay to min_lr_ratio * lr
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0  # max global grad norm (0 = off)


@dataclass
class EMAConfig:
    enabled: bool = False  # exponential moving average of the head weights, used for val and checkpoints
    decay: float = 0.999


@dataclass
class LeverConfig:
    """Training-only regularisers (`vla.modeling.TrainingLevers`): they shape what the head learns from and
    are not part of the model a checkpoint runs (docs/training.md, "Training levers")."""

    wrist_dropout: float = 0.0  # share of samples whose wrist-view tokens are hidden: the context view must count
    proprio_dropout: float = 0.0  # share of samples whose proprio is its mean: state must come from the images
    noise_draws_per_obs: int = 1  # flow noise/time draws per VLM forward (LoRA: the VLM dominates a step)
    state_teacher_forcing: float = 0.0  # share of samples whose expert reads the recorded state, not the estimate


@dataclass
class AuxStateConfig:
    """Training-only auxiliary loss: regress recorded privileged state from the context-view tokens."""

    keys: list[str] = field(default_factory=list)  # obs keys in the demos, e.g. [cube_positions]; [] = off
    weight: float = 0.5  # added to the flow-matching loss as weight * MSE(normalised state)


@dataclass
class TrainConfig:
    model: str = "tiny"  # config/model/<name>.yaml or a path
    model_overrides: dict[str, Any] = field(default_factory=dict)  # VLAConfig fields, e.g. {d_model: 128}
    data: DataConfig = field(default_factory=DataConfig)
    output_dir: str = "outputs/train"
    seed: int = 0
    max_steps: int = 1000  # optimizer steps
    batch_size: int = 16  # per process, per micro-batch
    grad_accum_steps: int = 1
    optim: OptimConfig = field(default_factory=OptimConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)
    levers: LeverConfig = field(default_factory=LeverConfig)
    aux_state: AuxStateConfig = field(default_factory=AuxStateConfig)
    # Frozen backbone (no LoRA): compute VLM features once and train the head on them.
    # auto = memory cache when the backbone is frozen; disk = also keep them in <output_dir>/feature_cache.
    feature_cache: str = "auto"  # auto | memory | disk | off
    mixed_precision: str = "auto"  # auto (bf16 on CUDA, none on CPU) | bf16 | fp16 | no
    # torch intra-op threads when training on the CPU (0 = torch's default). The tiny model's ops are so
    # small that thread hand-offs dominate: 1 thread was 15x faster per step on a busy 2-core machine.
    cpu_threads: int = 0
    log_every: int = 10
    val_every: int = 200  # 0 = only at the end
    val_batches: int = 8
    save_every: int = 500  # periodic checkpoint + resumable training state (0 = only the final checkpoint)
    keep_last: int = 2  # training states kept (checkpoints are all kept)
    image_effect_samples: int = 32  # val samples for the conditioning report at each validation (0 = skip)

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_dict(cls, data: dict, source: str = "config") -> TrainConfig:
        return _build(cls, data, source, prefix="")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self, source: str = "config") -> None:
        def bad(key: str, msg: str) -> TrainConfigError:
            return TrainConfigError(f"{source}: {key}: {msg}")

        if not self.data.files:
            raise bad(
                "data.files", "no demo files; set data.files=[demos/stack.hdf5] (record with scripts/record_demos.py)"
            )
        for key in ("max_steps", "batch_size", "grad_accum_steps", "log_every"):
            if int(getattr(self, key)) < 1:
                raise bad(key, f"must be >= 1, got {getattr(self, key)}")
        for key in ("val_every", "save_every", "val_batches", "image_effect_samples", "keep_last", "cpu_threads"):
            if int(getattr(self, key)) < 0:
                raise bad(key, f"must be >= 0, got {getattr(self, key)}")
        if not 0.0 <= self.data.val_fraction < 1.0:
            raise bad("data.val_fraction", f"must be in [0, 1), got {self.data.val_fraction}")
        if self.data.num_workers < 0:
            raise bad("data.num_workers", f"must be >= 0, got {self.data.num_workers}")
        if self.feature_cache not in ("auto", "memory", "disk", "off"):
            raise bad("feature_cache", f"{self.feature_cache!r} is not one of auto, memory, disk, off")
        if self.mixed_precision not in ("auto", "bf16", "fp16", "no"):
            raise bad("mixed_precision", f"{self.mixed_precision!r} is not one of auto, bf16, fp16, no")
        o = self.optim
        if o.lr_heads <= 0 or o.lr_lora <= 0:
            raise bad("optim.lr_heads/lr_lora", "learning rates must be > 0")
        if len(o.betas) != 2:
            raise bad("optim.betas", f"needs two values, got {o.betas}")
        if not 0.0 <= o.min_lr_ratio <= 1.0:
            raise bad("optim.min_lr_ratio", f"must be in [0, 1], got {o.min_lr_ratio}")
        if o.warmup_steps < 0 or o.grad_clip < 0:
            raise bad("optim.warmup_steps/grad_clip", "must be >= 0")
        if not 0.0 < self.ema.decay < 1.0:
            raise bad("ema.decay", f"must be in (0, 1), got {self.ema.decay}")
        if self.aux_state.weight < 0:
            raise bad("aux_state.weight", f"must be >= 0, got {self.aux_state.weight}")
        for key in ("wrist_dropout", "proprio_dropout", "state_teacher_forcing"):
            if not 0.0 <= getattr(self.levers, key) < 1.0:
                raise bad(f"levers.{key}", f"must be in [0, 1), got {getattr(self.levers, key)}")
        if self.levers.noise_draws_per_obs < 1:
            raise bad("levers.noise_draws_per_obs", f"must be >= 1, got {self.levers.noise_draws_per_obs}")
        from ..config import TRAINING_LEVER_KEYS

        moved = sorted(set(self.model_overrides) & set(TRAINING_LEVER_KEYS))
        if moved:
            raise bad(f"model_overrides.{moved[0]}", f"is a training lever, not a model setting: use levers.{moved[0]}")

    def resolve_paths(self, base: Path | None = None) -> None:
        """Expand globs (``cosmos/*.hdf5``); relative paths from the current directory, else the repo root."""
        files = []
        for f in self.data.files:
            if any(c in f for c in "*?["):
                matches = sorted(glob.glob(os.path.expanduser(f))) or sorted(glob.glob(str((base or REPO_ROOT) / f)))
                files += matches or [f]  # no match: verify reports the pattern as a missing file
            else:
                files.append(str(_resolve(f, base)))
        self.data.files = files


def _resolve(p: str, base: Path | None) -> Path:
    path = Path(p).expanduser()
    if path.is_absolute() or path.exists():
        return path.absolute() if path.exists() else path
    alt = (base or REPO_ROOT) / path
    return alt if alt.exists() else path


def _build(cls, data: Any, source: str, prefix: str):
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise TrainConfigError(f"{source}: '{prefix.rstrip('.') or 'top level'}' must be a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise TrainConfigError(
            f"{source}: unknown config key(s) {[prefix + k for k in unknown]}; "
            f"known: {sorted(prefix + k for k in fields)}"
        )
    kwargs = {}
    for name, value in data.items():
        f = fields[name]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            kwargs[name] = _build(type(default), value, source, prefix + name + ".")
        else:
            kwargs[name] = _coerce(value, default, f"{prefix}{name}", source)
    return cls(**kwargs)


def _coerce(value, default, key: str, source: str):
    if value is None or default is None:
        return value
    try:
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise TypeError
            return value
        if isinstance(default, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError
            return value
        if isinstance(default, float):
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if isinstance(default, str):
            if not isinstance(value, str):
                raise TypeError
            return value
        if isinstance(default, list):
            return list(value) if isinstance(value, (list, tuple)) else [value]
        if isinstance(default, dict):
            if not isinstance(value, dict):
                raise TypeError
            return dict(value)
    except (TypeError, ValueError):
        raise TrainConfigError(f"{source}: {key}: expected {type(default).__name__}, got {value!r}") from None
    return value


def _set_dotted(d: dict, dotted: str, value) -> None:
    keys = dotted.split(".")
    for k in keys[:-1]:
        if not isinstance(d.get(k), dict):
            d[k] = {}
        d = d[k]
    d[keys[-1]] = value


def available_configs() -> list[str]:
    return sorted(p.stem for p in TRAIN_CONFIG_DIR.glob("*.yaml"))


def load_train_config(name_or_path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Read a training config by name or path and apply ``key=value`` overrides (values parsed as YAML)."""
    path = Path(name_or_path)
    if not path.is_file() and not path.suffix:
        path = TRAIN_CONFIG_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise TrainConfigError(
            f"training config '{name_or_path}' not found; available: {available_configs()} or a .yaml path"
        )
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise TrainConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise TrainConfigError(f"{path}: expected a mapping of config keys at the top level")
    for item in overrides or []:
        if "=" not in item:
            raise TrainConfigError(f"override '{item}': expected key=value (e.g. max_steps=200 or optim.lr_heads=3e-4)")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        _set_dotted(data, key.strip(), value)
    cfg = TrainConfig.from_dict(data, source=str(path))
    cfg.validate(source=str(path))
    return cfg
