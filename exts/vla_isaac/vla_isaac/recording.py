"""Demo recording and replay through Isaac Lab's recorder (robomimic / Isaac Lab Mimic HDF5 layout).

    env_cfg = make_env_cfg("Stack-Cube", num_envs=4, image_size=(128, 128))
    success = configure_recording(env_cfg, "demos/stack.hdf5", env_name="Stack-Cube")
    env = make_env(env_cfg)
    stats = record_demos(env, ScriptedExpert(env), num_demos=50, success_term=success)
    env.close()

Recording follows Isaac Lab's ``scripts/tools/record_demos.py``: the ``success`` term is taken out of the
env's terminations (so the env never auto-resets a successful episode behind our back) and evaluated here
after every step; a finished env is exported with ``record_pre_reset(force_export_or_skip=False)``,
``set_success_to_episodes`` and ``export_episodes``, then reset on its own while the others keep running.
Time-outs and failure terminations still auto-reset inside ``env.step``; the recorder then exports them
as failed (kept only with ``keep_failed``). Exactly ``num_demos`` successful demos are written.

File safety (see docs/recording.md): a new file is written under a hidden temp name beside the output and
renamed onto the output path once its first demo is flushed, so the output path never holds an empty or
half-initialised file and ``overwrite`` only replaces an old file once a new demo exists. Every exported
demo is flushed before the next step; a demo that fails half-way through its write is removed again.
:func:`graceful_interrupt` turns the first SIGINT/SIGTERM into "stop after this step", so an interrupted
recording closes the file normally with every completed demo in it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import h5py
import numpy as np
import torch

from isaaclab.envs.mdp.recorders.recorders_cfg import ActionStateRecorderManagerCfg
from isaaclab.managers import DatasetExportMode, RecorderTerm, RecorderTermCfg, TerminationManager
from isaaclab.utils import configclass
from isaaclab.utils.datasets import EpisodeData, HDF5DatasetFileHandler

if TYPE_CHECKING:
    from isaaclab.envs import ManagerBasedRLEnv, ManagerBasedRLEnvCfg
    from isaaclab.managers import TerminationTermCfg

FileMode = Literal["new", "overwrite", "append"]
FILE_MODES: tuple[str, ...] = ("new", "overwrite", "append")
INSTRUCTION_KEY = "instruction"
"""Attribute name of the instruction on ``data`` and on every ``data/demo_N`` group."""
LABEL_ACTIONS_KEY = "label_actions"
"""Episode key of the expert's clean action while recording (becomes ``actions`` in the file)."""
EXECUTED_ACTIONS_KEY = "executed_actions"
"""Dataset of the actions actually executed, written beside ``actions`` when they differ from the labels
(an expert with DART noise); :func:`replay_demos` replays it."""
LABEL_ATTR = "_vla_label_actions"
"""Env attribute :func:`record_demos` sets to the expert's ``label_actions`` before each step."""

_DEMO_RE = re.compile(r"^demo_(\d+)$")


class RecordingError(ValueError):
    """Bad recording/replay input (output file, dataset, task); the message names the file and the fix."""


# --------------------------------------------------------------------------------------------------
# Output file
# --------------------------------------------------------------------------------------------------


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


def _demo_index(name: str) -> int | None:
    match = _DEMO_RE.match(name)
    return int(match.group(1)) if match else None


def sorted_demo_names(names: Sequence[str]) -> list[str]:
    """``demo_N`` names in numeric order (``demo_2`` before ``demo_10``); other names are dropped."""
    return sorted((n for n in names if _demo_index(n) is not None), key=_demo_index)


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
            indices = [i for i in map(_demo_index, self._hdf5_data_group) if i is not None]
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


# --------------------------------------------------------------------------------------------------
# Recorder terms
# --------------------------------------------------------------------------------------------------


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


def episode_instructions(env: ManagerBasedRLEnv, env_ids: Sequence[int]) -> list[str]:
    """The instruction of each env's current episode: the env cfg's ``instruction`` attribute."""
    return [str(getattr(env.cfg, "instruction", "") or "")] * len(env_ids)


def _swap_in_labels(episode: EpisodeData) -> None:
    """DART recording: the expert's clean actions become ``actions`` (the training label), the executed
    (noisy) ones are kept as ``executed_actions`` for replay."""
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


class LabelActionRecorder(RecorderTerm):
    """Records the expert's clean action of every step (``env._vla_label_actions``, set by
    :func:`record_demos` from ``expert.label_actions``); nothing when the expert has none."""

    def record_pre_step(self):
        label = getattr(self._env, LABEL_ATTR, None)
        if label is None:
            return None, None
        return LABEL_ACTIONS_KEY, label


