"""VAR's AdaLN transformer block (docs/method.md §4.1) plus text cross-attention, and the AdaLN head."""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.flex_attention import BlockMask, flex_attention
from torch.utils.checkpoint import checkpoint


@dataclass
class AttnLayout:
    """How one forward lays scales out for self-attention and the AdaLN condition.

    sizes: token counts per scale (full forward) or None (one scale at sampling time, with or without KV
    cache: plain attention over the given keys).
    first_key_scales: masks.first_key_scales of the mask (SDPA path, with `sizes`): one unmasked attention call
    per scale over the scales it may see, no mask tensor and no scores outside the mask.
    mask: BoolTensor[L, L] of the mask for the dense reference path (impl "math": one masked call over all keys).
    block_mask: FlexAttention's BlockMask of any of the three masks (impl "flex"); replaces the two above.
    impl: resolved attention path, "math" (SDPA's math backend), "sdpa" (torch picks the kernel) or "flex".
    per_scale_cond: the AdaLN condition has one row per scale ([B, K, C], applied to each scale's tokens)
    rather than one broadcast row ([B, 1, C]).
    """

    sizes: Optional[tuple[int, ...]] = None
    first_key_scales: Optional[tuple[int, ...]] = None
    mask: Optional[torch.Tensor] = None
    block_mask: Optional[BlockMask] = None
    impl: str = "sdpa"
    per_scale_cond: bool = False

    @property
    def cond_sizes(self) -> Optional[tuple[int, ...]]:
        """Token counts per AdaLN row when the condition is per scale, else None (broadcast)."""
        return self.sizes if self.per_scale_cond else None


def _own_storage(t: torch.Tensor) -> torch.Tensor:
    """t, copied when it is a view into a larger buffer: v is a chunk of the fused qkv projection, and caching
    the view would keep all of q, k and v alive (a cache of chunks held 2x VAR's memory, measured)."""
    if t.untyped_storage().nbytes() == t.numel() * t.element_size():
        return t
    return t.contiguous()


