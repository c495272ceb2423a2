"""The trainer: learning, exact resume after SIGKILL, bad input, the Cosmos layout, the overfit check."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from _data_fixtures import BAD_CASES, broken_file, cosmos_file, isaaclab_file
from vla.training import load_train_config, train

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
QUIET = {"max_steps": 40, "log_every": 5, "val_every": 20, "save_every": 0, "image_effect_samples": 4}


@pytest.fixture(scope="module")
def lift_file(tmp_path_factory):
    return isaaclab_file(tmp_path_factory.mktemp("train") / "lift.hdf5", num_demos=6, steps=20)


def _cfg(files, out, config="lift_tiny_cpu", **over):
    items = [f"data.files={json.dumps([str(f) for f in files])}", f"output_dir={out}"]
    items += [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in {**QUIET, **over}.items()]
    return load_train_config(config, items)


def _metrics(run: Path) -> list[dict]:
    return [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines() if ln.strip()]


def test_tiny_training_lowers_loss_logs_val_and_writes_a_loadable_checkpoint(lift_file, tmp_path):
    out = tmp_path / "run"
    summary = train(_cfg([lift_file], out, **{"optim.warmup_steps": 5}), show_progress=False)
    rows = _metrics(out)
    losses = [r["loss_avg"] for r in rows if "loss_avg" in r]
    vals = [r["val/loss"] for r in rows if "val/loss" in r]
    assert len(losses) == 8 and losses[-1] < 0.7 * losses[0], losses
    assert len(vals) == 2 and all(v > 0 for v in vals)
    assert {"lr", "grad_norm", "samples_per_s"} <= set(rows[0])
    assert list((out / "tb").glob("events.out.tfevents.*"))
    s = json.loads((out / "summary.json").read_text())
    assert s == summary and s["steps"] == 40 and s["feature_cache"] is True
    assert s["val_loss"] == vals[-1] and s["samples_per_s"] > 0
    ratios = [(r["step"], r["val/image_effect_ratio"], r["val/wrist_effect_ratio"]) for r in rows
              if "val/image_effect_ratio" in r]
    assert [r[0] for r in ratios] == [20, 40]  # at every evaluation, not only the end
    assert all(0.0 <= a < 10 and 0.0 <= b < 10 for _, a, b in ratios)
    assert s["image_effect_ratio"] == ratios[-1][1] and s["conditioning_samples"] == 4
    assert s["val_action_mse"] > 0 and s["blank_image_val_action_mse"] > 0 and isinstance(s["warnings"], list)

    from vla.checkpoint import load_vla_for_inference, read_checkpoint_config

    meta = read_checkpoint_config(out / "final")
    assert meta["key_mapping"]["name"] == "isaaclab_lift" and meta["instruction"] == "lift the red cube"
    model = load_vla_for_inference(out / "final")
    from vla.data import DemoDataset, collate

    ds = DemoDataset(lift_file, "isaaclab_lift", split="all", image_size=model.cfg.image_size)
    b = collate([ds[0], ds[1]])
    pred = model.predict_action(
        b["context_image"], b["wrist_image"], b["instruction"], b["proprio"], generator=torch.Generator().manual_seed(0)
    )
    assert pred.shape == (2, 16, 7) and torch.isfinite(pred).all()
    # the checkpoint carries the dataset's normalisation stats (cached beside the file)
    from vla.data.stats import compute_stats_dict

    expected = compute_stats_dict(lift_file, "isaaclab_lift")["action"]["mean"]
    assert torch.allclose(
        torch.as_tensor(model.get_norm_stats().action.mean), torch.tensor(expected, dtype=torch.float32)
    )


def test_cosmos_layout_file_trains_through_nvidia_cosmos(tmp_path):
    f = cosmos_file(tmp_path / "cosmos.hdf5", num_demos=3, steps=12)
    out = tmp_path / "cosmos_run"
    summary = train(
        _cfg(
            [f],
            out,
            config="stack_tiny_cpu",  # three cubes: its state head estimates all three poses
            **{"data.key_mapping": "nvidia_cosmos", "max_steps": 10, "val_every": 0, "image_effect_samples": 0},
        ),
        show_progress=False,
    )
    assert summary["steps"] == 10 and summary["val_loss"] is not None
    from vla.checkpoint import read_checkpoint_config

    assert read_checkpoint_config(out / "final")["key_mapping"]["name"] == "nvidia_cosmos"


# ---------------------------------------------------------------------- bad input
def _train_main():
    spec = importlib.util.spec_from_file_location("train_script", REPO / "scripts" / "train.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main


BAD_INPUT = {
    **{kind: (kind, []) for kind in BAD_CASES},
    "missing_file": (None, []),
    "unknown_config_key": ("good", ["optim.lr_head=1e-3"]),
    "bad_value": ("good", ["max_steps=many"]),
    "unknown_model_key": ("good", ["model_overrides.d_modle=64"]),
    "unknown_key_mapping": ("good", ["data.key_mapping=nope"]),
}
EXPECT = {
    "missing_file": "file not found",
    "unknown_config_key": "unknown config key(s) ['optim.lr_head']",
    "bad_value": "max_steps: expected int",
    "unknown_model_key": "unknown model config key(s) ['d_modle']",
    "unknown_key_mapping": "key mapping 'nope' not found",
}


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input_exits_2_with_one_line_and_writes_nothing(case, tmp_path, capsys):
    kind, extra = BAD_INPUT[case]
    if kind is None:
        f = tmp_path / "missing.hdf5"
    elif kind == "good":
        f = isaaclab_file(tmp_path / "ok.hdf5", num_demos=2, steps=8, image_size=(32, 32))
    else:
        f = broken_file(tmp_path / f"{kind}.hdf5", kind)
    out = tmp_path / "out"
    before = sorted(p.name for p in tmp_path.iterdir())
    rc = _train_main()(["--config", "lift_tiny_cpu", f"data.files=[{f}]", f"output_dir={out}", "--no_progress", *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("error: "), err
    expected = EXPECT.get(case) or BAD_CASES[kind][2][0]
    assert expected in err[0], err[0]
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # not even a stats cache for broken data


def test_train_script_refuses_to_overwrite_a_run(lift_file, tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("x")
    r = subprocess.run(
        [PY, "scripts/train.py", "--config", "lift_tiny_cpu", f"data.files=[{lift_file}]", f"output_dir={out}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 2 and "already exists and is not empty; pass --resume" in r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


# ---------------------------------------------------------------------- exact resume
@pytest.mark.slow
def test_sigkill_then_resume_continues_with_the_uninterrupted_losses(lift_file, tmp_path):
    """LoRA tiny model (full VLM forward + DataLoader each step): kill after the step-10 state, resume."""
    args = [
        "scripts/train.py",
        "--config",
        "lift_tiny_cpu",
        f"data.files=[{lift_file}]",
        "model=tiny-lora",
        "levers.noise_draws_per_obs=2",
        "batch_size=4",
        "max_steps=30",
        "save_every=10",
        "log_every=1",
        "val_every=0",
        "image_effect_samples=0",
        "optim.warmup_steps=3",
        "--no_progress",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ref, run = tmp_path / "ref", tmp_path / "run"
    r = subprocess.run([PY, *args, f"output_dir={ref}"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]

    proc = subprocess.Popen(
        [PY, *args, f"output_dir={run}"], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    state = run / "training_state" / "step_000010" / "state.json"
    deadline = time.time() + 300
    while not state.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert state.exists(), "the run never saved its step-10 state"
    assert not (run / "summary.json").exists(), "the run finished before it could be killed"

    r = subprocess.run(
        [PY, "scripts/train.py", "--resume", str(run), "--no_progress"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads((run / "summary.json").read_text())
    start = summary["resumed_from_step"]
    assert start in (10, 20) and summary["steps_this_run"] == 30 - start

    def losses(d):
        return {m["step"]: m["loss"] for m in _metrics(d) if "loss" in m}

    a, b = losses(ref), losses(run)
    assert sorted(b) == list(range(1, 31))  # no duplicated steps from the killed run
    assert [b[s] for s in range(start + 1, 31)] == [a[s] for s in range(start + 1, 31)]
    assert summary["val_loss"] == json.loads((ref / "summary.json").read_text())["val_loss"]


# ---------------------------------------------------------------------- overfit check
@pytest.mark.slow
def test_overfit_script_memorises_5_demos(tmp_path):
    r = subprocess.run(
        [PY, "scripts/overfit_test.py", "--no_progress", "--output", str(tmp_path / "of")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "verdict: PASS" in r.stdout and "open-loop chunks on" in r.stdout
    assert (tmp_path / "of" / "final" / "manifest.json").is_file()


def test_cube_position_probe_trains_and_stays_out_of_the_checkpoint(lift_file, tmp_path):
    """The auxiliary state loss (aux_state) is logged and falls; the probe is training-only."""
    out = tmp_path / "aux"
    train(_cfg([lift_file], out, **{"model_overrides.state_dim": 0, "aux_state.keys": ["cube_positions"],
                                     "aux_state.weight": 1.0, "max_steps": 60,
                                     "levers.wrist_dropout": 0.5, "optim.warmup_steps": 5}),
          show_progress=False)
    aux = [r["aux_loss"] for r in _metrics(out) if "aux_loss" in r]
    assert len(aux) == 12 and sum(aux[-3:]) < 0.8 * sum(aux[:3]), aux
    from safetensors import safe_open
    from vla.checkpoint import load_vla_for_inference

    for f in (out / "final").glob("*.safetensors"):
        with safe_open(str(f), "pt") as st:
            assert not any("state_probe" in k for k in st.keys()), f
    model = load_vla_for_inference(out / "final")
    assert model.state_probe is None and "wrist_dropout" not in model.cfg.to_dict()  # training-only levers


def test_missing_aux_state_key_is_a_clear_error(lift_file, tmp_path):
    from vla.training import plan_run
    from vla.training.config import TrainConfigError

    with pytest.raises(TrainConfigError, match=r"obs/cube_pose missing.*aux_state.keys=\[\]"):
        plan_run(_cfg([lift_file], tmp_path / "x", **{"aux_state.keys": ["cube_pose"]}))
    assert not (tmp_path / "x").exists()


def test_ema_checkpoint_holds_the_average_and_resumes_exactly(lift_file, tmp_path):
    """EMA (AveragedModel over the head): final/ holds the averaged weights, not the raw ones, and a run
    resumed from its step-10 state ends with the same averaged weights as the uninterrupted run."""
    import shutil

    from safetensors.torch import load_file

    over = {"ema.enabled": True, "ema.decay": 0.9, "max_steps": 20, "save_every": 10, "val_every": 0,
            "image_effect_samples": 0, "optim.warmup_steps": 2}
    ref = tmp_path / "ref"
    train(_cfg([lift_file], ref, **over), show_progress=False)
    state = ref / "training_state" / "step_000020"
    head, raw, ema = (load_file(str(p)) for p in (ref / "final" / "head.safetensors", state / "model.safetensors",
                                                   state / "ema.safetensors"))
    trained = [k for k in head if k in raw]
    assert len(trained) > 10 and int(ema["n_averaged"]) == 20
    assert all(torch.equal(head[k], ema[f"module.{k}"]) for k in trained)
    assert not all(torch.equal(head[k], raw[k]) for k in trained)

    run = tmp_path / "run"  # the run as it stood after its step-10 state
    shutil.copytree(ref, run, ignore=shutil.ignore_patterns("step_000020", "final", "summary.json"))
    summary = train(_cfg([lift_file], run, **over), resume=True, show_progress=False)
    assert summary["resumed_from_step"] == 10
    resumed = load_file(str(run / "final" / "head.safetensors"))
    assert all(torch.equal(resumed[k], head[k]) for k in head)
