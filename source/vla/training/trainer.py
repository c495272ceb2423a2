"""The training loop behind ``scripts/train.py`` (one CPU, one GPU, or many through HF accelerate).

Two phases, so bad input never leaves anything behind:

1. ``plan_run`` (``plan.py``) checks everything that can be wrong with the input: the config keys, the
   key mapping, every demo file (``verify_files``), the model preset and its fit with the mapping, the
   output folder (fresh, or resumable with a matching config). It writes nothing.
2. ``Trainer.run`` builds the model, computes (cached) normalisation statistics, precomputes VLM
   features when the backbone is frozen, and trains: AdamW with separate LoRA/head learning rates,
   warmup + cosine, gradient accumulation and clipping, optional head EMA, bf16 autocast on CUDA.
   Periodic checkpoints (``vla.checkpoint`` format) come with a resumable training state; the end of a
   run writes ``final/``, the conditioning report (``vla.eval.conditioning``) and ``summary.json``.
   Validation and the report are in ``evaluation.py``, checkpoints and states in ``saving.py``,
   ``metrics.jsonl``/TensorBoard in ``metrics.py``; ``errors.py`` says which exceptions are bad input.

Under several processes (``accelerate launch``, DDP or FSDP) accelerate does the distributed parts as
its authors intend: per-process seeds (``set_seed(..., device_specific=True)``), ``save_state`` /
``load_state`` with every rank's RNG, ``get_state_dict`` for the checkpoint, ``clip_grad_norm_`` over the
whole model, ``reduce`` for the validation loss, the TensorBoard tracker. Every collective (validation
forwards, the conditioning report under FSDP, saving) runs on every process.

Output folder::

    train_config.yaml  metrics.jsonl  summary.json  tb/  final/  checkpoints/step_N/
    training_state/step_N/  feature_cache/ (feature_cache: disk)
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import sys
import time
from collections import Counter

import torch
import yaml
from tqdm.auto import tqdm

from ..data.dataset import DemoDataset
from ..data.stats import compute_norm_stats
from ..eval.conditioning import REPORT_KEYS, ignoring_images_warning
from ..utils.io import atomic_write_text
from .config import TrainConfig, TrainConfigError
from .ema import HeadEMA
from .errors import input_error_types
from .evaluation import EvaluationMixin, evenly_spaced
from .features import cache_kind, load_or_compute_features, train_collate
from .metrics import METRICS_FILE, Metrics
from .optim import build_optimizer, build_scheduler
from .plan import CONFIG_FILE, RESUME_FREE_KEYS, RunPlan, plan_run
from .sampler import ResumableSampler
from .saving import SavingMixin
from .state import EMA_FILE, TrainingStateError, read_state_meta

SUMMARY_FILE = "summary.json"
# also importable from here: the run plan, input errors and file names (scripts import them from here)
__all__ = ["CONFIG_FILE", "METRICS_FILE", "RESUME_FREE_KEYS", "SUMMARY_FILE", "RunPlan", "Trainer",
           "backbone_storage_dtype", "input_error_types", "plan_run", "train"]


# ---------------------------------------------------------------------- helpers
def _mixed_precision(setting: str) -> str:
    if setting == "auto":
        return "bf16" if torch.cuda.is_available() else "no"
    return setting


def backbone_storage_dtype(mixed_precision: str, fsdp: bool) -> torch.dtype:
    """One storage dtype per FSDP unit: FSDP flattens each unit's parameters into one tensor of one dtype
    (a bf16 backbone beside peft's float32 LoRA fails with "Must flatten tensors with uniform dtype"), so
    under FSDP the backbone is stored in float32 like LoRA and the head, and FSDP's mixed-precision policy
    (accelerate's ``mixed_precision: bf16``) computes in bf16. DDP keeps a bf16 backbone (half the memory)."""
    return torch.bfloat16 if mixed_precision == "bf16" and not fsdp else torch.float32


# ---------------------------------------------------------------------- trainer
class Trainer(EvaluationMixin, SavingMixin):
    def __init__(self, plan: RunPlan, show_progress: bool = True):
        from accelerate import Accelerator
        from accelerate.utils import DistributedType, is_tensorboard_available

        self.plan, self.cfg = plan, plan.cfg
        if not is_tensorboard_available():  # a dependency of isaaclab; degrade to metrics.jsonl only
            print("warning: tensorboard not installed; logging to metrics.jsonl only", file=sys.stderr)
        self.acc = Accelerator(
            mixed_precision=_mixed_precision(self.cfg.mixed_precision),
            log_with="tensorboard" if is_tensorboard_available() else None,
            project_dir=str(plan.output_dir),
            step_scheduler_with_optimizer=False,  # the schedule counts optimizer steps, whatever the world size
        )
        self.show = show_progress and self.acc.is_local_main_process
        self._fsdp = self.acc.distributed_type == DistributedType.FSDP
        if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true" and not self._fsdp:
            if self.acc.is_main_process:  # accelerate enables FSDP for GPU process groups only
                print(f"warning: an FSDP launch config runs as {self.acc.distributed_type.value} here (accelerate "
                      "shards with FSDP on GPUs only); every process holds a full copy", file=sys.stderr)
        if self._fsdp and self.acc.is_fsdp2:
            raise TrainConfigError(
                "fsdp_version: 2 is not supported by this trainer yet; use config/accelerate/fsdp.yaml (FSDP1, "
                "use_orig_params) or DDP (config/accelerate/ddp.yaml)"
            )
        if self._fsdp and self.cfg.ema.enabled:
            raise TrainConfigError(
                "ema.enabled is not supported with FSDP (the averaged weights would be sharded); "
                "set ema.enabled=false or use DDP (config/accelerate/ddp.yaml)"
            )
        self.out = plan.output_dir

    def _say(self, msg: str) -> None:
        if self.acc.is_main_process:
            tqdm.write(msg) if self.show else print(msg, flush=True)

    # -------------------------------------------------------------- setup
    def _build(self) -> None:
        from accelerate.utils import set_seed

        from ..modeling import TrainingLevers, VLAModel

        cfg, acc, plan = self.cfg, self.acc, self.plan
        # seed + process index: each rank draws its own flow noise, flow times and dropout masks
        set_seed(cfg.seed, device_specific=True)
        if acc.device.type == "cpu" and cfg.cpu_threads > 0:
            torch.set_num_threads(cfg.cpu_threads)
        backbone_dtype = backbone_storage_dtype(acc.mixed_precision, self._fsdp)
        t = time.time()
        with acc.main_process_first():  # the first process builds/caches the tiny backbone and the stats
            self.model = VLAModel(plan.model_cfg, device=acc.device, dtype=backbone_dtype)
            self.stats = compute_norm_stats(cfg.data.files, plan.mapping)
        self.model.set_norm_stats(self.stats)
        self.model.set_training_levers(TrainingLevers(**dataclasses.asdict(cfg.levers)))
        self._say(
            f"model '{plan.model_cfg.preset}' on {acc.device} ({time.time() - t:.1f} s); "
            f"{sum(p.numel() for p in self.model.parameters() if p.requires_grad):,} trainable parameters; "
            f"backbone {'trainable (LoRA)' if self.model.vlm_trainable else 'frozen'}"
        )
        mc = plan.model_cfg
        common = dict(
            val_fraction=cfg.data.val_fraction,
            chunk=mc.num_queries,
            image_size=tuple(mc.image_size),
            seed=cfg.seed,
            max_demos=cfg.data.max_demos,
            success_only=cfg.data.success_only,
            aux_keys=cfg.aux_state.keys,
        )
        self.train_ds = DemoDataset(cfg.data.files, plan.mapping, split="train", **common)
        self.val_ds = DemoDataset(cfg.data.files, plan.mapping, split="val", **common)
        self._say(
            f"data: {self.train_ds.num_demos} train demos ({len(self.train_ds)} samples), "
            f"{self.val_ds.num_demos} val demos ({len(self.val_ds)} samples), key mapping '{plan.mapping.name}'"
        )
        self.instruction = (
            cfg.data.instruction or Counter(d.instruction for d in self.train_ds.demos).most_common(1)[0][0]
        )
        self.sampler = ResumableSampler(len(self.train_ds), cfg.seed, acc.process_index, acc.num_processes)
        self.val_indices = evenly_spaced(len(self.val_ds), cfg.val_batches * cfg.batch_size)

        self._blank_images = None  # dataset-mean views for the blank-image error, computed on first use
        # frozen backbone: VLM features; LoRA on the language model: vision-tower features (features.py)
        self.use_cache = cache_kind(self.model) is not None and cfg.feature_cache != "off"
        self.feature_s = 0.0
        self.train_cache = self.val_cache = None
        if self.use_cache:
            t = time.time()
            cache_dir = self.out / "feature_cache" if cfg.feature_cache == "disk" else None
            kw = dict(
                batch_size=max(cfg.batch_size, 16),
                num_workers=cfg.data.num_workers,
                instruction=cfg.data.instruction,
                show=self.show,
                model_cfg=mc.to_dict(),
            )
            with torch.random.fork_rng(devices=[]):
                self.train_cache = load_or_compute_features(
                    self.model,
                    self.train_ds,
                    self.sampler.shard,
                    cache_dir=cache_dir,
                    name=f"train_rank{acc.process_index}",
                    desc="VLM features (train)",
                    **kw,
                )
                if self.val_indices:
                    self.val_cache = load_or_compute_features(
                        self.model,
                        self.val_ds,
                        sorted({i for idx, _ in self._val_batches() for i in idx}),
                        cache_dir=cache_dir,
                        name=f"val_rank{acc.process_index}",
                        desc="VLM features (val)",
                        **kw,
                    )
            self.feature_s = time.time() - t
            self._say(
                f"{'frozen backbone: cached VLM' if cache_kind(self.model) == 'features' else 'LoRA: cached vision'} "
                f"features of {len(self.train_cache)} samples in {self.feature_s:.1f} s "
                f"({tuple(self.train_cache.features.shape[1:])} per sample); the head trains on them"
            )

        if cfg.aux_state.keys:  # before the optimizer: the probe's parameters train with the head
            self._attach_state_probe()
        self.optimizer = build_optimizer(self.model, cfg.optim)
        self.scheduler = build_scheduler(self.optimizer, cfg.optim, cfg.max_steps)
        self.ema = HeadEMA(self.model, cfg.ema.decay) if cfg.ema.enabled else None
        self.model, self.optimizer, self.scheduler = acc.prepare(self.model, self.optimizer, self.scheduler)
        # training states hold the trainable weights only: the frozen backbone comes from the preset
        acc.register_save_state_pre_hook(self._keep_trainable_weights)
        acc.register_load_state_pre_hook(self._check_saved_weights)
        self.start_step = 0
        if plan.resume_from is not None:
            meta = read_state_meta(plan.resume_from, acc.num_processes)
            if self.ema is not None and not (plan.resume_from / EMA_FILE).is_file():
                raise TrainingStateError(f"{plan.resume_from}: saved without EMA but ema.enabled is true")
            if self.ema is not None:
                from safetensors.torch import load_file

                self.ema.load_state_dict(load_file(str(plan.resume_from / EMA_FILE), device=str(acc.device)))
            # weights, AdamW, schedule and this rank's RNG (loaded last: nothing may draw from the global
            # generators between here and step 1); pickles are read with weights_only=True
            acc.load_state(str(plan.resume_from), load_kwargs={"weights_only": True}, strict=False)
            self.start_step = meta["step"]
            self._say(f"resumed from {plan.resume_from} at step {self.start_step}")
        self.consumed = self.start_step * cfg.batch_size * cfg.grad_accum_steps
        self._batches = self._batch_iter(self.consumed)

    def _attach_state_probe(self) -> None:
        """Normalisation stats of the auxiliary state over the training samples, then the probe."""
        if self.train_cache is not None:
            state = self.train_cache.aux_state
        else:
            idx = evenly_spaced(len(self.train_ds), 2048)
            state = torch.stack([torch.as_tensor(self.train_ds[i]["aux_state"]) for i in idx])
        model_dim = self.plan.model_cfg.state_dim
        if model_dim and model_dim != state.shape[1]:
            raise TrainConfigError(
                f"aux_state.keys {self.cfg.aux_state.keys} hold {state.shape[1]} values per sample but the model's "
                f"state head estimates state_dim {model_dim}; set model_overrides.state_dim={state.shape[1]}")
        self.model.attach_state_probe(state.shape[1], self.cfg.aux_state.weight, state.mean(0), state.std(0))
        where = ("by the state head from all memory tokens + proprio, fed to the expert" if model_dim
                 else "from the context-view tokens (training only)")
        self._say(f"auxiliary loss: {self.cfg.aux_state.weight} x MSE of {self.cfg.aux_state.keys} "
                  f"({state.shape[1]} dims) regressed {where}")

    def _batch_iter(self, start: int):
        cfg, dev = self.cfg, self.acc.device
        sampler = ResumableSampler(
            len(self.train_ds), cfg.seed, self.acc.process_index, self.acc.num_processes, start=start
        )
        if self.use_cache:
            it = iter(sampler)
            while True:
                idx = [next(it) for _ in range(cfg.batch_size)]
                yield self.train_cache.batch(self.train_cache.rows(idx), dev)
        loader = torch.utils.data.DataLoader(
            self.train_ds,
            batch_size=cfg.batch_size,
            sampler=sampler,
            num_workers=cfg.data.num_workers,
            collate_fn=train_collate(self.acc.unwrap_model(self.model), cfg.data.instruction),  # processor in workers
            pin_memory=dev.type == "cuda",
            persistent_workers=cfg.data.num_workers > 0,
            generator=torch.Generator().manual_seed(cfg.seed),  # keeps worker seeding off the global RNG
        )
        for b in loader:
            if cfg.data.instruction:
                b["instruction"] = [cfg.data.instruction] * len(b["instruction"])
            yield b

    # -------------------------------------------------------------- loop
    def run(self) -> dict:
        cfg, acc, out = self.cfg, self.acc, self.out
        t_start = time.time()
        self._build()  # model, stats, data, features: may still fail on a broken backbone, so before any write
        if acc.is_main_process:
            out.mkdir(parents=True, exist_ok=True)
            for stale in list(out.glob(".*.tmp")) + list(out.glob("*/.*.tmp")):  # left by a killed run
                shutil.rmtree(stale, ignore_errors=True)
            if self.plan.resume_from is None:
                atomic_write_text(out / CONFIG_FILE, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        metrics = Metrics(acc, out, self.start_step)
        per_step = cfg.batch_size * cfg.grad_accum_steps * acc.num_processes
        window, last_val, train_time = [], None, 0.0
        t_log, steps_since_log = time.time(), 0
        bar = tqdm(
            total=cfg.max_steps,
            initial=self.start_step,
            desc="train",
            unit="step",
            disable=not self.show,
            dynamic_ncols=True,
        )
        self.model.train()
        for step in range(self.start_step + 1, cfg.max_steps + 1):
            t0 = time.time()
            total = torch.zeros((), device=acc.device)
            aux_total = torch.zeros((), device=acc.device)
            for micro in range(cfg.grad_accum_steps):
                batch = next(self._batches)
                sync = micro == cfg.grad_accum_steps - 1 or acc.num_processes == 1
                with contextlib.nullcontext() if sync else acc.no_sync(self.model):
                    with acc.autocast():
                        result = self.model(batch)
                        loss = result["loss"] / cfg.grad_accum_steps
                    acc.backward(loss)
                total += loss.detach().float()
                if "aux_loss" in result:
                    aux_total += result["aux_loss"].detach().float() / cfg.grad_accum_steps
            # the whole model: under FSDP accelerate then uses the wrapper's clip (one norm over all shards)
            grad_norm = acc.clip_grad_norm_(
                self.model.parameters(), cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else float("inf")
            )
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            if self.ema is not None:
                self.ema.update()
            loss_value = float(acc.reduce(total, reduction="mean"))
            train_time += time.time() - t0
            window.append(loss_value)
            steps_since_log += 1
            bar.update(1)
            if step % cfg.log_every == 0 or step == cfg.max_steps:
                now = time.time()
                lrs = {g.get("name", str(i)): g["lr"] for i, g in enumerate(self.optimizer.param_groups)}
                values = {
                    "loss": loss_value,
                    "loss_avg": sum(window[-steps_since_log:]) / steps_since_log,
                    "grad_norm": float(grad_norm),
                    "lr": lrs.get("heads", next(iter(lrs.values()))),
                    "samples_per_s": steps_since_log * per_step / max(now - t_log, 1e-9),
                }
                if "lora" in lrs:
                    values["lr_lora"] = lrs["lora"]
                if self.cfg.aux_state.keys:
                    values["aux_loss"] = float(acc.reduce(aux_total, reduction="mean"))
                metrics.log(step, values)
                bar.set_postfix(loss=f"{values['loss_avg']:.4f}", lr=f"{values['lr']:.2e}")
                t_log, steps_since_log = now, 0
            if cfg.val_every and step % cfg.val_every == 0 and step != cfg.max_steps:
                last_val = self.validate()
                if last_val is not None:
                    metrics.log(step, {"val/loss": last_val})
                    self._say(f"step {step}: val loss {last_val:.4f}")
                self._log_conditioning(step, metrics)
            if cfg.save_every and step % cfg.save_every == 0 and step != cfg.max_steps:
                self.save(step, val_loss=last_val)
        bar.close()

        last_val = self.validate()
        if last_val is not None:
            metrics.log(cfg.max_steps, {"val/loss": last_val})
        report = self._log_conditioning(cfg.max_steps, metrics)
        warning = ignoring_images_warning(report)
        final = self.save(cfg.max_steps, final=True, val_loss=last_val)
        metrics.close()
        steps_run = cfg.max_steps - self.start_step
        tail = window[-max(1, min(len(window), cfg.log_every)) :]
        summary = {
            "steps": cfg.max_steps,
            "steps_this_run": steps_run,
            "resumed_from_step": self.start_step if self.plan.resume_from is not None else None,
            "final_loss": sum(tail) / len(tail) if tail else None,
            "val_loss": last_val,
            **{k: report.get(k) for k in REPORT_KEYS},
            "val_action_mse": report.get("val_action_mse"),
            "blank_image_val_action_mse": report.get("blank_image_val_action_mse"),
            "conditioning_samples": report.get("num_samples", 0),
            "warnings": [warning] if warning else [],
            "samples_per_s": steps_run * per_step / train_time if train_time > 0 else None,
            "feature_cache": self.use_cache,
            "feature_cache_s": round(self.feature_s, 2),
            "wall_s": round(time.time() - t_start, 2),
            "train_demos": self.train_ds.num_demos,
            "val_demos": self.val_ds.num_demos,
            "train_samples": len(self.train_ds),
            "device": str(acc.device),
            "num_processes": acc.num_processes,
            "mixed_precision": acc.mixed_precision,
            "checkpoint": str(final) if final else None,
        }
        if acc.is_main_process:
            atomic_write_text(out / SUMMARY_FILE, json.dumps(summary, indent=1))
            self._say(
                "done: "
                + ", ".join(
                    f"{k} {_fmt(summary.get(k))}"
                    for k in ("steps", "final_loss", "val_loss", "image_effect_ratio", "wrist_effect_ratio",
                              "samples_per_s")
                )
                + f"; checkpoint {final}"
            )
            if warning:
                self._say(f"warning: {warning}")
        return summary


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)


def train(cfg: TrainConfig, resume: bool | str | None = None, show_progress: bool = True) -> dict:
    """Validate, then train; returns the summary dict (also written to ``<output_dir>/summary.json``)."""
    return Trainer(plan_run(cfg, resume), show_progress=show_progress).run()
