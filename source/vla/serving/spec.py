"""What a served policy expects and returns, sent to every client as the connection's first message.

The spec comes from the checkpoint (chunk length, action layout, model image size, key mapping,
instruction) and travels as a plain dict (the openpi "metadata"), so any client can read it; our own
``RemotePolicy`` rebuilds the spec from it to check that the server's actions fit its task.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from vla.data.key_mapping import KeyMapping

PROTOCOL = "openpi-websocket"
POLICY_KIND = "vla-isaac"
SPEC_VERSION = 1
# The action layout every vla-isaac checkpoint is trained on (see vla_isaac.policy.check_action_layout).
ACTION_LAYOUT = "relative_ee_pose_delta(6) + binary_gripper(1)"

# openpi's LIBERO example keys -> the model input they stand for (documented in docs/serving.md)
OPENPI_IMAGE = "observation/image"
OPENPI_WRIST_IMAGE = "observation/wrist_image"
OPENPI_STATE = "observation/state"
OPENPI_PROMPT = "prompt"
NOISE_KEY = "noise"
BURST_KEY = "burst_remaining"  # observations the client sends right after this one: batch them together


class SpecError(ValueError):
    """Server metadata that does not describe a vla-isaac policy."""


@dataclass(frozen=True)
class PolicySpec:
    chunk: int
    action_dim: int
    image_size: tuple[int, int]
    key_mapping: KeyMapping
    instruction: str
    action_layout: str = ACTION_LAYOUT

    @property
    def proprio_dim(self) -> int:
        return self.key_mapping.proprio_dim

    @classmethod
    def from_model(cls, model, key_mapping: KeyMapping | Mapping, instruction: str) -> PolicySpec:
        km = key_mapping if isinstance(key_mapping, KeyMapping) else KeyMapping.from_dict(dict(key_mapping))
        cfg = model.cfg
        return cls(int(cfg.num_queries), int(cfg.action_dim), (int(cfg.image_size[0]), int(cfg.image_size[1])),
                   km, instruction)

    def metadata(self, **extra) -> dict:
        """The dict sent on connect: everything a client needs to build observations and use the actions."""
        km = self.key_mapping
        return {
            "policy": POLICY_KIND,
            "protocol": PROTOCOL,
            "spec_version": SPEC_VERSION,
            "action_horizon": self.chunk,
            "action_dim": self.action_dim,
            "action_layout": self.action_layout,
            "image_size": list(self.image_size),
            "instruction": self.instruction,
            "key_mapping": km.to_dict(),
            "observation_keys": {
                "context_image": [km.context_image, OPENPI_IMAGE],
                "wrist_image": [km.wrist_image, OPENPI_WRIST_IMAGE],
                "proprio": [[k, d] for k, d in km.proprio],
                "state": [OPENPI_STATE, self.proprio_dim],
                "prompt": OPENPI_PROMPT,
                "noise": [NOISE_KEY, [self.chunk, self.action_dim]],
                "burst_remaining": BURST_KEY,
            },
            **extra,
        }

    @classmethod
    def from_metadata(cls, meta: Mapping, where: str = "server") -> PolicySpec:
        if not isinstance(meta, Mapping) or meta.get("policy") != POLICY_KIND:
            kind = meta.get("policy") if isinstance(meta, Mapping) else type(meta).__name__
            raise SpecError(f"{where} is not a vla-isaac policy server (its metadata names policy {kind!r}); "
                            "serve a checkpoint with scripts/serve_policy.py")
        if int(meta.get("spec_version", 0)) > SPEC_VERSION:
            raise SpecError(f"{where} speaks spec version {meta['spec_version']}, newer than this client "
                            f"({SPEC_VERSION}); upgrade vla-isaac on the client")
        try:
            return cls(int(meta["action_horizon"]), int(meta["action_dim"]), tuple(int(x) for x in meta["image_size"]),
                       KeyMapping.from_dict(dict(meta["key_mapping"]), source=f"{where} metadata"),
                       str(meta["instruction"]), str(meta.get("action_layout", "")))
        except (KeyError, TypeError, ValueError) as exc:
            raise SpecError(f"{where} sent incomplete metadata ({type(exc).__name__}: {exc}); "
                            "server and client vla-isaac versions differ: upgrade both") from None
