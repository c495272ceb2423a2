"""Export recorded demos (Isaac Lab recorder / robomimic HDF5, Cosmos layout too) to a LeRobotDataset v3.0.

Written through LeRobot's own API (``LeRobotDataset.create`` -> ``add_frame`` per step -> ``save_episode``
per demo -> ``finalize``), so LeRobot's training scripts and any v3.0 reader load the result as it is.
The key mapping decides what goes where:

==============================  ===========================================================================
LeRobot feature                 from the HDF5 file
==============================  ===========================================================================
``observation.images.<view>``   ``obs/<context_image>`` and ``obs/<wrist_image>`` (uint8 video features)
``observation.state``           the mapping's proprio keys, concatenated in its order (float32); the
                                feature's names are ``<obs key>.<i>`` so a consumer can map them back
``action``                      ``<actions>`` (float32, ``action_dim`` wide)
``task``                        the demo's instruction (``instruction_attr``, else the mapping's default)
==============================  ===========================================================================

Only successful demos are exported unless ``include_failed``; the output is written to a temporary folder
beside it and renamed into place at the end, so an existing dataset is never half-overwritten.

LeRobot is an optional dependency (``pip install -e ".[lerobot]"``); it is imported only when exporting.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .hdf5 import DATA_GROUP, LABEL_VALID_KEY, DatasetError, as_file_list, open_h5
from .key_mapping import KeyMapping

INSTALL_HINT = 'LeRobot is not installed; install the optional extra: pip install -e ".[lerobot]"'
IMAGE_PREFIX = "observation.images."
STATE_KEY = "observation.state"
ACTION_KEY = "action"
LABEL_VALID_FEATURE = "label_valid"
"""Per-frame 1.0 / 0.0, exported when a demo marks labels not to learn (a staged grasp miss); a LeRobot
policy's loss can mask on it like ``vla``'s trainer does."""
ACTION_NAMES_7 = ["dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"]


def require_lerobot():
    """Import LeRobot's dataset class, or fail with one line saying how to install it."""
    try:
        from lerobot.datasets.lerobot_dataset import LeRobotDataset
    except ImportError as e:
        raise ImportError(f"{INSTALL_HINT} ({e})") from None
    return LeRobotDataset


def image_feature_key(obs_key: str) -> str:
    return IMAGE_PREFIX + obs_key


def state_names(mapping: KeyMapping) -> list[str]:
    """``["eef_pos.0", "eef_pos.1", ...]``: which obs key (and component) each state entry comes from."""
    return [f"{k}.{i}" for k, d in mapping.proprio for i in range(d)]


def proprio_from_state_names(names) -> list[tuple[str, int]]:
    """Inverse of :func:`state_names`: ``[(obs_key, dim), ...]`` in order (for a policy reading live obs)."""
    out: list[tuple[str, int]] = []
    for n in names:
        key, _, idx = str(n).rpartition(".")
        if not key or not idx.isdigit():
            raise ValueError(f"state feature name {n!r} is not '<obs key>.<i>'; export with scripts/export_lerobot.py")
        if out and out[-1][0] == key and int(idx) == out[-1][1]:
            out[-1] = (key, out[-1][1] + 1)
        elif int(idx) == 0:
            out.append((key, 1))
        else:
            raise ValueError(f"state feature names out of order at {n!r}; export with scripts/export_lerobot.py")
    return out


def lerobot_features(mapping: KeyMapping, image_shapes: dict[str, tuple[int, int, int]],
                     label_valid: bool = False) -> dict:
    """The LeRobot ``features`` dict for ``mapping`` (images as video features; ``label_valid``: the per-frame
    label-validity feature too)."""
    feats = {
        image_feature_key(k): {"dtype": "video", "shape": tuple(image_shapes[k]), "names": ["height", "width", "channels"]}
        for k in (mapping.context_image, mapping.wrist_image)
    }
    feats[STATE_KEY] = {"dtype": "float32", "shape": (mapping.proprio_dim,), "names": state_names(mapping)}
    names = ACTION_NAMES_7 if mapping.action_dim == 7 else [f"a{i}" for i in range(mapping.action_dim)]
    feats[ACTION_KEY] = {"dtype": "float32", "shape": (mapping.action_dim,), "names": names}
    if label_valid:
        feats[LABEL_VALID_FEATURE] = {"dtype": "float32", "shape": (1,), "names": [LABEL_VALID_FEATURE]}
    return feats


