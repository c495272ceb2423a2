"""Demo data: key mappings, preprocessing, the HDF5 dataset, normalisation stats, verification, scripts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from _data_fixtures import BAD_CASES, broken_file, cosmos_file, isaaclab_file
from vla.data import DemoDataset, KeyMapping, KeyMappingError, build_proprio, collate, resize_images, verify_files
from vla.data import stats as stats_mod
from vla.data.stats import compute_stats_dict, stats_cache_path

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable


@pytest.fixture(scope="module")
def lift_file(tmp_path_factory):
    return isaaclab_file(
        tmp_path_factory.mktemp("data") / "lift.hdf5", num_demos=6, steps=20, instruction="lift the red cube"
    )


# ---------------------------------------------------------------------- key mappings / preprocessing
@pytest.mark.parametrize("name", ["isaaclab_lift", "isaaclab_stack", "nvidia_cosmos"])
def test_key_mappings_give_the_27_dim_proprio(name):
    km = KeyMapping.load(name)
    assert km.proprio_keys == ["eef_pos", "eef_quat", "gripper_pos", "joint_pos", "joint_vel"]
    assert km.proprio_dim == 27 and km.action_dim == 7
    assert (km.context_image, km.wrist_image) == ("table_cam", "wrist_cam")
    assert KeyMapping.from_dict(km.to_dict()) == km  # round trip (what checkpoints store)


def test_build_proprio_order_types_and_errors():
    km = KeyMapping.load("isaaclab_stack")
    obs = {k: np.full((2, d), i, np.float32) for i, (k, d) in enumerate(km.proprio)}
    p = build_proprio(obs, km)
    assert isinstance(p, np.ndarray) and p.shape == (2, 27) and p.dtype == np.float32
    assert p[0].tolist() == [0] * 3 + [1] * 4 + [2] * 2 + [3] * 9 + [4] * 9
    pt = build_proprio({k: torch.as_tensor(v) for k, v in obs.items()}, km)
    assert torch.is_tensor(pt) and torch.equal(pt, torch.from_numpy(p))
    obs["gripper_pos"] = np.zeros((2, 3), np.float32)
    with pytest.raises(KeyMappingError, match=r"'gripper_pos' has shape \(2, 3\).*expects \(B, 2\)"):
        build_proprio(obs, km)
    del obs["gripper_pos"]
    with pytest.raises(KeyMappingError, match="lacks 'gripper_pos'"):
        build_proprio(obs, km)


def test_key_mapping_errors_name_the_fix(tmp_path):
    with pytest.raises(KeyMappingError, match="not found; use one of .*isaaclab_stack"):
        KeyMapping.load("no_such_mapping")
    bad = tmp_path / "m.json"
    bad.write_text(json.dumps({"context_image": "a", "wrist_image": "b", "proprio": [["x", 3]], "proprioo": 1}))
    with pytest.raises(KeyMappingError, match=r"unknown field\(s\) \['proprioo'\]"):
        KeyMapping.load(bad)


def test_resize_is_deterministic_and_identical_for_numpy_and_torch():
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (3, 200, 200, 3), dtype=np.uint8)
    a = resize_images(imgs, (112, 112))
    b = resize_images(torch.from_numpy(imgs), (112, 112))
    assert a.dtype == np.uint8 and a.shape == (3, 112, 112, 3)
    assert torch.is_tensor(b) and np.array_equal(a, b.numpy())
    assert np.array_equal(resize_images(imgs[0], (112, 112)), a[0])  # single frame == batched frame
    assert resize_images(a, (112, 112)) is a  # same size: untouched
    flat = np.full((1, 64, 64, 3), 77, np.uint8)
    assert (resize_images(flat, (32, 48)) == 77).all()  # rounding keeps constants exact


# ---------------------------------------------------------------------- dataset
def test_sample_shapes_dtypes_and_instruction(lift_file):
    ds = DemoDataset(lift_file, "isaaclab_lift", split="all", image_size=(112, 112))
    s = ds[5]
    assert s["context_image"].shape == s["wrist_image"].shape == (112, 112, 3)
    assert s["context_image"].dtype == np.uint8
    assert s["proprio"].shape == (27,) and s["proprio"].dtype == np.float32
    assert s["actions"].shape == (16, 7) and s["action_mask"].shape == (16,)
    assert s["instruction"] == "lift the red cube"  # from the demo attribute, not the mapping default
    with h5py.File(lift_file) as f:
        np.testing.assert_array_equal(s["proprio"][:3], f["data/demo_0/obs/eef_pos"][5])
        np.testing.assert_array_equal(s["actions"][:4], f["data/demo_0/actions"][5:9])
    b = collate([ds[i] for i in range(4)])
    assert b["context_image"].shape == (4, 112, 112, 3) and b["context_image"].dtype == torch.uint8
    assert b["actions"].shape == (4, 16, 7) and b["action_mask"].dtype == torch.bool
    assert b["instruction"] == ["lift the red cube"] * 4


def test_default_instruction_when_the_file_has_none(tmp_path):
    f = isaaclab_file(tmp_path / "x.hdf5", num_demos=2, steps=8)
    ds = DemoDataset(f, "isaaclab_stack", split="all")
    assert ds[0]["instruction"] == KeyMapping.load("isaaclab_stack").instruction


def test_chunk_is_padded_and_masked_at_episode_end(lift_file):
    ds = DemoDataset(lift_file, "isaaclab_lift", split="all", image_size=None)
    demo = ds.demos[0]
    T = demo.length
    idx = ds.indices_of_demo(0)
    assert len(idx) == T
    with h5py.File(lift_file) as f:
        acts = f[f"data/{demo.name}/actions"][()]
    last = ds[int(idx[-1])]
    assert last["action_mask"].tolist() == [True] + [False] * 15
    np.testing.assert_array_equal(last["actions"], np.repeat(acts[-1:], 16, 0))  # padded with the last action
    near = ds[int(idx[T - 5])]
    assert near["action_mask"].sum() == 5 and near["action_mask"][:5].all()
    np.testing.assert_array_equal(near["actions"][:5], acts[T - 5 :])
    first = ds[int(idx[0])]
    assert first["action_mask"].all()
    np.testing.assert_array_equal(first["actions"], acts[:16])
    assert ds[int(idx[0])]["context_image"].shape == (64, 64, 3)  # image_size=None keeps the recorded size


def test_label_valid_masks_a_staged_miss_out_of_the_chunks(tmp_path):
    """Steps a demo's `label_valid` marks 0 (a staged grasp miss) are masked in every chunk that covers them;
    a `label_valid` of the wrong length is one clear error naming the demo and the fix."""
    path = isaaclab_file(tmp_path / "miss.hdf5", num_demos=2, steps=20)
    with h5py.File(path, "a") as f:
        g = f["data/demo_0"]
        valid = np.ones(g["actions"].shape[0], dtype=np.uint8)
        valid[5:9] = 0
        g.create_dataset("label_valid", data=valid)
    ds = DemoDataset(path, "isaaclab_lift", split="all", image_size=None)
    idx = ds.indices_of_demo(0)
    assert ds[int(idx[0])]["action_mask"].tolist() == [True] * 5 + [False] * 4 + [True] * 7
    assert ds[int(idx[6])]["action_mask"].tolist()[:4] == [False, False, False, True]
    assert ds[int(ds.indices_of_demo(1)[0])]["action_mask"].all()  # a demo without label_valid: all valid
    ds.close()
    with h5py.File(path, "a") as f:
        del f["data/demo_0/label_valid"]
        f["data/demo_0"].create_dataset("label_valid", data=np.ones(3, dtype=np.uint8))
    with pytest.raises(Exception, match=r"demo_0/label_valid has 3 steps.*delete its label_valid"):
        DemoDataset(path, "isaaclab_lift", split="all")


def test_split_is_by_demo_without_overlap(lift_file, tmp_path):
    other = isaaclab_file(tmp_path / "b.hdf5", num_demos=4, steps=10, seed=3)
    kw = dict(key_mapping="isaaclab_lift", val_fraction=0.3, seed=5)
    train = DemoDataset([lift_file, other], split="train", **kw)
    val = DemoDataset([lift_file, other], split="val", **kw)
    everything = DemoDataset([lift_file, other], split="all", **kw)
    assert set(train.demo_ids).isdisjoint(val.demo_ids)
    assert set(train.demo_ids) | set(val.demo_ids) == set(everything.demo_ids)
    assert len(everything.demo_ids) == 10 and len(val.demo_ids) == 3
    assert len(train) + len(val) == len(everything)
    assert {f for f, _ in everything.demo_ids} == {str(lift_file), str(other)}
    assert DemoDataset([lift_file, other], split="val", **kw).demo_ids == val.demo_ids  # deterministic
    assert DemoDataset([lift_file, other], split="val", **{**kw, "seed": 6}).demo_ids != val.demo_ids


def test_dataloader_workers_read_the_same_samples(lift_file):
    ds = DemoDataset(lift_file, "isaaclab_lift", split="all", image_size=(48, 48))
    ds[0]  # the parent opened a handle: workers must not reuse it
    loader = torch.utils.data.DataLoader(ds, batch_size=8, num_workers=2, collate_fn=collate)
    batches = list(loader)
    direct = collate([ds[i] for i in range(len(ds))])
    for key in ("context_image", "wrist_image", "proprio", "actions", "action_mask"):
        assert torch.equal(torch.cat([b[key] for b in batches]), direct[key]), key


# ---------------------------------------------------------------------- stats
def test_stats_are_cached_then_recomputed_when_the_file_changes(tmp_path, monkeypatch):
    f = isaaclab_file(tmp_path / "s.hdf5", num_demos=3, steps=10)
    km = KeyMapping.load("isaaclab_lift")
    s1 = compute_stats_dict(f, km)
    with h5py.File(f) as h:
        acts = np.concatenate([h[f"data/demo_{i}/actions"][()] for i in range(3)])
    np.testing.assert_allclose(s1["action"]["mean"], acts.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        s1["action"]["q99"], np.quantile(acts.astype(np.float64), 0.99, axis=0), rtol=1e-5, atol=1e-6
    )
    assert s1["action"]["count"] == acts.shape[0]
    cache = stats_cache_path(f)
    assert cache.is_file() and not list(tmp_path.glob("*.tmp"))

    calls = []
    real = stats_mod.compute_file_stats
    monkeypatch.setattr(stats_mod, "compute_file_stats", lambda *a: calls.append(1) or real(*a))
    assert compute_stats_dict(f, km) == s1 and calls == []  # served from the cache

    with h5py.File(f, "r+") as h:  # append a demo: size and mtime change
        h.copy(h["data/demo_0"], "data/demo_3")
    os.utime(f, ns=(time.time_ns(), time.time_ns() + 10**9))
    s2 = compute_stats_dict(f, km)
    assert calls == [1] and s2["action"]["count"] > s1["action"]["count"]
    norm = stats_mod.compute_norm_stats(f, km)  # the model's NormStats
    assert norm.action.dim == 7 and norm.proprio.dim == 27


def test_stats_of_several_files_merge_by_count(lift_file, tmp_path):
    other = isaaclab_file(tmp_path / "o.hdf5", num_demos=2, steps=30, seed=9)
    km = KeyMapping.load("isaaclab_lift")
    merged = compute_stats_dict([lift_file, other], km)
    acts = []
    for path in (lift_file, other):
        with h5py.File(path) as h:
            acts += [h[f"data/{d}/actions"][()] for d in h["data"]]
    a = np.concatenate(acts).astype(np.float64)
    np.testing.assert_allclose(merged["action"]["mean"], a.mean(0), atol=1e-6)
    np.testing.assert_allclose(merged["action"]["std"], a.std(0), atol=1e-6)


# ---------------------------------------------------------------------- Cosmos layout
def test_cosmos_layout_with_extra_keys_works_through_nvidia_cosmos(tmp_path):
    f = cosmos_file(tmp_path / "cosmos.hdf5")
    with h5py.File(f) as h:
        obs = h["data/demo_0/obs"]
        assert {"table_cam_segmentation", "table_cam_normals", "table_cam_depth", "object", "cube_positions"} <= set(
            obs
        )
        assert obs["table_cam"].shape[1:] == (200, 200, 3)
    assert verify_files(f, "nvidia_cosmos") == []
    ds = DemoDataset(f, "nvidia_cosmos", split="all", image_size=(112, 112))
    s = ds[len(ds) - 1]
    assert s["context_image"].shape == (112, 112, 3) and s["proprio"].shape == (27,)
    assert s["instruction"] == KeyMapping.load("nvidia_cosmos").instruction
    assert compute_stats_dict(f, "nvidia_cosmos")["proprio"]["count"] == len(ds)


# ---------------------------------------------------------------------- verification
def test_verify_accepts_a_good_file(lift_file):
    assert verify_files(lift_file, "isaaclab_lift") == []


@pytest.mark.parametrize("kind", sorted(BAD_CASES))
def test_verify_reports_each_defect_in_one_clear_line(tmp_path, kind):
    demo, key, words = BAD_CASES[kind]
    f = broken_file(tmp_path / f"{kind}.hdf5", kind)
    problems = verify_files(f, "isaaclab_lift")
    assert len(problems) == 1, problems
    line = problems[0]
    assert "\n" not in line and line.startswith(str(f))
    for w in words + [x for x in (demo, key) if x]:
        assert w in line, (w, line)


def test_verify_missing_file_and_mapping_mismatch(tmp_path, lift_file):
    assert "file not found" in verify_files(tmp_path / "nope.hdf5", "isaaclab_lift")[0]
    custom = {"context_image": "front_cam", "wrist_image": "wrist_cam", "proprio": [["eef_pos", 3]], "name": "mine"}
    problems = verify_files(lift_file, KeyMapping.from_dict(custom))
    assert len(problems) == 6 and all("obs/front_cam: missing image" in p for p in problems)


# ---------------------------------------------------------------------- scripts
def _run(*args):
    return subprocess.run([PY, *args], cwd=REPO, capture_output=True, text=True, timeout=300)


def test_verify_and_inspect_scripts(tmp_path, lift_file):
    ok = _run("scripts/verify_dataset.py", str(lift_file), "--key_mapping", "isaaclab_lift")
    assert ok.returncode == 0, ok.stderr
    assert "ok: 1 file(s), 6 demos" in ok.stdout and "proprio 27" in ok.stdout
    bad = broken_file(tmp_path / "bad.hdf5", "action_dim")
    nan = broken_file(tmp_path / "nan.hdf5", "nan")
    r = _run("scripts/verify_dataset.py", str(bad), str(nan), "--key_mapping", "isaaclab_lift")
    assert r.returncode == 2
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 2 and "action dim 6" in errors[0] and "NaN/Inf" in errors[1]
    r = _run("scripts/verify_dataset.py", str(lift_file), "--key_mapping", "no_such")
    assert r.returncode == 2 and r.stderr.startswith("error: key mapping 'no_such' not found")

    r = _run("scripts/inspect_dataset.py", str(lift_file))
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "demos: 6" in out and "all 6 demos share this layout" in out
    assert "table_cam" in out and "64, 64, 3)" in out and "uint8" in out and "@num_samples" in out
    r = _run("scripts/inspect_dataset.py", str(broken_file(tmp_path / "cut.hdf5", "unreadable")))
    assert r.returncode == 2 and "unreadable" in r.stderr
