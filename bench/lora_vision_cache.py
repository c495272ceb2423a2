"""LoRA train step on the tiny-lora preset with and without the cached vision tower, side by side in one run.

Three ways to feed the same batches (16 samples, two 112x112 views, 8 noise draws per observation):
  1. observations: the processor and the vision tower run inside the step (before issue 16);
  2. processor tensors: the processor ran in a DataLoader worker, the step runs vision tower + LM;
  3. cached vision features (`vla.training.features.CachedVision`): the step runs only the language
     model (with LoRA), the projector and the expert; the vision tower ran once per sample beforehand.
Each step = forward + backward + AdamW; the three kinds alternate, median over `--reps` steps each.
Writes its section of docs/benchmarks.md.

    python bench/lora_vision_cache.py [--reps 15] [--threads 1] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "source"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=15, help="timed steps per kind (median reported)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: a shared machine)")
    parser.add_argument("--no-write", action="store_true", help="print only; do not touch docs/benchmarks.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]

    from vla.config import load_model_preset
    from vla.modeling import TrainingLevers, VLAModel
    from vla.training.features import compute_vision_cache

    torch.manual_seed(0)
    model = VLAModel(load_model_preset("tiny-lora"))
    model.set_training_levers(TrainingLevers(noise_draws_per_obs=8))  # as bench/train_throughput.py's LoRA row
    cfg = model.cfg
    rng = np.random.default_rng(0)
    n = args.batch
    h, w = cfg.image_size
    samples = [{"context_image": rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
                "wrist_image": rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
                "proprio": rng.normal(size=27).astype(np.float32),
                "actions": rng.normal(size=(16, 7)).astype(np.float32),
                "action_mask": np.ones(16, bool), "instruction": "lift the red cube"} for _ in range(n)]
    t0 = time.perf_counter()
    cache = compute_vision_cache(model, samples, range(n), batch_size=n, show=False)
    cache_s = time.perf_counter() - t0

    from vla.data.dataset import collate

    obs_batch = collate(samples)
    tensor_batch = model.preprocessor.collate(samples)
    tensor_batch.pop("context_image"), tensor_batch.pop("wrist_image")
    cached_batch = cache.batch(torch.arange(n), torch.device("cpu"))
    batches = {"obs": obs_batch, "tensors": tensor_batch, "cached": cached_batch}

    opt = torch.optim.AdamW([p for ps in model.param_groups().values() for p in ps], lr=1e-4)
    model.train()

    def step(batch) -> float:
        t = time.perf_counter()
        loss = model(batch)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return time.perf_counter() - t

    for b in batches.values():  # warm-up
        step(b)
    times = {k: [] for k in batches}
    for _ in range(args.reps):
        for k, b in batches.items():
            times[k].append(step(b))
    ms = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    sps = {k: n / (v / 1e3) for k, v in ms.items()}
    from _report import machine, write_section

    md = f"""## LoRA train step with the cached vision tower (`bench/lora_vision_cache.py`)
`python bench/lora_vision_cache.py --reps {args.reps} --threads {args.threads}`: tiny-lora preset (LoRA r
{cfg.lora.r} on the language model's attention), batch {n}, two {h}x{w} views (2 x 16 image tokens),
{model.levers.noise_draws_per_obs} noise draws per observation; one step = forward + backward + AdamW; median of
{args.reps} steps per kind, the kinds interleaved, all from one run. Machine: {machine()}, torch threads
{args.threads}; 1-min load average at start {load:.1f} (a shared machine: compare ratios within the run).

| the step gets | step (ms) | samples/s | vs observations |
|---|---|---|---|
| observations (processor + vision tower + LM in the step) | {ms['obs']:.1f} | {sps['obs']:.0f} | 1.00x |
| processor tensors (processor in DataLoader workers) | {ms['tensors']:.1f} | {sps['tensors']:.0f} | {ms['obs'] / ms['tensors']:.2f}x |
| cached vision features (LM + head only) | {ms['cached']:.1f} | {sps['cached']:.0f} | {ms['obs'] / ms['cached']:.2f}x |

Cached vision features vs processor tensors: {ms['tensors'] / ms['cached']:.2f}x faster steps. The cache pass
(processor + vision tower once per sample) took {cache_s * 1e3:.0f} ms for these {n} samples. The trainer
uses the cache by default for LoRA runs (`feature_cache: auto`; `disk` also keeps it across resumes).
"""
    print(md)
    if not args.no_write:
        write_section("lora_vision_cache", md)


if __name__ == "__main__":
    main()
