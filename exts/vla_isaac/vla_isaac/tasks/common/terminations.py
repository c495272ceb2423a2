"""Termination terms shared by the cube tasks."""

from __future__ import annotations

from isaaclab.managers import SceneEntityCfg
from isaaclab.managers import TerminationTermCfg as DoneTerm

from ... import mdp


def cube_dropping(name: str) -> DoneTerm:
    """End the episode when cube ``name`` falls off the table (its centre 5 cm below the table top)."""
    params = {"minimum_height": -0.05, "asset_cfg": SceneEntityCfg(name)}
    return DoneTerm(func=mdp.root_height_below_minimum, params=params)
