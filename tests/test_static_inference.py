"""Static-shape inference (`vla.model.static.StaticPredictor`) equals the eager `predict_action`.

On the CPU the static path runs without graphs; on CUDA the graph replay is checked against eager
within bf16 tolerance (skipped without a GPU).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from vla.config import load_model_preset
from vla.model.static import StaticPredictor
from vla.modeling import VLAModel

torch.set_num_threads(1)


def _obs(batch: int, seed: int = 0, size: int = 112):
    rng = np.random.default_rng(seed)
    ctx = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    wrist = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    return ctx, wrist, rng.normal(size=(batch, 27)).astype(np.float32)


def _model(preset: str, device: str = "cpu", **overrides) -> VLAModel:
    torch.manual_seed(0)
    model = VLAModel(load_model_preset(preset, **overrides), device=device)
    with torch.no_grad():
        for n, p in model.backbone.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)  # an adapter that acts
    return model.eval()


@pytest.mark.parametrize("preset,overrides", [("tiny", {}), ("tiny", {"conditioning": "all_tokens"}),
                                              ("tiny-lora", {}), ("tiny", {"conditioning": "last_token"}),
                                              ("tiny", {"conditioning": "image_and_text_tokens"}),
                                              ("tiny", {"image_size": [224, 224]})])  # 4 attention windows per view
def test_static_path_equals_eager_on_the_cpu(preset, overrides):
    model = _model(preset, **overrides)
    predictor = StaticPredictor(model, batch_size=2)
    assert not predictor.graphs
    instructions = [["lift the red cube", "stack"], ["pick up the cube and lift it", "lift"]]
    for seed, instr in enumerate(instructions * 2):  # prompt changes, then the same prompts again (cached)
        ctx, wrist, proprio = _obs(2, seed)
        noise = torch.randn(2, 16, 7, generator=torch.Generator().manual_seed(seed))
        eager = model.predict_action(ctx, wrist, instr, proprio, noise=noise)
        static = predictor(ctx, wrist, instr, proprio, noise=noise)
        torch.testing.assert_close(static, eager, atol=2e-5, rtol=1e-5)
    # the static memory is wider than eager for all_tokens (padding slots masked off), never narrower
    assert predictor.memory.shape[1] == {"image_tokens": predictor.image_tokens, "all_tokens": predictor.prompt_len,
                                         "image_and_text_tokens": predictor.prompt_len,
                                         "last_token": 1}[model.cfg.conditioning]


def test_static_shapes_are_enforced():
    model = _model("tiny")
    predictor = StaticPredictor(model, batch_size=1, prompt_len=70)
    ctx, wrist, proprio = _obs(2)
    with pytest.raises(ValueError, match="batch_size"):
        predictor(ctx, wrist, "lift", proprio)
    with pytest.raises(ValueError, match="prompt_len"):
        predictor(ctx[:1], wrist[:1], "lift the red cube " * 20, proprio[:1])
    with pytest.raises(ValueError, match="graphs"):
        StaticPredictor(model, graphs=True)
    with pytest.raises(ValueError, match="prompt_len"):
        StaticPredictor(model, prompt_len=5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU")
@pytest.mark.parametrize("preset", ["tiny", "tiny-lora"])
def test_cuda_graph_replay_equals_eager(preset):
    """bf16 on CUDA: graph replay equals the static path without graphs (same kernels) and the eager
    `predict_action` within bf16 tolerance, over prompt changes and repeated replays."""
    model = _model(preset, device="cuda").to(torch.bfloat16)
    graphed = StaticPredictor(model, batch_size=2, graphs=True)
    plain = StaticPredictor(model, batch_size=2, graphs=False)
    for seed, instr in enumerate([["lift the red cube", "stack"], ["lift", "pick up the cube"]] * 2):
        ctx, wrist, proprio = _obs(2, seed)
        noise = torch.randn(2, 16, 7, generator=torch.Generator().manual_seed(seed))
        eager = model.predict_action(ctx, wrist, instr, proprio, noise=noise)
        a = graphed(ctx, wrist, instr, proprio, noise=noise)
        b = plain(ctx, wrist, instr, proprio, noise=noise)
        torch.testing.assert_close(a, b, atol=1e-2, rtol=1e-2)
        scale = eager.abs().mean()
        assert (a - eager).abs().mean() < 0.05 * scale, (a - eager).abs().mean() / scale
    assert graphed._lm_graph is not None and graphed._step_graph is not None


def test_compile_graphs_setting_gives_the_eager_chunks_on_the_cpu():
    """`compile="graphs"` (VLAPolicy, ModelChunkSource, the policy server's ModelRunner) selects the static
    path, one predictor per batch size; on the CPU it equals eager."""
    from vla.model.static import CompiledPredict

    model = _model("tiny")
    graphs, eager = CompiledPredict(model, "graphs"), CompiledPredict(model, "none")
    for batch in (1, 2, 1):
        ctx, wrist, proprio = _obs(batch, seed=batch)
        noise = torch.randn(batch, 16, 7)
        torch.testing.assert_close(graphs(ctx, wrist, "lift the red cube", proprio, noise=noise, num_steps=4),
                                   eager(ctx, wrist, "lift the red cube", proprio, noise=noise, num_steps=4),
                                   atol=2e-5, rtol=1e-5)
    assert sorted(graphs.predictors) == [1, 2]
    with pytest.raises(ValueError, match="compile"):
        CompiledPredict(model, "trt")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_make_bench_gpu_refuses_cleanly_without_cuda():
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, str(root / "bench" / "gpu_suite.py")], cwd=root, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "no CUDA GPU" in lines[0] and "make bench-gpu" in lines[0]


def test_static_predictor_works_in_and_out_of_inference_mode():
    """The policy server's runner calls under torch.inference_mode; the buffers must stay updatable outside it."""
    model = _model("tiny")
    ctx, wrist, proprio = _obs(1)
    noise = torch.randn(1, 16, 7)
    ref = model.predict_action(ctx, wrist, "lift", proprio, noise=noise)
    with torch.inference_mode():
        predictor = StaticPredictor(model, 1)
        inside = predictor(ctx, wrist, "lift", proprio, noise=noise)
    outside = predictor(ctx, wrist, "lift", proprio, noise=noise)
    torch.testing.assert_close(inside, ref, atol=2e-5, rtol=1e-5)
    assert torch.equal(inside, outside)
