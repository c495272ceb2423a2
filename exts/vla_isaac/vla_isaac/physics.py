"""Physics and camera-renderer presets for the vla_isaac tasks, selected the Isaac Lab 3.0 way.

The task cfgs set ``sim.physics = PhysicsCfg()`` and each camera's ``renderer_cfg = CameraRendererCfg()``:
Isaac Lab ``PresetCfg`` s that ``parse_env_cfg(task, overrides=["physics=NAME"])`` (or ``physics=NAME`` on
the command line of Isaac Lab's train/play scripts) resolves. Physics presets:

* ``newton_mjwarp`` (default): Newton + the mujoco_warp kernels, on Warp's CPU backend or a GPU; any env count.
* ``newton_mujoco_c``: Newton + MuJoCo's C library (``MJWarpSolverCfg(use_mujoco_cpu=True)``). Fastest on the
  CPU (~5x MJWarp for one env) but ONE env per process on the CPU (Newton builds a single ``MjData``).
  ``make_env`` picks it for one CPU env.
* ``isaacsim_physx`` (also ``physx``): Isaac Sim PhysX for Isaac Sim users (``pip install vla-isaac[isaacsim]``
  and an RTX GPU; Kit is started by ``isaaclab.app.launch_simulation``). The camera renderer preset has the same
  names, so ``physics=physx`` also switches the cameras to Isaac RTX (Newton's Warp renderer needs Newton).

The solver settings grasp a 5 cm cube reliably on both MuJoCo backends at dt = 0.01 s: ``implicitfast``
(the default Euler integrator went NaN within 10 steps), 2 substeps (1 drops grasps on MuJoCo-C), and
``impratio=1`` (Isaac Lab's 10 throws the cube out of the gripper on MuJoCo-C).
"""

from __future__ import annotations

from typing import Any

from isaaclab_newton.physics import MJWarpSolverCfg, NewtonCfg, NewtonCollisionPipelineCfg
from isaaclab_newton.physics.mjwarp_manager import NewtonMJWarpManager
from isaaclab_newton.physics.newton_manager import NewtonManager
from isaaclab_newton.renderers import NewtonWarpRendererCfg
from isaaclab_physx.physics import PhysxCfg
from isaaclab_physx.renderers import IsaacRtxRendererCfg
from isaaclab_tasks.utils import PresetCfg

from isaaclab.physics import PhysxAutoCfg
from isaaclab.utils import configclass

BACKENDS = ("auto", "mujoco_c", "mjwarp", "physx")
"""Values of ``make_env_cfg(backend=...)`` / ``--backend`` in our scripts; each maps to a physics preset."""

BACKEND_PRESETS = {"mujoco_c": "newton_mujoco_c", "mjwarp": "newton_mjwarp", "physx": "isaacsim_physx"}
"""``--backend`` name -> the physics preset it selects (``physics=<preset>`` in Isaac Lab's tools)."""

PHYSICS_DT = 0.01  # [s]
NUM_SUBSTEPS = 2

MUJOCO_SOLVER = dict(
    solver="newton",
    integrator="implicitfast",
    cone="elliptic",
    impratio=1.0,
    iterations=100,
    ls_iterations=15,
    ccd_iterations=35,
    njmax=300,
    nconmax=200,
    update_data_interval=2,
)


class BackendError(ValueError):
    """An unknown backend or a combination the backend cannot run."""


class NewtonMJCpuSafeManager(NewtonMJWarpManager):
    """``NewtonMJWarpManager`` that also starts with ``use_mujoco_cpu=True``.

    Isaac Lab 3.0 sizes a Newton ``Contacts`` buffer from ``SolverMuJoCo.get_max_contact_count()``, which
    raises ``NotImplementedError`` on the MuJoCo-C backend. MuJoCo-C runs its own collision detection in
    ``mj_step`` and never reads that buffer, so it is skipped (no contact sensors on this path).
    The class name must start with "Newton": Isaac Lab picks the backend from it.
    """

    @classmethod
    def _initialize_contacts(cls) -> None:
        if cls._solver is not None and cls._solver.use_mujoco_cpu and not cls._needs_collision_pipeline:
            NewtonManager._contacts = None
            return
        super()._initialize_contacts()


@configclass
class MujocoSolverCfg(MJWarpSolverCfg):
    """``MJWarpSolverCfg`` whose manager also runs MuJoCo-C (see :class:`NewtonMJCpuSafeManager`)."""

    class_type: type = NewtonMJCpuSafeManager


# MJWarp: Newton's collision pipeline instead of mujoco_warp's own collision detection (Isaac Lab's stack
# env does the same). With mujoco_warp's collisions on Warp's CPU backend, fingers sank up to 8 mm into a
# held cube and a placed cube sank ~2 cm into the one below (3-cube stacking: 15/20 vs 50/50 on MuJoCo-C);
# with Newton's pipeline the contacts match MuJoCo-C and a step is ~1.5x faster. mujoco_warp printed
# "linesearch iterations limit reached" every step with 15 line-search iterations; 50 silences it.
MJWARP_SOLVER_OVERRIDES = dict(ls_iterations=50, use_mujoco_contacts=False)


