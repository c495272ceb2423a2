"""`VLAModel`: frozen Qwen2.5-VL (+ LoRA) -> projector -> flow-matching action expert.

    inputs         = model.preprocessor(context, wrist, instructions)           # processor step: CPU tensors
    features, mask = model.vlm_features(inputs)                                  # the model takes tensors
    features, mask = model.compute_vlm_features(context, wrist, instructions)   # both steps; pre-projector
    memory, mask   = model.encode(context, wrist, instructions)                  # projected, expert input
    loss           = model(batch)["loss"]
    actions        = model.predict_action(context, wrist, instructions, proprio)  # float32 (B,16,7), raw units

Normalisation of proprio (in) and actions (in for training, out for inference) happens inside the
model in float32, with the stats held as buffers, so callers always deal in raw units.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from vla.backbone.processor import VLM_INPUTS, VLAProcessor
from vla.backbone.qwen import core_model, load_backbone
from vla.config import VLAConfig
from vla.model.action_expert import ActionExpert
from vla.model.flow_matching import euler_sample, flow_matching_loss, sample_time
from vla.model.levers import TrainingLevers
from vla.model.normalizer import Normalizer
from vla.model.projector import build_projector
from vla.model.tokens import pad_vlm_features, select_tokens
from vla.normalization import NormStats

HEAD_MODULES = ("projector", "memory_pos", "state_head", "expert")  # the trainable head in head.safetensors
# also importable from here (moved to vla.model.*): callers import them from vla.modeling
__all__ = ["HEAD_MODULES", "VLM_INPUTS", "Normalizer", "TrainingLevers", "VLAModel", "build_head",
           "pad_vlm_features", "select_tokens"]


def build_head(cfg: VLAConfig) -> nn.ModuleDict:
    """The trainable head (projector, optional memory position table, expert), without a backbone.

    Its state-dict keys are those of `VLAModel.head_state_dict()`; checkpoint tools (legacy import)
    build it alone so that they never need to load a multi-GB backbone.
    """
    head = nn.ModuleDict({"projector": build_projector(cfg.projector, cfg.vlm_hidden, cfg.d_model)})
    if cfg.memory_pos_emb:
        head["memory_pos"] = nn.Embedding(cfg.max_memory_tokens, cfg.d_model)
        nn.init.normal_(head["memory_pos"].weight, std=0.02)
    if cfg.state_dim:
        from vla.model.state_probe import StateProbe

        head["state_head"] = StateProbe(cfg.d_model, cfg.state_dim, cfg.expert_heads, cfg.proprio_dim,
                                         cfg.state_head_layers)
    head["expert"] = ActionExpert(cfg.d_model, cfg.expert_layers, cfg.expert_heads, cfg.num_queries,
                                  cfg.action_dim, cfg.proprio_dim, cfg.expert_ff_mult, cfg.expert_dropout,
                                  cfg.state_dim)
    return head


class VLAModel(nn.Module):
    def __init__(self, cfg: VLAConfig, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                 adapter_dir: str | None = None, trainable: bool = True):
        """`dtype` is the backbone's dtype; the head is created in float32 (cast the whole model with
        `.to(torch.bfloat16)` for bf16 inference, or train it under autocast). `trainable=False` loads a
        LoRA adapter frozen, without k-bit training preparation or gradient checkpointing."""
        super().__init__()
        self.cfg = cfg
        self.backbone, self.processor = load_backbone(cfg, device=device, dtype=dtype, adapter_dir=adapter_dir,
                                                      trainable=trainable)
        self.preprocessor = VLAProcessor(self.processor, cfg)  # observations -> tensors (no weights, picklable)
        self.image_token_id = int(core_model(self.backbone).config.image_token_id)
        head = build_head(cfg)
        self.projector = head["projector"]
        self.memory_pos = head["memory_pos"] if "memory_pos" in head else None
        self.state_head = head["state_head"] if "state_head" in head else None
        self.expert = head["expert"]
        self.normalizer = Normalizer(cfg.action_dim, cfg.proprio_dim, cfg.norm_mode)
        self.state_probe = None  # training-only auxiliary head (attach_state_probe); never checkpointed
        self.levers = TrainingLevers()  # training-only regularisers (set_training_levers); none by default
        self.state_probe_weight = 0.0
        for name in HEAD_MODULES:
            module = getattr(self, name)
            if module is not None:
                module.to(device)
        self.normalizer.to(device)

    # ------------------------------------------------------------------ properties
    @property
    def device(self) -> torch.device:
        return self.expert.queries.device

    @property
    def head_dtype(self) -> torch.dtype:
        return self.expert.queries.dtype

    @property
    def vlm_trainable(self) -> bool:
        """False when the backbone is frozen and LoRA is off: `compute_vlm_features` can then be cached."""
        return any(p.requires_grad for p in self.backbone.parameters())

    def set_norm_stats(self, stats: NormStats) -> None:
        self.normalizer.set_stats(stats)

    def get_norm_stats(self) -> NormStats:
        return self.normalizer.get_stats()

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters by kind, for separate learning rates: 'lora', 'backbone' (unfrozen), 'head'."""
        groups: dict[str, list[nn.Parameter]] = {"lora": [], "backbone": [], "head": []}
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            if name.startswith("backbone."):
                groups["lora" if "lora_" in name else "backbone"].append(p)
            else:
                groups["head"].append(p)
        return groups

    def head_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.state_dict().items() if k.split(".", 1)[0] in HEAD_MODULES}

    # ------------------------------------------------------------------ conditioning
    def _selection(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        valid = attention_mask.bool()
        mode = self.cfg.conditioning
        if mode == "all_tokens":
            return valid
        if mode in ("image_tokens", "image_and_text_tokens"):
            image = valid & (input_ids == self.image_token_id)
            if mode == "image_tokens":
                return image
            # + the instruction: every valid token after the last image token (the image tokens come before
            # the instruction in the prompt, so in a causal LM they cannot see it; these tokens can)
            positions = torch.arange(valid.shape[1], device=valid.device)[None]
            last_image = torch.where(image, positions, -1).max(1, keepdim=True).values
            return image | (valid & (positions > last_image))
        # last_token: the last valid position of each row (left or right padding)
        positions = torch.arange(valid.shape[1], device=valid.device)[None].expand_as(valid)
        last = torch.where(valid, positions, -1).argmax(1)
        return torch.nn.functional.one_hot(last, valid.shape[1]).bool()

    # The VLM on processor tensors. `VLAProcessor` (self.preprocessor) turns observations into them: in
    # DataLoader workers for training, once per replanning step in the policy. The forward is the
    # inner model's, in its parts, so that each part can be cached or replaced: vision tower -> image
    # embeddings scattered into the token embeddings -> 3-D rope positions -> language model.
    @property
    def vision_trainable(self) -> bool:
        """False when no vision-tower weight trains (frozen backbone, LoRA on the language model only): its
        output for an image is then fixed, and `image_embeds` can be computed once per image and cached."""
        return any(p.requires_grad for p in core_model(self.backbone).visual.parameters())

    def image_embeds(self, pixel_values: torch.Tensor, image_grid_thw: torch.Tensor) -> torch.Tensor:
        """Vision tower output, (image tokens of all images, vlm_hidden), images in processor order."""
        core = core_model(self.backbone)
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.vision_trainable):
            out = core.get_image_features(pixel_values.to(self.device), image_grid_thw.to(self.device))
        return torch.cat(out.pooler_output, dim=0)

    def rope_positions(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Qwen2.5-VL's 3-D rope position ids (3, B, L) for a processor batch (a per-sample Python loop:
        the static path computes them once per prompt)."""
        core = core_model(self.backbone)
        position_ids, _ = core.get_rope_index(inputs["input_ids"], inputs.get("mm_token_type_ids"),
                                              image_grid_thw=inputs["image_grid_thw"],
                                              attention_mask=inputs["attention_mask"])
        return position_ids

    def vlm_hidden_states(self, inputs: Mapping[str, torch.Tensor], image_embeds: torch.Tensor | None = None
                          ) -> torch.Tensor:
        """Final hidden states (B, L, vlm_hidden) of a processor batch on the model's device; `image_embeds`
        (from `image_embeds`, e.g. cached) skips the vision tower. Equals the inner model's forward."""
        core = core_model(self.backbone)
        ids = inputs["input_ids"]
        if image_embeds is None:
            image_embeds = self.image_embeds(inputs["pixel_values"], inputs["image_grid_thw"])
        embeds = core.get_input_embeddings()(ids)
        image_mask = ids == self.image_token_id
        if int(image_mask.sum()) != image_embeds.shape[0]:
            raise ValueError(f"image_embeds: {image_embeds.shape[0]} rows for {int(image_mask.sum())} image tokens; "
                             "cached vision features must come from the same images and image_size")
        embeds = embeds.masked_scatter(image_mask[..., None].expand_as(embeds),
                                       image_embeds.to(embeds.device, embeds.dtype))
        out = core.language_model(inputs_embeds=embeds, attention_mask=inputs["attention_mask"],
                                  position_ids=self.rope_positions(inputs), use_cache=False)
        return out.last_hidden_state

    def vlm_features(self, inputs: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Pre-projector hidden states of the conditioning tokens of a processor batch (`VLAProcessor`
        output, optionally with cached "image_embeds"): (B,M,vlm_hidden), mask (B,M) bool.

        Gradients flow only when the backbone is trainable (LoRA/unfrozen) and grad mode is on.
        """
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.vlm_trainable):
            hidden = self.vlm_hidden_states(inputs, inputs.get("image_embeds"))
        return select_tokens(hidden, self._selection(inputs["input_ids"], inputs["attention_mask"]))

    def compute_vlm_features(self, context_images, wrist_images, instructions: Sequence[str] | str
                             ) -> tuple[torch.Tensor, torch.Tensor]:
        """`vlm_features` of observations: the processor step, then the model (see `VLAProcessor`)."""
        return self.vlm_features(self.preprocessor(context_images, wrist_images, instructions))

    def project(self, features: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pre-projector features -> expert memory (B,M,d_model) (+ token-index embeddings)."""
        features = features.to(self.device, self.head_dtype)
        memory = self.projector(features)
        if self.memory_pos is not None:
            width = memory.shape[1]
            if width > self.cfg.max_memory_tokens:
                raise ValueError(f"{width} memory tokens exceed max_memory_tokens {self.cfg.max_memory_tokens}; "
                                 "raise max_memory_tokens in the model config")
            memory = memory + self.memory_pos.weight[:width].to(memory.dtype)
        return memory, mask.to(self.device).bool()

    def encode(self, context_images, wrist_images, instructions: Sequence[str] | str
               ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.project(*self.compute_vlm_features(context_images, wrist_images, instructions))

    def _memory(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        if batch.get("vlm_features") is not None:
            return self.project(_tensor(batch["vlm_features"]), _tensor(batch["vlm_mask"]))
        if batch.get(VLM_INPUTS) is not None:
            return self.project(*self.vlm_features(batch[VLM_INPUTS]))
        return self.encode(batch["context_image"], batch["wrist_image"], batch["instruction"])

    def set_training_levers(self, levers: TrainingLevers) -> None:
        """Dropouts and noise draws for `forward` in training mode (the training config's `levers`)."""
        if levers.wrist_dropout and self.cfg.conditioning != "image_tokens":
            raise ValueError(f"levers.wrist_dropout needs conditioning image_tokens (it hides the wrist view's image "
                             f"tokens); model '{self.cfg.preset}' uses {self.cfg.conditioning}")
        self.levers = levers

    def attach_state_probe(self, state_dim: int, weight: float, mean, std) -> None:
        """Add the state-regression loss (``vla.model.state_probe``) to ``forward``: batches with an
        ``aux_state`` (B, state_dim) then train the model's state head (``state_dim`` > 0 in the config;
        ``mean``/``std`` become its normalisation) or else a training-only probe on the context view."""
        from vla.model.state_probe import StateProbe

        self.state_probe_weight = float(weight)
        if self.state_head is not None:
            self.state_head.set_stats(torch.as_tensor(mean).float(), torch.as_tensor(std).float())
            return
        if self.cfg.conditioning != "image_tokens":
            raise ValueError("the state probe reads the context view's image tokens: needs conditioning image_tokens")
        self.state_probe = StateProbe(self.cfg.d_model, state_dim).to(self.device)
        self.state_probe.set_stats(torch.as_tensor(mean), torch.as_tensor(std))

    def _state_estimate(self, memory: torch.Tensor, memory_mask: torch.Tensor, proprio: torch.Tensor
                        ) -> torch.Tensor | None:
        """The state head's normalised object-state estimate (B, state_dim) from the memory tokens (all, or the
        context view's with ``state_head_views: context``) and the normalised proprio, or None for a model
        without one (``state_dim`` 0)."""
        if self.state_head is None:
            return None
        if self.cfg.state_head_views == "context":
            memory_mask = self.context_token_mask(memory_mask)
        return self.state_head(memory, memory_mask, proprio)

    @torch.no_grad()
    def estimate_state(self, memory: torch.Tensor, memory_mask: torch.Tensor, proprio) -> torch.Tensor:
        """The state head's estimate in raw units (B, state_dim), e.g. the cube pose, for diagnosis."""
        if self.state_head is None:
            raise ValueError("this model has no state head (state_dim 0 in its config)")
        proprio = self.normalizer.normalize("proprio", _tensor(proprio, self.device))
        est = self._state_estimate(memory, memory_mask, proprio.to(memory.dtype)).float()
        return est * self.state_head.std + self.state_head.mean

    def context_token_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """The context view's image tokens in a memory mask (image_tokens / image_and_text_tokens conditioning:
        the memory holds the context view's image tokens first, then the wrist view's, then, for
        image_and_text_tokens, the instruction's): the first ``image_tokens_per_view`` valid tokens of each row.
        The count comes from the processor at the model's image size (both views have that size)."""
        per_view = getattr(self, "_image_tokens_per_view", None)
        if per_view is None:
            import numpy as np

            h, w = self.cfg.image_size
            blank = np.zeros((1, h, w, 3), np.uint8)
            ids = self.preprocessor(blank, blank, [""])["input_ids"]
            per_view = self._image_tokens_per_view = int((ids == self.image_token_id).sum()) // 2
        rank = torch.cumsum(mask.long(), dim=1) - 1  # index of each valid token among its row's valid tokens
        return mask & (rank < per_view)

    def _drop_wrist_tokens(self, mask: torch.Tensor) -> torch.Tensor:
        """Hide the wrist view's image tokens (the second half of each row's valid tokens: both views
        have the same size) from the expert for a random ``levers.wrist_dropout`` share of the samples."""
        p = self.levers.wrist_dropout
        if not self.training or p <= 0:
            return mask
        wrist = mask & ~self.context_token_mask(mask)
        drop = torch.rand(mask.shape[0], 1, device=mask.device) < p
        return mask & ~(wrist & drop)

    # ------------------------------------------------------------------ training
    def forward(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Flow-matching loss on a batch in raw units (see docs/contracts.md for the keys)."""
        memory, memory_mask = self._memory(batch)
        k, b = self.levers.noise_draws_per_obs, memory.shape[0]
        cfg = self.cfg
        actions = _checked(_tensor(batch["actions"], self.device), "actions", (b, cfg.num_queries, cfg.action_dim))
        proprio = _checked(_tensor(batch["proprio"], self.device), "proprio", (b, cfg.proprio_dim))
        # Targets, noise and flow time stay float32 (also under autocast: bf16 would round the regression
        # target itself); the expert's inputs are cast to its weights' dtype only when no autocast does it.
        actions = self.normalizer.normalize("action", actions)
        proprio = self.normalizer.normalize("proprio", proprio)
        aux_loss, state = None, batch.get("aux_state")
        estimate = self._state_estimate(memory, memory_mask, proprio)
        if self.state_head is not None and state is not None:
            state_target = self.state_head.normalize(_tensor(state, self.device))
            aux_loss = nn.functional.mse_loss(estimate.float(), state_target)
        elif self.state_probe is not None and state is not None:
            aux_loss = self.state_probe.loss(memory, self.context_token_mask(memory_mask), _tensor(state, self.device))
        if estimate is not None:  # the expert acts on the estimate; only the state loss trains the state head
            estimate = estimate.detach()
            p = self.levers.state_teacher_forcing
            if self.training and p > 0 and state is not None:  # some samples: the recorded state instead
                forced = torch.rand(b, 1, device=self.device) < p
                estimate = torch.where(forced, state_target.to(estimate.dtype), estimate)
        memory_mask = self._drop_wrist_tokens(memory_mask)
        if self.training and self.levers.proprio_dropout > 0:  # normalised 0 = the dataset mean
            keep = torch.rand(b, 1, device=self.device) >= self.levers.proprio_dropout
            proprio = proprio * keep.float()
        action_mask = batch.get("action_mask")
        action_mask = (torch.ones(actions.shape[:2], dtype=torch.bool, device=self.device) if action_mask is None
                       else _checked(_tensor(action_mask, self.device), "action_mask", (b, cfg.num_queries)).bool())
        if k > 1:  # several noise/time draws per (expensive) VLM forward
            memory, memory_mask, actions, proprio, action_mask = (
                x.repeat_interleave(k, 0) for x in (memory, memory_mask, actions, proprio, action_mask))
            estimate = None if estimate is None else estimate.repeat_interleave(k, 0)
        noise = torch.randn_like(actions)
        t = sample_time(actions.shape[0], self.cfg.time_sampling, device=self.device, dtype=torch.float32)
        expert_dtype = _expert_input_dtype(memory)
        proprio_in = proprio.to(expert_dtype)

        state_in = None if estimate is None else estimate.to(expert_dtype)

        def velocity(x, tt):
            return self.expert(x.to(expert_dtype), tt, proprio_in, memory, memory_mask, state_in)

        loss = flow_matching_loss(velocity, actions, noise, t, action_mask)
        if aux_loss is None:
            return {"loss": loss}
        return {"loss": loss + self.state_probe_weight * aux_loss, "flow_loss": loss, "aux_loss": aux_loss}

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def predict_action(self, context_images=None, wrist_images=None, instructions: Sequence[str] | str | None = None,
                       proprio=None, *, num_steps: int | None = None, generator: torch.Generator | None = None,
                       noise: torch.Tensor | None = None, vlm_features: torch.Tensor | None = None,
                       vlm_mask: torch.Tensor | None = None, vlm_inputs: Mapping[str, torch.Tensor] | None = None
                       ) -> torch.Tensor:
        """Action chunks in raw units, float32 (B, num_queries, action_dim).

        `noise` (B,Q,A) fixes the starting point (e.g. to compare two inputs with the same noise);
        otherwise it is drawn in float32 from `generator` and cast to the conditioning dtype.
        The conditioning is, by precedence: cached `vlm_features`/`vlm_mask`, `vlm_inputs` (a `VLAProcessor`
        batch), or the observations (the processor runs here).
        """
        was_training = self.training
        self.eval()
        try:
            if vlm_features is not None:
                memory, memory_mask = self.project(_tensor(vlm_features), _tensor(vlm_mask))
            elif vlm_inputs is not None:
                memory, memory_mask = self.project(*self.vlm_features(vlm_inputs))
            else:
                memory, memory_mask = self.encode(context_images, wrist_images, instructions)
            batch = memory.shape[0]
            proprio = _tensor(proprio, self.device)
            proprio = proprio[None] if proprio.ndim == 1 else proprio
            proprio = _checked(proprio, "proprio", (batch, self.cfg.proprio_dim))
            expert_dtype = _expert_input_dtype(memory)  # the Euler state stays float32 under autocast
            proprio = self.normalizer.normalize("proprio", proprio).to(expert_dtype)
            estimate = self._state_estimate(memory, memory_mask, proprio)
            estimate = None if estimate is None else estimate.to(expert_dtype)
            shape = (batch, self.cfg.num_queries, self.cfg.action_dim)
            if noise is None:
                gen_device = generator.device if generator is not None else self.device
                noise = torch.randn(shape, generator=generator, device=gen_device, dtype=torch.float32)
            elif tuple(noise.shape) != shape:
                raise ValueError(f"noise: expected shape {shape}, got {tuple(noise.shape)}")
            x0 = noise.to(self.device, expert_dtype)

            cond = self.expert.condition(proprio, memory, memory_mask, estimate)  # once per chunk, not per step

            def velocity(x, t):
                return self.expert.velocity(x, t, cond)

            chunk = euler_sample(velocity, x0, num_steps or self.cfg.flow_steps)
            return self.normalizer.denormalize("action", chunk)
        finally:
            self.train(was_training)


def _expert_input_dtype(memory: torch.Tensor) -> torch.dtype:
    """float32 under autocast (autocast casts each op's inputs itself); else the memory's (weights') dtype."""
    return torch.float32 if torch.is_autocast_enabled(memory.device.type) else memory.dtype


def _checked(x: torch.Tensor, name: str, shape: tuple[int, ...]) -> torch.Tensor:
    if tuple(x.shape) != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got {tuple(x.shape)}")
    return x


def _tensor(x, device: torch.device | None = None) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    x = torch.as_tensor(x)
    return x.to(device) if device is not None else x
