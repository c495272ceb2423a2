#!/usr/bin/env python
"""Does the CPU-trained tiny policy use its images? The levers of the lift recipe, side by side.

Trains the tiny preset on the same Lift-Cube demos once per lever (``config/training/lift_tiny_cpu.yaml``
plus the lever's overrides, same seed and steps), then runs ``scripts/diagnose_vla.py`` on the held-out
demos of each run and tabulates ``image_effect_ratio`` (context view swapped), ``wrist_effect_ratio``,
``val_action_mse`` and ``blank_image_val_action_mse`` (both views replaced by their mean image), with the
training wall time. Writes the "conditioning_levers" section of docs/benchmarks.md.

    python bench/conditioning_levers.py --demos outputs/demo-cache/lift_demos-<key>.hdf5
    python bench/conditioning_levers.py            # records 100 demos at 64 px first (~3 min)

The runs are sequential (one process, one thread each): on 2 cores expect ~3-5 min per lever.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable

# (label, overrides on top of config/training/lift_tiny_cpu.yaml, whose recipe is wrist_dropout 0.7 +
# proprio_dropout 0.5 + the cube-position probe). Every row keeps the frozen cached features, the
# LayerNorm + Linear projector and the memory position embeddings of config/model/tiny.yaml.
# (issue 15 made wrist dropout 0 the config's default; the rows pin it explicitly.)
OFF = {"wd": "levers.wrist_dropout=0.0", "pd": "levers.proprio_dropout=0.0", "aux": "aux_state.keys=[]"}
WD = "levers.wrist_dropout=0.7"
# these rows measure the probe-era recipe: no state head (the config's default now), the context-view probe
PROBE_RECIPE = ["model_overrides.state_dim=0", "aux_state.keys=[cube_positions]"]
LEVERS = [
    ("no lever", [OFF["wd"], OFF["pd"], OFF["aux"]]),
    ("wrist-token dropout 0.7", [WD, OFF["pd"], OFF["aux"]]),
    ("cube-position probe (aux loss 0.5)", [OFF["wd"], OFF["pd"]]),
    ("proprio dropout 0.5", [OFF["wd"], OFF["aux"]]),
    ("wrist-token dropout 0.7 + probe", [WD, OFF["pd"]]),
    ("issue 10's recipe: wrist-token dropout 0.7 + proprio dropout 0.5 + probe", [WD]),
    ("**issue 15's default**: proprio dropout 0.5 + probe, no wrist dropout", []),
]


def run(cmd: list[str], log: Path) -> None:
    with open(log, "w") as f:
        rc = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        raise SystemExit(f"error: {' '.join(cmd[:3])} failed (exit {rc}); log: {log}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demos", default=None, help="Lift-Cube HDF5 demos (default: record 100 at 64 px)")
    ap.add_argument("--steps", type=int, default=4000, help="training steps per lever (make demo's budget)")
    ap.add_argument("--only", type=int, nargs="*", default=None, help="run only these lever rows (0-based)")
    ap.add_argument("--output", default=str(ROOT / "outputs" / "bench-conditioning"), help="run folders")
    ap.add_argument("--no_write", action="store_true", help="print the table only")
    args = ap.parse_args(argv)

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    demos = Path(args.demos) if args.demos else out / "lift_demos.hdf5"
    if not demos.exists():
        if args.demos:
            raise SystemExit(f"error: {demos}: file not found; record demos with scripts/record_demos.py")
        print(f"recording 100 Lift-Cube demos -> {demos}", flush=True)
        run([PY, "scripts/record_demos.py", "--task", "Lift-Cube", "--num_demos", "100", "--image_size", "64", "64",
             "--seed", "0", "--output", str(demos), "--overwrite"], out / "record.log")

    rows = []
    for i, (label, overrides) in enumerate(LEVERS):
        if args.only is not None and i not in args.only:
            continue
        run_dir = out / f"lever{i}"
        if run_dir.exists():
            import shutil

            shutil.rmtree(run_dir)
        print(f"[{i}] {label}", flush=True)
        t = time.perf_counter()
        run([PY, "scripts/train.py", "--config", "lift_tiny_cpu", "--no_progress", f"data.files=[{demos}]",
             f"output_dir={run_dir}", f"max_steps={args.steps}", *PROBE_RECIPE, *overrides], out / f"lever{i}-train.log")
        wall = time.perf_counter() - t
        run([PY, "scripts/diagnose_vla.py", "--checkpoint", str(run_dir / "final"), "--dataset", str(demos),
             "--num_samples", "512", "--output", str(run_dir / "diagnosis")], out / f"lever{i}-diagnose.log")
        d = json.loads((run_dir / "diagnosis" / "diagnosis.json").read_text())
        rows.append((label, d, wall))
        print(f"    image_effect_ratio {d['image_effect_ratio']:.3f}, wrist_effect_ratio {d['wrist_effect_ratio']:.3f}, "
              f"val_action_mse {d['val_action_mse']:.4f} (blank {d['blank_image_val_action_mse']:.4f}), "
              f"{wall / 60:.1f} min", flush=True)

    table = ["| lever | image_effect_ratio (context) | wrist_effect_ratio | val_action_mse | blank-image MSE | "
             "MSE / blank | train wall time |", "|---|---|---|---|---|---|---|"]
    for label, d, wall in rows:
        mse, blank = d["val_action_mse"], d["blank_image_val_action_mse"]
        table.append(f"| {label} | {d['image_effect_ratio']:.3f} | {d['wrist_effect_ratio']:.3f} | {mse:.4f} | "
                     f"{blank:.4f} | {mse / blank:.2f} | {wall / 60:.1f} min |")
    text = "\n".join(table)
    print(text)
    if not args.no_write and args.only is None:
        n = rows[0][1]["num_samples"] if rows else 0
        write_section("conditioning_levers", f"""## Conditioning levers of the tiny lift recipe (`bench/conditioning_levers.py`)

{machine()}. Lift-Cube, 100 scripted demos at 64 px ({demos.name}), {args.steps} steps each, seed 0;
diagnosis on {n} held-out samples (10 demos), 10 flow steps, MSE mean of 3 noise draws, normalised action space.
Wall time includes the one-off feature pass; runs share the machine with nothing else only when it is quiet.

{text}

    python bench/conditioning_levers.py --demos {demos}
""")
    return 0


if __name__ == "__main__":
    sys.exit(main())
