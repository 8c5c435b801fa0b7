"""The liquid encoder's T RK4 steps (MODEL.md Eq. 1), optionally with the folded Hopfield coupling
(Eqs. 3-4) after every step, as one autograd node with a hand-written backward pass.

Autograd through the plain loop records about 25 small operations per solver stage and replays
them one by one; at a batch of 256 rows the time goes to dispatching them, not to arithmetic.
Here the forward pass writes every stage into pooled buffers with in-place and ``out=``
operations (seven elementwise operations and one matrix product per stage), and the backward
pass walks the stages in reverse with eight elementwise operations and one matrix product per
stage, then forms the weight gradients as single large products over all stages at once. Results equal the plain loop's to rounding (tests compare both, forward and
gradients). Nothing here synchronises with the device, so it runs unchanged on CUDA.

On CPU (float32 and float64) the same algorithm runs as C++ (:mod:`model.native`, ``liquid.cpp``):
one pass per stage over each row computes the gate's consequences, the slope and the next stage
input in registers instead of seven tensor operations, the per-head softmax runs as two short
loops around ATen's exp, and the stage products go straight into BLAS. It is built on first use;
without a compiler, or with ``LIQUID_MEMORY_NATIVE=0``, the Python version below runs instead
(same numbers; the tests run both).

Notation (per stage with input x_s): s = x_s W_xᵀ + d (d = W_u u + b, the input drive),
g = sigmoid(s), k = g ⊙ (A − x_s) − x_s / τ. RK4 with step h:
x_{1,2} = x + h/2 k_{0,1}, x_3 = x + h k_2, x' = x + h/6 (k_0 + 2 k_1 + 2 k_2 + k_3).
Folded coupling (HopfieldMemory.fold): P = softmax per head (x' K), z = α x' + P V.
"""

from __future__ import annotations

import threading
import weakref

import torch
from torch.autograd.function import once_differentiable

from . import native

# RK4 stage offsets (stage s+1 starts at x + c_s k_s) and weights of k_s in the step
_STAGE_OFFSETS = (0.5, 0.5, 1.0)
_STAGE_WEIGHTS = (1.0 / 6.0, 1.0 / 3.0, 1.0 / 3.0, 1.0 / 6.0)


class Workspace:
    """Free CPU buffers by (shape, dtype, inference or not), handed out again instead of fresh allocations.

    The stage buffers of one forward pass are megabytes; freshly allocated per batch they come
    from the operating system each time and every page faults on first touch, which cost more
    than the arithmetic on this kind of machine. A buffer is given back only when nothing can
    read it any more: the forward pass's buffers when its autograd node is freed (after the
    backward pass, or when the graph is dropped), the backward pass's scratch when it returns.
    CUDA tensors bypass the pool (PyTorch's caching allocator already reuses device memory).
    """

    def __init__(self, per_shape: int = 8) -> None:
        self.per_shape = per_shape
        self._free: dict[tuple, list[torch.Tensor]] = {}
        self._lock = threading.Lock()  # two models trained in threads of one process share the pool

    def take(self, like: torch.Tensor, *shape: int) -> torch.Tensor:
        """An uninitialised tensor of ``shape`` with ``like``'s dtype and device."""
        if like.device.type != "cpu":
            return like.new_empty(shape)
        # tensors made under inference_mode may only be written there, so they are pooled apart
        key = (shape, like.dtype, torch.is_inference_mode_enabled())
        with self._lock:
            free = self._free.get(key)
            if free:
                return free.pop()
        return like.new_empty(shape)

    def give(self, *tensors: torch.Tensor | None) -> None:
        """Return buffers for reuse (None, views and CUDA tensors are ignored; at most
        ``per_shape`` are kept per shape)."""
        with self._lock:
            for tensor in tensors:
                if tensor is None or tensor.device.type != "cpu" or tensor._base is not None:
                    continue
                free = self._free.setdefault((tuple(tensor.shape), tensor.dtype, tensor.is_inference()), [])
                if len(free) < self.per_shape and not any(other is tensor for other in free):
                    free.append(tensor)

    def clear(self) -> None:
        """Drop every pooled buffer (frees the memory)."""
        with self._lock:
            self._free.clear()


WORKSPACE = Workspace()


