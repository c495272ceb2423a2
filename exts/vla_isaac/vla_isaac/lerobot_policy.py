"""A LeRobot ``PreTrainedPolicy`` (ACT, Diffusion, ...) driving our Isaac Lab tasks.

Loads a checkpoint folder the way LeRobot's own evaluation does (``PreTrainedConfig.from_pretrained``, the
policy class's ``from_pretrained``, and the saved pre/post processors through ``make_pre_post_processors``),
then on each step turns the env's ``policy`` observation group into LeRobot's batch:

- ``observation.images.<key>`` <- obs term ``<key>`` (uint8 B x H x W x 3 -> float B x 3 x H x W in [0, 1],
  resized to the feature's shape when the env renders at another size);
- ``observation.state`` <- the obs terms named by the dataset's state feature names ``<key>.<i>``
  (``scripts/export_lerobot.py`` writes them), concatenated in that order;
- ``task`` <- the instruction.

The dataset's features are read from ``dataset_root`` or, by default, from the dataset that
``lerobot-train`` recorded in the checkpoint's ``train_config.json``. ``select_action`` keeps the policy's
own action queue (ACT's ``n_action_steps``, its temporal ensembler, Diffusion's observation history), which
is one queue for the whole batch: so this controller runs one env per process (``--num_envs 1``).

LeRobot is an optional dependency (``pip install -e ".[lerobot]"``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from vla.data.lerobot_export import (
    ACTION_KEY,
    IMAGE_PREFIX,
    INSTALL_HINT,
    STATE_KEY,
    proprio_from_state_names,
)
from vla.data.preprocess import resize_images

from .policy import POLICY_OBS_GROUP, ObservationKeyError, env_policy_obs_keys

PRETRAINED_SUBDIR = "pretrained_model"  # lerobot-train's checkpoints/<step>/pretrained_model


class LeRobotCheckpointError(ValueError):
    """A LeRobot checkpoint or its dataset doesn't fit the env (one line naming the file and the fix)."""


def resolve_checkpoint(path: str | Path) -> Path:
    """The folder holding ``config.json`` + ``model.safetensors``: ``path`` itself, its ``pretrained_model``
    or, for a ``lerobot-train`` output folder, ``checkpoints/last/pretrained_model``."""
    p = Path(path)
    for c in (p, p / PRETRAINED_SUBDIR, p / "checkpoints" / "last" / PRETRAINED_SUBDIR):
        if (c / "config.json").is_file() and (c / "model.safetensors").is_file():
            return c
    raise LeRobotCheckpointError(
        f"{path}: no LeRobot checkpoint (config.json + model.safetensors) here or in pretrained_model/ or "
        "checkpoints/last/pretrained_model/; pass the folder lerobot-train saved")


def dataset_features(checkpoint: Path, dataset_root: str | Path | None = None) -> dict:
    """The dataset's ``features`` (meta/info.json) the policy was trained on."""
    if dataset_root is None:
        tc = checkpoint / "train_config.json"
        if not tc.is_file():
            raise LeRobotCheckpointError(
                f"{checkpoint}: no train_config.json naming the training dataset; pass dataset_root= (the folder "
                "scripts/export_lerobot.py wrote)")
        root = (json.loads(tc.read_text()).get("dataset") or {}).get("root")
        if not root:
            raise LeRobotCheckpointError(f"{tc}: dataset.root is not set; pass dataset_root= (the exported dataset)")
        dataset_root = root
    info = Path(dataset_root) / "meta" / "info.json"
    if not info.is_file():
        raise LeRobotCheckpointError(f"{info}: not found; pass the folder scripts/export_lerobot.py wrote as dataset_root")
    return json.loads(info.read_text())["features"]


