"""Reset events Isaac Lab does not provide."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from isaaclab.envs import ManagerBasedEnv


def refresh_kinematics(env: ManagerBasedEnv, env_ids: torch.Tensor | None) -> None:
    """Recompute body poses and Newton's frame sensors from the joint state the reset just wrote.

    Must run after every reset event that moves a body. Newton refreshes ``body_q`` only by forward kinematics and
    its frame transform sensors (copied by Isaac Lab's FrameTransformer) only in a physics step, so without this the
    observation returned by a reset carries a stale end-effector pose (zeros after the first reset, the pre-reset
    pose after an auto-reset) and recorded demos start with a wrong frame. Uses NewtonManager's private sensor list
    (Isaac Lab 3.0.0); on PhysX only ``sim.forward()`` runs.
    """
    env.sim.forward()
    try:
        from isaaclab_newton.physics.newton_manager import NewtonManager
    except ImportError:  # pragma: no cover - Newton ships with isaaclab 3.0
        return
    backend = NewtonManager.backend
    if backend is None:
        return
    for sensor in getattr(NewtonManager, "_newton_frame_transform_sensors", []):
        sensor.update(backend.state_0)
