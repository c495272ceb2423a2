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


def test_staged_miss_is_recovered_and_marked(env):
    """miss_prob=1: the first grasp misses (the hand closes beside the cube), the expert goes back and lifts the
    cube anyway, and exactly the miss's steps are marked invalid (a contiguous run that starts with the
    descent and ends before the gripper opens again)."""
    from vla_isaac.experts import ScriptedExpert

    with pytest.raises(ValueError, match="miss_prob"):
        ScriptedExpert(env, miss_prob=1.5)
    expert = ScriptedExpert(env, generator=torch.Generator().manual_seed(0), miss_prob=1.0)
    if expert.task == "stack":  # the first grasp of the first cube misses; the second one carries it
        obs, _ = env.reset(seed=5)
        valid, gripper = [], []
        while len(gripper) < 160 and int(((torch.tensor(gripper[1:]) < 0) & (torch.tensor(gripper[:-1]) > 0)).sum()) < 2:
            actions = expert(obs)
            valid.append(bool(expert.label_valid[0]))
            gripper.append(float(actions[0, 6]))
            obs, *_ = env.step(actions)
        g = torch.tensor(gripper)
        closes = (((g[1:] < 0) & (g[:-1] > 0)).nonzero().flatten() + 1).tolist()
        assert len(closes) == 2, f"expected a missed grasp and a second one within 160 steps, got closes at {closes}"
        assert not valid[closes[0]] and valid[closes[1]], "the missed close must be masked, the second kept"
        for _ in range(30):  # the second grasp holds: the cube goes up with the hand
            obs, *_ = env.step(expert(obs))
        pick = env.scene[expert.plan[0][0]].data.root_pos_w.torch[0, 2] - env.scene.env_origins[0, 2]
        assert float(pick) > 2 * expert.cube_size, f"the recovered grasp did not lift the cube (z {float(pick):.3f})"
        return
    obs, _ = env.reset(seed=5)
    for episode in range(2):
        valid, gripper, success = [], [], False
        for _ in range(int(env.max_episode_length)):
            actions = expert(obs)
            valid.append(bool(expert.label_valid[0]))
            gripper.append(float(actions[0, 6]))
            obs, _, terminated, truncated, _ = env.step(actions)
            if bool(terminated[0] | truncated[0]):
                success = bool(env.termination_manager.get_term("success")[0])
                break
        assert success, f"episode {episode}: the expert did not recover from its staged miss"
        g = torch.tensor(gripper)
        closes = int(((g[1:] < 0) & (g[:-1] > 0)).sum())
        assert closes == 2, f"episode {episode}: expected a missed grasp and a second one, gripper closed {closes}x"
        v = torch.tensor(valid)
        invalid = (~v).nonzero().flatten()
        assert len(invalid) > 0 and int(invalid[-1] - invalid[0]) + 1 == len(invalid)  # one contiguous run
        first_close = int(((g[1:] < 0) & (g[:-1] > 0)).nonzero()[0]) + 1
        assert invalid[0] < first_close <= invalid[-1]  # the missed close is inside the run ...
        assert bool(v[-1]) and g[int(invalid[-1]) + 1] > 0  # ... and the recovery (gripper open) is learned
