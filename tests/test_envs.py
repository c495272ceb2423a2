"""The Lift-Cube and Stack-Cube environments through ``make_env``, for real on the CPU (Newton MJWarp, 2 envs,
2 cameras). Isaac Lab's own entry points (``parse_env_cfg`` + ``gym.make``) are in test_env_registry.py.

Newton is a process-wide singleton, so one env exists at a time: the ``env`` fixture is module-scoped and
parametrized over the tasks (pytest finishes one task's env before building the next).
"""

from __future__ import annotations

import itertools

import pytest
import torch

pytestmark = pytest.mark.sim

NUM_ENVS = 2
POLICY_KEYS = {
    "eef_pos": (3,),
    "eef_quat": (4,),
    "gripper_pos": (2,),
    "joint_pos": (9,),
    "joint_vel": (9,),
    "table_cam": (128, 128, 3),
    "wrist_cam": (128, 128, 3),
    "actions": (7,),
}


THREADS_AFTER_MAKE_ENV = {}


@pytest.fixture(scope="module", params=["Lift-Cube", "Stack-Cube"])
def env(request):
    from vla_isaac.envs import make_env

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    env = make_env(request.param, num_envs=NUM_ENVS, cameras=True, seed=0)
    THREADS_AFTER_MAKE_ENV[request.param] = torch.get_num_threads()
    torch.set_num_threads(threads)
    yield env
    env.close()


def test_make_env_leaves_torch_threads_alone(env):
    """A library call must not change torch's process-wide thread count (the scripts set it)."""
    assert set(THREADS_AFTER_MAKE_ENV.values()) == {2}, THREADS_AFTER_MAKE_ENV


def _task(env) -> str:
    return "stack" if getattr(env.cfg, "stack_order", None) else "lift"


def _step(env, arm=(0.0,) * 6, gripper=1.0, steps=1):
    action = torch.zeros(env.num_envs, 7)
    action[:, :6] = torch.tensor(arm)
    action[:, 6] = gripper
    for _ in range(steps):
        out = env.step(action)
    return out


def _place_cube(env, name: str, env_id: int, xyz) -> None:
    """Teleport a cube (env frame position, identity orientation, at rest)."""
    cube = env.scene[name]
    ids = torch.tensor([env_id])
    pos = torch.tensor([xyz], dtype=torch.float32) + env.scene.env_origins[env_id]
    cube.write_root_pose_to_sim_index(root_pose=torch.cat([pos, torch.tensor([[0.0, 0.0, 0.0, 1.0]])], 1), env_ids=ids)
    cube.write_root_velocity_to_sim_index(root_velocity=torch.zeros(1, 6), env_ids=ids)


def test_observation_layout(env):
    obs, _ = env.reset(seed=1)
    policy = obs["policy"]
    num_cubes = len(env.cfg.cube_names)
    expected = dict(POLICY_KEYS, cube_positions=(3 * num_cubes,), cube_orientations=(4 * num_cubes,))
    assert set(policy) == set(expected)
    for key, shape in expected.items():
        assert tuple(policy[key].shape) == (NUM_ENVS, *shape), key
        assert policy[key].dtype == (torch.uint8 if key.endswith("_cam") else torch.float32), key
    if _task(env) == "stack":
        assert set(obs["subtask_terms"]) == {"grasp_1", "stack_1", "grasp_2"}
    assert env.cfg.instruction in env.cfg.instruction_templates


