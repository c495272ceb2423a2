"""Which exceptions mean bad input (config, data, model files) rather than a bug: the training scripts
print those as one line and exit 2."""

from __future__ import annotations

from .config import TrainConfigError
from .state import TrainingStateError


def input_error_types() -> tuple[type[Exception], ...]:
    """Exceptions that mean bad input (config, data, model files): scripts print one line and exit 2."""
    from ..backbone.qwen import BackboneError
    from ..checkpoint import CheckpointError
    from ..config import ConfigError
    from ..data.hdf5 import DatasetError
    from ..data.key_mapping import KeyMappingError
    from ..data.preprocess import ImageFormatError
    from ..normalization import NormStatsError

    return (
        TrainConfigError,
        TrainingStateError,
        DatasetError,
        KeyMappingError,
        ConfigError,
        BackboneError,
        CheckpointError,
        NormStatsError,
        ImageFormatError,  # also vla.backbone.images.ImageInputError (the same type)
    )
