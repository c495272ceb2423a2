"""Register the Franka Lift-Cube tasks: ``Lift-Cube`` (VLA demos and evaluation) and ``Lift-Cube-RL`` (PPO on
privileged state, with the rsl-rl runner config as Isaac Lab's tasks register theirs), plus versioned aliases."""

import gymnasium as gym

from . import agents

for _task_id in ("Lift-Cube", "VLA-Lift-Cube-Franka-v0"):
    gym.register(
        id=_task_id,
        entry_point="isaaclab.envs:ManagerBasedRLEnv",
        kwargs={"env_cfg_entry_point": f"{__name__}.ik_rel_env_cfg:FrankaLiftCubeEnvCfg"},
        disable_env_checker=True,
    )

for _task_id in ("Lift-Cube-RL", "VLA-Lift-Cube-Franka-RL-v0"):
    gym.register(
        id=_task_id,
        entry_point="isaaclab.envs:ManagerBasedRLEnv",
        kwargs={
            "env_cfg_entry_point": f"{__name__}.ik_rel_env_cfg:FrankaLiftCubeRLEnvCfg",
            "rsl_rl_cfg_entry_point": f"{agents.__name__}.rsl_rl_ppo_cfg:LiftCubePPORunnerCfg",
        },
        disable_env_checker=True,
    )
