"""How the trainer saves: checkpoints (``vla.checkpoint`` format) and resumable training states that hold
only the trainable weights (``save_state``/``load_state`` hooks), as a mixin of `Trainer` (saving is collective)."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from .state import EMA_FILE, TrainingStateError, publish_state, state_dir, tmp_state_dir


def trainable_names(model: torch.nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


class SavingMixin:
    """`Trainer`'s saving methods; they use its ``cfg``, ``acc``, ``model``, ``ema`` (``_ema_applied``), ``plan``
    and ``out``."""

    def _keep_trainable_weights(self, models, weights, output_dir) -> None:
        """``save_state`` pre-hook: drop the frozen backbone from the saved weights (7B: 15 GB per state)."""
        for model, w in zip(models, weights):  # names as accelerate gives them (with or without a wrapper)
            keep = trainable_names(model)
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
        expected = trainable_names(models[0])  # load_state then loads them with strict=False
        if saved != expected:
            missing, extra = sorted(expected - saved)[:3], sorted(saved - expected)[:3]
            raise TrainingStateError(
                f"{path}: weights don't match the model (missing {missing}, unexpected {extra}); "
                "resume with the run's own model config"
            )

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
