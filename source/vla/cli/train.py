"""Train a VLA policy from recorded demos (Isaac Lab recorder / NVIDIA Cosmos HDF5 files).

The ``vla-train`` command; ``python scripts/train.py`` and ``isaaclab -p scripts/train.py`` run the same ``main``.

    python scripts/train.py --config lift_tiny_cpu                      # config/training/lift_tiny_cpu.yaml
    python scripts/train.py --config stack_tiny_cpu data.files=[demos/stack.hdf5] max_steps=2000
    python scripts/train.py --config lift_tiny_cpu --resume             # continue output_dir's last state
    python scripts/train.py --resume outputs/lift_tiny_cpu              # same, config read from the run
    accelerate launch --config_file config/accelerate/ddp.yaml scripts/train.py --config lift_7b
    ACCELERATE_USE_CPU=true accelerate launch --config_file config/accelerate/ddp.yaml --num_processes 2 \
        --mixed_precision no scripts/train.py --config lift_tiny_cpu       # 2 CPU processes (gloo)

Overrides are key=value with dotted keys (values parsed as YAML): optim.lr_heads=3e-4,
model_overrides.d_model=256, data.key_mapping=nvidia_cosmos, output_dir=outputs/run2.
Bad input (unknown key, missing/corrupt file, wrong shapes, NaN) prints `error: ...` and exits 2 before
anything is written. Outputs: <output_dir>/{final/, checkpoints/, training_state/, tb/, metrics.jsonl,
summary.json}; `tensorboard --logdir <output_dir>/tb` shows loss, lr, grad norm, val loss, samples/s.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vla.training.config import TrainConfigError, available_configs, load_train_config


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--config",
        default=None,
        help=f"training config: a name in config/training ({', '.join(available_configs())}) or a .yaml path",
    )
    ap.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=None,
        metavar="RUN_DIR",
        help="continue from the last training state of output_dir (or of RUN_DIR, whose "
        "train_config.yaml is then used when --config is not given)",
    )
    ap.add_argument("--no_progress", action="store_true", help="no tqdm bars (plain log lines)")
    ap.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. max_steps=500")
    return ap.parse_intermixed_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from vla.training.errors import input_error_types
    from vla.training.plan import CONFIG_FILE, plan_run
    from vla.training.trainer import Trainer

    errors = input_error_types()
    try:
        overrides = list(args.overrides)
        resume = args.resume
        if isinstance(resume, str) and "=" in resume and not Path(resume).exists():  # `--resume key=value`
            overrides, resume = [resume, *overrides], True
        if args.config is None:
            if not isinstance(resume, str):
                raise TrainConfigError(
                    "pass --config NAME (one of " + ", ".join(available_configs()) + ") or --resume RUN_DIR"
                )
            run_dir = Path(resume)
            if run_dir.parent.name == "training_state":  # --resume RUN/training_state/step_N
                run_dir = run_dir.parent.parent
            if not (run_dir / CONFIG_FILE).is_file():
                raise TrainConfigError(f"{run_dir}: no {CONFIG_FILE}; pass --config with the run's config")
            config = run_dir / CONFIG_FILE
            overrides = [f"output_dir={run_dir}"] + overrides
        else:
            config = args.config
            if isinstance(resume, str) and not Path(resume).name.startswith("step_"):
                overrides = [f"output_dir={resume}"] + overrides
        cfg = load_train_config(config, overrides)
        plan = plan_run(cfg, resume)
        trainer = Trainer(plan, show_progress=not args.no_progress)
        trainer.run()
    except errors as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; continue with --resume (from the last saved training state)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
