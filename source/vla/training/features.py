"""Caching what stays frozen: computed once per sample, then training runs on it.

- Frozen backbone, no LoRA: the VLM's output for a sample never changes, so running the processor and
  the VLM every step is wasted work (on the CPU it is ~90% of a step). The features of the conditioning
  tokens are computed once (`CachedSamples`) and the head trains on them.
- LoRA on the language model (vision tower frozen): the vision tower's output per image never changes
  (a third of the VLM forward of the 7B on an H100). It is computed once with the processor's token
  tensors (`CachedVision`); each step runs only the language model (with LoRA) and the head.

Both are computed batched with a progress bar, kept in memory, and optionally saved under
``<output_dir>/feature_cache/`` with a fingerprint so a resumed run skips the pass. Without a cache,
`train_collate` runs the processor step in the DataLoader workers.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save
from tqdm.auto import tqdm

from ..backbone.processor import VLM_INPUTS
from ..data.dataset import DemoDataset, collate
from ..model.tokens import pad_vlm_features
from ..utils.io import atomic_write_bytes, atomic_write_text


@dataclass
class CachedSamples:
    """Per-sample tensors for head-only training; row ``r`` is dataset sample ``index[r]``."""

    index: torch.Tensor  # (N,) long, dataset indices
    features: torch.Tensor  # (N, M, vlm_hidden)
    mask: torch.Tensor  # (N, M) bool
    proprio: torch.Tensor  # (N, P)
    actions: torch.Tensor  # (N, chunk, A)
    action_mask: torch.Tensor  # (N, chunk) bool
    aux_state: torch.Tensor | None = None  # (N, S) privileged state for the auxiliary loss, if requested

    def _keys(self) -> tuple[str, ...]:
        base = ("features", "mask", "proprio", "actions", "action_mask")
        return base + (("aux_state",) if self.aux_state is not None else ())

    def __len__(self) -> int:
        return int(self.index.shape[0])

    def rows(self, dataset_indices) -> torch.Tensor:
        """Rows holding the given dataset indices."""
        if getattr(self, "_row_of", None) is None:
            idx = self.index.numpy()
            self._row_of = np.full(int(idx.max()) + 1, -1, dtype=np.int64)
            self._row_of[idx] = np.arange(idx.size)
        rows = self._row_of[np.asarray(dataset_indices, dtype=np.int64)]
        if (rows < 0).any():
            raise KeyError("sample not in the feature cache")
        return torch.from_numpy(rows)

    def batch(self, rows: torch.Tensor, device: torch.device) -> dict:
        nb = device.type == "cuda"
        names = {"features": "vlm_features", "mask": "vlm_mask"}
        return {names.get(k, k): getattr(self, k)[rows].to(device, non_blocking=nb) for k in self._keys()}

    def tensors(self) -> dict[str, torch.Tensor]:
        return {k: getattr(self, k).contiguous() for k in ("index", *self._keys())}


@torch.no_grad()
def compute_features(
    model,
    dataset: DemoDataset,
    indices,
    *,
    batch_size: int = 16,
    num_workers: int = 0,
    instruction: str | None = None,
    desc: str = "VLM features",
    show: bool = True,
) -> CachedSamples:
    """Run the frozen VLM once over ``dataset[indices]`` (in order) and keep what the head needs."""
    indices = [int(i) for i in indices]
    feats, targets = [], _Targets()
    for b in _ordered_batches(dataset, indices, batch_size, num_workers, collate, desc, show, targets):
        instr = [instruction] * len(b["instruction"]) if instruction else b["instruction"]
        f, m = model.compute_vlm_features(b["context_image"], b["wrist_image"], instr)
        f, m = f.detach().cpu(), m.detach().cpu()
        for j in range(f.shape[0]):
            n = int(m[j].sum())  # tokens are left-aligned; keep only the valid ones
            feats.append((f[j, :n].clone(), m[j, :n].clone()))
    features, mask = pad_vlm_features(feats)
    return CachedSamples(index=torch.as_tensor(indices, dtype=torch.long), features=features,
                         mask=mask, **targets.tensors())


class _Targets:
    """Collects the per-sample tensors every cache keeps beside its model inputs: proprio, action chunk, its
    mask and the auxiliary state (if the dataset yields one)."""

    def __init__(self):
        self.proprio, self.actions, self.action_mask, self.aux = [], [], [], []

    def add(self, batch: dict) -> None:
        self.proprio.append(batch["proprio"])
        self.actions.append(batch["actions"])
        self.action_mask.append(batch["action_mask"])
        if "aux_state" in batch:
            self.aux.append(batch["aux_state"])

    def tensors(self) -> dict[str, torch.Tensor | None]:
        return {"proprio": torch.cat(self.proprio).float(), "actions": torch.cat(self.actions).float(),
                "action_mask": torch.cat(self.action_mask).bool(),
                "aux_state": torch.cat(self.aux).float() if self.aux else None}


def _ordered_batches(dataset, indices, batch_size, num_workers, collate_fn, desc, show, targets: _Targets):
    """``dataset[indices]`` in order, in batches, with a progress bar; each batch's targets go to ``targets``."""
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(dataset, indices), batch_size=batch_size, shuffle=False,
        num_workers=num_workers, collate_fn=collate_fn)
    for b in tqdm(loader, desc=desc, unit="batch", disable=not show, dynamic_ncols=True):
        targets.add(b)
        yield b


