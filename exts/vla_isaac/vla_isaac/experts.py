"""Scripted experts for Lift-Cube, Lift-Cube-Color and Stack-Cube: a waypoint state machine per env, batched in torch.

The expert reads privileged state (cube poses, tool-centre pose) straight from the scene and emits the
same 7-dim action a policy emits: a relative IK pose delta of the hand (scaled like the env's IK action)
and a binary gripper command. Each pick-and-place runs through

    APPROACH (above the cube, gripper open, fingers turned to the cube's faces)
    DESCEND  (tool centre to the cube centre)
    CLOSE    (gripper closes, arm still)
    LIFT     (straight up to the carry height)
  lift:   HOLD (stay up; the env's success term ends the episode)
  stack:  MOVE (held cube over the target cube) -> LOWER (held cube just above the target's top)
          -> RELEASE (gripper opens) -> RETREAT (up), then the next pick-and-place or DONE.

Phases advance on a position tolerance or a step cap, so a slow or blocked move never stalls an env.
Recovery: a cube that leaves the hand while carrying is picked again, and a cube that did not end up on
its target after the release is picked and placed again. ``miss_prob`` makes the first grasp of a share of
the episodes miss on purpose (the hand descends 3-5 cm off the cube), so that recorded demos show what to do
after a missed grasp: open, go back above the cube, grasp again. The steps of the staged miss are marked in
``label_valid`` (False), so that training does not learn the miss itself, only the recovery.
The hand is ~20 cm wide along its finger axis, so of the two face-aligned grasp orientations the expert
picks the one whose finger axis points away from nearby cubes (it would otherwise knock a finished tower
over). An env whose episode just restarted (``episode_length_buf == 0``) starts over automatically;
``reset`` does the same explicitly.

    expert = ScriptedExpert(env, noise_std=0.0)
    obs, _ = env.reset()
    while ...:
        obs, rew, terminated, truncated, info = env.step(expert(obs))
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

# Gains and limits (20 Hz control; the arm covers ~20% of a commanded displacement per step).
POS_GAIN = 2.5  # commanded displacement = POS_GAIN * position error
ROT_GAIN = 2.0
MAX_POS_STEP = 0.04  # [m] commanded displacement per step
MAX_ROT_STEP = 0.25  # [rad] commanded rotation per step

HOVER = 0.10  # [m] above the cube before descending
CARRY_Z = 0.20  # [m] tool-centre height while carrying
PLACE_GAP = 0.008  # [m] held cube's bottom above the target's top before release
LIFT_Z = 0.25  # [m] tool-centre height the lift expert holds the cube at
LOST_DISTANCE = 0.05  # [m] held cube this far from the tool centre => grasp lost, pick it again
MISS_OFFSET = (0.03, 0.05)  # [m] horizontal offset range of a staged grasp miss (the cube's edge is 5 cm)
MISS_NOTICED = (0.05, 0.15)  # [m] range of the cube distance at which a staged miss is noticed while lifting
PLACED_XY = 0.02  # [m] placed cube within this of the target's axis (and resting on it) => placed
OBSTACLE_RANGE = 0.20  # [m] cubes closer than this (centre to centre) steer the grasp orientation

APPROACH, DESCEND, CLOSE, LIFT, HOLD, MOVE, LOWER, RELEASE, RETREAT, DONE = range(10)
PHASE_NAMES = ("approach", "descend", "close", "lift", "hold", "move", "lower", "release", "retreat", "done")

# (tolerance [m] to advance, step cap) per phase; tolerance None = advance on the cap only
_PHASE_RULES = {
    APPROACH: (0.010, 60),
    DESCEND: (0.005, 40),
    CLOSE: (None, 8),
    LIFT: (0.015, 40),
    MOVE: (0.008, 80),
    LOWER: (0.004, 40),
    RELEASE: (None, 8),
    RETREAT: (0.02, 20),
}


def _quat_apply(q_xyzw: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    xyz, w = q_xyzw[:, :3], q_xyzw[:, 3:4]
    t = 2.0 * torch.cross(xyz, v, dim=-1)
    return v + w * t + torch.cross(xyz, t, dim=-1)


def _yaw(q_xyzw: torch.Tensor) -> torch.Tensor:
    x, y, z, w = q_xyzw.unbind(-1)
    return torch.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))


def _wrap_quarter_turn(angle: torch.Tensor) -> torch.Tensor:
    """Angle modulo 90 degrees, in [-45, 45): a cube looks the same every quarter turn."""
    return torch.remainder(angle + math.pi / 4, math.pi / 2) - math.pi / 4


def _wrap_half_turn(angle: torch.Tensor) -> torch.Tensor:
    """Angle modulo 180 degrees, in [-90, 90): a parallel gripper looks the same every half turn."""
    return torch.remainder(angle + math.pi / 2, math.pi) - math.pi / 2


class ExpertError(ValueError):
    """The env is not one the scripted expert knows how to solve."""


class ScriptedExpert:
    """Vectorized waypoint expert; picks lift or stack from the env cfg (``stack_order`` => stack).

    Args:
        env: a vla_isaac ``ManagerBasedRLEnv`` (Lift-Cube or Stack-Cube).
        noise_std: std of Gaussian noise added to the 6 arm action dims of the *executed* action
            [m, rad per step]. The clean command of the same step is kept in ``label_actions``: recorded
            demos store it as the label (DART: the demos visit off-path states and show how to get back).
        generator: optional ``torch.Generator`` for the noise and the staged misses (reproducible demos).
        miss_prob: share of episodes whose first grasp misses on purpose: the hand descends to a point
            3-5 cm beside the cube (random direction), closes, lifts until the cube is 5-15 cm away, then
            recovers like after any lost grasp. ``label_valid`` is False from that descent until the
            recovery starts (0 = never). On Stack-Cube it is the episode's first grasp, of the first cube to place.
    """

    def __init__(self, env, noise_std: float = 0.0, generator: torch.Generator | None = None,
                 miss_prob: float = 0.0):
        cfg = env.cfg
        self.env = env
        self.noise_std = float(noise_std)
        self.generator = generator
        self.miss_prob = float(miss_prob)
        if not 0.0 <= self.miss_prob <= 1.0:
            raise ValueError(f"ScriptedExpert: miss_prob must be in [0, 1], got {miss_prob}")
        self.num_envs = env.num_envs
        self.device = env.device
        order = list(getattr(cfg, "stack_order", []) or [])
        if order:
            self.task = "stack"
            # each cube goes onto the one below it: [(pick, target), ...]
            self.plan = [(order[i], order[i - 1]) for i in range(1, len(order))]
        elif getattr(cfg, "cube_names", None):
            self.task = "lift"
            self.plan = [(cfg.cube_names[0], None)]
        else:
            raise ExpertError(
                f"ScriptedExpert: {type(cfg).__name__} has neither `stack_order` nor `cube_names`; "
                "it only solves the vla_isaac cube tasks (Lift-Cube, Stack-Cube)"
            )
        # Lift-Cube-Color: the cube to lift is each env's target of the episode (env.target_cube_index)
        self.per_env_target = self.task == "lift" and bool(getattr(cfg, "per_episode_instruction", False))
        self.cube_size = float(cfg.cube_size)
        arm = cfg.actions.arm_action
        self.action_scale = float(arm.scale) if isinstance(arm.scale, (int, float)) else 1.0
        self.open_cmd, self.close_cmd = 1.0, -1.0
        n = self.num_envs
        self.phase = torch.full((n,), APPROACH, dtype=torch.long, device=self.device)
        self.steps_in_phase = torch.zeros(n, dtype=torch.long, device=self.device)
        self.subtask = torch.zeros(n, dtype=torch.long, device=self.device)
        self.lift_xy = torch.zeros(n, 2, device=self.device)
        self.retreat_z = torch.zeros(n, device=self.device)
        self.grasp_yaw = torch.zeros(n, device=self.device)  # hand yaw chosen for the grasp (mod 180 deg)
        self._cubes = {name: env.scene[name] for name in cfg.cube_names}
        self._ee = env.scene["ee_frame"]
        self.label_actions: torch.Tensor | None = None  # the last call's clean (noise-free) actions
        # staged misses: per env, whether this episode's first grasp misses, by how much, and when it is noticed
        self.miss_pending = torch.zeros(n, dtype=torch.bool, device=self.device)  # not staged yet this episode
        self.missing = torch.zeros(n, dtype=torch.bool, device=self.device)  # staging it now (labels invalid)
        self.miss_offset = torch.zeros(n, 3, device=self.device)
        self.miss_noticed = torch.full((n,), LOST_DISTANCE, device=self.device)
        self.label_valid = torch.ones(n, dtype=torch.bool, device=self.device)  # the last call's labels are usable

    # ---------------------------------------------------------------------------------------------
    def reset(self, env_ids: Sequence[int] | torch.Tensor | None = None) -> None:
        ids = slice(None) if env_ids is None else torch.as_tensor(env_ids, device=self.device, dtype=torch.long)
        self.phase[ids] = APPROACH
        self.steps_in_phase[ids] = 0
        self.subtask[ids] = 0
        self.missing[ids] = False
        if self.miss_prob > 0:
            self._draw_misses(ids)

    def _rand(self, *shape: int) -> torch.Tensor:
        gen_device = self.generator.device if self.generator is not None else "cpu"
        return torch.rand(*shape, generator=self.generator, device=gen_device).to(self.device)

    def _draw_misses(self, ids) -> None:
        """Decide per env whether the new episode's first grasp misses, where the hand goes instead and at
        which cube distance the miss is noticed (all drawn at reset, so an episode is reproducible)."""
        n = self.num_envs
        u = self._rand(n, 4)
        angle = 2 * math.pi * u[:, 1]
        radius = MISS_OFFSET[0] + (MISS_OFFSET[1] - MISS_OFFSET[0]) * u[:, 2]
        offset = torch.zeros(n, 3, device=self.device)
        offset[:, 0], offset[:, 1] = radius * torch.cos(angle), radius * torch.sin(angle)
        self.miss_pending[ids] = (u[:, 0] < self.miss_prob)[ids]
        self.miss_offset[ids] = offset[ids]
        self.miss_noticed[ids] = (MISS_NOTICED[0] + (MISS_NOTICED[1] - MISS_NOTICED[0]) * u[:, 3])[ids]

    @property
    def phase_names(self) -> list[str]:
        return [PHASE_NAMES[int(p)] for p in self.phase]

    def _subtask_cube(self, which: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-env position (env frame) and quaternion of the current subtask's cube (0: pick, 1: target)."""
        if which == 0 and self.per_env_target:
            return self._episode_target_cube()
        origins = self.env.scene.env_origins
        pos = torch.zeros(self.num_envs, 3, device=self.device)
        quat = torch.zeros(self.num_envs, 4, device=self.device)
        quat[:, 3] = 1.0
        for k, pair in enumerate(self.plan):
            name = pair[which]
            if name is None:
                continue
            mask = self.subtask == k
            data = self._cubes[name].data
            pos[mask] = (data.root_pos_w.torch - origins)[mask]
            quat[mask] = data.root_quat_w.torch[mask]
        return pos, quat

    def _episode_target_cube(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Position (env frame) and quaternion of each env's target cube (``env.target_cube_index``, drawn
        per episode by Lift-Cube-Color's reset event; cube 0 before the first reset)."""
        names = list(self.env.cfg.cube_names)
        target = getattr(self.env, "target_cube_index", None)
        if target is None:
            target = torch.zeros(self.num_envs, dtype=torch.long, device=self.device)
        origins = self.env.scene.env_origins
        pos = torch.stack([self._cubes[n].data.root_pos_w.torch - origins for n in names], 1)
        quat = torch.stack([self._cubes[n].data.root_quat_w.torch for n in names], 1)
        rows = torch.arange(self.num_envs, device=self.device)
        target = target.to(self.device)
        return pos[rows, target], quat[rows, target]

    def _hand_yaw(self, ee_quat: torch.Tensor) -> torch.Tensor:
        """Yaw of the hand such that 0 means the finger axis (hand y) points along world +y."""
        n = ee_quat.shape[0]
        hand_y = _quat_apply(ee_quat, torch.tensor([[0.0, 1.0, 0.0]], device=self.device).expand(n, 3))
        return torch.atan2(hand_y[:, 1], hand_y[:, 0]) - math.pi / 2

    def _choose_grasp_yaw(self, hand_yaw, pick_pos, pick_quat) -> torch.Tensor:
        """Of the two face-aligned hand yaws, the one whose finger axis points away from nearby cubes
        (cubes standing on others count most), with a small preference for the smaller turn."""
        origins = self.env.scene.env_origins
        base = hand_yaw + _wrap_quarter_turn(_yaw(pick_quat) - hand_yaw)
        candidates = torch.stack([base, base + math.pi / 2], dim=1)  # (n, 2)
        finger_dir = torch.stack([torch.cos(candidates + math.pi / 2), torch.sin(candidates + math.pi / 2)], -1)
        crowding = torch.zeros_like(candidates)
        for cube in self._cubes.values():
            pos = cube.data.root_pos_w.torch - origins
            offset = pos[:, :2] - pick_pos[:, :2]
            dist = offset.norm(dim=1, keepdim=True)
            weight = ((OBSTACLE_RANGE - dist) / (OBSTACLE_RANGE / 2)).clamp(0.0, 1.0)
            weight = torch.where(dist < 0.02, torch.zeros_like(weight), weight)  # the pick cube itself
            elevated = (pos[:, 2:3] > pick_pos[:, 2:3] + self.cube_size / 2).float()
            alignment = (finger_dir * (offset / dist.clamp_min(1e-6))[:, None, :]).sum(-1).abs()
            crowding = torch.maximum(crowding, weight * (0.3 + 0.7 * elevated) * alignment)
        turn = _wrap_half_turn(candidates - hand_yaw[:, None]).abs() / (math.pi / 2)
        cost = crowding + 0.25 * turn
        return torch.gather(candidates, 1, cost.argmin(dim=1, keepdim=True)).squeeze(1)

    def _placed(self, pick_pos, target_pos) -> torch.Tensor:
        offset = pick_pos - target_pos
        return (offset[:, :2].norm(dim=1) < PLACED_XY) & ((offset[:, 2] - self.cube_size).abs() < 0.01)

    def _goal(self, phase, ee_pos, pick_pos, target_pos) -> torch.Tensor:
        """Where the tool centre should go in each env's phase (env frame)."""
        goal = ee_pos.clone()  # CLOSE, RELEASE, DONE: stay
        up = torch.tensor([0.0, 0.0, HOVER], device=self.device)
        m = phase == APPROACH
        goal[m] = pick_pos[m] + up
        m = phase == DESCEND
        goal[m] = pick_pos[m] + self.miss_offset[m] * self.missing[m, None]
        m = (phase == LIFT) | (phase == HOLD)
        goal[m, :2] = self.lift_xy[m]
        goal[m, 2] = LIFT_Z if self.task == "lift" else CARRY_Z
        # placing moves the HELD cube (not the hand) onto the target, so the grasp offset cancels out
        m = phase == MOVE
        goal[m, :2] = (ee_pos[:, :2] + target_pos[:, :2] - pick_pos[:, :2])[m]
        goal[m, 2] = CARRY_Z
        m = phase == LOWER
        place_at = target_pos + torch.tensor([0.0, 0.0, self.cube_size + PLACE_GAP], device=self.device)
        goal[m] = (ee_pos + place_at - pick_pos)[m]
        m = phase == RETREAT
        goal[m, 2] = self.retreat_z[m]
        return goal

    # ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(self, obs=None) -> torch.Tensor:
        """Actions (num_envs, 7) for the current state. ``obs`` is accepted for API symmetry with a
        policy; the expert reads privileged state from the scene."""
        just_reset = self.env.episode_length_buf == 0
        if just_reset.any():
            self.reset(just_reset.nonzero().squeeze(-1))
        n = self.num_envs
        ee_pos = self._ee.data.target_pos_w.torch[:, 0, :] - self.env.scene.env_origins
        ee_quat = self._ee.data.target_quat_w.torch[:, 0, :]

        # --- advance the phases whose goal is reached (or whose step cap ran out)
        pick_pos, _ = self._subtask_cube(0)
        target_pos, _ = self._subtask_cube(1)
        phase = self.phase
        dist = (self._goal(phase, ee_pos, pick_pos, target_pos) - ee_pos).norm(dim=1)
        self.steps_in_phase += 1
        advance = torch.zeros(n, dtype=torch.bool, device=self.device)
        for p, (tol, cap) in _PHASE_RULES.items():
            done = self.steps_in_phase >= cap
            if tol is not None:
                done |= dist < tol
            advance |= (phase == p) & done
        grasped = advance & (phase == CLOSE)
        self.lift_xy[grasped] = ee_pos[grasped, :2]
        released = advance & (phase == RELEASE)
        self.retreat_z[released] = ee_pos[released, 2] + 0.08
        nxt = phase + 1
        if self.task == "lift":
            nxt = torch.where((phase == LIFT) | (phase == HOLD), torch.full_like(nxt, HOLD), nxt)
        else:
            nxt = torch.where(phase == LIFT, torch.full_like(nxt, MOVE), nxt)
            last = self.subtask >= len(self.plan) - 1
            placed = self._placed(pick_pos, target_pos)
            after_retreat = torch.where(placed & last, DONE, APPROACH)  # not placed: same subtask again
            nxt = torch.where(phase == RETREAT, after_retreat, nxt)
            self.subtask = torch.where(advance & (phase == RETREAT) & placed & ~last, self.subtask + 1, self.subtask)
        new_phase = torch.where(advance, nxt, phase)
        # a staged miss starts with the first descent of the episode ...
        start_miss = self.miss_pending & (phase == APPROACH) & (new_phase == DESCEND)
        self.missing |= start_miss
        self.miss_pending &= ~start_miss
        # the cube slipped out of the hand while carrying (or was never in it): pick it again
        carrying = (new_phase == LIFT) | (new_phase == HOLD) | (new_phase == MOVE) | (new_phase == LOWER)
        lost_distance = torch.where(self.missing, self.miss_noticed, torch.full_like(self.miss_noticed, LOST_DISTANCE))
        lost = carrying & ((pick_pos - ee_pos).norm(dim=1) > lost_distance)
        new_phase = torch.where(lost, APPROACH, new_phase)
        # ... and ends when the expert goes back to the cube; its labels (descend beside the cube, close on
        # nothing, lift) are not worth learning, the recovery after it is
        self.missing &= ~lost
        self.label_valid = ~self.missing
        self.steps_in_phase[(new_phase != phase)] = 0
        self.phase = phase = new_phase

        # --- actions for the (new) phase
        pick_pos, pick_quat = self._subtask_cube(0)
        target_pos, target_quat = self._subtask_cube(1)
        err = self._goal(phase, ee_pos, pick_pos, target_pos) - ee_pos
        actions = torch.zeros(n, 7, device=self.device)
        actions[:, :3] = (POS_GAIN * err).clamp(-MAX_POS_STEP, MAX_POS_STEP)
        # keep the fingers pointing down: rotate the hand's z axis towards -z (axis-angle, base frame)
        hand_z = _quat_apply(ee_quat, torch.tensor([[0.0, 0.0, 1.0]], device=self.device).expand(n, 3))
        rot = torch.cross(hand_z, torch.tensor([[0.0, 0.0, -1.0]], device=self.device).expand(n, 3), dim=-1)
        # turn about z so the fingers close on two opposite faces (chosen while approaching, then kept) ...
        hand_yaw = self._hand_yaw(ee_quat)
        approach = phase == APPROACH
        if approach.any():
            self.grasp_yaw[approach] = self._choose_grasp_yaw(hand_yaw, pick_pos, pick_quat)[approach]
        yaw_err = _wrap_half_turn(self.grasp_yaw - hand_yaw)
        # ... and, while placing, line the held cube up with the target cube
        placing = (phase == MOVE) | (phase == LOWER)
        yaw_err = torch.where(placing, _wrap_quarter_turn(_yaw(target_quat) - _yaw(pick_quat)), yaw_err)
        turning = approach | (phase == DESCEND) | placing
        rot[:, 2] = torch.where(turning, yaw_err, torch.zeros_like(yaw_err))
        actions[:, 3:6] = (ROT_GAIN * rot).clamp(-MAX_ROT_STEP, MAX_ROT_STEP)
        closed = (phase == CLOSE) | (phase == LIFT) | (phase == HOLD) | (phase == MOVE) | (phase == LOWER)
        actions[:, 6] = torch.where(closed, self.close_cmd, self.open_cmd)
        # the clean command is the demo's label (DART): record_demos stores it as `actions`
        self.label_actions = actions.clone()
        self.label_actions[:, :6] /= self.action_scale
        if self.noise_std > 0:  # ... while the noisy one is executed, so the demos visit off-path states
            gen_device = self.generator.device if self.generator is not None else "cpu"
            noise = torch.randn(n, 6, generator=self.generator, device=gen_device).to(self.device)
            actions[:, :6] += self.noise_std * noise
        actions[:, :6] /= self.action_scale
        return actions


def run_episodes(env, policy, num_episodes: int, seed: int | None = None, progress: bool = False) -> dict:
    """Run ``policy`` (obs -> actions, e.g. a :class:`ScriptedExpert`) until ``num_episodes`` episodes end.

    Returns ``{"episodes", "successes", "success_rate", "steps", "episode_steps": [...]}``; success is the
    env's ``success`` termination term at the step an episode ended. Episodes still running when the count
    is reached are not counted.
    """
    from tqdm import tqdm

    obs, _ = env.reset(seed=seed)
    if hasattr(policy, "reset"):
        policy.reset()
    successes, lengths, steps = 0, [], 0
    bar = tqdm(total=num_episodes, desc="episodes", disable=not progress, leave=False)
    while len(lengths) < num_episodes:
        length_before = env.episode_length_buf.clone()
        obs, _, terminated, truncated, _ = env.step(policy(obs))
        steps += 1
        done = (terminated | truncated).nonzero().flatten().tolist()
        success = env.termination_manager.get_term("success")
        for i in done[: num_episodes - len(lengths)]:
            successes += bool(success[i])
            lengths.append(int(length_before[i]) + 1)
            bar.update(1)
        bar.set_postfix(success=f"{successes}/{len(lengths)}")
    bar.close()
    return {
        "episodes": len(lengths),
        "successes": successes,
        "success_rate": successes / max(len(lengths), 1),
        "steps": steps,
        "episode_steps": lengths,
    }
