"""LeRobot interop (optional extra ``.[lerobot]``): HDF5 -> LeRobotDataset v3.0 export and its round trip,
the export CLI's refusals, and a LeRobot ACT policy driving an Isaac Lab task through the episode runner.

Skipped where LeRobot is not installed (the core never needs it).
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

pytest.importorskip("lerobot")
pytest.importorskip("lerobot.datasets.lerobot_dataset")

from _data_fixtures import cosmos_file, isaaclab_file  # noqa: E402

from vla.data.hdf5 import DatasetError  # noqa: E402
from vla.data.key_mapping import KeyMapping  # noqa: E402
from vla.data.lerobot_export import (  # noqa: E402
    STATE_KEY,
    export_lerobot,
    load_lerobot_dataset,
    proprio_from_state_names,
    state_names,
)

IMAGE = (32, 32)
# AV1 at LeRobot's default quality on noisy 32 px synthetic frames: measured mean |error| ~4 of 255
MAX_MEAN_ABS_ERR = 10.0


def _source(path: Path, num_demos=3, steps=12, failed=("demo_1",), instruction="lift the red cube") -> Path:
    isaaclab_file(path, num_demos=num_demos, steps=steps, image_size=IMAGE, seed=3, instruction=instruction)
    with h5py.File(path, "r+") as f:
        for name in f["data"]:
            f["data"][name].attrs["success"] = name not in failed
        valid = np.ones(f["data/demo_2/actions"].shape[0], dtype=np.uint8)  # a staged grasp miss on steps 3-5
        valid[3:6] = 0
        f["data/demo_2"].create_dataset("label_valid", data=valid)
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    d = tmp_path_factory.mktemp("lerobot")
    src = _source(d / "lift.hdf5")
    summary = export_lerobot(src, "isaaclab_lift", d / "ds", fps=20, progress=False)
    return src, d / "ds", summary


def test_round_trip_every_frame(exported):
    src, root, summary = exported
    km = KeyMapping.load("isaaclab_lift")
    ds = load_lerobot_dataset(root)
    info = json.loads((root / "meta" / "info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == 20
    assert info["features"]["observation.images.table_cam"]["dtype"] == "video"
    assert info["features"]["observation.images.wrist_cam"]["dtype"] == "video"
    assert info["features"][STATE_KEY]["names"] == state_names(km)
    # the unsuccessful demo is left out
    assert summary.episodes == 2 and summary.skipped_failed == 1 and ds.meta.total_episodes == 2
    with h5py.File(src) as f:
        demos = [f["data"][n] for n in ("demo_0", "demo_2")]
        assert len(ds) == summary.frames == sum(g["actions"].shape[0] for g in demos)
        i = 0
        for ep, g in enumerate(demos):
            state = np.concatenate([g[f"obs/{k}"][()] for k in km.proprio_keys], axis=1).astype(np.float32)
            for t in range(g["actions"].shape[0]):
                s = ds[i]
                assert int(s["episode_index"]) == ep and int(s["frame_index"]) == t
                np.testing.assert_array_equal(s[STATE_KEY].numpy(), state[t])
                np.testing.assert_array_equal(s["action"].numpy(), g["actions"][t].astype(np.float32))
                # label validity travels as a feature (all 1 for the demo without a label_valid dataset)
                assert float(s["label_valid"]) == (float(g["label_valid"][t]) if "label_valid" in g else 1.0)
                assert s["task"] == "lift the red cube"
                for view in ("table_cam", "wrist_cam"):
                    got = s[f"observation.images.{view}"].permute(1, 2, 0).numpy() * 255.0
                    err = np.abs(got - g[f"obs/{view}"][t].astype(np.float32)).mean()
                    assert err < MAX_MEAN_ABS_ERR, (ep, t, view, err)
                i += 1


def test_state_names_map_back_to_the_proprio_keys():
    km = KeyMapping.load("isaaclab_lift")
    assert proprio_from_state_names(state_names(km)) == list(km.proprio)
    with pytest.raises(ValueError, match="<obs key>.<i>"):
        proprio_from_state_names(["joint_pos"])


def test_existing_output_is_refused_and_never_half_overwritten(tmp_path, exported):
    src, root, _ = exported
    out = tmp_path / "ds"
    out.mkdir()
    (out / "keep.txt").write_text("old")
    with pytest.raises(FileExistsError, match="--overwrite"):
        export_lerobot(src, "isaaclab_lift", out, progress=False)
    # an export that fails half-way (the 2nd demo lacks a key) leaves the old output as it was, and no temp folder
    bad = _source(tmp_path / "bad.hdf5", failed=())
    with h5py.File(bad, "r+") as f:
        del f["data/demo_1/obs/joint_vel"]
    with pytest.raises(DatasetError, match=r"demo_1/obs/joint_vel: missing"):
        export_lerobot(bad, "isaaclab_lift", out, overwrite=True, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.hdf5", "ds"]
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    # a complete one replaces it
    s = export_lerobot(src, "isaaclab_lift", out, overwrite=True, include_failed=True, progress=False)
    assert s.episodes == 3 and not (out / "keep.txt").exists()
    assert json.loads((out / "meta" / "info.json").read_text())["total_episodes"] == 3


def test_cli_exports_cosmos_layout_and_refuses_existing(repo_root, tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("export_lerobot", repo_root / "scripts" / "export_lerobot.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    src = cosmos_file(tmp_path / "cosmos.hdf5", num_demos=1, steps=4)
    out = tmp_path / "cosmos_ds"
    assert cli.main([str(src), "--key_mapping", "nvidia_cosmos", "--output", str(out), "--no_progress"]) == 0
    assert "exported 1 episodes, 4 frames" in capsys.readouterr().out
    info = json.loads((out / "meta" / "info.json").read_text())
    assert info["features"]["observation.images.table_cam"]["shape"] == [200, 200, 3]
    assert cli.main([str(src), "--key_mapping", "nvidia_cosmos", "--output", str(out)]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- policy
def _tiny_act(root: Path, out: Path, steps: int = 3) -> Path:
    """A tiny ACT (ResNet-18 from scratch, small transformer) trained a few steps on ``root``, saved with
    its pre/post processors the way lerobot-train saves them."""
    import torch
    from lerobot.configs.types import FeatureType
    from lerobot.datasets.lerobot_dataset import LeRobotDataset
    from lerobot.policies.act.configuration_act import ACTConfig
    from lerobot.policies.act.modeling_act import ACTPolicy
    from lerobot.policies.factory import make_pre_post_processors
    from lerobot.utils.feature_utils import dataset_to_policy_features

    from vla.data.lerobot_export import default_video_backend

    torch.manual_seed(0)
    meta = load_lerobot_dataset(root).meta
    feats = dataset_to_policy_features(meta.features)
    outputs = {k: f for k, f in feats.items() if f.type is FeatureType.ACTION}
    inputs = {k: f for k, f in feats.items() if k not in outputs}
    cfg = ACTConfig(input_features=inputs, output_features=outputs, chunk_size=4, n_action_steps=2, dim_model=32,
                    n_heads=2, dim_feedforward=64, n_encoder_layers=1, n_decoder_layers=1, n_vae_encoder_layers=1,
                    latent_dim=8, pretrained_backbone_weights=None, device="cpu")
    policy = ACTPolicy(cfg)
    pre, post = make_pre_post_processors(cfg, dataset_stats=meta.stats)
    ds = LeRobotDataset(meta.repo_id, root=root, video_backend=default_video_backend(),
                        delta_timestamps={"action": [i / meta.fps for i in range(cfg.chunk_size)]})
    loader = torch.utils.data.DataLoader(ds, batch_size=4, shuffle=True)
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-4)
    policy.train()
    for _, batch in zip(range(steps), loader):
        loss, _ = policy.forward(pre(batch))
        loss.backward()
        opt.step()
        opt.zero_grad()
    policy.save_pretrained(out)
    pre.save_pretrained(out)
    post.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def act_checkpoint(exported, tmp_path_factory):
    _, root, _ = exported
    return _tiny_act(root, tmp_path_factory.mktemp("act") / "pretrained_model")


def _obs(n=1, size=IMAGE, seed=0):
    import torch

    g = torch.Generator().manual_seed(seed)
    km = KeyMapping.load("isaaclab_lift")
    obs = {k: torch.randn(n, d, generator=g) for k, d in km.proprio}
    for v in ("table_cam", "wrist_cam"):
        obs[v] = torch.randint(0, 256, (n, *size, 3), dtype=torch.uint8, generator=g)
    return {"policy": obs}


def test_lerobot_policy_maps_observations_and_follows_act_queue(exported, act_checkpoint):
    import torch

    from vla_isaac.evaluation import make_controller
    from vla_isaac.lerobot_policy import LeRobotCheckpointError, LeRobotPolicy

    _, root, _ = exported
    pol = LeRobotPolicy(act_checkpoint, dataset_root=root)
    assert pol.image_keys == {"observation.images.table_cam": "table_cam", "observation.images.wrist_cam": "wrist_cam"}
    assert pol.proprio == list(KeyMapping.load("isaaclab_lift").proprio)
    assert pol.instruction == "lift the red cube" and pol.image_every == 2  # ACT's n_action_steps
    # the batch is exactly LeRobot's layout: float CHW images in [0, 1] (resized from 64 px), state in mapping order
    obs = _obs(size=(64, 64))
    b = pol.batch(obs)
    assert b["observation.images.table_cam"].shape == (1, 3, *IMAGE)
    assert 0.0 <= float(b["observation.images.wrist_cam"].min()) and float(b["observation.images.wrist_cam"].max()) <= 1.0
    want = torch.cat([obs["policy"][k] for k, _ in pol.proprio], dim=-1)
    assert torch.equal(b[STATE_KEY], want) and b["task"] == ["lift the red cube"]
    # a chunk of 2 executed actions per model call; reset starts a new chunk
    acts = [pol(_obs(seed=s)) for s in range(5)]
    assert all(a.shape == (1, 7) and torch.isfinite(a).all() and a.abs().max() <= 1.0 for a in acts)
    assert pol.num_model_calls == 3
    pol.reset()
    pol(_obs())
    assert pol.num_model_calls == 4
    # the same policy through the runner's factory
    ctrl = make_controller("lerobot", None, checkpoint=act_checkpoint, dataset_root=root)
    assert ctrl.name == "lerobot" and ctrl.image_every == 2 and ctrl.act(_obs()).shape == (1, 7)
    with pytest.raises(LeRobotCheckpointError, match="train_config.json"):
        LeRobotPolicy(act_checkpoint)  # no dataset named anywhere
    with pytest.raises(LeRobotCheckpointError, match="no LeRobot checkpoint"):
        LeRobotPolicy(root)


@pytest.mark.sim
@pytest.mark.slow
def test_act_drives_lift_cube_through_the_episode_runner(exported, act_checkpoint):
    """A real 1-env Lift-Cube: the LeRobot policy's actions go through run_episodes (a couple of steps)."""
    from vla_isaac.envs import make_env
    from vla_isaac.evaluation import make_controller, run_episodes

    _, root, _ = exported
    env = make_env("Lift-Cube", num_envs=1, image_size=IMAGE, seed=0, episode_length_s=0.3)  # 6 steps
    try:
        ctrl = make_controller("lerobot", env, checkpoint=act_checkpoint, dataset_root=root)
        res = run_episodes(env, ctrl, 1, progress=False, seed=0)
    finally:
        env.close()
    assert len(res.episodes) == 1 and res.episodes[0].length == 6 and res.episodes[0].outcome == "time_out"
    assert ctrl.act.num_model_calls == 3  # 6 steps / n_action_steps 2


