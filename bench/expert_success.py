#!/usr/bin/env python
"""Scripted-expert success rates (the reference row of every evaluation), through scripts/eval_vla.py.

    python bench/expert_success.py                 # 50 episodes per task (~10 min on 2 cores)
    python bench/expert_success.py --episodes 10

Runs `eval_vla.py --policy expert` for Lift-Cube and Stack-Cube (MuJoCo-C, 1 env, cameras on) and writes
the success rates with 95% Wilson intervals to docs/benchmarks.md (section `expert_success`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from _report import machine, write_section  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--no_write", action="store_true")
    args = ap.parse_args(argv)
    rows = ["| task | success | 95% Wilson CI | mean episode length (steps at 20 Hz) |", "|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        for task in ("Lift-Cube", "Stack-Cube"):
            out = Path(tmp) / task
            cmd = [sys.executable, "scripts/eval_vla.py", "--task", task, "--policy", "expert", "--num_episodes",
                   str(args.episodes), "--videos", "0", "--no_progress", "--output", str(out)]
            r = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL)
            if r.returncode:
                print(f"error: {' '.join(cmd)} failed ({r.returncode})", file=sys.stderr)
                return r.returncode
            s = json.loads((out / "summary.json").read_text())
            lo, hi = s["success_ci95"]
            rows.append(f"| {task} | {s['num_success']}/{s['num_episodes']} | {lo:.0%}-{hi:.0%} | "
                        f"{s['mean_episode_length']:.0f} |")
    md = "\n".join([
        "## Scripted experts (`bench/expert_success.py`)",
        f"`python bench/expert_success.py --episodes {args.episodes}`: MuJoCo-C, 1 env, cameras 128x128, seed 0. "
        f"Machine: {machine()}.", "", *rows])
    print(md)
    if not args.no_write:
        write_section("expert_success", md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
