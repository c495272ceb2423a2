"""VLAPolicy: a trained VLA checkpoint driving an Isaac Lab environment.

``actions = policy(obs)`` works in any Isaac Lab script. The policy turns the env's ``policy``
observation group into model inputs through the checkpoint's key mapping and the same image
preprocessing as training (``vla.data``), calls the model once per replanning step for all envs that
need a new chunk, and executes the first ``replan_every`` actions of each 16-step chunk (optionally
averaging overlapping chunks, ACT-style temporal ensembling). The chunks come from a ``ChunkSource``: the
model in this process (``ModelChunkSource``) or a policy server (``vla_isaac.remote_policy.RemotePolicy``).

The instruction each env acts on is that env's own for the current episode (``vla_isaac.language.
env_instructions``: drawn per episode by a language-conditioned task such as Lift-Cube-Color, else the env
cfg's ``instruction``), or ``instruction=`` for every env (the user's override), never silently the
checkpoint's: the checkpoint's training instruction is used only without an env. A checkpoint trained on
another task than the env's gets a warning (``vla_isaac.language.checkpoint_task_warning``).

The constructor checks that the env can execute what the checkpoint was trained for: a 7-dim action
made of a relative differential-IK arm term (6) and a binary gripper term (1), and that every
observation key the key mapping reads exists. Mismatches raise one-line errors naming the fix.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from vla.data.key_mapping import KeyMapping, build_proprio
from vla.data.preprocess import resize_images

POLICY_OBS_GROUP = "policy"


class PolicyEnvMismatchError(ValueError):
    """The env's actions or observations don't match what the checkpoint was trained on."""


class ActionLayoutError(PolicyEnvMismatchError):
    pass


class ObservationKeyError(PolicyEnvMismatchError):
    pass


def check_action_layout(term_dims: Sequence[tuple[str, object, int]], action_dim: int, where: str) -> None:
    """Check (name, term, dim) triples form [relative IK arm (action_dim-1), binary gripper (1)]."""
    from isaaclab.envs.mdp.actions.binary_joint_actions import BinaryJointAction
    from isaaclab.envs.mdp.actions.task_space_actions import DifferentialInverseKinematicsAction

    total = sum(d for _, _, d in term_dims)
    layout = ", ".join(f"{n}:{type(t).__name__}({d})" for n, t, d in term_dims)
    fix = "use a task whose actions are [DifferentialInverseKinematicsAction (relative pose, 6), BinaryJointAction (1)], e.g. Lift-Cube or Stack-Cube"
    if total != action_dim:
        raise ActionLayoutError(
            f"{where}: action dim {total} ({layout}) but the checkpoint predicts {action_dim}-dim actions; {fix}"
        )
    if len(term_dims) != 2:
        raise ActionLayoutError(f"{where}: expected 2 action terms (arm, gripper), got [{layout}]; {fix}")
    (arm_name, arm, arm_dim), (grip_name, grip, grip_dim) = term_dims
    relative = getattr(getattr(getattr(arm, "cfg", None), "controller", None), "use_relative_mode", False)
    if not isinstance(arm, DifferentialInverseKinematicsAction) or not relative or arm_dim != action_dim - 1:
        raise ActionLayoutError(f"{where}: arm term '{arm_name}' must be relative-pose differential IK ({action_dim - 1} dims), got [{layout}]; {fix}")
    if not isinstance(grip, BinaryJointAction) or grip_dim != 1:
        raise ActionLayoutError(f"{where}: gripper term '{grip_name}' must be a 1-dim BinaryJointAction, got [{layout}]; {fix}")


def env_policy_obs_keys(env) -> list[str]:
    """Names of the terms of the env's ``policy`` observation group."""
    om = env.observation_manager
    if POLICY_OBS_GROUP not in om.active_terms:
        raise ObservationKeyError(f"env has no '{POLICY_OBS_GROUP}' observation group (groups: {list(om.active_terms)})")
    return list(om.active_terms[POLICY_OBS_GROUP])


