"""Seed checkpoints (.pt pickles) import safely; anything that is not plain data is refused unexecuted."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch
from vla.checkpoint import load_vla_for_inference, read_checkpoint_config
from vla.legacy import LegacyCheckpointError, convert_legacy, load_legacy, main

torch.set_num_threads(1)
HIDDEN, D = 128, 128  # the tiny preset's dims, so the converted checkpoint loads without a 7B backbone


def _seed_projector(rng):
    return {"0.weight": rng.normal(size=(D, HIDDEN)).astype(np.float32), "0.bias": np.zeros(D, np.float32),
            "2.weight": rng.normal(size=(D, D)).astype(np.float32), "2.bias": np.ones(D, np.float32)}


def test_convert_projector_state_dict_with_numpy_arrays(tmp_path):
    rng = np.random.default_rng(0)
    proj = _seed_projector(rng)
    torch.save({"projector_state_dict": proj, "epoch": np.int64(7), "instruction": "stack the cubes",
                "norm_stats": {"action_mean": np.full(7, 0.5), "action_std": np.full(7, 2.0),
                               "state_mean": np.zeros(27), "state_std": np.ones(27)}}, tmp_path / "old.pt")
    assert main([str(tmp_path / "old.pt"), str(tmp_path / "out"), "--preset", "tiny-lora"]) == 0
    config = read_checkpoint_config(tmp_path / "out")
    assert config["instruction"] == "stack the cubes" and config["extra"]["legacy"]["norm_stats"] == "imported"
    assert config["model"]["projector"] == "mlp"  # the legacy projector kind, whatever the preset said
    model = load_vla_for_inference(tmp_path / "out")
    for key, value in proj.items():
        layer, name = key.split(".")
        assert torch.equal(getattr(model.projector[int(layer)], name), torch.from_numpy(value))
    assert torch.allclose(model.normalizer.action_std, torch.full((7,), 2.0))
    rng = np.random.default_rng(1)
    out = model.predict_action(rng.integers(0, 256, (1, 112, 112, 3), dtype=np.uint8),
                               rng.integers(0, 256, (1, 112, 112, 3), dtype=np.uint8), "stack the cubes",
                               np.zeros((1, 27), np.float32))
    assert out.shape == (1, 16, 7) and torch.isfinite(out).all()


def test_convert_model_state_dict_reports_what_was_not_mapped(tmp_path):
    rng = np.random.default_rng(0)
    state = {f"projector.{k}": torch.from_numpy(v) for k, v in _seed_projector(rng).items()}
    state["vlm.base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight"] = torch.zeros(16, HIDDEN)
    state["action_head.out.weight"] = torch.zeros(7, D)
    torch.save({"model_state_dict": state}, tmp_path / "old.pt")
    summary = convert_legacy(tmp_path / "old.pt", tmp_path / "out", preset="tiny")
    assert summary["mapped"] == ["projector.0.bias", "projector.0.weight", "projector.2.bias", "projector.2.weight"]
    assert summary["skipped_lora_keys"] == 1 and summary["unmapped_model_keys"] == ["action_head.out.weight"]
    assert summary["norm_stats"].startswith("not found")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert "head.safetensors" in manifest["files"]


class Payload:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_pickle_with_arbitrary_objects_is_refused_without_running_it(tmp_path, capsys):
    marker = tmp_path / "pwned"
    torch.save({"projector": _seed_projector(np.random.default_rng(0)), "hook": Payload(str(marker))},
               tmp_path / "evil.pt")
    with pytest.raises(LegacyCheckpointError, match="refused to load.*never pickled objects or code"):
        load_legacy(tmp_path / "evil.pt")
    assert main([str(tmp_path / "evil.pt"), str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_unrecognised_or_missing_files_are_refused(tmp_path):
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(LegacyCheckpointError, match=r"expected a dict with one of .*found \['weights'\]"):
        load_legacy(tmp_path / "other.pt")
    torch.save({"projector": {"0.weight": torch.zeros(4, 4)}}, tmp_path / "half.pt")
    with pytest.raises(LegacyCheckpointError, match="no 2-layer MLP projector"):
        convert_legacy(tmp_path / "half.pt", tmp_path / "out", preset="tiny")
    with pytest.raises(LegacyCheckpointError, match="no such file"):
        load_legacy(tmp_path / "missing.pt")


def test_console_script_help():
    exe = pathlib.Path(sys.executable).with_name("vla-convert-legacy")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "vla.legacy"]
    out = subprocess.run([*cmd, "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "weights_only=True" in out.stdout
