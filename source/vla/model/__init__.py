"""Trainable parts of the VLA head: projector, action expert, flow matching."""

from vla.model.action_expert import ActionExpert
from vla.model.flow_matching import euler_sample, flow_matching_loss, sample_time
from vla.model.projector import build_projector

__all__ = ["ActionExpert", "build_projector", "euler_sample", "flow_matching_loss", "sample_time"]
