"""VLAModel on the tiny Qwen2.5-VL (real transformers classes, random weights), CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from vla.backbone.images import ImageInputError
from vla.backbone.qwen import BackboneError
from vla.config import ConfigError, VLAConfig, load_model_preset
from vla.modeling import TrainingLevers, VLAModel, pad_vlm_features
from vla.normalization import NormStats

torch.set_num_threads(1)
INSTRUCTIONS = ["lift the red cube", "stack", "pick up the cube and lift it, then hold it still"]


def _obs(batch: int, seed: int = 0, size: int = 112):
    rng = np.random.default_rng(seed)
    ctx = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    wrist = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    proprio = rng.normal(size=(batch, 27)).astype(np.float32)
    return ctx, wrist, proprio


def _batch(batch: int, seed: int = 0):
    ctx, wrist, proprio = _obs(batch, seed)
    rng = np.random.default_rng(seed + 100)
    mask = np.ones((batch, 16), bool)
    mask[0, 12:] = False  # an episode end inside the chunk
    return {"context_image": ctx, "wrist_image": wrist, "instruction": (INSTRUCTIONS * batch)[:batch],
            "proprio": proprio, "actions": rng.normal(size=(batch, 16, 7)).astype(np.float32), "action_mask": mask}


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return VLAModel(load_model_preset("tiny"))


@pytest.fixture(scope="module")
def tiny_lora():
    torch.manual_seed(0)
    return VLAModel(load_model_preset("tiny-lora"))


@pytest.mark.parametrize("batch", [1, 3])
def test_shapes_and_dtypes(tiny, batch):
    ctx, wrist, proprio = _obs(batch, size=128)  # resized to the preset's 112x112 inside
    feats, mask = tiny.compute_vlm_features(ctx, wrist, INSTRUCTIONS[:batch])
    assert feats.shape == (batch, 32, 128) and mask.shape == (batch, 32) and mask.all()  # 16 image tokens per view
    memory, _ = tiny.encode(torch.from_numpy(ctx), torch.from_numpy(wrist), INSTRUCTIONS[:batch])
    assert memory.shape == (batch, 32, 128)
    actions = tiny.predict_action(ctx, wrist, INSTRUCTIONS[:batch], proprio)
    assert actions.shape == (batch, 16, 7) and actions.dtype == torch.float32 and torch.isfinite(actions).all()
    out = tiny(_batch(batch))
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])


def test_single_unbatched_observation_and_shared_instruction(tiny):
    ctx, wrist, proprio = _obs(1)
    a = tiny.predict_action(ctx[0], wrist[0], "lift the red cube", proprio[0],
                            generator=torch.Generator().manual_seed(1))
    b = tiny.predict_action(ctx, wrist, ["lift the red cube"], proprio, generator=torch.Generator().manual_seed(1))
    assert a.shape == (1, 16, 7) and torch.equal(a, b)


@pytest.mark.parametrize("side", ["left", "right"])
def test_batched_forward_matches_per_sample_with_padding(side):
    """Prompts of different lengths are padded; masks must make each row equal to its unbatched forward."""
    model = VLAModel(load_model_preset("tiny", conditioning="all_tokens"))
    model.processor.tokenizer.padding_side = side
    ctx, wrist, _ = _obs(3)
    with torch.no_grad():
        feats, mask = model.compute_vlm_features(ctx, wrist, INSTRUCTIONS)
        counts = mask.sum(1).tolist()
        assert len(set(counts)) == 3  # genuinely different lengths -> padding happened
        for i in range(3):
            alone, alone_mask = model.compute_vlm_features(ctx[i:i + 1], wrist[i:i + 1], INSTRUCTIONS[i:i + 1])
            n = int(alone_mask.sum())
            assert n == counts[i]
            torch.testing.assert_close(feats[i, :n], alone[0, :n], atol=1e-5, rtol=1e-5)
            assert not feats[i, n:].any()


def test_conditioning_modes_select_the_right_tokens(tiny):
    ctx, wrist, _ = _obs(2)
    with torch.no_grad():
        inputs = {k: v for k, v in __import__("vla.backbone.qwen", fromlist=["x"]).prepare_vlm_inputs(
            tiny.processor, ctx, wrist, INSTRUCTIONS[:2], tiny.cfg).items()}
        valid = inputs["attention_mask"].sum(1).tolist()
        for mode, expected in (("image_tokens", [32, 32]), ("all_tokens", valid), ("last_token", [1, 1])):
            model = VLAModel(tiny.cfg.replace(conditioning=mode))
            _, mask = model.compute_vlm_features(ctx, wrist, INSTRUCTIONS[:2])
            assert mask.sum(1).tolist() == expected, mode


def test_loss_falls_on_a_fixed_batch():
    """50 AdamW steps through the image path lower the loss measured with the same noise and times."""
    torch.manual_seed(0)
    model = VLAModel(load_model_preset("tiny"))
    model.set_training_levers(TrainingLevers(noise_draws_per_obs=4))
    batch = _batch(4, seed=3)

    def paired_loss() -> float:
        with torch.no_grad(), torch.random.fork_rng():
            torch.manual_seed(123)
            return model(batch)["loss"].item()

    opt = torch.optim.AdamW([p for ps in model.param_groups().values() for p in ps], lr=1e-3)
    before = paired_loss()
    model.train()
    for _ in range(50):
        loss = model(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = paired_loss()
    assert after < 0.8 * before, (before, after)  # measured: 2.30 -> 1.51


def test_cached_features_path_equals_image_path(tiny):
    """The trainer's frozen-feature cache must give exactly what the image path gives."""
    ctx, wrist, proprio = _obs(2)
    with torch.no_grad():
        feats, mask = tiny.compute_vlm_features(ctx, wrist, INSTRUCTIONS[:2])
    noise = torch.randn(2, 16, 7)
    a = tiny.predict_action(ctx, wrist, INSTRUCTIONS[:2], proprio, noise=noise)
    b = tiny.predict_action(proprio=proprio, noise=noise, vlm_features=feats, vlm_mask=mask)
    assert torch.equal(a, b)
    # per-sample cached features collate back to the same batch
    f2, m2 = pad_vlm_features([(feats[i][mask[i]], mask[i][mask[i]]) for i in range(2)])
    assert torch.equal(f2, feats) and torch.equal(m2, mask)
    torch.manual_seed(5)
    la = tiny({**_batch(2), "context_image": ctx, "wrist_image": wrist})["loss"]
    torch.manual_seed(5)
    lb = tiny({**_batch(2), "vlm_features": feats, "vlm_mask": mask})["loss"]
    assert torch.equal(la, lb)


