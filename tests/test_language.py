"""Language that matters (issue 19): Lift-Cube-Color, per-episode instructions from the env through recording,
the dataset and VLAPolicy, the image_and_text_tokens conditioning, and the instruction check of diagnose."""

from __future__ import annotations

import numpy as np
import pytest
import torch

torch.set_num_threads(1)

COLOR_INSTRUCTIONS = ["lift the red cube", "pick up the green cube", "raise the blue cube off the table"]


def _obs(batch: int, seed: int = 0, size: int = 112):
    rng = np.random.default_rng(seed)
    ctx = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    wrist = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    return ctx, wrist, rng.normal(size=(batch, 27)).astype(np.float32)


@pytest.fixture(scope="module")
def text_model():
    from vla.config import load_model_preset
    from vla.modeling import VLAModel

    torch.manual_seed(0)
    return VLAModel(load_model_preset("tiny", conditioning="image_and_text_tokens")).eval()


# ---------------------------------------------------------------------------------------------- model
def test_image_and_text_tokens_put_the_instruction_in_the_memory(text_model):
    from vla.config import load_model_preset
    from vla.modeling import VLAModel

    ctx, wrist, proprio = _obs(1)
    ctx, wrist, proprio = np.repeat(ctx, 2, 0), np.repeat(wrist, 2, 0), np.repeat(proprio, 2, 0)
    instr = ["lift the red cube", "lift the blue cube"]  # same scene, another colour
    with torch.no_grad():
        memory, mask = text_model.encode(torch.from_numpy(ctx), torch.from_numpy(wrist), instr)
    assert mask.sum(1).tolist()[0] > 32  # 16 image tokens per view + the instruction's tokens
    n = int(mask[0].sum())
    img = text_model.context_token_mask(mask)
    assert img.sum(1).tolist() == [16, 16] and img[:, :16].all()  # the context view: the first 16 tokens
    # the image tokens come before the instruction in the causal LM: identical; the text tokens differ
    torch.testing.assert_close(memory[0, :32], memory[1, :32])
    assert (memory[0, 32:n] - memory[1, 32:n]).abs().max() > 1e-3
    noise = torch.randn(1, 16, 7).expand(2, -1, -1).contiguous()
    with torch.no_grad():
        actions = text_model.predict_action(ctx, wrist, instr, proprio, noise=noise)
    assert (actions[0] - actions[1]).abs().max() > 1e-4  # the expert's output follows the instruction

    # image_tokens: the memory and the actions cannot depend on the instruction
    torch.manual_seed(0)
    blind = VLAModel(load_model_preset("tiny")).eval()
    with torch.no_grad():
        memory, mask = blind.encode(torch.from_numpy(ctx), torch.from_numpy(wrist), instr)
        actions = blind.predict_action(ctx, wrist, instr, proprio, noise=noise)
    assert mask.sum(1).tolist() == [32, 32]
    torch.testing.assert_close(memory[0], memory[1])
    torch.testing.assert_close(actions[0], actions[1])


def test_image_and_text_tokens_train(text_model):
    ctx, wrist, proprio = _obs(3, seed=1)
    batch = {"context_image": ctx, "wrist_image": wrist, "instruction": COLOR_INSTRUCTIONS, "proprio": proprio,
             "actions": np.zeros((3, 16, 7), np.float32), "action_mask": np.ones((3, 16), bool)}
    text_model.train()
    try:
        loss = text_model(batch)["loss"]
    finally:
        text_model.eval()
    assert torch.isfinite(loss)


# ---------------------------------------------------------------------------------------------- diagnose
def test_alternative_instructions_are_other_valid_ones():
    from vla.eval.conditioning import ALT_INSTRUCTION, alternative_instructions

    own = COLOR_INSTRUCTIONS * 4
    alt = alternative_instructions(own, seed=0)
    assert all(a != o and a in COLOR_INSTRUCTIONS for a, o in zip(alt, own))
    assert alt == alternative_instructions(own, seed=0)  # seeded
    assert len(set(alt)) > 1
    assert alternative_instructions(["lift the red cube"] * 3) == [ALT_INSTRUCTION] * 3  # one-instruction data


def test_conditioning_report_takes_one_instruction_per_sample(text_model):
    from vla.eval.conditioning import alternative_instructions, conditioning_report

    ctx, wrist, proprio = _obs(4, seed=2)
    instr = [COLOR_INSTRUCTIONS[i % 3] for i in range(4)]
    batch = {"context_image": ctx, "wrist_image": wrist, "instruction": instr, "proprio": proprio}
    report = conditioning_report(text_model, batch, num_steps=2,
                                 alt_instruction=alternative_instructions(instr, COLOR_INSTRUCTIONS))
    assert report["instruction_effect_ratio"] > 0.0
    with pytest.raises(ValueError, match="alt_instruction"):
        conditioning_report(text_model, batch, num_steps=2, alt_instruction=instr[:2])


