"""Two-process data-parallel training on the CPU (accelerate launch, gloo): the path the multi-GPU runs take.

One test, three launches of ``accelerate launch --config_file config/accelerate/ddp.yaml --num_processes 2``
with ``ACCELERATE_USE_CPU=true`` (accelerate's switch for a gloo process group on the CPU): an
uninterrupted reference run, a run killed with SIGKILL after its step-8 state, and its resumption. The
tiny LoRA preset runs the VLM every step, so LoRA and head gradients are all-reduced.

FSDP is not exercised here: accelerate (1.16) turns FSDP on only for GPU process groups; on the CPU its
FSDP config silently runs as DDP (docs/training.md, "FSDP").
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from _data_fixtures import isaaclab_file
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]
LAUNCH = [
    str(Path(sys.executable).parent / "accelerate"),
    "launch",
    "--config_file",
    "config/accelerate/ddp.yaml",
    "--num_processes",
    "2",
    "--mixed_precision",
    "no",
    "--main_process_port",
    "0",  # a free port: tests may run beside other launches
]
ENV = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
MAX_STEPS = 16


def _metrics(run: Path) -> list[dict]:
    return [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines() if ln.strip()]


def _run(args: list[str]) -> None:
    r = subprocess.run([*LAUNCH, *args], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]


@pytest.mark.slow
def test_two_process_ddp_trains_validates_saves_and_resumes_exactly(tmp_path):
    data = isaaclab_file(tmp_path / "lift.hdf5", num_demos=6, steps=16)
    args = [
        "scripts/train.py",
        "--config",
        "lift_tiny_cpu",
        f"data.files=[{data}]",
        "model=tiny-lora",
        "batch_size=2",
        f"max_steps={MAX_STEPS}",
        "save_every=8",
        "val_every=8",
        "val_batches=2",
        "log_every=1",
        "image_effect_samples=4",
        "optim.warmup_steps=2",
        "--no_progress",
    ]
    ref, run = tmp_path / "ref", tmp_path / "run"
    _run([*args, f"output_dir={ref}"])

    summary = json.loads((ref / "summary.json").read_text())
    assert summary["num_processes"] == 2 and summary["steps"] == MAX_STEPS
    rows = _metrics(ref)
    vals = [(r["step"], r["val/loss"]) for r in rows if "val/loss" in r]
    assert [s for s, _ in vals] == [8, 16] and all(v > 0 for _, v in vals)  # every rank validated its shard
    assert [r["step"] for r in rows if "val/image_effect_ratio" in r] == [8, 16]
    assert list((ref / "tb").glob("events.out.tfevents.*"))  # accelerate's TensorBoard tracker

    # each process drew its own randomness (set_seed(..., device_specific=True)) and saved it
    state = ref / "training_state" / f"step_{MAX_STEPS:06d}"
    rng = [torch.load(state / f"random_states_{r}.pkl", weights_only=False) for r in (0, 1)]
    assert not torch.equal(rng[0]["torch_manual_seed"], rng[1]["torch_manual_seed"])

    # the checkpoint holds rank 0's gathered weights under the model's own names (no DDP/FSDP prefixes)
    head = load_file(str(ref / "final" / "head.safetensors"))
    saved = load_file(str(state / "model.safetensors"))  # accelerate's save_state, from the main process
    saved = {k.removeprefix("module."): v for k, v in saved.items()}
    assert head and all(not k.startswith(("module.", "_fsdp")) for k in head)
    for k, v in head.items():
        if k in saved:  # trainable head weights (the normaliser's buffers are not trained)
            assert torch.equal(v, saved[k]), k
    assert sum(k in saved for k in head) > 10
    adapter = load_file(str(ref / "final" / "adapter" / "adapter_model.safetensors"))
    lora = {k: v for k, v in saved.items() if "lora_" in k}
    assert adapter and len(adapter) == len(lora)
    for k, v in adapter.items():  # peft drops the adapter name: lora_A.weight <- lora_A.default.weight
        match = [s for s in lora if s.replace(".default", "").endswith(k.split("base_model.model.", 1)[-1])]
        assert len(match) == 1 and torch.equal(v, lora[match[0]]), k
    from vla.checkpoint import load_vla_for_inference

    load_vla_for_inference(ref / "final")  # loads as a policy

    # SIGKILL the whole launch after its step-8 state, resume, and compare with the uninterrupted run
    proc = subprocess.Popen(
        [*LAUNCH, *args, f"output_dir={run}"],
        cwd=REPO,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    marker = run / "training_state" / "step_000008" / "state.json"
    deadline = time.time() + 400
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert marker.exists(), "the run never saved its step-8 state"
    assert not (run / "summary.json").exists(), "the run finished before it could be killed"

    _run(["scripts/train.py", "--resume", str(run), "--no_progress"])
    resumed = json.loads((run / "summary.json").read_text())
    start = resumed["resumed_from_step"]
    assert start in (8, 16) and resumed["num_processes"] == 2

    def losses(d):
        return {m["step"]: m["loss"] for m in _metrics(d) if "loss" in m}

    a, b = losses(ref), losses(run)
    assert sorted(b) == list(range(1, MAX_STEPS + 1))
    assert [b[s] for s in range(start + 1, MAX_STEPS + 1)] == [a[s] for s in range(start + 1, MAX_STEPS + 1)]
    assert resumed["val_loss"] == summary["val_loss"]
    assert load_file(str(run / "final" / "head.safetensors")).keys() == head.keys()
    for k, v in load_file(str(run / "final" / "head.safetensors")).items():
        assert torch.equal(v, head[k]), k


@pytest.mark.slow
def test_fsdp_on_the_cpu_wraps_the_lora_model_in_one_dtype_trains_and_gathers_a_loadable_checkpoint(tmp_path):
    """torch's FSDP1 over gloo, driven directly (accelerate enables FSDP only on GPUs): the trainer's FSDP
    storage dtype wraps the LoRA model (a bf16 backbone beside float32 LoRA does not), the clipped grad norm
    is one global value, the conditioning report runs on every rank with the weights gathered, and the full
    state dict gathered on rank 0 has clean names and makes a checkpoint whose head equals every rank's full
    weights and whose LoRA adapter loads."""
    data = isaaclab_file(tmp_path / "lift.hdf5", num_demos=2, steps=12)
    out = tmp_path / "fsdp"
    out.mkdir()
    r = subprocess.run(
        [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc_per_node", "2",
         "tests/_fsdp_cpu_worker.py", str(data), str(out)],
        cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    ranks = [json.loads((out / f"rank{i}.json").read_text()) for i in (0, 1)]
    assert all("Must flatten tensors with uniform dtype" in x["mixed_dtypes"] for x in ranks)
    assert ranks[0]["grad_norms"] == ranks[1]["grad_norms"]  # one norm over both shards
    # the conditioning report inside summon_full_params: runs on both ranks, same numbers
    assert ranks[0]["image_effect_ratio"] == ranks[1]["image_effect_ratio"] > 0
    keys = ranks[0]["state_keys"]
    assert not [k for k in keys if "_fsdp" in k or k.startswith("module.")]
    assert any("lora_A" in k for k in keys) and any(k.startswith("expert.") for k in keys)

    from vla.checkpoint import load_vla_for_inference

    head = load_file(str(out / "ckpt" / "head.safetensors"))
    full = [load_file(str(out / f"head_rank{i}.safetensors")) for i in (0, 1)]
    trained = [k for k in head if k in full[0]]
    assert len(trained) > 10
    assert all(torch.equal(head[k], full[0][k]) and torch.equal(head[k], full[1][k]) for k in trained)
    adapter = load_file(str(out / "ckpt" / "adapter" / "adapter_model.safetensors"))
    assert len(adapter) == sum("lora_" in k for k in keys)  # peft alone writes none under FSDP auto-wrap
    model = load_vla_for_inference(out / "ckpt")
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b)  # trained (peft initialises lora_B to 0) and loaded
