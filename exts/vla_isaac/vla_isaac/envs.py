"""Build the vla_isaac environments: ``make_env_cfg`` (a plain Isaac Lab env cfg) and ``make_env``.

    from vla_isaac.envs import make_env
    env = make_env("Stack-Cube", num_envs=1)   # Newton MuJoCo-C on the CPU, 2 cameras 128x128
    obs, _ = env.reset(seed=0)
    obs, rew, terminated, truncated, info = env.step(torch.zeros(env.num_envs, 7))
    env.close()

``make_env`` launches the simulation through :func:`isaaclab.app.launch_simulation`, which starts nothing
for Newton (kit-less) and Isaac Sim's Kit for the ``physx`` backend. Newton is a process-wide singleton:
one env at a time per process (close it before building the next).

Isaac Lab's own entry points work on the registered ids too (MJWarp by default, any env count)::

    cfg = parse_env_cfg("Stack-Cube", device="cpu", num_envs=64)    # + overrides=["physics=newton_mujoco_c"]
    with launch_simulation(cfg, {}):
        env = gym.make("Stack-Cube", cfg=cfg)
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Mapping
from typing import Any

import gymnasium as gym

from .tasks import TASK_IDS

_SHORT_NAMES = {"lift": "Lift-Cube", "stack": "Stack-Cube"}


class UnknownTaskError(ValueError):
    """A task id that vla_isaac does not register."""


class EnvConfigError(ValueError):
    """An option or override ``make_env_cfg`` cannot apply."""


def registered_tasks() -> tuple[str, ...]:
    return TASK_IDS


def resolve_task(name: str) -> str:
    """Canonical gym id of ``name`` (exact id, any letter case, or ``lift``/``stack``)."""
    if name in TASK_IDS:
        return name
    by_lower = {t.lower(): t for t in TASK_IDS} | _SHORT_NAMES
    if name.lower() in by_lower:
        return by_lower[name.lower()]
    raise UnknownTaskError(f"unknown task {name!r}; registered tasks: {', '.join(TASK_IDS)}")


def env_cfg_class(task: str) -> type:
    """The env cfg class behind a task's ``env_cfg_entry_point``."""
    entry = gym.spec(resolve_task(task)).kwargs["env_cfg_entry_point"]
    module, _, attr = entry.partition(":")
    return getattr(importlib.import_module(module), attr)


def _set_path(cfg: Any, path: str, value: Any) -> None:
    obj = cfg
    parts = path.replace("__", ".").split(".")
    for part in parts[:-1]:
        if not hasattr(obj, part):
            raise EnvConfigError(f"override {path!r}: the env cfg has no {part!r}; check the name")
        obj = getattr(obj, part)
    if not hasattr(obj, parts[-1]):
        raise EnvConfigError(f"override {path!r}: the env cfg has no {parts[-1]!r}; check the name")
    setattr(obj, parts[-1], value)


def make_env_cfg(
    task: str,
    num_envs: int = 1,
    device: str = "cpu",
    backend: str = "auto",
    cameras: bool = True,
    image_size: tuple[int, int] | None = None,
    seed: int | None = None,
    franka: str = "offline",
    colliders: str = "mesh",
    overrides: Mapping[str, Any] | None = None,
    **kw_overrides: Any,
):
    """The env cfg of ``task``, set up for a backend, device, env count and camera resolution.

    The CLI-side twin of ``parse_env_cfg(task, device, num_envs, overrides=["physics=<preset>"])``: ``backend``
    picks the task's physics preset (:data:`vla_isaac.physics.BACKEND_PRESETS`) with Isaac Lab's resolver.

    Args:
        task: a registered id (``Lift-Cube``, ``Stack-Cube``, ...) or ``lift``/``stack``.
        backend: ``auto`` (MuJoCo-C for one env on the CPU, else MJWarp), ``mujoco_c`` (preset
            ``newton_mujoco_c``), ``mjwarp`` (``newton_mjwarp``, the registered default) or ``physx``
            (``isaacsim_physx``: Isaac Sim PhysX + RTX cameras; needs Isaac Sim and an RTX GPU).
        cameras: False drops both cameras and their observation terms (several times faster).
        image_size: (height, width) of both cameras; default (128, 128); (200, 200) matches Cosmos data.
        franka: ``offline`` (example-robot-data USD, built on demand) or ``isaaclab`` (Isaac Lab's asset,
            needs Nucleus access); colliders: offline collider variant (``mesh``, ``gripper_only``, ``gripper_box``).
        overrides / **kw_overrides: cfg attributes to set afterwards, by dotted path (``"terminations.success"``)
            or with ``__`` in keyword form (``episode_length_s=5.0``, ``terminations__success=None``).
    """
    from isaaclab_tasks.utils import resolve_presets

    from .physics import BACKEND_PRESETS, resolve_backend
    from .tasks.common.scene import DEFAULT_IMAGE_SIZE

    if num_envs < 1:
        raise EnvConfigError(f"num_envs={num_envs}: must be at least 1")
    backend = resolve_backend(backend, num_envs, device)

    cls = env_cfg_class(task)
    fields = getattr(cls, "__dataclass_fields__", {})
    robot_kwargs = {}
    if "franka_source" in fields:
        robot_kwargs = dict(franka_source=franka, franka_colliders=colliders)
    # the same preset resolution as parse_env_cfg(task, overrides=["physics=<preset>"]), on a cfg built with
    # the robot options (parse_env_cfg builds the registered class without arguments)
    cfg = resolve_presets(cls(**robot_kwargs), [BACKEND_PRESETS[backend]])
    cfg.scene.num_envs = num_envs
    cfg.sim.device = device
    cfg.seed = seed

    camera_names = [n for n in ("table_cam", "wrist_cam") if getattr(cfg.scene, n, None) is not None]
    if cameras:
        height, width = image_size or DEFAULT_IMAGE_SIZE
        if min(int(height), int(width)) < 8:
            raise EnvConfigError(f"image_size={tuple(image_size)}: height and width must be at least 8 pixels")
        for name in camera_names:
            cam = getattr(cfg.scene, name)
            cam.height, cam.width = int(height), int(width)
    else:
        for name in camera_names:
            setattr(cfg.scene, name, None)
            setattr(cfg.observations.policy, name, None)

    for path, value in {**(overrides or {}), **kw_overrides}.items():
        _set_path(cfg, path, value)
    return cfg


