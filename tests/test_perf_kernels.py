"""The fused solver kernel (model.kernels) against the plain autograd loop and finite differences:
forward values and every gradient, for every variant, attention kernel and feedback setting. Every
test runs three times: with the C++ build of the kernel (model.native), products to BLAS and
through ATen, and with its Python version."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import model
from model import native
from model.hopfield import HopfieldMemory
from model.kernels import WORKSPACE, Workspace, fold_memory, liquid_integrate

DTYPE = torch.float64


@pytest.fixture(autouse=True, params=["native", "native-aten", "python"])
def solver_build(request, monkeypatch):
    """Which build of the fused kernel the test runs: C++ with its products straight into BLAS, C++
    with them through ATen (what a torch without exported BLAS symbols runs), or Python. The C++
    one must build here (a compiler is part of the test machine); LIQUID_MEMORY_NATIVE=0 in the
    environment opts a machine without one out."""
    if request.param == "python":
        monkeypatch.setenv(native.NATIVE_ENVIRONMENT_VARIABLE, "0")
        assert not native.available()
        yield request.param
        return
    if not native.enabled():
        pytest.skip(f"{native.NATIVE_ENVIRONMENT_VARIABLE}=0 is set: the C++ build is switched off")
    assert native.available(), "the C++ kernel did not build (see the RuntimeWarning)"
    extension = native.load()
    extension.set_blas(request.param == "native")
    if request.param == "native-aten":
        assert not extension.blas_in_use()
    try:
        yield request.param
    finally:
        extension.set_blas(True)


@pytest.fixture(autouse=True)
def one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _network(variant: str, dtype=DTYPE, seed: int = 0, **settings) -> model.LiquidHopfieldNetwork:
    torch.manual_seed(seed)
    network = model.build_network(variant, 6, hidden_size=16, heads=4, hopfield_size=8, **settings).to(dtype)
    with torch.no_grad():  # weights large enough that the gates and the softmax are far from linear
        network.cell.recurrent_map.weight.mul_(3.0)
        network.cell.input_map.weight.mul_(2.0)
    return network


def _outputs_and_gradients(network, u: torch.Tensor, kernel: str):
    network.kernel = kernel
    inputs = u.clone().requires_grad_(True)
    outputs = network(inputs)
    loss = (outputs.sin() * torch.linspace(0.5, 1.5, len(outputs), dtype=outputs.dtype)).sum()
    parameters = [p for p in network.parameters() if p.requires_grad]
    gradients = torch.autograd.grad(loss, [inputs, *parameters])
    return outputs.detach(), gradients


def assert_close(actual, expected, rtol, atol):
    np.testing.assert_allclose(actual.detach().numpy(), expected.detach().numpy(), rtol=rtol, atol=atol)


@pytest.mark.parametrize("variant", model.VARIANTS)
@pytest.mark.parametrize("attention, feedback", [("folded", True), ("per_head", True), ("fused", True), ("folded", False)])
def test_fused_kernel_equals_reference_loop_in_float64(variant, attention, feedback):
    network = _network(variant, attention=attention, feedback=feedback, unfolds=3)
    u = torch.randn(11, 6, dtype=DTYPE, generator=torch.Generator().manual_seed(1))
    reference, reference_gradients = _outputs_and_gradients(network, u, "reference")
    fused, fused_gradients = _outputs_and_gradients(network, u, "fused")
    assert_close(fused, reference, rtol=1e-11, atol=1e-13)
    assert len(fused_gradients) == len(reference_gradients)
    for got, want in zip(fused_gradients, reference_gradients):
        assert got.shape == want.shape
        assert_close(got, want, rtol=1e-9, atol=1e-12)
    with torch.inference_mode():  # the no-graph path reuses four stage buffers
        network.kernel = "fused"
        assert_close(network(u), reference, rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("variant", ["ltc_mhn", "ltc", "matched_ltc"])
def test_fused_kernel_matches_in_float32_at_default_size(variant):
    torch.manual_seed(3)
    network = model.build_network(variant, 20)  # defaults: n = 64, T = 6, N = 16, H = 4
    u = torch.randn(256, 20)
    reference, reference_gradients = _outputs_and_gradients(network, u, "reference")
    fused, fused_gradients = _outputs_and_gradients(network, u, "fused")
    assert_close(fused, reference, rtol=1e-4, atol=1e-5)
    for got, want in zip(fused_gradients, reference_gradients):
        scale = float(want.abs().max()) or 1.0
        assert_close(got / scale, want / scale, rtol=0, atol=2e-4)


@pytest.mark.parametrize("memory", [False, True])
def test_liquid_integrate_gradients_match_finite_differences(memory):
    generator = torch.Generator().manual_seed(5)

    def tensor(*shape, scale=1.0):
        return (scale * torch.randn(*shape, generator=generator, dtype=DTYPE)).requires_grad_(True)

    batch, width, heads, slots = 3, 4, 2, 3
    arguments = dict(
        drive=tensor(batch, width),
        weight=tensor(width, width, scale=2.0),
        reversal=tensor(width),
        inverse_tau=(0.5 + torch.rand(width, generator=generator, dtype=DTYPE)).requires_grad_(True),
        initial=tensor(batch, width),
    )
    if memory:
        arguments.update(
            keys=tensor(width, heads * slots), values=tensor(heads * slots, width), alpha=tensor(())
        )
    names = list(arguments)

    def function(*values):
        return liquid_integrate(
            **dict(zip(names, values)), steps=2, step_size=0.3, heads=heads if memory else 1
        )

    assert torch.autograd.gradcheck(function, tuple(arguments.values()), eps=1e-6, atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("heads", [1, 2, 4])
def test_fold_memory_equals_hopfield_fold_and_finite_differences(heads):
    torch.manual_seed(heads)
    memory = HopfieldMemory(8, hopfield_size=3, heads=heads, beta=0.7).to(DTYPE)
    delta = torch.tensor(0.4, dtype=DTYPE, requires_grad=True)
    reference = memory.fold(output_scale=delta)
    keys, values = fold_memory(
        memory.patterns, memory.query_map.weight, memory.output_map.weight, memory.beta, delta, heads
    )
    assert keys.shape == reference.keys.shape and values.shape == reference.values.shape
    assert_close(keys, reference.keys, rtol=1e-12, atol=1e-14)
    assert_close(values, reference.values, rtol=1e-12, atol=1e-14)
    inputs = (
        memory.patterns.detach().clone().requires_grad_(True),
        memory.query_map.weight.detach().clone().requires_grad_(True),
        memory.output_map.weight.detach().clone().requires_grad_(True),
        torch.tensor(0.7, dtype=DTYPE, requires_grad=True),
        delta,
    )
    assert torch.autograd.gradcheck(lambda *args: fold_memory(*args, heads), inputs, eps=1e-6, atol=1e-8)


def test_graphs_kept_alive_do_not_share_buffers():
    """Two forward passes before either backward pass, and a retained graph run twice."""
    network = _network("ltc_mhn", unfolds=4)
    u1 = torch.randn(9, 6, dtype=DTYPE)
    u2 = torch.randn(9, 6, dtype=DTYPE)
    parameters = list(network.parameters())

    network.kernel = "reference"
    expected = [torch.autograd.grad(network(u).square().sum(), parameters) for u in (u1, u2)]

    network.kernel = "fused"
    losses = [network(u).square().sum() for u in (u1, u2)]
    got_second = torch.autograd.grad(losses[1], parameters, retain_graph=True)
    network(torch.randn(9, 6, dtype=DTYPE)).sum().backward()  # another pass in between
    got_first = torch.autograd.grad(losses[0], parameters)
    got_second_again = torch.autograd.grad(losses[1], parameters)
    for got, want in [(got_first, expected[0]), (got_second, expected[1]), (got_second_again, expected[1])]:
        for a, b in zip(got, want):
            assert_close(a, b, rtol=1e-10, atol=1e-13)


def test_workspace_hands_out_each_buffer_once():
    workspace = Workspace(per_shape=2)
    like = torch.zeros(1)
    first = workspace.take(like, 3, 4)
    workspace.give(first, first, first[0])  # duplicates and views are ignored
    assert workspace.take(like, 3, 4) is first
    assert workspace.take(like, 3, 4) is not first
    workspace.give(*(torch.empty(3, 4) for _ in range(5)))
    assert len(workspace._free[((3, 4), torch.float32, False)]) == 2
    with torch.inference_mode():
        inference_buffer = workspace.take(like, 3, 4)
    workspace.give(inference_buffer)
    assert workspace.take(like, 3, 4) is not inference_buffer  # kept apart from normal tensors
    workspace.clear()
    assert not workspace._free
    assert isinstance(WORKSPACE, Workspace)


def test_kernel_setting_is_checked():
    with pytest.raises(ValueError, match="kernel"):
        model.build_network("ltc", 3, kernel="triton")
    assert model.build_network("ltc", 3).kernel == "fused"
    assert model.build_network("ltc", 3, kernel="reference").kernel == "reference"
    with pytest.raises(ValueError, match="keys, values and alpha"):
        liquid_integrate(torch.zeros(2, 3), torch.zeros(3, 3), torch.zeros(3), torch.ones(3), 1, 0.1, keys=torch.zeros(3, 4))


def test_native_build_failure_falls_back_to_the_python_kernel(solver_build, tmp_path, monkeypatch):
    """A source that does not compile: one warning naming the switch, then the Python kernel."""
    if solver_build != "native":
        return  # the switch is off (nothing is built), or a variant of the same build
    broken = tmp_path / "liquid.cpp"
    broken.write_text("this is not C++;\n")
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(native, "SOURCE", broken)
    native._build.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match=native.NATIVE_ENVIRONMENT_VARIABLE):
            assert native.load() is None
        assert not native.available()
        network = _network("ltc_mhn")
        u = torch.randn(5, 6, dtype=DTYPE)
        fused = network(u)
        network.kernel = "reference"
        assert_close(fused, network(u), rtol=1e-11, atol=1e-13)
    finally:
        native._build.cache_clear()  # the next test builds (loads from the cache) the real source