@configclass
class LabelActionRecorderCfg(RecorderTermCfg):
    class_type: type = LabelActionRecorder


class InstructionRecorder(RecorderTerm):
    """Records the episode's instruction at reset; :class:`DemoFileHandler` turns it into the
    ``instruction`` attribute of the demo (Isaac Lab's own handler would store it as a uint8 dataset)."""

    def record_post_reset(self, env_ids: Sequence[int] | None):
        ids = list(range(self._env.num_envs)) if env_ids is None else list(env_ids)
        return INSTRUCTION_KEY, encode_texts(episode_instructions(self._env, ids), self._env.device)


@configclass
class InstructionRecorderCfg(RecorderTermCfg):
    class_type: type = InstructionRecorder


@configclass
class DemoRecorderManagerCfg(ActionStateRecorderManagerCfg):
    """Isaac Lab's action/state recorder (initial_state, states, actions, obs, processed_actions) plus
    the instruction."""

    record_instruction = InstructionRecorderCfg()
    record_label_actions = LabelActionRecorderCfg()


def configure_recording(
    env_cfg: ManagerBasedRLEnvCfg,
    output: str | os.PathLike,
    *,
    env_name: str | None = None,
    mode: FileMode = "new",
    keep_failed: bool = False,
    env_kwargs: Mapping[str, Any] | None = None,
    compression: bool = True,
) -> TerminationTermCfg:
    """Set ``env_cfg`` up to record into ``output``; returns the env's ``success`` termination term.

    The term is removed from ``env_cfg.terminations`` (as Isaac Lab's record_demos does) and must be
    passed to :func:`record_demos`, which evaluates it and ends successful episodes itself.
    ``env_kwargs`` (task options) are stored in the file's ``env_args`` JSON for replay.
    """
    output = check_output_path(output, mode, env_name)
    success = getattr(env_cfg.terminations, "success", None)
    if success is None:
        raise RecordingError(
            f"{type(env_cfg).__name__}: has no 'success' termination term; recording needs one to tell good demos"
        )
    env_cfg.terminations.success = None
    env_cfg.observations.policy.concatenate_terms = False  # one obs/<key> dataset per term
    if env_name:
        env_cfg.env_name = env_name  # read by RecorderManager -> data.attrs["env_args"]["env_name"]
    recorders = DemoRecorderManagerCfg()
    recorders.dataset_file_handler_class_type = demo_file_handler(mode, env_kwargs)
    recorders.dataset_export_dir_path = str(output.parent)
    recorders.dataset_filename = output.name
    recorders.dataset_export_mode = (
        DatasetExportMode.EXPORT_ALL if keep_failed else DatasetExportMode.EXPORT_SUCCEEDED_ONLY
    )
    recorders.dataset_compression = compression
    env_cfg.recorders = recorders
    return success


class SuccessCheck:
    """Evaluates a success termination term once per env step, outside the env's termination manager.

    A private :class:`TerminationManager` holding only that term resolves its params and instantiates
    class terms (e.g. stateful "held for k steps" terms) exactly as the env would; call :meth:`reset`
    for every env that starts a new episode.
    """

    def __init__(self, env: ManagerBasedRLEnv, term_cfg: TerminationTermCfg):
        self._manager = TerminationManager({"success": term_cfg}, env)

    def __call__(self) -> torch.Tensor:
        self._manager.compute()
        return self._manager.get_term("success").clone()

    def reset(self, env_ids: Sequence[int] | torch.Tensor | None = None) -> None:
        self._manager.reset(env_ids)


# --------------------------------------------------------------------------------------------------
# Interrupts
# --------------------------------------------------------------------------------------------------


class StopFlag:
    """Set by :func:`graceful_interrupt` (or by the caller) to end a recording after the current step."""

    def __init__(self):
        self.requested = False
        self.reason: str | None = None

    def set(self, reason: str = "stop") -> None:
        """Ask the loop to stop after the current step; ``reason`` is shown to the user."""
        self.requested = True
        self.reason = reason


@contextlib.contextmanager
def graceful_interrupt(flag: StopFlag | None = None) -> Iterator[StopFlag]:
    """First SIGINT/SIGTERM: set the flag (the loop stops after the current step and files close
    normally). A second one raises KeyboardInterrupt. Outside the main thread it only yields the flag."""
    flag = flag or StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, _frame):
        if flag.requested:
            raise KeyboardInterrupt
        flag.set(signal.Signals(signum).name)
        print(f"\n{flag.reason}: finishing the current step and closing the file (again to abort)", flush=True)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# --------------------------------------------------------------------------------------------------
