"""The privileged-state diagnosis of issue 15: its key mapping and the lever bench's training overrides."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from vla.data.key_mapping import KeyMapping

REPO = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("policy_levers", REPO / "bench" / "policy_levers.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_privileged_mapping_appends_the_cube_pose_to_the_proprio():
    base, priv = KeyMapping.load("isaaclab_lift"), KeyMapping.load("isaaclab_lift_privileged")
    assert priv.proprio[: len(base.proprio)] == base.proprio  # same proprio, then the cube pose
    assert priv.proprio[len(base.proprio):] == (("cube_positions", 3), ("cube_orientations", 4))
    assert priv.proprio_dim == base.proprio_dim + 7 == 34
    assert (priv.context_image, priv.wrist_image, priv.actions) == (base.context_image, base.wrist_image, "actions")


def test_privileged_row_trains_a_matching_proprio_without_levers():
    bench = _bench()
    over = bench.LEVERS["privileged"]["train"]
    assert f"model_overrides.proprio_dim={KeyMapping.load('isaaclab_lift_privileged').proprio_dim}" in over
    assert "data.key_mapping=isaaclab_lift_privileged" in over
    # proprio dropout would hide the cube pose: the privileged row turns every conditioning lever off
    assert set(bench.NO_LEVERS) <= set(over)
    for name, lever in bench.LEVERS.items():  # eval-only rows reuse a row that trains
        assert ("base" in lever) != ("train" in lever), name
        assert "base" not in lever or "train" in bench.LEVERS[lever["base"]], name


def test_rows_match_what_they_were_measured_with():
    """The state head is the training config's default now: the earlier rows turn it off, its rows turn it on."""
    bench = _bench()
    from vla.training import load_train_config

    for name in ("dart_nowrist", "gate_recipe", "no_levers", "privileged"):
        cfg = load_train_config("lift_tiny_cpu", ["data.files=[x.hdf5]", *bench.LEVERS[name]["train"]])
        assert cfg.model_overrides.get("state_dim") == 0, name
    cfg = load_train_config("lift_tiny_cpu", ["data.files=[x.hdf5]", *bench.LEVERS["dart_state"]["train"]])
    assert cfg.model_overrides["state_dim"] == 7 and cfg.aux_state.keys == ["cube_positions", "cube_orientations"]
    assert cfg.levers.wrist_dropout == 0.0 and cfg.levers.proprio_dropout == 0.5
