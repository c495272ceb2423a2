"""The demo file: its HDF5 layout (robomimic / Isaac Lab Mimic), the handler that writes it and the reader.

:class:`DemoFileHandler` is Isaac Lab's ``HDF5DatasetFileHandler`` plus append, temp-then-rename creation,
instruction attributes and all-or-nothing demo writes (see docs/recording.md); :func:`read_dataset_info`
reads a recorded file's env name, instruction and demo names back.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import h5py
import numpy as np
import torch

from isaaclab.utils.datasets import EpisodeData, HDF5DatasetFileHandler

from vla.data.hdf5 import LABEL_VALID_KEY, demo_index, sorted_demo_names

FileMode = Literal["new", "overwrite", "append"]
FILE_MODES: tuple[str, ...] = ("new", "overwrite", "append")
INSTRUCTION_KEY = "instruction"
"""Attribute name of the instruction on ``data`` and on every ``data/demo_N`` group."""
LABEL_ACTIONS_KEY = "label_actions"
"""Episode key of the expert's clean action while recording (becomes ``actions`` in the file)."""
EXECUTED_ACTIONS_KEY = "executed_actions"
"""Dataset of the actions actually executed, written beside ``actions`` when they differ from the labels
(an expert with DART noise); :func:`~vla_isaac.recording.replay_demos` replays it."""

__all__ = [
    "EXECUTED_ACTIONS_KEY",
    "FILE_MODES",
    "INSTRUCTION_KEY",
    "LABEL_ACTIONS_KEY",
    "LABEL_VALID_KEY",
    "DatasetInfo",
    "DemoFileHandler",
    "FileMode",
    "RecordingError",
    "check_output_path",
    "decode_text",
    "demo_file_handler",
    "encode_texts",
    "read_dataset_info",
    "sorted_demo_names",
]


class RecordingError(ValueError):
    """Bad recording/replay input (output file, dataset, task); the message names the file and the fix."""


def check_output_path(path: str | os.PathLike, mode: FileMode = "new", env_name: str | None = None) -> Path:
    """Validate ``path`` for ``mode`` before anything expensive starts; returns it as an absolute Path.

    ``new`` refuses an existing file, ``overwrite`` replaces it (once the first new demo exists),
    ``append`` adds demos to it (or creates it) after checking that it is a demo file of ``env_name``.
    """
    if mode not in FILE_MODES:
        raise RecordingError(f"file mode {mode!r}: choose one of {', '.join(FILE_MODES)}")
    path = Path(path).expanduser().absolute()
    if path.is_dir():
        raise RecordingError(f"{path}: is a directory; give a file path such as {path / 'demos.hdf5'}")
    if path.suffix not in (".hdf5", ".h5"):
        raise RecordingError(f"{path}: demo files end in .hdf5 (or .h5); e.g. {path.with_suffix('.hdf5')}")
    if path.exists():
        if mode == "new":
            raise RecordingError(
                f"{path}: already exists; pass --append to add demos to it or --overwrite to replace it"
            )
        if mode == "append":
            try:
                with h5py.File(path, "r") as f:
                    if "data" not in f:
                        raise RecordingError(f"{path}: has no 'data' group, so it is not a demo file; cannot --append")
                    stored = json.loads(f["data"].attrs.get("env_args", "{}")).get("env_name")
            except OSError as exc:
                raise RecordingError(f"{path}: cannot be opened as HDF5 ({exc}); cannot --append") from None
            if env_name and stored and stored != env_name:
                raise RecordingError(f"{path}: holds demos of {stored!r}, not {env_name!r}; record into another file")
    return path


def _temp_path(final: Path) -> Path:
    return final.with_name(f".{final.name}.recording-{os.getpid()}.hdf5")


class DemoFileHandler(HDF5DatasetFileHandler):
    """Isaac Lab's HDF5 handler plus append, temp-then-rename creation, instruction attributes and
    all-or-nothing demo writes.

    ``RecorderManager`` instantiates its handler class without arguments, so the options are class
    attributes: use :func:`demo_file_handler` to get a subclass bound to a mode.
    """

    mode: ClassVar[FileMode] = "new"
    env_kwargs: ClassVar[dict] = {}

    def __init__(self):
        super().__init__()
        self._final_path: Path | None = None
        self._temp_path: Path | None = None  # set while the file still lives under its temp name

    @property
    def path(self) -> Path | None:
        """Where the demos end up (the output path, whatever the file's current name)."""
        return self._final_path

    def create(self, file_path: str, env_name: str | None = None):
        final = check_output_path(file_path, self.mode, env_name)
        self._final_path = final
        if self.mode == "append" and final.exists():
            self.open(str(final), "a")
            # continue the numbering after the highest demo_N (robust to gaps)
            indices = [i for i in map(demo_index, self._hdf5_data_group) if i is not None]
            self._demo_count = max(indices, default=-1) + 1
        else:
            final.parent.mkdir(parents=True, exist_ok=True)
            self._temp_path = _temp_path(final)
            super().create(str(self._temp_path), env_name=env_name)
        if self.env_kwargs:
            self.add_env_args({"env_kwargs": self.env_kwargs})

    def write_episode(self, episode: EpisodeData, demo_id: int | None = None, dataset_compression: bool = True):
        """Write one demo; on any error the half-written ``demo_N`` group is removed again."""
        self._raise_if_not_initialized()
        if episode.is_empty():
            return
        instruction = _pop_instruction(episode)
        _swap_in_labels(episode)
        name = f"demo_{self._demo_count if demo_id is None else demo_id}"
        existed = name in self._hdf5_data_group
        total_before = int(self._hdf5_data_group.attrs.get("total", 0))
        count_before = self._demo_count
        try:
            super().write_episode(episode, demo_id, dataset_compression)
            group = self._hdf5_data_group[name]
            if instruction is not None:
                group.attrs[INSTRUCTION_KEY] = instruction
                if INSTRUCTION_KEY not in self._hdf5_data_group.attrs:
                    self._hdf5_data_group.attrs[INSTRUCTION_KEY] = instruction
        except BaseException:
            if not existed and name in self._hdf5_data_group:
                del self._hdf5_data_group[name]
            self._hdf5_data_group.attrs["total"] = total_before
            self._demo_count = count_before
            raise

    def flush(self):
        """Flush to disk; the first time a new file holds a demo, close it, rename it onto the output
        path and reopen it (portable: no rename of an open file)."""
        super().flush()
        if self._temp_path is not None and self._demo_count > 0:
            super().close()
            os.replace(self._temp_path, self._final_path)
            self._temp_path = None
            self.open(str(self._final_path), "a")

    def close(self):
        super().close()
        if getattr(self, "_temp_path", None) is not None:  # no demo was written: leave nothing behind
            with contextlib.suppress(FileNotFoundError):
                os.remove(self._temp_path)
            self._temp_path = None