def test_sampling_is_deterministic_under_a_seed(tiny):
    ctx, wrist, proprio = _obs(2)
    a = tiny.predict_action(ctx, wrist, INSTRUCTIONS[:2], proprio, generator=torch.Generator().manual_seed(7))
    b = tiny.predict_action(ctx, wrist, INSTRUCTIONS[:2], proprio, generator=torch.Generator().manual_seed(7))
    c = tiny.predict_action(ctx, wrist, INSTRUCTIONS[:2], proprio, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_flow_steps_are_configurable(tiny):
    ctx, wrist, proprio = _obs(1)
    noise = torch.randn(1, 16, 7)
    calls = []
    handle = tiny.expert.velocity_out.register_forward_hook(lambda *_: calls.append(1))  # once per velocity
    try:
        tiny.predict_action(ctx, wrist, INSTRUCTIONS[:1], proprio, noise=noise)
        assert len(calls) == tiny.cfg.flow_steps == 10
        calls.clear()
        tiny.predict_action(ctx, wrist, INSTRUCTIONS[:1], proprio, noise=noise, num_steps=3)
        assert len(calls) == 3
    finally:
        handle.remove()


def test_sampling_computes_the_memory_keys_and_values_once_per_chunk(tiny):
    """The expert's memory side (layer norm, keys, values) and its proprio/state tokens do not depend on the
    flow step: sampling computes them once per chunk, and the chunk equals one whose every Euler step runs
    the whole expert."""
    from vla.model.flow_matching import euler_sample

    ctx, wrist, proprio = _obs(2)
    noise = torch.randn(2, 16, 7)
    kv_calls = []
    handle = tiny.expert.blocks[0].cross_attn.kv_proj.register_forward_hook(lambda *_: kv_calls.append(1))
    try:
        chunk = tiny.predict_action(ctx, wrist, INSTRUCTIONS[:2], proprio, noise=noise)
    finally:
        handle.remove()
    assert len(kv_calls) == 1 and tiny.cfg.flow_steps == 10
    with torch.no_grad():
        memory, mask = tiny.encode(ctx, wrist, INSTRUCTIONS[:2])
        p = tiny.normalizer.normalize("proprio", torch.as_tensor(proprio))
        est = tiny._state_estimate(memory, mask, p)
        full = euler_sample(lambda x, t: tiny.expert(x, t, p, memory, mask, est), noise, tiny.cfg.flow_steps)
    torch.testing.assert_close(chunk, tiny.normalizer.denormalize("action", full), atol=1e-6, rtol=0)


def test_normalisation_in_float32_raw_units_out(tiny):
    """predict_action denormalises with the model's stats: changing them maps outputs affinely, exactly."""
    ctx, wrist, proprio = _obs(2)
    noise = torch.randn(2, 16, 7)
    rng = np.random.default_rng(0)
    base = NormStats.from_arrays(rng.normal(size=(50, 16, 7)), proprio)
    tiny.set_norm_stats(base)
    a = tiny.predict_action(ctx, wrist, INSTRUCTIONS[:2], proprio, noise=noise)
    scaled = NormStats.from_dict(base.to_dict())
    scaled.action.mean = base.action.mean + 10.0
    scaled.action.std = base.action.std * 3.0
    tiny.set_norm_stats(scaled)
    b = tiny.predict_action(ctx, wrist, INSTRUCTIONS[:2], proprio, noise=noise)
    normalised = (a - torch.from_numpy(base.action.mean)) / torch.from_numpy(base.action.std)
    expected = normalised * torch.from_numpy(scaled.action.std) + torch.from_numpy(scaled.action.mean)
    torch.testing.assert_close(b, expected)
    assert tiny.normalizer.action_mean.dtype == torch.float32
    tiny.set_norm_stats(NormStats.identity(7, 27))
    with pytest.raises(ValueError, match="dims"):
        tiny.set_norm_stats(NormStats.identity(6, 27))


def test_bf16_path(tiny):
    """The whole model cast to bf16 (stats stay float32) still returns float32 raw-unit actions."""
    try:
        torch.ones(2, 2, dtype=torch.bfloat16) @ torch.ones(2, 2, dtype=torch.bfloat16)
    except RuntimeError:
        pytest.skip("this CPU build has no bf16 matmul")
    model = VLAModel(load_model_preset("tiny"), dtype=torch.bfloat16)
    model.load_state_dict(tiny.state_dict())
    model.to(torch.bfloat16)
    assert model.normalizer.action_std.dtype == torch.float32
    ctx, wrist, proprio = _obs(2)
    noise = torch.randn(2, 16, 7)
    memory, _ = model.encode(ctx, wrist, INSTRUCTIONS[:2])
    assert memory.dtype == torch.bfloat16
    out = model.predict_action(ctx, wrist, INSTRUCTIONS[:2], proprio, noise=noise)
    ref = tiny.predict_action(ctx, wrist, INSTRUCTIONS[:2], proprio, noise=noise)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert (out - ref).abs().mean() < 0.1 * ref.abs().mean()
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the training-side mixed-precision path
        loss = tiny(_batch(2))["loss"]
    assert torch.isfinite(loss)


def test_noise_draws_per_obs():
    model = VLAModel(load_model_preset("tiny"))
    model.set_training_levers(TrainingLevers(noise_draws_per_obs=4))
    loss = model(_batch(2))["loss"]
    loss.backward()
    assert torch.isfinite(loss) and model.expert.velocity_out.weight.grad is not None


def test_frozen_tiny_has_no_trainable_backbone(tiny):
    assert not tiny.vlm_trainable
    groups = tiny.param_groups()
    assert not groups["lora"] and not groups["backbone"] and groups["head"]
    assert not any(p.requires_grad for p in tiny.backbone.parameters())


def test_lora_acts_in_the_forward_pass_and_only_right_params_train(tiny_lora):
    model = tiny_lora
    assert model.vlm_trainable
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    head = ("projector", "memory_pos", "expert")
    assert trainable and all("lora_" in n or n.split(".")[0] in head for n in trainable)
    lora_names = [n for n in trainable if "lora_" in n]
    assert lora_names and all("language_model" in n and "visual" not in n for n in lora_names)
    ctx, wrist, _ = _obs(2)
    with torch.no_grad():
        before, _ = model.compute_vlm_features(ctx, wrist, INSTRUCTIONS[:2])
        saved = {n: p.clone() for n, p in model.backbone.named_parameters() if "lora_B" in n}
        for n, p in model.backbone.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
        after, _ = model.compute_vlm_features(ctx, wrist, INSTRUCTIONS[:2])
        for n, p in model.backbone.named_parameters():
            if n in saved:
                p.copy_(saved[n])
        restored, _ = model.compute_vlm_features(ctx, wrist, INSTRUCTIONS[:2])
    assert (after - before).abs().max() > 1e-2  # LoRA changes the hidden states
    torch.testing.assert_close(restored, before)
    # gradients reach the LoRA weights through the loss
    model.zero_grad()
    model(_batch(2))["loss"].backward()
    grads = [p.grad for n, p in model.named_parameters() if "lora_B" in n]  # lora_A's are 0 while B == 0
    assert grads and all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_predictions_depend_on_the_context_and_wrist_images(tiny):
    """Image conditioning is wired: same noise, different image -> different chunk; same image -> identical."""
    ctx, wrist, proprio = _obs(2)
    other_ctx, other_wrist, _ = _obs(2, seed=9)
    noise = torch.randn(2, 16, 7)
    ref = tiny.predict_action(ctx, wrist, INSTRUCTIONS[:2], proprio, noise=noise)
    same = tiny.predict_action(ctx.copy(), wrist.copy(), INSTRUCTIONS[:2], proprio, noise=noise)
    swapped_ctx = tiny.predict_action(other_ctx, wrist, INSTRUCTIONS[:2], proprio, noise=noise)
    swapped_wrist = tiny.predict_action(ctx, other_wrist, INSTRUCTIONS[:2], proprio, noise=noise)
    assert torch.equal(ref, same)
    scale = ref.abs().mean()
    assert (swapped_ctx - ref).abs().mean() > 1e-3 * scale
    assert (swapped_wrist - ref).abs().mean() > 1e-3 * scale


def test_bad_inputs_raise_clear_errors(tiny):
    ctx, wrist, proprio = _obs(1)
    with pytest.raises(ImageInputError, match="uint8"):
        tiny.predict_action(ctx.astype(np.float32) / 255.0, wrist, "x", proprio)
    with pytest.raises(ImageInputError, match=r"\(B, H, W, 3\)"):
        tiny.predict_action(ctx[..., :2], wrist, "x", proprio)
    with pytest.raises(ValueError, match="proprio"):
        tiny.predict_action(ctx, wrist, "x", proprio[:, :5])
    with pytest.raises(ConfigError, match="conditioning"):
        VLAConfig(conditioning="first_token")
    with pytest.raises(ConfigError, match="available presets"):
        load_model_preset("no-such-preset")
    with pytest.raises(ConfigError, match="unknown model config key"):
        VLAConfig.from_dict({"d_modle": 3})
    with pytest.raises(BackboneError, match="vlm_hidden"):
        VLAModel(load_model_preset("tiny", vlm_hidden=64))
    with pytest.raises(BackboneError, match="load_in_4bit"):
        VLAModel(load_model_preset("tiny", load_in_4bit=True))


def test_presets_load_and_round_trip():
    for name in ("qwen2.5-vl-7b", "qwen2.5-vl-3b", "tiny", "tiny-lora"):
        cfg = load_model_preset(name)
        assert VLAConfig.from_dict(cfg.to_dict()) == cfg
    seven = load_model_preset("qwen2.5-vl-7b")
    assert (seven.vlm_hidden, seven.d_model, seven.expert_layers, seven.projector, seven.conditioning,
            seven.lora.r, seven.lora.enabled) == (3584, 512, 6, "mlp", "all_tokens", 16, True)
    assert load_model_preset("qwen2.5-vl-3b").vlm_hidden == 2048
    assert not load_model_preset("tiny").vlm_trainable and load_model_preset("tiny-lora").vlm_trainable


def test_tiny_backbone_is_built_once_and_cached():
    from vla.backbone.tiny import build_tiny_qwen_vl, tiny_model_dir

    path = build_tiny_qwen_vl()
    assert path == tiny_model_dir() and path.name.startswith("tiny-qwen2.5-vl-")
    mtime = (path / "model.safetensors").stat().st_mtime_ns
    assert build_tiny_qwen_vl() == path and (path / "model.safetensors").stat().st_mtime_ns == mtime
    for name in ("config.json", "model.safetensors", "processor_config.json", "tokenizer.json", "build.json"):
        assert (path / name).is_file(), name


def test_wrist_dropout_hides_only_the_wrist_tokens_and_only_in_training():
    cfg = load_model_preset("tiny").replace(image_size=[64, 64])
    model = VLAModel(cfg)
    model.set_training_levers(TrainingLevers(wrist_dropout=0.5))
    torch.manual_seed(0)
    mask = torch.zeros(64, 10, dtype=torch.bool)
    mask[:, :8] = True  # 4 context + 4 wrist tokens (64 px views), 2 padding slots
    model.eval()
    assert torch.equal(model._drop_wrist_tokens(mask), mask)
    model.train()
    out = model._drop_wrist_tokens(mask)
    dropped = (out != mask).any(1)
    assert 10 < int(dropped.sum()) < 54  # about half the samples
    assert out[dropped, :4].all() and not out[dropped, 4:].any()  # the context tokens always stay
    assert torch.equal(out[~dropped], mask[~dropped])
    with pytest.raises(ValueError, match="wrist_dropout.*image_tokens"):
        VLAModel(load_model_preset("tiny").replace(conditioning="all_tokens")).set_training_levers(
            TrainingLevers(wrist_dropout=0.3))
    with pytest.raises(ConfigError, match=r"training levers.*levers.wrist_dropout"):  # not a model setting any more
        load_model_preset("tiny").replace(wrist_dropout=0.3)


def test_proprio_dropout_replaces_the_proprio_by_its_mean_in_training_only():
    torch.manual_seed(0)
    model = VLAModel(load_model_preset("tiny").replace(image_size=[56, 56]))
    model.set_training_levers(TrainingLevers(proprio_dropout=0.5))
    seen = []
    forward = model.expert.forward
    model.expert.forward = lambda x, t, proprio, *a: seen.append(proprio.detach().clone()) or forward(x, t, proprio, *a)
    b = _batch(32)
    b["context_image"], b["wrist_image"] = b["context_image"][:, :56, :56], b["wrist_image"][:, :56, :56]
    model.train()
    model(b)
    zeroed = (seen[-1] == 0).all(1)
    assert 6 < int(zeroed.sum()) < 26  # about half the samples see the mean proprio (0 once normalised)
    model.eval()
    model(b)
    assert not (seen[-1] == 0).all(1).any()


# ---------------------------------------------------------------------- lean loading and numerics (issue 16)

# predict_action of the tiny presets (torch.manual_seed(0) model, fixed inputs and noise), recorded with the
# code before issue 16's changes (lean loading, float32 flow time, the processor split, static shapes):
# every 28th value of the (2, 16, 7) chunk and the sum. Valid for the tiny build it was recorded on.
GOLDEN_BUILD = "1f3e61e2019b"
GOLDEN = {
    "tiny": ([0.8984236, 1.8772392, 0.0274288, -1.013108, 0.6560699, 0.2172526, -1.8001182, 0.9116921],
             -18.25743423216045),
    "tiny-lora": ([1.9966309, 1.1141583, 0.3141789, -1.1469638, 0.1244277, 1.2758846, -1.62011, 1.5702697],
                  18.531338453292847),
}


@pytest.mark.parametrize("preset", ["tiny", "tiny-lora"])
def test_tiny_presets_give_the_same_actions_as_before(preset):
    """A checkpoint trained before the 7B-path changes must act the same: the float32 CPU path is unchanged."""
    from vla.backbone.tiny import build_hash

    if build_hash() != GOLDEN_BUILD:
        pytest.skip("the tiny backbone of these library versions differs from the one the golden values came from")
    torch.manual_seed(0)
    model = VLAModel(load_model_preset(preset))
    rng = np.random.default_rng(0)
    ctx = rng.integers(0, 256, (2, 112, 112, 3), dtype=np.uint8)
    wrist = rng.integers(0, 256, (2, 112, 112, 3), dtype=np.uint8)
    proprio = rng.normal(size=(2, 27)).astype(np.float32)
    noise = torch.from_numpy(rng.normal(size=(2, 16, 7)).astype(np.float32))
    out = model.predict_action(ctx, wrist, ["lift the red cube", "stack"], proprio, noise=noise)
    values, total = GOLDEN[preset]
    torch.testing.assert_close(out.flatten()[::28], torch.tensor(values), atol=1e-6, rtol=0)
    assert abs(out.double().sum().item() - total) < 1e-4


def test_backbone_is_the_base_model_without_lm_head(tiny, tiny_lora):
    from vla.backbone.qwen import core_model

    for model in (tiny, tiny_lora):
        assert type(core_model(model.backbone)).__name__ == "Qwen2_5_VLModel"
        names = [n for n, _ in model.backbone.named_parameters()]
        assert not any("lm_head" in n for n in names)
        assert any(".visual." in f".{n}" for n in names) and any("language_model" in n for n in names)


def test_flow_time_targets_and_time_embedding_stay_float32_under_autocast(tiny, monkeypatch):
    """Under bf16 autocast the regression targets, noise, flow time and its sinusoidal embedding stay float32."""
    import vla.model.action_expert as ae
    import vla.modeling as modeling

    seen = {}
    embed, loss_fn = ae.timestep_embedding, modeling.flow_matching_loss

    def spy_embed(t, dim, **kw):
        out = embed(t, dim, **kw)
        seen.setdefault("embed", []).append((t.dtype, out.dtype))
        return out

    def spy_loss(fn, actions, noise, t, mask=None):
        seen["loss"] = (actions.dtype, noise.dtype, t.dtype)
        return loss_fn(fn, actions, noise, t, mask)

    monkeypatch.setattr(ae, "timestep_embedding", spy_embed)
    monkeypatch.setattr(modeling, "flow_matching_loss", spy_loss)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = tiny(_batch(2))["loss"]
        tiny.predict_action(*_obs(1)[:2], "lift", _obs(1)[2], num_steps=2)
    assert torch.isfinite(loss)
    assert seen["loss"] == (torch.float32,) * 3
    assert seen["embed"] and all(d == (torch.float32, torch.float32) for d in seen["embed"])


def test_gradient_checkpointing_option_gives_the_same_lora_gradients():
    """`gradient_checkpointing: true` turns on transformers' checkpointing; LoRA gradients are unchanged."""
    grads = {}
    for on in (False, True):
        torch.manual_seed(0)
        model = VLAModel(load_model_preset("tiny-lora", gradient_checkpointing=on))
        for n, p in model.backbone.named_parameters():
            if "lora_B" in n:
                torch.nn.init.normal_(p, std=0.05, generator=torch.Generator().manual_seed(len(n)))
        from vla.backbone.qwen import core_model

        assert core_model(model.backbone).language_model.gradient_checkpointing is on
        model.train()
        torch.manual_seed(1)
        model(_batch(2))["loss"].backward()
        grads[on] = {n: p.grad.clone() for n, p in model.named_parameters() if "lora_A" in n}
    assert grads[True] and grads[True].keys() == grads[False].keys()
    for n in grads[True]:
        torch.testing.assert_close(grads[True][n], grads[False][n], atol=1e-6, rtol=1e-5)


def test_adapter_saved_in_the_old_module_layout_still_loads(tmp_path):
    """Adapters written when the backbone was the ForConditionalGeneration (`...model.model.language_model`)."""
    from safetensors.torch import load_file, save_file
    from vla.checkpoint import load_vla_for_inference, save_checkpoint

    torch.manual_seed(0)
    model = VLAModel(load_model_preset("tiny-lora"))
    with torch.no_grad():
        for n, p in model.backbone.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    save_checkpoint(model, tmp_path / "ckpt")
    weights = tmp_path / "ckpt" / "adapter" / "adapter_model.safetensors"
    state = load_file(str(weights))
    assert all(k.startswith("base_model.model.language_model.") for k in state)
    old = {k.replace("base_model.model.", "base_model.model.model.", 1): v for k, v in state.items()}
    save_file(old, str(weights))
    import json

    manifest = json.loads((tmp_path / "ckpt" / "manifest.json").read_text())
    import hashlib

    data = weights.read_bytes()
    manifest["files"]["adapter/adapter_model.safetensors"] = {"sha256": hashlib.sha256(data).hexdigest(),
                                                              "bytes": len(data)}
    (tmp_path / "ckpt" / "manifest.json").write_text(json.dumps(manifest))
    ctx, wrist, proprio = _obs(2)
    noise = torch.randn(2, 16, 7)
    loaded = load_vla_for_inference(tmp_path / "ckpt")
    assert not any(p.requires_grad for p in loaded.parameters())
    torch.testing.assert_close(loaded.predict_action(ctx, wrist, INSTRUCTIONS[:2], proprio, noise=noise),
                               model.predict_action(ctx, wrist, INSTRUCTIONS[:2], proprio, noise=noise),
                               atol=0, rtol=0)


# ---------------------------------------------------------------------- the processor split (issue 16)

def _samples(n: int, seed: int = 0) -> list[dict]:
    b = _batch(n, seed)
    return [{k: (v[i] if k != "instruction" else v[i]) for k, v in b.items()} for i in range(n)]


def test_processor_step_runs_in_dataloader_workers_and_the_model_takes_tensors(tiny_lora, monkeypatch):
    """`VLAProcessor.collate` in a worker process gives tensors; the model then never runs the processor
    and computes exactly what the observation path computes."""
    import functools
    import pickle

    from vla.backbone.processor import VLAProcessor

    model = tiny_lora
    proc = pickle.loads(pickle.dumps(model.preprocessor))  # what a worker receives
    assert isinstance(proc, VLAProcessor)
    loader = torch.utils.data.DataLoader(_samples(3), batch_size=3, num_workers=1,
                                         collate_fn=functools.partial(proc.collate, instruction="lift the cube"))
    batch = next(iter(loader))
    inputs = batch["vlm_inputs"]
    assert set(inputs) >= {"input_ids", "attention_mask", "pixel_values", "image_grid_thw", "mm_token_type_ids"}
    assert batch["instruction"] == ["lift the cube"] * 3
    ref_batch = {**batch, "instruction": ["lift the cube"] * 3}
    ref_batch.pop("vlm_inputs")
    torch.manual_seed(3)
    ref_loss = model(ref_batch)["loss"]
    noise = torch.randn(3, 16, 7)
    ref_actions = model.predict_action(batch["context_image"], batch["wrist_image"], batch["instruction"],
                                       batch["proprio"], noise=noise)

    def no_processor(*a, **k):
        raise AssertionError("the model ran the processor although it was given tensors")

    monkeypatch.setattr(type(model.preprocessor), "__call__", no_processor)
    torch.manual_seed(3)
    assert torch.equal(model(batch)["loss"], ref_loss)
    assert torch.equal(model.predict_action(proprio=batch["proprio"], noise=noise, vlm_inputs=inputs), ref_actions)


def test_static_prompt_padding_is_exact_or_refused(tiny):
    ctx, wrist, _ = _obs(2)
    out = tiny.preprocessor(ctx, wrist, INSTRUCTIONS[:2], pad_to=120)
    assert out["input_ids"].shape == (2, 120) and out["attention_mask"].shape == (2, 120)
    assert not out["attention_mask"][:, 0].any()  # padded on the left
    with pytest.raises(ValueError, match="prompt_len"):
        tiny.preprocessor(ctx, wrist, INSTRUCTIONS[:2], pad_to=20)


# ---------------------------------------------------------------------- cached vision features (issue 16)

def test_cached_vision_features_equal_the_image_path_and_skip_the_vision_tower(tiny_lora, tmp_path):
    """LoRA runs cache the frozen vision tower's output per sample: training batches built from the cache
    give the image path's loss and gradients without calling the vision tower."""
    from vla.training.features import CachedVision, cache_kind, compute_vision_cache

    model = tiny_lora
    assert cache_kind(model) == "vision" and not model.vision_trainable and model.vlm_trainable
    samples = _samples(4, seed=5)
    samples[1]["instruction"] = "stack"  # prompts of different lengths: left padding in the cache

    class Samples(torch.utils.data.Dataset):
        def __len__(self):
            return len(samples)

        def __getitem__(self, i):
            return samples[i]

    cache = compute_vision_cache(model, Samples(), [0, 1, 2, 3], batch_size=3, show=False)
    assert isinstance(cache, CachedVision) and cache.image_embeds.shape == (4, 32, 128)
    saved = {n: p.detach().clone() for n, p in model.backbone.named_parameters() if "lora_B" in n}
    with torch.no_grad():
        for n, p in model.backbone.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)  # a LoRA that acts (B = 0 is the identity)
    rows = cache.rows([3, 1])
    batch = cache.batch(rows, torch.device("cpu"))
    ref = {k: torch.stack([torch.as_tensor(samples[i][k]) for i in (3, 1)])
           for k in ("context_image", "wrist_image", "proprio", "actions", "action_mask")}
    ref["instruction"] = [samples[i]["instruction"] for i in (3, 1)]
    losses, grads = [], []
    calls = []
    hook = __import__("vla.backbone.qwen", fromlist=["x"]).core_model(model.backbone).visual.register_forward_hook(
        lambda *_: calls.append(1))
    try:
        for b in (ref, batch):
            model.zero_grad()
            torch.manual_seed(11)
            loss = model(b)["loss"]
            loss.backward()
            losses.append(loss.detach())
            grads.append(torch.cat([p.grad.flatten() for n, p in model.named_parameters() if "lora_A" in n]))
    finally:
        hook.remove()
        with torch.no_grad():  # the module-scoped fixture goes back to its identity adapter
            for n, p in model.backbone.named_parameters():
                if n in saved:
                    p.copy_(saved[n])
        model.zero_grad()
    assert len(calls) == 1  # the image path ran the vision tower, the cached batch did not
    torch.testing.assert_close(losses[1], losses[0], atol=1e-6, rtol=1e-5)
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[1], grads[0], atol=1e-6, rtol=1e-4)


