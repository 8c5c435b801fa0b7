"""The LTC+MHN regression network, its ablation variants, and parameter-count matching."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ._util import check_choice, check_int, check_positive
from .coupling import AdditiveCoupling
from .hopfield import ATTENTION_MODES, HopfieldMemory
from .kernels import fold_memory, liquid_integrate
from .ltc import LTCCell, default_step_size

VARIANTS = ("ltc_mhn", "ltc", "zero_beta", "fixed_beta", "matched_ltc")
# How encode() evaluates the same equations: "fused" (model.kernels: one autograd node for the
# whole solver, hand-written backward; the default) or "reference" (the plain loop of autograd ops).
KERNELS = ("fused", "reference")

# Network hyperparameters and their defaults (MODEL.md §6). `step_size` None means Δt = 1/T.
NETWORK_DEFAULTS: dict[str, object] = {
    "hidden_size": 64,
    "unfolds": 6,
    "hopfield_size": 16,
    "heads": 4,
    "beta": 0.25,
    "alpha": 1.0,
    "delta": 0.5,
    "feedback": True,
    "step_size": None,
    "attention": "auto",
    "kernel": "fused",
}
MEMORY_HYPERPARAMETERS = ("hopfield_size", "heads", "beta", "alpha", "delta", "feedback")
MATCH_TOLERANCE = 0.05  # matched_ltc's parameter count is within 5 % of ltc_mhn's


@dataclass(frozen=True)
class VariantSpec:
    """What a variant name means: whether it has memory, its β mode, whether its width is matched."""

    name: str
    memory: bool
    beta_mode: str | None = None
    matched: bool = False


VARIANT_SPECS = {
    "ltc_mhn": VariantSpec("ltc_mhn", memory=True, beta_mode="learnable"),
    "ltc": VariantSpec("ltc", memory=False),
    "zero_beta": VariantSpec("zero_beta", memory=True, beta_mode="zero"),
    "fixed_beta": VariantSpec("fixed_beta", memory=True, beta_mode="fixed"),
    "matched_ltc": VariantSpec("matched_ltc", memory=False, matched=True),
}


class RegressionHead(nn.Sequential):
    """ŷ = MLP_reg(z): Linear(n → h) → ReLU → Linear(h → 1), h = n by default."""

    def __init__(self, hidden_size: int, head_width: int | None = None) -> None:
        width = hidden_size if head_width is None else head_width
        super().__init__(nn.Linear(hidden_size, width), nn.ReLU(), nn.Linear(width, 1))


class LiquidHopfieldNetwork(nn.Module):
    """LTC encoder, optional Hopfield memory with additive coupling, and a regression head.

    ``forward(u)`` returns one prediction per row (shape: batch). With memory and ``feedback``,
    the coupled state replaces the liquid state after every RK4 step (x ← z = α x + δ r(x));
    without feedback, z_T = α x_T + δ r(x_T) once. Without memory, z_T = x_T.

    ``kernel`` (an attribute that may be changed at any time) chooses how :meth:`encode` runs:
    ``"fused"`` (:mod:`model.kernels`, the default) or ``"reference"`` (the plain loop over
    :meth:`LTCCell.rk4_step`); both give the same numbers to rounding. Under ``torch.compile``
    the plain loop is traced, so the compiler fuses it itself.
    """

    kernel: str = "fused"  # class default: networks pickled before the attribute existed load as fused

    def __init__(
        self,
        n_features: int,
        hidden_size: int,
        unfolds: int,
        step_size: float | None = None,
        memory: HopfieldMemory | None = None,
        coupling: AdditiveCoupling | None = None,
        feedback: bool = True,
        variant: str = "custom",
        kernel: str = "fused",
    ) -> None:
        super().__init__()
        if (memory is None) != (coupling is None):
            raise ValueError("memory and coupling must be given together (or both left out)")
        self.variant = variant
        self.kernel = check_choice("kernel", kernel, KERNELS)
        self.n_features = check_int("n_features", n_features)
        self.hidden_size = check_int("hidden_size", hidden_size)
        self.unfolds = check_int("unfolds", unfolds)  # T
        self.step_size = (  # Δt
            default_step_size(self.unfolds) if step_size is None else check_positive("step_size", step_size)
        )
        self.feedback = bool(feedback)
        self.cell = LTCCell(n_features, hidden_size)
        self.memory = memory
        self.coupling = coupling
        self.head = RegressionHead(hidden_size)
        self.matched_parameter_count: int | None = None  # set for matched_ltc

    @property
    def has_memory(self) -> bool:
        return self.memory is not None

    def coupling_step(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """x ↦ z = α x + δ r(x) (Eq. 4), with everything that does not depend on x computed now."""
        if self.memory is None:
            raise ValueError(f"variant {self.variant!r} has no memory to couple")
        alpha, delta = self.coupling.alpha, self.coupling.delta
        if self.memory.resolved_attention() == "folded":
            folded = self.memory.fold(output_scale=delta)  # δ W_o folded into the values
            return lambda x: folded.add_to(alpha * x, x)  # α x + δ r(x) as one multiply-add
        memory = self.memory
        return lambda x: alpha * x + delta * memory(x)

    def couple(self, x: torch.Tensor) -> torch.Tensor:
        """z = α x + δ r(x)   (Eq. 4)."""
        return self.coupling_step()(x)

    def encode(self, u: torch.Tensor) -> torch.Tensor:
        """The representation z_T the head reads, from x(0) = 0 after T RK4 steps."""
        if self.kernel == "reference" or torch.compiler.is_compiling():
            return self.encode_reference(u)
        return self.encode_fused(u)

    def encode_reference(self, u: torch.Tensor) -> torch.Tensor:
        """:meth:`encode` as a plain loop of autograd operations (the definition the fused kernel must match)."""
        cell = self.cell
        drive = cell.input_drive(u)  # W_u u + b, once per forward pass
        inverse_tau = 1.0 / cell.tau  # 1/τ, once per forward pass
        x = drive.new_zeros(drive.shape)  # x(0) = 0
        couple = self.coupling_step() if self.memory is not None else None
        for _ in range(self.unfolds):
            x = cell.rk4_step(x, drive, inverse_tau, self.step_size)
            if couple is not None and self.feedback:
                x = couple(x)  # x ← z = α x + δ r(x)
        if couple is not None and not self.feedback:
            x = couple(x)  # z_T = α x_T + δ r(x_T)
        return x

    def encode_fused(self, u: torch.Tensor) -> torch.Tensor:
        """:meth:`encode` through :func:`model.kernels.liquid_integrate` (one autograd node per solve)."""
        cell, memory = self.cell, self.memory
        drive = cell.input_drive(u)  # W_u u + b, once per forward pass
        inverse_tau = 1.0 / cell.tau  # 1/τ, once per forward pass
        solver = (drive, cell.recurrent_map.weight, cell.reversal, inverse_tau)
        if memory is None or not self.feedback:
            x = liquid_integrate(*solver, self.unfolds, self.step_size)
            return x if memory is None else self.couple(x)  # z_T = α x_T + δ r(x_T)
        if memory.resolved_attention() == "folded":  # δ W_o folded into the values, β and W_q into the keys
            keys, values = fold_memory(
                memory.patterns, memory.query_map.weight, memory.output_map.weight, memory.beta,
                self.coupling.delta, memory.heads,
            )
            return liquid_integrate(
                *solver, self.unfolds, self.step_size,
                keys=keys, values=values, alpha=self.coupling.alpha, heads=memory.heads,
            )
        couple = self.coupling_step()
        x = None  # x(0) = 0
        for _ in range(self.unfolds):
            x = couple(liquid_integrate(*solver, 1, self.step_size, initial=x))  # x ← z = α x + δ r(x)
        return x

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.head(self.encode(u)).squeeze(-1)

    def parameter_count(self) -> int:
        """Number of trainable scalars."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def extra_repr(self) -> str:
        text = (
            f"variant={self.variant!r}, unfolds={self.unfolds}, step_size={self.step_size:g}, "
            f"feedback={self.feedback}, parameters={self.parameter_count()}"
        )
        if self.matched_parameter_count is not None:
            text += f", ltc_mhn_parameters={self.matched_parameter_count}"
        return text


