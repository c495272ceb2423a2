"""The real Qwen2.5-VL-3B/7B shapes, written here, for tests and benchmarks that must not download weights.

`qwen_config(backbone)` rebuilds the `Qwen2_5_VLConfig` of a hub id from the published config.json
hyperparameters; `build_random_backbone` instantiates it (on the meta device for shape tests: no
memory; on a GPU with random weights for `bench/gpu_suite.py`: latency does not depend on weight
values). `weight_memory` is the weight-memory estimate docs/model.md quotes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Hyperparameters of the published config.json files (Qwen/Qwen2.5-VL-{7B,3B}-Instruct), LM head included
# (the base model this project loads drops it).
_VISION = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, in_channels=3, patch_size=14,
               spatial_merge_size=2, temporal_patch_size=2, window_size=112, fullatt_block_indexes=[7, 15, 23, 31],
               tokens_per_second=2, hidden_act="silu")
_TOKENS = dict(image_token_id=151655, video_token_id=151656, vision_start_token_id=151652, vision_end_token_id=151653)
QWEN25_VL = {
    "Qwen/Qwen2.5-VL-7B-Instruct": dict(
        text=dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                  num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=128000, rms_norm_eps=1e-6),
        vision=dict(_VISION, out_hidden_size=3584), tie_word_embeddings=False,
        published_parameters=8_292_166_656),  # with the LM head
    "Qwen/Qwen2.5-VL-3B-Instruct": dict(
        text=dict(vocab_size=151936, hidden_size=2048, intermediate_size=11008, num_hidden_layers=36,
                  num_attention_heads=16, num_key_value_heads=2, max_position_embeddings=128000, rms_norm_eps=1e-6),
        vision=dict(_VISION, out_hidden_size=2048), tie_word_embeddings=True,
        published_parameters=3_754_622_976),  # LM head tied to the embedding
}
RANDOM_PREFIX = "random:"  # `backbone: random:<hub id>`: these shapes, random weights (benchmarks only)


def qwen_config(backbone: str, *, token_ids: dict[str, int] | None = None):
    """`Qwen2_5_VLConfig` of a known hub id (or `random:<hub id>`). `token_ids` overrides the special-token
    ids (a random backbone paired with another tokenizer must use that tokenizer's ids)."""
    from transformers import Qwen2_5_VLConfig

    name = backbone.removeprefix(RANDOM_PREFIX)
    if name not in QWEN25_VL:
        raise KeyError(f"backbone {name!r}: no built-in shapes; known: {sorted(QWEN25_VL)}")
    spec = QWEN25_VL[name]
    text = dict(spec["text"], rope_parameters={"rope_type": "default", "rope_theta": 1000000.0,
                                                "mrope_section": [16, 24, 24]},
                tie_word_embeddings=spec["tie_word_embeddings"], use_cache=False)
    return Qwen2_5_VLConfig(text_config=text, vision_config=dict(spec["vision"]), **{**_TOKENS, **(token_ids or {})},
                            tie_word_embeddings=spec["tie_word_embeddings"])


def build_random_backbone(backbone: str, *, device: str | torch.device = "meta", dtype: torch.dtype = torch.bfloat16,
                          attn_implementation: str = "sdpa", token_ids: dict[str, int] | None = None):
    """A `Qwen2_5_VLModel` (no LM head) of the real shapes with random weights, created directly on `device`
    (the meta device allocates nothing)."""
    from transformers import Qwen2_5_VLModel

    config = qwen_config(backbone, token_ids=token_ids)
    with torch.device(device):
        return Qwen2_5_VLModel._from_config(config, dtype=dtype, attn_implementation=attn_implementation)


# The published preprocessor_config.json's image settings (Qwen2VLImageProcessor).
IMAGE_PROCESSOR = dict(patch_size=14, temporal_patch_size=2, merge_size=2,
                       size={"shortest_edge": 56 * 56, "longest_edge": 28 * 28 * 1280})


def image_processor():
    """The Qwen2.5-VL image processor with the published settings (no download)."""
    from transformers import Qwen2VLImageProcessor

    return Qwen2VLImageProcessor(**IMAGE_PROCESSOR)


@dataclass
class WeightMemory:
    """Parameter counts and the bytes their weights take (activations and optimizer state not included)."""

    backbone_params: int  # base model, no LM head
    backbone_linear_params: int  # of which in nn.Linear weights (what bitsandbytes quantises)
    lora_params: int
    head_params: int  # projector + expert (+ memory table)

    @property
    def backbone_bf16_gb(self) -> float:
        return self.backbone_params * 2 / 1e9

    @property
    def backbone_nf4_gb(self) -> float:
        """`load_in_4bit`: NF4 Linear weights (0.5 byte, + 1/64 byte of double-quantised scales), the rest bf16."""
        return (self.backbone_linear_params * (0.5 + 1 / 64)
                + (self.backbone_params - self.backbone_linear_params) * 2) / 1e9

    @property
    def trainable_adam_gb(self) -> float:
        """LoRA + head as float32 master weights with AdamW: weights, gradients, two moments (16 bytes each)."""
        return (self.lora_params + self.head_params) * 16 / 1e9


def weight_memory(backbone, cfg) -> WeightMemory:
    """Count a (meta-device or real) backbone, LoRA applied or not, and the head `cfg` builds."""
    from torch import nn

    from vla.modeling import build_head

    lora = sum(p.numel() for n, p in backbone.named_parameters() if "lora_" in n)
    base = sum(p.numel() for n, p in backbone.named_parameters() if "lora_" not in n)
    linear = sum(m.weight.numel() for n, m in backbone.named_modules()
                 if isinstance(m, nn.Linear) and "lora_" not in n)
    with torch.device("meta"):
        head = sum(p.numel() for p in build_head(cfg).parameters())
    return WeightMemory(backbone_params=base, backbone_linear_params=linear, lora_params=lora, head_params=head)


def memory_table_row(preset: str, mem: WeightMemory) -> str:
    """The docs/model.md table row for a preset (a test checks the docs quote these figures)."""
    return (f"| {preset} | {mem.backbone_params / 1e9:.2f} B | {mem.backbone_bf16_gb:.1f} GB | "
            f"{mem.backbone_nf4_gb:.1f} GB | {mem.lora_params / 1e6:.1f} M | {mem.head_params / 1e6:.1f} M | "
            f"{mem.trainable_adam_gb:.2f} GB |")
