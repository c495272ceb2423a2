"""Which instruction each env's current episode asks for, and which instructions a task can give.

A task with one instruction (Lift-Cube, Stack-Cube) has it as ``env.cfg.instruction``; a language-conditioned
task (Lift-Cube-Color) draws one per env and episode and keeps them in ``env.instructions`` (a list of
num_envs strings, written by its reset event). Everything that needs "this env's instruction" (the recorder,
``VLAPolicy``, the evaluation scripts) reads it through :func:`env_instructions`, never from a checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence


def has_episode_instructions(env) -> bool:
    """True when the env draws an instruction per episode (``env.instructions``)."""
    return isinstance(getattr(env, "instructions", None), list) or bool(
        getattr(getattr(env, "cfg", None), "per_episode_instruction", False))


def env_instructions(env, env_ids: Sequence[int] | None = None) -> list[str]:
    """The current episode's instruction of each env in ``env_ids`` (all envs when None)."""
    ids = range(env.num_envs) if env_ids is None else [int(i) for i in env_ids]
    per_env = getattr(env, "instructions", None)
    if isinstance(per_env, list) and len(per_env) == env.num_envs:
        return [str(per_env[i]) for i in ids]
    return [str(getattr(env.cfg, "instruction", "") or "")] * len(ids)


def task_instructions(cfg) -> list[str]:
    """Every instruction the task's env cfg can give: templates with a ``{color}`` placeholder formatted
    with each of ``cfg.cube_colors``; plain templates (paraphrases) as they are; else ``[cfg.instruction]``."""
    templates = list(getattr(cfg, "instruction_templates", None) or [])
    colors = list(getattr(cfg, "cube_colors", None) or [])
    out: list[str] = []
    for t in templates:
        if "{color}" in t:
            out += [t.format(color=c) for c in colors]
        else:
            out.append(t)
    if not out and getattr(cfg, "instruction", None):
        out = [str(cfg.instruction)]
    return list(dict.fromkeys(out))


def env_task_id(env) -> str | None:
    """The registered vla_isaac task id whose env cfg class is the env's (the first, canonical one), or None."""
    import gymnasium as gym

    from .tasks import TASK_IDS

    cls = type(getattr(env, "cfg", None))
    for task in TASK_IDS:
        entry = gym.spec(task).kwargs.get("env_cfg_entry_point", "")
        if isinstance(entry, str) and entry.rpartition(":")[2] == cls.__name__ and entry.partition(":")[0] == cls.__module__:
            return task
    return None


def checkpoint_training_tasks(meta: dict) -> list[str]:
    """Env names of the demo files a checkpoint was trained on (``env_args`` of each file still on disk)."""
    import json
    from pathlib import Path

    files = (((meta.get("extra") or {}).get("train_config") or {}).get("data") or {}).get("files") or []
    tasks: list[str] = []
    for path in files:
        if not Path(path).is_file():
            continue
        try:
            import h5py

            with h5py.File(path, "r") as f:
                name = json.loads(f["data"].attrs.get("env_args", "{}")).get("env_name")
        except (OSError, KeyError, ValueError):
            continue
        if name and name not in tasks:
            tasks.append(str(name))
    return tasks


def _canonical(task: str) -> str:
    aliases = {"VLA-Lift-Cube-Franka-v0": "Lift-Cube", "VLA-Stack-Cube-Franka-v0": "Stack-Cube",
               "VLA-Lift-Cube-Color-Franka-v0": "Lift-Cube-Color"}
    return aliases.get(task, task)


def checkpoint_task_warning(meta: dict, env, *, task: str | None = None, instruction: str | None = None) -> str | None:
    """A warning when the checkpoint was trained on another task than the env's: by the env names of its
    training files (when they are still on disk), else by its training instruction not being one this task
    gives (skipped when the user passes ``instruction``). None when nothing says they differ."""
    env_task = task or env_task_id(env)
    trained = checkpoint_training_tasks(meta)
    if env_task and trained and _canonical(env_task) not in {_canonical(t) for t in trained}:
        return (f"the checkpoint was trained on {', '.join(trained)} demos but the env is {env_task}: the policy "
                f"acts on this env's instruction ('{env_instructions(env)[0]}'), a task it was not trained on")
    ckpt_instruction = str(meta.get("instruction") or "")
    valid = task_instructions(env.cfg)
    if instruction is None and ckpt_instruction and valid and ckpt_instruction not in valid and not trained:
        return (f"the checkpoint was trained with the instruction '{ckpt_instruction}', which is not one of "
                f"{env_task or type(env.cfg).__name__}'s ({'; '.join(valid[:4])}{' ...' if len(valid) > 4 else ''}): "
                "it may have been trained on another task")
    return None