def _integrate(
    initial: torch.Tensor | None,
    drive: torch.Tensor,
    weight: torch.Tensor,
    reversal: torch.Tensor,
    inverse_tau: torch.Tensor,
    keys: torch.Tensor | None,
    values: torch.Tensor | None,
    alpha: torch.Tensor | None,
    steps: int,
    step_size: float,
    heads: int,
    save: bool,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The forward pass. With ``save`` every stage is kept for the backward pass and those
    buffers are returned; without, four stage buffers are reused (inference) and none returned."""
    batch, width = drive.shape
    memory = keys is not None
    h = step_size
    take = WORKSPACE.take
    stage_slots = 4 * steps if save else 4
    stage_inputs = take(drive, stage_slots, batch, width)  # x_s
    gates = take(drive, stage_slots if save else 1, batch, width)  # g_s
    sensitivities = take(drive, stage_slots, batch, width) if save else None  # (A − x_s) ⊙ g_s ⊙ (1 − g_s)
    stage_views = stage_inputs.unbind(0)
    gate_views = gates.unbind(0)
    sensitivity_views = sensitivities.unbind(0) if save else None
    field = take(drive, batch, width)  # k_s (scratch)
    pre_coupling = attention = logits = None
    if memory:
        slots_per_head = keys.shape[1] // heads
        pre_coupling = take(drive, steps if save else 1, batch, width)  # x' before coupling
        attention = take(drive, steps if save else 1, batch, keys.shape[1])  # P
        logits = take(drive, batch, keys.shape[1])  # x' K (scratch: softmax never runs in place)
        grouped_logits = logits.view(batch, heads, slots_per_head)
    spare = None if save else (take(drive, batch, width), take(drive, batch, width))  # step outputs, alternating
    weight_t = weight.t()

    x = stage_views[0]
    if initial is None:
        x.zero_()  # x(0) = 0
    else:
        x.copy_(initial)
    for step in range(steps):
        base = 4 * step if save else 0
        if step == steps - 1:
            following = drive.new_empty(batch, width)  # the output: never pooled
        else:
            following = stage_views[base + 4] if save else spare[step % 2]
        target = pre_coupling[step if save else 0] if memory else following  # x'
        for stage in range(4):
            index = base + stage
            x_s = x if stage == 0 else stage_views[index]
            g = gate_views[index if save else 0]
            torch.addmm(drive, x_s, weight_t, out=g)
            g.sigmoid_()  # f(x, u)
            torch.sub(reversal, x_s, out=field).mul_(g)  # (A − x_s) ⊙ g
            if save:
                torch.addcmul(field, field, g, value=-1.0, out=sensitivity_views[index])  # ⊙ (1 − g)
            field.addcmul_(inverse_tau, x_s, value=-1.0)  # k_s = g ⊙ (A − x_s) − x_s / τ
            if stage < 3:
                torch.add(x, field, alpha=_STAGE_OFFSETS[stage] * h, out=stage_views[index + 1])
            if stage == 0:
                torch.add(x, field, alpha=_STAGE_WEIGHTS[0] * h, out=target)
            else:
                target.add_(field, alpha=_STAGE_WEIGHTS[stage] * h)
        if memory:  # z = α x' + softmax_heads(x' K) V
            weights = attention[step if save else 0]
            torch.mm(target, keys, out=logits)
            torch.ops.aten._softmax.out(grouped_logits, -1, False, out=weights.view(batch, heads, slots_per_head))
            torch.mul(target, alpha, out=following)
            torch.addmm(following, weights, values, out=following)  # (addmm_ is not seen by FLOP counters)
        x = following

    WORKSPACE.give(field, logits)
    saved: list[torch.Tensor] = []
    if save:
        saved = [stage_inputs, gates, sensitivities, weight, reversal, inverse_tau]
        if memory:
            saved += [pre_coupling, attention, keys, values, alpha]
    else:
        WORKSPACE.give(stage_inputs, gates, pre_coupling, attention, *spare)
    return x, saved


class LiquidIntegration(torch.autograd.Function):
    """``steps`` RK4 steps of the LTC cell from ``initial`` (zeros when None); with ``keys`` given,
    x ← α x + softmax_heads(x K) V after every step (the folded memory of Eq. 3 with feedback)."""

    @staticmethod
    def forward(ctx, initial, drive, weight, reversal, inverse_tau, keys, values, alpha, steps, step_size, heads):
        output, saved = _integrate(
            initial, drive, weight, reversal, inverse_tau, keys, values, alpha, steps, step_size, heads, save=True
        )
        ctx.save_for_backward(*saved)
        # the stage buffers go back to the pool once this node (and so every reader) is freed
        weakref.finalize(ctx, WORKSPACE.give, *saved[:3], *saved[6:8])
        ctx.steps, ctx.step_size, ctx.memory, ctx.heads = steps, step_size, keys is not None, heads
        ctx.has_initial = initial is not None
        return output

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: torch.Tensor):
        steps, h, memory, heads = ctx.steps, ctx.step_size, ctx.memory, ctx.heads
        stage_inputs, gates, sensitivities, weight, reversal, inverse_tau, *rest = ctx.saved_tensors
        _, batch, width = stage_inputs.shape
        needs = ctx.needs_input_grad
        take = WORKSPACE.take
        stage_views, gate_views, sensitivity_views = stage_inputs.unbind(0), gates.unbind(0), sensitivities.unbind(0)
        grad_pre = take(stage_inputs, *stage_inputs.shape)  # ∂L/∂s_s (pre-activation of the gate)
        grad_pre_views = grad_pre.unbind(0)
        scratch = [take(grad_output, batch, width) for _ in range(11)]
        last_k, third, grad_k_scratch, gate_term, *grad_stage = scratch[:6]  # grad_stage: ∂L/∂x_s, ping-pong
        reversal_sum, inverse_tau_sum, grad_drive_sum = scratch[6:9]  # Σ_s of ∂L/∂k ⊙ g, ∂L/∂k ⊙ x, ∂L/∂s
        step_grads = scratch[9:11]  # ∂L/∂x of a step, ping-pong
        for buffer in (reversal_sum, inverse_tau_sum, grad_drive_sum):
            buffer.zero_()
        grad_coupled = grad_logits = grad_weights = None
        if memory:
            pre_coupling, attention, keys, values, alpha = rest
            slots_per_head = keys.shape[1] // heads
            grad_coupled = take(stage_inputs, steps, batch, width)  # ∂L/∂z per step
            grad_logits = take(attention, *attention.shape)  # ∂L/∂(x' K) per step
            grad_weights = take(attention, batch, keys.shape[1])  # ∂L/∂P (scratch)
            grouped_grad_weights = grad_weights.view(batch, heads, slots_per_head)
            grad_coupled[steps - 1].copy_(grad_output)
        grad_x = grad_output
        for step in reversed(range(steps)):
            if memory:  # back through z = α x' + P V, P = softmax_heads(x' K)
                grad_z = grad_coupled[step]
                weights = attention[step].view(batch, heads, slots_per_head)
                torch.mm(grad_z, values.t(), out=grad_weights)  # ∂L/∂P = ∂L/∂z Vᵀ
                torch.ops.aten._softmax_backward_data.out(  # ∂L/∂logits = P ⊙ (∂L/∂P − Σ_i P ∂L/∂P)
                    grouped_grad_weights, weights, -1, weights.dtype, grad_input=grad_logits[step].view_as(weights)
                )
                grad_x = torch.mul(grad_z, alpha, out=step_grads[step % 2])
                torch.addmm(grad_x, grad_logits[step], keys.t(), out=grad_x)  # α ∂L/∂z + ∂L/∂logits Kᵀ
            # back through x' = x + h/6 (k_0 + 2 k_1 + 2 k_2 + k_3)
            base = 4 * step
            if memory and step > 0:
                accumulated = grad_coupled[step - 1]  # ∂L/∂x of this step = ∂L/∂z of the step before
            else:
                accumulated = step_grads[(step + 1) % 2]
            torch.mul(grad_x, _STAGE_WEIGHTS[3] * h, out=last_k)
            torch.mul(grad_x, _STAGE_WEIGHTS[1] * h, out=third)
            grad_input = None
            for stage in (3, 2, 1, 0):
                index = base + stage
                if stage == 3:
                    grad_k = last_k
                else:  # k_s also moved the next stage's input by c_s h k_s
                    direct = third if stage > 0 else last_k
                    grad_k = torch.add(direct, grad_input, alpha=_STAGE_OFFSETS[stage] * h, out=grad_k_scratch)
                grad_s = torch.mul(grad_k, sensitivity_views[index], out=grad_pre_views[index])
                grad_drive_sum.add_(grad_s)
                torch.mul(gate_views[index], grad_k, out=gate_term)
                reversal_sum.add_(gate_term)
                inverse_tau_sum.addcmul_(grad_k, stage_views[index])
                gate_term.addcmul_(inverse_tau, grad_k)  # (g + 1/τ) ⊙ ∂L/∂k
                grad_input = torch.addmm(gate_term, grad_s, weight, beta=-1.0, out=grad_stage[stage % 2])
                if stage == 3:
                    torch.add(grad_x, grad_input, out=accumulated)
                else:
                    accumulated.add_(grad_input)
            grad_x = accumulated

        flat = (-1, width)
        grad_initial = grad_x.clone() if ctx.has_initial and needs[0] else None
        grad_drive = grad_drive_sum.clone() if needs[1] else None
        grad_weight = grad_pre.view(flat).t().mm(stage_inputs.view(flat)) if needs[2] else None
        grad_reversal = reversal_sum.sum(0)
        grad_inverse_tau = inverse_tau_sum.sum(0).neg_()
        grad_keys = grad_values = grad_alpha = None
        if memory:
            if needs[5]:
                grad_keys = pre_coupling.view(flat).t().mm(grad_logits.view(-1, keys.shape[1]))
            if needs[6]:
                grad_values = attention.view(-1, keys.shape[1]).t().mm(grad_coupled.view(flat))
            if needs[7]:
                grad_alpha = torch.dot(grad_coupled.view(-1), pre_coupling.view(-1)).reshape(alpha.shape)
        WORKSPACE.give(grad_pre, *scratch, grad_coupled, grad_logits, grad_weights)
        return (
            grad_initial,
            grad_drive,
            grad_weight,
            grad_reversal,
            grad_inverse_tau,
            grad_keys,
            grad_values,
            grad_alpha,
            None,
            None,
            None,
        )


class FoldedMemory(torch.autograd.Function):
    """Keys and values of the folded Hopfield memory (what :meth:`HopfieldMemory.fold` builds with
    some twenty autograd operations) as one node with a hand-written backward pass:

        keysᵀ[(h, i), k] = β Σ_j ξ_{i,h,j} (W_q)_{(h,j),k}      values[(h, i), :] = δ Σ_j ξ_{i,h,j} W_o[:, (h,j)]
    """

    @staticmethod
    def forward(ctx, patterns, query_weight, output_weight, beta, delta, heads):
        ctx.heads = heads
        ctx.native = _native_applies([patterns, query_weight, output_weight, beta, delta])
        if ctx.native:  # the same operations in C++
            keys_t, values, query_fold, output_fold = native.load().fold_forward(
                patterns, query_weight, output_weight, beta, delta, heads
            )
            ctx.save_for_backward(patterns, query_weight, output_weight, beta, delta, query_fold, output_fold)
            return keys_t, values
        size, pattern_size = patterns.shape
        width = query_weight.shape[1]
        head_size = pattern_size // heads
        slots = patterns.view(size, heads, head_size).transpose(0, 1)  # (H, N, M/H): ξ_{i,h}
        query_rows = query_weight.view(heads, head_size, width)  # (H, M/H, n)
        output_columns = output_weight.view(width, heads, head_size).permute(1, 2, 0)  # (H, M/H, n)
        query_fold = torch.bmm(slots, query_rows)  # (H, N, n)
        output_fold = torch.bmm(slots, output_columns)  # (H, N, n)
        keys_t = query_fold.view(heads * size, width) * beta
        values = output_fold.view(heads * size, width) * delta
        ctx.save_for_backward(patterns, query_weight, output_weight, beta, delta, query_fold, output_fold)
        ctx.heads = heads
        return keys_t, values

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_keys_t, grad_values):
        patterns, query_weight, output_weight, beta, delta, query_fold, output_fold = ctx.saved_tensors
        heads = ctx.heads
        if ctx.native:
            grads = native.load().fold_backward(grad_keys_t, grad_values, *ctx.saved_tensors, heads)
            return (*grads, None)
        size, pattern_size = patterns.shape
        width = query_weight.shape[1]
        head_size = pattern_size // heads
        if grad_keys_t is None:
            grad_keys_t = torch.zeros_like(query_fold).view(heads * size, width)
        if grad_values is None:
            grad_values = torch.zeros_like(output_fold).view(heads * size, width)
        slots = patterns.view(size, heads, head_size).transpose(0, 1)
        query_rows = query_weight.view(heads, head_size, width)
        output_columns = output_weight.view(width, heads, head_size).permute(1, 2, 0)
        grad_beta = torch.dot(grad_keys_t.reshape(-1), query_fold.reshape(-1)).reshape(beta.shape)
        grad_delta = torch.dot(grad_values.reshape(-1), output_fold.reshape(-1)).reshape(delta.shape)
        grad_query_fold = (grad_keys_t * beta).view(heads, size, width)
        grad_output_fold = (grad_values * delta).view(heads, size, width)
        grad_slots = torch.bmm(grad_query_fold, query_rows.transpose(1, 2))
        grad_slots.baddbmm_(grad_output_fold, output_columns.transpose(1, 2))
        slots_t = slots.transpose(1, 2)
        grad_query_weight = torch.bmm(slots_t, grad_query_fold).view(pattern_size, width)
        grad_output_weight = torch.bmm(slots_t, grad_output_fold).permute(2, 0, 1).reshape(width, pattern_size)
        grad_patterns = grad_slots.transpose(0, 1).reshape(size, pattern_size)
        return grad_patterns, grad_query_weight, grad_output_weight, grad_beta, grad_delta, None


def fold_memory(
    patterns: torch.Tensor,
    query_weight: torch.Tensor,
    output_weight: torch.Tensor,
    beta: torch.Tensor,
    delta: torch.Tensor,
    heads: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(keys, values) of :meth:`model.hopfield.HopfieldMemory.fold` with ``output_scale=delta``:
    ``keys`` (n × H·N, a transposed view) and ``values`` (H·N × n), through :class:`FoldedMemory`."""
    if patterns.shape[1] % heads:
        raise ValueError(f"heads must divide the pattern size {patterns.shape[1]}; got heads={heads}")
    keys_t, values = FoldedMemory.apply(patterns, query_weight, output_weight, beta, delta, int(heads))
    return keys_t.t(), values


class NativeLiquidIntegration(torch.autograd.Function):
    """:class:`LiquidIntegration` computed by the C++ build of the same kernel (:mod:`model.native`):
    the same arguments, the same numbers to rounding; CPU tensors of float32 or float64 only."""

    @staticmethod
    def forward(ctx, initial, drive, weight, reversal, inverse_tau, keys, values, alpha, steps, step_size, heads):
        output, *saved = native.load().integrate_forward(
            initial, drive.contiguous(), weight, reversal, inverse_tau, keys, values, alpha, steps, step_size, heads, True
        )
        memory = keys is not None
        stage_inputs, gates, sensitivities, *coupling = saved
        pre_coupling, attention = coupling if memory else (None, None)
        ctx.save_for_backward(stage_inputs, gates, sensitivities, weight, inverse_tau, pre_coupling, attention, keys, values, alpha)
        ctx.steps, ctx.step_size, ctx.heads, ctx.has_initial = steps, step_size, heads, initial is not None
        return output

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: torch.Tensor):
        needs = ctx.needs_input_grad
        grads = native.load().integrate_backward(
            grad_output, *ctx.saved_tensors, ctx.steps, ctx.step_size, ctx.heads,
            ctx.has_initial and needs[0], needs[2], needs[5], needs[6],
        )
        grad_initial, grad_drive, grad_weight, grad_reversal, grad_inverse_tau, grad_keys, grad_values, grad_alpha = grads
        return (
            grad_initial,
            grad_drive if needs[1] else None,
            grad_weight,
            grad_reversal if needs[3] else None,
            grad_inverse_tau if needs[4] else None,
            grad_keys,
            grad_values,
            grad_alpha if needs[7] else None,
            None,
            None,
            None,
        )