def train_collate(model, instruction: str | None = None):
    """DataLoader ``collate_fn`` for training on images: the processor step runs in the workers, the model
    gets tensors (``VLAProcessor.collate``; picklable)."""
    import functools

    return functools.partial(model.preprocessor.collate, instruction=instruction)


def _left_pad(rows: list[torch.Tensor], width: int, value: int = 0) -> torch.Tensor:
    out = torch.full((len(rows), width), value, dtype=rows[0].dtype)
    for i, r in enumerate(rows):
        out[i, width - r.shape[0]:] = r
    return out


@dataclass
class CachedVision:
    """LoRA runs: per-sample processor tokens with the frozen vision tower's output in place of the pixels.

    Row ``r`` is dataset sample ``index[r]``; its prompt is ``input_ids[r]`` (left-padded), its two views'
    image tokens are ``image_embeds[r]`` (T, vlm_hidden) in prompt order.
    """

    index: torch.Tensor  # (N,) long
    input_ids: torch.Tensor  # (N, L) long, left-padded
    attention_mask: torch.Tensor  # (N, L)
    mm_token_type_ids: torch.Tensor  # (N, L)
    image_grid_thw: torch.Tensor  # (N, images per sample, 3)
    image_embeds: torch.Tensor  # (N, T, vlm_hidden), the backbone's dtype
    proprio: torch.Tensor
    actions: torch.Tensor
    action_mask: torch.Tensor
    aux_state: torch.Tensor | None = None

    _TOKENS = ("input_ids", "attention_mask", "mm_token_type_ids", "image_grid_thw", "image_embeds")
    rows, tensors, __len__ = CachedSamples.rows, CachedSamples.tensors, CachedSamples.__len__

    @property
    def features(self) -> torch.Tensor:  # what the trainer reports the per-sample shape of
        return self.image_embeds

    def _keys(self) -> tuple[str, ...]:
        return self._TOKENS + ("proprio", "actions", "action_mask") + (("aux_state",) if self.aux_state is not None
                                                                        else ())

    def batch(self, rows: torch.Tensor, device: torch.device) -> dict:
        """A training batch: ``vlm_inputs`` (tokens trimmed to the batch's longest prompt, image embeddings
        flattened in prompt order) plus proprio, actions, action_mask (and aux_state)."""
        nb = device.type == "cuda"
        mask = self.attention_mask[rows]
        start = int((mask.sum(0) == 0).sum())  # columns that are padding in every row (left padding)
        inputs = {"input_ids": self.input_ids[rows, start:], "attention_mask": mask[:, start:],
                  "mm_token_type_ids": self.mm_token_type_ids[rows, start:],
                  "image_grid_thw": self.image_grid_thw[rows].flatten(0, 1),
                  "image_embeds": self.image_embeds[rows].flatten(0, 1)}
        out = {k: getattr(self, k)[rows].to(device, non_blocking=nb) for k in self._keys()[len(self._TOKENS):]}
        out[VLM_INPUTS] = {k: v.to(device, non_blocking=nb) for k, v in inputs.items()}
        return out


