"""The RL expert (vla_isaac.rl_expert, scripts/train_expert.py, record_demos.py --expert rl, eval_expert.py).

Checkpoint tests build rsl-rl actors in memory (no simulator, a second each). The sim tests run the real
scripts in subprocesses (Newton is one env per process): 2 PPO iterations on 2 CPU envs (MJWarp), a resume,
one recorded episode with cameras (MuJoCo-C, 64x64) and an evaluation; 15-25 s each on a warm Warp cache.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from vla_isaac.rl_expert import (
    META_FILE,
    WEIGHTS_FILE,
    RLExpertError,
    check_compatible,
    export_policy,
    load_policy,
    load_rsl_rl_checkpoint,
)

REPO = Path(__file__).resolve().parents[1]
OBS_TERMS = [("joint_pos", 9), ("joint_vel", 9), ("eef_pos", 3), ("eef_quat", 4), ("cube_positions", 3),
             ("cube_orientations", 4), ("cube_pos_rel_ee", 3), ("target_height", 1), ("actions", 7)]  # fmt: skip
OBS_DIM = sum(d for _, d in OBS_TERMS)
HIDDEN = [32, 16]


def _script(name: str, *args: str, timeout: float = 400) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(REPO / "scripts" / name), *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)


def _output(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout[-3000:] + proc.stderr[-3000:]


# --------------------------------------------------------------------------------------------------
# checkpoints, without a simulator
# --------------------------------------------------------------------------------------------------


def _rsl_rl_actor(obs_dim: int = OBS_DIM, action_dim: int = 7, seed: int = 0):
    """An rsl-rl actor as PPO builds it, with non-trivial normaliser statistics."""
    from rsl_rl.models import MLPModel
    from tensordict import TensorDict

    torch.manual_seed(seed)
    obs = TensorDict({"policy": torch.randn(64, obs_dim) * 3 + 1}, batch_size=[64])
    gaussian = {"class_name": "GaussianDistribution", "init_std": 0.3}
    actor = MLPModel(obs, {"actor": ["policy"]}, "actor", action_dim, hidden_dims=HIDDEN, activation="elu",
                     obs_normalization=True, distribution_cfg=gaussian)  # fmt: skip
    actor.update_normalization(obs)
    return actor, obs


def _export(actor, out: Path, **overrides) -> Path:
    kwargs = dict(task="Lift-Cube", train_task="Lift-Cube-RL", obs_terms=OBS_TERMS, hidden_dims=HIDDEN,
                  activation="elu", obs_normalization=True, clip_actions=1.0, iteration=7)  # fmt: skip
    return export_policy(actor, out, **{**kwargs, **overrides})


def test_export_loads_as_the_deterministic_rsl_rl_actor(tmp_path):
    actor, obs = _rsl_rl_actor()
    folder = _export(actor, tmp_path / "exported")
    assert sorted(p.name for p in folder.iterdir()) == [META_FILE, WEIGHTS_FILE]  # no temp leftovers
    meta = json.loads((folder / META_FILE).read_text())
    assert (meta["task"], meta["obs_dim"], meta["action_dim"], meta["hidden_dims"]) == ("Lift-Cube", OBS_DIM, 7, HIDDEN)
    policy = load_policy(folder)
    with torch.no_grad():
        expected = actor(obs).clamp(-1.0, 1.0)  # the actor's mean (rsl-rl's deterministic output), clipped
        assert torch.allclose(policy.net(obs["policy"]), expected, atol=1e-6)
        assert torch.equal(policy.net(obs["policy"][:3]), policy.net(obs["policy"][:3]))  # deterministic
    # the run folder (holding exported/) and the file itself load too
    assert load_policy(tmp_path).meta == load_policy(folder / WEIGHTS_FILE).meta == meta


def test_rsl_rl_checkpoint_is_read_as_plain_weights(tmp_path):
    actor, obs = _rsl_rl_actor()
    _export(actor, tmp_path / "exported")
    other, _ = _rsl_rl_actor(seed=1)  # a later checkpoint of the same run: other weights, same network
    torch.save({"actor_state_dict": other.state_dict(), "critic_state_dict": {}, "optimizer_state_dict": {},
                "iter": 42, "infos": None}, tmp_path / "model_42.pt")  # fmt: skip
    policy = load_policy(tmp_path / "model_42.pt")
    assert policy.meta["iteration"] == 42
    with torch.no_grad():
        assert torch.allclose(policy.net(obs["policy"]), other(obs).clamp(-1, 1), atol=1e-6)


class _Payload:  # any non-tensor object: a pickle that would run code on load
    pass


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "model_3.pt"
    torch.save({"actor_state_dict": {}, "iter": 3, "payload": _Payload()}, path)
    with pytest.raises(RLExpertError, match="cannot be loaded as plain weights") as err:
        load_rsl_rl_checkpoint(path)
    assert str(path) in str(err.value) and "exported/" in str(err.value)


def test_truncated_or_mismatched_exports_name_the_file_and_the_fix(tmp_path):
    actor, _ = _rsl_rl_actor()
    folder = _export(actor, tmp_path / "exported")
    weights = folder / WEIGHTS_FILE
    data = weights.read_bytes()

    weights.write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(RLExpertError, match="cannot be read as safetensors") as err:
        load_policy(folder)
    assert str(weights) in str(err.value) and "train_expert.py" in str(err.value)

    # weights of a different network than policy.json describes
    _export(_rsl_rl_actor(obs_dim=40)[0], tmp_path / "other", obs_terms=OBS_TERMS[:-1] + [("actions", 4)])
    (tmp_path / "other" / META_FILE).replace(folder / META_FILE)
    weights.write_bytes(data)
    with pytest.raises(RLExpertError, match="different exports"):
        load_policy(folder)

    meta = json.loads((folder / META_FILE).read_text())
    del meta["obs_terms"]
    (folder / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(RLExpertError, match="missing key.*obs_terms"):
        load_policy(folder)
    with pytest.raises(RLExpertError, match="no such file"):
        load_policy(tmp_path / "nowhere")


def test_policy_must_match_the_env(tmp_path):
    policy = load_policy(_export(_rsl_rl_actor()[0], tmp_path / "exported"))
    check_compatible(policy, task="Lift-Cube", obs_terms=OBS_TERMS, action_dim=7)  # fits
    check_compatible(policy, task="VLA-Lift-Cube-Franka-v0", obs_terms=OBS_TERMS, action_dim=7)  # an alias
    with pytest.raises(RLExpertError, match=r"expects 43 observations .* gives 46 .*retrain") as err:
        check_compatible(policy, task="Lift-Cube", obs_terms=OBS_TERMS + [("extra", 3)], action_dim=7)
    assert str(policy.path) in str(err.value)
    with pytest.raises(RLExpertError, match="outputs 7 actions but the env takes 8"):
        check_compatible(policy, task="Lift-Cube", obs_terms=OBS_TERMS, action_dim=8)
    with pytest.raises(RLExpertError, match="trained for 'Lift-Cube', not 'Stack-Cube'"):
        check_compatible(policy, task="Stack-Cube", obs_terms=OBS_TERMS, action_dim=7)
    with pytest.raises(RLExpertError, match="no 'expert' observation group"):
        check_compatible(policy, task=None, obs_terms=None, action_dim=7)


def test_registration_and_task_variants():
    import gymnasium as gym

    from vla_isaac.envs import make_env_cfg
    from vla_isaac.rl_expert import recording_task, rl_training_task

    assert rl_training_task("Lift-Cube") == "Lift-Cube-RL" and recording_task("Lift-Cube-RL") == "Lift-Cube"
    with pytest.raises(RLExpertError, match="no RL expert variant"):
        rl_training_task("Stack-Cube")
    spec = gym.spec("Lift-Cube-RL")
    assert spec.kwargs["rsl_rl_cfg_entry_point"].endswith("agents.rsl_rl_ppo_cfg:LiftCubePPORunnerCfg")
    rl_cfg, cfg = make_env_cfg("Lift-Cube-RL", num_envs=2), make_env_cfg("Lift-Cube")
    assert rl_cfg.scene.table_cam is None and rl_cfg.scene.wrist_cam is None  # no cameras for PPO
    assert rl_cfg.terminations.success is None and rl_cfg.observations.expert is None
    # the RL policy group is Lift-Cube's expert group, term for term, and the action terms are the same
    assert rl_cfg.observations.policy.to_dict() == cfg.observations.expert.to_dict()
    assert type(rl_cfg.actions.arm_action) is type(cfg.actions.arm_action)
    assert rl_cfg.actions.arm_action.scale == cfg.actions.arm_action.scale


# --------------------------------------------------------------------------------------------------
# the scripts, on the simulator
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """2 PPO iterations of 8 steps on 2 CPU envs."""
    run = tmp_path_factory.mktemp("rl") / "run"
    proc = _script("train_expert.py", "--task", "Lift-Cube", "--num_envs", "2", "--max_iterations", "2",
                   "--num_steps_per_env", "8", "--log_dir", str(run))  # fmt: skip
    assert proc.returncode == 0, _output(proc)
    return run


@pytest.mark.sim
def test_train_writes_checkpoints_logs_and_export(trained_run):
    assert sorted(p.name for p in trained_run.glob("model_*.pt")) == ["model_0.pt", "model_1.pt"]
    assert list(trained_run.glob("events.out.tfevents.*")), "no TensorBoard log"
    assert (trained_run / "params" / "agent.yaml").is_file() and (trained_run / "params" / "env.yaml").is_file()
    policy = load_policy(trained_run / "exported")
    meta = policy.meta
    assert (meta["task"], meta["train_task"], meta["obs_group"]) == ("Lift-Cube", "Lift-Cube-RL", "expert")
    assert meta["obs_terms"] == [list(t) for t in OBS_TERMS] and meta["action_dim"] == 7
    assert meta["iteration"] == 1 and meta["num_envs"] == 2 and meta["backend"] == "mjwarp"
    assert meta["hidden_dims"] == [256, 128, 64] and meta["clip_actions"] == 1.0
    assert int(policy.net.obs_normalizer.count) == 2 * 8 * 2  # normaliser statistics came along
    # the last rsl-rl checkpoint holds the same actor as the export
    ckpt = load_policy(trained_run / "model_1.pt")
    x = torch.randn(4, OBS_DIM)
    assert torch.equal(ckpt.net(x), policy.net(x))


@pytest.mark.sim
def test_train_resumes_from_a_checkpoint(trained_run, tmp_path):
    proc = _script("train_expert.py", "--resume", str(trained_run), "--num_envs", "2", "--max_iterations", "1",
                   "--num_steps_per_env", "8", "--log_dir", str(tmp_path / "resumed"))  # fmt: skip
    assert proc.returncode == 0, _output(proc)
    assert "resumed from" in proc.stdout and "model_1.pt" in proc.stdout
    assert load_policy(tmp_path / "resumed" / "exported").meta["iteration"] == 1  # numbering continues
    # a folder that holds a run is not overwritten
    proc = _script("train_expert.py", "--num_envs", "2", "--max_iterations", "1", "--log_dir", str(trained_run))
    assert proc.returncode == 2 and "already holds a training run" in proc.stderr


@pytest.mark.sim
def test_record_demos_with_the_rl_expert(trained_run, tmp_path):
    """The untrained expert does not succeed, so the failed episode is kept to check the layout: the same
    file a scripted recording writes (VLA actions, cameras, states), ready for the VLA data pipeline."""
    from vla.data.verify import verify_files

    out = tmp_path / "rl.hdf5"
    proc = _script("record_demos.py", "--task", "Lift-Cube", "--expert", "rl", "--expert_checkpoint",
                   str(trained_run / "exported"), "--num_demos", "1", "--max_attempts", "1", "--keep_failed",
                   "--image_size", "64", "--backend", "mujoco_c", "--output", str(out))  # fmt: skip
    assert proc.returncode == 1, _output(proc)  # fewer successful demos than asked for
    with h5py.File(out, "r") as f:
        env_kwargs = json.loads(f["data"].attrs["env_args"])["env_kwargs"]
        assert env_kwargs["expert"] == "rl" and env_kwargs["expert_iteration"] == 1
        demo = f["data/demo_0"]
        n = int(demo.attrs["num_samples"])
        assert n == 200 and not bool(demo.attrs["success"])  # ran to the time limit
        actions = demo["actions"][:]
        assert actions.shape == (n, 7) and np.isfinite(actions).all() and np.abs(actions).max() <= 1.0
        assert len(np.unique(actions[:, :6], axis=0)) > n // 2  # the actor responds to the changing state
        assert set(demo["obs"]) == {"eef_pos", "eef_quat", "gripper_pos", "joint_pos", "joint_vel", "actions",
                                    "cube_positions", "cube_orientations", "table_cam", "wrist_cam"}  # fmt: skip
        assert demo["obs/table_cam"].shape == (n, 64, 64, 3) and demo["obs/table_cam"].dtype == np.uint8
        assert demo["states/rigid_object/cube_1/root_pose"].shape == (n, 7)
    assert verify_files([out], "isaaclab_lift") == []


@pytest.mark.sim
def test_record_demos_rejects_bad_checkpoints_before_building_the_env(trained_run, tmp_path):
    broken = tmp_path / "exported"
    broken.mkdir()
    (broken / META_FILE).write_bytes((trained_run / "exported" / META_FILE).read_bytes())
    data = (trained_run / "exported" / WEIGHTS_FILE).read_bytes()
    (broken / WEIGHTS_FILE).write_bytes(data[:1000])
    out = tmp_path / "x.hdf5"
    cases = [
        (["--task", "Lift-Cube", "--expert_checkpoint", str(broken)], f"{broken / WEIGHTS_FILE}: cannot be read"),
        (["--task", "Stack-Cube", "--expert_checkpoint", str(trained_run / "exported")], "not 'Stack-Cube'"),
        (["--task", "Lift-Cube"], "--expert rl and --expert_checkpoint PATH go together"),
    ]
    for args, message in cases:
        proc = _script("record_demos.py", "--expert", "rl", "--output", str(out), *args, timeout=120)
        assert proc.returncode == 2, _output(proc)
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and message in errors[0], proc.stderr[-2000:]
        assert "Completed setting up the environment" not in proc.stdout + proc.stderr
    assert not out.exists()


@pytest.mark.sim
def test_eval_expert_reports_success_per_checkpoint(trained_run, tmp_path):
    proc = _script("eval_expert.py", str(trained_run), "--iterations", "1", "--num_episodes", "2", "--num_envs", "2",
                   "--output", str(tmp_path / "eval.json"), "--plot", str(tmp_path / "eval.png"))  # fmt: skip
    assert proc.returncode == 0, _output(proc)
    summary = json.loads((tmp_path / "eval.json").read_text())
    (result,) = summary["results"]
    assert result["iteration"] == 1 and result["episodes"] == 2 and 0 <= result["successes"] <= 2
    assert [step for step, _ in summary["train_mean_reward"]] == [0, 1] or summary["train_mean_reward"] == []
    assert (tmp_path / "eval.png").stat().st_size > 1000
