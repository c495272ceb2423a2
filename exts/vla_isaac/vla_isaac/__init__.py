"""vla_isaac: Isaac Lab 3.0 extension for vision-language-action policies.

Importing the package registers the tasks with gymnasium (``Lift-Cube``, ``Stack-Cube`` and the versioned
aliases ``VLA-Lift-Cube-Franka-v0``, ``VLA-Stack-Cube-Franka-v0``, plus ``Lift-Cube-RL`` /
``VLA-Lift-Cube-Franka-RL-v0``, the state-only variant the RL expert trains on); env cfgs are imported lazily
from their ``env_cfg_entry_point``. Build envs with :func:`vla_isaac.envs.make_env`.
"""

from .tasks import TASK_IDS  # noqa: F401  (registers the gym ids)

__version__ = "0.1.0"
