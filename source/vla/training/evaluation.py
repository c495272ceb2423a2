"""What the trainer measures while it trains: the validation loss (fixed noise, sharded over processes)
and the conditioning report (``vla.eval.conditioning``), as a mixin of `Trainer` so that every process runs
the same collectives."""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from ..data.dataset import collate
from ..eval.conditioning import (ALT_INSTRUCTION, alternative_instructions, conditioning_report, dataset_mean_images,
                                 ignoring_images_warning)
from .metrics import Metrics


def evenly_spaced(n: int, k: int) -> list[int]:
    if n <= 0 or k <= 0:
        return []
    k = min(n, k)
    return sorted(set(np.linspace(0, n - 1, k).round().astype(int).tolist()))


class EvaluationMixin:
    """`Trainer`'s evaluation methods; they use its ``cfg``, ``acc``, ``model``, ``ema``, datasets and caches."""

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
        idx = evenly_spaced(len(ds), n)
        if len(idx) < 2:
            return {}
        if self._blank_images is None:
            self._blank_images = dataset_mean_images(self.train_ds, seed=self.cfg.seed)
        batch = collate([ds[i] for i in idx])
        if self.cfg.data.instruction:
            batch["instruction"] = [self.cfg.data.instruction] * len(idx)
        # the instruction check swaps in another of the dataset's instructions (as diagnose_vla.py does); data of
        # one instruction (or a fixed data.instruction) gets ALT_INSTRUCTION, an instruction of no task here
        pool = sorted({d.instruction for d in (*self.train_ds.demos, *self.val_ds.demos)})
        if self.cfg.data.instruction or len(pool) < 2:
            alt = ALT_INSTRUCTION
        else:
            alt = alternative_instructions(batch["instruction"], pool, seed=self.cfg.seed)
        model = self.acc.unwrap_model(self.model)
        was = model.training
        with torch.random.fork_rng(devices=[]), self._full_params(), self._ema_applied(), self.acc.autocast():
            report = conditioning_report(model, batch, blank_images=self._blank_images, seed=self.cfg.seed,
                                         alt_instruction=alt)
        model.train(was)
        return report

    def _log_conditioning(self, step: int, metrics: Metrics) -> dict:
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