class LayerKV(ABC):
    """One block's inference cache: the text K/V and the self-attention K/V later scales may see.

    `extend` returns the keys/values a scale's queries see and remembers what later scales need; `snapshot` and
    `restore` let simple resampling re-run a scale and then put back what its first forward stored.
    """

    def __init__(self):
        self.ctx_kv: Optional[tuple[torch.Tensor, torch.Tensor]] = None

    @abstractmethod
    def extend(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """See the class docstring."""

    @abstractmethod
    def snapshot(self, newest: bool) -> object:
        """State to `restore` later. newest: the caller will re-run the newest scale (overwriting its keys) before
        restoring, so they must be copied; False for a snapshot taken before a scale runs."""

    @abstractmethod
    def restore(self, state: object) -> None:
        """See the class docstring."""


class WindowKV(LayerKV):
    """K/V of the last `keep` scales (masks.history_scales): 0 under markovian (nothing stored: each scale attends
    only to itself), 1 under markovian_prev. Kept as per-scale chunks, so the window costs two scales at most."""

    def __init__(self, keep: int):
        super().__init__()
        self.keep = keep
        self.chunks: list[tuple[torch.Tensor, torch.Tensor]] = []

    def extend(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.chunks:
            k_all, v_all = k, v
        else:
            k_all = torch.cat([c[0] for c in self.chunks] + [k], dim=2)
            v_all = torch.cat([c[1] for c in self.chunks] + [v], dim=2)
        if self.keep:
            self.chunks = (self.chunks + [(_own_storage(k), _own_storage(v))])[-self.keep :]
        return k_all, v_all

    def snapshot(self, newest: bool) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return list(self.chunks)  # chunks are never written in place: references suffice, newest or not

    def restore(self, state: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.chunks = list(state)


class PrefixKV(LayerKV):
    """K/V of every scale so far (block_causal, VAR's full cache) in one buffer of all `capacity` tokens, allocated
    at the first scale: each scale writes its slice and attends over a prefix view. Joining the history by
    `torch.cat` at every scale copied the whole cache per layer and scale, and left freed copies behind (measured:
    1.28x VAR's sampling memory at d16 batch 8)."""

    def __init__(self, capacity: int):
        super().__init__()
        self.capacity = capacity
        self.k_buf: Optional[torch.Tensor] = None
        self.v_buf: Optional[torch.Tensor] = None
        self.used, self.newest = 0, 0  # tokens stored; where the newest scale's slice starts

    def extend(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        end = self.used + k.shape[2]
        if end > self.capacity:
            raise ValueError(f"KV cache holds {self.capacity} tokens; {self.used} stored, a scale of {k.shape[2]} "
                             f"does not fit (scales must come in order, each once, after new_cache())")
        if self.k_buf is None:
            batch, heads, _, dim = k.shape
            self.k_buf = k.new_empty(batch, heads, self.capacity, dim)
            self.v_buf = v.new_empty(batch, heads, self.capacity, v.shape[-1])
        elif k.shape[:2] != self.k_buf.shape[:2]:
            raise ValueError(f"KV cache was started with [batch, heads] = {list(self.k_buf.shape[:2])}, this scale "
                             f"has {list(k.shape[:2])}: one cache serves one batch (new_cache() per sample call)")
        self.k_buf[:, :, self.used : end] = k
        self.v_buf[:, :, self.used : end] = v
        self.newest, self.used = self.used, end
        return self.k_buf[:, :, :end], self.v_buf[:, :, :end]

    def snapshot(self, newest: bool) -> tuple[int, int, Optional[tuple[torch.Tensor, torch.Tensor]]]:
        """Token counts, and with `newest` a copy of the newest scale's slice (a re-run of that scale overwrites it)."""
        if self.k_buf is None or not newest:
            return self.used, self.newest, None
        span = slice(self.newest, self.used)
        return self.used, self.newest, (self.k_buf[:, :, span].clone(), self.v_buf[:, :, span].clone())

    def restore(self, state: tuple[int, int, Optional[tuple[torch.Tensor, torch.Tensor]]]) -> None:
        self.used, self.newest, newest_kv = state
        if newest_kv is not None:
            self.k_buf[:, :, self.newest : self.used] = newest_kv[0]
            self.v_buf[:, :, self.newest : self.used] = newest_kv[1]


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor] = None,
              impl: str = "sdpa") -> torch.Tensor:
    """SDPA with scale 1 (q and k arrive normalised, q times the temperature); [B, H, N, D] in and out.

    impl "math" pins SDPA's math backend (it materialises the scores; the reference path); any other value
    lets torch pick its fused kernel (flash on CPU: O(N) memory for backward). transformer.resolve_attention_impl
    chooses.
    """
    if impl == "math":
        with sdpa_kernel(SDPBackend.MATH):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0)


def _keys(k: torch.Tensor, v: torch.Tensor, ks: tuple[torch.Tensor, ...], vs: tuple[torch.Tensor, ...], first: int,
          last: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys and values of scales first..last: one scale's chunk, the whole k/v when that is all of them (the finest
    scale under block_causal: no copy kept for backward), else the chunks joined."""
    if first == last:
        return ks[last], vs[last]
    if first == 0 and last == len(ks) - 1:
        return k, v
    return torch.cat(ks[first : last + 1], dim=2), torch.cat(vs[first : last + 1], dim=2)


def flex(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_mask: BlockMask) -> torch.Tensor:
    """FlexAttention with scale 1 over a block mask; inputs share v's dtype (autocast does not cast for flex,
    and SDPA under bf16 autocast runs all three in bf16 too). Contiguous inputs: the compiled CPU kernel gave
    wrong results (1e-3 off) on the transposed [B, H, N, D] views (torch 2.14)."""
    dtype = v.dtype
    q, k, v = (t.to(dtype).contiguous() for t in (q, k, v))
    return flex_attention(q, k, v, block_mask=block_mask, scale=1.0)


def modulate(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor,
             sizes: Optional[tuple[int, ...]]) -> torch.Tensor:
    """x * (1 + scale) + shift: AdaLN. scale/shift are [B, 1, C] (broadcast; sizes None) or [B, K, C] with one
    row per scale, applied to each scale's tokens. Per scale rather than gathering the rows to [B, L, C]:
    the gathered copies were kept for backward (2 + 6 of them per block, [B, L, C] each)."""
    if sizes is None:
        return x * (1 + scale) + shift
    parts = x.split(sizes, dim=1)
    return torch.cat([xs * (1 + scale[:, k : k + 1]) + shift[:, k : k + 1] for k, xs in enumerate(parts)], dim=1)


def _records_graph(t: torch.Tensor) -> bool:
    """Whether autograd records ops on `t` here (training), i.e. whether a recompute-in-backward path applies."""
    return torch.is_grad_enabled() and t.requires_grad


def norm_modulate(norm: nn.Module, x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor,
                  sizes: Optional[tuple[int, ...]]) -> torch.Tensor:
    """modulate(norm(x), ...) recomputed in backward rather than keeping norm(x) (one [B, L, C] tensor per call):
    the LayerNorm and the AdaLN product are elementwise, cheap to redo, and x is kept for LayerNorm anyway.
    Without autograd (sampling) it is the plain call."""
    if not _records_graph(x):
        return modulate(norm(x), scale, shift, sizes)
    return checkpoint(lambda t, s, b: modulate(norm(t), s, b, sizes), x, scale, shift, use_reentrant=False)


def gate(h: torch.Tensor, gamma: torch.Tensor, sizes: Optional[tuple[int, ...]]) -> torch.Tensor:
    """h * gamma with gamma [B, 1, C] or one row per scale [B, K, C] (see modulate)."""
    if sizes is None:
        return h * gamma
    return torch.cat([hs * gamma[:, k : k + 1] for k, hs in enumerate(h.split(sizes, dim=1))], dim=1)


def drop_path(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero a residual branch per sample, rescaling survivors (VAR: 0.1*depth/24, linear)."""
    if rate == 0.0 or not training:
        return x
    keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1.0 - rate)
    return x * keep / (1.0 - rate)