# ---------------------------------------------------------------------------------------------- data
def test_dataset_yields_each_demos_instruction(tmp_path):
    import h5py

    from vla.data.dataset import DemoDataset
    from vla.data.key_mapping import KeyMapping
    from vla.data.synthetic import write_synthetic_demos

    path = write_synthetic_demos(tmp_path / "color.hdf5", num_demos=3, steps=12, seed=0)
    with h5py.File(path, "a") as f:
        for i, text in enumerate(COLOR_INSTRUCTIONS):
            f[f"data/demo_{i}"].attrs["instruction"] = text
    mapping = KeyMapping.load("isaaclab_lift_color")
    ds = DemoDataset([path], mapping, split="all", chunk=16)
    assert [d.instruction for d in ds.demos] == COLOR_INSTRUCTIONS
    for i, text in enumerate(COLOR_INSTRUCTIONS):
        assert {ds[int(j)]["instruction"] for j in ds.indices_of_demo(i)} == {text}


def test_trainer_instruction_check_swaps_in_the_datasets_other_instructions(tmp_path, monkeypatch):
    """The in-training conditioning report asks what diagnose_vla.py asks: each sample gets another of the
    dataset's instructions (not an instruction of no task), so its instruction_effect_ratio compares."""
    import json

    import h5py
    import vla.training.evaluation as evaluation
    from vla.data.synthetic import write_synthetic_demos
    from vla.training import load_train_config, train

    path = write_synthetic_demos(tmp_path / "color.hdf5", num_demos=6, steps=12, seed=0)
    with h5py.File(path, "a") as f:
        for i in range(6):
            f[f"data/demo_{i}"].attrs["instruction"] = COLOR_INSTRUCTIONS[i % 3]
    seen = []
    real = evaluation.conditioning_report

    def spy(model, batch, **kw):
        seen.append((list(batch["instruction"]), kw["alt_instruction"]))
        return real(model, batch, **kw)

    monkeypatch.setattr(evaluation, "conditioning_report", spy)
    over = {"max_steps": 2, "log_every": 1, "val_every": 2, "save_every": 0, "image_effect_samples": 4,
            "data.val_fraction": 0.5}
    items = [f"data.files={json.dumps([str(path)])}", f"output_dir={tmp_path / 'run'}"]
    items += [f"{k}={json.dumps(v)}" for k, v in over.items()]
    summary = train(load_train_config("lift_color_tiny_cpu", items), show_progress=False)
    assert seen, "no conditioning report ran"
    own, alt = seen[-1]
    assert isinstance(alt, list) and len(alt) == len(own)
    assert all(a != o and a in COLOR_INSTRUCTIONS for a, o in zip(alt, own))
    assert summary["instruction_effect_ratio"] > 0.0


# ---------------------------------------------------------------------------------------------- env side, no sim
def test_task_instructions_and_checkpoint_task_warning():
    from vla_isaac.envs import env_cfg_class, registered_tasks
    from vla_isaac.language import checkpoint_task_warning, env_instructions, task_instructions

    assert "Lift-Cube-Color" in registered_tasks()
    cfg = env_cfg_class("Lift-Cube-Color")()
    valid = task_instructions(cfg)
    assert len(valid) == len(cfg.instruction_templates) * 3 and "pick up the green cube" in valid
    lift_cfg = env_cfg_class("Lift-Cube")()
    assert task_instructions(lift_cfg)[0] == "lift the red cube"

    class FakeEnv:
        num_envs = 2

    env = FakeEnv()
    env.cfg = env_cfg_class("Stack-Cube")()
    assert env_instructions(env) == [env.cfg.instruction] * 2
    env.instructions = ["lift the blue cube", "lift the red cube"]
    assert env_instructions(env, [1]) == ["lift the red cube"]
    del env.instructions
    warning = checkpoint_task_warning({"instruction": "lift the red cube"}, env)
    assert warning and "lift the red cube" in warning  # a Lift-Cube checkpoint in the stack scene
    assert checkpoint_task_warning({"instruction": "lift the red cube"}, env, instruction="stack it") is None
    env.cfg = cfg
    assert checkpoint_task_warning({"instruction": "lift the red cube"}, env) is None


class _SpyChunks:
    """A ChunkSource that records the instructions it is asked with and returns zero chunks."""

    def __init__(self, mapping):
        from vla_isaac.policy import ChunkSource

        class Spy(ChunkSource):
            chunk, action_dim, image_size, instruction = 16, 7, (64, 64), "lift the red cube"
            key_mapping = mapping
            seen: list = []

            def __call__(self, inputs, noise):
                self.seen.append(list(inputs["instruction"]))
                return torch.zeros(noise.shape)

        self.source = Spy()


