"""Scripted experts solve the tasks (short runs; the full 50-episode figures are in docs/benchmarks.md).

One env per task on MuJoCo-C without cameras (the fastest backend); one env at a time in the process.
"""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.sim

EPISODES = 4


@pytest.fixture(scope="module", params=["Lift-Cube", "Stack-Cube"])
def env(request):
    from vla_isaac.envs import make_env

    env = make_env(request.param, num_envs=1, cameras=False, seed=0)
    yield env
    env.close()


def test_expert_solves_task(env):
    from vla_isaac.experts import ScriptedExpert, run_episodes

    expert = ScriptedExpert(env)
    assert expert.task == ("stack" if "stack" in type(env.cfg).__name__.lower() else "lift")
    stats = run_episodes(env, expert, EPISODES, seed=0)
    assert stats["successes"] >= EPISODES - 1, stats
    # it solves the task well before the time limit
    assert max(stats["episode_steps"]) < env.max_episode_length, stats


def test_expert_actions_match_the_action_space(env):
    from vla_isaac.experts import ScriptedExpert

    expert = ScriptedExpert(env, noise_std=0.01, generator=torch.Generator().manual_seed(0))
    obs, _ = env.reset(seed=1)
    for _ in range(20):
        actions = expert(obs)
        assert actions.shape == (env.num_envs, 7) and torch.isfinite(actions).all()
        assert set(actions[:, 6].tolist()) <= {-1.0, 1.0}
        obs, *_ = env.step(actions)
    assert expert.phase_names[0] != "approach" or expert.steps_in_phase[0] > 0
    expert.reset()
    assert expert.phase_names == ["approach"] and int(expert.subtask[0]) == 0


def _episode(env, expert, obs):
    """Run one episode of env 0: per step the label's validity and the gripper command; success; the next obs."""
    valid, gripper, success = [], [], False
    for _ in range(int(env.max_episode_length)):
        actions = expert(obs)
        valid.append(bool(expert.label_valid[0]))
        gripper.append(float(actions[0, 6]))
        obs, _, terminated, truncated, _ = env.step(actions)
        if bool(terminated[0] | truncated[0]):
            success = bool(env.termination_manager.get_term("success")[0])
            break
    g = torch.tensor(gripper)
    closes = (((g[1:] < 0) & (g[:-1] > 0)).nonzero().flatten() + 1).tolist()  # steps where the gripper closes
    return torch.tensor(valid), g, closes, success, obs


def test_staged_miss_is_recovered_and_marked(env):
    """miss_prob=1: the first grasp misses (the hand closes beside the cube), the expert goes back and lifts the
    cube anyway (Stack-Cube: and stacks both cubes), and exactly the miss's steps are marked invalid (a contiguous
    run that starts with the descent and ends before the recovery)."""
    from vla_isaac.experts import ScriptedExpert

    with pytest.raises(ValueError, match="miss_prob"):
        ScriptedExpert(env, miss_prob=1.5)
    expert = ScriptedExpert(env, generator=torch.Generator().manual_seed(0), miss_prob=1.0)
    obs, _ = env.reset(seed=5)
    for episode in range(2 if expert.task == "lift" else 1):
        v, g, closes, success, obs = _episode(env, expert, obs)
        assert success, f"episode {episode}: the expert did not recover from its staged miss"
        invalid = (~v).nonzero().flatten()
        assert len(invalid) > 0 and int(invalid[-1] - invalid[0]) + 1 == len(invalid)  # one contiguous run
        assert invalid[0] < closes[0] <= invalid[-1]  # the missed close is inside the run ...
        assert all(bool(v[c]) for c in closes[1:]), f"episode {episode}: only the staged miss may be masked"
        if expert.task == "lift":
            assert len(closes) == 2, f"episode {episode}: expected a missed grasp and a second one, closes at {closes}"
            assert bool(v[-1]) and g[int(invalid[-1]) + 1] > 0  # ... and the recovery (gripper open) is learned
        else:  # a missed grasp, then (after any failed re-grasps) the grasps that carry both cubes
            assert len(closes) >= 3, f"a missed grasp and two cubes' grasps expected, gripper closed at {closes}"
            assert int(invalid[-1]) < closes[1]  # the run ends before the recovery's grasp


def test_the_arm_ik_is_solved_once_per_control_step(env):
    """The arm term solves its IK on the first physics substep of each control step and holds the joint target
    over the others (``solve_every_substep`` restores Isaac Lab's solve at every substep); the expert still
    lifts / stacks with it (test_expert_solves_task)."""
    from isaaclab.envs.mdp.actions.task_space_actions import DifferentialInverseKinematicsAction

    from vla_isaac.experts import ScriptedExpert
    from vla_isaac.mdp import ControlStepDifferentialIKAction

    term = env.action_manager.get_term("arm_action")
    assert isinstance(term, ControlStepDifferentialIKAction) and isinstance(term, DifferentialInverseKinematicsAction)
    expert = ScriptedExpert(env)
    obs, _ = env.reset(seed=2)
    robot = env.scene["robot"]
    solves = term.solves
    for _ in range(6):
        obs, *_ = env.step(expert(obs))
    assert term.solves - solves == 6
    target = robot.data.joint_pos_target.torch[0, term._joint_ids].clone()
    term.apply_actions()  # a later substep of the same control step: the target is held, not re-solved
    assert term.solves - solves == 6
    assert torch.equal(robot.data.joint_pos_target.torch[0, term._joint_ids], target)
    term.cfg.solve_every_substep = True
    try:
        solves = term.solves
        for _ in range(3):
            obs, *_ = env.step(expert(obs))
        assert term.solves - solves == 3 * env.cfg.decimation
    finally:
        term.cfg.solve_every_substep = False