def ltc_parameter_count(n_features: int, hidden_size: int) -> int:
    """Trainable scalars of the ``ltc`` network: LTC cell (n² + dn + 3n) plus head (n² + 2n + 1)."""
    n, d = hidden_size, n_features
    return 2 * n * n + d * n + 5 * n + 1


def ltc_mhn_parameter_count(
    n_features: int, hidden_size: int, hopfield_size: int, beta_mode: str = "learnable"
) -> int:
    """Trainable scalars with memory: ltc + W_q, W_o (2n²) + Ξ (N n) + α, δ (+ β_raw if learnable)."""
    n = hidden_size
    memory = 2 * n * n + hopfield_size * n + (1 if beta_mode == "learnable" else 0)
    return ltc_parameter_count(n_features, hidden_size) + memory + 2


def matched_hidden_size(n_features: int, hidden_size: int = 64, hopfield_size: int = 16) -> int:
    """Width n' whose ``ltc`` parameter count is closest to ``ltc_mhn`` with these settings."""
    d = check_int("n_features", n_features)
    target = ltc_mhn_parameter_count(
        d, check_int("hidden_size", hidden_size), check_int("hopfield_size", hopfield_size)
    )
    # 2n'² + (d + 5) n' + 1 = target, take the closer of the two integers around the root
    root = (-(d + 5) + math.sqrt((d + 5) ** 2 + 8 * (target - 1))) / 4
    candidates = {max(1, math.floor(root)), max(1, math.ceil(root))}
    width = min(candidates, key=lambda w: (abs(ltc_parameter_count(d, w) - target), w))
    if abs(ltc_parameter_count(d, width) - target) > MATCH_TOLERANCE * target:
        raise ValueError(
            f"no width matches ltc_mhn's {target} parameters within 5 % for n_features={d}, "
            f"hidden_size={hidden_size}, hopfield_size={hopfield_size}"
        )
    return width


