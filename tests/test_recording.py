"""Demo recording (scripts/record_demos.py, vla_isaac.recording): file layout, interrupts, append, replay.

The file-handler tests write synthetic episodes (no simulator, a few seconds). The sim tests run the real
scripts in subprocesses (Newton is one-env-per-process) on MuJoCo-C with 1 env and 64x64 cameras:
about 15-30 s each once Warp's kernel cache is warm.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from vla_isaac.recording import (
    INSTRUCTION_KEY,
    RecordingError,
    check_output_path,
    decode_text,
    demo_file_handler,
    encode_texts,
    read_dataset_info,
)

REPO = Path(__file__).resolve().parents[1]
IMAGE = 64
OBS_KEYS = {
    "eef_pos": (3,),
    "eef_quat": (4,),
    "gripper_pos": (2,),
    "joint_pos": (9,),
    "joint_vel": (9,),
    "actions": (7,),
    "table_cam": (IMAGE, IMAGE, 3),
    "wrist_cam": (IMAGE, IMAGE, 3),
}


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


def _episode(steps: int = 5, instruction: str | None = "lift the red cube"):
    """A synthetic EpisodeData shaped like the recorder's (lists of per-step tensors)."""
    from isaaclab.utils.datasets import EpisodeData

    episode = EpisodeData()
    for t in range(steps):
        episode.add("actions", torch.full((7,), float(t)))
        episode.add("obs/table_cam", torch.zeros(8, 8, 3, dtype=torch.uint8))
    episode.add("initial_state/articulation/robot/joint_position", torch.zeros(9))
    if instruction is not None:
        episode.add(INSTRUCTION_KEY, encode_texts([instruction])[0])
    episode.success = True
    episode.pre_export()
    return episode


def _write(path: Path, mode: str, episodes: int, env_name: str = "Lift-Cube"):
    handler = demo_file_handler(mode, {"task": env_name})()
    handler.create(str(path), env_name=env_name)
    for _ in range(episodes):
        handler.write_episode(_episode())
        handler.flush()
    handler.close()


def _script(name: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(REPO / "scripts" / name), *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=_env())


def _env(**extra) -> dict:
    return {**os.environ, "PYTHONUNBUFFERED": "1", **extra}