@torch.no_grad()
def compute_vision_cache(
    model,
    dataset: DemoDataset,
    indices,
    *,
    batch_size: int = 16,
    num_workers: int = 0,
    instruction: str | None = None,
    desc: str = "vision features",
    show: bool = True,
) -> CachedVision:
    """Run the processor and the frozen vision tower once over ``dataset[indices]`` (in order)."""
    indices = [int(i) for i in indices]
    ids, amask, types, grids, embeds, targets = [], [], [], [], [], _Targets()
    collate_fn = train_collate(model, instruction)
    for b in _ordered_batches(dataset, indices, batch_size, num_workers, collate_fn, desc, show, targets):
        inputs = b[VLM_INPUTS]
        n = inputs["input_ids"].shape[0]
        e = model.image_embeds(inputs["pixel_values"], inputs["image_grid_thw"]).detach().cpu()
        embeds.append(e.reshape(n, e.shape[0] // n, e.shape[-1]))  # each sample's views are contiguous
        grids.append(inputs["image_grid_thw"].reshape(n, -1, 3))
        valid = inputs["attention_mask"].bool()
        for j in range(n):
            ids.append(inputs["input_ids"][j][valid[j]])
            types.append(inputs["mm_token_type_ids"][j][valid[j]])
            amask.append(torch.ones(int(valid[j].sum()), dtype=inputs["attention_mask"].dtype))
    width = max(int(i.shape[0]) for i in ids)
    pad_id = model.processor.tokenizer.pad_token_id or 0
    return CachedVision(
        index=torch.as_tensor(indices, dtype=torch.long),
        input_ids=_left_pad(ids, width, pad_id),
        attention_mask=_left_pad(amask, width, 0),
        mm_token_type_ids=_left_pad(types, width, 0),
        image_grid_thw=torch.cat(grids),
        image_embeds=torch.cat(embeds),
        **targets.tensors(),
    )


def cache_fingerprint(dataset: DemoDataset, indices, model_cfg: dict, instruction: str | None) -> str:
    """What the cached features depend on: files (size, mtime), mapping, samples, model config, instruction."""
    import os

    files = [(f, os.stat(f).st_size, os.stat(f).st_mtime_ns) for f in dataset.files]
    idx = np.asarray(list(indices), dtype=np.int64)
    doc = {
        "files": files,
        "mapping": dataset.mapping.fingerprint(),
        "split": dataset.split,
        "n": int(idx.size),
        "indices": hashlib.sha256(idx.tobytes()).hexdigest(),
        "image_size": dataset.image_size,
        "model": model_cfg,
        "instruction": instruction,
        "aux_keys": list(dataset.aux_keys),
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:20]


def cache_kind(model) -> str | None:
    """What can be cached for this model: "features" (frozen, no LoRA), "vision" (only the language model
    trains), or None (the vision tower trains)."""
    if not model.vlm_trainable:
        return "features"
    return None if model.vision_trainable else "vision"


def load_or_compute_features(
    model, dataset: DemoDataset, indices, *, cache_dir: Path | None, name: str, model_cfg: dict, **kw
) -> CachedSamples | CachedVision:
    """``compute_features`` (frozen backbone) or ``compute_vision_cache`` (LoRA on the language model), with
    an optional on-disk cache (``<cache_dir>/<name>.safetensors``)."""
    kind = cache_kind(model)
    if kind is None:
        raise ValueError("feature_cache: the vision tower trains, so nothing can be cached; set feature_cache: off")
    cls, compute = (CachedSamples, compute_features) if kind == "features" else (CachedVision, compute_vision_cache)
    fp = cache_fingerprint(dataset, indices, model_cfg if kind == "features" else {**model_cfg, "cache_kind": kind},
                           kw.get("instruction"))
    if cache_dir is not None:
        data, meta = cache_dir / f"{name}.safetensors", cache_dir / f"{name}.json"
        if data.is_file() and meta.is_file():
            try:
                if json.loads(meta.read_text()).get("fingerprint") == fp:
                    return cls(**load_file(str(data)))
            except (OSError, ValueError, TypeError):
                pass  # a damaged cache is recomputed
    if kind == "vision" and "desc" in kw:
        kw = {**kw, "desc": kw["desc"].replace("VLM features", "vision features")}
    cached = compute(model, dataset, indices, **kw)
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(cache_dir / f"{name}.safetensors", save(cached.tensors()))
        atomic_write_text(cache_dir / f"{name}.json", json.dumps({"fingerprint": fp, "samples": len(cached)}))
    return cached
