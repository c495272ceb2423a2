"""The model side of the policy server: a batch of validated samples -> one ``predict_action`` call.

Each sample may carry its own flow-matching noise (a client that wants reproducible chunks sends it);
the others get noise drawn from the runner's seeded generator, one sample at a time in arrival order.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from vla.serving.observation import Sample
from vla.serving.spec import PolicySpec


class ModelRunner:
    def __init__(self, model, spec: PolicySpec, *, num_flow_steps: int | None = None, seed: int = 0,
                 compile: str = "none"):
        from vla.model.static import CompiledPredict

        self.model, self.spec, self.num_flow_steps = model.eval(), spec, num_flow_steps
        # "graphs": static shapes + CUDA graphs, one set per batch size the micro-batcher forms
        self.predict = CompiledPredict(self.model, compile)
        self.generator = torch.Generator(device="cpu").manual_seed(seed)

    @classmethod
    def from_checkpoint(cls, path: str | Path, *, device: str = "cpu", dtype: torch.dtype = torch.float32,
                        instruction: str | None = None, num_flow_steps: int | None = None,
                        seed: int = 0, compile: str = "none") -> ModelRunner:
        """Load and verify a checkpoint; its key mapping and instruction define the observations served."""
        from vla.checkpoint import CheckpointError, load_vla_for_inference, read_checkpoint_config

        meta = read_checkpoint_config(path)
        mapping = meta.get("key_mapping")
        if not mapping:
            raise CheckpointError(f"{path}: checkpoint has no key_mapping, so observations cannot be mapped; "
                                  "re-export it from training")
        instruction = instruction or meta.get("instruction") or mapping.get("instruction") or ""
        if not instruction:
            raise CheckpointError(f"{path}: checkpoint has no instruction; pass --instruction")
        model = load_vla_for_inference(path, device=device, dtype=dtype)
        return cls(model, PolicySpec.from_model(model, mapping, instruction), num_flow_steps=num_flow_steps,
                   seed=seed, compile=compile)

    @torch.inference_mode()
    def __call__(self, samples: Sequence[Sample]) -> list[np.ndarray]:
        """One batched model call -> a (chunk, action_dim) float32 array per sample."""
        shape = (self.spec.chunk, self.spec.action_dim)
        noise = torch.stack([torch.from_numpy(s.noise) if s.noise is not None
                             else torch.randn(shape, generator=self.generator) for s in samples])
        kw = {"noise": noise}
        if self.num_flow_steps is not None:
            kw["num_steps"] = self.num_flow_steps
        out = self.predict(
            torch.from_numpy(np.stack([s.context_image for s in samples])),
            torch.from_numpy(np.stack([s.wrist_image for s in samples])),
            [s.instruction for s in samples],
            torch.from_numpy(np.stack([s.proprio for s in samples])).to(self.model.device),
            **kw,
        )
        out = out.float().cpu().numpy()
        return [np.ascontiguousarray(a) for a in out]
