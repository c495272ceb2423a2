"""Training from recorded demos: config, the accelerate trainer, resumable state."""

from .config import TrainConfig, TrainConfigError, load_train_config
from .plan import RunPlan, plan_run
from .trainer import Trainer, train

__all__ = [
    "RunPlan",
    "TrainConfig",
    "TrainConfigError",
    "Trainer",
    "load_train_config",
    "plan_run",
    "train",
]
