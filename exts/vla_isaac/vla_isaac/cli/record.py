"""Record demonstrations of a vla_isaac task into an Isaac Lab / robomimic HDF5 file.

The ``vla-record`` command; ``python scripts/record_demos.py`` and ``isaaclab -p scripts/record_demos.py`` run the same ``main``.

Runs the scripted expert, an RL expert (scripts/train_expert.py) or Isaac Lab's keyboard teleop in one or
more envs and writes every successful episode through Isaac Lab's RecorderManager
(``data/demo_N/{actions, obs/<key>, initial_state, states}``, images uint8, the instruction as an attribute).
Ctrl-C stops after the current step and keeps every completed demo; the output path only appears once the
first demo is saved.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXAMPLES = """examples:
  python scripts/record_demos.py --task Stack-Cube --num_demos 50 --num_envs 4 --output demos/stack.hdf5
  python scripts/record_demos.py --task Lift-Cube --num_demos 20 --output demos/lift.hdf5 --image_size 64 64
  python scripts/record_demos.py --task Lift-Cube --num_demos 20 --output demos/lift.hdf5 --append
  python scripts/record_demos.py --task Lift-Cube --num_demos 20 --output demos/lift_rl.hdf5 \\
      --expert rl --expert_checkpoint outputs/rl_expert/Lift-Cube/RUN/exported
  isaaclab -p scripts/record_demos.py --task Lift-Cube --num_demos 5 --output demos/lift.hdf5   (same flags)

exit status: 0 all demos recorded, 1 fewer (--max_attempts reached), 2 bad input, 130 interrupted
(the demos completed before the interrupt are in the file).
"""


def image_size(values: list[int]) -> tuple[int, int]:
    """``[64]`` -> (64, 64); ``[96, 128]`` -> (96, 128) (height, width), as the other scripts' ``--image_size H W``."""
    if len(values) not in (1, 2) or min(values) < 8:
        raise SystemExit(f"error: --image_size {' '.join(map(str, values))}: expected H W (or one size for square), each >= 8")
    return (values[0], values[-1])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--task", required=True, help="task id: Lift-Cube or Stack-Cube (or lift / stack)")
    parser.add_argument("--output", required=True, help="HDF5 file to write, e.g. demos/stack.hdf5")
    parser.add_argument("--num_demos", type=int, default=10, help="successful demos to record (default 10)")
    parser.add_argument("--num_envs", type=int, default=1, help="parallel envs (default 1; >1 uses MJWarp)")
    parser.add_argument(
        "--expert",
        choices=("scripted", "rl", "keyboard"),
        default="scripted",
        help="scripted waypoint expert (default), rl: a PPO actor from scripts/train_expert.py (needs "
        "--expert_checkpoint), or Isaac Lab's Se3Keyboard (needs a display and Isaac Sim)",
    )
    parser.add_argument(
        "--expert_checkpoint",
        default=None,
        metavar="PATH",
        help="--expert rl: the exported/ folder of a train_expert.py run (or the run folder, or one of its "
        "model_<it>.pt, read with torch.load(weights_only=True))",
    )
    parser.add_argument(
        "--noise", type=float, default=0.0,
        help="std of Gaussian noise on the scripted expert's executed arm command [m, rad per step]; the clean "
        "command is recorded as `actions` (the label), the noisy one as `executed_actions` (DART recovery data)",
    )
    parser.add_argument(
        "--miss_prob", type=float, default=0.0,
        help="scripted expert: share of demos whose first grasp misses on purpose (3-5 cm beside the "
        "cube) and is then recovered; the miss's steps are marked in `label_valid` and left out of the "
        "training loss, so the demos teach recovering from a missed grasp (default 0)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="env seed (cube placements, noise); default 0, or with --append the file's demo count so that "
        "appended demos differ from the ones already there",
    )
    parser.add_argument(
        "--image_size", type=int, nargs="+", default=[128, 128], metavar="H W",
        help="camera resolution H W, or one number for square (default 128 128; 200 200 matches Cosmos data)",
    )
    parser.add_argument(
        "--backend",
        choices=("auto", "mujoco_c", "mjwarp", "physx"),
        default="auto",
        help="physics: auto = MuJoCo-C for 1 env on the CPU, else MJWarp; physx needs Isaac Sim",
    )
    files = parser.add_mutually_exclusive_group()
    files.add_argument("--append", action="store_true", help="add demos to an existing file (numbering continues)")
    files.add_argument("--overwrite", action="store_true", help="replace an existing file (once a new demo exists)")
    parser.add_argument("--keep_failed", action="store_true", help="also write failed episodes (attr success=False)")
    parser.add_argument(
        "--success_steps", type=int, default=1, help="consecutive successful steps that end a demo (default 1)"
    )
    parser.add_argument(
        "--max_attempts", type=int, default=None, help="give up after this many finished episodes (default: no limit)"
    )
    from isaaclab.app import add_launcher_args

    add_launcher_args(parser)  # --device, --viz, --kit_args ... (Isaac Lab's launcher)
    parser.set_defaults(device="cpu")
    return parser


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("vla-isaac")
    except PackageNotFoundError:
        return "unknown"


