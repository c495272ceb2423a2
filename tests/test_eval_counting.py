"""run_episodes counts episodes without selection bias (a stub env, no simulation; fast).

The stub's episodes succeed with a known probability; successes end after a few steps, failures run to
the time limit, as in the real tasks. Counting the first episodes to finish (the old runner) then
over-represents successes whenever several envs run at once; a fixed per-env quota does not.
"""

from __future__ import annotations

import pytest
import torch

from vla.eval.metrics import wilson_interval
from vla_isaac.evaluation import Controller, camera_period_s, episode_quota, run_episodes

TRUE_P = 0.3


class _Terms:
    active_terms = ["time_out", "success"]

    def __init__(self, env):
        self.env = env

    def get_term(self, name):
        return self.env.last[name]


class StubEnv:
    """What run_episodes uses of a ManagerBasedRLEnv: Bernoulli(p) episodes with auto-reset.

    A success ends (``success`` term, terminated) after 3-9 steps; a failure is truncated by ``time_out``
    at ``max_episode_length``. Each env draws its episodes from its own generator, seeded by ``reset``.
    """

    def __init__(self, num_envs: int, p: float = TRUE_P, max_episode_length: int = 60):
        self.num_envs, self.p, self.max_episode_length = num_envs, p, max_episode_length
        self.device = "cpu"
        self.termination_manager = _Terms(self)

    def _draw(self, i: int) -> None:
        g = self.gens[i]
        self.success[i] = bool(torch.rand((), generator=g) < self.p)
        self.length[i] = int(torch.randint(3, 10, (), generator=g)) if self.success[i] else self.max_episode_length
        self.t[i] = 0

    def _obs(self):
        return {"policy": {"t": self.t.clone()}}

    def reset(self, seed=None):
        n = self.num_envs
        self.gens = [torch.Generator().manual_seed(1000 * (seed or 0) + i) for i in range(n)]
        self.t = torch.zeros(n, dtype=torch.long)
        self.length = torch.zeros(n, dtype=torch.long)
        self.success = torch.zeros(n, dtype=torch.bool)
        for i in range(n):
            self._draw(i)
        self.last = {k: torch.zeros(n, dtype=torch.bool) for k in _Terms.active_terms}
        return self._obs(), {}

    def step(self, actions):
        assert actions.shape == (self.num_envs, 7)
        self.t += 1
        end = self.t >= self.length
        terminated, truncated = end & self.success, end & ~self.success
        self.last = {"success": terminated.clone(), "time_out": truncated.clone()}
        for i in end.nonzero().flatten().tolist():
            self._draw(i)
        return self._obs(), torch.zeros(self.num_envs), terminated, truncated, {}


def zero_controller(n: int) -> Controller:
    return Controller("zero", lambda obs: torch.zeros(n, 7), image_every=0)


def first_to_finish(env: StubEnv, num_episodes: int, seed: int) -> list[bool]:
    """The old runner's counting: the first ``num_episodes`` episodes to finish, the rest dropped."""
    env.reset(seed=seed)
    out: list[bool] = []
    while len(out) < num_episodes:
        _, _, terminated, truncated, _ = env.step(torch.zeros(env.num_envs, 7))
        for i in (terminated | truncated).nonzero().flatten().tolist():
            if len(out) < num_episodes:
                out.append(bool(terminated[i]))
    return out


def test_episode_quota_splits_evenly_and_numbers_contiguously():
    assert episode_quota(10, 4) == [3, 3, 2, 2]
    assert episode_quota(3, 8) == [1, 1, 1, 0, 0, 0, 0, 0]
    assert episode_quota(0, 2) == [0, 0]
    for total, n in [(10, 4), (3, 8), (16, 8), (7, 1)]:
        q = episode_quota(total, n)
        numbers = sorted(k * n + i for i in range(n) for k in range(q[i]))
        assert numbers == list(range(total))
    with pytest.raises(ValueError, match="num_envs"):
        episode_quota(4, 0)


