"""One observation message -> one validated model input sample, or an error that names the problem.

A message is a map (openpi sends one observation per message, unbatched). It names the inputs either
with the checkpoint's key-mapping keys (``table_cam``, ``wrist_cam``, ``eef_pos``, ...) or with openpi's
LIBERO-style names; keys the policy does not use are ignored:

    context image   <context_image key>  or  "observation/image"        uint8 (H, W, 3), any size: resized
    wrist image     <wrist_image key>    or  "observation/wrist_image"  uint8 (H, W, 3)
    proprio         each <proprio key> (dim,)  or  "observation/state" (proprio_dim,), in key-mapping order
    instruction     "prompt" (str), default the checkpoint's instruction
    noise           "noise" (chunk, action_dim) float, optional: fixes the flow-matching start (reproducibility)
    burst           "burst_remaining" int, optional: how many observations this client sends right after this
                    one (e.g. one per env); the server waits for them so they share one model call

Images go through the same resize as training (``vla.data.preprocess.resize_images``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from vla.data.preprocess import resize_images
from vla.serving.spec import (BURST_KEY, NOISE_KEY, OPENPI_IMAGE, OPENPI_PROMPT, OPENPI_STATE, OPENPI_WRIST_IMAGE,
                               PolicySpec)

MAX_IMAGE_SIDE = 4096
MAX_PROMPT_CHARS = 2000
MAX_BURST = 1024


class ObservationError(ValueError):
    """An observation message is missing a key or has a wrong type, shape or value."""


@dataclass
class Sample:
    context_image: np.ndarray  # (h, w, 3) uint8 at the model's image size
    wrist_image: np.ndarray
    proprio: np.ndarray  # (proprio_dim,) float32
    instruction: str
    noise: np.ndarray | None  # (chunk, action_dim) float32, or None: the server draws it
    more: int = 0  # observations its client sends right after it (burst_remaining)


def _pick(obs: Mapping, names: list[str], what: str, hint: str):
    present = [n for n in names if n in obs]
    if len(present) > 1:
        raise ObservationError(f"observation has both {present[0]!r} and {present[1]!r} for the {what}; send one")
    if not present:
        raise ObservationError(f"observation lacks the {what}: send {' or '.join(repr(n) for n in names)} {hint}")
    return present[0], obs[present[0]]


def _image(obs: Mapping, names: list[str], what: str, size: tuple[int, int]) -> np.ndarray:
    key, x = _pick(obs, names, what, "as uint8 (H, W, 3)")
    if not isinstance(x, np.ndarray):
        raise ObservationError(f"observation {key!r}: expected a uint8 (H, W, 3) array, got {type(x).__name__}")
    if x.dtype != np.uint8 or x.ndim != 3 or x.shape[-1] != 3:
        raise ObservationError(f"observation {key!r}: expected uint8 (H, W, 3) RGB, got {x.dtype} {tuple(x.shape)}; "
                               "convert images to uint8 0..255 and send one observation per message")
    if not (0 < x.shape[0] <= MAX_IMAGE_SIDE and 0 < x.shape[1] <= MAX_IMAGE_SIDE):
        raise ObservationError(f"observation {key!r}: image size {tuple(x.shape[:2])} outside 1..{MAX_IMAGE_SIDE}")
    return resize_images(x, size)


def _vector(key: str, x, shape: tuple[int, ...]) -> np.ndarray:
    if isinstance(x, (list, tuple)):
        try:
            x = np.asarray(x, dtype=np.float32)
        except (TypeError, ValueError):
            raise ObservationError(f"observation {key!r}: expected numbers, got a list of something else") from None
    if not isinstance(x, np.ndarray) or x.dtype.kind not in "biuf":
        raise ObservationError(f"observation {key!r}: expected a float array of shape {shape}, got "
                               f"{getattr(x, 'dtype', type(x).__name__)}")
    if tuple(x.shape) != shape:
        raise ObservationError(f"observation {key!r}: expected shape {shape}, got {tuple(x.shape)}")
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise ObservationError(f"observation {key!r} contains NaN or inf")
    return x


def parse_observation(obs, spec: PolicySpec) -> Sample:
    """Validate one decoded message against ``spec``; raises ``ObservationError`` naming the problem."""
    if not isinstance(obs, Mapping):
        raise ObservationError(f"observation must be a map of key -> value, got {type(obs).__name__}")
    obs = {(k.decode("utf-8", "replace") if isinstance(k, bytes) else k): v for k, v in obs.items()}
    km = spec.key_mapping
    ctx = _image(obs, [km.context_image, OPENPI_IMAGE], "context image", spec.image_size)
    wrist = _image(obs, [km.wrist_image, OPENPI_WRIST_IMAGE], "wrist image", spec.image_size)

    own = [k for k in km.proprio_keys if k in obs]
    if OPENPI_STATE in obs and own:
        raise ObservationError(f"observation has both {OPENPI_STATE!r} and {own[0]!r}; send the state one way")
    if OPENPI_STATE in obs:
        proprio = _vector(OPENPI_STATE, obs[OPENPI_STATE], (spec.proprio_dim,))
    else:
        missing = [k for k in km.proprio_keys if k not in obs]
        if missing:
            raise ObservationError(f"observation lacks {missing} (the proprio keys of key mapping '{km.name}'); send "
                                   f"them, or {OPENPI_STATE!r} as one ({spec.proprio_dim},) vector in the order "
                                   f"{km.proprio_keys}")
        proprio = np.concatenate([_vector(k, obs[k], (d,)) for k, d in km.proprio])

    instruction = obs.get(OPENPI_PROMPT, spec.instruction)
    if not isinstance(instruction, str) or not instruction.strip() or len(instruction) > MAX_PROMPT_CHARS:
        raise ObservationError(f"observation {OPENPI_PROMPT!r}: expected a non-empty string of at most "
                               f"{MAX_PROMPT_CHARS} characters")
    noise = None
    if NOISE_KEY in obs:
        noise = _vector(NOISE_KEY, obs[NOISE_KEY], (spec.chunk, spec.action_dim))
    more = obs.get(BURST_KEY, 0)
    if isinstance(more, np.integer):
        more = int(more)
    if not isinstance(more, int) or isinstance(more, bool) or not 0 <= more <= MAX_BURST:
        raise ObservationError(f"observation {BURST_KEY!r}: expected an int in 0..{MAX_BURST}, got {more!r}")
    return Sample(ctx, wrist, proprio, instruction, noise, more)