class _QKNormAttention(nn.Module):
    """Shared by self- and cross-attention: L2-normalised q/k with a learnable per-head temperature.

    VAR (docs/method.md §4.1): temperature initialised to 4 and clamped at 100 (in log space); SDPA then
    runs with scale 1 because q/k are unit vectors times the temperature.
    """

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.scale_mul = nn.Parameter(torch.full((1, heads, 1, 1), math.log(4.0)))
        self.max_scale_mul = math.log(100.0)
        self.proj = nn.Linear(dim, dim)

    def _split(self, t: torch.Tensor) -> torch.Tensor:  # [B, N, C] -> [B, H, N, D]
        return t.unflatten(-1, (self.heads, self.head_dim)).transpose(1, 2)

    def _normalise(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        temperature = self.scale_mul.clamp(max=self.max_scale_mul).exp()
        return F.normalize(q, dim=-1) * temperature, F.normalize(k, dim=-1)

    def _merge(self, out: torch.Tensor) -> torch.Tensor:  # [B, H, N, D] -> [B, N, C]
        return self.proj(out.transpose(1, 2).flatten(2))


class SelfAttention(_QKNormAttention):
    """Multi-head self-attention over image tokens; q and v have biases, k none (as VAR)."""

    def __init__(self, dim: int, heads: int):
        super().__init__(dim, heads)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor, layout: AttnLayout, kv: Optional[LayerKV]) -> torch.Tensor:
        bias = torch.cat([self.q_bias, torch.zeros_like(self.q_bias), self.v_bias])
        q, k, v = F.linear(x, self.qkv.weight, bias).chunk(3, dim=-1)
        q, k, v = self._split(q), self._split(k), self._split(v)
        q, k = self._normalise(q, k)
        if kv is not None:
            k, v = kv.extend(k, v)
        if layout.block_mask is not None:
            out = flex(q, k, v, layout.block_mask)
        elif layout.first_key_scales is not None:
            # One unmasked call per scale over the scales its mask allows (markovian: its own only). Split, not
            # sliced: a slice's backward writes a full-length zero tensor per call, a split's one concatenation.
            qs, ks, vs = (t.split(layout.sizes, dim=2) for t in (q, k, v))
            out = torch.cat([attention(qs[scale], *_keys(k, v, ks, vs, first, scale), None, layout.impl)
                             for scale, first in enumerate(layout.first_key_scales)], dim=2)
        else:
            out = attention(q, k, v, layout.mask, layout.impl)
        return self._merge(out)


class CrossAttention(_QKNormAttention):
    """Image tokens attend to the projected text tokens (plus a learned null token that is always visible)."""

    def __init__(self, dim: int, heads: int):
        super().__init__(dim, heads)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim, bias=False)
        self.v_bias = nn.Parameter(torch.zeros(dim))

    def forward(
        self, x: torch.Tensor, ctx: torch.Tensor, ctx_valid: torch.Tensor, kv: Optional[LayerKV], impl: str = "sdpa"
    ) -> torch.Tensor:
        if kv is not None and kv.ctx_kv is not None:
            k, v = kv.ctx_kv
        else:
            k, v = F.linear(ctx, self.kv.weight, torch.cat([torch.zeros_like(self.v_bias), self.v_bias])).chunk(2, -1)
            k, v = self._split(k), self._split(v)
            if kv is not None:
                kv.ctx_kv = (k, v)
        q, k = self._normalise(self._split(self.q(x)), k)
        out = attention(q, k, v, ctx_valid[:, None, None, :], impl)
        return self._merge(out)


