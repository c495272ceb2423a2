"""`make bench-gpu`: the 7B path measured on one CUDA GPU, in at most ~8 minutes, nothing downloaded.

Random weights of the real Qwen2.5-VL-7B shapes (`backbone: random:Qwen/Qwen2.5-VL-7B-Instruct`, built
from the config written in `vla.backbone.shapes`; latency and memory do not depend on weight values),
bf16, sdpa, LoRA r 16 as the preset configures, two 224x224 views + "lift the red cube":

1. per-chunk latency (processor step included) at batch 1 and 8: eager `predict_action` vs
   `StaticPredictor` (static shapes + CUDA graphs for the vision tower, the LM forward and one expert
   step), 10 vs 100 flow steps; the static path's deviation from eager; and each recorded body's
   replay time alone (where a chunk's time goes);
2. LoRA training (r 16 + projector + expert, AdamW, bf16 autocast, the preset's noise draws):
   samples/s and peak memory at batch 8 and 16, with and without cached vision features and
   gradient checkpointing;
3. MJWarp on CUDA: env-steps/s of Lift-Cube with two 64x64 cameras at 64, 256 and 1024 envs (one
   subprocess each: Newton allows one simulation per process), scripted expert driving.

Writes bench/results/gpu_suite.json and rewrites its section of docs/benchmarks.md with the GPU's
name. Without CUDA it exits (status 2) with a one-line message. A part that fails (out of memory, no
Isaac Lab) is recorded as such; a time budget skips what would not fit.

    python bench/gpu_suite.py [--budget-s 480] [--preset qwen2.5-vl-7b] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "source"))
sys.path.insert(0, str(ROOT / "bench"))

INSTRUCTION = "lift the red cube"
SIM_ENVS = (64, 256, 1024)
DEVICE = "cuda"  # "cpu" only for --smoke-cpu (the tiny-lora preset, to check this script's code paths)


def _sync() -> None:
    import torch

    if DEVICE == "cuda":
        torch.cuda.synchronize()


class Budget:
    def __init__(self, seconds: float):
        self.end = time.perf_counter() + seconds

    def left(self) -> float:
        return self.end - time.perf_counter()


def _obs(batch: int, size: int = 224, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8),
            rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8),
            rng.normal(size=(batch, 27)).astype(np.float32))


def _median_ms(fn, reps: int, warmup: int = 2) -> float:
    import torch

    for _ in range(warmup):
        fn()
    _sync()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


# ---------------------------------------------------------------------------------------------- training
def training(model, budget: Budget, batches=(8, 16), steps: int = 5) -> list[dict]:
    import torch

    from vla.backbone.qwen import core_model
    from vla.training.features import compute_vision_cache

    core = core_model(model.backbone)
    rows = []
    for batch_size in batches:
        ctx, wrist, proprio = _obs(batch_size, seed=1)
        samples = [{"context_image": ctx[i], "wrist_image": wrist[i], "proprio": proprio[i],
                    "actions": proprio[i, :7].reshape(1, 7).repeat(16, 0), "action_mask": torch.ones(16).bool().numpy(),
                    "instruction": INSTRUCTION} for i in range(batch_size)]
        for cached in (False, True):
            for checkpointing in (False, True):
                row = {"batch": batch_size, "cached_vision": cached, "gradient_checkpointing": checkpointing}
                rows.append(row)
                if budget.left() < 60:
                    row["skipped"] = "time budget"
                    continue
                if checkpointing:
                    core.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
                else:
                    core.gradient_checkpointing_disable()
                opt = None
                try:
                    if cached:
                        cache = compute_vision_cache(model, samples, range(batch_size), batch_size=batch_size,
                                                     show=False)
                        batch = cache.batch(torch.arange(batch_size), torch.device(DEVICE))
                    else:  # the processor ran in DataLoader workers
                        batch = model.preprocessor.collate(samples)
                    opt = torch.optim.AdamW([p for ps in model.param_groups().values() for p in ps], lr=1e-5)
                    model.train()
                    if DEVICE == "cuda":
                        torch.cuda.empty_cache()
                        torch.cuda.reset_peak_memory_stats()

                    def step():
                        with torch.autocast(DEVICE, dtype=torch.bfloat16):
                            loss = model(batch)["loss"]
                        loss.backward()
                        opt.step()
                        opt.zero_grad(set_to_none=True)

                    for _ in range(2):
                        step()
                    _sync()
                    t = time.perf_counter()
                    for _ in range(steps):
                        step()
                    _sync()
                    row["samples_per_s"] = round(batch_size * steps / (time.perf_counter() - t), 1)
                    if DEVICE == "cuda":
                        row["peak_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 1)
                except torch.cuda.OutOfMemoryError:
                    row["error"] = "out of memory"
                finally:
                    del opt
                    model.zero_grad(set_to_none=True)
                    if DEVICE == "cuda":
                        torch.cuda.empty_cache()
                print(f"[gpu_suite] train {row}", flush=True)
    core.gradient_checkpointing_disable()
    model.eval()
    return rows


# ---------------------------------------------------------------------------------------------- latency
def merged_lora_latency(model, budget: Budget, reps: int = 10) -> dict | None:
    """A lever, measured last because it changes the weights: the LoRA adapter merged into the backbone
    (peft's `merge_adapter`) before the static path is recorded, batch 1, 10 flow steps, vs the unmerged
    static chunk in the same process; the deviation is against the unmerged eager chunk."""
    import torch

    from vla.model.static import StaticPredictor

    if not hasattr(model.backbone, "merge_adapter") or budget.left() < 30:
        return None
    ctx, wrist, proprio = _obs(1)
    noise = torch.randn(1, model.cfg.num_queries, model.cfg.action_dim, generator=torch.Generator().manual_seed(0))
    eager_out = model.predict_action(ctx, wrist, [INSTRUCTION], proprio, noise=noise)
    row = {"batch": 1, "flow_steps": 10}
    predictor = StaticPredictor(model, batch_size=1, graphs=DEVICE == "cuda")
    row["unmerged_ms"] = round(_median_ms(lambda: predictor(ctx, wrist, [INSTRUCTION], proprio, noise=noise), reps), 1)
    del predictor
    model.backbone.merge_adapter()
    predictor = StaticPredictor(model, batch_size=1, graphs=DEVICE == "cuda")
    out = predictor(ctx, wrist, [INSTRUCTION], proprio, noise=noise)
    row["merged_ms"] = round(_median_ms(lambda: predictor(ctx, wrist, [INSTRUCTION], proprio, noise=noise), reps), 1)
    row["merged_vs_unmerged_eager_rel_mean_abs_diff"] = round(
        float((out - eager_out).abs().mean() / eager_out.abs().mean()), 4)
    del predictor
    print(f"[gpu_suite] merged LoRA {row}", flush=True)
    return row


def latency(model, budget: Budget, batches=(1, 8), reps: int = 10) -> tuple[list[dict], list[dict]]:
    """Latency rows (eager vs static, 10 and 100 flow steps) and stage rows (each recorded body replayed alone)."""
    import torch

    from vla.model.static import StaticPredictor

    rows, stage_rows = [], []
    for batch_size in batches:
        ctx, wrist, proprio = _obs(batch_size)
        instr = [INSTRUCTION] * batch_size
        noise = torch.randn(batch_size, model.cfg.num_queries, model.cfg.action_dim,
                            generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            processor_ms = _median_ms(lambda: model.preprocessor(ctx, wrist, instr), reps)
        try:
            predictor = StaticPredictor(model, batch_size=batch_size, graphs=DEVICE == "cuda")
            t = time.perf_counter()
            static_out = predictor(ctx, wrist, instr, proprio, noise=noise)
            _sync()
            capture_s = time.perf_counter() - t
        except Exception as exc:  # recorded, not fatal: the eager figures still come out
            predictor, capture_s, static_out = None, None, None
            rows.append({"batch": batch_size, "static_error": f"{type(exc).__name__}: {exc}"[:300]})
        eager_out = model.predict_action(ctx, wrist, instr, proprio, noise=noise)
        if predictor is not None:  # where a static chunk's time goes: each recorded body replayed alone
            stages = {"batch": batch_size, "processor_ms": round(processor_ms, 2)}
            for stage, graph, body in (("vision_ms", "_vision_graph", predictor._vision_body),
                                       ("language_model_ms", "_lm_graph", predictor._lm_body),
                                       ("expert_step_ms", "_step_graph", predictor._step_body)):
                stages[stage] = round(_median_ms(lambda g=graph, b=body: predictor._run(g, b), reps), 2)
            stage_rows.append(stages)
            print(f"[gpu_suite] stages {stages}", flush=True)
        deviation = None
        if static_out is not None:
            deviation = float((static_out - eager_out).abs().mean() / eager_out.abs().mean())
        for steps in (10, 100):
            if budget.left() < 30:
                rows.append({"batch": batch_size, "flow_steps": steps, "skipped": "time budget"})
                continue
            n = reps if steps == 10 else max(3, reps // 3)
            row = {"batch": batch_size, "flow_steps": steps, "processor_ms": round(processor_ms, 1),
                   "eager_ms": round(_median_ms(lambda s=steps: model.predict_action(
                       ctx, wrist, instr, proprio, noise=noise, num_steps=s), n), 1)}
            if predictor is not None:
                row["static_graphs_ms"] = round(_median_ms(lambda s=steps: predictor(
                    ctx, wrist, instr, proprio, noise=noise, num_steps=s), n), 1)
                row["static_vs_eager_rel_mean_abs_diff"] = round(deviation, 4)
                row["graph_capture_s"] = round(capture_s, 2)
                row["prompt_len"] = predictor.prompt_len
            rows.append(row)
            print(f"[gpu_suite] latency {row}", flush=True)
        del predictor
        if DEVICE == "cuda":
            torch.cuda.empty_cache()
    return rows, stage_rows


# ---------------------------------------------------------------------------------------------- simulation
def sim_child(num_envs: int, seconds: float) -> None:
    """One MJWarp measurement in this process; prints one JSON line."""
    import torch

    torch.set_num_threads(1)
    from vla_isaac.envs import make_env
    from vla_isaac.experts import ScriptedExpert

    env = make_env("Lift-Cube", num_envs=num_envs, device="cuda", backend="mjwarp", cameras=True,
                   image_size=(64, 64), seed=0)
    try:
        expert = ScriptedExpert(env)
        obs, _ = env.reset(seed=0)
        for _ in range(5):
            obs, *_ = env.step(expert(obs))
        torch.cuda.synchronize()
        steps, start = 0, time.perf_counter()
        while steps < 5 or time.perf_counter() - start < seconds:
            obs, *_ = env.step(expert(obs))
            steps += 1
        torch.cuda.synchronize()
        print(json.dumps({"num_envs": num_envs, "env_steps_per_s": round(num_envs * steps /
                                                                         (time.perf_counter() - start), 1)}))
    finally:
        env.close()


def simulation(budget: Budget, seconds: float = 5.0) -> list[dict]:
    rows = []
    for n in SIM_ENVS:
        if budget.left() < 45:
            rows.append({"num_envs": n, "skipped": "time budget"})
            continue
        cmd = [sys.executable, __file__, "--sim-child", str(n), "--sim-seconds", str(seconds)]
        try:
            r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=min(180, budget.left() - 10))
            lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
            if r.returncode == 0 and lines:
                rows.append(json.loads(lines[-1]))
            else:
                rows.append({"num_envs": n, "error": (r.stderr.strip().splitlines() or ["no output"])[-1][:300]})
        except subprocess.TimeoutExpired:
            rows.append({"num_envs": n, "error": "timed out"})
        print(f"[gpu_suite] sim {rows[-1]}", flush=True)
    return rows


# ---------------------------------------------------------------------------------------------- report
def _fmt(row: dict, key: str, unit: str = "") -> str:
    if key in row:
        return f"{row[key]}{unit}"
    return row.get("error") or row.get("skipped") or row.get("static_error") or "-"


def markdown(result: dict) -> str:
    env = result["environment"]
    lines = [
        f"## 7B on one GPU (`make bench-gpu`, `bench/gpu_suite.py`): {env['gpu']}",
        f"`{result['command']}` on {env['gpu']} ({env['gpu_memory_gb']} GB), torch {env['torch']}, transformers "
        f"{env['transformers']}, CUDA {env['cuda']}, {env['date']}; {result['seconds']:.0f} s in all. "
        f"Random weights of the real {result['preset']} shapes (bf16, sdpa, LoRA r {result['lora_r']} unmerged), two 224x224 views + "
        f"\"{INSTRUCTION}\"; the tiny model's tokenizer stands in for Qwen's (prompts tokenise shorter, image "
        "tokens are the same). Medians; the processor step is included in every chunk.",
        "",
        "| batch | flow steps | eager (ms) | static + CUDA graphs (ms) | speed-up | processor step (ms) |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["latency"]:
        if "flow_steps" not in r:
            lines.append(f"| {r['batch']} | - | - | {_fmt(r, 'static_graphs_ms')} | - | - |")
            continue
        speed = (f"{r['eager_ms'] / r['static_graphs_ms']:.1f}x" if "eager_ms" in r and "static_graphs_ms" in r
                 else "-")
        lines.append(f"| {r['batch']} | {r['flow_steps']} | {_fmt(r, 'eager_ms')} | {_fmt(r, 'static_graphs_ms')} | "
                     f"{speed} | {_fmt(r, 'processor_ms')} |")
    key = "static_vs_eager_rel_mean_abs_diff"
    devs = [r[key] for r in result["latency"] if key in r]
    if devs:
        lines += ["", f"Static path vs eager, same noise: mean |difference| / mean |action| = {max(devs):.4f} (bf16)."]
    if result.get("stages"):
        lines += ["", "Where a static chunk's time goes (each recorded body replayed alone, ms; a chunk is the processor "
                  "step, one vision and one language-model replay, then one expert replay per flow step):", "",
                  "| batch | processor step | vision tower | language model | one expert step |", "|---|---|---|---|---|"]
        lines += [f"| {r['batch']} | {r['processor_ms']} | {r['vision_ms']} | {r['language_model_ms']} | "
                  f"{r['expert_step_ms']} |" for r in result["stages"]]
    m = result.get("merged_lora")
    if m:
        lines += ["", f"LoRA merged into the weights for inference (`merge_adapter()`, measured last in the same process): "
                  f"static chunk at batch 1, 10 flow steps, {m['merged_ms']} ms vs {m['unmerged_ms']} ms unmerged "
                  f"({m['unmerged_ms'] / m['merged_ms']:.2f}x); mean |difference| / mean |action| against the "
                  f"unmerged eager chunk {m['merged_vs_unmerged_eager_rel_mean_abs_diff']}."]
    lines += ["", "| LoRA training, batch | cached vision features | gradient checkpointing | samples/s "
              "| peak memory |", "|---|---|---|---|---|"]
    for r in result["training"]:
        lines.append(f"| {r['batch']} | {'yes' if r['cached_vision'] else 'no'} | "
                     f"{'yes' if r['gradient_checkpointing'] else 'no'} | {_fmt(r, 'samples_per_s')} | "
                     f"{_fmt(r, 'peak_gb', ' GB')} |")
    if not result["simulation"]:
        lines += ["", "MJWarp on CUDA: not run in this measurement (`--skip simulation`)."]
        return "\n".join(lines) + "\n"
    lines += ["", "| MJWarp on CUDA, Lift-Cube, two 64x64 cameras | env-steps/s |", "|---|---|"]
    for r in result["simulation"]:
        lines.append(f"| {r['num_envs']} envs | {_fmt(r, 'env_steps_per_s')} |")
    return "\n".join(lines) + "\n"


def smoke_cpu() -> int:
    """Run the latency and training parts on the CPU with the tiny-lora preset (small batches), print the
    markdown, write nothing: catches errors in this script's code paths on a machine without a GPU."""
    global DEVICE
    import torch

    from vla.config import load_model_preset
    from vla.modeling import VLAModel

    DEVICE = "cpu"
    torch.manual_seed(0)
    model = VLAModel(load_model_preset("tiny-lora"))
    budget = Budget(600)
    result = {"command": "python bench/gpu_suite.py --smoke-cpu", "preset": "tiny-lora", "lora_r": 8,
              "environment": {"gpu": "none (CPU smoke run)", "gpu_memory_gb": 0, "torch": torch.__version__,
                              "transformers": "-", "cuda": "-", "date": time.strftime("%Y-%m-%d")}}
    result["training"] = training(model, budget, batches=(2,), steps=1)
    model.requires_grad_(False)
    result["latency"], result["stages"] = latency(model, budget, batches=(1, 2), reps=1)
    result["merged_lora"] = merged_lora_latency(model, budget, reps=1)
    result["simulation"] = []
    result["seconds"] = 0.0
    print(markdown(result))
    bad = [r for r in result["training"] + result["latency"] if "error" in r or "static_error" in r]
    return 1 if bad else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="qwen2.5-vl-7b")
    parser.add_argument("--budget-s", type=float, default=480.0, help="stop starting new parts after this")
    parser.add_argument("--no-write", action="store_true", help="print only (no docs/benchmarks.md)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "gpu_suite.json"))
    parser.add_argument("--skip", nargs="*", default=[], choices=["latency", "training", "simulation"])
    parser.add_argument("--smoke-cpu", action="store_true", help=argparse.SUPPRESS)  # code-path check, tiny-lora
    parser.add_argument("--sim-child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--sim-seconds", type=float, default=5.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    import torch

    if args.smoke_cpu:
        return smoke_cpu()
    if not torch.cuda.is_available():
        print("bench/gpu_suite.py: no CUDA GPU on this machine (torch.cuda.is_available() is False); "
              "run `make bench-gpu` where there is one", file=sys.stderr)
        return 2
    if args.sim_child is not None:
        sim_child(args.sim_child, args.sim_seconds)
        return 0

    import transformers

    from vla.config import load_model_preset
    from vla.modeling import VLAModel

    t0 = time.perf_counter()
    budget = Budget(args.budget_s)
    props = torch.cuda.get_device_properties(0)
    result = {
        "command": "python bench/gpu_suite.py" + (f" --preset {args.preset}" if args.preset != "qwen2.5-vl-7b" else "")
                   + (f" --skip {' '.join(args.skip)}" if args.skip else ""),
        "environment": {"gpu": torch.cuda.get_device_name(0), "gpu_memory_gb": round(props.total_memory / 2**30),
                        "torch": torch.__version__, "transformers": transformers.__version__,
                        "cuda": torch.version.cuda, "date": time.strftime("%Y-%m-%d")},
        "preset": args.preset,
    }
    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = True
    cfg = load_model_preset(args.preset)
    cfg = cfg.replace(backbone="random:" + cfg.backbone)
    result["lora_r"] = cfg.lora.r if cfg.lora.enabled else 0
    t = time.perf_counter()
    model = VLAModel(cfg, device="cuda", dtype=torch.bfloat16)
    result["build_s"] = round(time.perf_counter() - t, 1)
    print(f"[gpu_suite] built {args.preset} with random weights on {result['environment']['gpu']} "
          f"in {result['build_s']} s", flush=True)
    result["training"] = [] if "training" in args.skip else training(model, budget)
    model.to(torch.bfloat16)  # inference: the whole model in bf16 (norm stats stay float32)
    model.requires_grad_(False)
    result["latency"], result["stages"] = ([], []) if "latency" in args.skip else latency(model, budget)
    result["merged_lora"] = None if "latency" in args.skip else merged_lora_latency(model, budget)
    del model
    torch.cuda.empty_cache()
    result["simulation"] = [] if "simulation" in args.skip else simulation(budget)
    result["seconds"] = round(time.perf_counter() - t0, 1)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    md = markdown(result)
    print(md)
    if not args.no_write:
        from _report import write_section

        write_section("gpu_suite", md)
    print(f"[gpu_suite] wrote {out}" + ("" if args.no_write else " and docs/benchmarks.md"), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
