"""Building blocks of the liquid–memory network checked against independent references:
scipy's ODE solver, a numpy transcription of Eq. (3), hand-derived chain rules and closed-form counts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

import model
from model.hopfield import HopfieldMemory
from model.ltc import LTCCell

DTYPE = torch.float64


def assert_close(actual, expected, rtol: float = 1e-7, atol: float = 1e-10) -> None:
    """numpy's assert_allclose on tensors (torch.testing takes seconds to import)."""
    np.testing.assert_allclose(
        torch.as_tensor(actual).detach().numpy(), torch.as_tensor(expected).detach().numpy(), rtol=rtol, atol=atol
    )


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Small tensors gain nothing from threads, and spinning threads stall on a busy machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _randomise_ltc(network: model.LiquidHopfieldNetwork, generator: torch.Generator, scale: float = 1.0) -> None:
    """Give the LTC cell weights that make the dynamics clearly nonlinear."""
    cell = network.cell
    with torch.no_grad():
        for weight in (cell.recurrent_map.weight, cell.input_map.weight, cell.input_map.bias):
            weight.copy_(scale * torch.randn(weight.shape, generator=generator, dtype=weight.dtype))
        cell.reversal.copy_(2 * torch.rand(cell.reversal.shape, generator=generator, dtype=DTYPE) - 1)