# Record loop
# --------------------------------------------------------------------------------------------------


@dataclass
class RecordingStats:
    """What a :func:`record_demos` run did. ``attempts`` counts finished episodes (success or not)."""

    demos: int = 0
    attempts: int = 0
    failures: int = 0
    steps: int = 0
    seconds: float = 0.0
    interrupted: bool = False
    path: Path | None = None
    demos_in_file: int = 0

    @property
    def success_rate(self) -> float:
        return self.demos / self.attempts if self.attempts else float("nan")

    @property
    def demos_per_minute(self) -> float:
        return 60.0 * self.demos / self.seconds if self.seconds > 0 else float("nan")

    def summary(self) -> str:
        rate = "n/a" if math.isnan(self.success_rate) else f"{self.success_rate:.0%}"
        state = "interrupted: " if self.interrupted else ""
        where = f" -> {self.path} ({_plural(self.demos_in_file, 'demo')} in file)" if self.path else ""
        return (
            f"{state}recorded {_plural(self.demos, 'demo')} from {_plural(self.attempts, 'attempt')} "
            f"(success {rate}), {self.steps} steps in {self.seconds:.1f} s ({self.demos_per_minute:.1f} demos/min)"
            f"{where}"
        )


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _ids(mask: torch.Tensor) -> list[int]:
    return mask.nonzero(as_tuple=False).flatten().tolist()


def record_demos(
    env: ManagerBasedRLEnv,
    expert: Callable[[dict], torch.Tensor],
    num_demos: int,
    success_term: TerminationTermCfg,
    *,
    success_steps: int = 1,
    max_attempts: int | None = None,
    progress: bool = True,
    stop: StopFlag | None = None,
) -> RecordingStats:
    """Run ``expert`` in all envs until ``num_demos`` successful demos are exported.

    Args:
        env: built from a cfg prepared by :func:`configure_recording` (recorders set, success removed).
        expert: ``expert(obs) -> (num_envs, action_dim)``; an optional ``expert.reset(env_ids)`` is called
            whenever an env starts a new episode. An expert with a ``label_actions`` attribute (the
            scripted expert with ``noise_std``: its clean command) has that recorded as ``actions`` and
            the executed action as ``executed_actions`` (DART-style recovery data).
        success_term: the term returned by :func:`configure_recording`.
        success_steps: consecutive successful steps that end a demo (the env's own term may already
            require holding, e.g. Lift-Cube's 10 steps).
        max_attempts: stop after this many finished episodes even if fewer demos succeeded.
        stop: a flag that ends the run after the current step (see :func:`graceful_interrupt`).

    Episodes still running when the run ends are discarded. The file is flushed after every demo;
    ``env.close()`` closes it.
    """
    from tqdm.auto import tqdm

    if num_demos < 1:
        raise RecordingError(f"num_demos={num_demos}: must be at least 1")
    if success_steps < 1:
        raise RecordingError(f"success_steps={success_steps}: must be at least 1")
    recorder = env.recorder_manager
    if not recorder.active_terms:
        raise RecordingError("the env has no recorder terms: build it from a cfg passed through configure_recording()")
    if "success" in env.termination_manager.active_terms:
        raise RecordingError(
            "the env still terminates on 'success': build it from a cfg passed through configure_recording()"
        )

    stop = stop or StopFlag()
    stats = RecordingStats()
    handler = getattr(recorder, "_dataset_file_handler", None)
    stats.path = getattr(handler, "path", None)
    success_now = SuccessCheck(env, success_term)
    expert_reset = getattr(expert, "reset", None)
    streak = torch.zeros(env.num_envs, dtype=torch.long, device=env.device)

    def restart(ids: list[int]) -> None:
        success_now.reset(ids)
        streak[ids] = 0
        if expert_reset is not None:
            expert_reset(ids)

    start = time.perf_counter()
    bar = tqdm(total=num_demos, unit="demo", desc="recording", disable=not progress, dynamic_ncols=True)
    try:
        with torch.inference_mode():
            recorder.reset()  # drop partial episodes of an env that was stepped before
            obs, _ = env.reset()
            restart(list(range(env.num_envs)))
            while stats.demos < num_demos and not stop.requested:
                if max_attempts is not None and stats.attempts >= max_attempts:
                    break
                actions = expert(obs)
                setattr(env, LABEL_ATTR, getattr(expert, "label_actions", None))  # read by LabelActionRecorder
                obs, _, terminated, truncated, _ = env.step(actions)
                stats.steps += 1
                # the env reuses these buffers on the next step
                done = (terminated | truncated).clone()
                success = success_now() & ~done  # done envs were auto-reset: their state is a new episode
                streak = torch.where(success, streak + 1, torch.zeros_like(streak))

                failed = _ids(done)  # time-outs / failure terms: auto-reset (and exported if keep_failed)
                if failed:
                    stats.attempts += len(failed)
                    stats.failures += len(failed)
                    restart(failed)

                finished = _ids(streak >= success_steps)
                if finished:
                    finished = finished[: num_demos - stats.demos]
                    ids = torch.tensor(finished, dtype=torch.long, device=env.device)
                    recorder.record_pre_reset(finished, force_export_or_skip=False)
                    recorder.set_success_to_episodes(
                        finished, torch.ones(len(finished), 1, dtype=torch.bool, device=env.device)
                    )
                    recorder.export_episodes(finished)
                    stats.demos += len(finished)
                    stats.attempts += len(finished)
                    if stats.demos < num_demos:
                        obs, _ = env.reset(env_ids=ids)
                        restart(finished)
                if failed or finished:
                    bar.set_postfix(attempted=stats.attempts, success=f"{stats.success_rate:.0%}", refresh=not finished)
                    bar.update(len(finished))
    finally:
        bar.close()
        stats.seconds = time.perf_counter() - start
        stats.interrupted = stop.requested
        if handler is not None and _is_open(handler):
            stats.demos_in_file = len(sorted_demo_names(list(handler.get_episode_names())))
    return stats


