#!/usr/bin/env python
"""What serving costs: loopback round trip through ``serve_policy.py`` minus in-process ``predict_action``.

In one run, with one tiny-preset checkpoint (random weights) on the CPU:
  - in-process: ``model.predict_action`` on a batch of B observations (two 224x224 views, resized to the
    model's size inside, + 27-dim proprio), B = 1 and 8, under ``torch.inference_mode`` like the server;
  - served: ``scripts/serve_policy.py`` in a second process on 127.0.0.1, the client sending the same B
    observations as B pipelined messages (openpi's format, one observation each) and reading B replies.
The added latency is served minus in-process (median of the runs); the server's own ``infer_ms``
(its model call, reported in ``server_timing``) splits it into model work and transport
(msgpack + websocket + validation + batching wait). Both processes get the same torch thread count.
Writes the "serving_latency" section of docs/benchmarks.md.

    python bench/serving_latency.py [--reps 15] [--threads 1] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

INSTRUCTION = "lift the red cube"


def make_checkpoint(folder: Path) -> Path:
    from vla.checkpoint import save_checkpoint
    from vla.config import load_model_preset
    from vla.data.key_mapping import KeyMapping
    from vla.modeling import VLAModel

    torch.manual_seed(0)
    model = VLAModel(load_model_preset("tiny"))
    return save_checkpoint(model, folder / "tiny", key_mapping=KeyMapping.load("isaaclab_lift").to_dict(),
                           instruction=INSTRUCTION)


def start_server(ckpt: Path, threads: int) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    cmd = [sys.executable, str(ROOT / "scripts" / "serve_policy.py"), "--checkpoint", str(ckpt), "--port", "0",
           "--device", "cpu", "--dtype", "float32"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    while line := proc.stdout.readline():
        lines.append(line)
        if "listening on ws://" in line:
            return proc, line.split("listening on ", 1)[1].split()[0]
    raise RuntimeError("serve_policy.py did not start:\n" + "".join(lines))


def _ms(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=15, help="timed repetitions per figure (median reported)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads of both processes")
    ap.add_argument("--no-write", action="store_true", help="print only; do not touch docs/benchmarks.md")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]

    from vla.checkpoint import load_vla_for_inference
    from vla.serving.client import PolicyClient
    from vla.serving.codec import packb

    rng = np.random.default_rng(0)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = make_checkpoint(Path(tmp))
        model = load_vla_for_inference(ckpt)
        proc, url = start_server(ckpt, args.threads)
        try:
            client = PolicyClient(url)
            image_size = client.metadata["image_size"]
            for batch in (1, 8):
                ctx = rng.integers(0, 256, (batch, 224, 224, 3), dtype=np.uint8)
                wrist = rng.integers(0, 256, (batch, 224, 224, 3), dtype=np.uint8)
                proprio = rng.normal(size=(batch, 27)).astype(np.float32)
                noise = rng.normal(size=(batch, 16, 7)).astype(np.float32)
                msgs = [{"observation/image": ctx[i], "observation/wrist_image": wrist[i],
                         "observation/state": proprio[i], "prompt": INSTRUCTION, "noise": noise[i]}
                        for i in range(batch)]
                local_out = {}

                def local(ctx=ctx, wrist=wrist, proprio=proprio, noise=noise, batch=batch, local_out=local_out):
                    with torch.inference_mode():  # as the server's ModelRunner calls it
                        local_out[batch] = model.predict_action(ctx, wrist, [INSTRUCTION] * batch,
                                                                torch.from_numpy(proprio),
                                                                noise=torch.from_numpy(noise))

                replies = []

                def served(msgs=msgs, replies=replies):
                    replies.append(client.infer_many(msgs))

                # paired runs (in-process, then served) so that load changes on the shared machine hit both alike
                for _ in range(2):
                    local(), served()
                t_local, t_served, model_ms = [], [], []
                for _ in range(args.reps):
                    t_local.append(_ms(local))
                    t_served.append(_ms(served))
                    # a burst may take several model calls: sum its distinct batches' model time
                    model_ms.append(sum(x["server_timing"]["infer_ms"] for x in _batches(replies[-1])))
                last = replies[-1]
                err = float(np.abs(np.stack([r["actions"] for r in last]) - local_out[batch].numpy()).max())
                added = [s - x for s, x in zip(t_served, t_local, strict=True)]
                rows[batch] = dict(
                    local=statistics.median(t_local), served=statistics.median(t_served),
                    added=statistics.median(added), added_q=statistics.quantiles(added, n=4),
                    infer=statistics.median(model_ms),
                    transport=statistics.median(t - m for t, m in zip(t_served, model_ms, strict=True)),
                    batches=sorted({" + ".join(str(x["server_timing"]["batch_size"]) for x in _batches(r))
                                    for r in replies[2:]}),
                    bytes=sum(len(packb(m)) for m in msgs),
                    max_err=err, n=args.reps)
            client.close()
        finally:
            proc.terminate()
            proc.wait(60)

    lines = [
        "## Serving latency (`bench/serving_latency.py`)",
        f"Tiny preset (random weights) on the CPU, torch threads {args.threads} in both processes; each observation "
        f"= two 224x224 RGB views (resized to the model's {image_size[0]}x{image_size[1]}) + 27-dim proprio + "
        f"instruction, with fixed noise; {rows[1]['n']} paired runs (in-process, then served) per batch size, "
        "medians, all figures from one run. Server: "
        "`scripts/serve_policy.py --device cpu --dtype float32` in a second process on 127.0.0.1 (default "
        "batching); client: `vla.serving.client.PolicyClient.infer_many`, B pipelined "
        "openpi-format messages.",
        f"Command: `{' '.join(['python bench/serving_latency.py', *sys.argv[1:]])}`. Machine: {_machine()}; "
        f"1-min load average at start {load:.1f} (shared cores: compare within the run).",
        "",
        "| batch | in-process `predict_action` (ms) | served round trip (ms) | added by serving (ms), median "
        "[quartiles] | served / in-process | server model calls (ms) | round trip - server model calls (ms) | "
        "server batches | request bytes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for b, r in rows.items():
        q1, _, q3 = r["added_q"]
        lines.append(f"| {b} | {r['local']:.1f} | {r['served']:.1f} | {r['added']:+.1f} [{q1:+.1f}, {q3:+.1f}] | "
                     f"{r['served'] / r['local']:.2f}x | {r['infer']:.1f} | {r['transport']:.1f} | "
                     f"{'; '.join(r['batches'])} | {r['bytes'] / 1e3:.0f} kB |")
    lines += ["", "Served and in-process actions agree to within "
              f"{max(r['max_err'] for r in rows.values()):.1e} (same inputs and noise). Round trip minus the "
              "server's model call is what the transport costs: msgpack both ways, the websocket over loopback, "
              "the observation checks and the batching wait."]
    md = "\n".join(lines)
    print(md)
    if not args.no_write:
        from _report import write_section

        write_section("serving_latency", md)
    return 0


def _batches(replies: list[dict]) -> list[dict]:
    """One reply per model call of a burst (replies of one call share its infer_ms)."""
    seen, out = set(), []
    for r in replies:
        key = r["server_timing"]["infer_ms"]
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def _machine() -> str:
    from _report import machine

    return machine()


if __name__ == "__main__":
    sys.exit(main())
