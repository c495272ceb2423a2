"""The user-facing entry points of the README: play_vla.py and make demo's pipeline (scripts/demo.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.sim, pytest.mark.slow]


def test_play_without_checkpoint_explains_how_to_get_one(repo_root):
    r = subprocess.run([sys.executable, "scripts/play_vla.py", "--task", "Stack-Cube"], cwd=repo_root,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    assert "make demo" in r.stderr and "scripts/train.py" in r.stderr


def test_play_runs_a_checkpoint_and_writes_a_video(repo_root, tmp_path, tiny_checkpoint):
    cmd = [sys.executable, "scripts/play_vla.py", "--task", "Lift-Cube", "--checkpoint", str(tiny_checkpoint),
           "--num_episodes", "1", "--episode_length_s", "1.0", "--image_size", "64", "64", "--video",
           "--output", str(tmp_path)]
    r = subprocess.run(cmd, cwd=repo_root, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "episode 0: env 0 time_out after" in r.stdout
    assert "success 0/1" in r.stdout
    videos = list(tmp_path.glob("Lift-Cube-*.mp4"))
    assert len(videos) == 1 and videos[0].stat().st_size > 1000


@pytest.mark.timeout(2400)  # eight stages in subprocesses: ~4 min alone, 15+ on a shared 2-core machine
def test_demo_pipeline_end_to_end(repo_root, tmp_path):
    """A small `make demo`: record -> train -> evaluate -> report, then a re-run reuses the stages."""
    out, cache = tmp_path / "report", tmp_path / "cache"
    cmd = [sys.executable, "scripts/demo.py", "--num_demos", "3", "--train_steps", "40", "--eval_episodes", "2",
           "--eval_episode_length_s", "4.0", "--video_episodes", "1", "--untrained_diagnosis_samples", "4", "--output", str(out), "--cache", str(cache)]
    r = subprocess.run(cmd, cwd=repo_root, capture_output=True, text=True, timeout=2000)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["evaluation"]) == {"scripted expert", "VLA tiny (trained)", "VLA tiny (untrained)"}
    assert summary["evaluation"]["scripted expert"]["num_success"] >= 1
    assert summary["training"]["steps"] == 40 and "image_effect_ratio" in summary["training"]
    for name in ("VLA tiny (trained)", "VLA tiny (untrained)"):  # the conditioning ratios beside the success
        d = summary["diagnosis"][name]
        assert d["image_effect_ratio"] >= 0 and d["wrist_effect_ratio"] >= 0 and d["blank_image_val_action_mse"] > 0
    # the trained policy is diagnosed on every held-out sample, its untrained twin (a reference row) on a sample
    trained_n, twin_n = (summary["diagnosis"][k]["num_samples"] for k in ("VLA tiny (trained)", "VLA tiny (untrained)"))
    assert twin_n == 4 and trained_n > 4
    assert "image_effect_ratio | wrist_effect_ratio" in (out / "success_table.md").read_text()
    for f in ("success_table.md", "loss_curve.png"):
        assert (out / f).stat().st_size > 100, f
    # a 40-step policy in 4 s episodes fails: the failure video, 256 px viewer beside the policy's views
    assert summary["videos"].get("failure") == "policy_failure.mp4"
    import imageio.v2 as imageio

    frame = imageio.get_reader(out / "policy_failure.mp4").get_data(0)
    assert frame.shape[0] >= 256 and frame.shape[1] >= 256 + 128
    # two recording processes (one per core), each its own file and seed, both trained on
    assert len(summary["demos"]) == 2 and all(Path(f).exists() for f in summary["demos"])
    assert summary["training"]["train_demos"] + summary["training"]["val_demos"] == 3
    assert list((out / "snapshots").glob("*.png"))
    assert "report:" in r.stdout and "| scripted expert |" in r.stdout
    # the untrained twin, built before training to be evaluated beside it, is the trained policy's floor: the
    # same model config, key mapping, instruction and normalisation stats
    from vla.checkpoint import NORM_FILE, read_checkpoint_config

    trained, twin = Path(summary["checkpoint"]), next(cache.glob("untrained-*/final"))
    assert (twin / NORM_FILE).read_bytes() == (trained / NORM_FILE).read_bytes()
    twin_cfg, trained_cfg = read_checkpoint_config(twin), read_checkpoint_config(trained)
    assert all(twin_cfg[k] == trained_cfg[k] for k in ("model", "key_mapping", "instruction"))

    out2 = tmp_path / "report2"
    rerun = [a for a in cmd[:-4]]  # the cache key holds record and train settings only: a lighter evaluation
    rerun[rerun.index("--eval_episodes") + 1], rerun[rerun.index("--video_episodes") + 1] = "1", "0"
    r2 = subprocess.run(rerun + ["--output", str(out2), "--cache", str(cache)], cwd=repo_root,
                        capture_output=True, text=True, timeout=1200)
    assert r2.returncode == 0, (r2.stdout + r2.stderr)[-3000:]
    assert "[record] reusing" in r2.stdout + r2.stderr and "[train] reusing" in r2.stdout + r2.stderr
