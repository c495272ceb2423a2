"""Model latency on the CPU with the tiny preset, side by side in one run.

1. The VLM at batch 8: one truly batched forward vs a per-sample loop (processor included,
   and the forward alone).
2. `predict_action` at batch 1 with 10 vs 100 Euler steps (legacy checkpoints used 100), split into the VLM
   encode and the expert's sampling loop.

3. The static-shape path (`vla.model.static.StaticPredictor`, no CUDA graphs on the CPU) vs eager
   `predict_action` at batch 1.

Writes its section of docs/benchmarks.md; its GPU part quotes the last `make bench-gpu` result
(bench/results/gpu_suite.json) with the GPU and command that measured it, or says there is none.

    python bench/model_latency.py [--reps 7] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "source"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

GPU_JSON = Path(__file__).resolve().parent / "results" / "gpu_suite.json"


def gpu_section() -> str:
    """The 7B GPU figures: quoted from the last `make bench-gpu` run (bench/results/gpu_suite.json), with
    the GPU and command that measured them; never figures typed in by hand."""
    import json

    if not GPU_JSON.is_file():
        return ("### GPU: the 7B preset\nNo GPU measurement yet: `make bench-gpu` (bench/gpu_suite.py) on a CUDA "
                "machine measures the 7B chunk latency (eager vs static shapes + CUDA graphs) and writes its own "
                "section below.\n")
    r = json.loads(GPU_JSON.read_text())
    env = r["environment"]
    rows = [x for x in r.get("latency", []) if "eager_ms" in x]
    lines = [f"### GPU: the 7B preset (quoted from `{r['command']}` on {env['gpu']}, {env['date']})", "",
             "| batch | flow steps | eager (ms) | static + CUDA graphs (ms) |", "|---|---|---|---|"]
    lines += [f"| {x['batch']} | {x['flow_steps']} | {x['eager_ms']} | {x.get('static_graphs_ms', '-')} |"
              for x in rows]
    return "\n".join(lines) + "\n"


def median_ms(fn, reps: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def paired_ms(fa, fb, reps: int, warmup: int = 1) -> tuple[float, float]:
    """Medians of two functions timed in alternation (A B, B A, ...): a busy machine slows both alike."""
    for _ in range(warmup):
        fa(), fb()
    ta, tb = [], []
    for i in range(reps):
        for f, out in ((fa, ta), (fb, tb)) if i % 2 == 0 else ((fb, tb), (fa, ta)):
            t0 = time.perf_counter()
            f()
            out.append(time.perf_counter() - t0)
    return statistics.median(ta) * 1e3, statistics.median(tb) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=7, help="timed repetitions per figure (median reported)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: a shared 2-core box)")
    parser.add_argument("--no-write", action="store_true", help="print only; do not touch docs/benchmarks.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import os

    load = os.getloadavg()[0]

    from vla.backbone.qwen import core_model, prepare_vlm_inputs
    from vla.config import load_model_preset
    from vla.modeling import VLAModel

    torch.manual_seed(0)
    model = VLAModel(load_model_preset("tiny")).eval()
    cfg = model.cfg
    rng = np.random.default_rng(0)
    batch = 8
    ctx = rng.integers(0, 256, (batch, 128, 128, 3), dtype=np.uint8)  # env-sized images, resized inside
    wrist = rng.integers(0, 256, (batch, 128, 128, 3), dtype=np.uint8)
    text = ["lift the red cube"] * batch
    proprio = rng.normal(size=(batch, 27)).astype(np.float32)
    vlm = core_model(model.backbone)

    def forward(inputs):
        return vlm(**inputs, use_cache=False, return_dict=True).last_hidden_state

    with torch.inference_mode():
        batched_inputs = prepare_vlm_inputs(model.processor, ctx, wrist, text, cfg)
        single_inputs = [prepare_vlm_inputs(model.processor, ctx[i:i + 1], wrist[i:i + 1], text[i:i + 1], cfg)
                         for i in range(batch)]
        r = {}
        r["full_batched"] = median_ms(lambda: model.compute_vlm_features(ctx, wrist, text), args.reps)
        r["full_loop"] = median_ms(lambda: [model.compute_vlm_features(ctx[i:i + 1], wrist[i:i + 1], text[i:i + 1])
                                            for i in range(batch)], args.reps)
        r["fwd_batched"] = median_ms(lambda: forward(batched_inputs), args.reps)
        r["fwd_loop"] = median_ms(lambda: [forward(x) for x in single_inputs], args.reps)
        r["processor_b8"] = median_ms(lambda: prepare_vlm_inputs(model.processor, ctx, wrist, text, cfg), args.reps)

        one = (ctx[:1], wrist[:1], text[:1], proprio[:1])
        feats, mask = model.compute_vlm_features(*one[:3])
        r["encode_b1"] = median_ms(lambda: model.encode(*one[:3]), args.reps)
        for steps in (10, 100):
            r[f"predict_{steps}"] = median_ms(lambda s=steps: model.predict_action(*one, num_steps=s), args.reps)
            r[f"expert_{steps}"] = median_ms(
                lambda s=steps: model.predict_action(proprio=one[3], vlm_features=feats, vlm_mask=mask, num_steps=s),
                args.reps)
        from vla.model.static import StaticPredictor

        static = StaticPredictor(model, batch_size=1)
        r["eager_vs_static_10"], r["static_10"] = paired_ms(lambda: model.predict_action(*one, num_steps=10),
                                                            lambda: static(*one, num_steps=10), args.reps)

        # the expert's memory side (norm, keys, values) and prefix tokens: once per chunk vs every Euler step
        from vla.model.flow_matching import euler_sample

        for b in (1, 32):
            memory, mmask = model.project(feats.expand(b, -1, -1), mask.expand(b, -1))
            p = model.normalizer.normalize("proprio", torch.as_tensor(proprio[:1]).expand(b, -1))
            est = model._state_estimate(memory, mmask, p)
            noise = torch.randn(b, cfg.num_queries, cfg.action_dim)

            def once(memory=memory, mmask=mmask, p=p, est=est, noise=noise):
                cond = model.expert.condition(p, memory, mmask, est)
                return euler_sample(lambda x, t: model.expert.velocity(x, t, cond), noise, 10)

            def every(memory=memory, mmask=mmask, p=p, est=est, noise=noise):
                return euler_sample(lambda x, t: model.expert(x, t, p, memory, mmask, est), noise, 10)

            r[f"sample_every_b{b}"], r[f"sample_once_b{b}"] = paired_ms(every, once, 2 * args.reps + 1)

    # the conditioning report (diagnose_vla.py, the trainer's validation): the vision tower once per distinct
    # image vs once per variant (six variants: original, three image swaps, another instruction, blanked)
    import vla.eval.conditioning as cond_mod

    n_rep = 32
    rep_batch = {"context_image": rng.integers(0, 256, (n_rep, 64, 64, 3), dtype=np.uint8),
                 "wrist_image": rng.integers(0, 256, (n_rep, 64, 64, 3), dtype=np.uint8),
                 "instruction": ["lift the red cube"] * n_rep,
                 "proprio": rng.normal(size=(n_rep, 27)).astype(np.float32),
                 "actions": rng.normal(size=(n_rep, 16, 7)).astype(np.float32)}
    blank = (np.full((64, 64, 3), 100, np.uint8), np.full((64, 64, 3), 110, np.uint8))
    report_reps = max(3, args.reps // 2)

    cached_vision = cond_mod._Predictor._vision

    def report(cache: bool):
        cond_mod._Predictor._vision = cached_vision if cache else (
            lambda self, inputs, c, w: model.image_embeds(inputs["pixel_values"], inputs["image_grid_thw"]))
        try:
            return cond_mod.conditioning_report(model, rep_batch, blank_images=blank)
        finally:
            cond_mod._Predictor._vision = cached_vision

    r["report_uncached"], r["report_cached"] = paired_ms(lambda: report(False), lambda: report(True), report_reps)
    tokens = int(batched_inputs["attention_mask"][0].sum())

    saved = ("the per-call rope index, mask and vision-grid work (positions, windows, attention boundaries) it "
             "saves")
    ratio = r["static_10"] / r["eager_vs_static_10"]
    static_note = (f"on the CPU the prompt padded to its static length and {saved} about cancel" if 0.95 <= ratio <= 1.05
                   else f"on the CPU the prompt padded to its static length costs more than {saved}" if ratio > 1.05
                   else f"on the CPU {saved} outweighs the longer, padded prompt")
    md = f"""## Model latency (`bench/model_latency.py`)
