"""Physics and render presets for the vla_isaac tasks.

Three backends, all measured on a CPU-only machine except ``physx``:

* ``mujoco_c``: Newton + MuJoCo's C library (``MJWarpSolverCfg(use_mujoco_cpu=True)``). Fastest on the
  CPU (~5x MJWarp for one env) but ONE env per process (Newton builds a single ``MjData``).
* ``mjwarp``: Newton + the mujoco_warp kernels, on Warp's CPU backend or a GPU; vectorized.
* ``physx``: Isaac Sim PhysX + RTX cameras for Isaac Sim users (needs ``pip install vla-isaac[isaacsim]``
  and an RTX GPU; Kit is started by ``isaaclab.app.launch_simulation``).

The solver settings grasp a 5 cm cube reliably on both MuJoCo backends at dt = 0.01 s: ``implicitfast``
(the default Euler integrator went NaN within 10 steps), 2 substeps (1 drops grasps on MuJoCo-C), and
``impratio=1`` (Isaac Lab's 10 throws the cube out of the gripper on MuJoCo-C).
"""

from __future__ import annotations

from isaaclab_newton.physics import MJWarpSolverCfg, NewtonCfg, NewtonCollisionPipelineCfg
from isaaclab_newton.physics.mjwarp_manager import NewtonMJWarpManager
from isaaclab_newton.physics.newton_manager import NewtonManager

from isaaclab.utils import configclass

BACKENDS = ("auto", "mujoco_c", "mjwarp", "physx")

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


def resolve_backend(backend: str, num_envs: int) -> str:
    """``auto`` -> ``mujoco_c`` for one env (fastest), else ``mjwarp``; validates the rest."""
    if backend not in BACKENDS:
        raise BackendError(f"backend={backend!r}: choose one of {', '.join(BACKENDS)}")
    if backend == "auto":
        return "mujoco_c" if num_envs == 1 else "mjwarp"
    if backend == "mujoco_c" and num_envs != 1:
        raise BackendError(
            f"backend='mujoco_c' runs one env per process (got num_envs={num_envs}); "
            "use backend='mjwarp' (or 'auto') for several envs, or run several processes"
        )
    return backend


# MJWarp: Newton's collision pipeline instead of mujoco_warp's own collision detection (Isaac Lab's stack
# env does the same). With mujoco_warp's collisions on Warp's CPU backend, fingers sank up to 8 mm into a
# held cube and a placed cube sank ~2 cm into the one below (3-cube stacking: 15/20 vs 50/50 on MuJoCo-C);
# with Newton's pipeline the contacts match MuJoCo-C and a step is ~1.5x faster. mujoco_warp printed
# "linesearch iterations limit reached" every step with 15 line-search iterations; 50 silences it.
MJWARP_SOLVER_OVERRIDES = dict(ls_iterations=50, use_mujoco_contacts=False)


def physics_cfg(backend: str, device: str = "cpu", **solver_overrides):
    """Physics cfg of a resolved backend (``mujoco_c``, ``mjwarp`` or ``physx``)."""
    if backend in ("mujoco_c", "mjwarp"):
        preset = {**MUJOCO_SOLVER, **(MJWARP_SOLVER_OVERRIDES if backend == "mjwarp" else {})}
        solver = MujocoSolverCfg(**{**preset, **solver_overrides}, use_mujoco_cpu=backend == "mujoco_c")
        return NewtonCfg(
            solver_cfg=solver,
            collision_cfg=NewtonCollisionPipelineCfg() if not solver.use_mujoco_contacts else None,
            num_substeps=NUM_SUBSTEPS,
            # CUDA graphs only exist on a GPU; MuJoCo-C runs on the host anyway
            use_cuda_graph=device.startswith("cuda") and backend == "mjwarp",
        )
    if backend == "physx":
        from isaaclab_physx.physics import PhysxCfg

        # Isaac Lab's stack-env PhysX settings
        return PhysxCfg(
            bounce_threshold_velocity=0.01,
            gpu_found_lost_aggregate_pairs_capacity=1024 * 1024 * 4,
            gpu_total_aggregate_pairs_capacity=2**21,
            friction_correlation_distance=0.00625,
            solve_articulation_contact_last=True,
        )
    raise BackendError(f"backend={backend!r}: resolve it first with resolve_backend()")


def renderer_cfg(backend: str):
    """Camera renderer: Newton's Warp ray tracer (CPU or GPU), or Isaac RTX with PhysX."""
    if backend == "physx":
        from isaaclab_physx.renderers import IsaacRtxRendererCfg

        return IsaacRtxRendererCfg()
    from isaaclab_newton.renderers import NewtonWarpRendererCfg

    return NewtonWarpRendererCfg()

