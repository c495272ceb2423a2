"""An RL expert: a PPO actor trained on privileged state (``scripts/train_expert.py``), as a demo source.

Scripted experts give narrow, repetitive demos; a PPO actor gives varied, recovering ones. It trains with
rsl-rl on ``Lift-Cube-RL`` (no cameras, the state vector as observation group ``policy``) and records on the
normal ``Lift-Cube`` env (cameras on), where the same vector is the observation group ``expert``; actions
are the VLA layout (6 relative IK pose deltas + gripper), so its demos train like any other.

Nothing is unpickled. The trained actor is exported as a folder (written atomically)::

    exported/policy.safetensors   obs_normalizer.{_mean,_var,_std,count} + mlp.{i}.{weight,bias}
    exported/policy.json          format, task, obs group + term names/dims, network sizes, activation, clip

and rsl-rl's own ``model_<it>.pt`` checkpoints are read only with ``torch.load(weights_only=True)`` (weights
from the file, sizes and names from the run's ``exported/policy.json``).

    expert = RLExpert(env, "outputs/rl_expert/Lift-Cube/<time>/exported", task="Lift-Cube")
    actions = expert(obs)          # (num_envs, 7): the actor's mean, clipped as in training
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

FORMAT = "vla_isaac.rl_expert"
FORMAT_VERSION = 1
EXPORT_DIR = "exported"
WEIGHTS_FILE = "policy.safetensors"
META_FILE = "policy.json"
OBS_GROUP = "expert"
"""Observation group of the recording env (Lift-Cube) that the actor reads."""

RL_TRAINING_TASKS = {"Lift-Cube": "Lift-Cube-RL", "VLA-Lift-Cube-Franka-v0": "VLA-Lift-Cube-Franka-RL-v0"}
"""Task an expert records on -> the state-only variant it trains on."""

_META_KEYS = ("format", "format_version", "task", "obs_group", "obs_terms", "obs_dim", "action_dim",
              "hidden_dims", "activation", "obs_normalization")  # fmt: skip
_RETRAIN = "train one with scripts/train_expert.py and pass its <log_dir>/exported folder"


class RLExpertError(ValueError):
    """A missing, damaged or mismatched RL expert checkpoint; the message names the file and the fix."""


def rl_training_task(task: str) -> str:
    """The gym id PPO trains on for ``task`` (``Lift-Cube`` -> ``Lift-Cube-RL``; an RL id maps to itself)."""
    if task in RL_TRAINING_TASKS.values():
        return task
    if task in RL_TRAINING_TASKS:
        return RL_TRAINING_TASKS[task]
    raise RLExpertError(
        f"task {task!r} has no RL expert variant; RL experts exist for {', '.join(RL_TRAINING_TASKS)}"
    )


def recording_task(task: str) -> str:
    """The task an expert trained on ``task`` records on (``Lift-Cube-RL`` -> ``Lift-Cube``)."""
    return {rl: base for base, rl in RL_TRAINING_TASKS.items()}.get(task, task)


# --------------------------------------------------------------------------------------------------
# The actor network
# --------------------------------------------------------------------------------------------------


class ActorNet(nn.Module):
    """The deterministic part of rsl-rl's ``MLPModel`` actor: observation normaliser + MLP (the Gaussian's
    mean), built from rsl-rl's own modules so exported weights load with the same names; outputs are
    clipped as ``RslRlVecEnvWrapper(clip_actions=...)`` clipped them in training."""

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        hidden_dims: Sequence[int],
        activation: str = "elu",
        obs_normalization: bool = True,
        clip_actions: float | None = None,
    ):
        from rsl_rl.modules import MLP, EmpiricalNormalization

        super().__init__()
        self.obs_normalizer = EmpiricalNormalization(obs_dim) if obs_normalization else nn.Identity()
        self.mlp = MLP(obs_dim, action_dim, list(hidden_dims), activation)
        self.clip_actions = clip_actions

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        actions = self.mlp(self.obs_normalizer(obs))
        if self.clip_actions is not None:
            actions = actions.clamp(-self.clip_actions, self.clip_actions)
        return actions


def _actor_tensors(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The entries of an rsl-rl ``MLPModel`` state dict that the deterministic actor needs."""
    return {
        k: v.detach().cpu().contiguous()
        for k, v in state_dict.items()
        if k.startswith(("mlp.", "obs_normalizer."))
    }


