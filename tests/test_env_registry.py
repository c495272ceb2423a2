"""The registered tasks through Isaac Lab's own entry points: ``parse_env_cfg`` + ``gym.make`` (as Isaac Lab's
train/play scripts build envs), physics and renderer presets chosen with ``physics=`` / ``renderer=`` overrides.

Before the presets, the registered cfgs kept MuJoCo-C (one world), so ``parse_env_cfg(task, num_envs=4)`` +
``gym.make`` failed with "separate_worlds=False is only supported for single-world models".
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
NUM_ENVS = 4
UP = (0.0, 0.0, 0.1, 0.0, 0.0, 0.0, 1.0)  # a 5 cm step up per command (~1 cm reached per env step), gripper open


def _parse(task: str, num_envs: int, overrides=()):
    import vla_isaac  # noqa: F401  (registers the tasks)
    from isaaclab_tasks.utils import parse_env_cfg

    return parse_env_cfg(task, device="cpu", num_envs=num_envs, overrides=list(overrides))


def _run_registry_env(task: str, cfg, steps: int = 4):
    """gym.make inside launch_simulation (what Isaac Lab's scripts do); the first obs and the last one."""
    import gymnasium as gym

    from isaaclab.app import launch_simulation

    with launch_simulation(cfg, {}):
        env = gym.make(task, cfg=cfg)
        try:
            first, _ = env.reset(seed=0)
            first = {k: v.clone() for k, v in first["policy"].items()}
            action = torch.tensor([UP] * env.unwrapped.num_envs)
            for _ in range(steps):
                obs, reward, *_ = env.step(action)
                assert torch.isfinite(reward).all()
            return first, obs["policy"]
        finally:
            env.close()


# --------------------------------------------------------------------------------------------------
# preset resolution, no simulator
# --------------------------------------------------------------------------------------------------


def test_presets_resolve_physics_renderer_and_robot_together():
    from isaaclab_newton.physics import NewtonCfg
    from isaaclab_newton.renderers import NewtonWarpRendererCfg
    from isaaclab_physx.renderers import IsaacRtxRendererCfg

    from isaaclab.physics import PhysxAutoCfg

    from vla_isaac.envs import make_env_cfg, physics_overrides

    cfg = _parse("Stack-Cube", 64)  # the registered default: MJWarp, any env count
    assert isinstance(cfg.sim.physics, NewtonCfg) and not cfg.sim.physics.solver_cfg.use_mujoco_cpu
    assert cfg.backend == "mjwarp" and cfg.scene.num_envs == 64
    assert isinstance(cfg.scene.table_cam.renderer_cfg, NewtonWarpRendererCfg)
    assert isinstance(cfg.scene.robot.spawn.rigid_props, list)  # MuJoCo gravity compensation

    cfg = _parse("Lift-Cube", 1, ["physics=newton_mujoco_c"])
    assert cfg.sim.physics.solver_cfg.use_mujoco_cpu and cfg.backend == "mujoco_c"

    # PhysX brings Isaac RTX cameras and disable_gravity along (Isaac Sim's path: constructed only here)
    cfg = _parse("Stack-Cube", 2, ["physics=physx"])
    assert isinstance(cfg.sim.physics, PhysxAutoCfg) and cfg.backend == "physx"
    assert isinstance(cfg.scene.table_cam.renderer_cfg, IsaacRtxRendererCfg)
    assert isinstance(cfg.scene.wrist_cam.renderer_cfg, IsaacRtxRendererCfg)
    assert cfg.scene.robot.spawn.rigid_props.disable_gravity
    # renderer= alone switches only the cameras
    cfg = _parse("Lift-Cube", 1, ["renderer=isaacsim_rtx"])
    assert isinstance(cfg.scene.table_cam.renderer_cfg, IsaacRtxRendererCfg) and cfg.backend == "mjwarp"

    with pytest.raises(ValueError, match="newton_mujoco_c"):  # Isaac Lab lists the presets
        _parse("Lift-Cube", 1, ["physics=mujoco"])

    # our CLIs' --backend selects the same presets
    assert physics_overrides("auto", 1, "cpu") == ["physics=newton_mujoco_c"]
    assert physics_overrides("auto", 16, "cpu") == ["physics=newton_mjwarp"]
    assert physics_overrides("auto", 1, "cuda:0") == ["physics=newton_mjwarp"]
    for backend, n in (("mjwarp", 4), ("mujoco_c", 1)):
        ours = make_env_cfg("Lift-Cube", num_envs=n, backend=backend).sim.physics
        assert ours.to_dict() == _parse("Lift-Cube", n, physics_overrides(backend, n)).sim.physics.to_dict()


# --------------------------------------------------------------------------------------------------
# on the simulator (kit-less Newton on the CPU)
# --------------------------------------------------------------------------------------------------


@pytest.mark.sim
def test_registry_path_steps_4_envs_on_mjwarp_with_cameras():
    cfg = _parse("Lift-Cube", NUM_ENVS)
    first, last = _run_registry_env("Lift-Cube", cfg)
    assert last["table_cam"].shape == (NUM_ENVS, 128, 128, 3) and last["wrist_cam"].shape == (NUM_ENVS, 128, 128, 3)
    for i in range(NUM_ENVS):
        assert last["table_cam"][i].float().std() > 5.0, f"table_cam of env {i} is (nearly) constant"
    # every world steps: each env's hand went up
    assert ((last["eef_pos"] - first["eef_pos"])[:, 2] > 0.03).all(), last["eef_pos"] - first["eef_pos"]


@pytest.mark.sim
def test_physics_override_selects_mujoco_c_for_one_env():
    from vla_isaac.physics import BackendError

    # MuJoCo-C with several envs: one line naming the preset and the fix, before any world is built
    cfg = _parse("Lift-Cube", 2, ["physics=newton_mujoco_c"])
    with pytest.raises(BackendError, match="one env per process.*physics=newton_mjwarp"):
        _run_registry_env("Lift-Cube", cfg)

    cfg = _parse("Lift-Cube", 1, ["physics=newton_mujoco_c"])
    cfg.scene.table_cam = cfg.scene.wrist_cam = None  # the cameras were covered above
    cfg.observations.policy.table_cam = cfg.observations.policy.wrist_cam = None
    first, last = _run_registry_env("Lift-Cube", cfg)
    assert ((last["eef_pos"] - first["eef_pos"])[:, 2] > 0.03).all()


@pytest.mark.sim
@pytest.mark.slow
def test_isaaclab_rsl_rl_train_cli_runs_lift_cube_rl(tmp_path):
    """Isaac Lab's own rsl-rl trainer (``isaaclab train``, shipped in the isaaclab wheel) on Lift-Cube-RL."""
    isaaclab = Path(sys.executable).with_name("isaaclab")
    cmd = [str(isaaclab), "train", "--rl_library", "rsl_rl", "--task", "Lift-Cube-RL", "--num_envs", str(NUM_ENVS),
           "--device", "cpu", "--max_iterations", "1", "--external_callback", "vla_isaac.tasks.register",
           "agent.device=cpu", "agent.num_steps_per_env=4"]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "GIT_OPTIONAL_LOCKS": "0"}
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (run,) = (tmp_path / "logs" / "rsl_rl" / "lift_cube_franka_rl").iterdir()
    assert (run / "model_0.pt").is_file()
    env_yaml = (run / "params" / "env.yaml").read_text()
    assert f"num_envs: {NUM_ENVS}" in env_yaml and "use_mujoco_cpu: false" in env_yaml
