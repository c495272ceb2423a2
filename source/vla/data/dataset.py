"""A map-style dataset of (observation, 16-step action chunk) samples from recorded demos.

Reads the Isaac Lab / robomimic layout directly (``data/demo_N/actions`` and ``data/demo_N/obs/<key>``),
from one file or many, so users train on their own recordings and on NVIDIA's Cosmos files without
converting them. The key mapping says which keys are the two views, the proprio parts and the actions.

Loading is lazy: the index (which demo, which step) is built from dataset shapes only, each sample reads
one frame per key, and every DataLoader worker opens its own h5py handles (h5py handles must not cross
a fork), so the dataset pickles cheaply and scales with workers.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .hdf5 import DATA_GROUP, LABEL_VALID_KEY, DatasetError, as_file_list, demo_names, open_h5, read_instruction
from .key_mapping import KeyMapping, build_proprio
from .preprocess import resize_images

SPLITS = ("train", "val", "all")
MAX_OPEN_DATASETS = 32  # per process; each keeps up to 4 MB of decoded chunks (h5py rdcc_nbytes)


@dataclass(frozen=True)
class DemoRef:
    """One demo: which file, its group name, its length and its instruction."""

    file_index: int
    name: str
    length: int
    instruction: str
    has_label_valid: bool = False


def list_demos(files: list[str], mapping: KeyMapping, success_only: bool = False) -> list[DemoRef]:
    """Every non-empty demo of ``files`` (in file order, then natural demo order), from shapes only."""
    demos = []
    for fi, path in enumerate(files):
        with open_h5(path) as f:
            names = demo_names(f)
            if not names:
                raise DatasetError(f"{path}: no demos under '{DATA_GROUP}/'; is this an Isaac Lab recorder file?")
            for name in names:
                g = f[DATA_GROUP][name]
                if success_only and "success" in g.attrs and not bool(g.attrs["success"]):
                    continue
                if mapping.actions not in g:
                    raise DatasetError(
                        f"{path}: {DATA_GROUP}/{name}/{mapping.actions} missing; "
                        f"check the key mapping's 'actions' (run scripts/verify_dataset.py)"
                    )
                length = int(g[mapping.actions].shape[0])
                if length == 0:
                    continue
                instr = read_instruction(f, name, mapping.instruction_attr, mapping.instruction)
                has_valid = LABEL_VALID_KEY in g
                if has_valid and g[LABEL_VALID_KEY].shape[0] != length:
                    raise DatasetError(
                        f"{path}: {DATA_GROUP}/{name}/{LABEL_VALID_KEY} has {g[LABEL_VALID_KEY].shape[0]} steps but "
                        f"{mapping.actions} has {length}; re-record the demo or delete its {LABEL_VALID_KEY} dataset")
                demos.append(DemoRef(fi, name, length, instr, has_valid))
    if not demos:
        raise DatasetError(f"{files[0]}: no usable demos (all empty{' or unsuccessful' if success_only else ''})")
    return demos


def split_demos(demos: list[DemoRef], val_fraction: float, seed: int) -> tuple[list[DemoRef], list[DemoRef]]:
    """Deterministic split by demo (never by step, so no episode is in both splits)."""
    n = len(demos)
    n_val = int(round(val_fraction * n)) if val_fraction > 0 else 0
    if val_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    else:
        n_val = 0
    perm = np.random.default_rng(seed).permutation(n)
    val_ids = set(perm[:n_val].tolist())
    train = [d for i, d in enumerate(demos) if i not in val_ids]
    val = [d for i, d in enumerate(demos) if i in val_ids]
    return train, val


class DemoDataset(torch.utils.data.Dataset):
    """Samples ``{context_image, wrist_image, proprio, actions, action_mask, instruction, index}``.

    Args:
        files: one path, a list of paths, or a comma-separated string of HDF5 files.
        key_mapping: a ``KeyMapping`` or its name / path (``config/key_mappings/<name>.json``).
        split: "train", "val" or "all"; the split is by demo, deterministic in ``seed``.
        val_fraction: share of demos held out for "val" (at least one when > 0 and there are 2+ demos).
        chunk: actions per sample; the chunk runs past the episode end by repeating the last action,
            and ``action_mask`` is False there, as it is on steps a demo's ``label_valid`` dataset marks 0
            (an expert's staged grasp miss: the recovery after it is learned, the miss itself is not).
        image_size: (h, w) the views are resized to (the model's input size); None keeps the recorded size.
        max_demos: use only the first N demos (before splitting), e.g. for an overfit test.
        success_only: skip demos whose ``success`` attribute is False.
        aux_keys: obs keys of privileged state (e.g. ``cube_positions``) returned, flattened and
            concatenated, as ``aux_state`` for a training-only auxiliary loss (``vla.model.state_probe``).

    Images are uint8 (H, W, 3) numpy arrays, proprio float32 (P,), actions float32 (chunk, action_dim),
    in raw units (the model normalises).
    """

    def __init__(
        self,
        files,
        key_mapping: KeyMapping | str,
        split: str = "train",
        val_fraction: float = 0.1,
        chunk: int = 16,
        image_size: tuple[int, int] | None = None,
        seed: int = 0,
        max_demos: int | None = None,
        success_only: bool = False,
        aux_keys: tuple[str, ...] | list[str] = (),
    ):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.files = as_file_list(files)
        self.mapping = KeyMapping.load(key_mapping)
        self.chunk = int(chunk)
        self.image_size = tuple(int(s) for s in image_size) if image_size is not None else None
        self.split = split
        self.aux_keys = tuple(aux_keys)
        demos = list_demos(self.files, self.mapping, success_only)
        if max_demos is not None:
            demos = demos[: int(max_demos)]
        train, val = split_demos(demos, val_fraction, seed)
        self.demos: list[DemoRef] = {"train": train, "val": val, "all": demos}[split]
        lengths = np.array([d.length for d in self.demos], dtype=np.int64)
        self._demo_of = np.repeat(np.arange(len(self.demos), dtype=np.int64), lengths)
        self._step_of = np.arange(int(lengths.sum()), dtype=np.int64) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        self._handles: dict[int, object] = {}
        self._open: OrderedDict = OrderedDict()
        self._pid: int | None = None

    # ------------------------------------------------------------------ index
    def __len__(self) -> int:
        return len(self._demo_of)

    @property
    def num_demos(self) -> int:
        return len(self.demos)

    @property
    def demo_ids(self) -> list[tuple[str, str]]:
        """(file, demo name) of every demo in this split."""
        return [(self.files[d.file_index], d.name) for d in self.demos]

    def locate(self, index: int) -> tuple[DemoRef, int]:
        """The demo and step of sample ``index``."""
        return self.demos[int(self._demo_of[index])], int(self._step_of[index])

    def indices_of_demo(self, demo_index: int) -> np.ndarray:
        return np.nonzero(self._demo_of == demo_index)[0]

    # ------------------------------------------------------------------ reading
    def _dataset(self, demo: DemoRef, key: str):
        """An open h5py dataset, kept open (LRU) so HDF5's chunk cache survives between samples: image
        chunks span several frames (the recorder's auto-chunking), so neighbouring steps decode once."""
        if self._pid != os.getpid():  # a forked worker must not reuse the parent's handles
            self._handles, self._open, self._pid = {}, OrderedDict(), os.getpid()
        k = (demo.file_index, demo.name, key)
        d = self._open.get(k)
        if d is not None:
            self._open.move_to_end(k)
            return d
        f = self._handles.get(demo.file_index)
        if f is None:
            f = self._handles[demo.file_index] = open_h5(self.files[demo.file_index])
        d = self._open[k] = f[DATA_GROUP][demo.name][key]
        if len(self._open) > MAX_OPEN_DATASETS:
            self._open.popitem(last=False)
        return d

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(index)
        demo, t = self.locate(index)
        km = self.mapping
        ctx = resize_images(self._dataset(demo, f"obs/{km.context_image}")[t], self.image_size)
        wrist = resize_images(self._dataset(demo, f"obs/{km.wrist_image}")[t], self.image_size)
        proprio = build_proprio({k: self._dataset(demo, f"obs/{k}")[t] for k in km.proprio_keys}, km)[0]
        end = min(t + self.chunk, demo.length)
        actions = np.asarray(self._dataset(demo, km.actions)[t:end], dtype=np.float32)
        n = actions.shape[0]
        mask = np.zeros(self.chunk, dtype=bool)
        mask[:n] = True
        if demo.has_label_valid:
            mask[:n] &= np.asarray(self._dataset(demo, LABEL_VALID_KEY)[t:end]).reshape(-1).astype(bool)
        if n < self.chunk:
            actions = np.concatenate([actions, np.repeat(actions[-1:], self.chunk - n, axis=0)], axis=0)
        sample = {
            "context_image": ctx,
            "wrist_image": wrist,
            "proprio": proprio.astype(np.float32),
            "actions": actions,
            "action_mask": mask,
            "instruction": demo.instruction,
            "index": index,
        }
        if self.aux_keys:
            sample["aux_state"] = np.concatenate(
                [np.asarray(self._dataset(demo, f"obs/{k}")[t], dtype=np.float32).reshape(-1) for k in self.aux_keys])
        return sample

    def close(self) -> None:
        self._open = OrderedDict()
        for f in self._handles.values():
            try:
                f.close()
            except Exception:
                pass
        self._handles = {}

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_handles"], state["_open"], state["_pid"] = {}, OrderedDict(), None
        return state

    def __repr__(self) -> str:
        names = ", ".join(Path(f).name for f in self.files)
        return (
            f"DemoDataset({names}; mapping={self.mapping.name}, split={self.split}, "
            f"{self.num_demos} demos, {len(self)} samples, chunk={self.chunk}, image_size={self.image_size})"
        )


def collate(samples: list[dict]) -> dict:
    """Stack samples into a batch: numpy -> torch, instructions stay a list of str."""
    out = {}
    for key in samples[0]:
        vals = [s[key] for s in samples]
        if key == "instruction":
            out[key] = list(vals)
        elif key == "index":
            out[key] = torch.as_tensor(vals, dtype=torch.long)
        else:
            out[key] = torch.from_numpy(np.stack(vals))
    return out
