"""The record loop: run an expert in every env until enough successful demos are exported.

:func:`record_demos` follows Isaac Lab's ``scripts/tools/record_demos.py``: the success term is evaluated
here after every step and a finished env is exported and reset on its own while the others keep running.
:func:`graceful_interrupt` turns the first SIGINT/SIGTERM into "stop after this step", so an interrupted
recording closes the file normally with every completed demo in it.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from isaaclab.utils.datasets import HDF5DatasetFileHandler

from .files import RecordingError, sorted_demo_names
from .terms import LABEL_ATTR, LABEL_VALID_ATTR, SuccessCheck

if TYPE_CHECKING:
    from isaaclab.envs import ManagerBasedRLEnv
    from isaaclab.managers import TerminationTermCfg

__all__ = ["RecordingStats", "StopFlag", "graceful_interrupt", "record_demos"]


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
                setattr(env, LABEL_VALID_ATTR, getattr(expert, "label_valid", None))  # read by LabelValidRecorder
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