def run(args: argparse.Namespace) -> int:
    import torch

    from vla_isaac import recording
    from vla_isaac.envs import make_env, make_env_cfg, resolve_task

    task = resolve_task(args.task)
    mode = "append" if args.append else "overwrite" if args.overwrite else "new"
    output = recording.check_output_path(args.output, mode, task)  # fail before the env is built
    if args.num_demos < 1:
        raise recording.RecordingError(f"--num_demos {args.num_demos}: must be at least 1")
    if args.expert == "keyboard":
        recording.check_keyboard_available()
        if args.num_envs != 1:
            raise recording.RecordingError(f"--expert keyboard drives one env; got --num_envs {args.num_envs}")
        args.visualizer = args.visualizer or ["kit"]  # the keyboard listens to Kit's window
    if not 0.0 <= args.miss_prob <= 1.0:
        raise recording.RecordingError(f"--miss_prob {args.miss_prob}: must be in [0, 1] (a share of the demos)")
    if args.miss_prob > 0 and args.expert != "scripted":
        raise recording.RecordingError(
            f"--miss_prob stages grasp misses with the scripted expert; got --expert {args.expert}")
    rl_policy = None
    if (args.expert == "rl") != (args.expert_checkpoint is not None):
        raise recording.RecordingError("--expert rl and --expert_checkpoint PATH go together (a train_expert.py run)")
    if args.expert == "rl":  # read and check the checkpoint before the env is built
        from vla_isaac.rl_expert import check_task, load_policy

        rl_policy = load_policy(args.expert_checkpoint, device=args.device)
        check_task(rl_policy, task)

    if args.seed is None:
        args.seed = len(recording.read_dataset_info(output).demos) if output.exists() and mode == "append" else 0
    env_cfg = make_env_cfg(
        task,
        num_envs=args.num_envs,
        device=args.device,
        backend=args.backend,
        cameras=True,
        image_size=args.image_size,
        seed=args.seed,
    )
    env_kwargs = {
        "task": task,
        "vla_isaac_version": _package_version(),
        "backend": env_cfg.backend,
        "device": args.device,
        "num_envs": args.num_envs,
        "cameras": True,
        "image_size": list(args.image_size),
        "seed": args.seed,
        "expert": args.expert,
        "noise": args.noise,
        "miss_prob": args.miss_prob,
    }
    if rl_policy is not None:
        env_kwargs["expert_checkpoint"] = str(rl_policy.path)
        env_kwargs["expert_iteration"] = rl_policy.meta.get("iteration")
    success = recording.configure_recording(
        env_cfg, output, env_name=task, mode=mode, keep_failed=args.keep_failed, env_kwargs=env_kwargs
    )
    with recording.graceful_interrupt() as stop:
        env = make_env(env_cfg, launcher_args=args)
        try:
            if args.expert == "keyboard":
                expert = recording.KeyboardExpert(env)
            elif args.expert == "rl":
                from vla_isaac.rl_expert import RLExpert

                expert = RLExpert(env, rl_policy, task=task)
            else:
                from vla_isaac.experts import ScriptedExpert

                noise_rng = torch.Generator().manual_seed(args.seed)  # reproducible expert noise
                expert = ScriptedExpert(env, noise_std=args.noise, generator=noise_rng, miss_prob=args.miss_prob)
            stats = recording.record_demos(
                env,
                expert,
                args.num_demos,
                success,
                success_steps=args.success_steps,
                max_attempts=args.max_attempts,
                stop=stop,
            )
        finally:
            env.close()
    print(stats.summary())
    if output.exists():
        print(f"file: {output} ({output.stat().st_size / 1e6:.2f} MB)")
    else:
        print(f"no demo was completed, so {output} was not written")
    if stats.interrupted:
        return 130
    return 0 if stats.demos >= args.num_demos else 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.image_size = image_size(args.image_size)
    if Path(args.output).exists() and not (args.append or args.overwrite):  # before the slow imports
        print(f"error: {args.output}: already exists; pass --append to add demos to it or --overwrite to replace it",
              file=sys.stderr)  # fmt: skip
        return 2
    from vla_isaac.experts import ExpertError
    from vla_isaac.recording import RecordingError
    from vla_isaac.rl_expert import RLExpertError

    from .common import run_sim_command

    return run_sim_command(run, args, (RecordingError, ExpertError, RLExpertError))


if __name__ == "__main__":
    sys.exit(main())
