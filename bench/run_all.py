#!/usr/bin/env python
"""`make bench`: run every benchmark in bench/ and rewrite docs/benchmarks.md.

Each benchmark runs in its own process (Newton is one simulation per process) and replaces its own
section of docs/benchmarks.md; this script then adds the machine/command header and a plot
(docs/images/benchmarks.png) of the simulation throughput table. GPU figures come from `make bench-gpu`
(bench/gpu_suite.py), measured on the GPU they name.

    python bench/run_all.py            # full (~15 min on a 2-core machine)
    python bench/run_all.py --quick    # shorter measurements
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from _report import DOC, write_section  # noqa: E402

BENCHES = ["sim_throughput.py", "expert_success.py", "model_latency.py", "train_throughput.py", "lora_vision_cache.py",
           "serving_latency.py"]

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="shorter measurements where a benchmark supports it")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    for b in BENCHES:
        cmd = [sys.executable, str(ROOT / "bench" / b)]
        if args.quick and b == "sim_throughput.py":
            cmd.append("--quick")
        print(f"[bench] {' '.join(cmd[1:])}", flush=True)
        rc = subprocess.run(cmd, cwd=ROOT).returncode
        if rc != 0:
            print(f"error: {b} failed (exit {rc})", file=sys.stderr)
            return rc
    load = os.getloadavg()[0]
    write_section("header", (
        f"Last `make bench{' ARGS=--quick' if args.quick else ''}` ({time.strftime('%Y-%m-%d')}): "
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, no GPU; "
        f"1-min load average at the end {load:.1f}; {(time.perf_counter() - t0) / 60:.1f} min. Each section "
        "names the command that produced it; compare ratios within a section (machines are noisy)."
    ), first=True)
    _plot_sim()
    print(f"[bench] wrote {DOC}")
    return 0


def _plot_sim() -> None:
    """Bar chart of the first table in the sim_throughput section (rows: configs, numeric columns)."""
    text = DOC.read_text()
    m = re.search(r"<!-- bench:sim_throughput -->(.*?)<!-- /bench:sim_throughput -->", text, re.S)
    if not m:
        return
    rows = [r for r in m.group(1).splitlines() if r.startswith("|") and not set(r) <= set("|-: ")]
    if len(rows) < 2:
        return
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    labels, cols = [], {h: [] for h in header[1:]}
    for r in rows[1:]:
        cells = [c.strip() for c in r.strip("|").split("|")]
        if len(cells) != len(header):
            continue
        labels.append(cells[0])
        for h, c in zip(header[1:], cells[1:]):
            num = re.match(r"[\d.]+", c.replace(",", ""))
            cols[h].append(float(num.group()) if num else 0.0)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(9, 4))
    x = np.arange(len(labels))
    w = 0.8 / max(1, len(cols))
    for i, (h, vals) in enumerate(cols.items()):
        ax.bar(x + i * w, vals, w, label=h)
    ax.set_xticks(x + 0.4 - w / 2, labels, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(header[1] if len(cols) == 1 else "value")
    ax.set_title("simulation throughput on the CPU (bench/sim_throughput.py)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    out = ROOT / "docs" / "images" / "benchmarks.png"
    fig.savefig(out, dpi=90)
    plt.close(fig)
    if "images/benchmarks.png" not in DOC.read_text():
        write_section("plot", "![simulation throughput](images/benchmarks.png)")


if __name__ == "__main__":
    sys.exit(main())
