"""Static-shape inference: `predict_action` with every shape fixed, and CUDA graphs on CUDA.

A 7B chunk is launch-bound (docs/model.md): at batch 1 the GPU waits on Python and kernel launches, not
on arithmetic. `StaticPredictor` fixes every shape so that the work can be recorded once and replayed:

- batch size, prompt length (prompts padded on the left to `prompt_len` tokens) and image size fixed;
- buffers preallocated (token ids, image embeddings, positions, masks, memory, the Euler state);
- what depends only on the prompt (Qwen's 3-D rope positions, a per-sample Python loop; the causal
  mask; where the image tokens go; which tokens the expert reads) is computed once per distinct
  prompt, not per chunk;
- what depends only on the image grid (the vision tower's patch positions, window order and attention
  boundaries, which transformers builds with Python loops and device-to-host reads on every call) is
  computed once and passed to the tower precomputed, the boundaries kept on the host;
- on CUDA (`graphs=True`) the vision tower, the language model forward (with the token selection and the
  projector) and one flow-expert step are each captured in a `torch.cuda.CUDAGraph` and replayed.

On the CPU the same path runs without graphs and equals the eager `predict_action` (tested); on CUDA
`tests/test_static_inference.py` checks graph replay against eager within bf16 tolerance.

    predictor = StaticPredictor(model, batch_size=1)          # graphs on CUDA, plain calls on the CPU
    actions = predictor(context, wrist, "lift the red cube", proprio, noise=noise)   # (1, 16, 7) float32
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


class StaticPredictor:
    """Fixed-shape `predict_action` for one `VLAModel` (kept in eval mode; do not train it meanwhile)."""

    def __init__(self, model, batch_size: int = 1, *, prompt_len: int | None = None, graphs: bool | None = None,
                 instruction_tokens: int = 48):
        """`prompt_len`: tokens per prompt (default: the prompt scaffold with both views plus
        `instruction_tokens` tokens of instruction). `graphs`: capture CUDA graphs (default: on CUDA)."""
        from vla.backbone.qwen import core_model

        self.model = model.eval()
        self.cfg, self.device = model.cfg, model.device
        self.graphs = self.device.type == "cuda" if graphs is None else bool(graphs)
        if self.graphs and self.device.type != "cuda":
            raise ValueError(f"graphs: CUDA graphs need the model on a CUDA device (it is on {self.device}); "
                             "use graphs=False (or None) on the CPU")
        self.core = core_model(model.backbone)
        self.batch_size = int(batch_size)
        h, w = self.cfg.image_size
        blank = np.zeros((1, h, w, 3), np.uint8)
        probe = model.preprocessor(blank, blank, [""])
        base_len = int(probe["input_ids"].shape[1])
        self.image_tokens = int((probe["input_ids"] == model.image_token_id).sum())  # per sample, both views
        self.prompt_len = int(prompt_len) if prompt_len is not None else base_len + int(instruction_tokens)
        if self.prompt_len < base_len:
            raise ValueError(f"prompt_len: {self.prompt_len} is shorter than the prompt without instruction "
                             f"({base_len} tokens); use at least {base_len}")
        # memory slots the expert reads (image_and_text_tokens: the prompt length bounds image + instruction tokens;
        # the slots a shorter instruction leaves are masked off)
        self.width = {"image_tokens": self.image_tokens, "all_tokens": self.prompt_len,
                      "image_and_text_tokens": self.prompt_len, "last_token": 1}[self.cfg.conditioning]
        if model.memory_pos is not None and self.width > self.cfg.max_memory_tokens:
            raise ValueError(f"prompt_len: {self.width} memory tokens exceed max_memory_tokens "
                             f"{self.cfg.max_memory_tokens}; lower prompt_len or raise max_memory_tokens")

        with torch.inference_mode(False):  # persistent buffers: normal tensors even if built in inference mode
            self._allocate()

    def _allocate(self) -> None:
        b, length, dev = self.batch_size, self.prompt_len, self.device
        emb = self.core.get_input_embeddings().weight
        self.lm_dtype, self.head_dtype = emb.dtype, self.model.head_dtype
        hidden = emb.shape[1]
        # Buffers: graphs read and write these addresses; every call copies its inputs into them.
        self.ids = torch.zeros(b, length, dtype=torch.long, device=dev)
        self.image_index = torch.zeros(b * self.image_tokens, dtype=torch.long, device=dev)
        self.image = torch.zeros(b * self.image_tokens, hidden, dtype=self.lm_dtype, device=dev)
        self.positions = torch.zeros(3, b, length, dtype=torch.long, device=dev)
        self.order = torch.zeros(b, self.width, dtype=torch.long, device=dev)
        self.select = torch.zeros(b, self.width, dtype=torch.bool, device=dev)
        self.memory = torch.zeros(b, self.width, self.cfg.d_model, dtype=self.head_dtype, device=dev)
        q, a = self.cfg.num_queries, self.cfg.action_dim
        self.x = torch.zeros(b, q, a, dtype=self.head_dtype, device=dev)
        self.v = torch.zeros_like(self.x)
        self.t = torch.zeros(b, dtype=torch.float32, device=dev)
        self.proprio = torch.zeros(b, self.cfg.proprio_dim, dtype=self.head_dtype, device=dev)
        self.state = (torch.zeros(b, self.cfg.state_dim, dtype=self.head_dtype, device=dev)
                      if self.model.state_head is not None else None)  # the state head's estimate, once per chunk
        self.masks: dict[str, torch.Tensor | None] = {}
        self._prompt_key: bytes | None = None
        self.pixels: torch.Tensor | None = None  # the processor's patches, allocated at the first call
        self._grid_key: bytes | None = None
        self.grid: torch.Tensor | None = None  # image_grid_thw on the device
        self.vision_kw: dict[str, torch.Tensor] = {}  # the tower's precomputed grid-only inputs
        self._vision_graph = self._lm_graph = self._step_graph = None  # each with its own memory pool

    # ------------------------------------------------------------------ per image grid
    def _set_grid(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor) -> None:
        """The vision tower's grid-only inputs, precomputed (transformers' `vision_utils` takes them as
        keyword arguments): patch positions and window order on the device, attention boundaries on the
        host (the sdpa path splits by them with `.tolist()`, a device sync a graph cannot hold)."""
        from transformers.vision_utils import get_vision_cu_seqlens, get_vision_position_ids, get_vision_window_index

        visual = self.core.visual
        grid = grid_thw.cpu()
        window_index, cu_window = get_vision_window_index(grid, spatial_merge_size=visual.spatial_merge_size,
                                                          window_size=visual.window_size,
                                                          patch_size=visual.patch_size)
        self.vision_kw = {"position_ids": get_vision_position_ids(grid, visual.spatial_merge_size).to(self.device),
                          "cu_seqlens": get_vision_cu_seqlens(grid), "window_index": window_index.to(self.device),
                          "cu_window_seqlens": cu_window}
        self.grid = grid.to(self.device)
        if self.pixels is None or self.pixels.shape != pixel_values.shape:
            self.pixels = torch.zeros(pixel_values.shape, dtype=visual.dtype, device=self.device)
        self._vision_graph = None  # new inputs: record the graph again

    # ------------------------------------------------------------------ per prompt
    def _set_prompt(self, inputs: dict[str, torch.Tensor]) -> None:
        """Positions, causal mask, image-token slots and token selection of a new prompt batch."""
        from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask

        ids, am = inputs["input_ids"], inputs["attention_mask"]
        lm = self.core.language_model
        self.positions.copy_(self.model.rope_positions(inputs))
        flat = torch.nonzero((ids == self.model.image_token_id).flatten()).flatten()
        if flat.numel() != self.image_index.numel():
            raise ValueError(f"images: {flat.numel()} image tokens, the static shapes expect "
                             f"{self.image_index.numel()}; images must be resized to image_size {self.cfg.image_size}")
        self.image_index.copy_(flat)
        selected = self.model._selection(ids, am)
        counts = selected.sum(1)
        order = torch.argsort((~selected).to(torch.int32), dim=1, stable=True)[:, : self.width]
        self.order.copy_(order)
        self.select.copy_(torch.arange(self.width)[None] < counts[:, None])
        # The language model's own mask construction, done here once instead of inside the graph.
        probe = torch.empty(self.batch_size, self.prompt_len, 1, dtype=self.lm_dtype, device=self.device)
        kw = dict(config=lm.config, inputs_embeds=probe, attention_mask=am.to(self.device), past_key_values=None,
                  position_ids=None)
        masks = {"full_attention": create_causal_mask(**kw)}
        if getattr(lm, "has_sliding_layers", False):
            masks["sliding_attention"] = create_sliding_window_causal_mask(**kw)
        if {k: v is None for k, v in masks.items()} != {k: v is None for k, v in self.masks.items()} or any(
                v is not None and v.shape != self.masks[k].shape for k, v in masks.items()):
            self.masks = {k: (None if v is None else v.clone()) for k, v in masks.items()}
            self._lm_graph = None  # another mask structure: record the graph again
        else:
            for k, v in masks.items():
                if v is not None:
                    self.masks[k].copy_(v)

    # ------------------------------------------------------------------ the three recorded bodies
    def _vision_body(self) -> None:
        """Patches -> vision tower (precomputed grid inputs) -> merged image embeddings."""
        out = self.core.visual(self.pixels, grid_thw=self.grid, **dict(self.vision_kw))
        self.image.copy_(out.pooler_output)

    def _lm_body(self) -> None:
        """Token embeddings + image embeddings -> language model -> selected tokens -> projector -> memory."""
        embeds = self.core.get_input_embeddings()(self.ids)
        hidden_size = embeds.shape[-1]
        embeds = embeds.reshape(-1, hidden_size).index_copy(0, self.image_index, self.image).view_as(embeds)
        hidden = self.core.language_model(inputs_embeds=embeds, attention_mask=dict(self.masks),
                                          position_ids=self.positions, use_cache=False).last_hidden_state
        feats = hidden.gather(1, self.order[..., None].expand(-1, -1, hidden_size))
        feats = feats.masked_fill(~self.select[..., None], 0)  # as select_tokens (which multiplies by the mask)
        memory, _ = self.model.project(feats, self.select)
        self.memory.copy_(memory)

    def _step_body(self) -> None:
        """One flow-expert evaluation: velocity at (x, t)."""
        self.v.copy_(self.model.expert(self.x, self.t, self.proprio, self.memory, self.select, self.state))

    def _capture(self, body) -> torch.cuda.CUDAGraph:
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):  # warm-up on a side stream (allocator, cuBLAS/cuDNN handles)
            for _ in range(2):
                body()
        torch.cuda.current_stream(self.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            body()
        return graph

    def _run(self, name: str, body) -> None:
        if not self.graphs:
            body()
            return
        graph = getattr(self, name)
        if graph is None:
            graph = self._capture(body)  # the capture run's results are not used: replay below
            setattr(self, name, graph)
        graph.replay()

    # ------------------------------------------------------------------ a chunk
    def __call__(self, context_images, wrist_images, instructions: Sequence[str] | str, proprio, *,
                 noise: torch.Tensor | None = None, generator: torch.Generator | None = None,
                 num_steps: int | None = None) -> torch.Tensor:
        """Action chunks in raw units, float32 (batch_size, num_queries, action_dim), as `predict_action`.

        Runs outside inference mode even when called inside it (the policy server's runner is): the buffers
        and graphs persist across calls, and inference tensors could not be updated in place outside it.
        """
        with torch.inference_mode(False), torch.no_grad():
            return self._predict(context_images, wrist_images, instructions, proprio, noise=noise,
                                 generator=generator, num_steps=num_steps)

    def _predict(self, context_images, wrist_images, instructions, proprio, *, noise, generator, num_steps):
        from vla.modeling import _checked, _tensor

        model, cfg, b = self.model, self.cfg, self.batch_size
        inputs = model.preprocessor(context_images, wrist_images, instructions, pad_to=self.prompt_len)
        if inputs["input_ids"].shape[0] != b:
            raise ValueError(f"batch_size: the static predictor was built for batch {b}, got "
                             f"{inputs['input_ids'].shape[0]} observations; build one per batch size")
        key = inputs["input_ids"].numpy().tobytes() + inputs["attention_mask"].numpy().tobytes()
        if key != self._prompt_key:
            self._set_prompt(inputs)
            self._prompt_key = key
        self.ids.copy_(inputs["input_ids"])
        grid_key = inputs["image_grid_thw"].numpy().tobytes() + str(tuple(inputs["pixel_values"].shape)).encode()
        if grid_key != self._grid_key:
            self._set_grid(inputs["pixel_values"], inputs["image_grid_thw"])
            self._grid_key = grid_key
        self.pixels.copy_(inputs["pixel_values"])
        self._run("_vision_graph", self._vision_body)
        self._run("_lm_graph", self._lm_body)

        proprio = _tensor(proprio, self.device)
        proprio = _checked(proprio[None] if proprio.ndim == 1 else proprio, "proprio", (b, cfg.proprio_dim))
        self.proprio.copy_(model.normalizer.normalize("proprio", proprio))
        if self.state is not None:  # eager: one small attention pool per chunk
            self.state.copy_(model._state_estimate(self.memory, self.select, self.proprio))
        shape = tuple(self.x.shape)
        if noise is None:
            gen_device = generator.device if generator is not None else self.device
            noise = torch.randn(shape, generator=generator, device=gen_device, dtype=torch.float32)
        elif tuple(noise.shape) != shape:
            raise ValueError(f"noise: expected shape {shape}, got {tuple(noise.shape)}")
        self.x.copy_(noise)
        steps = int(num_steps or cfg.flow_steps)
        if steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {steps}")
        dt = 1.0 / steps
        for i in range(steps):  # as vla.model.flow_matching.euler_sample, on the buffers
            self.t.fill_(i * dt)
            self._run("_step_graph", self._step_body)
            self.x.copy_(self.x + dt * self.v)
        return model.normalizer.denormalize("action", self.x.clone())


COMPILE_MODES = ("none", "graphs")


class CompiledPredict:
    """A `predict_action`-compatible callable chosen by a `--compile` setting.

    "none": the model's eager `predict_action`. "graphs": one `StaticPredictor` per batch size seen
    (CUDA graphs on CUDA; on the CPU the static path without graphs, which equals eager); each holds its
    own buffers and graphs, so a server with many batch sizes pays memory for each.
    """

    def __init__(self, model, mode: str = "none", **static_kw):
        if mode not in COMPILE_MODES:
            raise ValueError(f"compile: {mode!r} is not one of {COMPILE_MODES}")
        self.model, self.mode, self.static_kw = model, mode, static_kw
        self.predictors: dict[int, StaticPredictor] = {}

    def __call__(self, context_images, wrist_images, instructions, proprio, *, noise: torch.Tensor | None = None,
                 num_steps: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.mode == "none":  # only the keywords given: duck-typed models need not take the others
            kw = {k: v for k, v in (("num_steps", num_steps), ("generator", generator)) if v is not None}
            return self.model.predict_action(context_images, wrist_images, instructions, proprio, noise=noise, **kw)
        batch = int(np.asarray(proprio.cpu() if isinstance(proprio, torch.Tensor) else proprio).reshape(
            -1, self.model.cfg.proprio_dim).shape[0])
        if batch not in self.predictors:
            self.predictors[batch] = StaticPredictor(self.model, batch, **self.static_kw)
        return self.predictors[batch](context_images, wrist_images, instructions, proprio, noise=noise,
                                      num_steps=num_steps, generator=generator)