@dataclass
class ExportSummary:
    output: Path
    episodes: int
    frames: int
    skipped_failed: int
    tasks: list[str]
    fps: int


def _demo_arrays(g, path: str, name: str, mapping: KeyMapping, label_valid: bool = False) -> dict[str, np.ndarray]:
    """Every array one demo contributes, checked for shape against the mapping (one-line errors)."""
    where = f"{path}: {DATA_GROUP}/{name}"
    if mapping.actions not in g:
        raise DatasetError(f"{where}/{mapping.actions}: missing; check the key mapping's 'actions' "
                           "(scripts/verify_dataset.py lists the problems)")
    actions = np.asarray(g[mapping.actions][()], dtype=np.float32)
    if actions.ndim != 2 or actions.shape[1] != mapping.action_dim:
        raise DatasetError(f"{where}/{mapping.actions}: shape {actions.shape}, expected (T, {mapping.action_dim}); "
                           "use a key mapping whose action_dim matches")
    T = actions.shape[0]
    out = {ACTION_KEY: actions}
    parts = []
    for k, d in mapping.proprio:
        if f"obs/{k}" not in g:
            raise DatasetError(f"{where}/obs/{k}: missing (key mapping '{mapping.name}' needs it for proprio); "
                               "record that key or use a key mapping that matches")
        x = np.asarray(g[f"obs/{k}"][()], dtype=np.float32)
        if x.shape != (T, d):
            raise DatasetError(f"{where}/obs/{k}: shape {x.shape}, expected ({T}, {d}); fix the key mapping's dim")
        parts.append(x)
    out[STATE_KEY] = np.concatenate(parts, axis=1)
    for k in (mapping.context_image, mapping.wrist_image):
        if f"obs/{k}" not in g:
            raise DatasetError(f"{where}/obs/{k}: missing (key mapping '{mapping.name}' needs it as a view); "
                               "record that camera or use a key mapping that matches")
        im = g[f"obs/{k}"][()]
        if im.ndim != 4 or im.shape[0] != T or im.shape[-1] != 3 or im.dtype != np.uint8:
            raise DatasetError(f"{where}/obs/{k}: {im.dtype} {im.shape}, expected uint8 ({T}, H, W, 3)")
        out[image_feature_key(k)] = im
    if label_valid:  # demos without the dataset have every label valid
        valid = g[LABEL_VALID_KEY][()] if LABEL_VALID_KEY in g else np.ones(T)
        out[LABEL_VALID_FEATURE] = np.asarray(valid, dtype=np.float32).reshape(T, 1)
    return out


