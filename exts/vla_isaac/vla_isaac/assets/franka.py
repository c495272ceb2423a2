"""Franka Panda for Isaac Lab 3.0: an offline USD built from ``example-robot-data``, tuned for Newton.

Isaac Lab's own Franka USD lives on a cloud bucket (Nucleus) and cannot be fetched offline, so by default
the Panda URDF shipped in the PyPI package ``example-robot-data`` is converted to USD with NVIDIA's
``urdf-usd-converter``. Two patches are applied to the URDF before converting:

* a ``world`` link with a fixed joint to ``panda_link0`` (fixed base; ``fix_root_link`` on the spawner
  fails with "Cannot merge joint ... FixedJoint into a D6 joint");
* ``package://`` mesh URIs rewritten to absolute paths, and optionally simpler colliders (see
  :data:`COLLIDER_VARIANTS`).

The USD is cached under ``<cache>/assets/franka-<hash>/`` where the hash covers the patched URDF text, the
collider variant and the converter version: a different package version or patch rebuilds it. Builds go
through :func:`vla.utils.io.atomic_dir`, so an interrupted build never leaves a half-written asset.

``python -m vla_isaac.assets.franka [--colliders mesh]`` builds it and prints the USD path.

:func:`franka_cfg` returns the :class:`ArticulationCfg` (actuators below); ``source="isaaclab"`` selects
Isaac Lab's official asset (``FRANKA_PANDA_HIGH_PD_CFG``) for users with Nucleus access.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import re
import sysconfig
from pathlib import Path

from vla.utils.io import atomic_dir, atomic_write_text, cache_dir

# --------------------------------------------------------------------------------------------------
# Actuator values (ImplicitActuator, Newton MuJoCo). Measured on the CPU (see docs/environments.md):
# the arm gains are Isaac Lab's IK-Rel Franka ("HIGH_PD"); finger armature 0.1 keeps the fingers from
# sinking ~1.4 cm into the cube (grasps fail without it).
# --------------------------------------------------------------------------------------------------
ARM_STIFFNESS = 400.0
ARM_DAMPING = 80.0
ARM_ARMATURE = 0.1
ARM_EFFORT_LIMIT = {"panda_joint[1-4]": 87.0, "panda_joint[5-7]": 12.0}  # Franka datasheet [Nm]
FINGER_STIFFNESS = 2000.0
FINGER_DAMPING = 100.0
FINGER_EFFORT_LIMIT = 200.0
FINGER_ARMATURE = 0.1
GRAVITY_COMPENSATION = 1.0  # mjc:gravcomp on every link (Newton ignores disable_gravity)

GRIPPER_OPEN = 0.04  # finger joint position [m] when open
GRIPPER_CLOSED = 0.0
GRIPPER_JOINTS = "panda_finger_.*"

# Isaac Lab's Franka stack IK-Rel start pose (gripper open, hand ~0.5 m above the table, pointing down).
HOME_JOINT_POS: dict[str, float] = {
    "panda_joint1": 0.0444,
    "panda_joint2": -0.1894,
    "panda_joint3": -0.1107,
    "panda_joint4": -2.5148,
    "panda_joint5": 0.0044,
    "panda_joint6": 2.3775,
    "panda_joint7": 0.6952,
    "panda_finger_joint.*": GRIPPER_OPEN,
}

# Tool centre point: between the fingertips, this far along the hand's z axis (Isaac Lab's values).
HAND_BODY = "panda_hand"
TCP_OFFSET_IK = 0.107  # DifferentialIK body offset
TCP_OFFSET_FRAME = 0.1034  # ee_frame FrameTransformer offset

COLLIDER_VARIANTS = ("mesh", "gripper_only", "gripper_box")
"""``mesh``: the URDF's STL colliders on every link + 4 boxes per finger (default; the arm collides with
the cubes and table). ``gripper_only``: arm-link colliders removed. ``gripper_box``: as ``gripper_only`` with
the hand's mesh replaced by two boxes (fastest on MJWarp)."""

