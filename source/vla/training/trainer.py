"""The training loop behind ``scripts/train.py`` (one CPU, one GPU, or many through HF accelerate).

Two phases, so bad input never leaves anything behind:

1. ``plan_run`` checks everything that can be wrong with the input: the config keys, the key mapping,
   every demo file (``verify_files``), the model preset and its fit with the mapping, the output
   folder (fresh, or resumable with a matching config). It writes nothing.
2. ``Trainer.run`` builds the model, computes (cached) normalisation statistics, precomputes VLM
   features when the backbone is frozen, and trains: AdamW with separate LoRA/head learning rates,
   warmup + cosine, gradient accumulation and clipping, optional head EMA, bf16 autocast on CUDA.
   Periodic checkpoints (``vla.checkpoint`` format) come with a resumable training state; the end of a
   run writes ``final/``, the conditioning report (``vla.eval.conditioning``) and ``summary.json``.

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
import math
import os
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from tqdm.auto import tqdm

from ..data.dataset import DemoDataset, collate
from ..data.key_mapping import KeyMapping
from ..data.stats import compute_norm_stats
from ..data.verify import DatasetSummary, check_files
from ..eval.conditioning import (
    ALT_INSTRUCTION,
    REPORT_KEYS,
    conditioning_report,
    dataset_mean_images,
    ignoring_images_warning,
)
from ..utils.io import atomic_write_text
from .config import TrainConfig, TrainConfigError
from .ema import HeadEMA
from .features import cache_kind, load_or_compute_features, train_collate
from .optim import build_optimizer, build_scheduler
from .sampler import ResumableSampler
from .state import (
    EMA_FILE,
    TrainingStateError,
    latest_state,
    publish_state,
    read_state_meta,
    state_dir,
    tmp_state_dir,
)

CONFIG_FILE = "train_config.yaml"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
# Keys that may differ between a run and its resumption (they don't change the numbers).
RESUME_FREE_KEYS = {
    "output_dir",
    "log_every",
    "val_every",
    "val_batches",
    "save_every",
    "keep_last",
    "image_effect_samples",
    "feature_cache",
    "data.num_workers",
    "cpu_threads",
}


@dataclass
class RunPlan:
    """A validated run: nothing here has touched the output folder yet."""

    cfg: TrainConfig
    mapping: KeyMapping
    model_cfg: object  # vla.config.VLAConfig
    output_dir: Path
    resume_from: Path | None
    data: DatasetSummary


# ---------------------------------------------------------------------- validation
def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and k != "model_overrides":
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def _resume_mismatch(saved: dict, cfg: TrainConfig) -> list[str]:
    a, b = _flatten(saved), _flatten(cfg.to_dict())
    return sorted(k for k in set(a) | set(b) if k not in RESUME_FREE_KEYS and a.get(k) != b.get(k))


def plan_run(cfg: TrainConfig, resume: bool | str | None = None) -> RunPlan:
    """Validate a run (raises a ``ValueError`` subclass with one line naming the problem); writes nothing."""
    from ..config import load_model_preset

    cfg.resolve_paths()
    mapping = KeyMapping.load(cfg.data.key_mapping)
    model_cfg = load_model_preset(cfg.model, **cfg.model_overrides)
    if model_cfg.proprio_dim != mapping.proprio_dim:
        raise TrainConfigError(
            f"key mapping '{mapping.name}' builds a {mapping.proprio_dim}-dim proprio but model '{model_cfg.preset}' "
            f"expects proprio_dim {model_cfg.proprio_dim}; "
            f"set model_overrides.proprio_dim={mapping.proprio_dim} or fix the mapping"
        )
    if model_cfg.action_dim != mapping.action_dim:
        raise TrainConfigError(
            f"key mapping '{mapping.name}' has action_dim {mapping.action_dim} but model '{model_cfg.preset}' predicts "
            f"{model_cfg.action_dim}; the policy needs 7 (6 relative IK pose deltas + 1 gripper)"
        )
    summary = check_files(cfg.data.files, mapping)
    if cfg.levers.wrist_dropout and model_cfg.conditioning != "image_tokens":
        raise TrainConfigError(
            f"levers.wrist_dropout needs conditioning image_tokens (it hides the wrist view's image tokens); "
            f"model '{model_cfg.preset}' uses {model_cfg.conditioning}: set levers.wrist_dropout=0"
        )
    if cfg.aux_state.keys:
        _check_aux_keys(cfg, model_cfg)
    elif model_cfg.state_dim:
        raise TrainConfigError(
            f"model '{model_cfg.preset}' has a state head (state_dim {model_cfg.state_dim}) but aux_state.keys is "
            "empty; name the recorded state it estimates (e.g. aux_state.keys=[cube_positions,cube_orientations]) "
            "or set model_overrides.state_dim=0"
        )
    out = Path(cfg.output_dir).expanduser().absolute()
    resume_from = None
    if resume:
        if isinstance(resume, str) and Path(resume).name.startswith("step_"):
            resume_from = Path(resume).absolute()
        else:
            resume_from = latest_state(out)
        if resume_from is None or not (resume_from / "state.json").is_file():
            raise TrainingStateError(
                f"{out}: no training state to resume (expected {out}/training_state/step_*); "
                "start without --resume, or point output_dir at the run to continue"
            )
        saved_cfg = out / CONFIG_FILE
        if saved_cfg.is_file():
            saved = yaml.safe_load(saved_cfg.read_text()) or {}
            diff = _resume_mismatch(saved, cfg)
            if diff:
                raise TrainConfigError(
                    f"{saved_cfg}: resuming with different settings for {diff}; resume with the run's own config "
                    f"(scripts/train.py --resume {out}) or start a new output_dir"
                )
    elif out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise TrainConfigError(
            f"output_dir {out} already exists and is not empty; "
            "pass --resume to continue that run or set output_dir=..."
        )
    return RunPlan(cfg=cfg, mapping=mapping, model_cfg=model_cfg, output_dir=out, resume_from=resume_from, data=summary)


def _check_aux_keys(cfg: TrainConfig, model_cfg) -> None:
    """Every file records the auxiliary state keys (in its first demo), and the model can host the probe."""
    from ..data.hdf5 import DATA_GROUP, demo_names, open_h5

    if model_cfg.conditioning != "image_tokens" and not model_cfg.state_dim:
        raise TrainConfigError(
            f"aux_state.keys is set but model '{model_cfg.preset}' uses conditioning {model_cfg.conditioning}; "
            "the state probe reads the context view's image tokens (conditioning: image_tokens) - set aux_state.keys=[]"
        )
    for path in cfg.data.files:
        with open_h5(path) as f:
            first = demo_names(f)[0]
            for key in cfg.aux_state.keys:
                if f"obs/{key}" not in f[DATA_GROUP][first]:
                    raise TrainConfigError(
                        f"{path}: {DATA_GROUP}/{first}/obs/{key} missing; aux_state.keys names obs keys recorded "
                        "in the demos (e.g. cube_positions), or set aux_state.keys=[] to train without the probe"
                    )


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


def _evenly_spaced(n: int, k: int) -> list[int]:
    if n <= 0 or k <= 0:
        return []
    k = min(n, k)
    return sorted(set(np.linspace(0, n - 1, k).round().astype(int).tolist()))


class _Metrics:
    """metrics.jsonl (one JSON object per line) + TensorBoard through accelerate's tracker, main process only."""

    def __init__(self, acc, out: Path, start_step: int):
        self.acc, self.enabled = acc, acc.is_main_process
        self.path = out / METRICS_FILE
        self.tb = bool(acc.log_with)
        if self.tb:  # every process calls init_trackers; accelerate creates the writer on the main one
            kw = {"purge_step": start_step + 1} if start_step > 0 else {}
            acc.init_trackers("tb", init_kwargs={"tensorboard": kw})
        if not self.enabled:
            return
        if start_step > 0 and self.path.is_file():  # drop what a killed run logged after its last state
            keep = [
                ln
                for ln in self.path.read_text().splitlines()
                if ln.strip() and json.loads(ln).get("step", 0) <= start_step
            ]
            atomic_write_text(self.path, "".join(ln + "\n" for ln in keep))
        self.file = open(self.path, "a")

    def log(self, step: int, values: dict) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps({"step": step, **values}) + "\n")
        self.file.flush()
        if self.tb:
            scalars = {
                k if "/" in k else f"train/{k}": v
                for k, v in values.items()
                if isinstance(v, (int, float)) and math.isfinite(v)
            }
            self.acc.log(scalars, step=step)

    def close(self) -> None:
        if self.tb:
            self.acc.end_training()
        if self.enabled:
            self.file.close()


