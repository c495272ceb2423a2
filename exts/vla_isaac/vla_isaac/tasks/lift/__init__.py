"""Lift-Cube: pick up a cube (Franka IK-Rel, kit-less on Newton)."""

from .config import franka  # noqa: F401  (registers the gym ids)
