"""Evaluate RL expert checkpoints (scripts/train_expert.py) on their task: success rate per training iteration.

Runs each checkpoint's actor deterministically (its mean) in the task's normal env without cameras, from the
same seeded initial states, and counts episodes that end on the task's ``success`` term. For a run folder
it evaluates its ``model_<it>.pt`` checkpoints (read with ``torch.load(weights_only=True)``), writes
``eval.json`` into the run and, with ``--plot``, a figure of the evaluated success rate and the training
mean episode reward (TensorBoard's ``Train/mean_reward``) against the iteration.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

EXAMPLES = """examples:
  python scripts/eval_expert.py outputs/rl_expert/Lift-Cube/RUN --num_episodes 20
  python scripts/eval_expert.py outputs/rl_expert/Lift-Cube/RUN --iterations 0 50 100 --plot eval.png
  python scripts/eval_expert.py outputs/rl_expert/Lift-Cube/RUN/exported --num_episodes 50     (one checkpoint)

exit status: 0 done, 2 bad input (one `error: ...` line).
"""


def build_parser() -> argparse.ArgumentParser:
    from vla_isaac.envs import add_sim_args

    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "path", help="a train_expert.py run folder (all its checkpoints), an exported/ folder or a model_<it>.pt"
    )
    parser.add_argument("--iterations", type=int, nargs="+", default=None, help="only these checkpoints of a run")
    parser.add_argument("--num_episodes", type=int, default=20, help="episodes per checkpoint (default 20)")
    parser.add_argument("--num_envs", type=int, default=10, help="parallel envs (default 10, MJWarp)")
    parser.add_argument("--seed", type=int, default=0, help="env seed: every checkpoint starts from the same states")
    parser.add_argument("--output", default=None, help="results JSON (default <run>/eval.json for a run folder)")
    parser.add_argument("--plot", default=None, metavar="PNG", help="write success rate + training reward vs iteration")
    add_sim_args(parser)
    return parser


def run_checkpoints(path: Path, iterations: list[int] | None) -> list[Path]:
    """The checkpoints to evaluate: a run folder's ``model_<it>.pt`` (sorted by iteration), or ``path`` itself."""
    from vla_isaac.rl_expert import META_FILE, RLExpertError

    if path.is_dir() and not (path / META_FILE).exists():
        found = {int(p.stem.split("_")[1]): p for p in path.glob("model_*.pt") if p.stem.split("_")[1].isdigit()}
        if not found:
            raise RLExpertError(f"{path}: holds no model_<it>.pt; pass a train_expert.py run or an exported/ folder")
        if iterations:
            missing = sorted(set(iterations) - set(found))
            if missing:
                raise RLExpertError(f"{path}: has no checkpoint for iteration(s) {missing}; it has {sorted(found)}")
            return [found[i] for i in sorted(iterations)]
        return [found[i] for i in sorted(found)]
    return [path]


