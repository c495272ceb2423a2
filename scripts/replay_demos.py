"""Replay recorded demos and report how many reproduce success (a determinism check).

Each demo's env is reset to its stored ``initial_state`` (``env.reset_to``) and its recorded ``actions``
are applied open-loop; a demo reproduces when the task's success term fires during the replay. Cameras are
off by default (physics does not depend on them, and replay is several times faster without).
"""

from __future__ import annotations

import argparse
import sys

EXAMPLES = """examples:
  python scripts/replay_demos.py --dataset demos/lift.hdf5
  python scripts/replay_demos.py --dataset demos/stack.hdf5 --task Stack-Cube --demos 0 3 demo_7
  isaaclab -p scripts/replay_demos.py --dataset demos/lift.hdf5 --strict

exit status: 0 (1 with --strict when a demo does not reproduce), 2 bad input, 130 interrupted.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", required=True, help="HDF5 file written by scripts/record_demos.py")
    parser.add_argument("--task", default=None, help="task id (default: the env_name stored in the file)")
    parser.add_argument(
        "--demos", nargs="+", default=None, help="demos to replay: demo_N names or indices N (default all)"
    )
    parser.add_argument("--num_envs", type=int, default=1, help="demos replayed in parallel (default 1)")
    parser.add_argument(
        "--backend",
        choices=("auto", "mujoco_c", "mjwarp", "physx"),
        default=None,
        help="physics backend (default: the one the demos were recorded with)",
    )
    parser.add_argument("--cameras", action="store_true", help="render the cameras too (slower; same physics)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when any demo does not reproduce success")
    from isaaclab.app import add_launcher_args

    add_launcher_args(parser)
    parser.set_defaults(device="cpu")
    return parser


def _demo_names(requested: list[str] | None) -> list[str] | None:
    if not requested:
        return None
    return [f"demo_{r}" if r.isdigit() else r for r in requested]


def run(args: argparse.Namespace) -> int:
    from vla_isaac import recording
    from vla_isaac.envs import make_env, make_env_cfg, resolve_task

    info = recording.read_dataset_info(args.dataset)
    if not info.demos:
        raise recording.RecordingError(f"{info.path}: holds no demos")
    task_name = args.task or info.env_name
    if not task_name:
        raise recording.RecordingError(f"{info.path}: stores no env_name; pass --task")
    task = resolve_task(task_name)
    env_kwargs = info.env_args.get("env_kwargs", {})
    backend = args.backend or env_kwargs.get("backend", "auto")
    if backend == "mujoco_c" and args.num_envs > 1:
        backend = "mjwarp"  # MuJoCo-C runs one env per process
    image_size = tuple(env_kwargs.get("image_size", (128, 128)))

    env_cfg = make_env_cfg(
        task, num_envs=args.num_envs, device=args.device, backend=backend, cameras=args.cameras, image_size=image_size
    )
    success = recording.configure_replay(env_cfg)
    with recording.graceful_interrupt() as stop:
        env = make_env(env_cfg, launcher_args=args)
        try:
            stats = recording.replay_demos(env, info.path, success, demos=_demo_names(args.demos), stop=stop)
        finally:
            env.close()
    for r in stats.results:
        if not r.replayed_success:
            print(
                f"  {r.demo}: did not reproduce success ({r.num_samples} steps, recorded success={r.recorded_success})"
            )
    print(f"{stats.summary()} [{info.path}, task {task}, backend {env_cfg.backend}]")
    if stop.requested:
        return 130
    return 1 if args.strict and stats.reproduced < len(stats.results) else 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from vla_isaac.cli.common import run_sim_command
    from vla_isaac.recording import RecordingError

    return run_sim_command(run, args, (RecordingError,))


if __name__ == "__main__":
    sys.exit(main())