def _trainable_names(model: torch.nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


# ---------------------------------------------------------------------- trainer
class Trainer:
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
        self.val_indices = _evenly_spaced(len(self.val_ds), cfg.val_batches * cfg.batch_size)

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

    def _keep_trainable_weights(self, models, weights, output_dir) -> None:
        """``save_state`` pre-hook: drop the frozen backbone from the saved weights (7B: 15 GB per state)."""
        for model, w in zip(models, weights):  # names as accelerate gives them (with or without a wrapper)
            keep = _trainable_names(model)
            for k in [k for k in w if k not in keep]:
                del w[k]

    def _check_saved_weights(self, models, input_dir) -> None:
        """``load_state`` pre-hook: the saved weights are exactly this model's trainable ones (one-line error)."""
        from safetensors import safe_open

        path = Path(input_dir) / "model.safetensors"
        if not path.is_file():  # FSDP writes its own files; accelerate checks them
            return
        with safe_open(str(path), "pt") as f:
            saved = set(f.keys())
        expected = _trainable_names(models[0])  # load_state then loads them with strict=False
        if saved != expected:
            missing, extra = sorted(expected - saved)[:3], sorted(saved - expected)[:3]
            raise TrainingStateError(
                f"{path}: weights don't match the model (missing {missing}, unexpected {extra}); "
                "resume with the run's own model config"
            )

    def _attach_state_probe(self) -> None:
        """Normalisation stats of the auxiliary state over the training samples, then the probe."""
        if self.train_cache is not None:
            state = self.train_cache.aux_state
        else:
            idx = _evenly_spaced(len(self.train_ds), 2048)
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

    # -------------------------------------------------------------- evaluation
    def _ema_applied(self):
        return self.ema.applied() if self.ema is not None else contextlib.nullcontext()

    def _val_batches(self) -> list[tuple[list[int], int]]:
        """This process's val batches as (sample indices, weight): its share of the val samples, then
        weight-0 repeats of the first val batch so every process runs the same number of forwards
        (FSDP's all-gathers must line up)."""
        bs, n, rank = self.cfg.batch_size, self.acc.num_processes, self.acc.process_index
        mine = self.val_indices[rank::n]
        batches = [(mine[s : s + bs], len(mine[s : s + bs])) for s in range(0, len(mine), bs)]
        per = -(-(-(-len(self.val_indices) // n)) // bs)  # batches of the process with the most samples
        return batches + [(self.val_indices[:bs], 0)] * (per - len(batches))

    def _full_params(self):
        """Context in which the unwrapped model holds all of its weights on every process, for code that
        calls its methods instead of its forward (the conditioning report): FSDP gathers its shards
        (``summon_full_params``, collective), DDP and one process already hold full copies."""
        if not self._fsdp:
            return contextlib.nullcontext()
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        return FSDP.summon_full_params(self.model, writeback=False)

    @torch.no_grad()
    def validate(self) -> float | None:
        """Mean val loss with fixed noise (so successive evaluations are comparable). Every process runs
        its shard of the val samples through the prepared model; the sums are reduced over processes."""
        if not self.val_indices:
            return None
        cfg, acc = self.cfg, self.acc
        was = self.model.training
        self.model.eval()
        sums = torch.zeros(2, dtype=torch.float64, device=acc.device)  # sum of loss * samples, sum of samples
        with torch.random.fork_rng(devices=[]), self._ema_applied(), acc.autocast():
            torch.manual_seed(cfg.seed + 1_000_003 + acc.process_index)
            for idx, weight in self._val_batches():
                if self.val_cache is not None:
                    batch = self.val_cache.batch(self.val_cache.rows(idx), acc.device)
                else:
                    batch = collate([self.val_ds[i] for i in idx])
                    if cfg.data.instruction:
                        batch["instruction"] = [cfg.data.instruction] * len(idx)
                out = self.model(batch)  # the flow-matching loss only: comparable with and without the probe
                loss = float(out.get("flow_loss", out["loss"]).float())
                sums += torch.tensor([loss * weight, weight], dtype=torch.float64, device=acc.device)
        self.model.train(was)
        sums = acc.reduce(sums, reduction="sum")
        return float(sums[0] / sums[1])

    def conditioning(self) -> dict:
        """Conditioning report on ``image_effect_samples`` evenly spaced val samples (train samples when
        the val split is empty): effect ratios of every input and the action MSE with real vs blanked
        images (``vla.eval.conditioning``); {} when disabled.

        Every process computes the whole report with the same inputs and seeds (under FSDP with the
        weights gathered), so no process waits on another and all return the same numbers; the main
        process's are logged."""
        n = self.cfg.image_effect_samples
        ds = self.val_ds if len(self.val_ds) >= 2 else self.train_ds
        idx = _evenly_spaced(len(ds), n)
        if len(idx) < 2:
            return {}
        if self._blank_images is None:
            self._blank_images = dataset_mean_images(self.train_ds, seed=self.cfg.seed)
        batch = collate([ds[i] for i in idx])
        if self.cfg.data.instruction:
            batch["instruction"] = [self.cfg.data.instruction] * len(idx)
        model = self.acc.unwrap_model(self.model)
        was = model.training
        with torch.random.fork_rng(devices=[]), self._full_params(), self._ema_applied(), self.acc.autocast():
            report = conditioning_report(model, batch, blank_images=self._blank_images, seed=self.cfg.seed,
                                         alt_instruction=ALT_INSTRUCTION)
        model.train(was)
        return report

    def _log_conditioning(self, step: int, metrics: _Metrics) -> dict:
        report = self.conditioning()
        if not report:
            return {}
        metrics.log(step, {
            "val/action_mse": report["val_action_mse"],
            "val/blank_image_action_mse": report["blank_image_val_action_mse"],
            "val/image_effect_ratio": report["image_effect_ratio"],
            "val/wrist_effect_ratio": report["wrist_effect_ratio"],
            "diag/both_images_effect_ratio": report["both_images_effect_ratio"],
            "diag/instruction_effect_ratio": report["instruction_effect_ratio"],
            "diag/proprio_effect_ratio": report["proprio_effect_ratio"],
        })
        self._say(
            f"step {step}: image_effect_ratio {report['image_effect_ratio']:.3f}, "
            f"wrist_effect_ratio {report['wrist_effect_ratio']:.3f}, val action mse {report['val_action_mse']:.4f} "
            f"(blank images {report['blank_image_val_action_mse']:.4f})"
        )
        warning = ignoring_images_warning(report)
        if warning:
            self._say(f"warning (step {step}): {warning}")
        return report

    # -------------------------------------------------------------- saving
    def save(self, step: int, final: bool = False, val_loss: float | None = None) -> Path | None:
        """Checkpoint (``vla.checkpoint`` format, EMA weights when on) and resumable training state.

        Collective: every process takes part in gathering the weights (``accelerator.get_state_dict``:
        FSDP's full state dict on the main process, names without wrapper prefixes) and in
        ``accelerator.save_state``; the main process writes the checkpoint and publishes the state."""
        from ..checkpoint import save_checkpoint

        acc = self.acc
        acc.wait_for_everyone()
        path = self.out / "final" if final else self.out / "checkpoints" / f"step_{step:06d}"
        with self._ema_applied():
            state = acc.get_state_dict(self.model)
            if acc.is_main_process:
                extra = {
                    "step": step,
                    "val_loss": val_loss,
                    "train_config": self.cfg.to_dict(),
                    "train_demos": self.train_ds.demo_ids,
                    "samples": len(self.train_ds),
                }
                save_checkpoint(acc.unwrap_model(self.model), path, key_mapping=self.plan.mapping.to_dict(),
                                instruction=self.instruction, extra=extra, state_dict=state)
        del state
        tmp = tmp_state_dir(self.out, step)
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        acc.save_state(str(tmp))
        acc.wait_for_everyone()
        if acc.is_main_process:
            if self.ema is not None:
                from safetensors.torch import save_file

                save_file({k: v.detach().cpu().contiguous() for k, v in self.ema.state_dict().items()},
                          str(tmp / EMA_FILE))
            meta = {
                "step": int(step),
                "consumed_samples": step * self.cfg.batch_size * self.cfg.grad_accum_steps,
                "world_size": acc.num_processes,
                "distributed_type": str(acc.distributed_type).split(".")[-1],
            }
            publish_state(tmp, state_dir(self.out, step), meta, self.cfg.keep_last)
        acc.wait_for_everyone()
        return path if acc.is_main_process else None

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
        metrics = _Metrics(acc, out, self.start_step)
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


def input_error_types() -> tuple[type[Exception], ...]:
    """Exceptions that mean bad input (config, data, model files): scripts print one line and exit 2."""
    from ..backbone.qwen import BackboneError
    from ..checkpoint import CheckpointError
    from ..config import ConfigError
    from ..data.hdf5 import DatasetError
    from ..data.key_mapping import KeyMappingError
    from ..data.preprocess import ImageFormatError
    from ..normalization import NormStatsError

    return (
        TrainConfigError,
        TrainingStateError,
        DatasetError,
        KeyMappingError,
        ConfigError,
        BackboneError,
        CheckpointError,
        NormStatsError,
        ImageFormatError,  # also vla.backbone.images.ImageInputError (the same type)
    )
