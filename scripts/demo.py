#!/usr/bin/env python
"""`make demo`: the whole workflow on the embedded default (CPU, Newton, tiny model), end to end.

    record Lift-Cube demos with the scripted expert -> train the tiny preset -> evaluate it headless
    against the scripted expert and an untrained policy -> write a report folder

The report lands in ``outputs/demo-<time>/``: ``summary.json``, ``success_table.md``, ``loss_curve.png``,
``policy_success.mp4`` / ``policy_failure.mp4`` (a 256 px viewer camera beside the policy's two views),
``snapshots/`` (what both cameras see) and ``logs/``. Stages reuse earlier
outputs from ``outputs/demo-cache/`` when re-run with the same settings (``--fresh`` redoes them).
Each stage is its own process (Newton is one simulation per process; it also keeps memory flat).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
TASK = "Lift-Cube"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num_demos", type=int, default=100, help="expert demos to record (~2 s each at 64 px)")
    p.add_argument("--noise", type=float, default=0.03,
                   help="DART recovery data: std of the noise on the expert's executed arm command [m, rad per "
                        "step], the clean command recorded as the label (0: noise-free demos; docs/benchmarks.md)")
    p.add_argument("--miss_prob", type=float, default=0.3,
                   help="recovery data: share of demos whose first grasp misses on purpose (3-5 cm beside the cube) "
                        "and is grasped again; the miss's own steps are left out of the loss (docs/demo.md)")
    p.add_argument("--record_procs", type=int, default=2,
                   help="recording processes (one per core), each with its own seed; the files are trained on together")
    p.add_argument("--image_size", type=int, default=64, help="camera resolution (square) for recording and evaluation")
    p.add_argument("--train_steps", type=int, default=7500, help="training steps of the tiny preset (~7 min)")
    p.add_argument("--eval_episodes", type=int, default=50, help="episodes per evaluated policy")
    p.add_argument("--replan_every", type=int, default=4,
                   help="actions executed per predicted 16-step chunk by the VLA policies (4 reacts to the wrist "
                        "camera twice as often as 8 at the same evaluation time; docs/demo.md)")
    p.add_argument("--gripper_hysteresis", type=float, default=0.0,
                   help="VLA policies: latch the gripper, flipping only when the prediction crosses -h / +h")
    p.add_argument("--video_episodes", type=int, default=6,
                   help="scripts/policy_video.py: up to this many episodes of the trained policy, from a 256 px viewer "
                        "camera beside the policy's two views, until a success and a failure are filmed (0: no video)")
    p.add_argument("--eval_episode_length_s", type=float, default=None,
                   help="shorten evaluation episodes (default: the task's own length)")
    p.add_argument("--untrained_diagnosis_samples", type=int, default=128,
                   help="held-out samples of the untrained twin's diagnosis (a reference row; the trained policy's "
                        "covers every held-out sample; 0: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default=None, help="report folder (default outputs/demo-<time>)")
    p.add_argument("--cache", default=str(ROOT / "outputs" / "demo-cache"), help="where stage outputs are reused from")
    p.add_argument("--fresh", action="store_true", help="ignore cached stage outputs")
    return p


def key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:10]


def source_key(*folders: str) -> str:
    """Hash of the Python sources under ``folders``: a code change (a camera, the expert, the model)
    invalidates the cached stage outputs that depend on it."""
    h = hashlib.sha256()
    for folder in folders:
        for f in sorted((ROOT / folder).rglob("*.py")):
            h.update(str(f.relative_to(ROOT)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:10]


class Stages:
    """Runs each stage as a subprocess with its log in ``logs/``; progress bars go to the terminal."""

    def __init__(self, report: Path, total: int):
        from tqdm import tqdm

        self.report = report
        self.logs = report / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.bar = tqdm(total=total, desc="make demo", unit="stage", position=0, dynamic_ncols=True,
                        bar_format="{desc}: {n_fmt}/{total_fmt} stages |{bar}| {elapsed}")
        self.times: dict[str, float] = {}

    def run(self, name: str, cmd: list[str], show_progress: bool = True) -> None:
        self.bar.set_description(f"make demo [{name}]")
        self.run_quiet(name, cmd, show_progress)
        self.bar.update(1)

    def run_quiet(self, name: str, cmd: list[str], show_progress: bool = False) -> None:
        """One stage's process with its log and time, without touching the stage bar (safe from a worker thread)."""
        t0 = time.perf_counter()
        log = self.logs / f"{name}.log"
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with open(log, "w") as f:
            f.write("$ " + " ".join(cmd) + "\n")
            f.flush()
            # tqdm bars (stderr) stay on the terminal; the verbose Isaac Lab output (stdout) goes to the log
            proc = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=None if show_progress else f, env=env)
        self.times[name] = time.perf_counter() - t0
        if proc.returncode != 0:
            tail = log.read_text().splitlines()[-15:]
            raise SystemExit(f"error: stage '{name}' failed (exit {proc.returncode}); log: {log}\n" + "\n".join(tail))

    def run_parallel(self, name: str, cmds: list[list[str]]) -> None:
        """Several processes of one stage at once (e.g. one recording per core); logs ``name-<i>.log``."""
        t0 = time.perf_counter()
        self.bar.set_description(f"make demo [{name} x{len(cmds)}]")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        logs = [self.logs / f"{name}-{i}.log" for i in range(len(cmds))]
        procs = []
        for cmd, log in zip(cmds, logs):
            f = open(log, "w")
            f.write("$ " + " ".join(cmd) + "\n")
            f.flush()
            procs.append((subprocess.Popen(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env=env), f, log))
        failed = []
        for proc, f, log in procs:
            if proc.wait() != 0:
                failed.append((proc.returncode, log))
            f.close()
        self.times[name] = time.perf_counter() - t0
        if failed:
            rc, log = failed[0]
            tail = log.read_text().splitlines()[-15:]
            raise SystemExit(f"error: stage '{name}' failed (exit {rc}); log: {log}\n" + "\n".join(tail))
        self.bar.update(1)

    def skip(self, name: str, why: str) -> None:
        self.times[name] = 0.0
        self.bar.write(f"[{name}] reusing {why}")
        self.bar.update(1)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    t_start = time.perf_counter()
    report = Path(args.output or ROOT / "outputs" / f"demo-{time.strftime('%Y%m%d-%H%M%S')}")
    cache = Path(args.cache)
    report.mkdir(parents=True, exist_ok=True)
    st = Stages(report, total=8)
    size = str(args.image_size)

    # 1. what the robot sees: a short process, run beside the recording (which takes ~4 min)
    snapshots = ThreadPoolExecutor(max_workers=1).submit(
        st.run_quiet, "snapshots", [PY, "scripts/snapshot.py", "--task", TASK, "--output", str(report / "snapshots"),
                                    "--image_size", size, size])

    # 2. expert demos (cached by settings): one recording process per core, each its own seed and file
    sim_code = source_key("exts/vla_isaac/vla_isaac")  # scene, cameras, expert, recorder
    procs = max(1, min(args.record_procs, args.num_demos))
    shares = [args.num_demos // procs + (i < args.num_demos % procs) for i in range(procs)]
    rec_key = key(args.num_demos, args.image_size, args.seed, args.noise, args.miss_prob, procs, sim_code)
    demo_files = [cache / f"lift_demos-{rec_key}-{i}.hdf5" for i in range(procs)]
    if all(f.exists() for f in demo_files) and not args.fresh:
        st.skip("record", ", ".join(map(str, demo_files)))
    else:
        cache.mkdir(parents=True, exist_ok=True)
        cmds = [[PY, "scripts/record_demos.py", "--task", TASK, "--num_demos", str(n), "--output", str(f),
                 "--image_size", size, "--seed", str(args.seed + 1000 * i), "--noise", str(args.noise),
                 "--miss_prob", str(args.miss_prob), "--overwrite"]
                for i, (n, f) in enumerate(zip(shares, demo_files))]
        st.run_parallel("record", cmds)
    snapshots.result()  # raises if the snapshot stage failed
    st.bar.update(1)

    # 3. train the tiny preset (and save its untrained twin, the floor of the comparison)
    # the training configs' contents are part of the key: editing them retrains instead of reusing
    configs = [(ROOT / "config" / "training" / "lift_tiny_cpu.yaml").read_text(),
               (ROOT / "config" / "model" / "tiny.yaml").read_text()]
    run_dir = cache / f"train-{key(rec_key, args.train_steps, args.seed, configs, source_key('source/vla'))}"
    ckpt, untrained = run_dir / "final", cache / f"untrained-{key(run_dir.name, args.seed)}"
    common = ["--config", "lift_tiny_cpu", f"data.files=[{','.join(map(str, demo_files))}]", f"seed={args.seed}"]

    # closed-loop evaluation (step 5): the scripted expert, the trained policy and its untrained twin
    replan = ["--replan_every", str(args.replan_every), "--gripper_hysteresis", str(args.gripper_hysteresis)]
    evals = {
        "scripted expert": ["--policy", "expert"],
        "VLA tiny (trained)": ["--checkpoint", str(ckpt), *replan],
        "VLA tiny (untrained)": ["--checkpoint", str(untrained / "final"), *replan],
    }
    out_of = {name: report / "eval" / name.split(" (")[-1].rstrip(")").replace(" ", "_") for name in evals}
    out_of["scripted expert"] = report / "eval" / "expert"

    children: set[subprocess.Popen] = set()  # evaluations running in worker threads, stopped if a stage fails

    def run_child(cmd, log) -> int:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        children.add(proc)
        try:
            return proc.wait()
        finally:
            children.discard(proc)

    def run_eval(name):
        t0 = time.perf_counter()
        cmd = [PY, "scripts/eval_vla.py", "--task", TASK, *evals[name], "--num_episodes", str(args.eval_episodes),
               "--seed", str(args.seed + 100), "--image_size", size, size, "--output", str(out_of[name]),
               "--videos", "0", "--no_progress"]
        if args.eval_episode_length_s:
            cmd += ["--episode_length_s", str(args.eval_episode_length_s)]
        with open(st.logs / f"eval-{out_of[name].name}.log", "w") as f:
            rc = run_child(cmd, f)
        if rc != 0:
            raise SystemExit(f"error: evaluation of {name} failed (exit {rc}); log: {st.logs}/eval-{out_of[name].name}.log")
        st.times[f"eval-{out_of[name].name}"] = time.perf_counter() - t0
        return json.loads((out_of[name] / "summary.json").read_text())

    def run_video():  # a separate process: only it renders the viewer camera
        t0 = time.perf_counter()
        cmd = [PY, "scripts/policy_video.py", "--checkpoint", str(ckpt), "--task", TASK, "--output", str(report),
               "--seed", str(args.seed + 100), "--image_size", size, size, "--max_episodes", str(args.video_episodes),
               *replan]
        if args.eval_episode_length_s:
            cmd += ["--episode_length_s", str(args.eval_episode_length_s)]
        with open(st.logs / "video.log", "w") as f:
            rc = run_child(cmd, f)
        st.times["video"] = time.perf_counter() - t0
        return json.loads((report / "videos.json").read_text()) if rc == 0 and (report / "videos.json").exists() else {}

    # the untrained twin and the expert need no trained weights: they are evaluated on the core that the
    # single-threaded trainer leaves idle
    if not (untrained / "final" / "manifest.json").exists() or args.fresh:
        save_untrained_twin(common[2:], untrained / "final", seed=args.seed)
        st.skip("untrained", "-> saved a freshly initialised twin (same config and stats)")
    else:
        st.skip("untrained", str(untrained / "final"))
    beside_training = ThreadPoolExecutor(max_workers=1)
    jobs = {name: beside_training.submit(run_eval, name) for name in ("VLA tiny (untrained)", "scripted expert")}
    try:
        if (ckpt / "manifest.json").exists() and not args.fresh:
            st.skip("train", str(ckpt))
        else:
            if run_dir.exists():  # --fresh, or a run that stopped before its final checkpoint: start it over
                shutil.rmtree(run_dir)
            st.run("train", [PY, "scripts/train.py", *common, f"output_dir={run_dir}", f"max_steps={args.train_steps}"])
    except BaseException:  # a failed stage ends the demo now, not after the evaluations beside it
        beside_training.shutdown(wait=False, cancel_futures=True)
        for proc in list(children):
            proc.terminate()
        raise

    # 4-5. does the policy use its images (offline, on the held-out demos; docs/evaluation.md), and does it do
    # the task (closed loop)? Every remaining process in one queue, two at a time (2 cores), the longest first
    diagnosis_of = {name: report / "diagnosis" / ("trained" if "(trained)" in name else "untrained")
                    for name in ("VLA tiny (trained)", "VLA tiny (untrained)")}

    def run_diagnosis(name):
        trained = "(trained)" in name
        out, ck = diagnosis_of[name], ckpt if trained else untrained / "final"
        samples = 0 if trained else args.untrained_diagnosis_samples  # 0: every held-out sample
        st.run_quiet(f"diagnose-{out.name}", [PY, "scripts/diagnose_vla.py", "--checkpoint", str(ck), "--dataset",
                                              *map(str, demo_files), "--num_samples", str(samples),
                                              "--seed", str(args.seed), "--output", str(out)])
        return json.loads((out / "diagnosis.json").read_text())

    st.bar.set_description("make demo [diagnose + evaluate]")
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=2) as pool:  # beside whatever of the twin's evaluation is left
        jobs["VLA tiny (trained)"] = pool.submit(run_eval, "VLA tiny (trained)")
        diagnosis_jobs = {name: pool.submit(run_diagnosis, name) for name in diagnosis_of}
        video = pool.submit(run_video) if args.video_episodes > 0 else None
        diagnoses = {name: job.result() for name, job in diagnosis_jobs.items()}
        st.bar.update(2)
        summaries = {name: jobs[name].result() for name in evals}
        videos = video.result() if video else {}
    beside_training.shutdown()
    st.times["diagnose + evaluate"] = time.perf_counter() - t0
    st.bar.update(1)

    # 6. report
    st.bar.set_description("make demo [report]")
    train_summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").exists() else {}
    _loss_curve(run_dir / "metrics.jsonl", report / "loss_curve.png")
    rows = ["| policy | success | 95% CI | mean episode length | image_effect_ratio | wrist_effect_ratio "
            "| instruction_effect_ratio | val action MSE (images blanked) |", "|---|---|---|---|---|---|---|---|"]
    for name, s in summaries.items():
        lo, hi = s["success_ci95"]
        d = diagnoses.get(name)
        instr = d.get("instruction_effect_ratio") if d else None
        cond = (f"{d['image_effect_ratio']:.3f} | {d['wrist_effect_ratio']:.3f} | "
                f"{'-' if instr is None else f'{instr:.3f}'} | "
                f"{d['val_action_mse']:.3f} ({d['blank_image_val_action_mse']:.3f})") if d else "- | - | - | -"
        rows.append(f"| {name} | {s['num_success']}/{s['num_episodes']} ({s['success_rate']:.0%}) | "
                    f"{lo:.0%}-{hi:.0%} | {s['mean_episode_length']:.0f} | {cond} |")
    table = "\n".join(rows)
    if diagnoses:
        table += "\n\n" + "; ".join(f"{name}: diagnosed on {d['num_samples']} held-out samples"
                                     for name, d in diagnoses.items())
    (report / "success_table.md").write_text(f"# {TASK}: closed-loop success\n\n{table}\n")
    summary = {
        "task": TASK, "settings": vars(args), "demos": [str(f) for f in demo_files], "checkpoint": str(ckpt),
        "videos": {k: v["file"] for k, v in videos.items()},
        "training": train_summary, "evaluation": summaries, "diagnosis": diagnoses, "stage_seconds": st.times,
        "total_seconds": time.perf_counter() - t_start,
    }
    (report / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    st.bar.update(1)
    st.bar.close()

    print(f"\n{table}\n")
    print("image_effect_ratio / wrist_effect_ratio: how much swapping the context / wrist image moves the predicted\n"
          "chunk (share of the between-sample change; 0 = ignored), on held-out demos (docs/evaluation.md);\n"
          "instruction_effect_ratio: the same for another valid instruction of the task (Lift-Cube has one, so ~0)")
    for warning in train_summary.get("warnings", []):
        print(f"warning: {warning}")
    print(f"total {summary['total_seconds'] / 60:.1f} min; report: {report}")
    return 0


def save_untrained_twin(overrides: list[str], out: Path, seed: int) -> None:
    """The trained policy's floor, built before training so that it can be evaluated beside it: the training
    config's model, key mapping, instruction and normalisation stats (the trainer's ``compute_norm_stats`` over
    the same files), freshly initialised head weights."""
    import h5py
    import torch

    from vla.checkpoint import save_checkpoint
    from vla.data.hdf5 import DATA_GROUP, read_instruction
    from vla.data.stats import compute_norm_stats
    from vla.modeling import VLAModel
    from vla.training import load_train_config, plan_run

    cfg = load_train_config("lift_tiny_cpu", overrides)
    plan = plan_run(cfg)
    mapping = plan.mapping
    with h5py.File(cfg.data.files[0], "r") as f:
        instruction = cfg.data.instruction or read_instruction(f, sorted(f[DATA_GROUP])[0], mapping.instruction_attr,
                                                               mapping.instruction)
    torch.manual_seed(seed)
    model = VLAModel(plan.model_cfg)
    model.set_norm_stats(compute_norm_stats(cfg.data.files, mapping))
    save_checkpoint(model, out, key_mapping=mapping.to_dict(), instruction=instruction,
                    extra={"untrained_twin_of": "lift_tiny_cpu " + " ".join(overrides)})


def _loss_curve(metrics: Path, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not metrics.exists():
        return
    train, val = [], []
    for line in metrics.read_text().splitlines():
        if not line.strip():
            continue
        m = json.loads(line)
        if "loss" in m and "step" in m:
            train.append((m["step"], m.get("loss_avg", m["loss"])))
        v = m.get("val/loss", m.get("val_loss"))
        if v is not None and "step" in m:
            val.append((m["step"], v))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if train:
        ax.plot(*zip(*train), label="train loss (running mean)", lw=1)
    if val:
        ax.plot(*zip(*val), "o-", label="val loss")
    ax.set_xlabel("step")
    ax.set_ylabel("flow-matching loss")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