@pytest.mark.sim
@pytest.mark.slow
def test_eval_vla_cli_runs_a_lerobot_checkpoint(repo_root, tmp_path, exported, act_checkpoint):
    """scripts/eval_vla.py --policy lerobot: the dataset is found through train_config.json (as lerobot-train
    writes it), episodes and summary as for the VLA."""
    import shutil
    import subprocess
    import sys

    _, root, _ = exported
    ckpt = tmp_path / "run" / "checkpoints" / "last" / "pretrained_model"
    shutil.copytree(act_checkpoint, ckpt)
    (ckpt / "train_config.json").write_text(json.dumps({"dataset": {"repo_id": "local/ds", "root": str(root)}}))
    out = tmp_path / "eval"
    cmd = [sys.executable, "scripts/eval_vla.py", "--task", "Lift-Cube", "--policy", "lerobot", "--checkpoint",
           str(tmp_path / "run"), "--num_episodes", "1", "--image_size", "64", "64", "--episode_length_s", "0.3",
           "--videos", "0", "--no_progress", "--output", str(out)]
    r = subprocess.run(cmd, cwd=repo_root, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["policy"] == "lerobot" and summary["num_episodes"] == 1 and summary["mean_episode_length"] == 6
    assert "Lift-Cube lerobot: success 0/1" in r.stdout
    r = subprocess.run([*cmd[:6], "--num_envs", "2", *cmd[6:]], cwd=repo_root, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 2 and "--num_envs 1" in r.stderr
