"""RemotePolicy: a ``VLAPolicy`` whose chunks come from a policy server (``scripts/serve_policy.py``).

The model runs elsewhere (a GPU server, another process); the chunk queue, replanning, temporal
ensembling, clipping and gripper latching stay here, in ``VLAPolicy``, unchanged. On connect the server's
metadata gives the key mapping, chunk length, action layout and image size, so the usual checks run
against the env (a mismatch raises ``ActionLayoutError`` / ``ObservationKeyError``). Each replanning
step sends one observation per env that needs a chunk, pipelined so the server batches them, each with
the flow-matching noise drawn from this policy's seeded generator: for the same seed and inputs the
chunks equal those of the local ``VLAPolicy``.
"""

from __future__ import annotations

import numpy as np
import torch

from vla.serving.client import PolicyClient, PolicyServerError
from vla.serving.spec import ACTION_LAYOUT, NOISE_KEY, OPENPI_PROMPT, OPENPI_STATE, PolicySpec, SpecError

from .policy import ActionLayoutError, ChunkSource, VLAPolicy


class ServerChunkSource(ChunkSource):
    """Chunks from a policy server at ``url`` (``ws://HOST:PORT``)."""

    def __init__(self, url: str, *, api_key: str | None = None, open_timeout_s: float = 10.0):
        self.url = url
        self.client = PolicyClient(url, api_key=api_key, open_timeout_s=open_timeout_s)
        try:
            self.spec = PolicySpec.from_metadata(self.client.metadata, where=f"policy server {url}")
        except SpecError:
            self.client.close()
            raise
        if self.spec.action_layout != ACTION_LAYOUT:
            self.client.close()
            raise ActionLayoutError(f"policy server {url} predicts actions laid out as '{self.spec.action_layout}', "
                                    f"this client executes '{ACTION_LAYOUT}'; serve a vla-isaac checkpoint trained "
                                    "for relative end-effector control")
        self.chunk, self.action_dim, self.image_size = self.spec.chunk, self.spec.action_dim, self.spec.image_size
        self.key_mapping, self.instruction = self.spec.key_mapping, self.spec.instruction
        self.device = torch.device("cpu")

    def __call__(self, inputs: dict, noise: torch.Tensor) -> torch.Tensor:
        km = self.key_mapping
        ctx, wrist = _numpy(inputs["context_image"]), _numpy(inputs["wrist_image"])  # already at the model's size
        proprio, noise = _numpy(inputs["proprio"]).astype(np.float32), noise.numpy().astype(np.float32)
        messages = [{km.context_image: ctx[i], km.wrist_image: wrist[i], OPENPI_STATE: proprio[i],
                     OPENPI_PROMPT: inputs["instruction"][i], NOISE_KEY: noise[i]} for i in range(len(proprio))]
        replies = self.client.infer_many(messages)
        chunks = []
        for r in replies:
            a = r.get("actions") if isinstance(r, dict) else None
            if not isinstance(a, np.ndarray) or a.shape != (self.chunk, self.action_dim):
                got = getattr(a, "shape", type(a).__name__)
                raise PolicyServerError(f"policy server {self.url} replied with actions {got}, expected "
                                        f"({self.chunk}, {self.action_dim}) as its metadata says")
            chunks.append(a)
        return torch.from_numpy(np.stack(chunks)).float()

    def close(self) -> None:
        self.client.close()


class RemotePolicy(VLAPolicy):
    """``VLAPolicy`` driven by a policy server; same arguments, ``url`` in place of the checkpoint.

    ``api_key``: the server's key (see ``vla.serving.client.read_api_key``). ``num_flow_steps`` and the
    model dtype/device are the server's settings (``serve_policy.py --flow_steps/--dtype/--device``).
    """

    def __init__(self, url: str, env=None, *, api_key: str | None = None, num_flow_steps: int | None = None,
                 dtype=None, device=None, **policy_kw):
        if num_flow_steps is not None:
            raise ValueError("flow steps are the server's setting: start serve_policy.py with --flow_steps "
                             f"{num_flow_steps} instead")
        source = ServerChunkSource(url, api_key=api_key)
        try:
            super().__init__(source, env, **policy_kw)
        except Exception:
            source.close()
            raise

    def close(self) -> None:
        self.source.close()


def _numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)
