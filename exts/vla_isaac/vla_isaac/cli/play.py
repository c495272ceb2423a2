"""Closed-loop control of an Isaac Lab task by a VLA checkpoint; prints each episode's outcome.

The ``vla-play`` command; ``python scripts/play_vla.py`` and ``isaaclab -p scripts/play_vla.py`` run the same ``main``.

Examples::

    isaaclab.sh -p scripts/play_vla.py --task Stack-Cube --checkpoint CKPT          # Isaac Lab source checkout
    isaaclab -p scripts/play_vla.py --task Stack-Cube --checkpoint CKPT --viz kit   # pip install with Isaac Sim
    python scripts/play_vla.py --task Lift-Cube --checkpoint CKPT --viz newton_gl   # kit-less, Newton's GL viewer
    python scripts/play_vla.py --task Lift-Cube --checkpoint CKPT --video           # headless, writes an mp4
    python scripts/play_vla.py --task Lift-Cube --policy_server ws://127.0.0.1:8000 # served: scripts/serve_policy.py

A viewer is used when one is requested and a display exists; otherwise it runs headless.
No checkpoint yet? ``make demo`` trains a tiny one on the CPU in minutes, or see README "Training".
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

NO_CHECKPOINT_HELP = """error: --checkpoint is required.
To get one:
  make demo                                                    # records lift demos, trains the tiny preset (CPU, minutes)
  python scripts/record_demos.py --task Lift-Cube --num_demos 50 --output demos/lift.hdf5
  python scripts/train.py --config lift_tiny_cpu data.files=[demos/lift.hdf5]
then: python scripts/play_vla.py --task Lift-Cube --checkpoint outputs/lift_tiny_cpu/final"""

VIZ_ALIASES = {"newton_gl": "newton", "kit": "kit", "none": None}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", required=True, help="task id, e.g. Stack-Cube or Lift-Cube")
    p.add_argument("--checkpoint", help="checkpoint folder written by scripts/train.py")
    p.add_argument("--policy_server", default=None, metavar="ws://HOST:PORT",
                   help="a policy served by scripts/serve_policy.py, in place of --checkpoint")
    p.add_argument("--api_key_file", default=None, help="the policy server's API key (default: $VLA_POLICY_API_KEY)")
    p.add_argument("--num_envs", type=int, default=1)
    p.add_argument("--num_episodes", type=int, default=3, help="stop after this many episodes")
    p.add_argument("--instruction", default=None,
                   help="language instruction for every env (default: each env's own for its episode: the task's "
                        "instruction, or the one Lift-Cube-Color draws per episode; never the checkpoint's)")
    p.add_argument("--replan_every", type=int, default=8)
    p.add_argument("--temporal_ensemble", action="store_true")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16"],
                   help="policy model dtype (default: bfloat16 on CUDA, float32 on the CPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--episode_length_s", type=float, default=None, help="override the task's episode length")
    p.add_argument("--output", default="outputs/play", help="folder for --video")
    p.add_argument("--video", action="store_true", help="write <output>/<task>-<time>.mp4 of env 0")
    from vla_isaac.envs import add_sim_args

    add_sim_args(p)  # Isaac Lab launcher flags (--device, --viz, ...) + --backend, --image_size
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.checkpoint and args.policy_server:
        print("error: --checkpoint and --policy_server exclude each other: play a local checkpoint or a served "
              "policy", file=sys.stderr)
        return 2
    if not args.checkpoint and not args.policy_server:
        print(NO_CHECKPOINT_HELP, file=sys.stderr)
        return 2
    if args.checkpoint and not Path(args.checkpoint).is_dir():
        print(f"error: checkpoint folder {args.checkpoint} does not exist", file=sys.stderr)
        return 2
    # --viz (Isaac Lab's launcher flag): newton_gl (Newton's OpenGL viewer), kit (Isaac Sim), none
    viz = getattr(args, "viz", None)
    viz = VIZ_ALIASES.get(viz, viz)
    if viz and not os.environ.get("DISPLAY") and viz != "kit":
        print(f"note: no display found, running headless (requested viewer: {viz})", file=sys.stderr)
        viz = None
    args.viz = viz

    import torch

    torch.set_num_threads(1)  # make_env leaves torch's threads to us; its default ones slow env steps on a small CPU

    from vla.serving.client import PolicyClient, PolicyServerError, read_api_key
    from vla.utils.device import resolve_device
    from vla_isaac.envs import make_env, make_env_cfg, resolve_task
    from vla_isaac.evaluation import make_controller, run_episodes, write_video
    from vla_isaac.policy import PolicyEnvMismatchError

    api_key = None
    try:
        task = resolve_task(args.task)
        args.device = resolve_device(getattr(args, "device", None) or "cpu")  # torchrun: cuda -> cuda:LOCAL_RANK
        if args.policy_server:  # reachable, key accepted: fail before building the env
            api_key = read_api_key(args.api_key_file)
            PolicyClient(args.policy_server, api_key=api_key).close()
    except (ValueError, PolicyServerError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    cfg = make_env_cfg(task, num_envs=args.num_envs, device=args.device,
                       backend=args.backend, seed=args.seed,
                       image_size=tuple(args.image_size) if args.image_size else None)
    if args.episode_length_s:
        cfg.episode_length_s = args.episode_length_s
    env = make_env(cfg, launcher_args=args)
    try:
        try:
            ctrl = make_controller("vla", env, checkpoint=args.checkpoint, policy_server=args.policy_server,
                                   api_key=api_key, seed=args.seed,
                                   replan_every=args.replan_every, temporal_ensemble=args.temporal_ensemble,
                                   instruction=args.instruction, dtype=args.dtype)
        except (PolicyEnvMismatchError, PolicyServerError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        said = (f"'{args.instruction}' (--instruction)" if args.instruction
                else f"each env's own instruction (env 0 now: '{ctrl.act.instruction}')")
        print(f"[play] {args.task}: {said} ({args.num_envs} env(s), {args.num_episodes} episodes)")
        if getattr(ctrl.act, "task_warning", None):
            print(f"[play] warning: {ctrl.act.task_warning}", file=sys.stderr)
        res = run_episodes(
            env, ctrl, args.num_episodes, video_episodes=args.num_episodes if args.video else 0, seed=args.seed,
            progress=False,
            on_episode=lambda r: print(f"  episode {r.episode}: env {r.env_id} {r.outcome} after {r.length} steps"),
        )
        ok = sum(r.success for r in res.episodes)
        print(f"[play] success {ok}/{len(res.episodes)}")
        if args.video and res.videos:
            frames = [f for k in sorted(res.videos) for f in res.videos[k]]
            path = write_video(frames, Path(args.output) / f"{args.task}-{time.strftime('%Y%m%d-%H%M%S')}.mp4")
            print(f"[play] video: {path}")
    finally:
        env.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