def physics_overrides(backend: str = "auto", num_envs: int = 1, device: str = "cpu") -> list[str]:
    """``parse_env_cfg`` overrides selecting the physics preset of a ``--backend`` value (``auto``: MuJoCo-C
    for one CPU env, else MJWarp), e.g. ``["physics=newton_mujoco_c"]``."""
    from .physics import BACKEND_PRESETS, resolve_backend

    return [f"physics={BACKEND_PRESETS[resolve_backend(backend, num_envs, device)]}"]


def add_sim_args(parser) -> None:
    """Add Isaac Lab's launcher arguments (``--device`` etc.) plus ``--backend`` and ``--image_size``.

    ``--device`` defaults to ``cuda:0`` when torch sees a GPU, else ``cpu`` (Isaac Lab's default is
    ``cuda:0`` even without one). Pass the result of :func:`sim_kwargs` to :func:`make_env`.
    """
    import torch

    from isaaclab.app import add_launcher_args

    from .physics import BACKENDS

    add_launcher_args(parser)
    parser.set_defaults(device="cuda:0" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--backend",
        default="auto",
        choices=BACKENDS,
        help="physics backend (selects the task's physics preset): auto = MuJoCo-C for 1 env on the CPU, else "
        "MJWarp; physx needs Isaac Sim",
    )
    parser.add_argument(
        "--image_size", type=int, nargs=2, default=None, metavar=("H", "W"), help="camera resolution (default 128 128)"
    )


def sim_kwargs(args) -> dict[str, Any]:
    """``make_env`` keyword arguments from args parsed with :func:`add_sim_args`."""
    return {
        "device": args.device,
        "backend": args.backend,
        "image_size": tuple(args.image_size) if args.image_size else None,
        "launcher_args": args,
    }


def make_env(
    cfg_or_task: Any = "Lift-Cube",
    *,
    launcher_args: Any = None,
    render_mode: str | None = None,
    **cfg_kwargs: Any,
):
    """Create a ``ManagerBasedRLEnv`` from an env cfg or a task id (then ``cfg_kwargs`` go to make_env_cfg).

    ``launcher_args``: the script's parsed args (``isaaclab.app.add_launcher_args``) or a dict.
    ``env.close()`` also closes the simulation launcher. torch's thread count is left to the caller: our
    scripts call ``torch.set_num_threads(1)`` (on a busy 2-core machine torch's default threads made each
    camera-image copy 200x slower, env steps with cameras 2.4x slower).
    """
    from isaaclab.app import launch_simulation

    if isinstance(cfg_or_task, str):
        cfg = make_env_cfg(cfg_or_task, **cfg_kwargs)
    elif cfg_kwargs:
        raise EnvConfigError(f"make_env(cfg, ...): options {sorted(cfg_kwargs)} only apply to a task id")
    else:
        cfg = cfg_or_task
    launch = contextlib.ExitStack()
    launch.enter_context(launch_simulation(cfg, launcher_args if launcher_args is not None else {}))
    try:
        from isaaclab.envs import ManagerBasedRLEnv

        env = ManagerBasedRLEnv(cfg=cfg, render_mode=render_mode)
    except BaseException:
        launch.close()
        raise

    close_env = env.close

    def close() -> None:
        try:
            close_env()
        finally:
            launch.close()

    env.close = close
    return env