def test_random_actions_stay_finite_and_reset(env):
    env.reset(seed=2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(50):
        obs, reward, terminated, truncated, _ = env.step(torch.rand(NUM_ENVS, 7, generator=gen) * 2 - 1)
        for key, value in obs["policy"].items():
            if value.is_floating_point():
                assert torch.isfinite(value).all(), key
        assert torch.isfinite(reward).all()
    obs, _ = env.reset()
    # back at the home pose (joint_pos is relative to it; reset noise std 0.02 rad)
    assert obs["policy"]["joint_pos"][:, :7].abs().max() < 0.1
    assert torch.isfinite(obs["policy"]["eef_pos"]).all()


def test_ik_up_command_raises_ee_and_reset_obs_is_fresh(env):
    obs, _ = env.reset(seed=3)
    start = obs["policy"]["eef_pos"].clone()
    obs, *_ = _step(env, arm=(0.0, 0.0, 0.1, 0.0, 0.0, 0.0), steps=8)
    moved = obs["policy"]["eef_pos"] - start
    assert (moved[:, 2] > 0.05).all(), moved
    assert (moved[:, :2].norm(dim=1) < 0.02).all(), moved
    # the observation returned by reset shows the home pose, not the raised one (refresh_kinematics event)
    obs, _ = env.reset()
    assert ((obs["policy"]["eef_pos"] - start).norm(dim=1) < 0.03).all()


def test_close_command_closes_gripper(env):
    obs, _ = env.reset(seed=4)
    assert (obs["policy"]["gripper_pos"][:, 0] > 0.039).all()
    obs, *_ = _step(env, gripper=-1.0, steps=6)
    assert (obs["policy"]["gripper_pos"][:, 0] < 0.005).all(), obs["policy"]["gripper_pos"]
    obs, *_ = _step(env, gripper=1.0, steps=6)
    assert (obs["policy"]["gripper_pos"][:, 0] > 0.035).all(), obs["policy"]["gripper_pos"]


def test_cameras_see_the_scene_and_a_moved_cube(env):
    obs, _ = env.reset(seed=5)
    obs, *_ = _step(env)
    for cam in ("table_cam", "wrist_cam"):
        images = obs["policy"][cam].float()
        for i in range(NUM_ENVS):
            assert images[i].std() > 5.0, f"{cam} of env {i} is (nearly) constant"
    before = obs["policy"]["table_cam"].clone()
    obs, *_ = _step(env)
    still = (obs["policy"]["table_cam"].int() - before.int()).abs().amax(-1) > 40
    before = obs["policy"]["table_cam"].clone()
    _place_cube(env, env.cfg.cube_names[0], 0, (0.35, -0.25, env.cfg.cube_size / 2))
    obs, *_ = _step(env)
    moved = (obs["policy"]["table_cam"].int() - before.int()).abs().amax(-1) > 40
    assert moved[0].sum() > 20 + 5 * still[0].sum(), (int(moved[0].sum()), int(still[0].sum()))
    # env 1 was not touched: its image changes no more than an idle step's
    assert moved[1].sum() <= 20 + 5 * still[1].sum()


def test_resets_place_cubes_on_the_table_apart(env):
    (x_min, x_max), (y_min, y_max) = env.cfg.table_bounds
    spawn = env.cfg.cube_spawn_range
    min_sep = getattr(env.cfg, "cube_min_separation", 0.0)
    layouts = []
    for seed in range(4):
        obs, _ = env.reset(seed=10 + seed)
        pos = obs["policy"]["cube_positions"].view(NUM_ENVS, -1, 3)
        layouts.append(pos.clone())
        half = env.cfg.cube_size / 2
        assert ((pos[..., 0] > x_min + half) & (pos[..., 0] < x_max - half)).all()
        assert ((pos[..., 1] > y_min + half) & (pos[..., 1] < y_max - half)).all()
        assert ((pos[..., 0] >= spawn["x"][0] - 1e-3) & (pos[..., 0] <= spawn["x"][1] + 1e-3)).all()
        assert ((pos[..., 1] >= spawn["y"][0] - 1e-3) & (pos[..., 1] <= spawn["y"][1] + 1e-3)).all()
        assert ((pos[..., 2] - half).abs() < 0.005).all()
        for a, b in itertools.combinations(range(pos.shape[1]), 2):
            assert ((pos[:, a, :2] - pos[:, b, :2]).norm(dim=-1) >= min_sep - 1e-4).all()
    # resets actually randomize
    assert (layouts[0] - layouts[1]).abs().max() > 0.01


def test_success_term(env):
    """Stack: writing a stacked tower makes `success` true. Lift: a cube held between the fingertips for
    hold_steps does; one as high but away from the hand does not."""
    env.reset(seed=6)
    fired = []
    if _task(env) == "stack":
        for level, name in enumerate(env.cfg.stack_order):  # env 0 only; env 1 keeps its random layout
            _place_cube(env, name, 0, (0.5, -0.2, env.cfg.cube_size * (level + 0.5)))
        for _ in range(3):
            _step(env)
            fired.append(env.termination_manager.get_term("success").clone())
        fired = torch.stack(fired)
        assert fired[:, 0].any() and not fired[:, 1].any(), fired
    else:
        hold = env.cfg.terminations.success.params["hold_steps"]
        for _ in range(hold + 1):
            # env 0: the cube between the fingertips (at the tool centre, well above the table);
            # env 1: as high, but 15 cm away from the hand (balanced on something else: not held)
            tcp = env.scene["ee_frame"].data.target_pos_w.torch[:, 0, :] - env.scene.env_origins
            assert float(tcp[0, 2]) > 0.2
            _place_cube(env, "cube_1", 0, tcp[0].tolist())
            _place_cube(env, "cube_1", 1, (tcp[1, 0] - 0.15, tcp[1, 1], tcp[1, 2]))
            _step(env)
            fired.append(env.termination_manager.get_term("success").clone())
        fired = torch.stack(fired)
        assert not fired[: hold - 1].any(), fired  # not before it was held long enough
        assert fired[hold - 1 :, 0].any() and not fired[:, 1].any(), fired


def test_unknown_task_error_lists_registered_ids():
    from vla_isaac.envs import UnknownTaskError, resolve_task

    with pytest.raises(ValueError) as err:
        resolve_task("Stack-Cubes")
    assert isinstance(err.value, UnknownTaskError)
    for task in ("Lift-Cube", "Stack-Cube", "VLA-Lift-Cube-Franka-v0", "VLA-Stack-Cube-Franka-v0"):
        assert task in str(err.value)
    assert resolve_task("stack") == "Stack-Cube"
    assert resolve_task("vla-lift-cube-franka-v0") == "VLA-Lift-Cube-Franka-v0"


def test_gym_registration():
    import gymnasium as gym

    import vla_isaac  # noqa: F401

    for task in ("Lift-Cube", "Stack-Cube", "VLA-Lift-Cube-Franka-v0", "VLA-Stack-Cube-Franka-v0"):
        spec = gym.spec(task)
        assert spec.entry_point == "isaaclab.envs:ManagerBasedRLEnv"
        assert spec.kwargs["env_cfg_entry_point"].startswith("vla_isaac.tasks.")


def test_make_env_cfg_options():
    from vla_isaac.envs import EnvConfigError, make_env_cfg
    from vla_isaac.physics import BackendError

    cfg = make_env_cfg("Lift-Cube", cameras=False, seed=3, episode_length_s=4.0)
    assert cfg.scene.table_cam is None and cfg.scene.wrist_cam is None
    assert cfg.observations.policy.table_cam is None and cfg.observations.policy.wrist_cam is None
    assert cfg.seed == 3 and cfg.episode_length_s == 4.0
    assert cfg.backend == "mujoco_c" and cfg.sim.physics.solver_cfg.use_mujoco_cpu

    cfg = make_env_cfg("Stack-Cube", num_envs=4, image_size=(200, 200))
    assert cfg.backend == "mjwarp" and not cfg.sim.physics.solver_cfg.use_mujoco_cpu
    with pytest.raises(AttributeError, match="physics preset"):  # no switch behind the presets' back
        cfg.backend = "mujoco_c"
    assert (cfg.scene.table_cam.height, cfg.scene.wrist_cam.width) == (200, 200)

    # the Isaac Sim path is only constructed here (it needs Kit and an RTX GPU to run)
    cfg = make_env_cfg("Stack-Cube", num_envs=2, backend="physx", device="cuda:0")
    assert type(cfg.sim.physics).__name__ == "PhysxCfg"
    assert type(cfg.scene.table_cam.renderer_cfg).__name__ == "IsaacRtxRendererCfg"
    assert cfg.scene.robot.spawn.rigid_props.disable_gravity

    with pytest.raises(BackendError, match="one env per process"):
        make_env_cfg("Stack-Cube", num_envs=2, backend="mujoco_c")
    with pytest.raises(BackendError, match="CPU only"):
        make_env_cfg("Stack-Cube", backend="mujoco_c", device="cuda:0")
    with pytest.raises(BackendError, match="choose one of"):
        make_env_cfg("Stack-Cube", backend="newton")
    with pytest.raises(EnvConfigError, match="no 'episode_lenght_s'"):
        make_env_cfg("Lift-Cube", episode_lenght_s=3.0)
