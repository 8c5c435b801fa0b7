"""Liquid time-constant cell: the vector field of MODEL.md Eq. (1) and one fixed-step RK4 step."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ._util import check_int, inverse_softplus

TAU_MIN = 1e-3  # τ_min: floor of every time constant


class LTCCell(nn.Module):
    """Liquid time-constant dynamics for a hidden state ``x ∈ R^n`` driven by an input ``u ∈ R^d``.

        dx/dt = -(1/τ + f(x, u)) ⊙ x + f(x, u) ⊙ A,   f(x, u) = sigmoid(W_x x + W_u u + b)   (1)

    ``W_u u + b`` (the *input drive*) is constant while the state evolves; callers compute it once
    with :meth:`input_drive` and pass it to :meth:`rk4_step` for every step and stage.
    """

    def __init__(self, n_features: int, hidden_size: int, tau_min: float = TAU_MIN) -> None:
        super().__init__()
        self.n_features = check_int("n_features", n_features)
        self.hidden_size = check_int("hidden_size", hidden_size)
        self.tau_min = float(tau_min)
        self.input_map = nn.Linear(n_features, hidden_size)  # W_u, b
        self.recurrent_map = nn.Linear(hidden_size, hidden_size, bias=False)  # W_x
        # τ = softplus(τ_raw) + τ_min, initialised at τ = 1
        self.tau_raw = nn.Parameter(torch.full((hidden_size,), inverse_softplus(1.0 - tau_min)))
        # A ∈ R^n: the level each component is pulled towards while f is on
        self.reversal = nn.Parameter(torch.empty(hidden_size).uniform_(-1.0, 1.0))

    @property
    def tau(self) -> torch.Tensor:
        """Time constants τ = softplus(τ_raw) + τ_min (all positive)."""
        return F.softplus(self.tau_raw) + self.tau_min

    def input_drive(self, u: torch.Tensor) -> torch.Tensor:
        """``W_u u + b``: the part of f's pre-activation that does not change during integration."""
        return self.input_map(u)

    def field(self, x: torch.Tensor, drive: torch.Tensor, inverse_tau: torch.Tensor) -> torch.Tensor:
        """dx/dt from a precomputed drive ``W_u u + b`` and ``1/τ``."""
        gate = torch.sigmoid(torch.addmm(drive, x, self.recurrent_map.weight.t()))  # f(x, u)
        return gate * (self.reversal - x) - inverse_tau * x  # = -(1/τ + f) x + f A

    def vector_field(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """dx/dt of Eq. (1) at state ``x`` (batch × n) and input ``u`` (batch × d)."""
        return self.field(x, self.input_drive(u), 1.0 / self.tau)

    def rk4_step(
        self, x: torch.Tensor, drive: torch.Tensor, inverse_tau: torch.Tensor, step_size: float
    ) -> torch.Tensor:
        """One classical fourth-order Runge–Kutta step of size Δt = ``step_size``."""
        half = 0.5 * step_size
        k1 = self.field(x, drive, inverse_tau)
        k2 = self.field(torch.add(x, k1, alpha=half), drive, inverse_tau)
        k3 = self.field(torch.add(x, k2, alpha=half), drive, inverse_tau)
        k4 = self.field(torch.add(x, k3, alpha=step_size), drive, inverse_tau)
        # x + Δt/6 (k1 + 2 k2 + 2 k3 + k4)
        increment = torch.add(k1 + k4, k2 + k3, alpha=2.0)
        return torch.add(x, increment, alpha=step_size / 6.0)

    def integrate(
        self, u: torch.Tensor, unfolds: int, step_size: float, initial_state: torch.Tensor | None = None
    ) -> torch.Tensor:
        """State after ``unfolds`` RK4 steps from ``x(0)`` (zero unless given), input held fixed."""
        drive = self.input_drive(u)
        inverse_tau = 1.0 / self.tau
        x = drive.new_zeros(drive.shape) if initial_state is None else initial_state
        for _ in range(unfolds):
            x = self.rk4_step(x, drive, inverse_tau, step_size)
        return x

    def extra_repr(self) -> str:
        return f"n_features={self.n_features}, hidden_size={self.hidden_size}, tau_min={self.tau_min:g}"


def default_step_size(unfolds: int) -> float:
    """Δt = 1/T: the default integration step for ``unfolds`` steps over unit time."""
    return 1.0 / unfolds


__all__ = ["LTCCell", "TAU_MIN", "default_step_size"]
