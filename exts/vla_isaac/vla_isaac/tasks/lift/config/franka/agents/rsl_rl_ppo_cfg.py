"""rsl-rl PPO runner for ``Lift-Cube-RL`` (the RL expert), after Isaac Lab's Franka lift runners.

Networks, PPO settings and the iteration budget follow ``isaaclab_tasks.contrib.lift`` (Franka, joint
positions; 4096 GPU envs x 1500 iterations). What differs is for the relative IK actions: an action of 1.0
commands a 0.5 m / 0.5 rad move of the hand, so the Gaussian starts narrower (std 0.3, not 1.0) and actions are
clipped to +-1 (also by the recorder's :class:`~vla_isaac.rl_expert.RLExpert`); the observations are
normalised (raw joint, pose and height terms differ in scale by 100x); and the learning rate starts at Isaac
Lab's core lift value (1e-3; the adaptive KL schedule lowers it as needed), which suits short CPU runs.
"""

from isaaclab.utils import configclass

from isaaclab_rl.rsl_rl import RslRlMLPModelCfg, RslRlOnPolicyRunnerCfg, RslRlPpoAlgorithmCfg


@configclass
class LiftCubePPORunnerCfg(RslRlOnPolicyRunnerCfg):
    num_steps_per_env = 24
    max_iterations = 1500
    save_interval = 50
    experiment_name = "lift_cube_franka_rl"
    obs_groups = {"actor": ["policy"], "critic": ["policy"]}
    clip_actions = 1.0
    actor = RslRlMLPModelCfg(
        hidden_dims=[256, 128, 64],
        activation="elu",
        obs_normalization=True,
        distribution_cfg=RslRlMLPModelCfg.GaussianDistributionCfg(init_std=0.3),
    )
    critic = RslRlMLPModelCfg(hidden_dims=[256, 128, 64], activation="elu", obs_normalization=True)
    algorithm = RslRlPpoAlgorithmCfg(
        value_loss_coef=1.0,
        use_clipped_value_loss=True,
        clip_param=0.2,
        entropy_coef=0.006,
        num_learning_epochs=5,
        num_mini_batches=4,
        learning_rate=1.0e-3,
        schedule="adaptive",
        gamma=0.98,
        lam=0.95,
        desired_kl=0.01,
        max_grad_norm=1.0,
    )