def demo_file_handler(mode: FileMode = "new", env_kwargs: Mapping[str, Any] | None = None) -> type[DemoFileHandler]:
    """A :class:`DemoFileHandler` subclass bound to ``mode`` and the ``env_kwargs`` stored in ``env_args``."""
    if mode not in FILE_MODES:
        raise RecordingError(f"file mode {mode!r}: choose one of {', '.join(FILE_MODES)}")
    attrs = {"mode": mode, "env_kwargs": dict(env_kwargs or {}), "__module__": __name__}
    return type(f"DemoFileHandler_{mode}", (DemoFileHandler,), attrs)

def encode_texts(texts: Sequence[str], device: str | torch.device = "cpu") -> torch.Tensor:
    """UTF-8 bytes of each text, zero-padded: (N, L) uint8. Recorder values must be tensors indexed by env."""
    raw = [t.encode("utf-8") for t in texts]
    out = torch.zeros(len(raw), max(1, max(map(len, raw), default=1)), dtype=torch.uint8)
    for i, b in enumerate(raw):
        if b:
            out[i, : len(b)] = torch.frombuffer(bytearray(b), dtype=torch.uint8)
    return out.to(device)


def decode_text(row: torch.Tensor | np.ndarray) -> str:
    data = row.cpu().numpy() if isinstance(row, torch.Tensor) else np.asarray(row)
    return bytes(data.astype(np.uint8).reshape(-1)).rstrip(b"\0").decode("utf-8")


def _pop_instruction(episode: EpisodeData) -> str | None:
    value = episode.data.pop(INSTRUCTION_KEY, None)
    if value is None:
        return None
    rows = torch.stack(value) if isinstance(value, list) else value
    return decode_text(rows.reshape(-1, rows.shape[-1])[-1])  # the episode's latest reset



def _swap_in_labels(episode: EpisodeData) -> None:
    """DART recording: the expert's clean actions become ``actions`` (the training label), the executed
    (noisy) ones are kept as ``executed_actions`` for replay. Label validity is kept only where some step's
    label is invalid."""
    valid = episode.data.pop(LABEL_VALID_KEY, None)
    if valid is not None:
        valid = torch.stack(valid) if isinstance(valid, list) else valid
        if not bool(valid.bool().all()):
            episode.data[LABEL_VALID_KEY] = valid.reshape(-1).to(torch.uint8)
    label = episode.data.pop(LABEL_ACTIONS_KEY, None)
    if label is None or "actions" not in episode.data:
        return
    executed = episode.data["actions"]
    label, executed = (torch.stack(x) if isinstance(x, list) else x for x in (label, executed))
    label = label.to(executed.device).reshape(executed.shape)
    if torch.equal(label, executed):
        episode.data["actions"] = executed
        return  # no noise: one copy is enough
    episode.data[EXECUTED_ACTIONS_KEY] = executed
    episode.data["actions"] = label


@dataclass
class DatasetInfo:
    path: Path
    env_name: str
    env_args: dict
    instruction: str | None
    demos: list[str]
    total_samples: int


def read_dataset_info(path: str | os.PathLike) -> DatasetInfo:
    """Env name, env_args, instruction and demo names of a recorded file (one clear error if it is not one)."""
    path = Path(path)
    if not path.is_file():
        raise RecordingError(f"{path}: no such file")
    try:
        with h5py.File(path, "r") as f:
            if "data" not in f:
                raise RecordingError(f"{path}: has no 'data' group; not an Isaac Lab / robomimic demo file")
            data = f["data"]
            env_args = json.loads(data.attrs.get("env_args", "{}"))
            instruction = data.attrs.get(INSTRUCTION_KEY)
            return DatasetInfo(
                path=path,
                env_name=env_args.get("env_name", ""),
                env_args=env_args,
                instruction=None if instruction is None else str(instruction),
                demos=sorted_demo_names(list(data.keys())),
                total_samples=int(data.attrs.get("total", 0)),
            )
    except OSError as exc:
        raise RecordingError(f"{path}: cannot be read as HDF5 ({exc})") from None

