"""Rectified flow (OT-CFM with sigma 0): straight paths from noise (t=0) to actions (t=1).

x_t = (1 - t) * noise + t * actions, target velocity = actions - noise; sampling integrates
dx/dt = v(x, t) with Euler steps from t=0 to t=1 (10 steps by default).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def sample_time(n: int, kind: str, *, device, dtype=torch.float32) -> torch.Tensor:
    """Flow times for training: 'uniform' U(0,1), or 'beta' (pi0-style, more weight on the noisy end)."""
    if kind == "uniform":
        t = torch.rand(n, device=device)
    elif kind == "beta":
        beta = torch.distributions.Beta(torch.tensor(1.5, device=device), torch.tensor(1.0, device=device))
        t = 1.0 - (beta.sample((n,)) * 0.999 + 0.001)
    else:
        raise ValueError(f"time_sampling: unknown kind {kind!r}; use 'uniform' or 'beta'")
    return t.to(dtype)


def flow_matching_loss(velocity_fn: VelocityFn, actions: torch.Tensor, noise: torch.Tensor, t: torch.Tensor,
                       mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared velocity error over valid chunk steps. actions/noise (B,Q,A), t (B,), mask (B,Q) bool."""
    tt = t[:, None, None].to(actions.dtype)  # float32 in training (VLAModel.forward keeps targets float32)
    x_t = (1 - tt) * noise + tt * actions
    err = (velocity_fn(x_t, t).float() - (actions - noise).float()).pow(2)
    if mask is None:
        return err.mean()
    m = mask.to(err.dtype)[..., None]
    return (err * m).sum() / (m.sum() * err.shape[-1]).clamp_min(1.0)


def euler_sample(velocity_fn: VelocityFn, noise: torch.Tensor, steps: int) -> torch.Tensor:
    """Integrate from noise at t=0 to an action chunk at t=1 in `steps` equal Euler steps."""
    if steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {steps}")
    x, dt = noise, 1.0 / steps
    for i in range(steps):
        t = torch.full((x.shape[0],), i * dt, device=x.device, dtype=torch.float32)  # flow time stays float32
        x = x + dt * velocity_fn(x, t)
    return x
