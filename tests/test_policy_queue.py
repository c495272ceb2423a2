"""VLAPolicy's chunk queue, replanning, resets, ensembling and clipping (no simulator needed).

A stub model stands in for the VLA: its chunk for env i at call c is ``a[j] = 0.01 * (100 * c + j)``
in every dim, so the action a policy emits says exactly which chunk and which step it came from.
"""

from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("isaaclab")

from vla_isaac.policy import VLAPolicy  # noqa: E402


class StubModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.cfg = SimpleNamespace(num_queries=16, action_dim=7, image_size=[32, 32])
        self.calls = []

    def predict_action(self, ctx, wrist, instr, proprio, **kw):
        self.calls.append((ctx.shape[0], list(instr)))
        c = len(self.calls) - 1
        j = torch.arange(16, dtype=torch.float32)
        chunk = (0.01 * (100 * c + j))[None, :, None].expand(ctx.shape[0], 16, 7)
        return chunk.clone()


MAPPING = {
    "context_image": "table_cam",
    "wrist_image": "wrist_cam",
    "proprio": [["eef_pos", 3], ["gripper_pos", 2]],
    "instruction": "lift the red cube",
}


def obs(n=2, hw=48):
    g = torch.Generator().manual_seed(0)
    return {
        "policy": {
            "table_cam": torch.randint(0, 255, (n, hw, hw, 3), dtype=torch.uint8, generator=g),
            "wrist_cam": torch.randint(0, 255, (n, hw, hw, 3), dtype=torch.uint8, generator=g),
            "eef_pos": torch.zeros(n, 3),
            "gripper_pos": torch.zeros(n, 2),
        }
    }


def make(**kw):
    m = StubModel()
    return m, VLAPolicy(m, None, key_mapping=MAPPING, num_envs=2, action_clip=100.0, **kw)


def test_one_model_call_per_replanning_step():
    m, pol = make(replan_every=4)
    out = [pol(obs()) for _ in range(12)]
    assert pol.num_model_calls == 3 and len(m.calls) == 3
    assert all(b == 2 for b, _ in m.calls)  # all envs in one batched call
    assert m.calls[0][1] == ["lift the red cube"] * 2
    # steps 0..3 come from chunk 0 (j = 0..3), step 4 from chunk 1 (j = 0)
    assert [round(float(a[0, 0]), 4) for a in out[:5]] == [0.0, 0.01, 0.02, 0.03, 1.0]


def test_reset_clears_only_that_envs_queue():
    m, pol = make(replan_every=8)
    for _ in range(3):
        pol(obs())
    pol.reset([1])
    a = pol(obs())
    assert len(m.calls) == 2 and m.calls[1][0] == 1  # only env 1 replanned
    assert float(a[0, 0]) == pytest.approx(0.03)  # env 0 continues its chunk
    assert float(a[1, 0]) == pytest.approx(1.0)  # env 1 starts a new one


def test_images_are_resized_to_the_model_input():
    m, pol = make()
    inputs = pol.prepare_inputs(obs(hw=48))
    assert tuple(inputs["context_image"].shape) == (2, 32, 32, 3) and inputs["context_image"].dtype == torch.uint8
    assert tuple(inputs["proprio"].shape) == (2, 5)


def test_temporal_ensemble_averages_overlapping_chunks():
    m, pol = make(replan_every=1, temporal_ensemble=True, ensemble_decay=0.0)
    a0 = pol(obs())  # chunk 0, j=0 -> 0.0
    a1 = pol(obs())  # mean(chunk0[1]=0.01, chunk1[0]=1.0)
    assert float(a0[0, 0]) == pytest.approx(0.0)
    assert float(a1[0, 0]) == pytest.approx((0.01 + 1.0) / 2)


def test_actions_are_clipped():
    m = StubModel()
    pol = VLAPolicy(m, None, key_mapping=MAPPING, num_envs=2, action_clip=0.05, replan_every=16)
    acts = torch.stack([pol(obs()) for _ in range(16)])
    assert float(acts.max()) == pytest.approx(0.05)