def physics_cfg(backend: str, **solver_overrides):
    """Physics cfg of a concrete backend (``mujoco_c``, ``mjwarp`` or ``physx``): the presets' contents.

    CUDA graphs stay enabled for MJWarp: Newton captures them only on a CUDA device.
    """
    if backend in ("mujoco_c", "mjwarp"):
        preset = {**MUJOCO_SOLVER, **(MJWARP_SOLVER_OVERRIDES if backend == "mjwarp" else {})}
        solver = MujocoSolverCfg(**{**preset, **solver_overrides}, use_mujoco_cpu=backend == "mujoco_c")
        return NewtonCfg(
            solver_cfg=solver,
            collision_cfg=NewtonCollisionPipelineCfg() if not solver.use_mujoco_contacts else None,
            num_substeps=NUM_SUBSTEPS,
            use_cuda_graph=backend == "mjwarp",
        )
    if backend == "physx":
        # Isaac Lab's stack-env PhysX settings
        return PhysxCfg(
            bounce_threshold_velocity=0.01,
            gpu_found_lost_aggregate_pairs_capacity=1024 * 1024 * 4,
            gpu_total_aggregate_pairs_capacity=2**21,
            friction_correlation_distance=0.00625,
            solve_articulation_contact_last=True,
        )
    raise BackendError(f"backend={backend!r}: choose one of mujoco_c, mjwarp, physx")


@configclass
class PhysicsCfg(PresetCfg):
    """Physics presets of the vla_isaac tasks (``physics=NAME``); MJWarp by default, as Isaac Lab's lift."""

    newton_mjwarp: NewtonCfg = physics_cfg("mjwarp")
    newton_mujoco_c: NewtonCfg = physics_cfg("mujoco_c")
    isaacsim_physx: PhysxCfg = physics_cfg("physx")
    physx: PhysxAutoCfg = PhysxAutoCfg(isaacsim_physx=physics_cfg("physx"))
    default: NewtonCfg = physics_cfg("mjwarp")


@configclass
class CameraRendererCfg(PresetCfg):
    """Camera renderer presets (``renderer=NAME``): Newton's Warp ray tracer (CPU or GPU) by default, Isaac
    RTX under the names of the PhysX physics presets, so ``physics=physx`` brings its renderer along."""

    newton_renderer: NewtonWarpRendererCfg = NewtonWarpRendererCfg()
    isaacsim_rtx: IsaacRtxRendererCfg = IsaacRtxRendererCfg()
    isaacsim_physx: IsaacRtxRendererCfg = IsaacRtxRendererCfg()
    physx: IsaacRtxRendererCfg = IsaacRtxRendererCfg()
    default: NewtonWarpRendererCfg = NewtonWarpRendererCfg()


def backend_of(physics: Any) -> str | None:
    """The backend name (``mujoco_c``, ``mjwarp``, ``physx``) of a resolved physics cfg; None if unresolved."""
    if isinstance(physics, NewtonCfg):
        return "mujoco_c" if getattr(physics.solver_cfg, "use_mujoco_cpu", False) else "mjwarp"
    if isinstance(physics, (PhysxCfg, PhysxAutoCfg)):
        return "physx"
    return None


def resolve_backend(backend: str, num_envs: int, device: str = "cpu") -> str:
    """``auto`` -> ``mujoco_c`` for one CPU env (fastest), else ``mjwarp``; validates the rest."""
    if backend not in BACKENDS:
        raise BackendError(f"backend={backend!r}: choose one of {', '.join(BACKENDS)}")
    if backend == "auto":
        return "mujoco_c" if num_envs == 1 and device == "cpu" else "mjwarp"
    check_backend(backend, num_envs, device)
    return backend


def check_backend(backend: str | None, num_envs: int, device: str, option: str = "backend") -> None:
    """Raise :class:`BackendError` for a combination the backend cannot run (MuJoCo-C: one env, CPU only)."""
    if backend != "mujoco_c":
        return
    name = "physics=newton_mujoco_c" if option == "physics" else "backend='mujoco_c'"
    fix = "physics=newton_mjwarp (the default)" if option == "physics" else "backend='mjwarp' (or 'auto')"
    if num_envs != 1:
        raise BackendError(
            f"{name} runs one env per process (got num_envs={num_envs}); use {fix} for several envs, "
            "or run several processes"
        )
    if not str(device).startswith("cpu"):
        raise BackendError(f"{name} runs on the CPU only (got device={device!r}); use {fix}")


def validate_env_physics(env_cfg) -> None:
    """Check a resolved env cfg's physics preset against its env count and device (the env cfgs'
    ``validate_config`` calls this when an env is built, after ``parse_env_cfg`` set both)."""
    check_backend(backend_of(env_cfg.sim.physics), env_cfg.scene.num_envs, env_cfg.sim.device, option="physics")


class PresetPhysicsMixin:
    """What the Lift and Stack env cfgs share about their physics preset: a read-only ``backend`` (for logs and
    the CLIs) and ``validate_config``, which Isaac Lab calls when the env is built."""

    @property
    def backend(self) -> str | None:
        """Backend of the resolved physics preset (``mujoco_c``, ``mjwarp``, ``physx``)."""
        return backend_of(self.sim.physics)

    @backend.setter
    def backend(self, value):  # configclass copies every attribute once; the backend itself is not settable
        if value != self.backend:
            raise AttributeError(f"backend={value!r}: select the backend with the physics preset (physics=...)")

    def validate_config(self):
        """MuJoCo-C must get one env on the CPU."""
        validate_env_physics(self)
