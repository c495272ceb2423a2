"""Conditioning effect sizes (the check that catches a policy ignoring its images) and diagnose_vla.py."""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from vla.eval.conditioning import conditioning_effects, input_effect


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


@pytest.mark.slow
def test_diagnose_script_reports_effects_and_errors(repo_root, tmp_path, tiny_checkpoint):
    from vla.data.synthetic import write_synthetic_demos

    data = write_synthetic_demos(tmp_path / "lift.hdf5", layout="isaaclab", num_demos=3, steps=20, seed=0)
    out = tmp_path / "diag"
    cmd = [sys.executable, "scripts/diagnose_vla.py", "--checkpoint", str(tiny_checkpoint), "--dataset", str(data),
           "--split", "all", "--num_samples", "8", "--output", str(out)]
    r = subprocess.run(cmd, cwd=repo_root, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads((out / "diagnostics.json").read_text())
    eff = rep["conditioning_effects"]
    assert set(eff) >= {"context_image", "wrist_image", "both_images", "instruction", "proprio"}
    assert eff["both_images"] > 0  # the images reach the expert even untrained
    assert rep["offline_action_error"]["mse"] > 0 and (out / "open_loop.png").stat().st_size > 1000
    assert "conditioning effect sizes" in r.stdout

    bad = subprocess.run([sys.executable, "scripts/diagnose_vla.py", "--checkpoint", str(tmp_path / "nope"),
                          "--dataset", str(data)], cwd=repo_root, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "nope" in bad.stderr