def _compute_dtype(h: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    """The dtype autocast would run a linear layer in here (the weight's without autocast)."""
    device = h.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else weight.dtype


class GeluLinear(torch.autograd.Function):
    """fc2(gelu(h)) that keeps only h for backward and recomputes the GELU there (selective recompute).

    Autograd would keep both h (for GELU's backward) and gelu(h) (for fc2's weight gradient): two [B, L, 4C]
    tensors, the largest activations of a block. Recomputing one elementwise GELU in backward drops one of
    them (docs/benchmarks.md, VAR section). Same ops and dtypes as the autograd path: under autocast the
    matmuls run in the autocast dtype and the weight/bias gradients come back in the parameters' dtype.
    """

    @staticmethod
    def forward(ctx, h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        dtype = _compute_dtype(h, weight)
        ctx.save_for_backward(h, weight, bias)
        ctx.dtype = dtype
        with torch.autocast(h.device.type, enabled=False):
            return F.linear(F.gelu(h, approximate="tanh").to(dtype), weight.to(dtype), bias.to(dtype))

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        h, weight, bias = ctx.saved_tensors
        with torch.autocast(h.device.type, enabled=False):
            act = F.gelu(h, approximate="tanh").to(ctx.dtype)
            grad = grad_out.to(ctx.dtype)
            grad_2d = grad.reshape(-1, grad.shape[-1])
            grad_weight = grad_2d.t().mm(act.reshape(-1, act.shape[-1])).to(weight.dtype)
            grad_bias = grad_2d.sum(0).to(bias.dtype)
            grad_act = grad.matmul(weight.to(ctx.dtype)).to(h.dtype)
            grad_h = torch.ops.aten.gelu_backward(grad_act, h, approximate="tanh")
        return grad_h, grad_weight, grad_bias


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        if _records_graph(h):
            return GeluLinear.apply(h, self.fc2.weight, self.fc2.bias)
        return self.fc2(F.gelu(h, approximate="tanh"))


def _ada_params(ada_lin: nn.Module, cond: torch.Tensor, n: int) -> tuple[torch.Tensor, ...]:
    """n AdaLN parameter rows [B, K or 1, C] from a condition [B, K or 1, C] (K: one per scale)."""
    return ada_lin(cond).unflatten(-1, (n, -1)).unbind(2)


class SRDDBlock(nn.Module):
    """x += g1*Attn(LN(x)(1+s1)+b1); x += CrossAttn(LN(x), text); x += g2*MLP(LN(x)(1+s2)+b2) (docs/method.md §4.1)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, drop_path_rate: float, cross_attn: bool):
        super().__init__()
        self.drop_path_rate = drop_path_rate
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = SelfAttention(dim, heads)
        self.ffn = FeedForward(dim, round(dim * mlp_ratio))
        # Order of the 6 chunks as VAR: gamma1, gamma2, scale1, scale2, shift1, shift2 (init relies on it).
        self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        self.cross_norm = nn.LayerNorm(dim, eps=1e-6) if cross_attn else None
        self.cross_attn = CrossAttention(dim, heads) if cross_attn else None

    def forward(
        self,
        x: torch.Tensor,
        cond: torch.Tensor,
        ctx: Optional[torch.Tensor],
        ctx_valid: Optional[torch.Tensor],
        layout: AttnLayout,
        kv: Optional[LayerKV] = None,
    ) -> torch.Tensor:
        gamma1, gamma2, scale1, scale2, shift1, shift2 = _ada_params(self.ada_lin, cond, 6)
        sizes = layout.cond_sizes
        h = self.attn(norm_modulate(self.norm, x, scale1, shift1, sizes), layout, kv)
        x = x + drop_path(gate(h, gamma1, sizes), self.drop_path_rate, self.training)
        if self.cross_attn is not None:
            h = self.cross_attn(self.cross_norm(x), ctx, ctx_valid, kv, layout.impl)
            x = x + drop_path(h, self.drop_path_rate, self.training)
        h = self.ffn(norm_modulate(self.norm, x, scale2, shift2, sizes))
        return x + drop_path(gate(h, gamma2, sizes), self.drop_path_rate, self.training)


class AdaLNHead(nn.Module):
    """The head's own AdaLN (scale, shift) before the vocabulary projection (VAR's AdaLNBeforeHead)."""

    def __init__(self, dim: int, vocab_size: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
        self.out = nn.Linear(dim, vocab_size)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, sizes: Optional[tuple[int, ...]]) -> torch.Tensor:
        """Logits; cond [B, 1, C] or one row per scale [B, K, C] with `sizes` its token counts (see modulate)."""
        scale, shift = _ada_params(self.ada_lin, cond, 2)
        return self.out(norm_modulate(self.norm, x, scale, shift, sizes))