@pytest.mark.parametrize("num_envs", [1, 8])
def test_success_rate_is_unbiased(num_envs):
    n_ep = 400
    res = run_episodes(StubEnv(num_envs), zero_controller(num_envs), n_ep, seed=1, progress=False)
    assert res.complete and len(res.episodes) == n_ep
    assert [r.episode for r in res.episodes] == list(range(n_ep))
    per_env = [sum(r.env_id == i for r in res.episodes) for i in range(num_envs)]
    assert per_env == episode_quota(n_ep, num_envs)
    k = sum(r.success for r in res.episodes)
    lo, hi = wilson_interval(k, n_ep)
    assert lo <= TRUE_P <= hi, (k, n_ep)
    assert all(r.length == 60 for r in res.episodes if not r.success)
    assert all(r.outcome == ("success" if r.success else "time_out") for r in res.episodes)


def test_many_envs_few_episodes_old_counting_biased_quota_not():
    """8 envs x 16 episodes, 40 seeds pooled (640 episodes): the old counting reads ~38% for a 30% policy."""
    n, per_run, seeds = 8, 16, range(40)
    new = [r.success for s in seeds for r in run_episodes(StubEnv(n), zero_controller(n), per_run, seed=s,
                                                          progress=False).episodes]
    old = [x for s in seeds for x in first_to_finish(StubEnv(n), per_run, seed=s)]
    assert len(new) == len(old) == 640
    lo, hi = wilson_interval(sum(new), len(new))
    assert lo <= TRUE_P <= hi
    old_lo, _ = wilson_interval(sum(old), len(old))
    assert old_lo > TRUE_P, sum(old) / len(old)  # the bias this runner removes


def test_records_are_deterministic_given_the_seed():
    runs = [run_episodes(StubEnv(4), zero_controller(4), 20, seed=7, progress=False).episodes for _ in range(2)]
    assert [r.to_json() for r in runs[0]] == [r.to_json() for r in runs[1]]
    other = run_episodes(StubEnv(4), zero_controller(4), 20, seed=8, progress=False).episodes
    assert [r.to_json() for r in other] != [r.to_json() for r in runs[0]]


def test_max_steps_cut_warns_and_marks_incomplete():
    with pytest.warns(UserWarning, match="biased"):
        res = run_episodes(StubEnv(2), zero_controller(2), 10, seed=0, progress=False, max_steps=30)
    assert not res.complete and len(res.episodes) < 10


def test_camera_period_renders_on_image_steps_only():
    dt = 0.05
    assert camera_period_s(None, dt) is None and camera_period_s(1, dt) is None
    assert camera_period_s(0, dt) > 1e6
    # Isaac Lab marks an env outdated when (elapsed + 1e-6) >= period; elapsed grows by physics_dt per substep
    period, substeps = camera_period_s(4, dt), 2
    renders, since = [], 0.0
    for step in range(1, 13):
        due = False
        for _ in range(substeps):
            since += dt / substeps
            due |= since + 1e-6 >= period
        if due:
            renders.append(step)
            since = 0.0
    assert renders == [4, 8, 12]
    with pytest.raises(ValueError, match="image_every"):
        camera_period_s(-1, dt)


class SubtaskStubEnv(StubEnv):
    """The stub with Stack-Cube's ``subtask_terms`` observation group: ``after_5`` turns true on an episode's
    5th step, ``never`` stays false. Episodes of 3-5 steps end before showing ``after_5`` (the observation
    after the last step is the next episode's)."""

    def _obs(self):
        return {"policy": {"t": self.t.clone()},
                "subtask_terms": {"after_5": (self.t >= 5)[:, None], "never": torch.zeros(self.num_envs, 1)}}


@pytest.mark.parametrize("num_envs", [1, 4])
def test_each_episode_records_the_subtasks_it_reached(num_envs):
    from vla.eval.metrics import summarize

    res = run_episodes(SubtaskStubEnv(num_envs), zero_controller(num_envs), 40, seed=3, progress=False)
    assert len(res.episodes) == 40
    for r in res.episodes:  # a flag seen on a step of the episode, not on the next episode's first observation
        assert r.extra["subtasks"] == {"after_5": r.length > 5, "never": False}, r
    summary = summarize(res.episodes)
    assert summary["subtasks_reached"] == {"after_5": sum(r.length > 5 for r in res.episodes), "never": 0}
    assert 0 < summary["subtasks_reached"]["after_5"] < 40  # both kinds of episode occurred
    assert "subtasks_reached" not in summarize(run_episodes(StubEnv(2), zero_controller(2), 4, seed=0,
                                                            progress=False).episodes)  # tasks without flags
