"""Loading the Qwen2.5-VL backbone (frozen, optional LoRA / 4-bit) and turning observations into its inputs.

Everything goes through transformers' own entry points (`AutoModel` for the inner `Qwen2_5_VLModel`,
`AutoProcessor`) and peft's (`get_peft_model`, `PeftModel.from_pretrained`), so a hub id, a local
folder and the locally built tiny model all take the same path. Only the base model is loaded: the
LM head (a 152k x 3584 matrix on the 7B, 0.5 B parameters) is never read, since nothing uses logits.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from vla.backbone.images import prepare_images
from vla.backbone.shapes import RANDOM_PREFIX
from vla.config import VLAConfig


class BackboneError(ValueError):
    """The backbone cannot be loaded as configured; the message names the fix."""


def resolve_backbone(name: str) -> str:
    """'tiny' -> the locally built tiny model folder; anything else is a hub id or a folder, as given."""
    if name == "tiny":
        from vla.backbone.tiny import build_tiny_qwen_vl

        return str(build_tiny_qwen_vl())
    return name


def _quantization_config(cfg: VLAConfig, device: torch.device):
    if not cfg.load_in_4bit:
        return None
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        raise BackboneError("load_in_4bit: true needs bitsandbytes; install it with "
                            "`pip install 'vla-isaac[quant]'` or set load_in_4bit: false") from exc
    if device.type != "cuda":
        raise BackboneError(f"load_in_4bit: true needs a CUDA device (got {device}); "
                            "set load_in_4bit: false on the CPU")
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16)


# Qwen2_5_VLForConditionalGeneration checkpoints (the hub's, and `build_tiny_qwen_vl`'s) name the language
# model `model.*` (the hub's original layout) or `model.language_model.*` and the vision tower `visual.*` or
# `model.visual.*`; the base `Qwen2_5_VLModel` names them `language_model.*` and `visual.*`. transformers
# applies its own renaming only when loading the ForConditionalGeneration class, so the base model needs
# these (`from_pretrained(key_mapping=...)`); `lm_head.*` then matches nothing and is not loaded.
BASE_MODEL_KEY_MAPPING = {
    r"^model\.(?!language_model\.|visual\.)": "language_model.",
    r"^model\.language_model\.": "language_model.",
    r"^model\.visual\.": "visual.",
}


def _from_pretrained_quietly(cls, source: str, **kwargs):
    """`cls.from_pretrained` without the load report that lists the deliberately skipped `lm_head.weight`."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        return cls.from_pretrained(source, **kwargs)
    finally:
        hf_logging.set_verbosity(level)


def load_backbone(cfg: VLAConfig, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                  adapter_dir: str | Path | None = None, trainable: bool = True):
    """Return (model, processor): the frozen `Qwen2_5_VLModel` (no LM head), LoRA applied (fresh, or loaded
    from `adapter_dir`).

    `trainable=False` (inference) loads the adapter frozen and skips peft's k-bit preparation, which
    upcasts every non-quantised weight to float32 for training stability and would only cost memory.
    """
    from transformers import AutoModel, AutoProcessor

    device = torch.device(device)
    source = resolve_backbone(cfg.backbone)
    quant = _quantization_config(cfg, device)
    kwargs = dict(dtype=dtype, attn_implementation=cfg.attn_implementation, key_mapping=BASE_MODEL_KEY_MAPPING)
    if quant is not None:
        kwargs.update(quantization_config=quant, device_map={"": device})
    try:
        if cfg.backbone.startswith(RANDOM_PREFIX):
            model, processor = _random_backbone(cfg, device, dtype, quant)
        else:
            model = _from_pretrained_quietly(AutoModel, source, **kwargs)
            processor = AutoProcessor.from_pretrained(source)
    except OSError as exc:
        raise BackboneError(f"backbone '{cfg.backbone}': cannot load ({exc}); use a local folder, a cached hub id, "
                            f"or 'tiny'") from exc
    if not (hasattr(model, "visual") and hasattr(model, "language_model")):
        raise BackboneError(f"backbone '{cfg.backbone}': AutoModel gave {type(model).__name__}, not a Qwen2.5-VL "
                            "base model; use a Qwen2.5-VL checkpoint (hub id or folder)")
    if quant is None:
        model.to(device)
    hidden = model.config.get_text_config().hidden_size
    if hidden != cfg.vlm_hidden:
        raise BackboneError(f"model config '{cfg.preset}': vlm_hidden is {cfg.vlm_hidden} but backbone "
                            f"'{cfg.backbone}' has hidden size {hidden}; set vlm_hidden: {hidden}")
    # Batched prompts of different lengths are padded on the left; the model code handles either side.
    processor.tokenizer.padding_side = "left"

    if cfg.freeze_backbone:
        model.requires_grad_(False)
    lora_trains = trainable and cfg.lora.enabled
    if quant is not None and lora_trains:
        from peft import prepare_model_for_kbit_training

        # Gradient checkpointing is configured below (cfg.gradient_checkpointing), not here.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    if cfg.gradient_checkpointing and trainable:
        # Non-reentrant checkpointing: gradients reach LoRA weights although the frozen inputs need no grad.
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if adapter_dir is not None:
        model = load_adapter(model, adapter_dir, trainable=lora_trains)
    elif cfg.lora.enabled:
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                          target_modules=cfg.lora.target_modules, bias="none")
        try:
            model = get_peft_model(model, lora)
        except ValueError as exc:
            raise BackboneError(f"model config '{cfg.preset}': lora.target_modules {cfg.lora.target_modules!r} "
                                f"matched nothing in '{cfg.backbone}' ({exc})") from exc
    model.eval()  # frozen backbone: no dropout; LoRA dropout follows .train() of the parent VLAModel
    return model, processor


