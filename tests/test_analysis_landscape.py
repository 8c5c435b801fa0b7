"""Loss landscapes: filter normalisation, an exactly known quadratic surface, the Hessian's top
eigenvalue, flat share and storage — each against an independent numpy computation."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from analysis.landscape import (
    Landscape,
    compute_landscape,
    filter_normalized_direction,
    flat_area_share,
    grid_losses,
    hessian_top_eigenvalue,
    load_landscapes,
    random_directions,
    save_landscapes,
    trained_parameters,
)


class Toy(nn.Module):
    """Linear layers plus a 3-D tensor, a 1-D vector and a scalar parameter."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(5, 4)
        self.second = nn.Linear(4, 1)
        self.patterns = nn.Parameter(torch.randn(3, 2, 4))
        self.scale = nn.Parameter(torch.ones(4))
        self.temperature = nn.Parameter(torch.tensor(0.7))

    def forward(self, x):
        hidden = torch.tanh(self.first(x)) * self.scale + self.patterns.mean() * self.temperature
        return self.second(hidden).squeeze(-1)


def test_filter_normalisation_matches_each_filter_norm_and_zeroes_1d_parameters():
    torch.manual_seed(0)
    network = Toy()
    parameters = trained_parameters(network)
    direction = filter_normalized_direction(parameters, torch.Generator().manual_seed(1))
    assert set(direction) == set(parameters)
    for name, theta in parameters.items():
        d = direction[name]
        assert d.shape == theta.shape
        if theta.dim() <= 1:
            assert torch.count_nonzero(d) == 0, name
        else:
            # one norm per output neuron / pattern: slices along the first dimension
            np.testing.assert_allclose(d.reshape(d.shape[0], -1).norm(dim=1).numpy(),
                                       theta.reshape(theta.shape[0], -1).norm(dim=1).numpy(), rtol=1e-5)
            assert not torch.allclose(d, theta)  # a random direction, not the weights themselves
    # Linear weight rows are the incoming weights of one output neuron
    weight = parameters["first.weight"]
    assert direction["first.weight"][2].norm() == pytest.approx(float(weight[2].norm()), rel=1e-5)


def test_directions_are_reproducible_from_their_seed_and_differ_between_the_two():
    parameters = trained_parameters(Toy())
    first_a, second_a = random_directions(parameters, seed=7)
    first_b, second_b = random_directions(parameters, seed=7)
    for name in parameters:
        assert torch.equal(first_a[name], first_b[name]) and torch.equal(second_a[name], second_b[name])
    assert not torch.equal(first_a["first.weight"], second_a["first.weight"])
    other, _ = random_directions(parameters, seed=8)
    assert not torch.equal(first_a["first.weight"], other["first.weight"])


def _linear_problem(rows=40, features=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, features))
    network = nn.Linear(features, 1).double()
    with torch.no_grad():
        network.weight.copy_(torch.as_tensor(rng.normal(size=(1, features))))
        network.bias.fill_(0.3)
    y = X @ network.weight.detach().numpy().ravel() + 0.3 + rng.normal(0, 0.5, rows)
    return network, X, y


def test_grid_on_a_quadratic_loss_equals_the_closed_form_surface():
    network, X, y = _linear_problem()
    parameters = trained_parameters(network)
    first, second = random_directions(parameters, seed=3)
    coordinates = np.linspace(-1, 1, 7)
    losses, mode = grid_losses(network, torch.as_tensor(X), torch.as_tensor(y), parameters, (first, second),
                               coordinates)
    assert mode == "vmap"
    # closed form: residual r0 + a·(X d1ᵀ) + b·(X d2ᵀ); biases are 1-D, so they do not move
    w = parameters["weight"].numpy().ravel()
    r0 = X @ w + 0.3 - y
    u = X @ first["weight"].numpy().ravel()
    v = X @ second["weight"].numpy().ravel()
    expected = np.array([[np.mean((r0 + a * u + b * v) ** 2) for a in coordinates] for b in coordinates])
    np.testing.assert_allclose(losses, expected, rtol=1e-10)
    assert flat_area_share(losses) == pytest.approx(np.mean(expected <= 2 * expected.min()))


