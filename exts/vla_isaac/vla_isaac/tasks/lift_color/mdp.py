"""MDP terms of Lift-Cube-Color: the per-episode target cube and instruction, and success on the named cube.

The target of each env lives on the env object, written by the reset event :func:`sample_target_cube`:

* ``env.target_cube_index``: (num_envs,) long tensor, index into ``env.cfg.cube_names``;
* ``env.instructions``: list of num_envs strings, the current episode's instruction of each env (a
  paraphrase from ``env.cfg.instruction_templates`` with the target's colour).

:func:`vla_isaac.language.env_instructions` reads them (the recorder, ``VLAPolicy`` and the scripted expert
use it); tasks without a per-episode instruction fall back to ``env.cfg.instruction``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from isaaclab.managers import ManagerTermBase, TerminationTermCfg

if TYPE_CHECKING:
    from isaaclab.envs import ManagerBasedEnv, ManagerBasedRLEnv


def format_instruction(template: str, color: str) -> str:
    """``"lift the {color} cube"`` + ``"red"`` -> ``"lift the red cube"``."""
    return template.format(color=color)


def all_instructions(cfg) -> list[str]:
    """Every instruction the task can draw: each template with each cube colour (colour-major order)."""
    return [format_instruction(t, c) for c in cfg.cube_colors for t in cfg.instruction_templates]


def _ensure_target_state(env: ManagerBasedEnv) -> None:
    """Create the target buffers on first use (observation terms are evaluated once before any reset)."""
    if getattr(env, "target_cube_index", None) is None or env.target_cube_index.shape[0] != env.num_envs:
        env.target_cube_index = torch.zeros(env.num_envs, dtype=torch.long, device=env.device)
        env.instruction_template_index = torch.zeros(env.num_envs, dtype=torch.long, device=env.device)
        default = format_instruction(env.cfg.instruction_templates[0], env.cfg.cube_colors[0])
        env.instructions = [default] * env.num_envs


def sample_target_cube(env: ManagerBasedEnv, env_ids: torch.Tensor | None, fixed_target: int | None = None) -> None:
    """Reset event: draw each reset env's target cube (uniform over ``cfg.cube_names``, or ``fixed_target``)
    and its instruction template (uniform over ``cfg.instruction_templates``), with torch's global RNG (seeded
    by the env's seed), and write ``env.target_cube_index`` / ``env.instructions``."""
    _ensure_target_state(env)
    cfg = env.cfg
    if env_ids is None or isinstance(env_ids, slice):
        ids = torch.arange(env.num_envs, device=env.device)[env_ids if isinstance(env_ids, slice) else slice(None)]
    else:
        ids = torch.as_tensor(env_ids, device=env.device, dtype=torch.long).flatten()
    n = int(ids.numel())
    if n == 0:
        return
    if fixed_target is None:
        targets = torch.randint(len(cfg.cube_names), (n,), device=env.device)
    else:
        targets = torch.full((n,), int(fixed_target), dtype=torch.long, device=env.device)
    templates = torch.randint(len(cfg.instruction_templates), (n,), device=env.device)
    env.target_cube_index[ids] = targets
    env.instruction_template_index[ids] = templates
    for i, t, k in zip(ids.tolist(), targets.tolist(), templates.tolist()):
        env.instructions[i] = format_instruction(cfg.instruction_templates[k], cfg.cube_colors[t])


def target_cube_one_hot(env: ManagerBasedEnv) -> torch.Tensor:
    """(N, num_cubes) one-hot of each env's target cube (privileged: what the instruction names)."""
    _ensure_target_state(env)
    return torch.nn.functional.one_hot(env.target_cube_index, len(env.cfg.cube_names)).float()


def instruction_index(env: ManagerBasedEnv) -> torch.Tensor:
    """(N, 1) index of each env's instruction in :func:`all_instructions` (colour-major: target * number of
    templates + template), so a recorded step says which instruction its episode had."""
    _ensure_target_state(env)
    k = env.target_cube_index * len(env.cfg.instruction_templates) + env.instruction_template_index
    return k.float()[:, None]


def target_cube_position(env: ManagerBasedEnv) -> torch.Tensor:
    """(N, 3) the target cube's centre relative to the env origin [m]."""
    _ensure_target_state(env)
    pos = torch.stack([env.scene[name].data.root_pos_w.torch - env.scene.env_origins for name in env.cfg.cube_names], 1)
    return pos[torch.arange(env.num_envs, device=env.device), env.target_cube_index]


class CubesLiftedAndHeld(ManagerTermBase):
    """Per cube, whether it has stayed ``minimal_height`` above its resting height, within ``grasp_distance``
    of the tool centre, for ``hold_steps`` consecutive steps (``CubeLiftedAndHeld`` for every cube of
    ``cfg.cube_names``); ``which="target"`` returns that of each env's target cube (the task's success),
    ``which="other"`` whether any other cube did (lifting a wrong cube: the episode ends as a failure)."""

    def __init__(self, cfg: TerminationTermCfg, env: ManagerBasedRLEnv):
        super().__init__(cfg, env)
        self._steps_above = torch.zeros(env.num_envs, len(env.cfg.cube_names), dtype=torch.long, device=env.device)

    def reset(self, env_ids: Sequence[int] | None = None) -> None:
        self._steps_above[slice(None) if env_ids is None else env_ids] = 0

    def __call__(
        self,
        env: ManagerBasedRLEnv,
        which: str = "target",
        minimal_height: float = 0.1,
        hold_steps: int = 10,
        table_height: float = 0.0,
        grasp_distance: float | None = None,
    ) -> torch.Tensor:
        _ensure_target_state(env)
        origins = env.scene.env_origins
        cubes = torch.stack([env.scene[name].data.root_pos_w.torch for name in env.cfg.cube_names], 1)  # (N,C,3)
        z = cubes[..., 2] - origins[:, None, 2]
        above = z > table_height + env.cfg.cube_size / 2 + minimal_height
        if grasp_distance is not None:
            tcp = env.scene["ee_frame"].data.target_pos_w.torch[:, 0, :]
            above &= torch.linalg.vector_norm(cubes - tcp[:, None], dim=-1) < grasp_distance
        self._steps_above = torch.where(above, self._steps_above + 1, torch.zeros_like(self._steps_above))
        held = self._steps_above >= hold_steps
        is_target = torch.nn.functional.one_hot(env.target_cube_index, held.shape[1]).bool()
        if which == "target":
            return (held & is_target).any(1)
        if which == "other":
            return (held & ~is_target).any(1)
        raise ValueError(f"which={which!r}: choose 'target' or 'other'")
