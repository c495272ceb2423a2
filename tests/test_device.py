"""Device and dtype resolution shared by eval_vla.py, play_vla.py and diagnose_vla.py (no GPU needed)."""

from __future__ import annotations

import pytest
import torch

from vla.utils.device import DeviceError, resolve_device, resolve_dtype


def test_torchrun_ranks_take_their_own_gpu():
    # the README's `torchrun --nproc_per_node 8 ... --device cuda:0`: rank r -> cuda:r, not all on GPU 0
    assert [resolve_device("cuda:0", local_rank=r, cuda_count=8) for r in range(8)] == [f"cuda:{r}" for r in range(8)]
    assert resolve_device("cuda", local_rank=3, cuda_count=8) == "cuda:3"
    assert resolve_device("cuda:4", local_rank=2, cuda_count=8) == "cuda:6"  # an index is the first GPU of the node's ranks
    assert resolve_device("cuda:5", local_rank=0, cuda_count=8) == "cuda:5"


def test_local_rank_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "5")
    assert resolve_device("cuda:0", cuda_count=8) == "cuda:5"
    assert resolve_device("cpu") == "cpu"  # CPU ranks all share the CPU
    monkeypatch.delenv("LOCAL_RANK")
    assert resolve_device("cuda", cuda_count=1) == "cuda:0"


def test_too_few_gpus_and_bad_names_fail_with_the_flag():
    with pytest.raises(DeviceError, match=r"--device cuda:0.*cuda:4.*2 GPU"):
        resolve_device("cuda:0", local_rank=4, cuda_count=2)
    with pytest.raises(DeviceError, match="--device 'gpu0'"):
        resolve_device("gpu0")


def test_default_device_follows_torch(monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device(None) == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device(None) == "cuda:0"


def test_dtype_defaults_to_bf16_on_cuda_fp32_on_cpu():
    assert resolve_dtype(None, "cuda:3") is torch.bfloat16
    assert resolve_dtype(None, "cpu") is torch.float32
    assert resolve_dtype("float32", "cuda:0") is torch.float32  # explicit override wins
    assert resolve_dtype("bfloat16", "cpu") is torch.bfloat16
    assert resolve_dtype(torch.bfloat16, "cpu") is torch.bfloat16
    with pytest.raises(DeviceError, match="--dtype"):
        resolve_dtype("float16", "cpu")


def test_scripts_default_dtype_is_resolved_not_fixed():
    """eval_vla / diagnose_vla / play_vla leave --dtype unset so the device decides; VLAActionCfg likewise."""
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    for name in ("eval_vla", "diagnose_vla", "play_vla"):
        spec = importlib.util.spec_from_file_location(name, root / "scripts" / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        args = {"eval_vla": ["--task", "Lift-Cube"], "diagnose_vla": ["--checkpoint", "c", "--dataset", "d"],
                "play_vla": ["--task", "Lift-Cube"]}[name]
        assert mod.build_parser().parse_args(args).dtype is None, name
    from vla_isaac.vla_action import VLAActionCfg

    assert VLAActionCfg().dtype is None
    import inspect

    from vla_isaac.policy import VLAPolicy

    assert inspect.signature(VLAPolicy).parameters["dtype"].default is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without a GPU")
def test_scripts_reject_unusable_devices_with_one_line(repo_root, tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "scripts/diagnose_vla.py", "--checkpoint", str(tmp_path), "--dataset", "x.hdf5",
                        "--device", "gpu0"], cwd=repo_root, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "--device 'gpu0'" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "scripts/eval_vla.py", "--task", "Lift-Cube", "--policy", "expert",
                        "--device", "cuda:0", "--output", str(tmp_path / "e")], cwd=repo_root, capture_output=True,
                       text=True, timeout=300, env={**__import__("os").environ, "LOCAL_RANK": "1"})
    assert r.returncode == 2 and "cuda:1" in r.stderr and "0 GPU" in r.stderr, r.stderr[-500:]
