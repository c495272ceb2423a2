"""Lift-Cube-Color: three cubes (red, green, blue), an instruction per episode naming one; lift that one."""

from .config import franka  # noqa: F401  (registers the gym ids)
