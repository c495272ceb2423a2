"""The model's state head: the cube pose estimated from the images (+ proprio) and fed to the action expert."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from _data_fixtures import isaaclab_file
from vla.config import load_model_preset
from vla.modeling import VLAModel

torch.set_num_threads(1)


def _batch(batch: int, seed: int = 0, size: int = 112):
    rng = np.random.default_rng(seed)
    return {"context_image": rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8),
            "wrist_image": rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8),
            "instruction": ["lift the red cube"] * batch,
            "proprio": rng.normal(size=(batch, 27)).astype(np.float32),
            "actions": rng.normal(size=(batch, 16, 7)).astype(np.float32),
            "aux_state": rng.normal(size=(batch, 7)).astype(np.float32)}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = VLAModel(load_model_preset("tiny", state_dim=7))
    m.attach_state_probe(7, 0.5, torch.zeros(7), torch.ones(7))
    return m


def test_state_head_loss_trains_the_head_and_only_the_head(model):
    """The state loss reaches the state head (and the projector); the flow loss does not reach the state head:
    the expert reads a detached estimate, so the head stays an estimator of the recorded state."""
    model.train()
    out = model(_batch(4))
    assert {"loss", "flow_loss", "aux_loss"} <= set(out)
    model.zero_grad()
    out["flow_loss"].backward(retain_graph=True)
    assert all(p.grad is None or not p.grad.any() for p in model.state_head.parameters())
    assert any(p.grad is not None and p.grad.any() for p in model.expert.state_in.parameters())
    model.zero_grad()
    out["aux_loss"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.state_head.parameters() if p.requires_grad)
    assert model.projector[-1].weight.grad.abs().sum() > 0 if isinstance(model.projector, torch.nn.Sequential) else True
    model.zero_grad()


def test_actions_depend_on_the_estimate(model):
    """Same observation and noise, a different state estimate -> different actions: the expert uses it."""
    b = _batch(2, seed=1)
    noise = torch.randn(2, 16, 7, generator=torch.Generator().manual_seed(0))
    args = (b["context_image"], b["wrist_image"], b["instruction"], b["proprio"])
    before = model.predict_action(*args, noise=noise)
    with torch.no_grad():
        bias = model.state_head.out[1].bias
        saved = bias.clone()
        bias += 3.0
    try:
        after = model.predict_action(*args, noise=noise)
    finally:
        with torch.no_grad():
            bias.copy_(saved)
    assert (before - after).abs().max() > 1e-3
    memory, mask = model.encode(b["context_image"], b["wrist_image"], b["instruction"])
    est = model.estimate_state(memory, mask, b["proprio"])
    assert est.shape == (2, 7) and torch.isfinite(est).all()


def test_static_predictor_equals_eager_with_a_state_head(model):
    from vla.model.static import StaticPredictor

    b = _batch(2, seed=2)
    noise = torch.randn(2, 16, 7, generator=torch.Generator().manual_seed(1))
    args = (b["context_image"], b["wrist_image"], b["instruction"], b["proprio"])
    eager = model.predict_action(*args, noise=noise)
    static = StaticPredictor(model, 2)(*args, noise=noise)
    torch.testing.assert_close(static, eager, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_training_a_state_head_saves_it_and_reloads_exactly(tmp_path):
    """aux_state labels train the state head; its weights and state statistics are in the checkpoint, and the
    reloaded policy predicts the same chunk. A state head without labels is a one-line config error."""
    from vla.checkpoint import load_vla_for_inference
    from vla.training import load_train_config, plan_run, train
    from vla.training.config import TrainConfigError

    def cfg(**o):
        items = {**over, **o}
        return load_train_config("lift_tiny_cpu", [f"{k}={json.dumps(v) if not isinstance(v, str) else v}"
                                                   for k, v in items.items()])

    data = isaaclab_file(tmp_path / "lift.hdf5", num_demos=4, steps=30, seed=3)
    over = {"data.files": [str(data)], "output_dir": str(tmp_path / "run"), "max_steps": 60, "val_every": 0,
            "save_every": 0, "image_effect_samples": 0, "optim.warmup_steps": 5, "log_every": 5,
            "model_overrides.state_dim": 7, "aux_state.keys": ["cube_positions", "cube_orientations"],
            "aux_state.weight": 1.0}
    with pytest.raises(TrainConfigError, match=r"state_dim 7.*aux_state.keys is empty"):
        plan_run(cfg(**{"aux_state.keys": []}))
    with pytest.raises(TrainConfigError, match=r"model_overrides.state_dim=3"):
        train(cfg(**{"aux_state.keys": ["cube_positions"], "output_dir": str(tmp_path / "bad")}), show_progress=False)
    train(cfg(), show_progress=False)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    aux = [r["aux_loss"] for r in rows if "aux_loss" in r]
    assert len(aux) >= 10 and sum(aux[-3:]) < 0.8 * sum(aux[:3]), aux
    model = load_vla_for_inference(Path(tmp_path / "run" / "final"))
    assert model.state_head is not None and model.cfg.state_dim == 7
    assert float(model.state_head.std.min()) > 0 and float(model.state_head.mean.abs().sum()) > 0  # stats saved
    b = _batch(1, seed=4, size=64)
    noise = torch.randn(1, 16, 7, generator=torch.Generator().manual_seed(2))
    args = (b["context_image"], b["wrist_image"], b["instruction"], b["proprio"])
    again = load_vla_for_inference(Path(tmp_path / "run" / "final"))
    torch.testing.assert_close(model.predict_action(*args, noise=noise), again.predict_action(*args, noise=noise))


def test_stack_config_state_head_matches_three_cube_poses(tmp_path):
    """stack_tiny_cpu's state head estimates all three cubes' poses: its state_dim equals the recorded keys' size
    (a Cosmos-layout file holds the same three-cube keys as our Stack-Cube recordings), so training starts."""
    from _data_fixtures import cosmos_file
    from vla.training import load_train_config, train

    data = cosmos_file(tmp_path / "stack.hdf5", num_demos=3, steps=14)
    cfg = load_train_config("stack_tiny_cpu", [f"data.files=[{data}]", "data.key_mapping=nvidia_cosmos",
                                               f"output_dir={tmp_path / 'run'}", "max_steps=4", "val_every=0",
                                               "save_every=0", "image_effect_samples=0", "log_every=1"])
    assert cfg.model_overrides["state_dim"] == 21
    summary = train(cfg, show_progress=False)
    assert summary["steps"] == 4 if "steps" in summary else (tmp_path / "run" / "final" / "manifest.json").is_file()


def test_a_deeper_state_head_trains_every_look_and_runs_static():
    """state_head_layers 3: the state loss reaches both refining blocks, the static predictor reproduces the eager
    chunk, and a state head with no look at all is a config error that names the key."""
    from vla.config import ConfigError
    from vla.model.static import StaticPredictor

    torch.manual_seed(0)
    deep = VLAModel(load_model_preset("tiny", state_dim=7, state_head_layers=3))
    deep.attach_state_probe(7, 0.5, torch.zeros(7), torch.ones(7))
    assert len(deep.state_head.refine) == 2
    deep.train()
    deep(_batch(4))["aux_loss"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in deep.state_head.refine.parameters())
    deep.eval()
    b = _batch(2, seed=4)
    noise = torch.randn(2, 16, 7, generator=torch.Generator().manual_seed(2))
    args = (b["context_image"], b["wrist_image"], b["instruction"], b["proprio"])
    torch.testing.assert_close(StaticPredictor(deep, 2)(*args, noise=noise), deep.predict_action(*args, noise=noise),
                               atol=1e-5, rtol=1e-5)
    with pytest.raises(ConfigError, match="state_head_layers"):
        load_model_preset("tiny", state_dim=7, state_head_layers=0)


def test_a_context_view_state_head_reads_only_the_context_camera():
    """state_head_views: context: the estimate moves with the context image and not at all with the wrist image,
    the static predictor reproduces the eager chunk, and the option is refused where no view tokens exist."""
    from vla.config import ConfigError
    from vla.model.static import StaticPredictor

    torch.manual_seed(0)
    ctx_only = VLAModel(load_model_preset("tiny", state_dim=7, state_head_views="context")).eval()
    both = VLAModel(load_model_preset("tiny", state_dim=7)).eval()
    both.load_state_dict(ctx_only.state_dict())
    b, other = _batch(2, seed=5), _batch(2, seed=6)
    proprio = torch.as_tensor(b["proprio"])

    def estimate(m, ctx, wrist):
        memory, mask = m.encode(ctx, wrist, b["instruction"])
        return m.estimate_state(memory, mask, proprio)

    base = estimate(ctx_only, b["context_image"], b["wrist_image"])
    torch.testing.assert_close(estimate(ctx_only, b["context_image"], other["wrist_image"]), base)
    assert (estimate(ctx_only, other["context_image"], b["wrist_image"]) - base).abs().max() > 1e-3
    # the same weights reading both views do see the wrist image
    assert (estimate(both, b["context_image"], other["wrist_image"])
            - estimate(both, b["context_image"], b["wrist_image"])).abs().max() > 1e-3

    noise = torch.randn(2, 16, 7, generator=torch.Generator().manual_seed(2))
    args = (b["context_image"], b["wrist_image"], b["instruction"], b["proprio"])
    torch.testing.assert_close(StaticPredictor(ctx_only, 2)(*args, noise=noise),
                               ctx_only.predict_action(*args, noise=noise), atol=1e-5, rtol=1e-5)
    with pytest.raises(ConfigError, match="state_head_views"):
        load_model_preset("tiny", state_dim=7, state_head_views="wrist")
    with pytest.raises(ConfigError, match="state_head_views"):
        load_model_preset("tiny", state_dim=7, state_head_views="context", conditioning="last_token")


def test_state_teacher_forcing_feeds_the_recorded_state_in_training_only(model, tmp_path):
    """levers.state_teacher_forcing: while training, that share of samples' expert reads the (normalised)
    recorded state in place of the estimate; evaluation always reads the estimate; a model without a state
    head refuses the lever."""
    from vla.model.levers import TrainingLevers
    from vla.training import load_train_config, plan_run
    from vla.training.plan import TrainConfigError

    seen = []
    hook = model.expert.state_in.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].detach().clone()))
    b = _batch(64, seed=3, size=56)
    truth = model.state_head.normalize(torch.as_tensor(b["aux_state"]))
    try:
        model.train()
        for p, lo, hi in ((0.0, 0, 0), (0.5, 16, 48), (0.999, 64, 64)):
            model.set_training_levers(TrainingLevers(state_teacher_forcing=p))
            seen.clear()
            model(b)
            forced = torch.isclose(seen[0], truth, atol=1e-6).all(dim=1)
            assert lo <= int(forced.sum()) <= hi, (p, int(forced.sum()))
        model.eval()
        seen.clear()
        model.predict_action(b["context_image"][:4], b["wrist_image"][:4], b["instruction"][:4], b["proprio"][:4])
        assert not torch.isclose(seen[0], truth[:4], atol=1e-6).all(dim=1).any()
    finally:
        hook.remove()
        model.set_training_levers(TrainingLevers())
    with pytest.raises(ValueError, match="state_teacher_forcing"):
        TrainingLevers(state_teacher_forcing=1.0)
    data = isaaclab_file(tmp_path / "lift.hdf5", num_demos=2, steps=10)
    cfg = load_train_config("lift_tiny_cpu", [f"data.files=[{data}]", "model_overrides.state_dim=0", "aux_state.keys=[]",
                                              "levers.state_teacher_forcing=0.5"])
    with pytest.raises(TrainConfigError, match="levers.state_teacher_forcing"):
        plan_run(cfg)
