#!/usr/bin/env python
"""Overfit check: can the model memorise 5 demos?

Trains on the first N demos only (no validation split), then
  1. asserts the final training loss is below --loss_threshold, and
  2. replays those demos open-loop: for every --stride-th step the predicted 16-step chunk must match the
     recorded actions (normalised MSE, i.e. MSE / per-dim action variance, below --nmse_threshold).
A pipeline that cannot pass this (bad normalisation, misaligned chunks, a head that ignores its inputs)
will not learn anything from more data either. Prints a verdict; exit 0 pass, 1 fail, 2 bad input.

    python scripts/overfit_test.py                                   # synthetic demos, tiny model
    python scripts/overfit_test.py --data demos/lift.hdf5 --key_mapping isaaclab_lift --steps 1500
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--data", nargs="*", default=None, help="HDF5 demo files (default: synthetic demos written to a temp dir)"
    )
    ap.add_argument("--key_mapping", default="isaaclab_lift", help="key mapping name or .json path")
    ap.add_argument("--model", default="tiny", help="model preset (config/model/<name>.yaml)")
    ap.add_argument("--demos", type=int, default=5, help="number of demos to memorise")
    ap.add_argument("--steps", type=int, default=1000, help="training steps")
    ap.add_argument("--batch_size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3, help="head learning rate")
    ap.add_argument(
        "--loss_threshold", type=float, default=0.15, help="max final training loss (flow matching, normalised units)"
    )
    ap.add_argument("--nmse_threshold", type=float, default=0.1, help="max open-loop chunk MSE / action variance")
    ap.add_argument("--stride", type=int, default=2, help="evaluate every k-th step of each demo")
    ap.add_argument("--output", default=None, help="output folder (default: a temp dir, removed afterwards)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no_progress", action="store_true")
    return ap.parse_args(argv)


@torch.no_grad()
def open_loop(model, dataset, stride: int, seed: int) -> dict:
    """Predicted vs recorded chunks on every ``stride``-th sample (masked), in raw action units."""
    from vla.data.dataset import collate

    idx = list(range(0, len(dataset), stride))
    gen = torch.Generator().manual_seed(seed)
    err, true = [], []
    for s in range(0, len(idx), 32):
        b = collate([dataset[i] for i in idx[s : s + 32]])
        pred = model.predict_action(b["context_image"], b["wrist_image"], b["instruction"], b["proprio"], generator=gen)
        m = b["action_mask"]
        err.append((pred - b["actions"])[m])
        true.append(b["actions"][m])
    err, true = torch.cat(err), torch.cat(true)
    var = true.var(0).clamp_min(1e-8)
    per_dim = err.pow(2).mean(0) / var
    return {
        "samples": len(idx),
        "mse": float(err.pow(2).mean()),
        "nmse": float(per_dim.mean()),
        "nmse_per_dim": [round(float(x), 4) for x in per_dim],
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    from vla.training import Trainer, load_train_config, plan_run
    from vla.training.errors import input_error_types

    tmp = tempfile.TemporaryDirectory(prefix="vla_overfit_")
    try:
        files = args.data
        if not files:
            from vla.data.synthetic import write_synthetic_demos

            files = [
                str(
                    write_synthetic_demos(
                        Path(tmp.name) / "synthetic.hdf5", num_demos=args.demos, steps=24, seed=args.seed
                    )
                )
            ]
            print(f"no --data: wrote {args.demos} synthetic demos to {files[0]}")
        out = args.output or str(Path(tmp.name) / "run")
        overrides = [
            f"model={args.model}",
            f"data.files={json.dumps(files)}",
            f"data.key_mapping={args.key_mapping}",
            f"data.max_demos={args.demos}",
            "data.val_fraction=0.0",
            f"max_steps={args.steps}",
            f"batch_size={args.batch_size}",
            f"optim.lr_heads={args.lr}",
            "optim.warmup_steps=50",
            "optim.min_lr_ratio=0.05",
            "log_every=50",
            "val_every=0",
            "save_every=0",
            "image_effect_samples=8",
            # memorising is the point: no training-time regularisers (lift_tiny_cpu's dropouts and probe)
            "levers.wrist_dropout=0.0",
            "levers.proprio_dropout=0.0",
            "model_overrides.state_dim=0",
            "aux_state.keys=[]",
            f"output_dir={out}",
            f"seed={args.seed}",
        ]
        cfg = load_train_config("lift_tiny_cpu", overrides)
        trainer = Trainer(plan_run(cfg), show_progress=not args.no_progress)
        summary = trainer.run()
        from vla.checkpoint import load_vla_for_inference

        model = load_vla_for_inference(Path(out) / "final")  # through the saved checkpoint, as deployment does
        ol = open_loop(model, trainer.train_ds, args.stride, args.seed)
    except input_error_types() as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        if args.output is None:
            tmp.cleanup()
    loss_ok = summary["final_loss"] < args.loss_threshold
    nmse_ok = ol["nmse"] < args.nmse_threshold
    print(
        f"final training loss {summary['final_loss']:.4f} (threshold {args.loss_threshold}): "
        f"{'ok' if loss_ok else 'TOO HIGH'}"
    )
    print(
        f"open-loop chunks on {ol['samples']} samples of {trainer.train_ds.num_demos} demos: normalised MSE "
        f"{ol['nmse']:.4f} (threshold {args.nmse_threshold}), per dim {ol['nmse_per_dim']}: "
        f"{'ok' if nmse_ok else 'TOO HIGH'}"
    )
    print(f"image_effect_ratio {summary.get('image_effect_ratio')}, wrist_effect_ratio {summary.get('wrist_effect_ratio')}")
    verdict = loss_ok and nmse_ok
    print(
        f"verdict: {'PASS' if verdict else 'FAIL'}: the model {'can' if verdict else 'cannot'} memorise "
        f"{trainer.train_ds.num_demos} demos in {args.steps} steps"
    )
    return 0 if verdict else 1


if __name__ == "__main__":
    sys.exit(main())