def _is_open(handler: HDF5DatasetFileHandler) -> bool:
    return getattr(handler, "_hdf5_file_stream", None) is not None


# --------------------------------------------------------------------------------------------------
# Reading and replaying
# --------------------------------------------------------------------------------------------------


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


def configure_replay(env_cfg: ManagerBasedRLEnvCfg) -> TerminationTermCfg:
    """Set ``env_cfg`` up for replay: no recorders and no terminations (a replay must never be
    auto-reset half-way); returns the ``success`` term to check with :class:`SuccessCheck`."""
    success = getattr(env_cfg.terminations, "success", None)
    if success is None:
        raise RecordingError(f"{type(env_cfg).__name__}: has no 'success' termination term to check replays with")
    for name in list(vars(env_cfg.terminations)):
        setattr(env_cfg.terminations, name, None)
    env_cfg.recorders = None
    return success


@dataclass
class ReplayResult:
    demo: str
    num_samples: int
    recorded_success: bool | None
    replayed_success: bool
    first_success_step: int | None  # 1-based env step at which success was first observed


@dataclass
class ReplayStats:
    results: list[ReplayResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def reproduced(self) -> int:
        return sum(r.replayed_success for r in self.results)

    @property
    def exact(self) -> int:
        """Demos whose replay first succeeds at exactly their last recorded step (bit-for-bit replays)."""
        return sum(r.first_success_step == r.num_samples for r in self.results)

    def summary(self) -> str:
        n = len(self.results)
        rate = f"{self.reproduced / n:.0%}" if n else "n/a"
        return (
            f"replayed {_plural(n, 'demo')}: {self.reproduced} reproduce success ({rate}), "
            f"{self.exact} at exactly the recorded step, in {self.seconds:.1f} s"
        )


def replay_demos(
    env: ManagerBasedRLEnv,
    dataset: str | os.PathLike,
    success_term: TerminationTermCfg,
    *,
    demos: Sequence[str] | None = None,
    progress: bool = True,
    stop: StopFlag | None = None,
) -> ReplayStats:
    """Replay each demo's recorded actions from its ``initial_state`` (``env.reset_to``), one demo per
    env at a time, and report whether success is reached (a determinism check).

    ``env`` must come from a cfg passed through :func:`configure_replay`.
    """
    from tqdm.auto import tqdm

    info = read_dataset_info(dataset)
    names = list(demos) if demos else info.demos
    missing = [n for n in names if n not in info.demos]
    if missing:
        raise RecordingError(f"{info.path}: has no {', '.join(missing)}; it holds {len(info.demos)} demos")
    stop = stop or StopFlag()
    stats = ReplayStats()
    success_now = SuccessCheck(env, success_term)
    handler = HDF5DatasetFileHandler()
    handler.open(str(info.path), "r")
    n_envs = env.num_envs
    queue = list(names)
    slot_name: list[str | None] = [None] * n_envs
    slot_actions: list[torch.Tensor | None] = [None] * n_envs
    slot_step = [0] * n_envs
    slot_first_success: list[int | None] = [None] * n_envs
    slot_recorded: list[bool | None] = [None] * n_envs
    hold = torch.zeros(n_envs, 0, device=env.device)  # idle action per env, set once the action size is known

    def load(i: int) -> None:
        name = queue.pop(0)
        episode = handler.load_episode(name, env.device)
        if "actions" not in episode.data or "initial_state" not in episode.data:
            raise RecordingError(f"{info.path}: {name} lacks 'actions' or 'initial_state'; it cannot be replayed")
        env.reset_to(episode.data["initial_state"], torch.tensor([i], device=env.device), is_relative=True)
        success_now.reset([i])
        executed = episode.data.get(EXECUTED_ACTIONS_KEY, episode.data["actions"])  # DART demos: the noisy ones
        slot_name[i], slot_actions[i], slot_step[i] = name, executed, 0
        slot_first_success[i] = None
        slot_recorded[i] = None if episode.success is None else bool(episode.success)

    start = time.perf_counter()
    bar = tqdm(total=len(names), unit="demo", desc="replaying", disable=not progress, dynamic_ncols=True)
    try:
        with torch.inference_mode():
            env.reset()
            for i in range(min(n_envs, len(queue))):
                load(i)
            while any(s is not None for s in slot_name) and not stop.requested:
                active = [i for i in range(n_envs) if slot_name[i] is not None]
                action_dim = slot_actions[active[0]].shape[-1]
                if hold.shape[1] != action_dim:
                    hold = torch.zeros(n_envs, action_dim, device=env.device)
                actions = hold.clone()
                for i in active:
                    actions[i] = slot_actions[i][slot_step[i]]
                env.step(actions)
                success = success_now()
                for i in active:
                    slot_step[i] += 1
                    hold[i] = slot_actions[i][slot_step[i] - 1]  # idle envs repeat their last action
                    hold[i, :-1] = 0.0  # ... without moving the arm
                    if slot_first_success[i] is None and bool(success[i]):
                        slot_first_success[i] = slot_step[i]
                    if slot_step[i] >= len(slot_actions[i]):
                        stats.results.append(
                            ReplayResult(
                                demo=slot_name[i],
                                num_samples=len(slot_actions[i]),
                                recorded_success=slot_recorded[i],
                                replayed_success=slot_first_success[i] is not None,
                                first_success_step=slot_first_success[i],
                            )
                        )
                        bar.set_postfix(reproduced=f"{stats.reproduced}/{len(stats.results)}", refresh=False)
                        bar.update(1)
                        slot_name[i] = None
                        if queue:
                            load(i)
    finally:
        bar.close()
        handler.close()
        stats.seconds = time.perf_counter() - start
    return stats


# --------------------------------------------------------------------------------------------------
# Teleoperation
# --------------------------------------------------------------------------------------------------


def check_keyboard_available() -> None:
    """Raise :class:`RecordingError` unless Isaac Lab's ``Se3Keyboard`` can work here: it reads keys
    from the window of Isaac Sim's Kit app, so it needs a display and Isaac Sim."""
    import importlib.util

    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise RecordingError(
            "--expert keyboard needs a display (DISPLAY / WAYLAND_DISPLAY is not set); "
            "use --expert scripted here, or run on a desktop"
        )
    if importlib.util.find_spec("carb") is None or importlib.util.find_spec("omni") is None:
        raise RecordingError(
            "--expert keyboard reads keys through Isaac Sim's Kit window, and Isaac Sim is not installed: "
            "pip install 'vla-isaac[isaacsim]' (RTX GPU), or use --expert scripted"
        )


class KeyboardExpert:
    """Isaac Lab's ``Se3Keyboard`` as an expert (W/S A/D Q/E move, Z/X T/G C/V rotate, K toggles the
    gripper, L resets the command). Paced to the env's control rate so a person can follow."""

    def __init__(self, env: ManagerBasedRLEnv, pos_sensitivity: float = 0.2, rot_sensitivity: float = 0.5):
        from isaaclab.devices import Se3Keyboard, Se3KeyboardCfg

        if env.num_envs != 1:
            raise RecordingError(f"--expert keyboard drives one env (got num_envs={env.num_envs})")
        self._keyboard = Se3Keyboard(
            Se3KeyboardCfg(pos_sensitivity=pos_sensitivity, rot_sensitivity=rot_sensitivity, sim_device=env.device)
        )
        self._step_dt = env.step_dt
        self._last = time.perf_counter()
        print(self._keyboard)

    def reset(self, env_ids: Sequence[int] | None = None) -> None:
        self._keyboard.reset()

    def __call__(self, obs: dict) -> torch.Tensor:
        wait = self._last + self._step_dt - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        self._last = time.perf_counter()
        return self._keyboard.advance().unsqueeze(0)
