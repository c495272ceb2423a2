"""The Qwen2.5-VL backbone: loading (frozen, LoRA, 4-bit), prompts and images, the offline tiny model.

- `vla.backbone.qwen`: `load_backbone` (the base `Qwen2_5_VLModel`, no LM head), `load_adapter`,
  `prepare_vlm_inputs`, `resolve_backbone`, `BackboneError`
- `vla.backbone.processor`: `VLAProcessor`, the processor step (prompts, resize, Qwen processor) apart
  from the model
- `vla.backbone.shapes`: the real Qwen2.5-VL-7B/3B configs written here (meta-device tests, random-weight
  benchmarks), `weight_memory`
- `vla.backbone.images`: uint8 batches for the processor (`prepare_images`, `ImageInputError`)
- `vla.backbone.tiny`: `build_tiny_qwen_vl()` (`python -m vla.backbone.tiny`)
Nothing is imported here, so `import vla.backbone.tiny` stays light.
"""