def _reference_final_state(cell: LTCCell, u: torch.Tensor, t_end: float) -> np.ndarray:
    """x(t_end) from x(0) = 0 by scipy's DOP853 on the cell's own vector field."""
    shape = (u.shape[0], cell.hidden_size)

    def rhs(_t: float, flat: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            x = torch.from_numpy(flat).reshape(shape)
            return cell.vector_field(x, u).numpy().ravel()

    solution = solve_ivp(rhs, (0.0, t_end), np.zeros(shape[0] * shape[1]), method="DOP853", rtol=1e-12, atol=1e-13)
    assert solution.success
    return solution.y[:, -1].reshape(shape)


def _relative_error(network: model.LiquidHopfieldNetwork, u: torch.Tensor, reference: np.ndarray) -> float:
    with torch.no_grad():
        final = network.encode(u).numpy()  # `ltc`: z_T = x_T, the RK4 solution
    return float(np.linalg.norm(final - reference) / np.linalg.norm(reference))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rk4_matches_reference_solver_and_is_fourth_order(seed):
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    coarse = model.build_network("ltc", n_features=5, hidden_size=16).to(DTYPE)
    _randomise_ltc(coarse, generator)
    u = torch.randn(4, 5, generator=generator, dtype=DTYPE)
    assert coarse.unfolds == 6 and coarse.step_size == pytest.approx(1 / 6)  # defaults T = 6, Δt = 1/T
    t_end = coarse.unfolds * coarse.step_size
    reference = _reference_final_state(coarse.cell, u, t_end)

    coarse_error = _relative_error(coarse, u, reference)
    assert coarse_error < 1e-4

    fine = model.build_network("ltc", n_features=5, hidden_size=16, unfolds=12).to(DTYPE)  # Δt halved
    fine.load_state_dict(coarse.state_dict())
    assert fine.unfolds * fine.step_size == pytest.approx(t_end)
    fine_error = _relative_error(fine, u, reference)
    # global error of a fourth-order method: halving Δt divides it by about 2^4 = 16
    print(f"relative error {coarse_error:.2e} at Δt = 1/6, ratio {coarse_error / fine_error:.2f} when halved")
    assert 11 < coarse_error / fine_error < 22


def test_vector_field_is_equation_one():
    torch.manual_seed(3)
    cell = LTCCell(3, 4).to(DTYPE)
    x, u = torch.randn(2, 4, dtype=DTYPE), torch.randn(2, 3, dtype=DTYPE)
    W_x, W_u, b = cell.recurrent_map.weight, cell.input_map.weight, cell.input_map.bias
    f = torch.sigmoid(x @ W_x.T + u @ W_u.T + b)
    tau = torch.nn.functional.softplus(cell.tau_raw) + 1e-3
    expected = -(1 / tau + f) * x + f * cell.reversal
    assert_close(cell.vector_field(x, u), expected)


def test_ltc_state_stays_within_lemma_one_bounds():
    """MODEL.md §1: each component stays in [min(0, A_i, x_i(0)), max(0, A_i, x_i(0))].

    The discrete RK4 solver keeps this bound while Δt·(1/τ + 1) lies well inside its stability
    interval (about 2.79); time constants are drawn in [0.2, 5], so Δt·(1/τ + 1) ≤ 1 at Δt = 1/6.
    """
    generator = torch.Generator().manual_seed(11)
    for draw in range(40):
        torch.manual_seed(draw)
        cell = LTCCell(6, 12).to(DTYPE)
        with torch.no_grad():
            scale = [0.5, 2.0, 5.0][draw % 3]
            cell.recurrent_map.weight.copy_(scale * torch.randn(12, 12, generator=generator, dtype=DTYPE))
            cell.input_map.weight.copy_(scale * torch.randn(12, 6, generator=generator, dtype=DTYPE))
            cell.reversal.copy_(4 * torch.rand(12, generator=generator, dtype=DTYPE) - 2)
            tau = 0.2 + 4.8 * torch.rand(12, generator=generator, dtype=DTYPE)
            cell.tau_raw.copy_(torch.log(torch.expm1(tau - cell.tau_min)))
        u = 3 * torch.randn(32, 6, generator=generator, dtype=DTYPE)
        x = 4 * torch.rand(32, 12, generator=generator, dtype=DTYPE) - 2
        lower = torch.minimum(torch.minimum(torch.zeros_like(x), cell.reversal.detach().expand_as(x)), x)
        upper = torch.maximum(torch.maximum(torch.zeros_like(x), cell.reversal.detach().expand_as(x)), x)
        with torch.no_grad():
            drive, inverse_tau = cell.input_drive(u), 1 / cell.tau
            for _ in range(60):
                x = cell.rk4_step(x, drive, inverse_tau, 1 / 6)
                assert torch.all(x >= lower - 1e-9) and torch.all(x <= upper + 1e-9)


def test_default_ltc_network_state_is_bounded_from_zero():
    torch.manual_seed(5)
    network = model.build_network("ltc", n_features=7)
    u = 10 * torch.randn(500, 7)
    with torch.no_grad():
        state = network.encode(u)
    reversal = network.cell.reversal.detach()
    assert torch.all(state >= torch.clamp(reversal, max=0) - 1e-6)
    assert torch.all(state <= torch.clamp(reversal, min=0) + 1e-6)


# --- Hopfield memory -----------------------------------------------------------------------------


def numpy_hopfield(x, query_weight, patterns, output_weight, beta, heads):
    """Eq. (3) transcribed literally: q = W_q x, r_h = Σ_i softmax_i(β q_h·ξ_{i,h}) ξ_{i,h}, r = W_o [r_h]."""
    q = x @ query_weight.T
    width = q.shape[1] // heads
    retrieved = []
    for h in range(heads):
        block = slice(h * width, (h + 1) * width)
        q_h, xi_h = q[:, block], patterns[:, block]
        logits = beta * q_h @ xi_h.T
        weights = np.exp(logits - logits.max(axis=1, keepdims=True))
        weights /= weights.sum(axis=1, keepdims=True)
        retrieved.append(weights @ xi_h)
    return np.concatenate(retrieved, axis=1) @ output_weight.T


@pytest.mark.parametrize("heads", [1, 2, 4, 8])
@pytest.mark.parametrize("beta_mode", ["learnable", "fixed", "zero"])
def test_hopfield_matches_numpy_formula_for_every_head_count(heads, beta_mode):
    torch.manual_seed(heads)
    memory = HopfieldMemory(32, hopfield_size=12, heads=heads, beta=1.7, beta_mode=beta_mode).to(DTYPE)
    x = torch.randn(9, 32, dtype=DTYPE)
    beta = float(memory.beta.detach())  # β0 = 1.7 as stored (float32 rounding), 0 for zero mode
    assert beta == pytest.approx({"learnable": 1.7, "fixed": 1.7, "zero": 0.0}[beta_mode])
    expected = numpy_hopfield(
        x.numpy(),
        memory.query_map.weight.detach().numpy(),
        memory.patterns.detach().numpy(),
        memory.output_map.weight.detach().numpy(),
        beta,
        heads,
    )
    for attention in ("folded", "per_head", "fused"):
        memory.attention = attention
        with torch.no_grad():
            np.testing.assert_allclose(memory(x).numpy(), expected, rtol=1e-10, atol=1e-12, err_msg=attention)


def test_hopfield_kernels_agree_in_float32_with_gradients():
    torch.manual_seed(0)
    memory = HopfieldMemory(64, hopfield_size=16, heads=4, beta=0.25)
    x = torch.randn(300, 64)
    outputs, gradients = {}, {}
    for attention in ("folded", "per_head", "fused"):
        memory.attention = attention
        memory.zero_grad()
        outputs[attention] = memory(x)
        outputs[attention].square().sum().backward()
        gradients[attention] = [p.grad.clone() for p in memory.parameters()]
    for attention in ("per_head", "fused"):
        assert_close(outputs[attention], outputs["folded"], rtol=1e-4, atol=1e-5)
        for got, want in zip(gradients[attention], gradients["folded"]):
            assert_close(got, want, rtol=1e-3, atol=1e-4)


def test_zero_beta_returns_mean_of_stored_patterns():
    torch.manual_seed(1)
    memory = HopfieldMemory(16, hopfield_size=10, heads=2, beta_mode="zero").to(DTYPE)
    queries = 100 * torch.randn(7, 16, dtype=DTYPE)
    mean_pattern = memory.patterns.detach().numpy().mean(axis=0)
    with torch.no_grad():
        for attention in ("per_head", "fused"):
            retrieved = memory.retrieve(queries, attention=attention).numpy()
            np.testing.assert_allclose(retrieved, np.tile(mean_pattern, (7, 1)), atol=1e-12)
        memory.attention = "folded"
        expected = mean_pattern @ memory.output_map.weight.detach().numpy().T
        np.testing.assert_allclose(memory(queries).numpy(), np.tile(expected, (7, 1)), atol=1e-12)


def test_large_beta_returns_nearest_stored_pattern():
    rng = np.random.default_rng(4)
    patterns = rng.normal(size=(16, 32))
    patterns /= np.linalg.norm(patterns, axis=1, keepdims=True)
    memory = HopfieldMemory(32, hopfield_size=16, heads=1, beta=1000.0, beta_mode="fixed").to(DTYPE)
    with torch.no_grad():
        memory.patterns.copy_(torch.from_numpy(patterns))
        memory.query_map.weight.copy_(torch.eye(32, dtype=DTYPE))
        memory.output_map.weight.copy_(torch.eye(32, dtype=DTYPE))
    queries = patterns[rng.integers(0, 16, size=20)] + 0.15 * rng.normal(size=(20, 32))
    nearest = patterns[np.argmin(((queries[:, None, :] - patterns[None]) ** 2).sum(-1), axis=1)]
    with torch.no_grad():
        for attention in ("folded", "per_head", "fused"):
            memory.attention = attention
            np.testing.assert_allclose(memory(torch.from_numpy(queries)).numpy(), nearest, atol=1e-8)


def _lipschitz_estimate(memory: HopfieldMemory, queries: torch.Tensor, generator: torch.Generator) -> float:
    """max ‖r(q) − r(q')‖ / ‖q − q'‖ over nearby and far-apart pairs (finite differences)."""
    ratios = []
    with torch.no_grad():
        for step in (1e-6, 1e-2, 1.0):
            direction = torch.randn(queries.shape, generator=generator, dtype=DTYPE)
            others = queries + step * direction
            change = memory.retrieve(others) - memory.retrieve(queries)
            ratios.append((change.norm(dim=1) / (others - queries).norm(dim=1)).max())
    return float(torch.stack(ratios).max())


@pytest.mark.parametrize("heads", [1, 4])
def test_retrieval_is_a_contraction_for_small_beta(heads):
    generator = torch.Generator().manual_seed(heads)
    memory = HopfieldMemory(32, hopfield_size=16, heads=heads, beta=0.1, beta_mode="fixed").to(DTYPE)
    with torch.no_grad():
        patterns = torch.randn(16, 32, generator=generator, dtype=DTYPE)
        memory.patterns.copy_(patterns / patterns.norm(dim=1, keepdim=True))
    queries = torch.randn(400, 32, generator=generator, dtype=DTYPE)
    assert _lipschitz_estimate(memory, queries, generator) < 1.0

    # the estimate is able to see an expansion: between two patterns at large β it exceeds 1
    memory.beta_fixed.fill_(50.0)
    midpoints = (memory.patterns[:8] + memory.patterns[8:]).detach() / 2
    assert _lipschitz_estimate(memory, midpoints, generator) > 1.0


# --- coupling ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("attention", ["folded", "per_head"])
def test_coupling_gradient_splits_into_alpha_and_delta_parts(attention):
    """MODEL.md §3: z = α x + δ r(x) ⇒ ∂L/∂x = α ∂L/∂z + δ (∂r/∂x)ᵀ ∂L/∂z."""
    torch.manual_seed(2)
    network = model.build_network("ltc_mhn", n_features=3, hidden_size=16, alpha=0.8, delta=1.3, attention=attention)
    network = network.to(DTYPE)
    x = torch.randn(5, 16, dtype=DTYPE, requires_grad=True)

    def loss_of(z: torch.Tensor) -> torch.Tensor:
        return network.head(z).pow(2).sum() + z.sin().sum()

    z = network.couple(x)
    loss = loss_of(z)
    grad_x, grad_alpha_raw, grad_delta_raw = torch.autograd.grad(
        loss, [x, network.coupling.alpha_raw, network.coupling.delta_raw]
    )

    z_leaf = z.detach().requires_grad_(True)
    (grad_z,) = torch.autograd.grad(loss_of(z_leaf), z_leaf)  # ∂L/∂z
    memory = network.memory
    retrieved = memory.output_map(memory.retrieve(memory.query(x), attention="per_head"))  # r(x)
    (memory_part,) = torch.autograd.grad(retrieved, x, grad_z)  # (∂r/∂x)ᵀ ∂L/∂z
    alpha, delta = network.coupling.alpha.detach(), network.coupling.delta.detach()
    assert float(alpha) == pytest.approx(0.8) and float(delta) == pytest.approx(1.3)
    assert_close(grad_x, alpha * grad_z + delta * memory_part)
    # ∂L/∂α = Σ ∂L/∂z ⊙ x and ∂L/∂δ = Σ ∂L/∂z ⊙ r, times softplus' = sigmoid for the raw parameters
    assert_close(
        grad_alpha_raw, torch.sigmoid(network.coupling.alpha_raw) * (grad_z * x).sum()
    )
    assert_close(
        grad_delta_raw, torch.sigmoid(network.coupling.delta_raw) * (grad_z * retrieved).sum()
    )


def test_coupling_keeps_alpha_and_delta_non_negative():
    coupling = model.AdditiveCoupling(alpha=0.25, delta=0.01)
    assert float(coupling.alpha.detach()) == pytest.approx(0.25) and float(coupling.delta.detach()) == pytest.approx(0.01)
    with torch.no_grad():
        coupling.alpha_raw.fill_(-50.0)
        coupling.delta_raw.fill_(-50.0)
    assert float(coupling.alpha.detach()) >= 0 and float(coupling.delta.detach()) >= 0


def test_feedback_off_applies_memory_once_to_final_state():
    torch.manual_seed(8)
    network = model.build_network("ltc_mhn", n_features=4, hidden_size=8, heads=2, feedback=False).to(DTYPE)
    u = torch.randn(3, 4, dtype=DTYPE)
    with torch.no_grad():
        x_final = network.cell.integrate(u, network.unfolds, network.step_size)
        expected = network.coupling(x_final, network.memory(x_final))
        assert_close(network.encode(u), expected)


def test_feedback_on_couples_after_every_step():
    torch.manual_seed(9)
    network = model.build_network("fixed_beta", n_features=4, hidden_size=8, heads=2).to(DTYPE)
    u = torch.randn(3, 4, dtype=DTYPE)
    cell, x = network.cell, torch.zeros(3, 8, dtype=DTYPE)
    with torch.no_grad():
        for _ in range(network.unfolds):
            x = cell.rk4_step(x, cell.input_drive(u), 1 / cell.tau, network.step_size)
            x = network.coupling.alpha * x + network.coupling.delta * network.memory.output_map(
                network.memory.retrieve(network.memory.query(x))
            )
        assert_close(network.encode(u), x)
        assert_close(network(u), network.head(x).squeeze(-1))


# --- variants, sizes and argument checks ------------------------------------------------------------


@pytest.mark.parametrize(
    "n_features, hidden_size, hopfield_size",
    [(1, 32, 4), (8, 64, 16), (8, 128, 64), (50, 32, 64), (300, 64, 8), (13, 128, 4)],
)
def test_matched_ltc_parameter_count_within_five_percent(n_features, hidden_size, hopfield_size):
    settings = dict(hidden_size=hidden_size, hopfield_size=hopfield_size, heads=4)
    full = model.build_network("ltc_mhn", n_features, **settings)
    matched = model.build_network("matched_ltc", n_features, **settings)
    plain = model.build_network("ltc", n_features, **settings)
    full_count = sum(p.numel() for p in full.parameters())
    matched_count = sum(p.numel() for p in matched.parameters())
    # the closed-form counts agree with the modules
    assert model.ltc_mhn_parameter_count(n_features, hidden_size, hopfield_size) == full_count
    assert model.ltc_parameter_count(n_features, hidden_size) == sum(p.numel() for p in plain.parameters())
    assert abs(matched_count - full_count) <= 0.05 * full_count
    assert matched.hidden_size == model.matched_hidden_size(n_features, hidden_size, hopfield_size) > hidden_size
    assert matched.memory is None
    assert f"parameters={matched_count}" in repr(matched) and f"ltc_mhn_parameters={full_count}" in repr(matched)


def test_variants_have_the_documented_structure():
    assert model.VARIANTS == ("ltc_mhn", "ltc", "zero_beta", "fixed_beta", "matched_ltc")
    networks = {name: model.build_network(name, 5, beta=0.4) for name in model.VARIANTS}
    assert networks["ltc"].memory is None and networks["ltc"].hidden_size == 64
    assert networks["ltc_mhn"].memory.beta_mode == "learnable"
    assert networks["ltc_mhn"].memory.beta_raw.requires_grad
    assert float(networks["ltc_mhn"].memory.beta.detach()) == pytest.approx(0.4)
    assert networks["fixed_beta"].memory.beta_mode == "fixed" and float(networks["fixed_beta"].memory.beta) == pytest.approx(0.4)
    assert networks["zero_beta"].memory.beta_mode == "zero" and float(networks["zero_beta"].memory.beta) == 0.0
    head = networks["ltc_mhn"].head
    assert [type(layer) for layer in head] == [torch.nn.Linear, torch.nn.ReLU, torch.nn.Linear]
    assert (head[0].in_features, head[0].out_features, head[2].out_features) == (64, 64, 1)
    for network in networks.values():
        assert network(torch.randn(3, 5)).shape == (3,)


def test_build_network_checks_arguments():
    with pytest.raises(ValueError, match="heads"):
        model.build_network("ltc_mhn", 4, hidden_size=30, heads=4)
    with pytest.raises(ValueError, match="variant"):
        model.build_network("transformer", 4)
    with pytest.raises(ValueError, match="hopfield_sizes"):
        model.build_network("ltc", 4, hopfield_sizes=8)
    with pytest.raises(ValueError, match="beta"):
        model.build_network("ltc_mhn", 4, beta=0.0)  # learnable β needs β0 > 0
    with pytest.raises(ValueError, match="unfolds"):
        model.build_network("ltc", 4, unfolds=0)
    model.build_network("ltc", 4, hidden_size=30, heads=4)  # no memory: heads does not matter
    assert float(model.build_network("fixed_beta", 4, beta=0.0).memory.beta) == 0.0
