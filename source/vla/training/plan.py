"""Run planning: every check on a training run's input (config keys, key mapping, demo files, model
preset, output folder, resume compatibility) before anything is written, so bad input leaves nothing behind."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from ..data.key_mapping import KeyMapping
from ..data.verify import DatasetSummary, check_files
from .config import TrainConfig, TrainConfigError
from .state import TrainingStateError, latest_state

CONFIG_FILE = "train_config.yaml"
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
    if cfg.levers.state_teacher_forcing and not model_cfg.state_dim:
        raise TrainConfigError(
            f"levers.state_teacher_forcing feeds the expert the recorded state in place of the state head's estimate; "
            f"model '{model_cfg.preset}' has no state head: set model_overrides.state_dim or levers.state_teacher_forcing=0"
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