# Prim paths of the hand in the two assets (a camera must be spawned under a concrete prim, not a regex).
_OFFLINE_HAND = "Geometry/world/panda_link0/" + "/".join(f"panda_link{i}" for i in range(1, 9)) + "/panda_hand"
_ISAACLAB_HAND = "Geometry/panda_link0/" + "/".join(f"panda_link{i}" for i in range(1, 8)) + "/panda_hand"

_HAND_BOX_COLLISION = """
        <collision>
            <origin rpy="0 0 0" xyz="0 0 0.025"/>
            <geometry><box size="0.04 0.2 0.05"/></geometry>
        </collision>
        <collision>
            <origin rpy="0 0 0" xyz="0 0 0.055"/>
            <geometry><box size="0.03 0.12 0.02"/></geometry>
        </collision>"""

_WORLD_LINK = """
    <link name="world"/>
    <joint name="world_joint" type="fixed">
        <parent link="world"/>
        <child link="panda_link0"/>
        <origin rpy="0 0 0" xyz="0 0 0"/>
    </joint>"""


class FrankaAssetError(ValueError):
    """The Franka asset cannot be built (missing package or bad option)."""


def _erd_root() -> Path:
    return Path(sysconfig.get_paths()["purelib"]) / "cmeel.prefix" / "share" / "example-robot-data"


def panda_urdf_path() -> Path:
    path = _erd_root() / "robots" / "panda_description" / "urdf" / "panda.urdf"
    if not path.is_file():
        raise FrankaAssetError(
            f"{path}: Panda URDF not found; install it with `pip install example-robot-data` (see pyproject.toml)"
        )
    return path


def patched_urdf(colliders: str = "mesh") -> str:
    """The Panda URDF with a fixed world link, absolute mesh paths and the chosen collider variant."""
    if colliders not in COLLIDER_VARIANTS:
        raise FrankaAssetError(f"colliders={colliders!r}: choose one of {', '.join(COLLIDER_VARIANTS)}")
    text = panda_urdf_path().read_text()
    text = text.replace("package://example-robot-data/", str(_erd_root()) + "/")
    if colliders in ("gripper_only", "gripper_box"):
        def strip(m: re.Match) -> str:
            return re.sub(r"<collision>.*?</collision>", "", m.group(0), flags=re.S)

        text = re.sub(r'<link name="panda_link[0-7]">.*?</link>', strip, text, flags=re.S)
    if colliders == "gripper_box":
        def boxes(m: re.Match) -> str:
            return re.sub(r"<collision>.*?</collision>", _HAND_BOX_COLLISION, m.group(0), count=1, flags=re.S)

        text = re.sub(r'<link name="panda_hand">.*?</link>', boxes, text, flags=re.S)
    text, n = re.subn(r"(<robot[^>]*>)", lambda m: m.group(1) + _WORLD_LINK, text, count=1)
    if n != 1:
        raise FrankaAssetError(f"{panda_urdf_path()}: no <robot> element; reinstall example-robot-data")
    return text


def _converter_version() -> str:
    return importlib.metadata.version("urdf-usd-converter")


def asset_key(colliders: str = "mesh") -> str:
    """Hash of everything that determines the USD: patched URDF, collider variant, converter version."""
    h = hashlib.sha256()
    for part in (patched_urdf(colliders), colliders, _converter_version()):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def build_franka_usd(colliders: str = "mesh", force: bool = False) -> Path:
    """Return the path of the fixed-base Franka USD, converting the URDF once per input hash."""
    out = cache_dir("assets") / f"franka-{colliders}-{asset_key(colliders)}"
    manifest = out / "manifest.json"
    if manifest.is_file() and not force:
        usd = out / json.loads(manifest.read_text())["usd"]
        if usd.is_file():
            return usd
    import urdf_usd_converter  # heavy (pxr): only when a build is needed

    with atomic_dir(out) as tmp:
        urdf = tmp / "panda.urdf"
        urdf.write_text(patched_urdf(colliders))
        asset = urdf_usd_converter.Converter().convert(str(urdf), str(tmp / "usd"))
        usd = Path(asset.path if hasattr(asset, "path") else str(asset))
        if not usd.is_absolute():
            usd = tmp / "usd" / usd
        rel = usd.relative_to(tmp)
        atomic_write_text(
            tmp / "manifest.json",
            json.dumps({"usd": str(rel), "colliders": colliders, "converter": _converter_version()}, indent=2),
        )
    return out / rel


