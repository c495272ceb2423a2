"""MDP terms of the vla_isaac tasks.

Everything in :mod:`isaaclab.envs.mdp` and :mod:`isaaclab_tasks.contrib.stack.mdp` (stack observations such
as ``ee_frame_pos``, ``gripper_pos``, ``object_grasped``, ``object_stacked`` and the ``cubes_stacked``
termination) is re-exported, plus the terms Isaac Lab does not have (see the ``.pyi`` stub).
"""

from isaaclab.utils.module import lazy_export

lazy_export()