def test_kbit_preparation_only_when_lora_trains_on_4bit_weights(monkeypatch, tmp_path):
    """peft's prepare_model_for_kbit_training (upcasts every non-quantised weight to float32) runs for a LoRA
    run on 4-bit weights, never for inference (bitsandbytes is stood in for: the loading path is the same)."""
    import peft
    import vla.backbone.qwen as qwen

    calls = []
    real_load = qwen._from_pretrained_quietly
    monkeypatch.setattr(qwen, "_quantization_config", lambda cfg, device: object() if cfg.load_in_4bit else None)
    monkeypatch.setattr(qwen, "_from_pretrained_quietly", lambda cls, source, **kw: real_load(
        cls, source, **{k: v for k, v in kw.items() if k not in ("quantization_config", "device_map")}))
    monkeypatch.setattr(peft, "prepare_model_for_kbit_training",
                        lambda model, **kw: calls.append(kw) or model)
    cfg = load_model_preset("tiny-lora", load_in_4bit=True)
    VLAModel(cfg)  # training a fresh LoRA
    assert len(calls) == 1
    VLAModel(cfg, trainable=False)  # inference
    VLAModel(load_model_preset("tiny", load_in_4bit=True))  # no LoRA: nothing trains in the backbone
    assert len(calls) == 1
