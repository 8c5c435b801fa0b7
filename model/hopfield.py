"""Multi-head modern Hopfield memory (MODEL.md Eq. 3) with learnable, fixed or zero β."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ._util import check_choice, check_int, check_positive, inverse_softplus

BETA_MODES = ("learnable", "fixed", "zero")
ATTENTION_MODES = ("auto", "folded", "per_head", "fused")


class HopfieldMemory(nn.Module):
    """Retrieve from ``N`` learned patterns Ξ ∈ R^{N×M} split into ``H`` heads.

        q = W_q x ∈ R^M
        r_h = Σ_i softmax_i(β · q_h·ξ_{i,h}) ξ_{i,h}     for every head h                    (3)
        r = W_o [r_1; …; r_H] ∈ R^n

    ``beta_mode``: ``"learnable"`` (β = softplus(β_raw), initialised at β0), ``"fixed"`` (β0 held
    constant) or ``"zero"`` (β ≡ 0: uniform average of the patterns).

    ``attention`` chooses how :meth:`forward` evaluates the same formula:

    * ``"per_head"``: q = W_q x, then per-head logits and weighted sums as batched matrix products;
    * ``"fused"``: the same with ``torch.nn.functional.scaled_dot_product_attention`` (all heads in
      one call; β multiplies q so that it stays a differentiable tensor);
    * ``"folded"``: W_q and β folded into the keys and W_o into the values once per forward pass
      (:meth:`fold`), so a retrieval is two matrix products and a softmax; it costs n·H·N
      multiply-adds per row against M·(n + N) for ``"per_head"``;
    * ``"auto"``: ``"folded"`` while n·H·N ≤ 2·M·(n + N), else ``"per_head"`` (it runs fewer,
      larger kernels; on CPU both measured faster than ``"fused"`` at these sizes).
    """

    def __init__(
        self,
        hidden_size: int,
        hopfield_size: int = 16,
        heads: int = 4,
        beta: float = 0.25,
        beta_mode: str = "learnable",
        pattern_size: int | None = None,
        attention: str = "auto",
    ) -> None:
        super().__init__()
        self.hidden_size = check_int("hidden_size", hidden_size)
        self.hopfield_size = check_int("hopfield_size", hopfield_size)
        self.pattern_size = check_int("pattern_size", hidden_size if pattern_size is None else pattern_size)
        self.heads = check_int("heads", heads)
        if self.pattern_size % self.heads:
            raise ValueError(
                f"heads must divide the pattern size M = {self.pattern_size} "
                f"(M = hidden_size by default); got heads={heads!r}"
            )
        self.beta_mode = check_choice("beta_mode", beta_mode, BETA_MODES)
        self.attention = check_choice("attention", attention, ATTENTION_MODES)
        self.beta0 = check_positive("beta", beta, allow_zero=beta_mode != "learnable")

        self.query_map = nn.Linear(self.hidden_size, self.pattern_size, bias=False)  # W_q
        self.patterns = nn.Parameter(torch.randn(self.hopfield_size, self.pattern_size))  # Ξ
        self.output_map = nn.Linear(self.pattern_size, self.hidden_size, bias=False)  # W_o
        if beta_mode == "learnable":
            self.beta_raw = nn.Parameter(torch.tensor(inverse_softplus(self.beta0)))
        else:
            fixed = 0.0 if beta_mode == "zero" else self.beta0
            self.register_buffer("beta_fixed", torch.tensor(fixed))

    @property
    def head_size(self) -> int:
        """Width of one head, M / H."""
        return self.pattern_size // self.heads

    @property
    def beta(self) -> torch.Tensor:
        """Current inverse temperature β (a scalar tensor)."""
        if self.beta_mode == "learnable":
            return F.softplus(self.beta_raw)
        return self.beta_fixed

    def query(self, x: torch.Tensor) -> torch.Tensor:
        """q = W_q x."""
        return self.query_map(x)

    def resolved_attention(self) -> str:
        """The kernel :meth:`forward` uses (``"auto"`` resolved)."""
        if self.attention != "auto":
            return self.attention
        fold_cost = self.heads * self.hopfield_size * self.hidden_size  # n · H·N per row
        head_cost = self.pattern_size * (self.hidden_size + self.hopfield_size)  # M · (n + N) per row
        # the folded form runs fewer, larger kernels: on CPU it was faster up to about twice the work
        return "folded" if fold_cost <= 2 * head_cost else "per_head"

    def retrieve(self, query: torch.Tensor, attention: str = "per_head") -> torch.Tensor:
        """[r_1; …; r_H] for a batch of queries q (batch × M), before the output projection.

        ``attention``: ``"per_head"`` (explicit softmax of batched products) or ``"fused"``
        (``scaled_dot_product_attention``).
        """
        check_choice("attention", attention, ("per_head", "fused"))
        batch = query.shape[0]
        heads, width = self.heads, self.head_size
        queries = query.reshape(batch, heads, width).transpose(0, 1)  # (H, B, M/H): q_h
        keys = self.patterns.reshape(self.hopfield_size, heads, width).transpose(0, 1)  # (H, N, M/H): ξ_{i,h}
        if attention == "fused":
            # `scale` must be a Python number: scaling q by the β tensor instead keeps β
            # differentiable (learnable mode), exact in any dtype, and needs no device sync
            retrieved = F.scaled_dot_product_attention(queries * self.beta, keys, keys, scale=1.0)
        else:
            logits = torch.matmul(queries, keys.transpose(1, 2)) * self.beta  # β q_h·ξ_{i,h}: (H, B, N)
            retrieved = torch.matmul(torch.softmax(logits, dim=-1), keys)  # Σ_i softmax_i(…) ξ_{i,h}
        return retrieved.transpose(0, 1).reshape(batch, self.pattern_size)

    def fold(self, output_scale: torch.Tensor | float = 1.0) -> "FoldedHopfield":
        """Precompute W_q, β, Ξ and W_o (and ``output_scale``) into two matrices; see FoldedHopfield."""
        n, heads, width, size = self.hidden_size, self.heads, self.head_size, self.hopfield_size
        patterns = self.patterns.reshape(size, heads, width).transpose(0, 1)  # (H, N, M/H): ξ_{i,h}
        query_rows = self.query_map.weight.reshape(heads, width, n)  # (H, M/H, n): rows of W_q for head h
        # keys[k, (h, i)] = β Σ_j (W_q)_{(h,j),k} ξ_{i,h,j}, so x @ keys = β q_h·ξ_{i,h}
        keys = torch.matmul(patterns, query_rows).permute(2, 0, 1).reshape(n, heads * size) * self.beta
        output_columns = self.output_map.weight.reshape(n, heads, width).permute(1, 2, 0)  # (H, M/H, n)
        # values[(h, i), :] = W_o[:, head h] ξ_{i,h}, so weights @ values = W_o [r_1; …; r_H]
        values = torch.matmul(patterns, output_columns).reshape(heads * size, n) * output_scale
        return FoldedHopfield(keys, values, heads, size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """r = W_o [r_1; …; r_H] with q = W_q x."""
        mode = self.resolved_attention()
        if mode == "folded":
            return self.fold()(x)
        return self.output_map(self.retrieve(self.query(x), attention=mode))

    def extra_repr(self) -> str:
        return (
            f"hopfield_size={self.hopfield_size}, pattern_size={self.pattern_size}, heads={self.heads}, "
            f"beta_mode={self.beta_mode!r}, beta0={self.beta0:g}, attention={self.attention!r}"
        )


class FoldedHopfield:
    """Eq. (3) with every per-forward-pass constant folded in: for a batch x (batch × n),

        weights = softmax over each head's N slots of (x @ keys)     (keys: n × H·N, holds W_q and β)
        r       = weights @ values                                    (values: H·N × n, holds Ξ, W_o)

    Built by :meth:`HopfieldMemory.fold` once per forward pass and applied at every solver step.
    """

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, heads: int, hopfield_size: int) -> None:
        self.keys, self.values = keys, values
        self.heads, self.hopfield_size = heads, hopfield_size

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """softmax_i(β q_h·ξ_{i,h}) for every head, flattened to batch × H·N."""
        logits = torch.mm(x, self.keys).view(-1, self.heads, self.hopfield_size)
        return torch.softmax(logits, dim=-1).view(-1, self.heads * self.hopfield_size)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.mm(self.weights(x), self.values)

    def add_to(self, base: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """base + r(x) in one fused multiply-add."""
        return torch.addmm(base, self.weights(x), self.values)


__all__ = ["ATTENTION_MODES", "BETA_MODES", "FoldedHopfield", "HopfieldMemory"]