def test_hessian_top_eigenvalue_of_least_squares_equals_numpy():
    network, X, y = _linear_problem(rows=60, features=4, seed=1)
    design = np.column_stack([X, np.ones(len(X))])
    expected = np.linalg.eigvalsh(2 / len(X) * design.T @ design).max()  # ∇²MSE = (2/n) [X 1]ᵀ[X 1]
    value, used = hessian_top_eigenvalue(network, torch.as_tensor(X), torch.as_tensor(y), iterations=500,
                                         tolerance=1e-12)
    assert value == pytest.approx(expected, rel=1e-6)
    assert used >= 2


def test_vectorised_grid_matches_perturbed_copies_of_a_nonlinear_network():
    torch.manual_seed(0)
    network = Toy().double()
    X = torch.randn(30, 5, dtype=torch.float64)
    y = torch.randn(30, dtype=torch.float64)
    parameters = trained_parameters(network)
    directions = random_directions(parameters, seed=0)
    coordinates = np.array([-0.5, 0.0, 0.75])
    losses, mode = grid_losses(network, X, y, parameters, directions, coordinates, chunk_size=4)
    assert mode == "vmap"
    for i, b in enumerate(coordinates):
        for j, a in enumerate(coordinates):
            copy_ = copy.deepcopy(network)
            with torch.no_grad():
                for name, p in copy_.named_parameters():
                    p.add_(a * directions[0][name] + b * directions[1][name])
                expected = float(((copy_(X) - y) ** 2).mean())
            assert losses[i, j] == pytest.approx(expected, rel=1e-10)
    # the network itself is left as it was
    for name, p in network.named_parameters():
        assert torch.equal(p, parameters[name])


def test_flat_area_share_counts_points_within_twice_the_minimum():
    losses = np.array([[1.0, 2.0, 2.1], [3.0, 1.5, np.nan]])
    assert flat_area_share(losses) == pytest.approx(3 / 6)
    assert np.isnan(flat_area_share(np.full((2, 2), np.nan)))


def test_compute_landscape_checks_arguments_and_centres_on_the_trained_weights():
    network, X, y = _linear_problem()
    landscape = compute_landscape(network, X, y, variant="linear", grid=5, span=0.5, hessian_iterations=50)
    assert landscape.losses.shape == (5, 5)
    assert landscape.losses[2, 2] == pytest.approx(landscape.center_loss)
    assert landscape.center_loss == pytest.approx(np.mean((X @ network.weight.detach().numpy().ravel() + 0.3 - y) ** 2))
    assert landscape.info["parameters_excluded"] == ["bias"]
    with pytest.raises(ValueError, match="grid"):
        compute_landscape(network, X, y, grid=2)
    with pytest.raises(ValueError, match="span"):
        compute_landscape(network, X, y, span=0)


def test_landscapes_round_trip_through_npz(tmp_path):
    network, X, y = _linear_problem()
    landscape = compute_landscape(network, X, y, variant="ltc", grid=5, hessian_iterations=10)
    path = save_landscapes(tmp_path / "landscape_t_fold0_seed0.npz", {"ltc": landscape}, {"task": "t", "fold": 0})
    loaded, metadata = load_landscapes(path)
    assert metadata == {"task": "t", "fold": 0}
    again = loaded["ltc"]
    assert isinstance(again, Landscape)
    np.testing.assert_array_equal(again.losses, landscape.losses)
    np.testing.assert_array_equal(again.coordinates, landscape.coordinates)
    assert again.hessian_top_eigenvalue == landscape.hessian_top_eigenvalue
    assert again.info == landscape.info


def test_landscape_of_the_real_network_runs_vectorised():
    model = pytest.importorskip("model")
    torch.manual_seed(0)
    network = model.build_network("ltc_mhn", n_features=4, hidden_size=8, unfolds=2, hopfield_size=4, heads=2)
    X = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    y = np.random.default_rng(1).normal(size=16).astype(np.float32)
    landscape = compute_landscape(network, X, y, variant="ltc_mhn", grid=3, hessian_iterations=3)
    assert landscape.evaluation == "vmap"
    assert landscape.losses[1, 1] == pytest.approx(landscape.center_loss, rel=1e-5)
    excluded = set(landscape.info["parameters_excluded"])
    assert {"memory.beta_raw", "cell.tau_raw"} <= excluded  # scalars and 1-D vectors stay fixed