# ---------------------------------------------------------------------------------------------- sim
@pytest.mark.sim
def test_lift_color_env_expert_policy_instructions():
    """Lift-Cube-Color on MJWarp, 2 envs: per-env targets at reset, the expert lifts the named cube in every
    episode, and VLAPolicy asks with each env's own instruction (then the user's override)."""
    from vla.data.key_mapping import KeyMapping
    from vla_isaac.envs import make_env
    from vla_isaac.experts import ScriptedExpert
    from vla_isaac.language import env_instructions
    from vla_isaac.policy import VLAPolicy

    env = make_env("Lift-Cube-Color", num_envs=2, backend="mjwarp", image_size=(32, 32), seed=1)
    try:
        obs, _ = env.reset(seed=1)
        valid = set(__import__("vla_isaac.language", fromlist=["x"]).task_instructions(env.cfg))
        assert env.target_cube_index.shape == (2,) and set(env_instructions(env)) <= valid
        colors = [env.cfg.cube_colors[int(t)] for t in env.target_cube_index]
        assert all(c in text for c, text in zip(colors, env_instructions(env)))
        one_hot = obs["policy"]["target_cube"]
        assert one_hot.argmax(1).tolist() == env.target_cube_index.tolist()

        spy = _SpyChunks(KeyMapping.load("isaaclab_lift_color")).source
        policy = VLAPolicy(spy, env, replan_every=4)
        policy(obs)
        assert spy.seen[-1] == env_instructions(env)
        override = VLAPolicy(spy, env, replan_every=4, instruction="lift the green cube")
        override(obs)
        assert spy.seen[-1] == ["lift the green cube"] * 2

        # the expert lifts each env's named cube (a wrong cube ends an episode as `wrong_cube`)
        expert = ScriptedExpert(env)
        tm = env.termination_manager
        results, steps, targets = [], 0, env.target_cube_index.clone()
        while len(results) < 4 and steps < 600:
            obs, _, terminated, truncated, _ = env.step(expert(obs))
            steps += 1
            for i in (terminated | truncated).nonzero().flatten().tolist():
                results.append((int(targets[i]), bool(tm.get_term("success")[i]), bool(tm.get_term("wrong_cube")[i])))
            targets = env.target_cube_index.clone()
        assert len(results) >= 4 and all(s and not w for _, s, w in results), results
    finally:
        env.close()


@pytest.mark.sim
@pytest.mark.slow
def test_recorded_demos_hold_each_episodes_instruction(tmp_path, repo_root):
    """record_demos.py on Lift-Cube-Color: every demo's instruction attribute is its episode's (the one the
    env drew, recorded per step in obs/instruction_index), and the dataset gives it to the samples."""
    import subprocess
    import sys

    import h5py

    from vla.data.dataset import DemoDataset
    from vla.data.key_mapping import KeyMapping
    from vla_isaac.envs import env_cfg_class
    from vla_isaac.tasks.lift_color.mdp import all_instructions

    out = tmp_path / "color.hdf5"
    subprocess.run([sys.executable, str(repo_root / "scripts" / "record_demos.py"), "--task", "Lift-Cube-Color",
                    "--num_demos", "3", "--image_size", "32", "32", "--seed", "5", "--output", str(out)],
                   check=True, cwd=repo_root, capture_output=True, timeout=600)
    table = all_instructions(env_cfg_class("Lift-Cube-Color")())
    with h5py.File(out, "r") as f:
        demos = sorted(f["data"].keys())
        expected = [table[int(f[f"data/{d}/obs/instruction_index"][0, 0])] for d in demos]
        stored = [str(f[f"data/{d}"].attrs["instruction"]) for d in demos]
    assert stored == expected
    ds = DemoDataset([out], KeyMapping.load("isaaclab_lift_color"), split="all", chunk=16)
    assert sorted(d.instruction for d in ds.demos) == sorted(expected)


def test_keyword_swaps_split_colour_from_wording():
    from vla.eval.conditioning import keyword_swaps

    templates = ["lift the {c} cube", "pick up the {c} cube", "grasp the {c} cube and lift it"]
    pool = [t.format(c=c) for c in ("red", "green", "blue") for t in templates]
    own = ["lift the red cube", "pick up the blue cube", "grasp the green cube and lift it"]
    swaps, paraphrases = keyword_swaps(own, pool, seed=0)
    assert [s.replace("green", "X").replace("blue", "X").replace("red", "X") for s in swaps] == [
        o.replace("green", "X").replace("blue", "X").replace("red", "X") for o in own]
    assert all(s != o for s, o in zip(swaps, own))
    for o, p in zip(own, paraphrases):
        colour = next(c for c in ("red", "green", "blue") if c in o)
        assert p != o and colour in p and p in pool
    assert keyword_swaps(["stack it"], ["stack it", "lift the cube now"]) == (None, None)
