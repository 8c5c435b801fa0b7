"""Additive coupling of liquid state and retrieved memory (MODEL.md Eq. 4)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ._util import check_positive, inverse_softplus


class AdditiveCoupling(nn.Module):
    """z = α · x + δ · r with α = softplus(α_raw), δ = softplus(δ_raw) (both kept non-negative).  (4)

    By the chain rule ∂L/∂x = α ∂L/∂z + δ (∂r/∂x)ᵀ ∂L/∂z when r = r(x) (the source's Lemma 4).
    """

    def __init__(self, alpha: float = 1.0, delta: float = 0.5) -> None:
        super().__init__()
        self.alpha0 = check_positive("alpha", alpha)
        self.delta0 = check_positive("delta", delta)
        self.alpha_raw = nn.Parameter(torch.tensor(inverse_softplus(self.alpha0)))
        self.delta_raw = nn.Parameter(torch.tensor(inverse_softplus(self.delta0)))

    @property
    def alpha(self) -> torch.Tensor:
        """α = softplus(α_raw) ≥ 0."""
        return F.softplus(self.alpha_raw)

    @property
    def delta(self) -> torch.Tensor:
        """δ = softplus(δ_raw) ≥ 0."""
        return F.softplus(self.delta_raw)

    def forward(self, x: torch.Tensor, retrieved: torch.Tensor) -> torch.Tensor:
        """z = α x + δ r."""
        return self.alpha * x + self.delta * retrieved

    def extra_repr(self) -> str:
        return f"alpha0={self.alpha0:g}, delta0={self.delta0:g}"


__all__ = ["AdditiveCoupling"]
