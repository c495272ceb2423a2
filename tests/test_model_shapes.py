"""The real Qwen2.5-VL-7B/3B presets built on the meta device: shapes, LoRA targets, image tokens, memory.

Nothing is downloaded and nothing is allocated: the configs are written in `vla.backbone.shapes` from
the published config.json files, and `backbone: random:<hub id>` builds the model on the meta device.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from vla.backbone.qwen import core_model
from vla.backbone.shapes import QWEN25_VL, image_processor, memory_table_row, weight_memory
from vla.config import load_model_preset
from vla.modeling import VLAModel

PRESETS = {"qwen2.5-vl-7b": "Qwen/Qwen2.5-VL-7B-Instruct", "qwen2.5-vl-3b": "Qwen/Qwen2.5-VL-3B-Instruct"}
DOCS = Path(__file__).resolve().parents[1] / "docs" / "model.md"


@pytest.fixture(scope="module", params=sorted(PRESETS))
def meta_model(request):
    """(preset name, VLAModel on the meta device: random-shape backbone, LoRA as the preset configures)."""
    preset = request.param
    cfg = load_model_preset(preset)
    assert cfg.backbone == PRESETS[preset]
    model = VLAModel(cfg.replace(backbone="random:" + cfg.backbone), device="meta", dtype=torch.bfloat16)
    return preset, model


def test_parameter_counts_match_the_published_models(meta_model):
    preset, model = meta_model
    core = core_model(model.backbone)
    assert all(p.is_meta for p in core.parameters())
    spec = QWEN25_VL[PRESETS[preset]]
    text = core.config.get_text_config()
    base = sum(p.numel() for n, p in core.named_parameters() if "lora_" not in n)
    lm_head = 0 if spec["tie_word_embeddings"] else text.vocab_size * text.hidden_size
    assert base + lm_head == spec["published_parameters"]  # 8,292,166,656 (7B) / 3,754,622,976 (3B)
    assert not any("lm_head" in n for n, _ in model.backbone.named_parameters())
    assert text.hidden_size == model.cfg.vlm_hidden


def test_lora_adapts_exactly_the_language_model_projections_the_config_names(meta_model):
    preset, model = meta_model
    pattern = model.cfg.lora.target_modules
    adapted = {n.removeprefix("base_model.model.") for n, m in model.backbone.named_modules() if hasattr(m, "lora_A")}
    core = core_model(model.backbone)
    layers = core.config.get_text_config().num_hidden_layers
    expected = {f"language_model.layers.{i}.self_attn.{p}" for i in range(layers)
                for p in ("q_proj", "k_proj", "v_proj", "o_proj")}
    assert adapted == expected
    # the regex names these and nothing else among the linear layers (no MLP, no vision tower)
    linear = [n.removeprefix("base_model.model.") for n, m in model.backbone.named_modules()
              if isinstance(m, torch.nn.Linear) and "lora_" not in n and "base_layer" not in n]
    assert {n for n in linear if re.fullmatch(pattern, n)} | adapted == expected
    assert not any(n.startswith("visual.") for n in adapted)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.split(".")[0] in ("projector", "expert") for n in trainable)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_two_224_views_give_128_image_tokens(preset):
    cfg = load_model_preset(preset)
    assert cfg.image_size == [224, 224]
    images = [np.zeros((224, 224, 3), np.uint8)] * 2
    out = image_processor()(images=images, return_tensors="pt")
    merge = 2 * 2
    tokens = (out["image_grid_thw"].prod(-1) // merge).tolist()
    assert tokens == [64, 64] and sum(tokens) == 128
    assert out["pixel_values"].shape == (2 * 16 * 16, 3 * 2 * 14 * 14)  # patches x (C * T * 14 * 14)


def test_docs_quote_the_computed_memory_estimate(meta_model):
    preset, model = meta_model
    mem = weight_memory(model.backbone, model.cfg)
    row = memory_table_row(preset, mem)
    assert row in DOCS.read_text(), f"docs/model.md should contain the row:\n{row}"
    if preset == "qwen2.5-vl-7b":
        assert 15.0 < mem.backbone_bf16_gb < 16.0 and 9e6 < mem.lora_params < 11e6
