#!/usr/bin/env python
"""Offline diagnostics of a VLA checkpoint on recorded demos (no simulator needed).

1. Conditioning: do predicted chunks change when the context image, the wrist image, the instruction
   or the proprio is swapped with another sample's? Reported as effect ratios (share of the
   between-sample change in predictions; same flow noise for both inputs). ~0 = input ignored;
   ``image_effect_ratio`` (the context view) below 0.05 prints "the policy is ignoring its images".
2. Offline action error on held-out demos: ``val_action_mse`` (normalised action space, 10 flow steps,
   mean of 3 noise draws) next to ``blank_image_val_action_mse``, the same with both views replaced by
   their dataset-mean image: a policy that uses its images is clearly worse blinded. Raw-unit MSE / MAE
   and gripper sign accuracy too.
3. Open-loop replay: for one demo, chunks predicted every 16 steps are laid end to end and plotted
   against the recorded action trajectory (``open_loop.png``).

Writes ``<output>/diagnosis.json`` (keys in docs/evaluation.md) and ``open_loop.png``. Example::

    python scripts/diagnose_vla.py --checkpoint outputs/lift_tiny_cpu/final --dataset demos/lift.hdf5 \
        --output outputs/lift_tiny_cpu/diagnosis
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="checkpoint folder")
    p.add_argument("--dataset", required=True, nargs="+", help="HDF5 file(s) in the Isaac Lab / robomimic layout")
    p.add_argument("--key_mapping", default=None, help="default: the checkpoint's key mapping")
    p.add_argument("--split", default="val", choices=["train", "val", "all"], help="demos to use (split as in training)")
    p.add_argument("--val_fraction", type=float, default=None, help="default: the checkpoint's training value, else 0.1")
    p.add_argument("--num_samples", type=int, default=32,
                   help="random samples of the split for the conditioning and error checks (0 = all of them; "
                        "64 samples vary by about +-0.05 in image_effect_ratio)")
    p.add_argument("--alt_instruction", default=None,
                   help="instruction swapped in for every sample in the instruction check (default: per sample, a "
                        "different instruction of the dataset's, e.g. another colour for Lift-Cube-Color; "
                        "vla.eval.conditioning.ALT_INSTRUCTION when the dataset has only one)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num_draws", type=int, default=3, help="flow-noise draws averaged in the action MSEs")
    p.add_argument("--flow_steps", type=int, default=10, help="Euler steps of the flow sampler")
    p.add_argument("--device", default=None,
                   help="cpu, cuda or cuda:N (default: cuda when torch sees a GPU, else cpu; "
                        "under torchrun cuda means cuda:LOCAL_RANK)")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16"],
                   help="model dtype (default: bfloat16 on CUDA, float32 on the CPU)")
    p.add_argument("--output", default=None,
                   help="folder for diagnosis.json and open_loop.png (default: <checkpoint>/diagnosis)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    import numpy as np
    import torch

    from vla.checkpoint import CheckpointError, load_vla_for_inference, read_checkpoint_config
    from vla.data.dataset import DemoDataset, collate
    from vla.data.key_mapping import KeyMapping
    from vla.eval.conditioning import (ALT_INSTRUCTION, REPORT_KEYS, alternative_instructions, conditioning_report,
                                       dataset_mean_images, ignoring_images_warning, input_effect, keyword_swaps)
    from vla.utils.device import DeviceError, resolve_device, resolve_dtype
    from vla.utils.io import atomic_write_text

    try:
        device = resolve_device(args.device)
        dtype = resolve_dtype(args.dtype, device)
    except DeviceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        meta = read_checkpoint_config(args.checkpoint)
        model = load_vla_for_inference(args.checkpoint, device=device, dtype=dtype)
        mapping = KeyMapping.load(args.key_mapping) if args.key_mapping else KeyMapping.from_dict(meta["key_mapping"])
        train_meta = (meta.get("extra") or {}).get("data", {})
        val_fraction = args.val_fraction if args.val_fraction is not None else train_meta.get("val_fraction", 0.1)
        ds = DemoDataset(args.dataset, mapping, split=args.split, val_fraction=val_fraction,
                         chunk=model.cfg.num_queries, image_size=tuple(model.cfg.image_size),
                         seed=train_meta.get("seed", 0))
    except (CheckpointError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if len(ds) < 2:
        print(f"error: {args.dataset}: split '{args.split}' has {len(ds)} samples; use --split all", file=sys.stderr)
        return 2
    out = Path(args.output or Path(args.checkpoint) / "diagnosis")
    rng = np.random.default_rng(args.seed)
    n = len(ds) if args.num_samples <= 0 else min(args.num_samples, len(ds))
    idx = rng.choice(len(ds), size=n, replace=False)
    batch = collate([ds[int(i)] for i in idx])

    blank = dataset_mean_images(ds, seed=args.seed)
    # the instruction check: each sample gets a different valid instruction of the same task (the dataset's
    # instructions, all splits); one-instruction data gets ALT_INSTRUCTION (an instruction of no task here)
    pool = sorted({d.instruction for d in DemoDataset(args.dataset, mapping, split="all", chunk=model.cfg.num_queries,
                                                      image_size=tuple(model.cfg.image_size)).demos})
    if args.alt_instruction:
        alt, alt_desc = args.alt_instruction, f"--alt_instruction '{args.alt_instruction}'"
    elif len(pool) > 1:
        alt = alternative_instructions(batch["instruction"], pool, seed=args.seed)
        alt_desc = f"per sample, another of the dataset's {len(pool)} instructions"
    else:
        alt, alt_desc = ALT_INSTRUCTION, f"'{ALT_INSTRUCTION}' (the dataset has one instruction)"
    report = conditioning_report(model, batch, blank_images=blank, num_draws=args.num_draws,
                                 num_steps=args.flow_steps, seed=args.seed, alt_instruction=alt)
    report["alt_instruction"] = alt_desc
    report["instructions"] = pool
    # templates x keywords (Lift-Cube-Color's colours): the keyword alone swapped vs the same keyword reworded
    swaps, paraphrases = keyword_swaps(batch["instruction"], pool, seed=args.seed) if len(pool) > 1 else (None, None)
    for key, alts in (("instruction_keyword_effect_ratio", swaps), ("instruction_paraphrase_effect_ratio", paraphrases)):
        if alts is not None and not args.alt_instruction:
            report[key] = input_effect(model, batch, ["instruction"], num_steps=args.flow_steps, seed=args.seed,
                                       alt_instruction=alts)
    g = torch.Generator().manual_seed(args.seed)
    with torch.no_grad():
        pred = model.predict_action(batch["context_image"], batch["wrist_image"], batch["instruction"],
                                    batch["proprio"], num_steps=args.flow_steps, generator=g).float().cpu()
    tgt, mask = batch["actions"].float(), batch["action_mask"].bool()
    err = (pred - tgt)[mask]
    base = (tgt[mask].mean(0) - tgt)[mask]
    raw = {
        "mse": float((err ** 2).mean()), "mae": float(err.abs().mean()),
        "mean_action_mse": float((base ** 2).mean()),
        "gripper_sign_accuracy": float(((pred[..., -1] >= 0) == (tgt[..., -1] >= 0))[mask].float().mean()),
    }

    # open-loop replay of one demo: chunks every `chunk` steps, laid end to end
    demo_i = 0
    ids = ds.indices_of_demo(demo_i)
    starts = ids[:: model.cfg.num_queries]
    chunks, truth = [], []
    for s in starts:
        smp = collate([ds[int(s)]])
        with torch.no_grad():
            chunks.append(model.predict_action(smp["context_image"], smp["wrist_image"], smp["instruction"],
                                               smp["proprio"], num_steps=args.flow_steps, generator=g)[0].float().cpu())
    for i in ids:
        truth.append(torch.as_tensor(ds[int(i)]["actions"][0]))
    traj = torch.cat(chunks)[: len(ids)].numpy()
    truth = torch.stack(truth).numpy()
    open_loop = {"demo": ds.demo_ids[demo_i][1], "steps": int(len(ids)),
                 "mse": float(((traj - truth) ** 2).mean())}
    out.mkdir(parents=True, exist_ok=True)
    _plot(traj, truth, out / "open_loop.png")

    report.update({"checkpoint": str(args.checkpoint), "dataset": args.dataset, "split": args.split,
                   "device": device, "dtype": str(dtype).removeprefix("torch."),
                   "raw_action_error": raw, "open_loop": open_loop})
    warning = ignoring_images_warning(report)
    report["warnings"] = [warning] if warning else []
    atomic_write_text(out / "diagnosis.json", json.dumps(report, indent=2))
    print(f"conditioning effect ratios on {report['num_samples']} {args.split} samples "
          "(share of the between-sample change; ~0 = ignored):")
    for k in REPORT_KEYS:
        print(f"  {k:26s} {report[k]:.3f}" + (f"  (swapped in: {alt_desc})" if k == "instruction_effect_ratio" else ""))
    for k, what in (("instruction_keyword_effect_ratio", "only the keyword changed, e.g. the colour"),
                    ("instruction_paraphrase_effect_ratio", "same keyword, another wording")):
        if k in report:
            print(f"  {k:26s} {report[k]:.3f}  ({what})")
    mse, blank_mse = report["val_action_mse"], report["blank_image_val_action_mse"]
    print(f"action MSE (normalised, {report['num_flow_steps']} flow steps, mean of {report['num_noise_draws']} draws): "
          f"{mse:.4f}; with both images blanked to the dataset mean: {blank_mse:.4f} "
          f"(ratio {mse / max(blank_mse, 1e-12):.2f}; < 1 = the images help)")
    print(f"raw action error: mse {raw['mse']:.5f} (mean-action baseline {raw['mean_action_mse']:.5f}), "
          f"gripper sign acc {raw['gripper_sign_accuracy']:.1%}")
    if warning:
        print(f"warning: {warning}")
    print(f"open-loop replay of {open_loop['demo']}: mse {open_loop['mse']:.5f} -> {out / 'open_loop.png'}")
    return 0


def _plot(pred, truth, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"]
    fig, axes = plt.subplots(len(names), 1, figsize=(8, 10), sharex=True)
    for d, ax in enumerate(axes):
        ax.plot(truth[:, d], label="recorded", color="k", lw=1)
        ax.plot(pred[:, d], label="predicted (open loop)", color="tab:orange", lw=1)
        ax.set_ylabel(names[d] if d < len(names) else str(d))
    axes[0].legend(loc="upper right", fontsize=7)
    axes[-1].set_xlabel("step")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    tmp.replace(path)


if __name__ == "__main__":
    sys.exit(main())
