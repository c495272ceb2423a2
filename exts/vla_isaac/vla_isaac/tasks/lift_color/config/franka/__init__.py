"""Register the Franka Lift-Cube-Color task (``Lift-Cube-Color``) and its versioned alias."""

import gymnasium as gym

for _task_id in ("Lift-Cube-Color", "VLA-Lift-Cube-Color-Franka-v0"):
    gym.register(
        id=_task_id,
        entry_point="isaaclab.envs:ManagerBasedRLEnv",
        kwargs={"env_cfg_entry_point": f"{__name__}.ik_rel_env_cfg:FrankaLiftColorEnvCfg"},
        disable_env_checker=True,
    )
