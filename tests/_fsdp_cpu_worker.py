"""One rank of tests/test_distributed_train.py's FSDP check (``torchrun --nproc_per_node 2``, gloo, CPU).

accelerate enables FSDP only on GPUs, so this drives torch's FSDP1 directly with what fsdp.yaml asks
accelerate for (decoder/vision blocks as units, use_orig_params, bf16 compute) on the tiny LoRA model:
wraps it with the trainer's storage dtype (and, to show why that policy exists, with a bf16 backbone),
trains two steps with FSDP's global grad-norm clip, runs the conditioning report inside
``summon_full_params`` as the trainer does, gathers the full state dict on rank 0 and writes a
``vla.checkpoint`` from it. Results go to ``<out>/rank<r>.json``.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import save_file
from torch.distributed.fsdp import FullStateDictConfig, MixedPrecision, StateDictType
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLDecoderLayer, Qwen2_5_VLVisionBlock
from vla.checkpoint import save_checkpoint
from vla.config import load_model_preset
from vla.data import DemoDataset, collate
from vla.data.key_mapping import KeyMapping
from vla.data.stats import compute_norm_stats
from vla.eval.conditioning import conditioning_report
from vla.modeling import HEAD_MODULES, VLAModel
from vla.training.trainer import backbone_storage_dtype


def wrap(model):
    policy = functools.partial(
        transformer_auto_wrap_policy, transformer_layer_cls={Qwen2_5_VLDecoderLayer, Qwen2_5_VLVisionBlock}
    )
    return FSDP(model, auto_wrap_policy=policy, use_orig_params=True, device_id=torch.device("cpu"),
                mixed_precision=MixedPrecision(param_dtype=torch.bfloat16, reduce_dtype=torch.float32))


def main(data: str, out: str) -> None:
    dist.init_process_group("gloo")
    rank, out = dist.get_rank(), Path(out)
    result: dict = {}
    torch.manual_seed(0)  # the same initial head on every rank, as accelerate's set_seed gives
    cfg = load_model_preset("tiny-lora")
    try:  # the mixed storage dtypes the trainer used to build under FSDP
        wrap(VLAModel(cfg, dtype=torch.bfloat16))
        result["mixed_dtypes"] = "wrapped"
    except ValueError as e:
        result["mixed_dtypes"] = str(e)
    torch.manual_seed(0)
    model = VLAModel(cfg, dtype=backbone_storage_dtype("bf16", fsdp=True))
    mapping = KeyMapping.load("isaaclab_lift")
    model.set_norm_stats(compute_norm_stats([data], mapping))
    fsdp = wrap(model)
    ds = DemoDataset([data], mapping, split="all", image_size=cfg.image_size)
    opt = torch.optim.AdamW([p for p in fsdp.parameters() if p.requires_grad], lr=1e-3)
    torch.manual_seed(rank)
    result["grad_norms"] = []
    for step in range(2):
        batch = collate([ds[2 * rank + 4 * step + i] for i in range(2)])  # each rank its own samples
        loss = fsdp(batch)["loss"]
        loss.backward()
        result["grad_norms"].append(float(fsdp.clip_grad_norm_(1.0)))  # one norm over all shards
        opt.step()
        opt.zero_grad()
    # offload_to_cpu=False: on CPU process groups offload_to_cpu=True crashes rank 0 (torch 2.11)
    with FSDP.state_dict_type(fsdp, StateDictType.FULL_STATE_DICT, FullStateDictConfig(False, rank0_only=True)):
        state = fsdp.state_dict()
    if rank == 0:
        result["state_keys"] = sorted(state)
        save_checkpoint(model, out / "ckpt", key_mapping=mapping.to_dict(), state_dict=state)
    with FSDP.summon_full_params(fsdp, writeback=False):  # every rank's view of the full head weights
        head = {n: p.detach().clone() for n, p in model.named_parameters() if n.split(".")[0] in HEAD_MODULES}
        # the trainer's conditioning report under FSDP: the same inputs on every rank, weights gathered,
        # bf16 autocast as accelerate's autocast() gives with mixed_precision: bf16
        with torch.autocast("cpu", dtype=torch.bfloat16):
            report = conditioning_report(model, collate([ds[i] for i in range(0, 12, 3)]), seed=0)
        result["image_effect_ratio"] = report["image_effect_ratio"]
    save_file(head, str(out / f"head_rank{rank}.safetensors"))
    (out / f"rank{rank}.json").write_text(json.dumps(result))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:3])