def _record(task: str, output: Path, num_demos: int, *extra: str) -> subprocess.CompletedProcess:
    proc = _script(
        "record_demos.py", "--task", task, "--num_demos", str(num_demos), "--output", str(output),
        "--image_size", str(IMAGE), "--backend", "mujoco_c", *extra,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _check_layout(path: Path, task: str, num_cubes: int) -> list[str]:
    """Assert the robomimic / Isaac Lab layout; returns the demo names."""
    from vla_isaac.envs import make_env_cfg
    from vla_isaac.experts import MAX_POS_STEP, MAX_ROT_STEP

    cfg = make_env_cfg(task, cameras=False)
    scale = float(cfg.actions.arm_action.scale)
    with h5py.File(path, "r") as f:
        data = f["data"]
        env_args = json.loads(data.attrs["env_args"])
        assert env_args["env_name"] == task
        assert env_args["env_kwargs"]["image_size"] == [IMAGE, IMAGE]
        assert data.attrs[INSTRUCTION_KEY] == cfg.instruction
        names = sorted(data.keys(), key=lambda n: int(n.split("_")[1]))
        assert names == [f"demo_{i}" for i in range(len(names))]
        total = 0
        for name in names:
            demo = data[name]
            n = int(demo.attrs["num_samples"])
            total += n
            assert n > 10 and bool(demo.attrs["success"])
            assert demo.attrs[INSTRUCTION_KEY] == cfg.instruction
            actions = demo["actions"][:]
            assert actions.shape == (n, 7) and actions.dtype == np.float32
            assert np.isfinite(actions).all()
            # the relative-IK action range the expert emits, and a binary gripper command
            assert np.abs(actions[:, :3]).max() <= MAX_POS_STEP / scale + 1e-6
            assert np.abs(actions[:, 3:6]).max() <= MAX_ROT_STEP / scale + 1e-6
            assert set(np.unique(actions[:, 6])) <= {-1.0, 1.0}
            obs = demo["obs"]
            for key, shape in {
                **OBS_KEYS, "cube_positions": (3 * num_cubes,), "cube_orientations": (4 * num_cubes,)
            }.items():  # fmt: skip
                assert obs[key].shape == (n, *shape), (name, key, obs[key].shape)
            for cam in ("table_cam", "wrist_cam"):
                images = obs[cam][:]
                assert images.dtype == np.uint8 and images.std() > 1.0  # rendered, not blank
            assert demo["processed_actions"].shape[0] == n
            robot = demo["states/articulation/robot"]
            assert robot["joint_position"].shape == (n, 9)
            assert demo["initial_state/articulation/robot/joint_position"].shape == (1, 9)
            for i in range(1, num_cubes + 1):
                assert demo[f"states/rigid_object/cube_{i}/root_pose"].shape == (n, 7)
                assert demo[f"initial_state/rigid_object/cube_{i}/root_pose"].shape == (1, 7)
        assert int(data.attrs["total"]) == total
    return names


# --------------------------------------------------------------------------------------------------
# file handler (no simulator)
# --------------------------------------------------------------------------------------------------


def test_dart_episode_stores_the_clean_label_as_actions(tmp_path):
    """An episode with the expert's clean actions (LabelActionRecorder) is written with those as `actions`
    and the executed (noisy) ones as `executed_actions`; without noise only `actions` is written."""
    from vla_isaac.recording import EXECUTED_ACTIONS_KEY, LABEL_ACTIONS_KEY

    noisy, clean = _episode(), _episode()
    for t in range(5):
        noisy.add(LABEL_ACTIONS_KEY, torch.full((7,), float(t) + 0.5))
        clean.add(LABEL_ACTIONS_KEY, torch.full((7,), float(t)))  # label == executed
    path = tmp_path / "dart.hdf5"
    handler = demo_file_handler("new", {"task": "Lift-Cube"})()
    handler.create(str(path), env_name="Lift-Cube")
    for ep in (noisy, clean):
        handler.write_episode(ep)
        handler.flush()
    handler.close()
    with h5py.File(path, "r") as f:
        d0, d1 = f["data/demo_0"], f["data/demo_1"]
        assert np.allclose(d0["actions"][:, 0], np.arange(5) + 0.5)
        assert np.allclose(d0[EXECUTED_ACTIONS_KEY][:, 0], np.arange(5))
        assert LABEL_ACTIONS_KEY not in d0 and int(d0.attrs["num_samples"]) == 5
        assert np.allclose(d1["actions"][:, 0], np.arange(5)) and EXECUTED_ACTIONS_KEY not in d1


def test_instruction_text_round_trip():
    rows = encode_texts(["lift the red cube", "", "empilez le cube rouge"])
    assert rows.dtype == torch.uint8 and rows.shape[0] == 3
    assert [decode_text(r) for r in rows] == ["lift the red cube", "", "empilez le cube rouge"]


def test_new_file_appears_only_with_its_first_demo(tmp_path):
    out = tmp_path / "demos.hdf5"
    handler = demo_file_handler("new")()
    handler.create(str(out), env_name="Lift-Cube")
    assert not out.exists() and len(list(tmp_path.iterdir())) == 1  # the hidden temp file
    handler.write_episode(_episode())
    handler.flush()
    assert out.exists() and list(tmp_path.iterdir()) == [out]
    handler.write_episode(_episode(steps=3))
    handler.flush()
    with h5py.File(out, "r") as f:  # readable while the recorder still has it open
        assert sorted(f["data"]) == ["demo_0", "demo_1"]
        assert f["data"].attrs[INSTRUCTION_KEY] == "lift the red cube"
        assert f["data/demo_1"].attrs[INSTRUCTION_KEY] == "lift the red cube"
        assert INSTRUCTION_KEY not in f["data/demo_1"]  # an attribute, not a dataset
        assert int(f["data"].attrs["total"]) == 8
    handler.close()

    # a run that records nothing leaves nothing behind
    empty = tmp_path / "empty.hdf5"
    handler = demo_file_handler("new")()
    handler.create(str(empty))
    handler.close()
    assert list(tmp_path.iterdir()) == [out]


def test_existing_files_need_append_or_overwrite(tmp_path):
    out = tmp_path / "demos.hdf5"
    _write(out, "new", 2)
    with pytest.raises(RecordingError, match="--append.*--overwrite"):
        check_output_path(out, "new")
    with pytest.raises(RecordingError, match="holds demos of 'Lift-Cube', not 'Stack-Cube'"):
        check_output_path(out, "append", "Stack-Cube")
    not_hdf5 = tmp_path / "notes.hdf5"
    not_hdf5.write_text("hello")
    with pytest.raises(RecordingError, match="cannot be opened as HDF5"):
        check_output_path(not_hdf5, "append")
    with pytest.raises(RecordingError, match="is a directory"):
        check_output_path(tmp_path, "new")
    with pytest.raises(RecordingError, match=r"end in \.hdf5"):
        check_output_path(tmp_path / "demos", "new")

    # append continues after the highest demo index, even across a gap
    with h5py.File(out, "a") as f:
        f.move("data/demo_1", "data/demo_7")
    _write(out, "append", 2)
    info = read_dataset_info(out)
    assert info.demos == ["demo_0", "demo_7", "demo_8", "demo_9"]
    assert info.total_samples == 20

    # overwrite keeps the old file until the new one holds a demo
    handler = demo_file_handler("overwrite")()
    handler.create(str(out), env_name="Lift-Cube")
    assert read_dataset_info(out).demos == ["demo_0", "demo_7", "demo_8", "demo_9"]
    handler.write_episode(_episode())
    handler.flush()
    handler.close()
    assert read_dataset_info(out).demos == ["demo_0"]


def test_failed_write_leaves_no_partial_demo(tmp_path):
    out = tmp_path / "demos.hdf5"
    handler = demo_file_handler("new")()
    handler.create(str(out))
    handler.write_episode(_episode())
    handler.flush()
    broken = _episode()
    broken.data["obs"]["broken"] = object()  # not a tensor: the write fails half-way through the group
    with pytest.raises(AttributeError):
        handler.write_episode(broken)
    handler.write_episode(_episode(steps=2))
    handler.flush()
    handler.close()
    with h5py.File(out, "r") as f:
        assert sorted(f["data"]) == ["demo_0", "demo_1"]
        assert f["data/demo_1/actions"].shape == (2, 7)
        assert int(f["data"].attrs["total"]) == 7


def test_record_script_refuses_an_existing_file_before_building_the_env(tmp_path):
    existing = tmp_path / "demos.hdf5"
    _write(existing, "new", 1)
    before = existing.read_bytes()
    proc = _script("record_demos.py", "--task", "Lift-Cube", "--output", str(existing), timeout=180)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ") and "--overwrite" in proc.stderr
    assert "Completed setting up the environment" not in proc.stdout
    assert existing.read_bytes() == before


def test_keyboard_expert_needs_a_display(monkeypatch):
    from vla_isaac.recording import check_keyboard_available

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(RecordingError, match="needs a display"):
        check_keyboard_available()
    monkeypatch.setenv("DISPLAY", ":0")
    if importlib.util.find_spec("carb") is None:  # this machine: no Isaac Sim
        with pytest.raises(RecordingError, match="Isaac Sim is not installed"):
            check_keyboard_available()


# --------------------------------------------------------------------------------------------------
# real recordings (subprocesses, MuJoCo-C, 1 env, 64x64 cameras)
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lift_demos(tmp_path_factory):
    """Two Lift-Cube demos recorded by the script (shared by the layout and replay tests)."""
    out = tmp_path_factory.mktemp("lift") / "lift.hdf5"
    proc = _record("Lift-Cube", out, 2)
    assert "recorded 2 demos" in proc.stdout
    return out


@pytest.mark.sim
def test_record_lift_demos(lift_demos):
    assert _check_layout(lift_demos, "Lift-Cube", num_cubes=1) == ["demo_0", "demo_1"]
    assert list(lift_demos.parent.iterdir()) == [lift_demos]  # no temp file left


@pytest.mark.sim
def test_replay_of_recorded_lift_demos_succeeds(lift_demos):
    proc = _script("replay_demos.py", "--dataset", str(lift_demos), "--strict")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "replayed 2 demos: 2 reproduce success" in proc.stdout


@pytest.mark.sim
def test_dart_recording_labels_are_the_clean_expert_actions(tmp_path):
    """--noise perturbs the executed command only: `actions` (the label) stays within the expert's clamp
    and binary gripper, `executed_actions` holds the noisy command, and replaying that reproduces the demo.
    With --miss_prob 1 the demo misses its first grasp, grasps again, and `label_valid` marks the miss."""
    out = tmp_path / "dart.hdf5"
    _record("Lift-Cube", out, 1, "--noise", "0.03", "--seed", "3", "--miss_prob", "1")
    assert _check_layout(out, "Lift-Cube", num_cubes=1) == ["demo_0"]  # label range checks included
    with h5py.File(out, "r") as f:
        demo = f["data/demo_0"]
        label, executed = demo["actions"][:], demo["executed_actions"][:]
        assert executed.shape == label.shape
        assert np.abs(executed[:, :6] - label[:, :6]).mean() > 0.01  # noise on the arm ...
        assert np.array_equal(executed[:, 6], label[:, 6])  # ... not on the gripper
        valid = demo["label_valid"][:]
        assert valid.shape == (label.shape[0],) and 0 < (valid == 0).sum() < len(valid)
        closes = np.nonzero((label[1:, 6] < 0) & (label[:-1, 6] > 0))[0] + 1
        # the miss (masked), then the grasp that lifts; with DART noise a re-grasp can slip and be redone (kept)
        assert len(closes) >= 2 and valid[closes[0]] == 0 and (valid[closes[1:]] == 1).all(), (closes, valid[closes])
    proc = _script("record_demos.py", "--task", "Stack-Cube", "--output", str(tmp_path / "s.hdf5"),
                   "--miss_prob", "1.5", timeout=180)
    assert proc.returncode == 2 and "--miss_prob" in proc.stderr.strip().splitlines()[-1], proc.stderr[-2000:]
    proc = _script("replay_demos.py", "--dataset", str(out), "--strict")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.mark.sim
def test_record_stack_demo(tmp_path):
    out = tmp_path / "stack.hdf5"
    _record("Stack-Cube", out, 1)
    assert _check_layout(out, "Stack-Cube", num_cubes=3) == ["demo_0"]


@pytest.mark.sim
def test_interrupted_recording_keeps_completed_demos(tmp_path):
    out = tmp_path / "lift.hdf5"
    cmd = [sys.executable, str(REPO / "scripts/record_demos.py"), "--task", "Lift-Cube", "--num_demos", "50",
           "--output", str(out), "--image_size", str(IMAGE), "--backend", "mujoco_c"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env())
    try:
        deadline = time.monotonic() + 240
        while not out.exists():  # the output path appears once the first demo is flushed
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            assert time.monotonic() < deadline, "no demo written within 240 s"
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        log, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, log[-3000:]
    assert "interrupted: recorded" in log
    with h5py.File(out, "r") as f:
        demos = sorted(f["data"])
        assert 1 <= len(demos) < 50
        for name in demos:
            demo = f["data"][name]
            n = int(demo.attrs["num_samples"])
            assert demo["actions"].shape == (n, 7) and demo["obs/table_cam"].shape[0] == n
            assert bool(demo.attrs["success"])
    assert list(tmp_path.iterdir()) == [out]
