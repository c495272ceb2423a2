"""Training from recorded demos: config, the accelerate trainer, resumable state, diagnostics."""

from .config import TrainConfig, TrainConfigError, load_train_config
from .diagnostics import image_effect, image_effects
from .trainer import RunPlan, Trainer, plan_run, train

__all__ = [
    "RunPlan",
    "TrainConfig",
    "TrainConfigError",
    "Trainer",
    "image_effect",
    "image_effects",
    "load_train_config",
    "plan_run",
    "train",
]
