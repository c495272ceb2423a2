"""Conditioning effect sizes (the check that catches a policy ignoring its images) and diagnose_vla.py."""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from vla.eval.conditioning import (
    conditioning_effects,
    conditioning_report,
    dataset_mean_images,
    ignoring_images_warning,
    input_effect,
)


class ProprioOnly(torch.nn.Module):
    """A 'blind' policy: its chunk depends on the proprio (and the noise) only."""

    cfg = SimpleNamespace(num_queries=16, action_dim=7)

    def predict_action(self, ctx, wrist, instr, proprio, *, noise, num_steps=None):
        return noise + proprio[:, :7, None].transpose(1, 2).expand(-1, 16, -1)


class ImageAndProprio(ProprioOnly):
    def predict_action(self, ctx, wrist, instr, proprio, *, noise, num_steps=None):
        img = ctx.float().mean(dim=(1, 2, 3))[:, None, None] / 255.0
        return super().predict_action(ctx, wrist, instr, proprio, noise=noise) + img


def batch(n=6):
    g = torch.Generator().manual_seed(0)
    return {
        "context_image": torch.randint(0, 255, (n, 8, 8, 3), dtype=torch.uint8, generator=g),
        "wrist_image": torch.randint(0, 255, (n, 8, 8, 3), dtype=torch.uint8, generator=g),
        "instruction": ["lift the red cube"] * n,
        "proprio": torch.randn(n, 27, generator=g),
    }


def test_blind_policy_has_zero_image_effect():
    eff = conditioning_effects(ProprioOnly(), batch(), alt_instruction="stack the cubes")
    assert eff["context_image"] == 0.0 and eff["wrist_image"] == 0.0 and eff["instruction"] == 0.0
    assert eff["proprio"] == pytest.approx(1.0)  # the only input: it explains all of the between-sample change


def test_image_using_policy_is_detected():
    eff = conditioning_effects(ImageAndProprio(), batch())
    assert 0.01 < eff["context_image"] < 1.0 and eff["wrist_image"] == 0.0
    assert eff["both_images"] == pytest.approx(eff["context_image"])


def test_unknown_input_and_tiny_batches_are_refused():
    with pytest.raises(ValueError, match="unknown input"):
        input_effect(ProprioOnly(), batch(), ["depth"])
    with pytest.raises(ValueError, match="at least 2"):
        input_effect(ProprioOnly(), batch(1), ["proprio"])


class ImagePathwayCut(torch.nn.Module):
    """A trained VLAModel whose images are blanked inside the forward: a policy that cannot see."""

    def __init__(self, model):
        super().__init__()
        self.model, self.cfg, self.normalizer = model, model.cfg, model.normalizer

    def compute_vlm_features(self, ctx, wrist, instr):
        grey = [torch.full_like(torch.as_tensor(x), 128) for x in (ctx, wrist)]
        return self.model.compute_vlm_features(*grey, instr)

    def predict_action(self, ctx=None, wrist=None, instr=None, proprio=None, **kw):
        if kw.get("vlm_features") is None:
            kw["vlm_features"], kw["vlm_mask"] = self.compute_vlm_features(ctx, wrist, instr)
        return self.model.predict_action(proprio=proprio, **kw)