class LeRobotPolicy:
    """``policy(obs) -> (N, action_dim)`` for the episode runner, ``reset(env_ids)`` on env resets.

    Args:
        checkpoint: a LeRobot checkpoint folder (``save_pretrained`` output with its processors, or a
            ``lerobot-train`` output / checkpoint folder).
        env: the ``ManagerBasedRLEnv`` (checks the observation terms and the action width); ``None`` skips it.
        dataset_root: the exported dataset (default: the one in the checkpoint's ``train_config.json``).
        instruction: the task string (default: the dataset's first task, else "").
        device: torch device for the policy (default: the env's, else cpu).
        action_clip: actions are clipped to ``[-action_clip, action_clip]`` (as ``VLAPolicy``).
    """

    def __init__(self, checkpoint: str | Path, env=None, *, dataset_root: str | Path | None = None,
                 instruction: str | None = None, device: str | torch.device | None = None,
                 action_clip: float = 1.0, seed: int = 0, num_envs: int | None = None):
        try:
            from lerobot.configs.policies import PreTrainedConfig
            from lerobot.policies.factory import get_policy_class, make_pre_post_processors
        except ImportError as e:
            raise ImportError(f"{INSTALL_HINT} ({e})") from None
        self.checkpoint = resolve_checkpoint(checkpoint)
        features = dataset_features(self.checkpoint, dataset_root)
        self.device = torch.device(device or (env.device if env is not None else "cpu"))
        torch.manual_seed(seed)
        cfg = PreTrainedConfig.from_pretrained(self.checkpoint)
        cfg.device = str(self.device)
        self.config = cfg
        self.policy = get_policy_class(cfg.type).from_pretrained(self.checkpoint, config=cfg)
        self.policy.to(self.device).eval()
        self.preprocessor, self.postprocessor = make_pre_post_processors(
            cfg, pretrained_path=str(self.checkpoint),
            preprocessor_overrides={"device_processor": {"device": str(self.device)}})

        # observation names from the policy's inputs and the dataset's features
        self.image_keys: dict[str, str] = {}  # feature -> obs term
        self.image_shapes: dict[str, tuple[int, int]] = {}
        self.proprio: list[tuple[str, int]] = []
        for name, ft in cfg.input_features.items():
            if name.startswith(IMAGE_PREFIX):
                self.image_keys[name] = name[len(IMAGE_PREFIX):]
                c, h, w = ft.shape  # LeRobot policy features are channel-first
                self.image_shapes[name] = (int(h), int(w))
            elif name == STATE_KEY:
                names = (features.get(STATE_KEY) or {}).get("names")
                if not names:
                    raise LeRobotCheckpointError(f"dataset feature {STATE_KEY} has no names; export with "
                                                 "scripts/export_lerobot.py (names '<obs key>.<i>')")
                self.proprio = proprio_from_state_names(names)
                if sum(d for _, d in self.proprio) != int(ft.shape[0]):
                    raise LeRobotCheckpointError(f"{self.checkpoint}: {STATE_KEY} is {tuple(ft.shape)} but the dataset "
                                                 f"names {len(names)} entries; pass the dataset it was trained on")
            else:
                raise LeRobotCheckpointError(f"{self.checkpoint}: input feature {name!r} has no source in our tasks "
                                             f"(supported: {IMAGE_PREFIX}<obs key>, {STATE_KEY})")
        self.action_dim = int(cfg.output_features[ACTION_KEY].shape[0])
        self.instruction = instruction if instruction is not None else _first_task(dataset_root, self.checkpoint)
        self.action_clip = float(action_clip)
        self.num_model_calls = 0
        if env is not None:
            if env.num_envs != 1:
                raise ValueError(f"a LeRobot policy runs one env per process (its action queue is shared by the "
                                 f"batch); got num_envs={env.num_envs}: use --num_envs 1")
            self.check_observation_keys(env_policy_obs_keys(env))
            d = env.action_manager.total_action_dim
            if d != self.action_dim:
                raise LeRobotCheckpointError(f"{self.checkpoint}: policy outputs {self.action_dim} actions, env "
                                             f"{type(env.cfg).__name__} takes {d}; train on this task's export")
        self.num_envs = num_envs or (env.num_envs if env is not None else 1)

    # ------------------------------------------------------------------ what the runner asks
    @property
    def image_every(self) -> int | None:
        """ACT without temporal ensembling reads images only when its queue is empty: every
        ``n_action_steps`` steps; other policies (observation histories, ensembling) on every step."""
        c = self.config
        if c.type == "act" and getattr(c, "temporal_ensemble_coeff", None) is None:
            return int(c.n_action_steps)
        return None

    def required_obs_keys(self) -> list[str]:
        return list(self.image_keys.values()) + [k for k, _ in self.proprio]

    def check_observation_keys(self, available: Sequence[str], where: str = "env") -> None:
        missing = [k for k in self.required_obs_keys() if k not in available]
        if missing:
            raise ObservationKeyError(
                f"{where}: observation group '{POLICY_OBS_GROUP}' lacks {missing} required by the LeRobot policy's "
                f"features (has {sorted(available)}); evaluate on the task the dataset was recorded from")

    def batch(self, obs: Mapping) -> dict:
        """Env observations -> LeRobot's raw batch (before the policy's preprocessor)."""
        group = obs[POLICY_OBS_GROUP] if POLICY_OBS_GROUP in obs else obs
        missing = [k for k in self.required_obs_keys() if k not in group]
        if missing:
            raise ObservationKeyError(f"observation lacks {missing} required by the LeRobot policy; has {sorted(group)}")
        out = {}
        for feat, key in self.image_keys.items():
            im = resize_images(_to_cpu(group[key]), self.image_shapes[feat])  # uint8 (B, H, W, 3)
            out[feat] = im.permute(0, 3, 1, 2).float().div_(255.0)
        if self.proprio:
            out[STATE_KEY] = torch.cat([_to_cpu(group[k]).float().reshape(-1, d) for k, d in self.proprio], dim=-1)
        n = next(iter(out.values())).shape[0]
        out["task"] = [self.instruction] * n
        return out

    @torch.no_grad()
    def __call__(self, obs: Mapping) -> torch.Tensor:
        batch = self.preprocessor(self.batch(obs))
        queue = getattr(self.policy, "_action_queue", None)
        if queue is None or len(queue) == 0:
            self.num_model_calls += 1
        with torch.inference_mode():
            action = self.policy.select_action(batch)
        action = self.postprocessor(action)
        action = torch.as_tensor(action).float().reshape(-1, self.action_dim)
        return action.clamp(-self.action_clip, self.action_clip).to(_out_device(obs))

    def reset(self, env_ids=None) -> None:
        """Clears the policy's queues (one env per process, so any reset is the whole batch's)."""
        self.policy.reset()


def _first_task(dataset_root, checkpoint: Path) -> str:
    """The dataset's first task string (meta/tasks.parquet), '' if it can't be read."""
    try:
        if dataset_root is None:
            dataset_root = json.loads((checkpoint / "train_config.json").read_text())["dataset"]["root"]
        import pandas as pd

        tasks = pd.read_parquet(Path(dataset_root) / "meta" / "tasks.parquet")
        return str(tasks.index[0]) if len(tasks) else ""
    except Exception:
        return ""


def _to_cpu(x) -> torch.Tensor:
    if hasattr(x, "torch"):  # Isaac Lab ProxyArray
        x = x.torch
    return x.detach().cpu() if torch.is_tensor(x) else torch.as_tensor(x)


def _out_device(obs) -> torch.device:
    group = obs[POLICY_OBS_GROUP] if POLICY_OBS_GROUP in obs else obs
    for v in group.values():
        if torch.is_tensor(v):
            return v.device
    return torch.device("cpu")
