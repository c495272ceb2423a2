"""Train an RL expert (PPO on privileged state) for a vla_isaac task with rsl-rl, through Isaac Lab's isaaclab_rl.

Trains on the task's state-only variant (``Lift-Cube`` -> ``Lift-Cube-RL``: no cameras, the state vector as
observation group ``policy``, the task's IK-Rel + gripper actions) with the rsl-rl runner config registered
as the task's ``rsl_rl_cfg_entry_point``. Writes TensorBoard logs, rsl-rl checkpoints (``model_<it>.pt``, for
``--resume``), ``params/{env,agent}.yaml`` and, at every checkpoint, the actor as ``exported/policy.safetensors``
+ ``policy.json``: the folder ``record_demos.py --expert rl --expert_checkpoint`` reads.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime
from pathlib import Path

EXAMPLES = """examples:
  python scripts/train_expert.py --task Lift-Cube --num_envs 16 --max_iterations 200          # CPU, MJWarp
  python scripts/train_expert.py --task Lift-Cube --num_envs 4096 --device cuda:0             # a GPU
  python scripts/train_expert.py --task Lift-Cube --resume outputs/rl_expert/Lift-Cube/RUN --max_iterations 100
  tensorboard --logdir outputs/rl_expert
  python scripts/record_demos.py --task Lift-Cube --expert rl \\
      --expert_checkpoint outputs/rl_expert/Lift-Cube/RUN/exported --num_demos 20 --output demos/lift_rl.hdf5
  isaaclab -p scripts/train_expert.py --task Lift-Cube ...   (same flags through Isaac Lab's launcher)

exit status: 0 done, 2 bad input (one `error: ...` line), 130 interrupted (the policy so far is saved and exported).
"""


def build_parser() -> argparse.ArgumentParser:
    from vla_isaac.envs import add_sim_args

    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--task", default="Lift-Cube", help="task the expert is for (default Lift-Cube); trains on its -RL variant")
    add("--num_envs", type=int, default=16, help="parallel envs (default 16: MJWarp on the CPU; thousands on a GPU)")
    add("--max_iterations", type=int, default=None, help="PPO iterations (default: the runner config's, 1500)")
    add("--seed", type=int, default=None, help="seed of the envs and the networks (default: the runner config's, 42)")
    add("--num_steps_per_env", type=int, default=None, help="rollout steps per env and iteration (default 24)")
    add("--save_interval", type=int, default=None, help="iterations between checkpoints + exports (default 50)")
    parser.add_argument(
        "--log_dir", default=None,
        help="run folder (default outputs/rl_expert/<task>/<YYYY-mm-dd_HH-MM-SS>); must not hold a run already",
    )
    parser.add_argument(
        "--resume", default=None, metavar="CKPT",
        help="continue from an rsl-rl checkpoint (model_<it>.pt, or a run folder: its latest one); read with "
        "torch.load(weights_only=True); the new run goes to --log_dir",
    )  # fmt: skip
    add_sim_args(parser)  # --device, --backend, Isaac Lab's launcher flags (--image_size is unused: no cameras)
    return parser


def latest_checkpoint(path: Path) -> Path:
    """``path`` itself if it is a file, else the ``model_<it>.pt`` with the highest iteration in it."""
    from vla_isaac.rl_expert import RLExpertError

    if path.is_file():
        return path
    if not path.is_dir():
        raise RLExpertError(f"--resume {path}: no such file or folder; pass a model_<it>.pt or its run folder")
    by_iteration = {int(p.stem[6:]): p for p in path.glob("model_*.pt") if p.stem[6:].isdigit()}
    if not by_iteration:
        raise RLExpertError(f"--resume {path}: holds no model_<it>.pt; pass a checkpoint or a train_expert.py run")
    return by_iteration[max(by_iteration)]


def make_runner_class():
    """rsl-rl's ``OnPolicyRunner`` that also exports the actor whenever it saves a checkpoint (imported late:
    rsl-rl and isaaclab_rl load only after the argument check)."""
    from rsl_rl.runners import OnPolicyRunner

    from vla_isaac.rl_expert import EXPORT_DIR, export_policy

    class ExportingOnPolicyRunner(OnPolicyRunner):
        def __init__(self, env, train_cfg: dict, log_dir: str, device: str, export_info: dict):
            super().__init__(env, train_cfg, log_dir=log_dir, device=device)
            self.export_info = export_info

        def save(self, path: str, infos: dict | None = None) -> None:
            super().save(path, infos)
            export_policy(
                self.alg.get_policy(),
                Path(path).parent / EXPORT_DIR,
                iteration=self.current_learning_iteration,
                **self.export_info,
            )

    return ExportingOnPolicyRunner


def run(args: argparse.Namespace) -> int:
    import gymnasium as gym
    from isaaclab_rl.rsl_rl import check_rsl_rl_version, handle_deprecated_rsl_rl_cfg
    from isaaclab_tasks.utils import parse_env_cfg
    from isaaclab_tasks.utils.parse_cfg import load_cfg_from_registry

    from isaaclab.app import launch_simulation

    from vla_isaac.envs import EnvConfigError, physics_overrides, resolve_task
    from vla_isaac.rl_expert import (
        EXPORT_DIR,
        RLExpertError,
        load_rsl_rl_checkpoint,
        recording_task,
        rl_training_task,
    )

    train_task = rl_training_task(resolve_task(args.task))
    task = recording_task(train_task)
    for name in ("num_envs", "max_iterations", "num_steps_per_env", "save_interval"):
        value = getattr(args, name)
        if value is not None and value < (0 if name == "max_iterations" else 1):
            raise EnvConfigError(f"--{name} {value}: must be at least {0 if name == 'max_iterations' else 1}")
    log_dir = Path(args.log_dir or Path("outputs", "rl_expert", task, datetime.now().strftime("%Y-%m-%d_%H-%M-%S")))
    log_dir = log_dir.expanduser().absolute()
    if any(log_dir.glob("model_*.pt")) or (log_dir / EXPORT_DIR).exists():
        raise RLExpertError(f"--log_dir {log_dir}: already holds a training run; choose another folder")
    resume = resume_path = None
    if args.resume:  # load (and validate) before the env is built
        resume_path = latest_checkpoint(Path(args.resume).expanduser())
        resume = load_rsl_rl_checkpoint(resume_path, map_location=args.device)

    agent_cfg = load_cfg_from_registry(train_task, "rsl_rl_cfg_entry_point")
    agent_cfg.device = args.device
    for name in ("seed", "max_iterations", "num_steps_per_env", "save_interval"):
        if getattr(args, name) is not None:
            setattr(agent_cfg, name, getattr(args, name))
    agent_cfg = handle_deprecated_rsl_rl_cfg(agent_cfg, check_rsl_rl_version())
    # Isaac Lab's own path (as its rsl-rl train script): the registered cfg with its physics preset chosen by
    # --backend (auto: MuJoCo-C for one CPU env, else MJWarp), gym.make inside launch_simulation
    env_cfg = parse_env_cfg(
        train_task, device=args.device, num_envs=args.num_envs,
        overrides=physics_overrides(args.backend, args.num_envs, args.device),
    )  # fmt: skip
    env_cfg.seed = agent_cfg.seed
    env_cfg.log_dir = str(log_dir)

    # rsl-rl logs `git status`/`git diff` of the code into the run; keep git from rewriting the index meanwhile
    os.environ.setdefault("GIT_OPTIONAL_LOCKS", "0")
    with launch_simulation(env_cfg, args):
        env = gym.make(train_task, cfg=env_cfg)
        try:
            return train(args, env, env_cfg, agent_cfg, log_dir, task, train_task, resume, resume_path)
        finally:
            env.close()


def train(args, env, env_cfg, agent_cfg, log_dir: Path, task: str, train_task: str, resume, resume_path) -> int:
    """PPO on a built env (wrapped for rsl-rl here); saves, exports and prints where the results are."""
    from isaaclab_rl.rsl_rl import RslRlVecEnvWrapper

    from isaaclab.utils.io import dump_yaml

    from vla_isaac.rl_expert import EXPORT_DIR, obs_group_terms

    vec_env = RslRlVecEnvWrapper(env, clip_actions=agent_cfg.clip_actions)
    actor = agent_cfg.actor
    export_info = dict(
        task=task,
        train_task=train_task,
        obs_terms=obs_group_terms(env.unwrapped, "policy"),
        hidden_dims=actor.hidden_dims,
        activation=actor.activation,
        obs_normalization=actor.obs_normalization,
        clip_actions=agent_cfg.clip_actions,
        extra={"seed": agent_cfg.seed, "num_envs": args.num_envs, "backend": env_cfg.backend},
    )
    runner = make_runner_class()(vec_env, agent_cfg.to_dict(), str(log_dir), agent_cfg.device, export_info)
    if resume is not None:
        runner.alg.load(resume, load_cfg=None, strict=True)  # what OnPolicyRunner.load does, minus the unpickling
        runner.current_learning_iteration = int(resume["iter"])
        print(f"[INFO] resumed from {resume_path} (iteration {resume['iter']})")
    dump_yaml(str(log_dir / "params" / "env.yaml"), env_cfg)
    dump_yaml(str(log_dir / "params" / "agent.yaml"), agent_cfg)
    print(f"[INFO] training {train_task} with {args.num_envs} envs ({env_cfg.backend}) for "
          f"{agent_cfg.max_iterations} iterations; logs: {log_dir}")  # fmt: skip
    interrupted = False
    try:
        runner.learn(agent_cfg.max_iterations, init_at_random_ep_len=agent_cfg.init_at_random_ep_len)
    except KeyboardInterrupt:
        interrupted = True
        runner.save(str(log_dir / f"model_{runner.current_learning_iteration}.pt"))
    print(f"checkpoints: {log_dir}/model_*.pt   TensorBoard: tensorboard --logdir {log_dir}")
    print(f"exported expert: {log_dir / EXPORT_DIR}")
    print(f"record with it: python scripts/record_demos.py --task {task} --expert rl "
          f"--expert_checkpoint {log_dir / EXPORT_DIR} --num_demos 10 --output demos/rl_expert.hdf5")  # fmt: skip
    return 130 if interrupted else 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from vla_isaac.cli.common import run_sim_command
    from vla_isaac.rl_expert import RLExpertError

    return run_sim_command(run, args, (RLExpertError,))


if __name__ == "__main__":
    sys.exit(main())
