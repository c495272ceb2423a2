"""`VLAProcessor`: observations -> the tensors `VLAModel` takes, separate from the model (as LeRobot does).

Prompts, image resizing and the Qwen processor are CPU work with no weights: training runs them in the
DataLoader workers (`collate`), the policy once per replanning step; `VLAModel` then only moves
tensors to its device. Picklable (a worker gets a copy).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from vla.backbone.qwen import prepare_vlm_inputs
from vla.config import VLAConfig

VLM_INPUTS = "vlm_inputs"  # the batch key collate() fills


class VLAProcessor:
    def __init__(self, hf_processor, cfg: VLAConfig):
        self.hf_processor = hf_processor  # shared with VLAModel.processor (same tokenizer settings)
        self.cfg = cfg

    def __call__(self, context_images, wrist_images, instructions: Sequence[str] | str, *,
                 pad_to: int | None = None) -> dict[str, torch.Tensor]:
        """uint8 images (B,H,W,3) (resized to cfg.image_size) + instructions -> input_ids, attention_mask,
        mm_token_type_ids, pixel_values, image_grid_thw (CPU tensors, prompts padded on the left)."""
        return prepare_vlm_inputs(self.hf_processor, context_images, wrist_images, instructions, self.cfg,
                                  pad_to=pad_to)

    def collate(self, samples: list[dict], instruction: str | None = None) -> dict:
        """DataLoader `collate_fn`: `vla.data.dataset.collate` plus the processor's tensors under "vlm_inputs"
        (`instruction` replaces every sample's, as the training config's `data.instruction` does)."""
        from vla.data.dataset import collate

        batch = collate(samples)
        if instruction:
            batch["instruction"] = [instruction] * len(batch["instruction"])
        batch[VLM_INPUTS] = self(batch["context_image"], batch["wrist_image"], batch["instruction"])
        return batch
