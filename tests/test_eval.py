"""scripts/eval_vla.py end to end (subprocesses, real envs on the CPU): output schema, expert floor, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.sim, pytest.mark.slow]

EPISODE_KEYS = {"episode", "env_id", "success", "length", "outcome", "seed", "rank"}
SUMMARY_KEYS = {"task", "policy", "num_episodes", "num_success", "success_rate", "success_ci95",
                "mean_episode_length", "outcomes", "seed", "env_steps_per_s"}


def run_eval(repo_root, *args, timeout=600):
    cmd = [sys.executable, "scripts/eval_vla.py", "--no_progress", *args]
    return subprocess.run(cmd, cwd=repo_root, capture_output=True, text=True, timeout=timeout)


def check_schema(out, n):
    lines = [json.loads(x) for x in (out / "episodes.jsonl").read_text().splitlines()]
    assert len(lines) == n and all(EPISODE_KEYS <= set(d) for d in lines)
    summary = json.loads((out / "summary.json").read_text())
    assert SUMMARY_KEYS <= set(summary)
    assert summary["num_episodes"] == n
    assert summary["num_success"] == sum(d["success"] for d in lines)
    lo, hi = summary["success_ci95"]
    assert 0.0 <= lo <= summary["success_rate"] <= hi <= 1.0
    return lines, summary


def test_expert_reference_row_clears_floor(repo_root, tmp_path):
    out = tmp_path / "expert"
    r = run_eval(repo_root, "--task", "Lift-Cube", "--policy", "expert", "--num_episodes", "4", "--image_size", "64", "64",
                 "--output", str(out), "--videos", "1")
    assert r.returncode == 0, r.stderr[-2000:]
    lines, summary = check_schema(out, 4)
    assert summary["success_rate"] >= 0.75, lines
    assert all(d["outcome"] == "success" for d in lines if d["success"])
    assert (out / "videos" / "episode_000.mp4").stat().st_size > 1000
    assert "success 4/4" in r.stdout or "success 3/4" in r.stdout


def test_tiny_checkpoint_runs_and_reports(repo_root, tmp_path, tiny_checkpoint):
    out = tmp_path / "vla"
    r = run_eval(repo_root, "--task", "Lift-Cube", "--checkpoint", str(tiny_checkpoint), "--num_episodes", "2",
                 "--image_size", "64", "64", "--episode_length_s", "1.5", "--output", str(out), "--videos", "0",
                 "--replan_every", "8")
    assert r.returncode == 0, r.stderr[-2000:]
    lines, summary = check_schema(out, 2)
    assert summary["policy"] == "vla" and summary["checkpoint"] == str(tiny_checkpoint)
    # an untrained policy does not lift the cube in 1.5 s: the episodes end by time-out
    assert all(d["outcome"] == "time_out" for d in lines)


def test_bad_inputs_fail_cleanly(repo_root, tmp_path):
    r = run_eval(repo_root, "--task", "Lift-Cube", timeout=120)
    assert r.returncode == 2 and "--checkpoint" in r.stderr
    r = run_eval(repo_root, "--task", "Pour-Water", "--policy", "expert", "--output", str(tmp_path / "x"), timeout=120)
    assert r.returncode == 2 and "Lift-Cube" in r.stderr and "Stack-Cube" in r.stderr
    r = run_eval(repo_root, "--task", "Lift-Cube", "--checkpoint", str(tmp_path / "missing"), timeout=120)
    assert r.returncode == 2 and "missing" in r.stderr


def test_torchrun_shards_episodes_and_merges(repo_root, tmp_path):
    out = tmp_path / "dist"
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--nproc_per_node", "2", "--master_port", "29541", "scripts/eval_vla.py", "--task",
           "Lift-Cube", "--policy", "expert", "--num_episodes", "3", "--image_size", "64", "64", "--videos", "0",
           "--no_progress", "--output", str(out)]
    r = subprocess.run(cmd, cwd=repo_root, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    lines, summary = check_schema(out, 3)
    assert summary["world_size"] == 2
    assert sorted(d["rank"] for d in lines) == [0, 0, 1]  # 3 episodes split 2 + 1
    assert [d["episode"] for d in lines] == [0, 1, 2]


def _run_with_and_without_render_skip(env, checkpoint, num_episodes, on_reset=None):
    """Run the tiny VLA (replan_every 4) with render-on-demand, without, and with it again; per run: the
    actions, the images the model saw at each replanning call, the camera renders and the env steps."""
    import torch

    from vla_isaac.evaluation import camera_sensors, make_controller, run_episodes

    renders = {"n": 0}
    for cam in camera_sensors(env):
        impl = cam._update_buffers_impl

        def counted(mask, impl=impl, cam=cam):
            renders["n"] += int(cam._env_mask_has_any(mask))
            return impl(mask)

        cam._update_buffers_impl = counted
    if on_reset is not None:  # e.g. desynchronise the envs' episodes right after run_episodes resets them
        reset = env.reset

        def reset_then(*a, **kw):
            out = reset(*a, **kw)
            on_reset(env)
            return out

        env.reset = reset_then
    runs = []
    for on_demand in (True, False, True):
        ctrl = make_controller("vla", env, checkpoint=checkpoint, seed=3, replan_every=4)
        actions, inputs = [], []
        act, predict = ctrl.act, ctrl.act.predict_chunk

        def recording_predict(sub, predict=predict, inputs=inputs):  # what the model sees: the replanning envs
            inputs.append({k: torch.as_tensor(sub[k]).clone() for k in ("context_image", "wrist_image", "proprio")})
            return predict(sub)

        def recording_act(obs, act=act, actions=actions):
            a = act(obs)
            actions.append(a.clone())
            return a

        act.predict_chunk = recording_predict
        ctrl.act = recording_act
        renders["n"] = 0
        res = run_episodes(env, ctrl, num_episodes, seed=11, progress=False, render_on_demand=on_demand)
        assert res.render_on_demand is on_demand and len(res.episodes) == num_episodes
        runs.append((torch.stack(actions), inputs, renders["n"], res.env_steps))
    assert all(c.cfg.update_period == 0 for c in camera_sensors(env))  # restored
    return runs


def test_render_on_demand_gives_the_policy_identical_observations(tiny_checkpoint):
    """Cameras rendered only on replanning steps: same actions as rendering every step, far fewer renders."""
    import torch

    from vla_isaac.envs import make_env
    from vla_isaac.evaluation import camera_sensors

    env = make_env("Lift-Cube", num_envs=1, image_size=(64, 64), seed=0, episode_length_s=1.0)  # 20 steps
    try:
        (a_skip, in_skip, r_skip, steps), (a_all, in_all, r_all, _), (a_again, *_) = \
            _run_with_and_without_render_skip(env, tiny_checkpoint, 2)
        n_cams = len(camera_sensors(env))
    finally:
        env.close()
    assert steps == 40 and a_skip.shape == a_all.shape
    assert torch.equal(a_skip, a_all)  # bit-identical actions
    assert len(in_skip) == len(in_all) == 10  # 2 episodes x 20 steps / replan_every 4
    for x, y in zip(in_skip, in_all):
        assert all(torch.equal(x[k], y[k]) for k in x)
    # the views change between replans, so a stale image (a render skipped wrongly) would not match
    assert sum(not torch.equal(x["wrist_image"], y["wrist_image"]) for x, y in zip(in_all, in_all[1:])) >= 5
    assert torch.equal(a_again, a_skip)  # and the run repeats exactly
    assert r_all >= n_cams * steps and r_skip <= n_cams * (len(in_skip) + 2), (r_skip, r_all)


def test_render_on_demand_with_envs_out_of_phase(tiny_checkpoint):
    """Two MJWarp envs whose episodes start 2 steps apart replan on different steps; each still sees
    the images rendering every step would give it."""
    import torch

    from vla_isaac.envs import make_env

    def offset_env1(env):
        env.episode_length_buf[1] = 2  # env 1 times out 2 steps early, then replans 2 steps ahead of env 0

    env = make_env("Lift-Cube", num_envs=2, backend="mjwarp", image_size=(64, 64), seed=0, episode_length_s=0.7)
    try:
        (a_skip, in_skip, r_skip, steps), (a_all, in_all, r_all, _), _ = \
            _run_with_and_without_render_skip(env, tiny_checkpoint, 4, on_reset=offset_env1)
    finally:
        env.close()
    assert torch.equal(a_skip, a_all)
    assert len(in_skip) == len(in_all) > 0
    assert any(len(x["proprio"]) == 1 for x in in_all)  # some calls replanned one env only: out of phase
    for x, y in zip(in_skip, in_all):
        assert all(torch.equal(x[k], y[k]) for k in x)
    assert r_skip < r_all