@dataclass
class RLPolicy:
    """A loaded actor and its metadata (``policy.json``)."""

    net: ActorNet
    meta: dict[str, Any]
    path: Path

    @property
    def obs_dim(self) -> int:
        return int(self.meta["obs_dim"])

    @property
    def action_dim(self) -> int:
        return int(self.meta["action_dim"])


# --------------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------------


def export_policy(
    actor: nn.Module,
    out_dir: str | os.PathLike,
    *,
    task: str,
    train_task: str,
    obs_terms: Sequence[tuple[str, int]],
    hidden_dims: Sequence[int],
    activation: str,
    obs_normalization: bool,
    clip_actions: float | None,
    iteration: int,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``actor`` (an rsl-rl ``MLPModel``, e.g. ``runner.alg.get_policy()``) as ``out_dir/policy.safetensors``
    + ``policy.json``, replacing ``out_dir`` in one rename. Returns ``out_dir``."""
    from importlib.metadata import version

    from safetensors.torch import save_file

    from vla.utils.io import atomic_dir

    tensors = _actor_tensors(actor.state_dict())
    obs_terms = [[str(name), int(dim)] for name, dim in obs_terms]
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "task": task,
        "train_task": train_task,
        "obs_group": OBS_GROUP,
        "obs_terms": obs_terms,
        "obs_dim": sum(dim for _, dim in obs_terms),
        "action_dim": int(tensors[_last_linear(tensors)].shape[0]),
        "hidden_dims": [int(d) for d in hidden_dims],
        "activation": activation,
        "obs_normalization": bool(obs_normalization),
        "clip_actions": None if clip_actions is None else float(clip_actions),
        "iteration": int(iteration),
        "rsl_rl_version": version("rsl-rl-lib"),
        **dict(extra or {}),
    }
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": FORMAT, "task": task})
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return out_dir


def _last_linear(tensors: Mapping[str, torch.Tensor]) -> str:
    weights = [k for k in tensors if k.startswith("mlp.") and k.endswith(".weight")]
    return max(weights, key=lambda k: int(k.split(".")[1]))


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------


def load_policy(path: str | os.PathLike, device: str | torch.device = "cpu") -> RLPolicy:
    """Load an exported actor: the ``exported`` folder (or a file in it, or the run folder holding it), or
    an rsl-rl ``model_<it>.pt`` of a ``train_expert.py`` run (weights only; sizes from ``exported/policy.json``).

    Raises :class:`RLExpertError` naming the file and the fix for anything missing, damaged or inconsistent.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise RLExpertError(f"{path}: no such file or folder; {_RETRAIN} (or one of its model_*.pt)")
    if path.is_file() and path.suffix == ".pt":
        return _load_rsl_rl_checkpoint(path, device)
    folder = path if path.is_dir() else path.parent
    if path.is_dir() and not (folder / META_FILE).exists() and (folder / EXPORT_DIR / META_FILE).exists():
        folder = folder / EXPORT_DIR  # a training run's folder
    meta = read_meta(folder / META_FILE)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise RLExpertError(f"{weights}: missing (the export is incomplete); re-export the run or {_RETRAIN}")
    try:
        from safetensors.torch import load_file

        tensors = load_file(str(weights))
    except Exception as exc:  # safetensors raises its own error type for a damaged header or payload
        raise RLExpertError(
            f"{weights}: cannot be read as safetensors ({exc}); the file is truncated or not a policy export: "
            f"copy it again from its training run, or {_RETRAIN}"
        ) from None
    return RLPolicy(_build_net(meta, tensors, weights, device), meta, folder)


def read_meta(meta_path: Path) -> dict[str, Any]:
    """``policy.json`` with its required keys checked."""
    if not meta_path.is_file():
        raise RLExpertError(f"{meta_path}: missing; not an RL expert export: {_RETRAIN}")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RLExpertError(f"{meta_path}: not valid JSON ({exc}); the export is damaged: {_RETRAIN}") from None
    if not isinstance(meta, dict):
        raise RLExpertError(f"{meta_path}: expected a JSON object; not an RL expert export: {_RETRAIN}")
    missing = [k for k in _META_KEYS if k not in meta]
    if missing:
        raise RLExpertError(f"{meta_path}: missing key(s) {', '.join(missing)}; not an RL expert export: {_RETRAIN}")
    if meta["format"] != FORMAT or meta["format_version"] != FORMAT_VERSION:
        raise RLExpertError(
            f"{meta_path}: format {meta['format']!r} v{meta['format_version']}, expected {FORMAT!r} "
            f"v{FORMAT_VERSION}: {_RETRAIN}"
        )
    terms_dim = sum(int(d) for _, d in meta["obs_terms"])
    if terms_dim != int(meta["obs_dim"]):
        raise RLExpertError(
            f"{meta_path}: obs_dim {meta['obs_dim']} != the sum of its obs_terms ({terms_dim}); the file was edited "
            f"or damaged: {_RETRAIN}"
        )
    return meta


def _build_net(meta: dict, tensors: Mapping[str, torch.Tensor], source: Path, device) -> ActorNet:
    net = ActorNet(
        obs_dim=int(meta["obs_dim"]),
        action_dim=int(meta["action_dim"]),
        hidden_dims=meta["hidden_dims"],
        activation=meta["activation"],
        obs_normalization=bool(meta["obs_normalization"]),
        clip_actions=meta.get("clip_actions"),
    )
    expected = net.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise RLExpertError(
            f"{source}: tensors do not match {META_FILE} (missing {missing[:4]}, unexpected {unexpected[:4]}); "
            f"the weights and the metadata come from different exports: {_RETRAIN}"
        )
    for key, value in expected.items():
        if tuple(tensors[key].shape) != tuple(value.shape):
            raise RLExpertError(
                f"{source}: tensor {key} has shape {tuple(tensors[key].shape)} but {META_FILE} "
                f"(obs_dim {meta['obs_dim']}, hidden_dims {meta['hidden_dims']}, action_dim {meta['action_dim']}) "
                f"implies {tuple(value.shape)}; the weights and the metadata come from different exports: {_RETRAIN}"
            )
    net.load_state_dict(dict(tensors), strict=True)
    return net.to(device).eval()


def load_rsl_rl_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """An rsl-rl checkpoint (``model_<it>.pt``) through ``torch.load(weights_only=True)``: tensors, numbers and
    containers only, never arbitrary pickled objects."""
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RLExpertError(
            f"{path}: cannot be loaded as plain weights ({first_line}); only rsl-rl checkpoints holding tensors "
            f"are read (nothing else is unpickled): pass the run's {EXPORT_DIR}/ folder, or {_RETRAIN}"
        ) from None
    if not isinstance(ckpt, dict) or "actor_state_dict" not in ckpt:
        raise RLExpertError(f"{path}: has no 'actor_state_dict'; not an rsl-rl PPO checkpoint: {_RETRAIN}")
    return ckpt


def _load_rsl_rl_checkpoint(path: Path, device) -> RLPolicy:
    meta_path = path.parent / EXPORT_DIR / META_FILE
    if not meta_path.is_file():
        raise RLExpertError(
            f"{path}: no {EXPORT_DIR}/{META_FILE} beside it to tell the task, observation terms and network; "
            f"pass the {EXPORT_DIR}/ folder of a scripts/train_expert.py run instead"
        )
    meta = dict(read_meta(meta_path))
    ckpt = load_rsl_rl_checkpoint(path)
    meta["iteration"] = int(ckpt.get("iter", -1))
    return RLPolicy(_build_net(meta, _actor_tensors(ckpt["actor_state_dict"]), path, device), meta, path)


# --------------------------------------------------------------------------------------------------
# Matching an env
# --------------------------------------------------------------------------------------------------


def _env_cfg_entry(task: str) -> str:
    """A task's env cfg entry point: the same for a task and its aliases (``VLA-Lift-Cube-Franka-v0``)."""
    import gymnasium as gym

    try:
        return gym.spec(task).kwargs.get("env_cfg_entry_point", task)
    except gym.error.Error:
        return task


def check_task(policy: RLPolicy, task: str) -> None:
    """Raise :class:`RLExpertError` unless ``policy`` was trained for ``task`` (or its RL variant)."""
    trained_for = recording_task(policy.meta["task"])
    if _env_cfg_entry(recording_task(task)) != _env_cfg_entry(trained_for):
        raise RLExpertError(
            f"{policy.path}: trained for {trained_for!r}, not {task!r}; record with --task {trained_for}, or train "
            f"an expert for {task} with scripts/train_expert.py --task {task}"
        )


def check_compatible(
    policy: RLPolicy, *, task: str | None, obs_terms: Sequence[tuple[str, int]] | None, action_dim: int
) -> None:
    """Raise :class:`RLExpertError` unless ``policy`` fits an env of ``task`` whose expert observation group
    has ``obs_terms`` ((name, dim) pairs; None = the env has no such group) and ``action_dim`` actions."""
    meta, where = policy.meta, policy.path
    trained_for = recording_task(meta["task"])
    if task is not None:
        check_task(policy, task)
    if obs_terms is None:
        raise RLExpertError(
            f"{where}: the env ({task or 'this task'}) has no '{meta['obs_group']}' observation group for the "
            f"RL expert to read; RL experts exist for {', '.join(RL_TRAINING_TASKS)}"
        )
    env_dim = sum(d for _, d in obs_terms)
    if env_dim != policy.obs_dim or [list(t) for t in obs_terms] != [list(t) for t in meta["obs_terms"]]:
        raise RLExpertError(
            f"{where}: expects {policy.obs_dim} observations ({_terms_text(meta['obs_terms'])}) but the env's "
            f"'{meta['obs_group']}' group gives {env_dim} ({_terms_text(obs_terms)}); the observation layout "
            f"changed since it was trained: retrain it with scripts/train_expert.py --task {trained_for}"
        )
    if action_dim != policy.action_dim:
        raise RLExpertError(
            f"{where}: outputs {policy.action_dim} actions but the env takes {action_dim}; the action terms "
            f"changed since it was trained: retrain it with scripts/train_expert.py --task {trained_for}"
        )


def _terms_text(terms) -> str:
    return " ".join(f"{name}:{dim}" for name, dim in terms)


def obs_group_terms(env, group: str) -> list[tuple[str, int]] | None:
    """(name, flat dim) of each term of an env's observation group, or None if it has no such group."""
    manager = env.observation_manager
    if group not in manager.active_terms:
        return None
    dims = manager.group_obs_term_dim[group]
    return [(name, int(torch.Size(dim).numel())) for name, dim in zip(manager.active_terms[group], dims)]


class RLExpert:
    """A trained PPO actor as an expert for :func:`vla_isaac.recording.record_demos` (same interface as
    :class:`~vla_isaac.experts.ScriptedExpert`): ``expert(obs) -> (num_envs, 7)``, deterministic (the actor's
    mean), reading the env's ``expert`` observation group.

    Args:
        env: a Lift-Cube ``ManagerBasedRLEnv`` (cameras or not).
        checkpoint: an exported folder / ``model_<it>.pt`` path (see :func:`load_policy`) or a loaded :class:`RLPolicy`.
        task: the env's task id, checked against the one the actor was trained for (None skips the check).
    """

    def __init__(self, env, checkpoint: str | os.PathLike | RLPolicy, task: str | None = None):
        self.policy = checkpoint if isinstance(checkpoint, RLPolicy) else load_policy(checkpoint, env.device)
        self.group = self.policy.meta["obs_group"]
        check_compatible(
            self.policy,
            task=task,
            obs_terms=obs_group_terms(env, self.group),
            action_dim=env.action_manager.total_action_dim,
        )
        self.policy.net.to(env.device)
        self.num_envs = env.num_envs

    def reset(self, env_ids: Sequence[int] | torch.Tensor | None = None) -> None:
        """Nothing to reset: the actor is memoryless (its last action is part of the observation)."""

    @torch.no_grad()
    def __call__(self, obs: Mapping[str, Any]) -> torch.Tensor:
        state = obs[self.group]
        state = state.torch if hasattr(state, "torch") else state
        return self.policy.net(state.float())