CPU, tiny preset (random 2-layer Qwen2.5-VL, {tokens}-token prompt: two 112x112 views = 2 x 16 image
tokens + instruction; expert d {cfg.d_model} x {cfg.expert_layers} layers, memory = {feats.shape[1]} image tokens),
torch threads {args.threads}, median of {args.reps} runs, all figures from one run.
Machine: {_machine()}; 1-min load average at start {load:.1f} (other processes share the cores: compare
ratios within a run, not absolute times across runs).

| VLM at batch 8 | batched (ms) | per-sample loop (ms) | loop / batched |
|---|---|---|---|
| processor + forward (`compute_vlm_features`) | {r['full_batched']:.1f} | {r['full_loop']:.1f} | {r['full_loop'] / r['full_batched']:.2f}x |
| forward only (processor outputs prepared) | {r['fwd_batched']:.1f} | {r['fwd_loop']:.1f} | {r['fwd_loop'] / r['fwd_batched']:.2f}x |

The processor alone costs {r['processor_b8']:.1f} ms for the batch of 8: cache its output (or the frozen
features) when training the tiny preset.

| `predict_action`, batch 1 | 10 steps (ms) | 100 steps (ms) | 100 / 10 |
|---|---|---|---|
| whole call (processor + VLM + sampling) | {r['predict_10']:.1f} | {r['predict_100']:.1f} | {r['predict_100'] / r['predict_10']:.1f}x |
| sampling only (cached VLM features) | {r['expert_10']:.1f} | {r['expert_100']:.1f} | {r['expert_100'] / r['expert_10']:.1f}x |

