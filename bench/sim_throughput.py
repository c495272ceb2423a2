"""Simulation throughput of the vla_isaac tasks on the CPU: env steps per second.

For each task, cameras on/off, and 1 env (MuJoCo-C and MJWarp), 2 and 4 envs (MJWarp), the scripted
expert drives the env (so there are grasp contacts, as when recording demos) and we count
``num_envs x env.step() calls / s``. Newton allows one env per process at a time, so each measurement
builds its env, warms it up and closes it; configurations are interleaved over rounds (order reversed
every other round) and the median per configuration is reported, so a load change on a shared machine
hits all of them alike.

    python bench/sim_throughput.py            # ~3 min on 2 cores: 2 rounds, ~3 s per measurement
    python bench/sim_throughput.py --quick    # ~1.5 min: 1 round, ~1 s per measurement
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

TASKS = ("Lift-Cube", "Stack-Cube")
ENV_SETUPS = (  # (column label, num_envs, backend)
    ("1 env, MuJoCo-C", 1, "mujoco_c"),
    ("1 env, MJWarp", 1, "mjwarp"),
    ("2 envs, MJWarp", 2, "mjwarp"),
    ("4 envs, MJWarp", 4, "mjwarp"),
)


def measure(task: str, num_envs: int, backend: str, cameras: bool, seconds: float, warmup: int = 3) -> float:
    """env-steps/s of one configuration (builds and closes its env)."""
    from vla_isaac.envs import make_env
    from vla_isaac.experts import ScriptedExpert

    env = make_env(task, num_envs=num_envs, backend=backend, cameras=cameras, seed=0)
    try:
        expert = ScriptedExpert(env)
        obs, _ = env.reset(seed=0)
        for _ in range(warmup):
            obs, *_ = env.step(expert(obs))
        steps, start = 0, time.perf_counter()
        while steps < 3 or time.perf_counter() - start < seconds:
            obs, *_ = env.step(expert(obs))
            steps += 1
        return num_envs * steps / (time.perf_counter() - start)
    finally:
        env.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 round, ~1 s per measurement")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 2, quick 1)")
    parser.add_argument("--seconds", type=float, default=None, help="timed stepping per measurement (default 3)")
    parser.add_argument("--no-write", action="store_true", help="print the table only (no docs/benchmarks.md)")
    args = parser.parse_args(argv)
    rounds = args.rounds or (1 if args.quick else 2)
    seconds = args.seconds or (1.0 if args.quick else 3.0)

    import torch
    from _report import machine
    from tqdm import tqdm

    torch.set_num_threads(1)
    configs = [(t, cams, setup) for t in TASKS for cams in (False, True) for setup in ENV_SETUPS]
    results: dict[tuple, list[float]] = {c: [] for c in configs}
    t0 = time.time()
    with tqdm(total=rounds * len(configs), desc="measurements") as bar:
        for r in range(rounds):
            for config in configs if r % 2 == 0 else configs[::-1]:
                task, cams, (_, n, backend) = config
                results[config].append(measure(task, n, backend, cams, seconds))
                bar.update(1)
    elapsed = time.time() - t0

    header = "| task | cameras | " + " | ".join(label for label, *_ in ENV_SETUPS) + " |"
    lines = [header, "|" + "---|" * (2 + len(ENV_SETUPS))]
    for task in TASKS:
        for cams in (False, True):
            cells = [f"{statistics.median(results[(task, cams, s)]):.1f}" for s in ENV_SETUPS]
            lines.append(f"| {task} | {'2 x 128x128' if cams else 'off'} | " + " | ".join(cells) + " |")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    md = "\n".join(
        [
            "## Simulation throughput (CPU)",
            "",
            "Env steps per second (`num_envs x env.step()/s`, 20 Hz control: dt 0.01 s, decimation 5), the "
            "scripted expert driving; median of "
            f"{rounds} interleaved round(s) of ~{seconds:g} s per configuration. "
            "`bench/sim_throughput.py`"
            + (" --quick" if args.quick else "")
            + f", {machine()}, load average {load:.1f} at the end, {elapsed / 60:.1f} min.",
            "",
            *lines,
            "",
            "MuJoCo-C runs one env per process (parallelism = processes). MJWarp vectorizes envs: on Warp's "
            "CPU backend its throughput grows with the env count but stays below one MuJoCo-C env, so on the "
            "CPU one MuJoCo-C env per core is the fastest way to collect demos (MJWarp is the path for GPUs). "
            "Cameras render with Newton's Warp ray tracer.",
        ]
    )
    print(md)
    if not args.no_write:
        from _report import write_section  # noqa: I001

        write_section("sim_throughput", md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
