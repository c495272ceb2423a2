"""Simulation throughput of the vla_isaac tasks on the CPU: env steps per second.

For each task, cameras on/off, and 1 env (MuJoCo-C and MJWarp), 2 and 4 envs (MJWarp), the scripted
expert drives the env (so there are grasp contacts, as when recording demos) and we count
``num_envs x env.step() calls / s``. Newton allows one env per process at a time, so each measurement
builds its env, warms it up and closes it; configurations are interleaved over rounds (order reversed
every other round) and the median per configuration is reported, so a load change on a shared machine
hits all of them alike.

    python bench/sim_throughput.py            # ~5 min on 2 cores: 2 rounds, ~3 s per measurement
    python bench/sim_throughput.py --quick    # ~2.5 min: 1 round, ~1 s per measurement
    python bench/sim_throughput.py --only render_on_demand   # the camera-schedule table alone (~2.5 min)
    python bench/sim_throughput.py --only ik_solves          # IK once per control step vs every substep (~4 min)

A second table (section ``render_on_demand``) measures what evaluation gains by rendering the cameras
only on the steps where the policy reads them (``vla_isaac.evaluation.CameraSchedule``, as
``run_episodes`` applies it): every step vs every 4th / 8th step (a VLA replanning every 4 / 8 steps)
vs never (the scripted expert, state only), side by side in one run.
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
RENDER_SETUPS = (("1 env, MuJoCo-C", 1, "mujoco_c", 6), ("4 envs, MJWarp", 4, "mjwarp", 2))  # + blocks per round
RENDER_BLOCK_STEPS = 16  # env.step() calls per block: two periods of the slowest schedule
RENDER_SCHEDULES = (  # (column label, controller.image_every)
    ("every step", None),
    ("every 4th step", 4),
    ("every 8th step", 8),
    ("never (expert)", 0),
)
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
    parser.add_argument("--only", choices=["sim_throughput", "render_on_demand", "ik_solves"], default=None,
                        help="run one of the three tables (default: all)")
    args = parser.parse_args(argv)
    rounds = args.rounds or (1 if args.quick else 2)
    seconds = args.seconds or (1.0 if args.quick else 3.0)

    import torch

    torch.set_num_threads(1)
    if args.only in (None, "sim_throughput"):
        sim_throughput_table(args, rounds, seconds)
    if args.only in (None, "render_on_demand"):
        render_on_demand_table(args, rounds)
    if args.only in (None, "ik_solves"):
        ik_solves_table(args, rounds)
    return 0


IK_BLOCKS, IK_BLOCK_STEPS, IK_EPISODES = 12, 16, 20


def measure_ik_solves(task: str, cameras: bool, blocks: int) -> dict:
    """One env (MuJoCo-C), the scripted expert driving; the arm term solves its IK once per control step or at
    every substep (``cfg.solve_every_substep``), taking turns in blocks of env steps (order reversed every other
    pair). Then the expert's success and episode lengths over the same ``IK_EPISODES`` episodes each way."""
    from vla_isaac.envs import make_env
    from vla_isaac.evaluation import CameraSchedule
    from vla_isaac.experts import ScriptedExpert, run_episodes

    env = make_env(task, num_envs=1, backend="mujoco_c", cameras=cameras, image_size=(64, 64), seed=0)
    term = env.action_manager.get_term("arm_action")
    out = {every: {"rates": [], "solves": 0, "steps": 0} for every in (False, True)}
    try:
        if cameras:
            CameraSchedule(env, 4).apply()  # as evaluation renders for a policy replanning every 4 steps
        expert = ScriptedExpert(env)
        obs, _ = env.reset(seed=0)
        for b in range(blocks):
            every = bool(b % 2) ^ bool((b // 2) % 2)
            term.cfg.solve_every_substep = every
            obs, *_ = env.step(expert(obs))  # the switch step is not timed
            solves, start = term.solves, time.perf_counter()
            for _ in range(IK_BLOCK_STEPS):
                obs, *_ = env.step(expert(obs))
            out[every]["rates"].append(IK_BLOCK_STEPS / (time.perf_counter() - start))
            out[every]["solves"] += term.solves - solves
            out[every]["steps"] += IK_BLOCK_STEPS
        for every in (False, True):
            term.cfg.solve_every_substep = every
            stats = run_episodes(env, ScriptedExpert(env), IK_EPISODES, seed=100)
            out[every]["successes"] = stats["successes"]
            out[every]["mean_steps"] = sum(stats["episode_steps"]) / len(stats["episode_steps"])
        return out
    finally:
        env.close()


def ik_solves_table(args, rounds: int) -> None:
    """env-steps/s with the IK solved once per control step vs at every substep, and the expert's success both ways."""
    from _report import machine
    from tqdm import tqdm

    setups = [(task, cams) for task in TASKS for cams in (False, True)]
    t0 = time.time()
    results = {s: measure_ik_solves(*s, IK_BLOCKS * rounds) for s in tqdm(setups, desc="IK solves")}
    elapsed = time.time() - t0
    lines = ["| task | cameras | IK solved | IK solves per env.step() | env-steps/s | speed-up "
             f"| scripted expert, {IK_EPISODES} episodes | mean episode steps |", "|---|---|---|---|---|---|---|---|"]
    for (task, cams), res in results.items():
        base = statistics.median(res[True]["rates"])
        for every, label in ((True, "every substep (Isaac Lab's term)"), (False, "once per control step (default)")):
            rec = res[every]
            v = statistics.median(rec["rates"])
            lines.append(f"| {task} | {'2 x 64x64, every 4th step' if cams else 'off'} | {label} "
                         f"| {rec['solves'] / rec['steps']:.1f} | {v:.1f} | {v / base:.2f}x "
                         f"| {rec['successes']}/{IK_EPISODES} | {rec['mean_steps']:.1f} |")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    cmd = "python bench/sim_throughput.py --only ik_solves" + (f" --rounds {args.rounds}" if args.rounds else "")
    md = "\n".join([
        "## Solving the arm's IK once per control step (CPU)",
        "",
        "Env steps per second of one env (MuJoCo-C), the scripted expert driving, with the arm's differential IK "
        "(`vla_isaac.mdp.ControlStepDifferentialIKAction`) solved once per 20 Hz control step and held over the 5 "
        "physics substeps, vs solved at every substep as Isaac Lab's `DifferentialInverseKinematicsAction` does "
        "(`solve_every_substep=True`). The two take turns in one env in blocks of "
        f"{IK_BLOCK_STEPS} env steps ({IK_BLOCKS * rounds} blocks, order reversed every other pair); median over "
        f"the blocks. Then the expert's success over the same {IK_EPISODES} episodes (seed 100) each way. `{cmd}`, "
        f"{machine()}, load average {load:.1f} at the end (compare within the table), {elapsed / 60:.1f} min.",
        "",
        *lines,
        "",
        "Each solve is dozens of small torch ops (frame pose, Jacobian, pose error, damped least squares); on the "
        "CPU they cost more than the physics substep itself. The joint target solved on the first substep is the "
        "one a 20 Hz task-space controller would hold; re-solving it toward the same pose target every substep "
        "changes it only by the arm's null-space drift. Test: `tests/test_experts.py::"
        "test_the_arm_ik_is_solved_once_per_control_step`.",
    ])
    print(md)
    if not args.no_write:
        from _report import write_section  # noqa: I001

        write_section("ik_solves", md)


def measure_schedules(num_envs: int, backend: str, blocks: int, block_steps: int) -> dict:
    """One Lift-Cube env with cameras, the scripted expert driving; the camera schedules take turns in
    blocks of ``block_steps`` env steps (order reversed every other block), so load changes on a shared
    machine hit all of them alike. Per schedule: env-steps/s of each block, camera renders and seconds spent rendering
    (each camera's ``_update_buffers_impl`` is timed when an env was due)."""
    from vla_isaac.envs import make_env
    from vla_isaac.evaluation import CameraSchedule, camera_sensors
    from vla_isaac.experts import ScriptedExpert

    env = make_env("Lift-Cube", num_envs=num_envs, backend=backend, cameras=True, seed=0)
    tally = {"renders": 0, "render_s": 0.0}
    try:
        for cam in camera_sensors(env):
            impl = cam._update_buffers_impl

            def timed(mask, impl=impl, cam=cam):
                if not cam._env_mask_has_any(mask):
                    return impl(mask)
                t = time.perf_counter()
                out = impl(mask)
                tally["render_s"] += time.perf_counter() - t
                tally["renders"] += 1
                return out

            cam._update_buffers_impl = timed
        expert = ScriptedExpert(env)
        obs, _ = env.reset(seed=0)
        for _ in range(3):
            obs, *_ = env.step(expert(obs))
        out = {every: {"rates": [], "steps": 0, "renders": 0, "render_s": 0.0} for _, every in RENDER_SCHEDULES}
        for b in range(blocks):
            for _, every in RENDER_SCHEDULES if b % 2 == 0 else RENDER_SCHEDULES[::-1]:
                schedule = CameraSchedule(env, every)
                schedule.apply()
                obs, *_ = env.step(expert(obs))  # the switch step is not timed
                tally.update(renders=0, render_s=0.0)
                start = time.perf_counter()
                for _ in range(block_steps):
                    obs, *_ = env.step(expert(obs))
                steps = block_steps
                rec = out[every]
                rec["rates"].append(num_envs * steps / (time.perf_counter() - start))
                rec["steps"] += steps
                rec["renders"] += tally["renders"]
                rec["render_s"] += tally["render_s"]
                schedule.restore()
        return out
    finally:
        env.close()


def render_on_demand_table(args, rounds: int) -> None:
    """Lift-Cube with cameras: env-steps/s per camera schedule, blocks interleaved in one env, ratios to every step."""
    from _report import machine
    from tqdm import tqdm

    results = {}
    t0 = time.time()
    for setup in tqdm(RENDER_SETUPS, desc="render schedules"):
        _, n, backend, per_round = setup
        results[setup] = measure_schedules(n, backend, per_round * rounds, RENDER_BLOCK_STEPS)
    elapsed = time.time() - t0
    lines = ["| Lift-Cube, 2 x 128x128 cameras | cameras render | env-steps/s | vs every step "
             "| camera renders per env.step() | ms rendering per env.step() |", "|---|---|---|---|---|---|"]
    for setup in RENDER_SETUPS:
        base = statistics.median(results[setup][None]["rates"])
        for label, every in RENDER_SCHEDULES:
            rec = results[setup][every]
            v = statistics.median(rec["rates"])
            lines.append(f"| {setup[0]} | {label} | {v:.1f} | {v / base:.2f}x | {rec['renders'] / rec['steps']:.2f} "
                         f"| {1000 * rec['render_s'] / rec['steps']:.1f} |")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    flags = [("--quick", args.quick), (f"--rounds {args.rounds}", args.rounds),
             (f"--seconds {args.seconds}", args.seconds), (f"--only {args.only}", args.only)]
    cmd = " ".join(["python bench/sim_throughput.py"] + [f for f, on in flags if on])
    md = "\n".join(
        [
            "## Rendering only when the policy reads the cameras (CPU)",
            "",
            "Env steps per second (`num_envs x env.step()/s`) of Lift-Cube with both cameras, the scripted expert "
            "driving, by camera schedule: `run_episodes` sets the cameras' Isaac Lab `update_period` from the "
            "controller's image steps (`Controller.image_every`: a VLA's `replan_every`, 0 for the expert), so "
            "the lazy camera sensors render only on those steps and the observation keeps the last image in "
            "between. One env per row group, the schedules taking turns in blocks of "
            f"{RENDER_BLOCK_STEPS} env steps ({', '.join(f'{s[0]}: {s[3] * rounds}' for s in RENDER_SETUPS)} "
            "blocks each, order reversed every other block); median env-steps/s over the blocks, render counts and "
            f"render time (two cameras) summed over them. `{cmd}`, {machine()}, load average {load:.1f} at the end "
            f"(other processes share the cores: compare within the table), {elapsed / 60:.1f} min.",
            "",
            *lines,
            "",
            "Identical observations on the steps the policy reads: `tests/test_eval.py::"
            "test_render_on_demand_gives_the_policy_identical_observations`. `eval_vla.py --render_all_steps` "
            "turns the schedule off; a run that records videos renders every step while it records. Each env keeps "
            "its own schedule (episode steps 0, k, 2k, ... since its last reset) and a camera renders all envs when "
            "any of them is due, so once the envs' episodes end at different steps a batch renders more often than "
            "every k-th step (the MJWarp rows; reset steps render too).",
        ]
    )
    print(md)
    if not args.no_write:
        from _report import write_section  # noqa: I001

        write_section("render_on_demand", md)


def sim_throughput_table(args, rounds: int, seconds: float) -> None:
    from _report import machine
    from tqdm import tqdm

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


if __name__ == "__main__":
    raise SystemExit(main())
