"""Closed-loop episode runner shared by ``eval_vla.py``, ``play_vla.py`` and ``make demo``.

Runs a batch of envs until ``num_episodes`` episodes have finished, resetting each controller's
per-env state when its env auto-resets, and reports every finished episode (success, length and which
termination ended it). Optionally keeps frames of env 0's first episodes for videos.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from vla.eval.metrics import EpisodeResult

SUCCESS_TERM = "success"


@dataclass
class Controller:
    """What the runner drives: ``act(obs) -> (N, 7)`` plus a per-env ``reset(env_ids)``."""

    name: str
    act: Callable
    reset: Callable = lambda env_ids=None: None


def make_controller(kind: str, env, *, checkpoint=None, seed: int = 0, **policy_kw) -> Controller:
    """``vla`` (needs ``checkpoint``), ``expert`` (scripted), ``zero`` or ``random`` controllers."""
    if kind == "vla":
        if checkpoint is None:
            raise ValueError("--policy vla needs --checkpoint (train one with scripts/train.py, or run `make demo`)")
        from .policy import VLAPolicy

        pol = VLAPolicy(checkpoint, env, seed=seed, **policy_kw)
        return Controller("vla", pol, pol.reset)
    if kind == "expert":
        from .experts import ScriptedExpert

        ex = ScriptedExpert(env)
        return Controller("expert", ex, ex.reset)
    n, d = env.num_envs, env.action_manager.total_action_dim
    if kind == "zero":
        return Controller("zero", lambda obs: torch.zeros(n, d, device=env.device))
    if kind == "random":
        g = torch.Generator().manual_seed(seed)
        return Controller("random", lambda obs: (torch.rand(n, d, generator=g) * 2 - 1).to(env.device))
    raise ValueError(f"unknown policy kind {kind!r}; choose vla, expert, zero or random")


def camera_frame(obs: dict, env_id: int = 0, keys=("table_cam", "wrist_cam")) -> np.ndarray | None:
    """Both cameras of one env side by side (H, 2W, 3) uint8, or None if the env has no cameras."""
    group = obs.get("policy", obs)
    imgs = []
    for k in keys:
        if k not in group:
            return None
        im = group[k]
        im = im.torch if hasattr(im, "torch") else im
        imgs.append(torch.as_tensor(im[env_id]).detach().cpu().numpy().astype(np.uint8))
    return np.concatenate(imgs, axis=1)


@dataclass
class RunResult:
    episodes: list[EpisodeResult]
    videos: dict[int, list[np.ndarray]] = field(default_factory=dict)  # episode index -> frames
    wall_s: float = 0.0
    env_steps: int = 0


def run_episodes(
    env,
    controller: Controller,
    num_episodes: int,
    *,
    video_episodes: int = 0,
    seed: int | None = None,
    rank: int = 0,
    progress: bool = True,
    max_steps: int | None = None,
    on_episode: Callable[[EpisodeResult], None] | None = None,
) -> RunResult:
    """Step ``env`` with ``controller`` until ``num_episodes`` episodes finished (all envs run in parallel).

    The episodes in flight when the target is reached are not counted, so every counted episode
    ran to its own termination. Videos record env 0 only (its first ``video_episodes`` episodes).
    """
    from tqdm import tqdm

    tm = env.termination_manager
    term_names = list(tm.active_terms)
    obs, _ = env.reset(seed=seed)
    controller.reset(None)
    n = env.num_envs
    lengths = torch.zeros(n, dtype=torch.long)
    results: list[EpisodeResult] = []
    videos: dict[int, list[np.ndarray]] = {}
    env0_episode = 0
    cap = max_steps or int(10 * num_episodes * env.max_episode_length / max(1, n)) + 10
    bar = tqdm(total=num_episodes, desc=f"eval {controller.name}", unit="ep", disable=not progress, dynamic_ncols=True)
    t0 = time.perf_counter()
    steps = 0
    recording = video_episodes > 0
    if recording:
        videos[0] = [camera_frame(obs)] if camera_frame(obs) is not None else []
    while len(results) < num_episodes and steps < cap:
        actions = controller.act(obs)
        obs, _, terminated, truncated, _ = env.step(actions)
        steps += 1
        lengths += 1
        done = (terminated | truncated).cpu()
        if recording and env0_episode < video_episodes and not done[0]:
            f = camera_frame(obs)
            if f is not None:
                videos.setdefault(env0_episode, []).append(f)
        if done.any():
            ids = done.nonzero().flatten()
            term_vals = {name: tm.get_term(name).cpu() for name in term_names}
            for i in ids.tolist():
                if len(results) >= num_episodes:
                    break
                success = bool(term_vals.get(SUCCESS_TERM, torch.zeros(n, dtype=torch.bool))[i])
                fired = [name for name in term_names if bool(term_vals[name][i])]
                outcome = SUCCESS_TERM if success else (fired[0] if fired else "unknown")
                r = EpisodeResult(len(results), i, success, int(lengths[i]), outcome, seed=seed, rank=rank)
                results.append(r)
                if on_episode:
                    on_episode(r)
                bar.update(1)
                bar.set_postfix(success=f"{sum(x.success for x in results)}/{len(results)}")
            if done[0]:
                env0_episode += 1
                if recording and env0_episode < video_episodes:
                    f = camera_frame(obs)
                    videos[env0_episode] = [f] if f is not None else []
            lengths[ids] = 0
            controller.reset(ids)
    bar.close()
    videos = {k: v for k, v in videos.items() if v and k < video_episodes}
    return RunResult(results, videos, time.perf_counter() - t0, steps)


def write_video(frames: list[np.ndarray], path: str | Path, fps: int = 25) -> Path:
    """mp4 (H.264 through imageio-ffmpeg), written to a temp name then renamed."""
    import os

    import imageio.v2 as imageio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    h, w = frames[0].shape[:2]
    pad = [(0, (-h) % 16), (0, (-w) % 16), (0, 0)]  # codec-friendly sizes
    with imageio.get_writer(tmp, fps=fps, codec="libx264", quality=7, macro_block_size=1) as wr:
        for f in frames:
            wr.append_data(np.pad(f, pad))
    os.replace(tmp, path)
    return path
