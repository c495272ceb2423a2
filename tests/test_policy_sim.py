"""VLAPolicy in real Isaac Lab envs (Newton on the CPU) with the tiny preset.

- training and deployment see identical tensors: a recorded HDF5 step read through the dataset equals
  the policy's inputs built from the live observation that produced it;
- the policy drives 2 envs for 40 steps calling the model once per k steps; an env reset clears only
  that env's queue;
- wrong action layouts and missing observation keys raise the clear errors;
- the env-side action term (VLAActionCfg) drives an env by itself.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("isaaclab")

pytestmark = [pytest.mark.sim]

from conftest import TINY_IMAGE as IMAGE  # noqa: E402


def _close(env):
    env.close()


def test_recorded_step_matches_live_observation(tiny_checkpoint, tmp_path):
    from vla.data.dataset import DemoDataset

    from vla_isaac.envs import make_env, make_env_cfg
    from vla_isaac.experts import ScriptedExpert
    from vla_isaac.policy import VLAPolicy
    from vla_isaac.recording import configure_recording, record_demos

    out = tmp_path / "lift.hdf5"
    cfg = make_env_cfg("Lift-Cube", num_envs=1, image_size=IMAGE, seed=3)
    success = configure_recording(cfg, out, env_name="Lift-Cube")
    env = make_env(cfg)
    try:
        expert = ScriptedExpert(env)
        live: list[dict] = []

        class Spy:
            def __call__(self, obs):
                live.append({k: (v.torch if hasattr(v, "torch") else v).clone() for k, v in obs["policy"].items()})
                return expert(obs)

            def reset(self, env_ids=None):
                live.clear()  # a new episode starts: only the last episode's observations matter
                expert.reset(env_ids)

        policy = VLAPolicy(tiny_checkpoint, env)
        stats = record_demos(env, Spy(), num_demos=1, success_term=success, progress=False)
        assert stats.demos == 1
    finally:
        _close(env)

    ds = DemoDataset(out, "isaaclab_lift", split="all", image_size=IMAGE)
    # the spy saw exactly the observations of the recorded (last) episode, step for step
    assert ds.num_demos == 1 and len(ds) == len(live)
    steps = [0, len(ds) // 2, len(ds) - 1]
    for t in steps:
        sample = ds[t]
        live_t = live[t]
        inputs = policy.prepare_inputs({"policy": live_t})
        np.testing.assert_array_equal(inputs["context_image"][0].numpy(), sample["context_image"])
        np.testing.assert_array_equal(inputs["wrist_image"][0].numpy(), sample["wrist_image"])
        np.testing.assert_allclose(inputs["proprio"][0].numpy(), sample["proprio"], rtol=0, atol=1e-6)


def test_policy_drives_two_envs_and_replans_every_k(tiny_checkpoint):
    from vla_isaac.envs import make_env
    from vla_isaac.policy import VLAPolicy

    env = make_env("Lift-Cube", num_envs=2, image_size=IMAGE, seed=0)
    try:
        k = 4
        policy = VLAPolicy(tiny_checkpoint, env, replan_every=k)
        calls = []
        orig = policy.model.predict_action

        def counting(*a, **kw):
            calls.append(a[0].shape[0])
            return orig(*a, **kw)

        policy.model.predict_action = counting
        obs, _ = env.reset(seed=0)
        for step in range(40):
            actions = policy(obs)
            assert actions.shape == (2, 7) and torch.isfinite(actions).all()
            assert float(actions.abs().max()) <= policy.action_clip
            obs, _, term, trunc, _ = env.step(actions)
            done = (term | trunc).nonzero().flatten()
            if len(done):
                policy.reset(done)
        assert policy.num_model_calls >= 40 // k and calls[0] == 2  # batched over both envs
        assert policy.num_model_calls == 40 // k or any(c == 1 for c in calls)

        # resetting env 1 clears only its queue: the next call replans env 1 alone
        n0 = len(calls)
        policy(obs)  # step 40 -> both envs replan (40 % 4 == 0)
        policy(obs)
        policy.reset([1])
        policy(obs)
        assert calls[n0:] == [2, 1]
    finally:
        _close(env)


def test_layout_and_observation_errors(tiny_checkpoint):
    from isaaclab.envs.mdp.actions.actions_cfg import JointPositionActionCfg

    from vla_isaac.envs import make_env, make_env_cfg
    from vla_isaac.policy import ActionLayoutError, ObservationKeyError, VLAPolicy

    cfg = make_env_cfg("Lift-Cube", num_envs=1, image_size=IMAGE)
    cfg.actions.arm_action = JointPositionActionCfg(asset_name="robot", joint_names=["panda_joint.*"], scale=0.5)
    env = make_env(cfg)
    try:
        with pytest.raises(ActionLayoutError, match="action dim 8 .*JointPositionAction"):
            VLAPolicy(tiny_checkpoint, env)
    finally:
        _close(env)

    cfg = make_env_cfg("Lift-Cube", num_envs=1, image_size=IMAGE)
    cfg.observations.policy.wrist_cam = None
    env = make_env(cfg)
    try:
        with pytest.raises(ObservationKeyError, match="wrist_cam"):
            VLAPolicy(tiny_checkpoint, env)
    finally:
        _close(env)


def test_action_term_drives_the_env(tiny_checkpoint):
    from vla_isaac.envs import make_env, make_env_cfg
    from vla_isaac.vla_action import VLAActionCfg

    cfg = make_env_cfg("Lift-Cube", num_envs=1, image_size=IMAGE)
    arm, grip = cfg.actions.arm_action, cfg.actions.gripper_action
    cfg.actions.arm_action = None
    cfg.actions.gripper_action = None
    cfg.actions.vla = VLAActionCfg(checkpoint=str(tiny_checkpoint), arm=arm, gripper=grip, replan_every=8)
    env = make_env(cfg)
    try:
        assert env.action_manager.total_action_dim == 0
        obs, _ = env.reset(seed=0)
        q0 = env.scene["robot"].data.joint_pos.torch.clone()
        for _ in range(16):
            obs, *_ = env.step(torch.zeros(1, 0))
        term = env.action_manager.get_term("vla")
        assert term.policy.num_model_calls == 2
        moved = (env.scene["robot"].data.joint_pos.torch - q0).abs().max()
        assert torch.isfinite(term.processed_actions).all() and moved > 1e-4
    finally:
        _close(env)
