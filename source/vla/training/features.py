"""Frozen-backbone fast path: VLM features computed once per sample, then the head trains on them.

When the backbone is frozen and has no LoRA, its output for a sample never changes, so running the
processor and the VLM every step is wasted work (on the CPU it is ~90% of a step). The features of the
conditioning tokens are computed once (batched, with a progress bar), kept in memory, and optionally
saved under ``<output_dir>/feature_cache/`` with a fingerprint so a resumed run skips the pass.
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

from ..data.dataset import DemoDataset, collate
from ..modeling import pad_vlm_features
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
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(dataset, indices),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate,
    )
    feats, proprio, actions, amask, aux = [], [], [], [], []
    for b in tqdm(loader, desc=desc, unit="batch", disable=not show, dynamic_ncols=True):
        instr = [instruction] * len(b["instruction"]) if instruction else b["instruction"]
        f, m = model.compute_vlm_features(b["context_image"], b["wrist_image"], instr)
        f, m = f.detach().cpu(), m.detach().cpu()
        for j in range(f.shape[0]):
            n = int(m[j].sum())  # tokens are left-aligned; keep only the valid ones
            feats.append((f[j, :n].clone(), m[j, :n].clone()))
        proprio.append(b["proprio"])
        actions.append(b["actions"])
        amask.append(b["action_mask"])
        if "aux_state" in b:
            aux.append(b["aux_state"])
    features, mask = pad_vlm_features(feats)
    return CachedSamples(
        index=torch.as_tensor(indices, dtype=torch.long),
        features=features,
        mask=mask,
        proprio=torch.cat(proprio).float(),
        actions=torch.cat(actions).float(),
        action_mask=torch.cat(amask).bool(),
        aux_state=torch.cat(aux).float() if aux else None,
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


def load_or_compute_features(
    model, dataset: DemoDataset, indices, *, cache_dir: Path | None, name: str, model_cfg: dict, **kw
) -> CachedSamples:
    """``compute_features`` with an optional on-disk cache (``<cache_dir>/<name>.safetensors``)."""
    fp = cache_fingerprint(dataset, indices, model_cfg, kw.get("instruction"))
    if cache_dir is not None:
        data, meta = cache_dir / f"{name}.safetensors", cache_dir / f"{name}.json"
        if data.is_file() and meta.is_file():
            try:
                if json.loads(meta.read_text()).get("fingerprint") == fp:
                    return CachedSamples(**load_file(str(data)))
            except (OSError, ValueError, TypeError):
                pass  # a damaged cache is recomputed
    cached = compute_features(model, dataset, indices, **kw)
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(cache_dir / f"{name}.safetensors", save(cached.tensors()))
        atomic_write_text(cache_dir / f"{name}.json", json.dumps({"fingerprint": fp, "samples": len(cached)}))
    return cached