def _native_applies(tensors: list[torch.Tensor]) -> bool:
    """Whether the C++ kernel takes this call: CPU tensors of float32/float64 and a build of it."""
    return all(t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64) for t in tensors) and native.available()


def liquid_integrate(
    drive: torch.Tensor,
    weight: torch.Tensor,
    reversal: torch.Tensor,
    inverse_tau: torch.Tensor,
    steps: int,
    step_size: float,
    initial: torch.Tensor | None = None,
    keys: torch.Tensor | None = None,
    values: torch.Tensor | None = None,
    alpha: torch.Tensor | None = None,
    heads: int = 1,
) -> torch.Tensor:
    """State after ``steps`` fused RK4 steps (see :class:`LiquidIntegration`).

    ``keys`` (n × H·N), ``values`` (H·N × n) and ``alpha`` (a scalar tensor) come from
    :meth:`model.hopfield.HopfieldMemory.fold`; give all three for feedback coupling, or none.
    """
    if (keys is None) != (values is None) or (keys is None) != (alpha is None):
        raise ValueError("keys, values and alpha must be given together (or all left out)")
    if keys is not None and keys.shape[1] % heads:
        raise ValueError(f"heads must divide the number of key columns {keys.shape[1]}; got heads={heads}")
    arguments = (initial, drive, weight, reversal, inverse_tau, keys, values, alpha, int(steps), float(step_size), int(heads))
    tensors = [t for t in arguments if isinstance(t, torch.Tensor)]
    graph = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    if _native_applies(tensors):  # the C++ build on CPU
        if graph:
            return NativeLiquidIntegration.apply(*arguments)
        return native.load().integrate_forward(initial, drive.contiguous(), *arguments[2:], False)[0]
    if graph:
        return LiquidIntegration.apply(*arguments)
    return _integrate(*arguments, save=False)[0]  # no graph: no stage buffers kept


__all__ = ["FoldedMemory", "LiquidIntegration", "NativeLiquidIntegration", "Workspace", "WORKSPACE", "fold_memory", "liquid_integrate"]
