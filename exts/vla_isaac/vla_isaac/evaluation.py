"""Closed-loop episode runner shared by ``eval_vla.py``, ``play_vla.py`` and ``make demo``.

Each env of the batch runs a fixed quota of episodes (``num_episodes`` split evenly over the envs), so
which episodes count never depends on how they end: counting the first episodes to finish would favour
successes, which end early, over failures, which run to the time limit. Each controller's per-env state
is reset when its env auto-resets; every counted episode is reported (success, length, the termination
that ended it). Cameras render only on the steps where the controller reads them (see
:func:`run_episodes`). Optionally keeps frames of env 0's first episodes for videos.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from vla.eval.metrics import EpisodeResult

SUCCESS_TERM = "success"


@dataclass
class Controller:
    """What the runner drives: ``act(obs) -> (N, 7)`` plus a per-env ``reset(env_ids)``.

    ``image_every`` declares when ``act`` reads camera images, so the runner can skip rendering on the
    other steps: ``None`` = on every step (nothing skipped), ``0`` = never, ``k`` = on episode steps
    0, k, 2k, ... of each env (a VLA policy replanning every k steps).
    """

    name: str
    act: Callable
    reset: Callable = lambda env_ids=None: None
    image_every: int | None = None


def make_controller(kind: str, env, *, checkpoint=None, policy_server: str | None = None, api_key: str | None = None,
                    seed: int = 0, **policy_kw) -> Controller:
    """``vla`` (needs ``checkpoint``, or ``policy_server`` = ``ws://HOST:PORT`` of ``serve_policy.py``),
    ``lerobot`` (a LeRobot ``PreTrainedPolicy`` checkpoint; ``lerobot_policy.LeRobotPolicy``),
    ``expert`` (scripted), ``zero`` or ``random`` controllers."""
    if kind == "vla" and policy_server is not None:
        from .remote_policy import RemotePolicy

        pol = RemotePolicy(policy_server, env, api_key=api_key, seed=seed, **policy_kw)
        return Controller("vla", pol, pol.reset, image_every=pol.image_every)
    if kind == "vla":
        if checkpoint is None:
            raise ValueError("--policy vla needs --checkpoint (train one with scripts/train.py, or run `make demo`)")
        from .policy import VLAPolicy

        pol = VLAPolicy(checkpoint, env, seed=seed, **policy_kw)
        return Controller("vla", pol, pol.reset, image_every=pol.image_every)
    if kind == "lerobot":
        if checkpoint is None:
            raise ValueError("--policy lerobot needs --checkpoint (a LeRobot policy folder; docs/lerobot.md)")
        from .lerobot_policy import LeRobotPolicy

        pol = LeRobotPolicy(checkpoint, env, seed=seed, **policy_kw)
        return Controller("lerobot", pol, pol.reset, image_every=pol.image_every)
    if kind == "expert":
        from .experts import ScriptedExpert

        ex = ScriptedExpert(env)
        return Controller("expert", ex, ex.reset, image_every=0)  # privileged state, no images
    n, d = env.num_envs, env.action_manager.total_action_dim
    if kind == "zero":
        return Controller("zero", lambda obs: torch.zeros(n, d, device=env.device), image_every=0)
    if kind == "random":
        g = torch.Generator().manual_seed(seed)
        return Controller("random", lambda obs: (torch.rand(n, d, generator=g) * 2 - 1).to(env.device), image_every=0)
    raise ValueError(f"unknown policy kind {kind!r}; choose vla, lerobot, expert, zero or random")


def episode_quota(num_episodes: int, num_envs: int) -> list[int]:
    """Episodes each env runs: ``num_episodes`` split as evenly as possible, the first envs taking the rest.

    Env ``i``'s ``k``-th episode is episode number ``k * num_envs + i``; with this split those numbers
    are exactly ``0 .. num_episodes - 1``.
    """
    if num_episodes < 0 or num_envs < 1:
        raise ValueError(f"num_episodes={num_episodes}, num_envs={num_envs}: need num_episodes >= 0 and num_envs >= 1")
    base, rest = divmod(num_episodes, num_envs)
    return [base + (1 if i < rest else 0) for i in range(num_envs)]


NEVER_S = 1.0e9  # a camera update period no episode reaches: render on resets only


def camera_sensors(env) -> list:
    """The env's camera sensors (``isaaclab.sensors.Camera`` and subclasses); [] for an env without a scene."""
    scene = getattr(env, "scene", None)
    if scene is None or not getattr(scene, "sensors", None):
        return []
    from isaaclab.sensors import Camera

    return [s for s in scene.sensors.values() if isinstance(s, Camera)]


def camera_period_s(image_every: int | None, step_dt: float) -> float | None:
    """Camera ``update_period`` [s] that renders exactly on the episode steps 0, k, 2k, ... (``k = image_every``).

    Isaac Lab cameras are lazy: a camera renders when its data is read and an env is *outdated*, which
    happens on reset and once ``update_period`` has elapsed since that env's last render (otherwise the
    last image is kept). Half a step short of ``k`` steps makes env steps k, 2k, ... due without relying
    on float32 timestamp sums hitting ``k * step_dt`` exactly. ``None``: every step (no change), 0: never.
    """
    if image_every is None or image_every == 1:
        return None
    if image_every == 0:
        return NEVER_S
    if image_every < 0:
        raise ValueError(f"image_every={image_every}: must be None, 0 or a positive step count")
    return (image_every - 0.5) * step_dt


class CameraSchedule:
    """Sets the cameras' ``update_period`` for a controller's image steps and restores the old values.

    Only applied when every camera renders on every step (``update_period`` 0, the default): a camera
    the user slowed down on purpose is left alone.
    """

    def __init__(self, env, image_every: int | None):
        self.cameras = camera_sensors(env)
        self.saved = [c.cfg.update_period for c in self.cameras]
        self.period = camera_period_s(image_every, float(getattr(env, "step_dt", 0.0) or 0.0)) if self.cameras else None
        if any(p != 0 for p in self.saved):
            self.period = None

    @property
    def active(self) -> bool:
        return self.period is not None

    def apply(self) -> None:
        if self.period is not None:
            for c in self.cameras:
                c.cfg.update_period = self.period

    def restore(self) -> None:
        for c, p in zip(self.cameras, self.saved):
            c.cfg.update_period = p


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


def subtask_flags(obs: dict, group: str = "subtask_terms") -> dict[str, torch.Tensor]:
    """The env's subtask completion flags (Stack-Cube's ``grasp_1``, ``stack_1``, ``grasp_2``), one bool per env,
    from the observation group Isaac Lab's stack tasks name ``subtask_terms``; empty if the env has none."""
    terms = obs.get(group) if isinstance(obs, dict) else None
    if not isinstance(terms, dict):
        return {}
    out = {}
    for name, value in terms.items():
        v = value.torch if hasattr(value, "torch") else value
        out[name] = torch.as_tensor(v).detach().reshape(v.shape[0], -1).bool().any(dim=1).cpu()
    return out


@dataclass
class RunResult:
    episodes: list[EpisodeResult]  # in episode order (see episode_quota)
    videos: dict[int, list[np.ndarray]] = field(default_factory=dict)  # env 0's k-th episode -> frames
    wall_s: float = 0.0
    env_steps: int = 0  # env.step() calls
    complete: bool = True  # False: max_steps stopped the run before every env ran its quota
    render_on_demand: bool = False  # cameras rendered only on the controller's image steps


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
    render_on_demand: bool = True,
) -> RunResult:
    """Step ``env`` with ``controller`` until every env finished its quota of episodes (envs run in parallel).

    Env ``i`` counts its first ``episode_quota(num_episodes, num_envs)[i]`` episodes (numbered
    ``k * num_envs + i``) and keeps stepping, uncounted, until the slowest env is done, so the estimate
    is not biased towards short episodes. ``on_episode`` sees episodes as they finish; the result lists
    them in episode order. Videos record env 0 only (its first ``video_episodes`` episodes).

    Where the env observes subtask flags (``subtask_flags``: Stack-Cube's ``grasp_1``, ``stack_1``,
    ``grasp_2``), each episode's ``extra["subtasks"]`` says which were true on any of its steps, so that a
    failed multi-stage episode shows where it stalled (the observation after an episode's last step
    belongs to the next episode, so a flag true only on the last step is not seen; success is its own term).

    ``render_on_demand`` sets the cameras' update period from ``controller.image_every``, so they render
    only on the steps the controller reads them (the observations hold the last image in between);
    the controller sees the same images on those steps as with every step rendered. Video recording needs
    every frame: with one env the cameras render every step until env 0's videos are done, with several
    envs the whole run renders every step.
    """
    from tqdm import tqdm

    tm = env.termination_manager
    term_names = list(tm.active_terms)
    n = env.num_envs
    quota = torch.tensor(episode_quota(num_episodes, n), dtype=torch.long)
    finished = torch.zeros(n, dtype=torch.long)  # episodes each env finished, counted or not
    lengths = torch.zeros(n, dtype=torch.long)
    reached: dict[str, torch.Tensor] = {}  # subtask flag -> true on some step of each env's current episode
    results: list[EpisodeResult] = []
    videos: dict[int, list[np.ndarray]] = {}
    recording = video_episodes > 0
    schedule = CameraSchedule(env, controller.image_every if render_on_demand else None)
    # videos need every frame of env 0: with one env, switch to the controller's schedule once they are done
    # (env 0 has just reset then, so its phase is right); with several envs the others' phases would not be
    defer_schedule = recording and schedule.active
    if defer_schedule and n > 1:
        schedule.period = None
    if not defer_schedule:
        schedule.apply()
    cap = max_steps or int(quota.max()) * (int(env.max_episode_length) + 1) + 10
    bar = tqdm(total=num_episodes, desc=f"eval {controller.name}", unit="ep", disable=not progress, dynamic_ncols=True)
    t0 = time.perf_counter()
    steps = 0
    try:
        obs, _ = env.reset(seed=seed)
        controller.reset(None)
        if recording:
            f = camera_frame(obs)
            videos[0] = [f] if f is not None else []
        while bool((finished < quota).any()) and steps < cap:
            actions = controller.act(obs)
            obs, _, terminated, truncated, _ = env.step(actions)
            steps += 1
            lengths += 1
            done = (terminated | truncated).cpu()
            for name, flag in subtask_flags(obs).items():  # done envs' observations are their next episode's
                reached[name] = reached.get(name, torch.zeros(n, dtype=torch.bool)) | (flag & ~done)
            env0_episode = int(finished[0])
            if recording and env0_episode < video_episodes and not done[0]:
                f = camera_frame(obs)
                if f is not None:
                    videos.setdefault(env0_episode, []).append(f)
            if not done.any():
                continue
            ids = done.nonzero().flatten()
            term_vals = {name: tm.get_term(name).cpu() for name in term_names}
            no_success = torch.zeros(n, dtype=torch.bool)
            for i in ids.tolist():
                k = int(finished[i])
                finished[i] += 1
                if k >= quota[i]:
                    continue  # past this env's quota: not counted, whatever its outcome
                success = bool(term_vals.get(SUCCESS_TERM, no_success)[i])
                fired = [name for name in term_names if bool(term_vals[name][i])]
                outcome = SUCCESS_TERM if success else (fired[0] if fired else "unknown")
                extra = {"subtasks": {name: bool(v[i]) for name, v in reached.items()}} if reached else {}
                r = EpisodeResult(k * n + i, i, success, int(lengths[i]), outcome, seed=seed, rank=rank, extra=extra)
                results.append(r)
                if on_episode:
                    on_episode(r)
                bar.update(1)
                bar.set_postfix(success=f"{sum(x.success for x in results)}/{len(results)}")
            if done[0] and recording:
                env0_episode = int(finished[0])
                if env0_episode < video_episodes:
                    f = camera_frame(obs)
                    videos[env0_episode] = [f] if f is not None else []
                elif defer_schedule and env0_episode == video_episodes:
                    schedule.apply()
            lengths[ids] = 0
            for v in reached.values():
                v[ids] = False
            controller.reset(ids)
    finally:
        schedule.restore()
        bar.close()
    complete = bool((finished >= quota).all())
    if not complete:
        warnings.warn(
            f"run_episodes stopped at max_steps={cap} with {len(results)}/{num_episodes} episodes; the missing "
            "ones were still running, so the success rate over the others is biased towards short episodes",
            stacklevel=2,
        )
    videos = {k: v for k, v in videos.items() if v and k < video_episodes}
    results.sort(key=lambda r: r.episode)
    return RunResult(results, videos, time.perf_counter() - t0, steps, complete, schedule.active)


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
