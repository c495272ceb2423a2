#!/usr/bin/env python
"""The Lift-Cube recovery recipe applied to Stack-Cube, end to end on the CPU (issue 15): one command.

    record   2 processes (one per core) x N DART demos with staged grasp misses (``--noise 0.03 --miss_prob 0.3``,
             seeds 0 and 1000), cached in ``outputs/stack/`` by their settings
    train    ``config/training/stack_tiny_cpu.yaml`` (the lift recipe: frozen tiny backbone, context-view state
             head over the three cubes' poses, proprio dropout 0.5) on both files
    diagnose ``scripts/diagnose_vla.py`` on held-out samples: image and instruction effects, MSE vs blank images
    evaluate ``scripts/eval_vla.py`` under ``torchrun --nproc_per_node 2`` (a rank per core, seed 100 + 1000 r,
             rank 0 merges the shards), ``--replan_every 4``, 64 px

    python bench/stack_recipe.py                           # ~1 h on 2 cores: 100 demos, 7500 steps, 50 episodes
    python bench/stack_recipe.py --episodes 20 --diagnosis_samples 256   # shorter

Prints one markdown row (docs/benchmarks.md, "Stack-Cube with the recovery recipe") and writes
``outputs/stack/<run>/result.json``. Stages whose output exists are reused (``--fresh`` redoes them).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
TASK = "Stack-Cube"


def _run(cmds: list[list[str]], logs: list[Path]) -> float:
    """Run the commands side by side (one log each); stop all and exit non-zero if one fails."""
    t0 = time.perf_counter()
    procs = []
    for cmd, log in zip(cmds, logs, strict=True):
        f = open(log, "w")
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        procs.append((subprocess.Popen(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT), f, log))
    failed = None
    for proc, f, log in procs:
        if proc.wait() != 0 and failed is None:
            failed = (proc, log)
            for other, *_ in procs:
                other.terminate()
        f.close()
    if failed:
        raise SystemExit(f"error: a stage failed (exit {failed[0].returncode}); log: {failed[1]}")
    return time.perf_counter() - t0


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    p, d = k / n, 1 + z * z / n
    c, h = (p + z * z / (2 * n)) / d, z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, c - h), min(1.0, c + h)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demos_per_proc", type=int, default=50, help="demos per recording process (2 processes)")
    ap.add_argument("--noise", type=float, default=0.03, help="DART noise on the executed expert command")
    ap.add_argument("--miss_prob", type=float, default=0.3, help="share of demos whose first grasp misses on purpose")
    ap.add_argument("--steps", type=int, default=7500, help="training steps")
    ap.add_argument("--episodes", type=int, default=50, help="closed-loop episodes (split over 2 ranks)")
    ap.add_argument("--diagnosis_samples", type=int, default=512, help="held-out samples diagnosed (0: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "outputs" / "stack"))
    ap.add_argument("--fresh", action="store_true", help="redo every stage")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}

    demo_key = hashlib.sha256(json.dumps([args.demos_per_proc, args.noise, args.miss_prob, args.seed]).encode())
    files = [out / f"stack_demos-{demo_key.hexdigest()[:10]}-{i}.hdf5" for i in range(2)]
    if args.fresh or not all(f.exists() for f in files):
        cmds = [[PY, "scripts/record_demos.py", "--task", TASK, "--num_demos", str(args.demos_per_proc),
                 "--image_size", "64", "64", "--noise", str(args.noise), "--miss_prob", str(args.miss_prob),
                 "--seed", str(args.seed + 1000 * i), "--output", str(f), "--overwrite"] for i, f in enumerate(files)]
        print(f"recording 2 x {args.demos_per_proc} {TASK} demos ...", flush=True)
        times["record"] = _run(cmds, [out / f"record-{i}.log" for i in range(2)])

    run = out / f"run-{demo_key.hexdigest()[:6]}-{args.steps}-{args.seed}"
    ckpt = run / "train" / "final"
    if args.fresh or not (ckpt / "manifest.json").exists():
        shutil.rmtree(run / "train", ignore_errors=True)
        run.mkdir(parents=True, exist_ok=True)
        print(f"training stack_tiny_cpu for {args.steps} steps ...", flush=True)
        times["train"] = _run([[PY, "scripts/train.py", "--config", "stack_tiny_cpu",
                                f"data.files=[{','.join(map(str, files))}]", f"output_dir={run / 'train'}",
                                f"max_steps={args.steps}", f"seed={args.seed}"]], [run / "train.log"])

    diag = run / "diagnosis"
    if args.fresh or not (diag / "diagnosis.json").exists():
        print(f"diagnosing on {args.diagnosis_samples or 'all'} held-out samples ...", flush=True)
        times["diagnose"] = _run([[PY, "scripts/diagnose_vla.py", "--checkpoint", str(ckpt), "--dataset",
                                   *map(str, files), "--num_samples", str(args.diagnosis_samples), "--seed", "0",
                                   "--output", str(diag)]], [run / "diagnose.log"])

    ev = run / f"eval{args.episodes}"
    if args.fresh or not (ev / "summary.json").exists():
        print(f"evaluating {args.episodes} episodes on 2 ranks ...", flush=True)
        torchrun = [PY, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
        times["evaluate"] = _run([[*torchrun, "scripts/eval_vla.py", "--task", TASK, "--checkpoint", str(ckpt),
                                   "--num_episodes", str(args.episodes), "--seed", "100", "--replan_every", "4",
                                   "--image_size", "64", "64", "--videos", "0", "--no_progress",
                                   "--output", str(ev)]], [run / f"eval{args.episodes}.log"])

    e = json.loads((ev / "summary.json").read_text())
    d = json.loads((diag / "diagnosis.json").read_text())
    t = json.loads((run / "train" / "summary.json").read_text())
    k, n = e["num_success"], e["num_episodes"]
    lo, hi = wilson(k, n)
    mse, blank = d["val_action_mse"], d["blank_image_val_action_mse"]
    row = (f"| recovery recipe, 2 x {args.demos_per_proc} DART demos + staged misses, {args.steps} steps "
           f"| {k}/{n} ({k / n:.0%}) | {lo:.0%}-{hi:.0%} | {e['mean_episode_length']:.0f} "
           f"| {d['image_effect_ratio']:.3f} | {d['wrist_effect_ratio']:.3f} | {mse:.3f} ({blank:.3f}) "
           f"| {mse / blank:.2f} | {d['num_samples']} |")
    result = {"task": TASK, "settings": vars(args), "demos": list(map(str, files)), "checkpoint": str(ckpt),
              "train": t, "diagnosis": d, "eval": e, "stage_seconds": times, "row": row}
    (run / "result.json").write_text(json.dumps(result, indent=2, default=str))
    print("| recipe | success | 95% CI | mean length | image_effect_ratio | wrist_effect_ratio | val MSE (blank) "
          "| MSE / blank | diagnosed samples |\n|---|---|---|---|---|---|---|---|---|\n" + row)
    if "subtasks_reached" in e:  # where the episodes stalled: grasp_1 (red grasped), stack_1 (red on blue), grasp_2
        print(f"subtasks reached (episodes out of {n}): {e['subtasks_reached']}")
    print(f"stage seconds: {json.dumps({k: round(v) for k, v in times.items()})}; {run / 'result.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