# Adapters saved when the backbone was loaded as Qwen2_5_VLForConditionalGeneration name the base model's
# modules one level deeper (`model.language_model.*`); peft renames them on load (`key_mapping`).
ADAPTER_KEY_MAPPING = {r"^model\.language_model\.": "language_model.", r"^model\.visual\.": "visual."}


def load_adapter(model, adapter_dir: str | Path, *, trainable: bool):
    """`PeftModel.from_pretrained` of the LoRA adapter in `adapter_dir`, of either module layout.

    peft only warns when saved adapter weights land nowhere (the model would silently keep an identity
    adapter); here that is an error.
    """
    import warnings

    from peft import PeftModel

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        peft_model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=trainable,
                                               key_mapping=ADAPTER_KEY_MAPPING)
    for w in caught:
        if "missing adapter keys" in str(w.message):
            raise BackboneError(f"{adapter_dir}: the LoRA adapter does not fit this backbone ({str(w.message)[:200]}); "
                                "load it with the model config it was trained with")
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return peft_model


def _random_backbone(cfg: VLAConfig, device: torch.device, dtype: torch.dtype, quant):
    """`backbone: random:<hub id>` (benchmarks): the real shapes with random weights, built on `device`, and
    the tiny model's processor (Qwen's special tokens and chat template, images up to 224x224 keep their
    size); its special-token ids replace the hub's. Prompts tokenise shorter than with Qwen's vocabulary."""
    from transformers import AutoProcessor

    from vla.backbone.shapes import build_random_backbone
    from vla.backbone.tiny import QWEN_SPECIAL_TOKENS, build_tiny_qwen_vl

    if quant is not None:
        raise BackboneError(f"backbone '{cfg.backbone}': random weights cannot be loaded in 4 bit; "
                            "set load_in_4bit: false")
    processor = AutoProcessor.from_pretrained(build_tiny_qwen_vl())
    tok = processor.tokenizer
    ids = {f"{name}_token_id": tok.convert_tokens_to_ids(token) for name, token in (
        ("image", "<|image_pad|>"), ("video", "<|video_pad|>"), ("vision_start", "<|vision_start|>"),
        ("vision_end", "<|vision_end|>")) if token in QWEN_SPECIAL_TOKENS}
    model = build_random_backbone(cfg.backbone, device=device, dtype=dtype,
                                  attn_implementation=cfg.attn_implementation, token_ids=ids)
    return model, processor


def core_model(backbone):
    """The `Qwen2_5_VLModel` (peft-wrapped or not): hidden states without LM-head logits."""
    base = backbone.get_base_model() if hasattr(backbone, "get_base_model") else backbone
    return base.model if hasattr(base, "lm_head") else base  # a full ForConditionalGeneration, if given one


def build_prompts(processor, instructions: Sequence[str], cfg: VLAConfig) -> list[str]:
    """One chat prompt per sample: labelled context view, labelled wrist view, then the instruction.

    The instruction comes after the images so that, in a causal LM, its tokens can attend to them.
    """
    prompts = []
    for text in instructions:
        messages = [{"role": "user", "content": [
            {"type": "text", "text": cfg.context_label}, {"type": "image"},
            {"type": "text", "text": cfg.wrist_label}, {"type": "image"},
            {"type": "text", "text": text},
        ]}]
        prompts.append(processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))
    return prompts


def prepare_vlm_inputs(processor, context_images, wrist_images, instructions: Sequence[str] | str,
                       cfg: VLAConfig, *, pad_to: int | None = None) -> dict[str, torch.Tensor]:
    """Observations -> one padded processor batch (input_ids, attention_mask, pixel_values, ...).

    `pad_to`: pad every prompt to exactly this many tokens (static shapes); a longer prompt is an error.
    """
    ctx = prepare_images(context_images, cfg.image_size, "context_images")
    wrist = prepare_images(wrist_images, cfg.image_size, "wrist_images")
    if ctx.shape[0] != wrist.shape[0]:
        raise ValueError(f"context_images has batch {ctx.shape[0]} but wrist_images has {wrist.shape[0]}")
    if isinstance(instructions, str):
        instructions = [instructions] * ctx.shape[0]
    instructions = list(instructions)
    if len(instructions) != ctx.shape[0]:
        raise ValueError(f"{len(instructions)} instructions for a batch of {ctx.shape[0]} images")
    images: list[np.ndarray] = []
    for c, w in zip(ctx, wrist, strict=False):
        images += [c, w]  # order matches the two image placeholders of each prompt
    padding = dict(padding=True) if pad_to is None else dict(padding="max_length", max_length=int(pad_to))
    too_long = ValueError(f"prompt_len: a prompt has more tokens than the static prompt length {pad_to}; "
                          "shorten the instruction or raise prompt_len")
    try:
        out = processor(text=build_prompts(processor, instructions, cfg), images=images, return_tensors="pt",
                        **padding)
    except ValueError as exc:  # prompts longer than max_length differ in length: no tensor can hold them
        if pad_to is not None:
            raise too_long from exc
        raise
    if pad_to is not None and out["input_ids"].shape[1] != pad_to:
        raise too_long
    return dict(out)
