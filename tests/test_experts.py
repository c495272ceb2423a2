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