VLM encode alone at batch 1: {r['encode_b1']:.1f} ms. Default is 10 steps (legacy checkpoints used 100).
Static-shape path (`StaticPredictor`, prompt padded to {static.prompt_len} tokens, no CUDA graphs on the CPU),
batch 1, 10 steps: {r['static_10']:.1f} ms vs eager {r['eager_vs_static_10']:.1f} ms, timed in alternation ({static_note};
the launch overhead CUDA graphs remove exists on a GPU only).

| sampling a chunk, 10 Euler steps | memory keys/values every step (ms) | once per chunk (ms) | every / once |
|---|---|---|---|
| batch 1 | {r['sample_every_b1']:.1f} | {r['sample_once_b1']:.1f} | {r['sample_every_b1'] / r['sample_once_b1']:.2f}x |
| batch 32 | {r['sample_every_b32']:.1f} | {r['sample_once_b32']:.1f} | {r['sample_every_b32'] / r['sample_once_b32']:.2f}x |

`predict_action` computes the expert's memory side (layer norm, cross-attention keys and values) and its prefix
tokens once per chunk (`ActionExpert.condition`); the chunk is the same to the bit (tests/test_model.py).
The conditioning report (`diagnose_vla.py`, the trainer's validation) on {n_rep} samples at 64 px with blanked
images: {r['report_uncached']:.0f} ms with the vision tower run on every variant's images, {r['report_cached']:.0f} ms
with it run once per distinct image ({r['report_uncached'] / r['report_cached']:.2f}x, the same figures:
tests/test_conditioning.py); median of {report_reps}.

{gpu_section()}"""
    print(md)
    if not args.no_write:
        from _report import write_section

        write_section("model_latency", md)


def _machine() -> str:
    from _report import machine

    return machine()


if __name__ == "__main__":
    main()
