"""`VLAConfig`: everything that defines a VLA model, as a plain dataclass with a yaml/json round trip.

Presets live in `config/model/<name>.yaml`; a checkpoint stores the resolved config in its
`config.json`, so a checkpoint never depends on the preset file it was trained from.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .configs import available, config_dir

MODEL_PRESET_DIR = config_dir("model")

# What the action expert attends to (`VLAModel._selection`): every prompt token, the image tokens of both views,
# the image tokens plus the instruction's tokens (every token after the last image token: the instruction and
# the prompt's closing tokens, which in a causal LM see the images AND the instruction), or the last token.
CONDITIONING_MODES = ("all_tokens", "image_tokens", "last_token", "image_and_text_tokens")
PROJECTORS = ("mlp", "ln_linear")
NORM_MODES = ("mean_std", "quantile")
TIME_SAMPLING = ("uniform", "beta")
STATE_HEAD_VIEWS = ("both", "context")

# LoRA on the language model's attention projections only (module names of the base Qwen2_5_VLModel are
# `language_model.*`; the vision tower lives under `visual.*` and stays untouched).
DEFAULT_LORA_TARGET = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj)"


# Training-only levers that earlier versions kept in the model config; they now live in the training config
# (`vla.training.config.LeverConfig`) and the model config describes only the model a checkpoint runs.
TRAINING_LEVER_KEYS = ("wrist_dropout", "proprio_dropout", "noise_draws_per_obs", "state_teacher_forcing")


class ConfigError(ValueError):
    """A model config or preset is invalid; the message names the key and the fix."""


@dataclass
class LoRASettings:
    enabled: bool = True
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    # A regex (peft matches it against full module names) or a list of module-name suffixes.
    target_modules: str | list[str] = DEFAULT_LORA_TARGET


@dataclass
class VLAConfig:
    preset: str = "custom"
    # Hub id ("Qwen/Qwen2.5-VL-7B-Instruct"), a local folder, or "tiny" (built locally, see vla.backbone.tiny).
    backbone: str = "Qwen/Qwen2.5-VL-7B-Instruct"
    vlm_hidden: int = 3584
    freeze_backbone: bool = True
    load_in_4bit: bool = False
    # Training only: recompute the backbone's layer activations in the backward pass instead of keeping
    # them (transformers' `gradient_checkpointing_enable`): less memory for LoRA runs, ~30% more compute.
    gradient_checkpointing: bool = False
    attn_implementation: str = "sdpa"
    lora: LoRASettings = field(default_factory=LoRASettings)

    # VLM input: both views resized to image_size [H, W] before the processor.
    image_size: list[int] = field(default_factory=lambda: [224, 224])
    context_label: str = "Context view:"
    wrist_label: str = "Wrist view:"

    # What the expert attends to, and how it gets there.
    conditioning: str = "all_tokens"
    projector: str = "mlp"
    memory_pos_emb: bool = False
    max_memory_tokens: int = 1024  # size of the memory position table (memory_pos_emb only)

    # Action expert.
    d_model: int = 512
    expert_layers: int = 6
    expert_heads: int = 8
    expert_ff_mult: int = 4
    expert_dropout: float = 0.0
    num_queries: int = 16
    action_dim: int = 7
    proprio_dim: int = 27
    # Size of the object state (e.g. the cube's position and orientation, 7) that a state head estimates
    # from the memory tokens and the proprio and hands to the expert as one token; 0 = no state head.
    # Trained from recorded state (the training config's aux_state.keys); the policy needs images only.
    state_dim: int = 0
    # Looks the state head takes at the memory: 1 = one attention pooling; each extra layer refines the pooled
    # query (MLP) and attends again.
    state_head_layers: int = 1
    # Which image tokens the state head reads: "both" views, or the "context" view only (then the object-state
    # estimate, and the actions that follow it, must come from the context camera; needs image-token
    # conditioning).
    state_head_views: str = "both"

    # Flow matching.
    flow_steps: int = 10
    time_sampling: str = "uniform"
    norm_mode: str = "mean_std"

    def __post_init__(self) -> None:
        if isinstance(self.lora, dict):
            self.lora = LoRASettings(**self.lora)
        self.image_size = [int(x) for x in self.image_size]
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        def bad(key: str, msg: str) -> ConfigError:
            return ConfigError(f"model config '{self.preset}': {key}: {msg}")

        if self.conditioning not in CONDITIONING_MODES:
            raise bad("conditioning", f"{self.conditioning!r} is not one of {CONDITIONING_MODES}")
        if self.projector not in PROJECTORS:
            raise bad("projector", f"{self.projector!r} is not one of {PROJECTORS}")
        if self.norm_mode not in NORM_MODES:
            raise bad("norm_mode", f"{self.norm_mode!r} is not one of {NORM_MODES}")
        if self.time_sampling not in TIME_SAMPLING:
            raise bad("time_sampling", f"{self.time_sampling!r} is not one of {TIME_SAMPLING}")
        if len(self.image_size) != 2 or min(self.image_size) < 28:
            raise bad("image_size", f"{self.image_size} must be [H, W], each >= 28 pixels")
        if self.d_model % self.expert_heads:
            raise bad("expert_heads", f"d_model {self.d_model} must be divisible by expert_heads {self.expert_heads}")
        for key in ("vlm_hidden", "d_model", "expert_layers", "num_queries", "action_dim", "proprio_dim",
                    "flow_steps", "max_memory_tokens", "state_head_layers"):
            if int(getattr(self, key)) < 1:
                raise bad(key, f"must be >= 1, got {getattr(self, key)}")
        if int(self.state_dim) < 0:
            raise bad("state_dim", f"must be >= 0 (0 = no state head), got {self.state_dim}")
        if self.state_head_views not in STATE_HEAD_VIEWS:
            raise bad("state_head_views", f"{self.state_head_views!r} is not one of {STATE_HEAD_VIEWS}")
        if self.state_head_views == "context" and self.conditioning not in ("image_tokens", "image_and_text_tokens"):
            raise bad("state_head_views", f"'context' needs conditioning image_tokens or image_and_text_tokens "
                                          f"(the context view's tokens), not {self.conditioning!r}")
        if self.lora.enabled and not self.freeze_backbone:
            raise bad("lora.enabled", "LoRA needs freeze_backbone: true (LoRA adapts a frozen backbone)")

    @property
    def vlm_trainable(self) -> bool:
        """True when gradients flow into the backbone (LoRA or unfrozen): VLM features cannot be cached."""
        return self.lora.enabled or not self.freeze_backbone

    # ------------------------------------------------------------------ round trip
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config", checkpoint: bool = False) -> VLAConfig:
        """`checkpoint=True`: a checkpoint's stored config, where the training levers that older versions kept
        in the model config are dropped (they never changed the model a checkpoint runs)."""
        data = dict(data)
        moved = sorted(set(data) & set(TRAINING_LEVER_KEYS))
        if moved and checkpoint:
            for key in moved:
                data.pop(key)
        elif moved:
            raise ConfigError(f"{source}: {moved} are training levers, not model settings; set them in the "
                              f"training config instead ({', '.join('levers.' + k for k in moved)})")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown model config key(s) {unknown}; known keys: {sorted(known)}")
        lora = data.get("lora", {})
        if isinstance(lora, dict):
            lora_known = {f.name for f in dataclasses.fields(LoRASettings)}
            if set(lora) - lora_known:
                raise ConfigError(f"{source}: unknown lora key(s) {sorted(set(lora) - lora_known)}; "
                                  f"known: {sorted(lora_known)}")
        try:
            return cls(**data)
        except TypeError as exc:
            raise ConfigError(f"{source}: {exc}") from exc

    def replace(self, **changes: Any) -> VLAConfig:
        data = self.to_dict()
        for key, value in changes.items():
            if key == "lora" and isinstance(value, dict):
                data["lora"] = {**data["lora"], **value}
            else:
                data[key] = value
        return VLAConfig.from_dict(data, source=f"{self.preset} (overridden)")


def available_presets() -> list[str]:
    return available("model")


def load_model_preset(name_or_path: str | Path, **overrides: Any) -> VLAConfig:
    """Read `config/model/<name>.yaml` (or a yaml/json file path) into a `VLAConfig`."""
    import json

    import yaml

    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml", ".json"):  # a preset name ("qwen2.5-vl-7b" has a dot, not a suffix)
        path = MODEL_PRESET_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ConfigError(f"model preset '{name_or_path}' not found (looked for {path}); "
                          f"available presets: {available_presets()}")
    text = path.read_text()
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: not valid {path.suffix[1:]}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of model config keys at the top level")
    data.setdefault("preset", path.stem)
    cfg = VLAConfig.from_dict(data, source=str(path))
    return cfg.replace(**overrides) if overrides else cfg
