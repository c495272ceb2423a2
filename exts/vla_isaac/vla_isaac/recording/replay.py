"""Replay: run each recorded demo's actions from its initial state and check that success is reached again."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from isaaclab.utils.datasets import HDF5DatasetFileHandler

from .files import EXECUTED_ACTIONS_KEY, RecordingError, read_dataset_info
from .loop import StopFlag, _plural
from .terms import SuccessCheck

if TYPE_CHECKING:
    from isaaclab.envs import ManagerBasedRLEnv, ManagerBasedRLEnvCfg
    from isaaclab.managers import TerminationTermCfg

__all__ = ["ReplayResult", "ReplayStats", "configure_replay", "replay_demos"]


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
