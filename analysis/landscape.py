"""Loss landscapes around trained weights (Li et al., 2018) and their scalar summaries.

    L(a, b) = loss(θ* + a·d₁ + b·d₂)

d₁, d₂ are Gaussian random directions in parameter space, filter-normalised: for every parameter
with two or more dimensions, each slice along the first dimension (for a Linear layer: the incoming
weight vector of one output neuron; for the stored patterns Ξ: one pattern) is rescaled to the norm
of the same slice of θ*. One-dimensional parameters (biases, τ, A) and scalars (β_raw, α, δ) get a
zero direction, as in Li et al. The grid is evaluated with one vectorised forward pass per chunk
of grid points (``torch.func.functional_call`` under ``torch.vmap``); the network is never copied.

Sharpness is the top Hessian eigenvalue of the loss at θ* by power iteration on Hessian-vector
products (double backward); flatness is the share of grid points whose loss is within 2× the
grid's minimum. Losses here are MSE on standardised targets.
"""

from __future__ import annotations

import contextlib

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import torch
from torch import nn

FLAT_FACTOR = 2.0
"""A grid point is "flat" when its loss is at most FLAT_FACTOR × the grid's minimum loss."""


def mse(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the rows (outputs reshaped to the targets' shape)."""
    return ((outputs.reshape(targets.shape) - targets) ** 2).mean()


def trained_parameters(network: nn.Module) -> dict[str, torch.Tensor]:
    """Detached copies of the network's trainable parameters θ*, by name."""
    return {name: p.detach().clone() for name, p in network.named_parameters() if p.requires_grad}


def filter_normalized_direction(
    parameters: Mapping[str, torch.Tensor], generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """A Gaussian direction with each filter rescaled to the trained filter's norm (Li et al., Eq. 2).

    d_{i,j} ← d_{i,j} / ‖d_{i,j}‖ · ‖θ_{i,j}‖ for every slice j along the first dimension of every
    parameter i with ≥ 2 dimensions; parameters with ≤ 1 dimension get zeros.
    """
    direction: dict[str, torch.Tensor] = {}
    for name, theta in parameters.items():
        if theta.dim() <= 1:
            direction[name] = torch.zeros_like(theta)
            continue
        noise = torch.randn(theta.shape, generator=generator, dtype=theta.dtype)
        theta_norms = theta.reshape(theta.shape[0], -1).norm(dim=1)
        noise_norms = noise.reshape(theta.shape[0], -1).norm(dim=1)
        scale = theta_norms / noise_norms.clamp_min(torch.finfo(theta.dtype).tiny)
        direction[name] = noise * scale.reshape(-1, *([1] * (theta.dim() - 1)))
    return direction


def random_directions(
    parameters: Mapping[str, torch.Tensor], seed: int
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Two filter-normalised directions drawn from one generator seeded with ``seed``."""
    generator = torch.Generator().manual_seed(int(seed))
    return (filter_normalized_direction(parameters, generator),
            filter_normalized_direction(parameters, generator))


def grid_losses(
    network: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    center: Mapping[str, torch.Tensor],
    directions: tuple[Mapping[str, torch.Tensor], Mapping[str, torch.Tensor]],
    coordinates: np.ndarray,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = mse,
    chunk_size: int | None = None,
) -> tuple[np.ndarray, str]:
    """Loss at θ* + a·d₁ + b·d₂ for every (a, b) in coordinates × coordinates.

    Returns (losses, mode) with ``losses[i, j] = L(a=coordinates[j], b=coordinates[i])`` (rows
    follow d₂, the y axis of a contour plot) and mode ``"vmap"`` (vectorised over grid points), or
    ``"functional"`` (one functional_call per point, no copies) where vmap cannot trace the network.
    """
    from torch.func import functional_call, vmap

    coordinates = np.asarray(coordinates, dtype=float)
    a_values, b_values = np.meshgrid(coordinates, coordinates)  # [i, j] = (coordinates[j], coordinates[i])
    points = np.stack([a_values.ravel(), b_values.ravel()], axis=1)
    names = list(center)
    first, second = directions
    dtype = next(iter(center.values())).dtype
    if chunk_size is None:
        chunk_size = max(1, min(len(points), 65536 // max(1, inputs.shape[0])))

    def stacked(chunk: np.ndarray) -> dict[str, torch.Tensor]:
        a = torch.as_tensor(chunk[:, 0], dtype=dtype)
        b = torch.as_tensor(chunk[:, 1], dtype=dtype)
        out = {}
        for name in names:
            shape = (-1,) + (1,) * center[name].dim()
            out[name] = center[name][None] + a.reshape(shape) * first[name][None] + b.reshape(shape) * second[name][None]
        return out

    def loss_at(parameters: dict[str, torch.Tensor]) -> torch.Tensor:
        return loss(functional_call(network, parameters, (inputs,)), targets)

    values = np.empty(len(points))
    mode = "vmap"
    was_training = network.training
    network.eval()
    try:
        with torch.no_grad():
            batched = vmap(loss_at)
            for start in range(0, len(points), chunk_size):
                chunk = points[start:start + chunk_size]
                if mode == "vmap":
                    try:
                        values[start:start + len(chunk)] = batched(stacked(chunk)).double().numpy()
                        continue
                    except (RuntimeError, NotImplementedError, ValueError):
                        mode = "functional"  # an operation without a vmap rule: same maths, point by point
                for k, point in enumerate(chunk):
                    single = {name: tensor[0] for name, tensor in stacked(point[None]).items()}
                    values[start + k] = float(loss_at(single))
    finally:
        network.train(was_training)
    return values.reshape(len(coordinates), len(coordinates)), mode


def hessian_top_eigenvalue(
    network: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = mse,
    iterations: int = 100,
    tolerance: float = 1e-4,
    seed: int = 0,
) -> tuple[float, int]:
    """Largest-magnitude eigenvalue of ∇²L(θ*) by power iteration on Hessian-vector products.

    Each step computes Hv = ∇(∇L·v) by double backward and v ← Hv/‖Hv‖; the estimate is the
    Rayleigh quotient vᵀHv. Stops when it changes by less than ``tolerance`` (relative).
    Returns (eigenvalue, iterations used). The network's own parameters and gradients are untouched.
    """
    from torch.func import functional_call

    parameters = {name: p.detach().clone().requires_grad_(True)
                  for name, p in network.named_parameters() if p.requires_grad}
    names = list(parameters)
    tensors = [parameters[name] for name in names]
    was_training = network.training
    network.eval()
    try:
        value = loss(functional_call(network, parameters, (inputs,)), targets)
        gradients = torch.autograd.grad(value, tensors, create_graph=True)
        generator = torch.Generator().manual_seed(int(seed))
        vector = [torch.randn(t.shape, generator=generator, dtype=t.dtype) for t in tensors]
        norm = torch.sqrt(sum((v**2).sum() for v in vector))
        vector = [v / norm for v in vector]
        estimate = math.nan
        for step in range(1, iterations + 1):
            product = torch.autograd.grad(gradients, tensors, grad_outputs=vector, retain_graph=True,
                                          allow_unused=True)
            product = [torch.zeros_like(t) if p is None else p for p, t in zip(product, tensors)]
            rayleigh = float(sum((p * v).sum() for p, v in zip(product, vector)))  # vᵀHv, ‖v‖ = 1
            norm = torch.sqrt(sum((p**2).sum() for p in product))
            if not torch.isfinite(norm) or float(norm) == 0.0:
                return rayleigh, step
            vector = [p / norm for p in product]
            if math.isfinite(estimate) and abs(rayleigh - estimate) <= tolerance * max(abs(rayleigh), 1e-12):
                return rayleigh, step
            estimate = rayleigh
        return estimate, iterations
    finally:
        network.train(was_training)


def flat_area_share(losses: np.ndarray, factor: float = FLAT_FACTOR) -> float:
    """Share of grid points whose loss is at most ``factor`` × the minimum loss of the grid."""
    finite = np.asarray(losses, dtype=float)
    if not np.isfinite(finite).any():
        return math.nan
    minimum = np.nanmin(finite)
    return float(np.mean(np.where(np.isfinite(finite), finite <= factor * minimum, False)))


@dataclass
class Landscape:
    """One variant's loss surface on a square grid and its scalar summaries."""

    variant: str
    coordinates: np.ndarray
    losses: np.ndarray
    center_loss: float
    hessian_top_eigenvalue: float = math.nan
    hessian_iterations: int = 0
    evaluation: str = "vmap"
    info: dict = field(default_factory=dict)

    @property
    def min_loss(self) -> float:
        return float(np.nanmin(self.losses))

    @property
    def flat_share(self) -> float:
        return flat_area_share(self.losses)


@contextlib.contextmanager
def _reference_kernels(network: nn.Module):
    """Evaluate a liquid-memory network through its plain autograd operations.

    The training kernels (``kernel="fused"``) are custom autograd nodes with hand-written first
    derivatives: torch.vmap has no rule for them and Hessian-vector products need second
    derivatives. The reference path computes the same function (tests in model/ compare them).
    """
    previous = getattr(network, "kernel", None)
    if previous is not None:
        network.kernel = "reference"
    try:
        yield
    finally:
        if previous is not None:
            network.kernel = previous


def compute_landscape(
    network: nn.Module,
    inputs,
    targets,
    variant: str = "network",
    grid: int = 25,
    span: float = 1.0,
    direction_seed: int = 0,
    hessian_iterations: int = 100,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = mse,
) -> Landscape:
    """Surface and summaries of ``network`` on (inputs, standardised targets) over [-span, span]²."""
    if not isinstance(grid, int) or grid < 3:
        raise ValueError(f"grid={grid!r}: use an integer ≥ 3 (points per axis)")
    if not span > 0:
        raise ValueError(f"span={span!r}: use a positive number")
    parameters = trained_parameters(network)
    if not parameters:
        raise ValueError("the network has no trainable parameters")
    dtype = next(iter(parameters.values())).dtype
    inputs = torch.as_tensor(np.asarray(inputs), dtype=dtype)
    targets = torch.as_tensor(np.asarray(targets), dtype=dtype).reshape(-1)
    coordinates = np.linspace(-span, span, grid)
    directions = random_directions(parameters, direction_seed)
    with _reference_kernels(network):
        losses, mode = grid_losses(network, inputs, targets, parameters, directions, coordinates, loss)
        with torch.no_grad():
            center = float(loss(network(inputs), targets))
        eigenvalue, used = (math.nan, 0)
        if hessian_iterations > 0:
            eigenvalue, used = hessian_top_eigenvalue(network, inputs, targets, loss, hessian_iterations,
                                                      seed=direction_seed)
    excluded = [name for name, p in parameters.items() if p.dim() <= 1]
    return Landscape(variant, coordinates, losses, center, eigenvalue, used, mode,
                     {"direction_seed": direction_seed, "span": span, "rows": int(inputs.shape[0]),
                      "parameters_perturbed": sum(p.numel() for p in parameters.values() if p.dim() > 1),
                      "parameters_excluded": excluded})


# ---------------------------------------------------------------------------- storage


def save_landscapes(path: Path | str, landscapes: Mapping[str, Landscape], metadata: dict | None = None) -> Path:
    """Store grids and summaries in one .npz (no pickles) so figures can be redrawn without recomputing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {}
    summaries = {}
    for variant, landscape in landscapes.items():
        arrays[f"losses__{variant}"] = landscape.losses
        arrays["coordinates"] = landscape.coordinates
        summary = asdict(landscape)
        summary.pop("losses")
        summary.pop("coordinates")
        summaries[variant] = summary
    header = {"metadata": metadata or {}, "landscapes": summaries, "flat_factor": FLAT_FACTOR}
    arrays["header"] = np.array(json.dumps(header, default=_json_default))
    temporary = path.with_name(path.stem + ".partial.npz")
    np.savez_compressed(temporary, **arrays)
    temporary.replace(path)
    return path


def load_landscapes(path: Path | str) -> tuple[dict[str, Landscape], dict]:
    """Read a file written by :func:`save_landscapes`: (variant → Landscape, metadata)."""
    with np.load(Path(path), allow_pickle=False) as data:
        header = json.loads(str(data["header"]))
        coordinates = data["coordinates"]
        landscapes = {}
        for variant, summary in header["landscapes"].items():
            landscapes[variant] = Landscape(coordinates=coordinates.copy(),
                                            losses=data[f"losses__{variant}"].copy(), **summary)
    return landscapes, header.get("metadata", {})


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in a landscape header")
