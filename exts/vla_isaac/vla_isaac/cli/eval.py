"""Headless batch evaluation of a VLA checkpoint (or the scripted expert) in an Isaac Lab task.

The ``vla-eval`` command; ``python scripts/eval_vla.py`` and ``isaaclab -p scripts/eval_vla.py`` run the same ``main``.

Examples::

    python scripts/eval_vla.py --task Lift-Cube --checkpoint outputs/lift_tiny/final --num_episodes 100 --num_envs 8
    python scripts/eval_vla.py --task Lift-Cube --policy expert --num_episodes 50        # reference row
    python scripts/eval_vla.py --task Lift-Cube --policy_server ws://127.0.0.1:8000      # served: scripts/serve_policy.py
    python scripts/eval_vla.py --task Lift-Cube --policy lerobot --checkpoint LEROBOT_CKPT  # ACT etc.: docs/lerobot.md
    torchrun --nproc_per_node 2 scripts/eval_vla.py --task Lift-Cube --checkpoint CKPT   # episodes sharded over processes
    torchrun --nproc_per_node 8 scripts/eval_vla.py --task Stack-Cube --checkpoint CKPT --device cuda  # rank r on cuda:r
    isaaclab -p scripts/eval_vla.py --task Stack-Cube --checkpoint CKPT --device cuda:0

Each env runs a fixed quota of episodes (``--num_episodes`` split over processes, then envs), so short
successful episodes are not over-counted. Cameras render only on the steps where the policy reads them
(every ``--replan_every`` steps for a VLA, never for the expert); ``--render_all_steps`` turns that off.

Writes to ``--output`` (default ``outputs/eval/<task>-<policy>-<time>``): ``episodes.jsonl`` (one JSON
line per episode), ``summary.json`` (success rate with its 95% Wilson interval, mean episode length,
outcomes) and ``videos/episode_NNN.mp4`` (both cameras side by side, env 0's first episodes).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", required=True, help="task id, e.g. Lift-Cube or Stack-Cube")
    p.add_argument("--policy", default="vla", choices=["vla", "lerobot", "expert", "zero", "random"],
                   help="controller to evaluate (lerobot: a LeRobot policy, needs the [lerobot] extra)")
    p.add_argument("--checkpoint", help="checkpoint folder (for --policy vla or lerobot)")
    p.add_argument("--policy_server", default=None, metavar="ws://HOST:PORT",
                   help="for --policy vla: a policy served by scripts/serve_policy.py, in place of --checkpoint")
    p.add_argument("--api_key_file", default=None, help="the policy server's API key (default: $VLA_POLICY_API_KEY)")
    p.add_argument("--num_episodes", type=int, default=100, help="episodes to evaluate (over all processes)")
    p.add_argument("--num_envs", type=int, default=1, help="parallel envs per process (1 uses MuJoCo-C, the fastest on a CPU)")
    p.add_argument("--seed", type=int, default=0, help="seed of env randomisation and flow-matching noise")
    p.add_argument("--replan_every", type=int, default=8, help="actions executed per predicted 16-step chunk")
    p.add_argument("--temporal_ensemble", action="store_true", help="average overlapping chunks (ACT-style)")
    p.add_argument("--gripper_hysteresis", type=float, default=0.0,
                   help="latch the gripper: flip only when the prediction crosses -h / +h (0: raw value)")
    p.add_argument("--noise_scale", type=float, default=1.0,
                   help="scale of the flow sampler's starting noise (1: as trained; 0: one deterministic chunk)")
    p.add_argument("--flow_steps", type=int, default=None, help="Euler steps of the flow sampler (default: checkpoint's)")
    p.add_argument("--compile", default="none", choices=["none", "graphs"],
                   help="graphs: static shapes + CUDA graphs for the LM and the expert step (vla.model.static)")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16"],
                   help="policy model dtype (default: bfloat16 on CUDA, float32 on the CPU)")
    p.add_argument("--render_all_steps", action="store_true",
                   help="render the cameras on every step, not only on those where the policy reads them")
    p.add_argument("--instruction", default=None,
                   help="give every env this instruction (default: each env's own for its episode, e.g. the colour "
                        "Lift-Cube-Color draws; never the checkpoint's): a fixed or wrong one measures what the "
                        "instruction is worth")
    p.add_argument("--episode_length_s", type=float, default=None, help="override the task's episode length")
    p.add_argument("--videos", type=int, default=2, help="mp4 videos of the first N episodes of env 0 (0: none)")
    p.add_argument("--output", default=None, help="output folder")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    from vla_isaac.envs import add_sim_args

    add_sim_args(p)  # Isaac Lab launcher flags (--device, --viz, ...) + --backend, --image_size
    return p


def dist_info() -> tuple[int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def shard(total: int, rank: int, world: int) -> int:
    return total // world + (1 if rank < total % world else 0)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    rank, world = dist_info()
    if args.checkpoint and args.policy_server:
        print("error: --checkpoint and --policy_server exclude each other: evaluate a local checkpoint or a served "
              "policy", file=sys.stderr)
        return 2
    if args.compile != "none" and args.policy_server:
        print("error: --compile applies to an in-process checkpoint; start the server with "
              "`serve_policy.py --compile graphs` instead", file=sys.stderr)
        return 2
    if args.policy == "vla" and not args.checkpoint and not args.policy_server:
        print("error: --policy vla needs --checkpoint CKPT (train one: python scripts/train.py --config "
              "config/training/lift_tiny_cpu.yaml, or run `make demo`); use --policy expert for the reference row",
              file=sys.stderr)
        return 2
    if args.policy == "lerobot" and (not args.checkpoint or args.policy_server):
        print("error: --policy lerobot needs --checkpoint DIR (a LeRobot policy, e.g. lerobot-train's output; "
              "docs/lerobot.md) and no --policy_server", file=sys.stderr)
        return 2
    if args.checkpoint and not Path(args.checkpoint).is_dir():
        print(f"error: checkpoint folder {args.checkpoint} does not exist", file=sys.stderr)
        return 2

    import torch

    torch.set_num_threads(1)  # make_env leaves torch's threads to us; its default ones slow env steps on a small CPU

    from vla.eval.metrics import summarize
    from vla.utils.device import DeviceError, resolve_device, resolve_dtype

    try:  # under torchrun each rank takes its own GPU: cuda -> cuda:LOCAL_RANK
        args.device = resolve_device(getattr(args, "device", None) or "cpu")
        dtype = resolve_dtype(args.dtype, args.device)
    except DeviceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    from vla.serving.client import PolicyClient, PolicyServerError, read_api_key
    from vla_isaac.envs import make_env, make_env_cfg, resolve_task
    from vla_isaac.evaluation import make_controller, run_episodes, write_video

    api_key = None
    try:
        task = resolve_task(args.task)
        if args.checkpoint and args.policy == "lerobot":
            from vla_isaac.lerobot_policy import resolve_checkpoint

            resolve_checkpoint(args.checkpoint)  # a LeRobot config.json + model.safetensors, before the env is built
        elif args.checkpoint:
            from vla.checkpoint import read_checkpoint_config

            read_checkpoint_config(args.checkpoint)  # verifies the manifest before anything is written
        if args.policy_server and args.policy == "vla":  # reachable, key accepted: fail before building the env
            api_key = read_api_key(args.api_key_file)
            PolicyClient(args.policy_server, api_key=api_key).close()
    except (ValueError, PolicyServerError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.output or f"outputs/eval/{args.task}-{args.policy}-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    seed = args.seed + 1000 * rank
    torch.manual_seed(seed)
    cfg_kw = {}
    if args.image_size:
        cfg_kw["image_size"] = tuple(args.image_size)
    cfg = make_env_cfg(task, num_envs=args.num_envs, device=args.device, backend=args.backend, seed=seed, **cfg_kw)
    if args.episode_length_s:
        cfg.episode_length_s = args.episode_length_s
    env = make_env(cfg, launcher_args=args)
    try:
        policy_kw = {}
        if args.policy == "vla":
            policy_kw = dict(
                replan_every=args.replan_every,
                temporal_ensemble=args.temporal_ensemble,
                gripper_hysteresis=args.gripper_hysteresis,
                noise_scale=args.noise_scale,
                num_flow_steps=args.flow_steps,
                dtype=dtype,
                instruction=args.instruction,
            )
            if args.compile != "none":  # in-process model only (a policy server has its own --compile)
                policy_kw["compile"] = args.compile
        elif args.policy == "lerobot":
            policy_kw = dict(instruction=args.instruction)
        try:
            ctrl = make_controller(args.policy, env, checkpoint=args.checkpoint, policy_server=args.policy_server,
                                   api_key=api_key, seed=seed, **policy_kw)
        except (ValueError, ImportError, PolicyServerError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        n_mine = shard(args.num_episodes, rank, world)
        episodes_path = out / (f"episodes.rank{rank}.jsonl" if world > 1 else "episodes.jsonl")
        tmp = episodes_path.with_suffix(".jsonl.tmp")
        with open(tmp, "w") as f:
            res = run_episodes(
                env, ctrl, n_mine, video_episodes=args.videos if rank == 0 else 0, seed=seed, rank=rank,
                progress=not args.no_progress and rank == 0, render_on_demand=not args.render_all_steps,
                on_episode=lambda r: (f.write(json.dumps(r.to_json()) + "\n"), f.flush()),  # progress, as they end
            )
        # the final file lists them in episode order (deterministic given the seed)
        tmp.write_text("".join(json.dumps(r.to_json()) + "\n" for r in res.episodes))
        os.replace(tmp, episodes_path)
        for k, frames in sorted(res.videos.items()):
            write_video(frames, out / "videos" / f"episode_{k:03d}.mp4")
        meta = dict(
            task=args.task, policy=args.policy, checkpoint=args.checkpoint, policy_server=args.policy_server,
            seed=args.seed, num_envs=args.num_envs,
            world_size=world, replan_every=args.replan_every, temporal_ensemble=args.temporal_ensemble,
            gripper_hysteresis=args.gripper_hysteresis, noise_scale=args.noise_scale, device=args.device,
            dtype=str(dtype).removeprefix("torch.") if args.policy == "vla" and not args.policy_server else None,
            instruction=args.instruction or "each env's own", task_warning=getattr(ctrl.act, "task_warning", None),
            render_on_demand=res.render_on_demand, complete=res.complete,
            env_steps_per_s=res.env_steps * args.num_envs / max(res.wall_s, 1e-9), wall_s=res.wall_s,
        )
    finally:
        env.close()

    if world > 1:
        import torch.distributed as dist

        dist.init_process_group("gloo")
        dist.barrier()
        if rank == 0:
            _merge_shards(out, world)
        dist.destroy_process_group()
        if rank != 0:
            return 0
    summary = summarize(_load_episodes(out / "episodes.jsonl"), **meta)
    from vla.utils.io import atomic_write_text

    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    lo, hi = summary["success_ci95"]
    print(
        f"{args.task} {args.policy}: success {summary['num_success']}/{summary['num_episodes']} = "
        f"{summary['success_rate']:.1%} (95% CI {lo:.1%}-{hi:.1%}), mean length {summary['mean_episode_length']:.1f} "
        f"steps -> {out}"
    )
    print(f"outcomes: {summary['outcomes']}")  # Lift-Cube-Color: success = the named cube, wrong_cube = another
    if "subtasks_reached" in summary:  # multi-stage tasks: where the failed episodes stalled
        print(f"subtasks reached (episodes out of {summary['num_episodes']}): {summary['subtasks_reached']}")
    return 0


def _load_episodes(path: Path):
    from vla.eval.metrics import EpisodeResult

    with open(path) as f:
        return [EpisodeResult(**json.loads(line)) for line in f if line.strip()]


def _merge_shards(out: Path, world: int) -> None:
    lines = []
    for r in range(world):
        with open(out / f"episodes.rank{r}.jsonl") as f:
            lines += [json.loads(x) for x in f if x.strip()]
    for i, d in enumerate(lines):
        d["episode"] = i
    tmp = out / "episodes.jsonl.tmp"
    tmp.write_text("".join(json.dumps(d) + "\n" for d in lines))
    os.replace(tmp, out / "episodes.jsonl")


if __name__ == "__main__":
    sys.exit(main())