class GripperStub(StubModel):
    """Chunks whose gripper dim (last) follows a scripted sequence, one value per call, both envs."""

    def __init__(self, values):
        super().__init__()
        self.values = list(values)

    def predict_action(self, ctx, wrist, instr, proprio, **kw):
        chunk = super().predict_action(ctx, wrist, instr, proprio, **kw)
        chunk[..., -1] = self.values[len(self.calls) - 1]
        return chunk


def test_gripper_hysteresis_latches_against_chatter():
    """Values dithering around 0 (a policy unsure whether it holds the cube) flip the raw command every
    call; with hysteresis 0.5 the gripper closes once on -0.8, ignores +-0.3 and reopens only on +0.9."""
    seq = [0.2, -0.8, 0.3, -0.3, 0.3, 0.9, -0.3, -0.6]
    raw = VLAPolicy(GripperStub(seq), None, key_mapping=MAPPING, num_envs=2, replan_every=1)
    latched = VLAPolicy(GripperStub(seq), None, key_mapping=MAPPING, num_envs=2, replan_every=1, gripper_hysteresis=0.5)
    raw_out = [float(raw(obs())[0, -1]) for _ in seq]
    out = [float(latched(obs())[0, -1]) for _ in seq]
    assert raw_out == pytest.approx(seq)  # default: the prediction passes through
    assert out == [1.0, -1.0, -1.0, -1.0, -1.0, 1.0, 1.0, -1.0]
    latched.reset([0])  # a new episode starts open; env 1 keeps its closed state
    latched.model.values.append(0.1)
    assert latched(obs())[:, -1].tolist() == [1.0, -1.0]


def test_gripper_hysteresis_must_be_non_negative():
    with pytest.raises(ValueError, match="gripper_hysteresis"):
        make(gripper_hysteresis=-0.1)


class NoiseStub(StubModel):
    """Returns the starting noise it was given, so the test sees what the sampler starts from."""

    def predict_action(self, ctx, wrist, instr, proprio, noise=None, **kw):
        self.calls.append((ctx.shape[0], list(instr)))
        return noise.clone()


def test_noise_scale_scales_the_samplers_starting_noise():
    full = VLAPolicy(NoiseStub(), None, key_mapping=MAPPING, num_envs=2, replan_every=1, seed=3, action_clip=100.0)
    half = VLAPolicy(NoiseStub(), None, key_mapping=MAPPING, num_envs=2, replan_every=1, seed=3, action_clip=100.0,
                     noise_scale=0.5)
    zero = VLAPolicy(NoiseStub(), None, key_mapping=MAPPING, num_envs=2, replan_every=1, seed=4, noise_scale=0.0)
    a = full(obs())
    assert a.abs().max() > 0.1
    torch.testing.assert_close(half(obs()), 0.5 * a)
    assert zero(obs()).abs().max() == 0  # one deterministic chunk, whatever the seed
    with pytest.raises(ValueError, match="noise_scale"):
        make(noise_scale=-1.0)


def test_missing_observation_key_is_named():
    from vla_isaac.policy import ObservationKeyError

    m, pol = make()
    o = obs()
    del o["policy"]["eef_pos"]
    with pytest.raises(ObservationKeyError, match="eef_pos"):
        pol(o)


def test_replan_every_out_of_range():
    with pytest.raises(ValueError, match="replan_every"):
        make(replan_every=17)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_real_checkpoint_in_float32_and_bf16(tiny_checkpoint, dtype):
    """The tiny checkpoint runs in either dtype; actions come out float32, finite and clipped."""
    full = obs(n=2, hw=64)["policy"]
    full.update(eef_quat=torch.zeros(2, 4), joint_pos=torch.zeros(2, 9), joint_vel=torch.zeros(2, 9))
    pol = VLAPolicy(tiny_checkpoint, None, num_envs=2, dtype=dtype, replan_every=4)
    assert next(pol.model.backbone.parameters()).dtype == dtype
    acts = torch.stack([pol({"policy": full}) for _ in range(5)])
    assert acts.dtype == torch.float32 and torch.isfinite(acts).all()
    assert float(acts.abs().max()) <= pol.action_clip and pol.num_model_calls == 2