def hand_prim_path(source: str = "offline") -> str:
    """Concrete prim path of ``panda_hand`` under ``{ENV_REGEX_NS}/Robot`` (for the wrist camera)."""
    return "{ENV_REGEX_NS}/Robot/" + (_OFFLINE_HAND if source == "offline" else _ISAACLAB_HAND)


def franka_cfg(source: str = "offline", colliders: str = "mesh", physics: str = "newton"):
    """ArticulationCfg of the Franka at the env origin in its home pose.

    Args:
        source: ``"offline"`` (the converted example-robot-data USD) or ``"isaaclab"`` (Isaac Lab's
            ``FRANKA_PANDA_HIGH_PD_CFG`` from Nucleus; needs asset access).
        colliders: collider variant of the offline asset (:data:`COLLIDER_VARIANTS`).
        physics: ``"newton"`` or ``"physx"``: selects gravity handling (MuJoCo gravcomp vs
            ``disable_gravity``) and, for the official asset, its USD physics variant.
    """
    import isaaclab.sim as sim_utils
    from isaaclab.actuators import ImplicitActuatorCfg
    from isaaclab.assets import ArticulationCfg
    from isaaclab.utils import clone

    init_state = ArticulationCfg.InitialStateCfg(pos=(0.0, 0.0, 0.0), joint_pos=dict(HOME_JOINT_POS))
    if source == "isaaclab":
        from isaaclab_assets.robots.franka import FRANKA_PANDA_HIGH_PD_CFG

        cfg = clone(FRANKA_PANDA_HIGH_PD_CFG)
        cfg.prim_path = "{ENV_REGEX_NS}/Robot"
        cfg.init_state = init_state
        cfg.spawn.variants["Physics"] = "physx" if physics == "physx" else "mujoco"
        if physics != "physx":  # Newton ignores disable_gravity: compensate gravity per link instead
            from isaaclab_newton.sim.schemas import MujocoRigidBodyCfg

            props = cfg.spawn.rigid_props if isinstance(cfg.spawn.rigid_props, list) else [cfg.spawn.rigid_props]
            cfg.spawn.rigid_props = [*props, MujocoRigidBodyCfg(gravcomp=GRAVITY_COMPENSATION)]
        return cfg
    if source != "offline":
        raise FrankaAssetError(f"franka source={source!r}: choose 'offline' or 'isaaclab'")

    if physics == "physx":
        rigid_props = sim_utils.RigidBodyPropertiesCfg(disable_gravity=True)
    else:
        from isaaclab_newton.sim.schemas import MujocoRigidBodyCfg

        rigid_props = [MujocoRigidBodyCfg(gravcomp=GRAVITY_COMPENSATION)]
    return ArticulationCfg(
        prim_path="{ENV_REGEX_NS}/Robot",
        spawn=sim_utils.UsdFileCfg(usd_path=str(build_franka_usd(colliders)), rigid_props=rigid_props),
        init_state=init_state,
        actuators={
            "panda_arm": ImplicitActuatorCfg(
                joint_names_expr=["panda_joint[1-7]"],
                joint_effort_limit=dict(ARM_EFFORT_LIMIT),
                stiffness=ARM_STIFFNESS,
                damping=ARM_DAMPING,
                armature=ARM_ARMATURE,
            ),
            "panda_hand": ImplicitActuatorCfg(
                joint_names_expr=["panda_finger_joint.*"],
                joint_effort_limit=FINGER_EFFORT_LIMIT,
                stiffness=FINGER_STIFFNESS,
                damping=FINGER_DAMPING,
                armature=FINGER_ARMATURE,
            ),
        },
        soft_joint_pos_limit_factor=1.0,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vla_isaac.assets.franka",
        description="Build (once) the offline fixed-base Franka Panda USD and print its path.",
    )
    parser.add_argument("--colliders", default="mesh", choices=COLLIDER_VARIANTS, help="collider variant")
    parser.add_argument("--force", action="store_true", help="rebuild even if the cached asset exists")
    args = parser.parse_args(argv)
    try:
        print(build_franka_usd(args.colliders, force=args.force))
    except FrankaAssetError as e:
        import sys

        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
