"""Shared pytest setup: keep caches inside the user's cache dir and torch on one thread per process."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # every test builds what it needs; nothing is downloaded


def pytest_configure(config):
    # make_env leaves torch's thread count alone (a library must not set it); tests build envs in-process
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def repo_root():
    from pathlib import Path

    return Path(__file__).resolve().parents[1]


TINY_IMAGE = (64, 64)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """An untrained tiny-preset checkpoint (64x64 inputs) with plausible norm stats for the lift key mapping."""
    import numpy as np
    import torch

    from vla.checkpoint import save_checkpoint
    from vla.config import load_model_preset
    from vla.data.key_mapping import KeyMapping
    from vla.modeling import VLAModel
    from vla.normalization import FeatureStats, NormStats

    torch.manual_seed(0)
    cfg = load_model_preset("tiny").replace(image_size=list(TINY_IMAGE))
    model = VLAModel(cfg)
    act = FeatureStats(mean=np.zeros(7), std=np.full(7, 0.2), q01=-np.ones(7), q99=np.ones(7))
    model.set_norm_stats(NormStats(action=act, proprio=FeatureStats.identity(27)))
    out = tmp_path_factory.mktemp("ckpt") / "tiny"
    save_checkpoint(model, out, key_mapping=KeyMapping.load("isaaclab_lift").to_dict(), instruction="lift the red cube")
    return out