class ChunkSource:
    """Where ``VLAPolicy`` gets its action chunks; the queue, replanning and ensembling stay in the policy.

    Attributes: ``chunk``, ``action_dim``, ``image_size`` (model input), ``key_mapping`` and ``instruction``
    (None/"" when unknown), ``device`` (where ``proprio`` inputs go). ``source(inputs, noise)`` maps the
    policy's batched inputs and the (B, chunk, action_dim) starting noise to (B, chunk, action_dim) float32
    chunks on the CPU.
    """

    chunk: int
    action_dim: int
    image_size: tuple[int, int]
    key_mapping: KeyMapping | Mapping | None = None
    instruction: str = ""
    device: torch.device = torch.device("cpu")

    def __call__(self, inputs: dict, noise: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class ModelChunkSource(ChunkSource):
    """Chunks from a ``VLAModel`` in this process (``predict_action`` with the policy's noise)."""

    def __init__(self, model: torch.nn.Module, *, device=None, num_flow_steps: int | None = None,
                 key_mapping: KeyMapping | Mapping | None = None, instruction: str | None = None,
                 compile: str = "none"):
        from vla.model.static import CompiledPredict

        self.model = model.eval()
        self.predict = CompiledPredict(model, compile)  # "graphs": static shapes + CUDA graphs (vla.model.static)
        self.device = torch.device(device or next(model.parameters()).device)
        cfg = model.cfg
        self.chunk, self.action_dim, self.image_size = int(cfg.num_queries), int(cfg.action_dim), tuple(cfg.image_size)
        self.num_flow_steps = num_flow_steps
        self.key_mapping, self.instruction = key_mapping, instruction or ""

    def __call__(self, inputs: dict, noise: torch.Tensor) -> torch.Tensor:
        kw = {"noise": noise}
        if self.num_flow_steps is not None:
            kw["num_steps"] = self.num_flow_steps
        out = self.predict(inputs["context_image"], inputs["wrist_image"], inputs["instruction"],
                           inputs["proprio"].to(self.device), **kw)
        return out.float().cpu()


class VLAPolicy:
    """Closed-loop VLA control of a batch of Isaac Lab envs.

    Args:
        checkpoint: checkpoint folder (see ``vla.checkpoint``), an already loaded ``VLAModel``
            (then ``key_mapping`` and ``instruction`` must be given), or a ``ChunkSource`` (where the
            chunks come from, e.g. a policy server: ``vla_isaac.remote_policy.RemotePolicy``).
        env: the ``ManagerBasedRLEnv`` (used for the layout checks and ``num_envs``); ``None`` skips
            the checks (for the action term, which checks its own sub-terms).
        replan_every: actions executed from each chunk before the model is called again (1..16).
        temporal_ensemble: average all overlapping chunk predictions for the current step, with
            weights ``exp(-ensemble_decay * age)`` (ACT); the model is still called every ``replan_every`` steps.
        action_clip: actions are clipped to ``[-action_clip, action_clip]`` (Isaac Lab's action space is
            unbounded; with the IK scale of 0.5 a unit action is a 5 cm / 0.5 rad step).
        gripper_hysteresis: the gripper command (last dim; the env closes on a negative value) becomes a
            latched open (+1) / closed (-1) state per env that flips only when the predicted value crosses
            ``-h`` (close) or ``+h`` (open); 0 (default) passes the raw value through. Against the
            open/close chatter of a policy unsure whether it holds the cube.
        dtype: float32 or bfloat16 for the model (inputs/outputs stay float32); ``None`` = bfloat16 on
            CUDA, float32 on the CPU (``vla.utils.device.resolve_dtype``).
        compile: ``"none"`` (eager ``predict_action``) or ``"graphs"``: static shapes with the language
            model and one flow-expert step as CUDA graphs on CUDA (``vla.model.static``; on the CPU the
            static path without graphs, equal to eager).
        seed: seeds the flow-matching noise so evaluation runs are reproducible.
        noise_scale: the flow sampler starts from ``noise_scale`` x standard Gaussian noise (1, the training
            distribution, by default); 0 samples one deterministic chunk per observation, closer to the mode.
    """

    def __init__(
        self,
        checkpoint: str | Path | torch.nn.Module,
        env=None,
        *,
        replan_every: int = 8,
        temporal_ensemble: bool = False,
        ensemble_decay: float = 0.1,
        num_flow_steps: int | None = None,
        action_clip: float = 1.0,
        gripper_hysteresis: float = 0.0,
        instruction: str | None = None,
        key_mapping: KeyMapping | Mapping | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str | None = None,
        seed: int = 0,
        num_envs: int | None = None,
        compile: str = "none",
        noise_scale: float = 1.0,
    ):
        if isinstance(checkpoint, ChunkSource):  # e.g. a policy server (vla_isaac.remote_policy.RemotePolicy)
            self.source = checkpoint
        elif isinstance(checkpoint, torch.nn.Module):
            self.source = ModelChunkSource(checkpoint, device=device, num_flow_steps=num_flow_steps, compile=compile)
        else:
            from vla.checkpoint import load_vla_for_inference, read_checkpoint_config

            from vla.utils.device import resolve_dtype

            device = device or (env.device if env is not None else "cpu")
            model = load_vla_for_inference(checkpoint, device=device, dtype=resolve_dtype(dtype, device))
            meta = read_checkpoint_config(checkpoint)
            self.source = ModelChunkSource(model, device=device, num_flow_steps=num_flow_steps, compile=compile,
                                           key_mapping=meta.get("key_mapping"), instruction=meta.get("instruction"))
        self.model = getattr(self.source, "model", None)  # None for a remote source
        self.device = self.source.device
        mapping = key_mapping if key_mapping is not None else self.source.key_mapping
        if mapping is None:
            raise ValueError(f"{checkpoint}: checkpoint has no key_mapping; pass key_mapping=")
        self.key_mapping = mapping if isinstance(mapping, KeyMapping) else KeyMapping.from_dict(dict(mapping))
        self.env = env
        self.instruction_override = instruction or None  # the user's instruction for every env
        self.checkpoint_instruction = self.source.instruction or self.key_mapping.instruction
        if env is not None and self.instruction_override is None:
            from .language import env_instructions

            self.instruction = env_instructions(env)[0]  # env 0's, for messages; each env gets its own
        else:
            self.instruction = self.instruction_override or self.checkpoint_instruction
        if not self.instruction:
            raise ValueError("no instruction: pass instruction= or train with one")
        self.task_warning = None
        if env is not None and not isinstance(checkpoint, (ChunkSource, torch.nn.Module)):
            from .language import checkpoint_task_warning

            self.task_warning = checkpoint_task_warning(meta, env, instruction=self.instruction_override)
            if self.task_warning:
                import warnings

                warnings.warn(self.task_warning, stacklevel=2)
        self.chunk, self.action_dim = int(self.source.chunk), int(self.source.action_dim)
        self.image_size = tuple(self.source.image_size)
        if not 1 <= replan_every <= self.chunk:
            raise ValueError(f"replan_every must be in [1, {self.chunk}], got {replan_every}")
        self.replan_every = replan_every
        self.temporal_ensemble = temporal_ensemble
        self.ensemble_decay = ensemble_decay
        self.num_flow_steps = num_flow_steps
        self.action_clip = action_clip
        if gripper_hysteresis < 0:
            raise ValueError(f"gripper_hysteresis must be >= 0, got {gripper_hysteresis}")
        self.gripper_hysteresis = float(gripper_hysteresis)
        if not noise_scale >= 0:
            raise ValueError(f"noise_scale must be >= 0, got {noise_scale}")
        self.noise_scale = float(noise_scale)
        self.generator = torch.Generator(device="cpu").manual_seed(seed)
        self.num_model_calls = 0

        if env is not None:
            am = env.action_manager
            terms = [(n, am.get_term(n), d) for n, d in zip(am.active_terms, am.action_term_dim)]
            check_action_layout(terms, self.action_dim, where=f"env {type(env.cfg).__name__}")
            self.check_observation_keys(env_policy_obs_keys(env), where=f"env {type(env.cfg).__name__}")
            num_envs = env.num_envs
        self.num_envs = num_envs or 1
        self._allocate(self.num_envs)

    @property
    def image_every(self) -> int:
        """Images are read only on each env's episode steps 0, k, 2k, ... (k = ``replan_every``), when
        it replans; the runner renders cameras on those steps only (``evaluation.run_episodes``)."""
        return self.replan_every

    # ------------------------------------------------------------------ checks / inputs
    def required_obs_keys(self) -> list[str]:
        km = self.key_mapping
        return [km.context_image, km.wrist_image] + [k for k, _ in km.proprio]

    def check_observation_keys(self, available: Sequence[str], where: str = "env") -> None:
        missing = [k for k in self.required_obs_keys() if k not in available]
        if missing:
            raise ObservationKeyError(
                f"{where}: observation group '{POLICY_OBS_GROUP}' lacks {missing} required by the checkpoint's key "
                f"mapping (has {sorted(available)}); add these observation terms or train with a matching key mapping"
            )

    def prepare_inputs(self, obs: Mapping) -> dict:
        """Env observation dict (``obs`` or ``obs['policy']``) -> model inputs, exactly as in training."""
        group = obs[POLICY_OBS_GROUP] if POLICY_OBS_GROUP in obs else obs
        km = self.key_mapping
        missing = [k for k in self.required_obs_keys() if k not in group]
        if missing:
            raise ObservationKeyError(f"observation lacks {missing} required by the key mapping; available: {sorted(group)}")
        ctx = resize_images(_to_cpu(group[km.context_image]), self.image_size)
        wrist = resize_images(_to_cpu(group[km.wrist_image]), self.image_size)
        proprio = build_proprio({k: _to_cpu(group[k]) for k, _ in km.proprio}, km)
        proprio = torch.as_tensor(proprio, dtype=torch.float32)
        n = proprio.shape[0]
        return {"context_image": ctx, "wrist_image": wrist, "proprio": proprio, "instruction": self.instructions(n)}

    def instructions(self, n: int) -> list[str]:
        """The instruction of each of ``n`` envs: the override, else each env's own for its current episode
        (read from the env on every call, so a new episode's instruction is used from its first step),
        else (no env) the checkpoint's."""
        if self.instruction_override is not None:
            return [self.instruction_override] * n
        if self.env is not None and getattr(self.env, "num_envs", None) == n:
            from .language import env_instructions

            return env_instructions(self.env)
        return [self.instruction] * n

    # ------------------------------------------------------------------ control
    def _allocate(self, n: int) -> None:
        self.num_envs = n
        # chunk buffer: predictions[i, j] = action for step (t_made[i] + j); for ensembling keep the last 16 chunks
        self._queue = torch.zeros(n, self.chunk, self.action_dim)
        self._queue_pos = torch.full((n,), self.chunk, dtype=torch.long)  # chunk exhausted -> replan
        self._since_plan = torch.full((n,), self.replan_every, dtype=torch.long)
        self._history: list[list[tuple[int, torch.Tensor]]] = [[] for _ in range(n)]
        self._t = torch.zeros(n, dtype=torch.long)
        self._gripper = torch.ones(n)  # latched gripper state (gripper_hysteresis): +1 open, -1 closed

    def reset(self, env_ids: Sequence[int] | torch.Tensor | None = None) -> None:
        """Clear the action queues of ``env_ids`` (all when None): call it when those envs reset."""
        if env_ids is None or isinstance(env_ids, slice):
            ids = range(self.num_envs)[env_ids or slice(None)]
        else:
            ids = [int(i) for i in torch.as_tensor(env_ids).flatten().tolist()]
        for i in ids:
            self._queue_pos[i] = self.chunk
            self._since_plan[i] = self.replan_every
            self._history[i] = []
            self._t[i] = 0
            self._gripper[i] = 1.0

    @torch.no_grad()
    def predict_chunk(self, inputs: dict) -> torch.Tensor:
        """One batched call of the chunk source -> (B, 16, 7) float32 on the CPU.

        The flow-matching noise is drawn here from the policy's seeded generator (what ``predict_action``
        would draw from it), so a local model and a policy server give the same chunks for the same seed.
        """
        self.num_model_calls += 1
        noise = torch.randn((inputs["proprio"].shape[0], self.chunk, self.action_dim), generator=self.generator)
        return self.source(inputs, noise * self.noise_scale if self.noise_scale != 1.0 else noise)

    @torch.no_grad()
    def __call__(self, obs: Mapping) -> torch.Tensor:
        inputs = self.prepare_inputs(obs)
        n = inputs["proprio"].shape[0]
        if n != self.num_envs:
            self._allocate(n)
        need = (self._since_plan >= self.replan_every) | (self._queue_pos >= self.chunk)
        if need.any():
            idx = need.nonzero().flatten()
            sub = {k: (v[idx] if torch.is_tensor(v) else [v[i] for i in idx.tolist()]) for k, v in inputs.items()}
            chunks = self.predict_chunk(sub)
            self._queue[idx] = chunks
            self._queue_pos[idx] = 0
            self._since_plan[idx] = 0
            if self.temporal_ensemble:
                for j, i in enumerate(idx.tolist()):
                    self._history[i].append((int(self._t[i]), chunks[j]))
        actions = self._queue[torch.arange(n), self._queue_pos.clamp(max=self.chunk - 1)].clone()
        if self.temporal_ensemble:
            for i in range(n):
                t = int(self._t[i])
                hist = [(t0, c) for t0, c in self._history[i] if t - t0 < self.chunk]
                self._history[i] = hist
                preds = torch.stack([c[t - t0] for t0, c in hist])
                ages = torch.tensor([float(t - t0) for t0, _ in hist])
                w = torch.exp(-self.ensemble_decay * ages)
                actions[i] = (w[:, None] * preds).sum(0) / w.sum()
        self._queue_pos += 1
        self._since_plan += 1
        self._t += 1
        actions = actions.clamp(-self.action_clip, self.action_clip)
        if self.gripper_hysteresis > 0:
            actions[:, -1] = self.latch_gripper(actions[:, -1])
        return actions.to(self._out_device(obs))

    def latch_gripper(self, raw: torch.Tensor) -> torch.Tensor:
        """Predicted gripper values (N,) -> latched +1 (open) / -1 (closed) with hysteresis."""
        h = self.gripper_hysteresis
        self._gripper = torch.where(raw < -h, -1.0, torch.where(raw > h, 1.0, self._gripper))
        return self._gripper.clone()

    def _out_device(self, obs) -> torch.device:
        group = obs[POLICY_OBS_GROUP] if POLICY_OBS_GROUP in obs else obs
        for v in group.values():
            if torch.is_tensor(v):
                return v.device
        return torch.device("cpu")


def _to_cpu(x):
    if hasattr(x, "torch"):  # Isaac Lab ProxyArray
        x = x.torch
    return x.detach().cpu() if torch.is_tensor(x) else torch.as_tensor(x)