def export_lerobot(
    files,
    key_mapping: KeyMapping | str,
    output: str | Path,
    *,
    fps: int = 20,
    repo_id: str | None = None,
    include_failed: bool = False,
    overwrite: bool = False,
    robot_type: str = "franka",
    max_demos: int | None = None,
    progress: bool = True,
) -> ExportSummary:
    """Write the demos of ``files`` to a LeRobotDataset v3.0 at ``output`` (see the module docstring).

    Raises ``FileExistsError`` if ``output`` exists and not ``overwrite``; ``DatasetError`` (one line:
    file, demo, key, fix) for a demo that doesn't match the key mapping. Nothing is left at ``output``
    unless the whole export succeeded.
    """
    from tqdm import tqdm

    from .dataset import list_demos

    LeRobotDataset = require_lerobot()
    files = as_file_list(files)
    mapping = KeyMapping.load(key_mapping)
    output = Path(output).expanduser()
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output}: already exists; pass --overwrite to replace it or choose another --output")
    if fps <= 0:
        raise ValueError(f"fps={fps}: must be positive")
    all_demos = list_demos(files, mapping, success_only=False)
    demos = all_demos if include_failed else list_demos(files, mapping, success_only=True)
    skipped = len(all_demos) - len(demos)
    if max_demos is not None:
        demos = demos[: int(max_demos)]

    # image shapes from the first demo; every demo must match (one video stream per view)
    first = demos[0]
    with open_h5(files[first.file_index]) as f:
        g = f[DATA_GROUP][first.name]
        shapes = {}
        for k in (mapping.context_image, mapping.wrist_image):
            if f"obs/{k}" not in g:
                raise DatasetError(f"{files[first.file_index]}: {DATA_GROUP}/{first.name}/obs/{k}: missing (key mapping "
                                   f"'{mapping.name}' needs it as a view); use a key mapping that matches")
            shapes[k] = tuple(int(s) for s in g[f"obs/{k}"].shape[1:])
    label_valid = any(d.has_label_valid for d in demos)
    features = lerobot_features(mapping, shapes, label_valid)

    output.parent.mkdir(parents=True, exist_ok=True)
    tmp_parent = Path(tempfile.mkdtemp(prefix=f".{output.name}.tmp-", dir=output.parent))
    tmp = tmp_parent / output.name
    try:
        ds = LeRobotDataset.create(repo_id or f"local/{output.name}", fps=int(fps), features=features, root=tmp,
                                   robot_type=robot_type, use_videos=True)
        frames, tasks = 0, []
        bar = tqdm(demos, desc="export", unit="demo", disable=not progress, dynamic_ncols=True)
        handles: dict[int, object] = {}
        try:
            for d in bar:
                f = handles.get(d.file_index)
                if f is None:
                    f = handles[d.file_index] = open_h5(files[d.file_index])
                arrays = _demo_arrays(f[DATA_GROUP][d.name], files[d.file_index], d.name, mapping, label_valid)
                for k in (mapping.context_image, mapping.wrist_image):
                    got = arrays[image_feature_key(k)].shape[1:]
                    if tuple(got) != shapes[k]:
                        raise DatasetError(f"{files[d.file_index]}: {DATA_GROUP}/{d.name}/obs/{k}: images {tuple(got)}, "
                                           f"but the first demo's are {shapes[k]}; export files of one image size")
                for t in range(d.length):
                    frame = {key: arr[t] for key, arr in arrays.items()}
                    frame["task"] = d.instruction
                    ds.add_frame(frame)
                ds.save_episode()
                frames += d.length
                if d.instruction not in tasks:
                    tasks.append(d.instruction)
        finally:
            for f in handles.values():
                f.close()
            ds.finalize()  # parquet footers; also on failure, so no writer is left open
        if output.exists():  # --overwrite: replace only now that the new dataset is complete
            old = tmp_parent / (output.name + ".old")
            output.rename(old)
            try:
                tmp.rename(output)
            except OSError:
                old.rename(output)  # put the previous dataset back
                raise
        else:
            tmp.rename(output)
    finally:
        shutil.rmtree(tmp_parent, ignore_errors=True)
    return ExportSummary(output=output, episodes=len(demos), frames=frames, skipped_failed=skipped, tasks=tasks,
                         fps=int(fps))


def load_lerobot_dataset(root: str | Path, video_backend: str | None = None):
    """Open an exported dataset from its local folder (no Hub access). ``video_backend`` defaults to
    LeRobot's choice, falling back to ``pyav`` when torchcodec is installed but cannot load its FFmpeg."""
    LeRobotDataset = require_lerobot()
    root = Path(root)
    if not (root / "meta" / "info.json").is_file():
        raise DatasetError(f"{root}: not a LeRobot dataset (no meta/info.json); export one with scripts/export_lerobot.py")
    return LeRobotDataset(f"local/{root.name}", root=root, video_backend=video_backend or default_video_backend())


def default_video_backend() -> str:
    """``torchcodec`` if it imports (LeRobot's default), else ``pyav`` (LeRobot's fallback)."""
    try:
        import torchcodec.decoders  # noqa: F401  (raises when its FFmpeg libraries are missing)

        return "torchcodec"
    except Exception:
        return "pyav"
