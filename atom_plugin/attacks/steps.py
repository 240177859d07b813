"""The L∞ building blocks shared by the evaluation attacks and the training PGD.

All functions are pure tensor code (no host sync, any device):

* :func:`linf_project`: projection onto the ``eps``-ball around ``x`` intersected with [0, 1];
* :func:`linf_sign_step`: one projected sign-gradient **ascent** step;
* :func:`linf_random_start`: a uniform point of the ball (clamped to [0, 1]).
"""
from __future__ import annotations

import torch

__all__ = ["linf_project", "linf_sign_step", "linf_random_start"]


def linf_project(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """``clamp(min(max(x_adv, x - eps), x + eps), 0, 1)`` (a new tensor; ``x_adv`` is untouched)."""
    return torch.min(torch.max(x_adv, x - eps), x + eps).clamp_(0.0, 1.0)


def linf_sign_step(x_adv: torch.Tensor, grad: torch.Tensor, x: torch.Tensor, alpha: float,
                   eps: float) -> torch.Tensor:
    """``linf_project(x_adv + alpha * sign(grad), x, eps)``: one step that increases the
    objective whose gradient is ``grad`` (pass ``-grad`` to decrease it)."""
    return linf_project(x_adv + alpha * grad.sign(), x, eps)


def linf_random_start(x: torch.Tensor, eps: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """``clamp(x + U(-eps, eps), 0, 1)`` drawn from ``generator`` (or the global RNG)."""
    u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return (x + (2.0 * u - 1.0) * eps).clamp_(0.0, 1.0)