def training_curve(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    """(iteration, value) of a TensorBoard scalar logged by rsl-rl in ``run_dir`` (empty if none)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    if tag not in acc.Tags().get("scalars", []):
        return []
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def plot(results: list[dict], curves: dict[str, list[tuple[int, float]]], out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_s, ax_r) = plt.subplots(1, 2, figsize=(8, 2.8), dpi=90)
    its = [r["iteration"] for r in results]
    ax_s.plot(its, [100 * r["success_rate"] for r in results], "o-", color="tab:green",
              label=f"evaluated, {results[0]['episodes']} episodes each, deterministic")  # fmt: skip
    if curves["train_success_rate"]:
        steps, values = zip(*curves["train_success_rate"])
        ax_s.plot(steps, [100 * v for v in values], color="tab:gray", lw=0.8, label="training episodes (stochastic)")
    ax_s.set(xlabel="PPO iteration", ylabel="success [%]", ylim=(-5, 105), title="success")
    ax_s.legend(fontsize=7, loc="upper left")
    ax_s.grid(alpha=0.3)
    if curves["train_mean_reward"]:
        steps, values = zip(*curves["train_mean_reward"])
        ax_r.plot(steps, values, color="tab:blue", lw=1)
    ax_r.set(xlabel="PPO iteration", ylabel="mean episode reward", title="training (rsl-rl)")
    ax_r.grid(alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    from collections import Counter

    from vla_isaac.envs import EnvConfigError, make_env
    from vla_isaac.evaluation import Controller, run_episodes
    from vla_isaac.rl_expert import RLExpert, load_policy

    if args.num_episodes < 1:
        raise EnvConfigError(f"--num_episodes {args.num_episodes}: must be at least 1")
    path = Path(args.path).expanduser().absolute()
    if not path.exists():
        raise EnvConfigError(f"{path}: no such file or folder")
    checkpoints = run_checkpoints(path, args.iterations)
    policies = [load_policy(c, device=args.device) for c in checkpoints]  # all errors before the env is built
    task = policies[0].meta["task"]
    env = make_env(task, num_envs=args.num_envs, device=args.device, backend=args.backend, cameras=False,
                   seed=args.seed, launcher_args=args)  # fmt: skip
    results = []
    try:
        for policy in policies:
            start = time.perf_counter()
            expert = RLExpert(env, policy, task=task)
            episodes = run_episodes(env, Controller("rl", expert, expert.reset), args.num_episodes, seed=args.seed,
                                    progress=False).episodes  # fmt: skip
            successes = sum(e.success for e in episodes)
            results.append({
                "checkpoint": str(policy.path),
                "iteration": policy.meta.get("iteration"),
                "episodes": len(episodes),
                "successes": successes,
                "success_rate": successes / len(episodes),
                "outcomes": dict(Counter(e.outcome for e in episodes)),  # success / time_out / cube_1_dropping
                "mean_episode_steps": sum(e.length for e in episodes) / len(episodes),
                "seconds": round(time.perf_counter() - start, 1),
            })  # fmt: skip
            r = results[-1]
            print(f"iteration {r['iteration']}: {successes}/{len(episodes)} successes, outcomes {r['outcomes']}, "
                  f"{r['mean_episode_steps']:.0f} steps per episode ({r['seconds']} s)", flush=True)  # fmt: skip
    finally:
        env.close()

    is_run = checkpoints[0] != path  # a run folder, evaluated checkpoint by checkpoint
    run_dir = path if is_run else path.parent  # an exported/ folder or a .pt lives in its run folder
    curves = {
        "train_mean_reward": training_curve(run_dir, "Train/mean_reward"),
        "train_success_rate": training_curve(run_dir, "Metrics/success_rate"),
    }
    summary = {
        "task": task,
        "num_envs": args.num_envs,
        "backend": env.cfg.backend,
        "seed": args.seed,
        "results": results,
        **curves,
    }
    output = Path(args.output) if args.output else (path / "eval.json" if is_run else None)
    if output:
        from vla.utils.io import atomic_write_text

        atomic_write_text(output, json.dumps(summary, indent=1) + "\n")
        print(f"results: {output}")
    print("\n| iteration | success | episode ends | mean steps |\n|---|---|---|---|")
    for r in results:
        ends = ", ".join(f"{k} {v}" for k, v in sorted(r["outcomes"].items()))
        print(f"| {r['iteration']} | {r['successes']}/{r['episodes']} | {ends} | {r['mean_episode_steps']:.0f} |")
    if args.plot:
        title = f"RL expert, {task}: run {run_dir.name}, evaluated on {summary['backend']} ({args.device})"
        plot(results, curves, Path(args.plot), title)
        print(f"plot: {args.plot}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from vla_isaac.cli.common import run_sim_command
    from vla_isaac.rl_expert import RLExpertError

    return run_sim_command(run, args, (RLExpertError,))


if __name__ == "__main__":
    sys.exit(main())
