"""Recorder terms and env-cfg setup for recording: what Isaac Lab's recorder manager writes per episode.

:func:`configure_recording` takes the ``success`` term out of the env's terminations and installs
:class:`DemoRecorderManagerCfg` (Isaac Lab's action/state recorder plus the instruction and the expert's
clean label actions); :class:`SuccessCheck` evaluates the removed term once per step instead.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from isaaclab.envs.mdp.recorders.recorders_cfg import ActionStateRecorderManagerCfg
from isaaclab.managers import DatasetExportMode, RecorderTerm, RecorderTermCfg, TerminationManager
from isaaclab.utils import configclass

from .files import (
    INSTRUCTION_KEY,
    LABEL_ACTIONS_KEY,
    LABEL_VALID_KEY,
    FileMode,
    RecordingError,
    check_output_path,
    demo_file_handler,
    encode_texts,
)

if TYPE_CHECKING:
    from isaaclab.envs import ManagerBasedRLEnv, ManagerBasedRLEnvCfg
    from isaaclab.managers import TerminationTermCfg

LABEL_ATTR = "_vla_label_actions"
"""Env attribute the record loop sets to the expert's ``label_actions`` before each step."""
LABEL_VALID_ATTR = "_vla_label_valid"
"""Env attribute the record loop sets to the expert's ``label_valid`` (per env) before each step."""

__all__ = [
    "LABEL_ATTR",
    "LABEL_VALID_ATTR",
    "DemoRecorderManagerCfg",
    "InstructionRecorder",
    "InstructionRecorderCfg",
    "LabelActionRecorder",
    "LabelActionRecorderCfg",
    "SuccessCheck",
    "configure_recording",
    "episode_instructions",
]


def episode_instructions(env: ManagerBasedRLEnv, env_ids: Sequence[int]) -> list[str]:
    """The instruction of each env's current episode: its own, drawn at reset by a language-conditioned task
    (Lift-Cube-Color's ``env.instructions``), else the env cfg's ``instruction`` (``vla_isaac.language``)."""
    from ..language import env_instructions

    return env_instructions(env, [int(i) for i in env_ids])


class LabelActionRecorder(RecorderTerm):
    """Records the expert's clean action of every step (``env._vla_label_actions``, set by
    :func:`record_demos` from ``expert.label_actions``); nothing when the expert has none."""

    def record_pre_step(self):
        label = getattr(self._env, LABEL_ATTR, None)
        if label is None:
            return None, None
        return LABEL_ACTIONS_KEY, label


@configclass
class LabelActionRecorderCfg(RecorderTermCfg):
    class_type: type = LabelActionRecorder


class LabelValidRecorder(RecorderTerm):
    """Records whether each step's label is worth learning (``env._vla_label_valid``, the scripted expert's
    ``label_valid``: False while it stages a grasp miss); nothing when the expert has none."""

    def record_pre_step(self):
        valid = getattr(self._env, LABEL_VALID_ATTR, None)
        if valid is None:
            return None, None
        return LABEL_VALID_KEY, valid.reshape(-1, 1).to(torch.uint8)


@configclass
class LabelValidRecorderCfg(RecorderTermCfg):
    class_type: type = LabelValidRecorder


class InstructionRecorder(RecorderTerm):
    """Records the episode's instruction at reset; :class:`DemoFileHandler` turns it into the
    ``instruction`` attribute of the demo (Isaac Lab's own handler would store it as a uint8 dataset)."""

    def record_post_reset(self, env_ids: Sequence[int] | None):
        ids = list(range(self._env.num_envs)) if env_ids is None else list(env_ids)
        return INSTRUCTION_KEY, encode_texts(episode_instructions(self._env, ids), self._env.device)


@configclass
class InstructionRecorderCfg(RecorderTermCfg):
    class_type: type = InstructionRecorder


@configclass
class DemoRecorderManagerCfg(ActionStateRecorderManagerCfg):
    """Isaac Lab's action/state recorder (initial_state, states, actions, obs, processed_actions) plus
    the instruction."""

    record_instruction = InstructionRecorderCfg()
    record_label_actions = LabelActionRecorderCfg()
    record_label_valid = LabelValidRecorderCfg()


def configure_recording(
    env_cfg: ManagerBasedRLEnvCfg,
    output: str | os.PathLike,
    *,
    env_name: str | None = None,
    mode: FileMode = "new",
    keep_failed: bool = False,
    env_kwargs: Mapping[str, Any] | None = None,
    compression: bool = True,
) -> TerminationTermCfg:
    """Set ``env_cfg`` up to record into ``output``; returns the env's ``success`` termination term.

    The term is removed from ``env_cfg.terminations`` (as Isaac Lab's record_demos does) and must be
    passed to :func:`record_demos`, which evaluates it and ends successful episodes itself.
    ``env_kwargs`` (task options) are stored in the file's ``env_args`` JSON for replay.
    """
    output = check_output_path(output, mode, env_name)
    success = getattr(env_cfg.terminations, "success", None)
    if success is None:
        raise RecordingError(
            f"{type(env_cfg).__name__}: has no 'success' termination term; recording needs one to tell good demos"
        )
    env_cfg.terminations.success = None
    env_cfg.observations.policy.concatenate_terms = False  # one obs/<key> dataset per term
    if env_name:
        env_cfg.env_name = env_name  # read by RecorderManager -> data.attrs["env_args"]["env_name"]
    recorders = DemoRecorderManagerCfg()
    recorders.dataset_file_handler_class_type = demo_file_handler(mode, env_kwargs)
    recorders.dataset_export_dir_path = str(output.parent)
    recorders.dataset_filename = output.name
    recorders.dataset_export_mode = (
        DatasetExportMode.EXPORT_ALL if keep_failed else DatasetExportMode.EXPORT_SUCCEEDED_ONLY
    )
    recorders.dataset_compression = compression
    env_cfg.recorders = recorders
    return success


class SuccessCheck:
    """Evaluates a success termination term once per env step, outside the env's termination manager.

    A private :class:`TerminationManager` holding only that term resolves its params and instantiates
    class terms (e.g. stateful "held for k steps" terms) exactly as the env would; call :meth:`reset`
    for every env that starts a new episode.
    """

    def __init__(self, env: ManagerBasedRLEnv, term_cfg: TerminationTermCfg):
        self._manager = TerminationManager({"success": term_cfg}, env)

    def __call__(self) -> torch.Tensor:
        self._manager.compute()
        return self._manager.get_term("success").clone()

    def reset(self, env_ids: Sequence[int] | torch.Tensor | None = None) -> None:
        self._manager.reset(env_ids)

