"""The Qwen2.5-VL backbone: loading (frozen, LoRA, 4-bit), prompts and images, the offline tiny model.

- `vla.backbone.qwen`: `load_backbone`, `prepare_vlm_inputs`, `resolve_backbone`, `BackboneError`
- `vla.backbone.images`: uint8 batches for the processor (`prepare_images`, `ImageInputError`)
- `vla.backbone.tiny`: `build_tiny_qwen_vl()` (`python -m vla.backbone.tiny`)
Nothing is imported here, so `import vla.backbone.tiny` stays light.
"""