def test_trained_model_report_and_a_cut_image_pathway_scores_zero(tmp_path):
    """Train a small run on generated demos: the report's ratios are computed (and logged by the trainer);
    the same weights with the image pathway cut score ~0, which proves the metric measures the images."""
    from _data_fixtures import isaaclab_file
    from vla.checkpoint import load_vla_for_inference
    from vla.data import DemoDataset, collate
    from vla.training import load_train_config, train

    data = isaaclab_file(tmp_path / "lift.hdf5", num_demos=6, steps=20)
    cfg = load_train_config("lift_tiny_cpu", [f"data.files=[{data}]", f"output_dir={tmp_path / 'run'}",
                                              "max_steps=30", "val_every=0", "save_every=0", "log_every=10",
                                              "image_effect_samples=8", "model_overrides.image_size=[64,64]"])
    summary = train(cfg, show_progress=False)
    assert summary["image_effect_ratio"] is not None and summary["wrist_effect_ratio"] is not None

    model = load_vla_for_inference(tmp_path / "run" / "final")
    ds = DemoDataset([data], "isaaclab_lift", split="all", image_size=(64, 64))
    b = collate([ds[i] for i in range(0, len(ds), len(ds) // 12)][:12])
    blank = dataset_mean_images(ds, max_samples=64)
    seeing = conditioning_report(model, b, blank_images=blank)
    blind = conditioning_report(ImagePathwayCut(model), b, blank_images=blank)
    assert seeing["image_effect_ratio"] > 1e-3 and seeing["wrist_effect_ratio"] > 1e-3
    assert seeing["val_action_mse"] != seeing["blank_image_val_action_mse"]
    assert blind["image_effect_ratio"] == pytest.approx(0.0, abs=1e-6)
    assert blind["wrist_effect_ratio"] == pytest.approx(0.0, abs=1e-6)
    assert blind["val_action_mse"] == pytest.approx(blind["blank_image_val_action_mse"], rel=1e-6)
    assert blind["proprio_effect_ratio"] > 0.1  # what the blind policy still responds to
    assert "ignoring its images" in ignoring_images_warning(blind)
    assert ignoring_images_warning({"image_effect_ratio": 0.3}) is None


@pytest.mark.slow
def test_diagnose_script_reports_effects_and_errors(repo_root, tmp_path, tiny_checkpoint):
    from vla.data.synthetic import write_synthetic_demos

    data = write_synthetic_demos(tmp_path / "lift.hdf5", layout="isaaclab", num_demos=3, steps=20, seed=0)
    out = tmp_path / "diag"
    cmd = [sys.executable, "scripts/diagnose_vla.py", "--checkpoint", str(tiny_checkpoint), "--dataset", str(data),
           "--split", "all", "--num_samples", "8", "--output", str(out)]
    r = subprocess.run(cmd, cwd=repo_root, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads((out / "diagnosis.json").read_text())
    for k in ("val_action_mse", "blank_image_val_action_mse", "image_effect_ratio", "wrist_effect_ratio",
              "instruction_effect_ratio"):
        assert rep[k] >= 0, k
    assert rep["num_samples"] == 8 and rep["num_flow_steps"] == 10
    assert rep["both_images_effect_ratio"] > 0  # the images reach the expert even untrained
    assert rep["raw_action_error"]["mse"] > 0 and (out / "open_loop.png").stat().st_size > 1000
    assert "conditioning effect ratios" in r.stdout and "blanked" in r.stdout

    bad = subprocess.run([sys.executable, "scripts/diagnose_vla.py", "--checkpoint", str(tmp_path / "nope"),
                          "--dataset", str(data)], cwd=repo_root, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "nope" in bad.stderr
    missing = subprocess.run([sys.executable, "scripts/diagnose_vla.py", "--checkpoint", str(tiny_checkpoint),
                              "--dataset", str(tmp_path / "gone.hdf5")], cwd=repo_root, capture_output=True,
                             text=True, timeout=300)
    assert missing.returncode == 2 and "gone.hdf5: file not found" in missing.stderr


def test_report_encodes_in_chunks_with_the_same_result(monkeypatch):
    """Large batches go through the VLM ENCODE_BATCH samples at a time (a 7B backbone would not take
    hundreds at once); chunking must not change the figures."""
    import vla.eval.conditioning as cond

    model, b = _tiny_model_and_batch(10, seed=0)
    whole = conditioning_report(model, b)
    monkeypatch.setattr(cond, "ENCODE_BATCH", 3)
    chunked = conditioning_report(model, b)
    for k in ("image_effect_ratio", "wrist_effect_ratio", "proprio_effect_ratio", "val_action_mse"):
        assert chunked[k] == pytest.approx(whole[k], rel=1e-5), k


def test_report_runs_the_vision_tower_once_per_distinct_image(monkeypatch):
    """The report's variants (swapped, blanked, another instruction) reuse the same images: each goes through
    the vision tower once, and the figures equal those of a report that runs the tower for every variant."""
    import numpy as np

    import vla.eval.conditioning as cond

    n = 8
    model, b = _tiny_model_and_batch(n, seed=1)
    blank = (np.full((56, 56, 3), 90, np.uint8), np.full((56, 56, 3), 120, np.uint8))
    seen = []
    tower = model.image_embeds
    monkeypatch.setattr(model, "image_embeds", lambda pix, grid: seen.append(len(grid)) or tower(pix, grid))
    monkeypatch.setattr(cond, "ENCODE_BATCH", 3)  # images shared across chunks are cached too
    cached = conditioning_report(model, b, blank_images=blank)
    assert sum(seen) == 2 * n + 2  # n context + n wrist images, and the two blank views
    seen.clear()
    monkeypatch.setattr(cond._Predictor, "_vision", lambda self, inputs, ctx, wrist: model.image_embeds(
        inputs["pixel_values"], inputs["image_grid_thw"]))  # no cache: the tower on every variant's images
    uncached = conditioning_report(model, b, blank_images=blank)
    assert sum(seen) == 6 * 2 * n  # six variants (original, 3 image swaps, instruction, blank) x both views
    for k in ("image_effect_ratio", "wrist_effect_ratio", "both_images_effect_ratio", "instruction_effect_ratio",
              "proprio_effect_ratio", "val_action_mse", "blank_image_val_action_mse"):
        assert cached[k] == pytest.approx(uncached[k], rel=1e-5, abs=1e-7), k


def _tiny_model_and_batch(n: int, seed: int):
    """A freshly initialised tiny VLAModel (56 px input) and a random n-sample batch with actions."""
    import numpy as np

    from vla.config import load_model_preset
    from vla.modeling import VLAModel

    torch.manual_seed(0)
    model = VLAModel(load_model_preset("tiny").replace(image_size=[56, 56]))
    rng = np.random.default_rng(seed)
    b = {"context_image": torch.from_numpy(rng.integers(0, 255, (n, 56, 56, 3), dtype=np.uint8)),
         "wrist_image": torch.from_numpy(rng.integers(0, 255, (n, 56, 56, 3), dtype=np.uint8)),
         "instruction": ["lift the red cube"] * n, "proprio": torch.randn(n, 27), "actions": torch.randn(n, 16, 7)}
    return model, b
