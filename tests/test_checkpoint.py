"""Checkpoint folders: exact round trip, small, verified on load, written atomically."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from vla.checkpoint import (
    CheckpointError,
    load_vla_for_inference,
    read_checkpoint_config,
    save_checkpoint,
    verify_checkpoint,
)
from vla.config import load_model_preset
from vla.modeling import VLAModel
from vla.normalization import NormStats

torch.set_num_threads(1)
KEY_MAPPING = {"context_image": "table_cam", "wrist_image": "wrist_cam", "actions": "actions", "action_dim": 7,
               "proprio": [["eef_pos", 3], ["eef_quat", 4], ["gripper_pos", 2], ["joint_pos", 9], ["joint_vel", 9]]}


def _obs(batch=2, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (batch, 112, 112, 3), dtype=np.uint8),
            rng.integers(0, 256, (batch, 112, 112, 3), dtype=np.uint8),
            ["lift the red cube"] * batch, rng.normal(size=(batch, 27)).astype(np.float32))


def _trained_like(preset: str) -> VLAModel:
    """A model whose every saved part differs from a fresh one (LoRA B != 0, non-identity stats)."""
    torch.manual_seed(0)
    model = VLAModel(load_model_preset(preset))
    rng = np.random.default_rng(1)
    model.set_norm_stats(NormStats.from_arrays(rng.normal(size=(64, 16, 7)) * 2 + 1, rng.normal(size=(64, 27))))
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    return model


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model = _trained_like("tiny")
    path = save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "tiny", key_mapping=KEY_MAPPING,
                           instruction="lift the red cube", extra={"step": 50})
    return model, path


@pytest.mark.parametrize("preset", ["tiny", "tiny-lora"])
def test_round_trip_reproduces_predictions_exactly(tmp_path, preset):
    model = _trained_like(preset)
    path = save_checkpoint(model, tmp_path / "ckpt", key_mapping=KEY_MAPPING, instruction="lift the red cube")
    ctx, wrist, text, proprio = _obs()
    noise = torch.randn(2, 16, 7)
    expected = model.predict_action(ctx, wrist, text, proprio, noise=noise)
    loaded = load_vla_for_inference(path, device="cpu", dtype=torch.float32)
    assert torch.equal(loaded.predict_action(ctx, wrist, text, proprio, noise=noise), expected)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    assert (path / "adapter" / "adapter_model.safetensors").is_file() == (preset == "tiny-lora")
    assert sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) < 5e6  # trainable weights only


def test_config_records_layout_mapping_and_instruction(saved):
    model, path = saved
    config = read_checkpoint_config(path)
    assert config["key_mapping"] == KEY_MAPPING and config["instruction"] == "lift the red cube"
    assert config["proprio_layout"] == KEY_MAPPING["proprio"] and config["action_layout"]["dim"] == 7
    assert config["backbone"] == "tiny" and config["preset"] == "tiny" and config["extra"] == {"step": 50}
    assert config["model"] == model.cfg.to_dict() and config["backbone_fingerprint"]
    manifest = verify_checkpoint(path)
    assert set(manifest["files"]) == {"config.json", "norm_stats.json", "head.safetensors"}


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_tampered_manifest_is_rejected(saved, tmp_path):
    path = _copy(saved[1], tmp_path / "c")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"]["head.safetensors"]["sha256"] = "0" * 64
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match=r"head\.safetensors: sha256 does not match manifest\.json.*re-copy"):
        load_vla_for_inference(path)
    (path / "manifest.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"manifest\.json: unreadable or tampered"):
        load_vla_for_inference(path)
    manifest["files"].pop("norm_stats.json")
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match=r"does not list norm_stats\.json"):
        load_vla_for_inference(path)


def test_truncated_modified_or_missing_files_are_rejected(saved, tmp_path):
    path = _copy(saved[1], tmp_path / "c")
    head = path / "head.safetensors"
    head.write_bytes(head.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r"head\.safetensors: 1000 bytes but manifest\.json says \d+ \(truncated"):
        load_vla_for_inference(path)
    path = _copy(saved[1], tmp_path / "d")
    text = (path / "config.json").read_text()
    (path / "config.json").write_text(text.replace('"d_model": 128', '"d_model": 129'))
    with pytest.raises(CheckpointError, match=r"config\.json: sha256 does not match"):
        read_checkpoint_config(path)
    (path / "config.json").write_text(text)
    verify_checkpoint(path)  # restored -> valid again
    (path / "norm_stats.json").unlink()
    with pytest.raises(CheckpointError, match=r"norm_stats\.json: missing"):
        verify_checkpoint(path)
    (path / "manifest.json").unlink()
    with pytest.raises(CheckpointError, match=r"manifest\.json: missing"):
        load_vla_for_inference(path)
    with pytest.raises(CheckpointError, match="not a checkpoint folder"):
        load_vla_for_inference(tmp_path / "nothing-here")


def test_save_is_atomic(saved, tmp_path):
    """A failure while writing leaves no folder; an existing checkpoint is left intact."""
    model, good = saved
    target = _copy(good, tmp_path / "c")
    before = {p.name: p.read_bytes() for p in target.iterdir()}

    class Boom(RuntimeError):
        pass

    def failing_head_state_dict():
        raise Boom

    original = model.head_state_dict
    model.head_state_dict = failing_head_state_dict
    try:
        with pytest.raises(Boom):
            save_checkpoint(model, tmp_path / "new", key_mapping=KEY_MAPPING, instruction="x")
        with pytest.raises(Boom):
            save_checkpoint(model, target, key_mapping=KEY_MAPPING, instruction="x")
    finally:
        model.head_state_dict = original
    assert not (tmp_path / "new").exists()
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left behind


def test_backbone_with_other_weights_is_refused(saved, tmp_path, monkeypatch):
    """A checkpoint trained on one tiny backbone must not silently run on a differently-initialised one."""
    import vla.checkpoint as ck

    model, _ = saved
    real = ck.backbone_fingerprint
    monkeypatch.setattr(ck, "backbone_fingerprint", lambda backbone: "f" * 64)  # "trained elsewhere"
    path = ck.write_checkpoint(tmp_path / "c", model.cfg, model.head_state_dict(), model.get_norm_stats())
    monkeypatch.setattr(ck, "backbone_fingerprint", real)
    with pytest.raises(CheckpointError, match="different weights"):
        load_vla_for_inference(path)


def test_checkpoint_from_before_the_levers_moved_still_loads(saved, tmp_path):
    """Checkpoints written while wrist_dropout / proprio_dropout / noise_draws_per_obs were model settings still
    load (the levers are dropped: they never changed the model), and predict what the saved model predicts."""
    import hashlib

    path = _copy(saved[1], tmp_path / "old")
    config = json.loads((path / "config.json").read_text())
    config["model"].update(wrist_dropout=0.7, proprio_dropout=0.5, noise_draws_per_obs=4)
    (path / "config.json").write_text(json.dumps(config))
    manifest = json.loads((path / "manifest.json").read_text())
    entry = manifest["files"]["config.json"]
    entry["sha256"] = hashlib.sha256((path / "config.json").read_bytes()).hexdigest()
    for key in ("size", "bytes"):
        if key in entry:
            entry[key] = (path / "config.json").stat().st_size
    (path / "manifest.json").write_text(json.dumps(manifest))
    old, new = load_vla_for_inference(path), load_vla_for_inference(saved[1])
    assert "wrist_dropout" not in old.cfg.to_dict() and old.cfg == new.cfg
    obs = _obs()
    noise = torch.randn(2, 16, 7, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(old.predict_action(*obs, noise=noise), new.predict_action(*obs, noise=noise))