def resolve_hyperparameters(variant: str, hyperparameters: dict) -> dict:
    """Check the variant and hyperparameter names/values; return the complete setting dict."""
    check_choice("variant", variant, VARIANTS)
    unknown = sorted(set(hyperparameters) - set(NETWORK_DEFAULTS))
    if unknown:
        raise ValueError(
            f"unknown network hyperparameter(s) {', '.join(unknown)}; "
            f"accepted: {', '.join(NETWORK_DEFAULTS)}"
        )
    settings = {**NETWORK_DEFAULTS, **hyperparameters}
    check_int("hidden_size", settings["hidden_size"])
    check_int("unfolds", settings["unfolds"])
    check_int("hopfield_size", settings["hopfield_size"])
    check_choice("attention", settings["attention"], ATTENTION_MODES)
    check_choice("kernel", settings["kernel"], KERNELS)
    if settings["step_size"] is not None:
        check_positive("step_size", settings["step_size"])
    spec = VARIANT_SPECS[variant]
    if spec.memory:
        heads = check_int("heads", settings["heads"])
        if settings["hidden_size"] % heads:
            raise ValueError(
                f"heads must divide hidden_size ({settings['hidden_size']}); got heads={heads}"
            )
        check_positive("beta", settings["beta"], allow_zero=spec.beta_mode != "learnable")
        check_positive("alpha", settings["alpha"])
        check_positive("delta", settings["delta"])
        if settings["feedback"] not in (True, False):  # also numpy booleans and 0/1
            raise ValueError(f"feedback must be True or False, got {settings['feedback']!r}")
    return settings


def build_network(variant: str, n_features: int, **hyperparameters) -> LiquidHopfieldNetwork:
    """Build the torch module for ``variant`` (one of :data:`VARIANTS`) on ``n_features`` inputs.

    Hyperparameters (defaults in :data:`NETWORK_DEFAULTS`): hidden_size, unfolds, hopfield_size,
    heads, beta, alpha, delta, feedback, step_size (None: 1/unfolds), attention, kernel. Variants without
    memory ignore the memory settings; ``matched_ltc`` uses hidden_size and hopfield_size only to
    size itself against ``ltc_mhn``.
    """
    settings = resolve_hyperparameters(variant, hyperparameters)
    n_features = check_int("n_features", n_features)
    spec = VARIANT_SPECS[variant]
    hidden_size = settings["hidden_size"]
    memory = coupling = None
    if spec.memory:
        memory = HopfieldMemory(
            hidden_size,
            hopfield_size=settings["hopfield_size"],
            heads=settings["heads"],
            beta=settings["beta"],
            beta_mode=spec.beta_mode,
            attention=settings["attention"],
        )
        coupling = AdditiveCoupling(alpha=settings["alpha"], delta=settings["delta"])
    width = (
        matched_hidden_size(n_features, hidden_size, settings["hopfield_size"]) if spec.matched else hidden_size
    )
    network = LiquidHopfieldNetwork(
        n_features,
        width,
        settings["unfolds"],
        step_size=settings["step_size"],
        memory=memory,
        coupling=coupling,
        feedback=settings["feedback"],
        variant=variant,
        kernel=settings["kernel"],
    )
    if spec.matched:
        network.matched_parameter_count = ltc_mhn_parameter_count(
            n_features, hidden_size, settings["hopfield_size"]
        )
    return network


__all__ = [
    "KERNELS",
    "LiquidHopfieldNetwork",
    "MATCH_TOLERANCE",
    "NETWORK_DEFAULTS",
    "RegressionHead",
    "VARIANTS",
    "VARIANT_SPECS",
    "build_network",
    "ltc_mhn_parameter_count",
    "ltc_parameter_count",
    "matched_hidden_size",
]
