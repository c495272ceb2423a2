"""Teleoperation: Isaac Lab's ``Se3Keyboard`` as an expert for the record loop (needs a display and Isaac Sim)."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from .files import RecordingError

if TYPE_CHECKING:
    from isaaclab.envs import ManagerBasedRLEnv

__all__ = ["KeyboardExpert", "check_keyboard_available"]


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
