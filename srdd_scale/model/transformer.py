"""The SRDD transformer: VAR's next-scale predictor (docs/method.md §4) with a Markovian mask (§3.1).

Conditioning (docs/method.md §4.3-§4.5, §9.2, §9.4): the condition vector y (pooled text and/or class embedding,
or the learned null condition) drives every AdaLN and builds the start token; text tokens also reach every
block through cross-attention; with `scale_cond` a learned per-scale embedding is added to the AdaLN
condition so each block is told the step n explicitly, i.e. the reverse step f(I_n, n, y).
"""
from __future__ import annotations

import contextlib
import contextvars
import hashlib
import math
from dataclasses import dataclass
from typing import Iterator, Optional

import torch
from torch import nn

from .blocks import AdaLNHead, AttnLayout, LayerKV, PrefixKV, SRDDBlock, WindowKV
from .config import ConfigError, ModelConfig  # ConfigError: srdd_scale's, or config.py's stand-in
from .masks import attention_allowed, first_key_scales, flex_block_mask, history_scales, scale_index

# Parameter-name prefixes of each group reported by parameter_counts (flops.py mirrors these analytically).
TEXT_PREFIXES = ("text_norm.", "text_proj.", "text_pool.", "null_text_token")
HEAD_PREFIXES = ("head.",)
EMBED_PREFIXES = ("word_embed.", "pos_start", "pos_embed", "lvl_embed.", "scale_embed.", "class_emb.", "null_cond")

# Set while a caller builds the model whose parameters it will materialise itself (meta device, ZeRO-3 partitions).
_DEFER_INIT = contextvars.ContextVar("srdd_defer_init", default=False)


@contextlib.contextmanager
def deferred_init() -> Iterator[None]:
    """Models built inside skip ``init_weights``; the caller fills each parameter from ``initial_parameter``."""
    token = _DEFER_INIT.set(True)
    try:
        yield
    finally:
        _DEFER_INIT.reset(token)


def _parameter_generator(seed: int, name: str) -> torch.Generator:
    """A CPU generator of its own for each parameter: its values depend on (seed, name) only, never on the order
    or the device in which parameters are initialised, so a shard can be cut from the same full tensor anywhere."""
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return torch.Generator(device="cpu").manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


@dataclass
class Condition:
    """Everything derived from (text, class, drop) once per batch and reused at every scale."""

    vector: torch.Tensor  # [B, C]: AdaLN condition and start token
    ctx: Optional[torch.Tensor]  # [B, 1+T, C]: cross-attention keys (learned null token first); None without text
    ctx_valid: Optional[torch.Tensor]  # [B, 1+T] bool: which ctx entries may be attended


class SRDDTransformer(nn.Module):
    """Predicts the token logits of every scale from the teacher-forcing inputs and the condition."""

    def __init__(
        self,
        cfg: ModelConfig,
        patch_nums: tuple[int, ...],
        vocab_size: int,
        latent_dim: int,
        text_dim: int | None,
    ):
        super().__init__()
        # One draw from the global RNG, before any submodule's own init consumes it (on meta none does): the same
        # torch.manual_seed gives the same weights on every rank and construction path.
        self.init_seed = int(torch.randint(0, 2**62, (), device="cpu"))
        cfg.validate()
        if cfg.cross_attn and text_dim is None:
            raise ConfigError(
                "model.cross_attn=true needs the text encoder's width (text_dim); "
                "set model.cross_attn=false for class-conditional or unconditional models"
            )
        if not patch_nums or any(p < 1 for p in patch_nums):
            raise ConfigError(f"patch_nums={list(patch_nums)}: expected a non-empty list of positive ints")
        self.cfg = cfg
        self.patch_nums = tuple(patch_nums)
        self.vocab_size = vocab_size
        self.latent_dim = latent_dim
        self.text_dim = text_dim if cfg.cross_attn else None
        self.mask_mode = cfg.mask
        self.num_scales = len(patch_nums)
        self.first_len = patch_nums[0] ** 2
        self.seq_len = sum(p * p for p in patch_nums)
        dim = self.dim = cfg.embed_dim

        # Embeddings (VAR): word_embed of the running latent, absolute position per token, level per scale.
        self.word_embed = nn.Linear(latent_dim, dim)
        self.pos_start = nn.Parameter(torch.empty(1, self.first_len, dim))
        self.pos_embed = nn.Parameter(torch.empty(1, self.seq_len, dim))
        self.lvl_embed = nn.Embedding(self.num_scales, dim)
        self.scale_embed = nn.Embedding(self.num_scales, dim) if cfg.scale_cond else None
        self.class_emb = nn.Embedding(cfg.num_classes + 1, dim) if cfg.num_classes > 0 else None
        self.null_cond = nn.Parameter(torch.empty(dim))  # y for unconditional / dropped text
        if self.text_dim is not None:
            self.text_norm = nn.LayerNorm(self.text_dim)
            self.text_proj = nn.Linear(self.text_dim, dim)  # tokens -> cross-attention context
            self.text_pool = nn.Linear(self.text_dim, dim)  # masked mean -> AdaLN condition
            self.null_text_token = nn.Parameter(torch.empty(1, 1, dim))

        drop_rates = torch.linspace(0, cfg.max_drop_path, cfg.depth, device="cpu").tolist()  # also under meta
        self.blocks = nn.ModuleList(
            SRDDBlock(dim, cfg.heads, cfg.mlp_ratio, rate, self.text_dim is not None) for rate in drop_rates
        )
        self.head = AdaLNHead(dim, vocab_size)

        self.scale_sizes = tuple(p * p for p in self.patch_nums)
        self.first_key_scales = first_key_scales(self.patch_nums, self.mask_mode)
        self._block_masks: dict[str, object] = {}  # FlexAttention block mask per device (attention_impl flex)
        self._compiled_blocks: Optional[list] = None  # torch.compile'd blocks (model.compile), built lazily
        self.register_buffer("token_scale", None, persistent=False)
        self.register_buffer("attn_allowed", None, persistent=False)
        self.reset_buffers()
        if not _DEFER_INIT.get():
            self.init_weights()

    # ------------------------------------------------------------------------------------------ init

    def reset_buffers(self) -> None:
        """The schedule's index buffers on the parameters' device (after ``to_empty`` they hold garbage)."""
        # Parameters on meta: leave the buffers where the factories made them. Under FSDP's deferred build that is
        # meta too (filled after to_empty); under transformers' from_pretrained it is the CPU, and these buffers are
        # not in the checkpoint, so moving them to meta would leave them empty.
        device = self.pos_embed.device
        move = (lambda t: t) if device.type == "meta" else (lambda t: t.to(device))
        self.token_scale = move(scale_index(self.patch_nums))
        self.attn_allowed = move(attention_allowed(self.patch_nums, self.mask_mode))

    @torch.no_grad()
    def initial_parameter(self, name: str) -> torch.Tensor:
        """Full fp32 initial value of parameter ``name`` on the CPU, from its own (init_seed, name) generator.

        VAR's init (docs/method.md §4.6): trunc-normal std sqrt(1/3C) for every weight matrix, embedding and
        learned token; zero biases; unit LayerNorm weights; head x0.02; residual out-projections / sqrt(2 depth);
        AdaLN gates x alng and scales/shifts x0.5; attention temperatures log 4.
        """
        module_name, _, attr = name.rpartition(".")
        module = self.get_submodule(module_name)
        shape = getattr(module, attr).shape
        generator = _parameter_generator(self.init_seed, name)
        std = math.sqrt(1 / self.dim / 3)
        if attr == "scale_mul":
            return torch.full(shape, math.log(4.0))
        if attr in ("bias", "q_bias", "v_bias"):
            return torch.zeros(shape)
        if isinstance(module, nn.LayerNorm):
            return torch.ones(shape)
        if not (attr == "weight" and isinstance(module, (nn.Linear, nn.Embedding)) or module is self):
            raise KeyError(f"parameter {name!r} has no initialisation rule in SRDDTransformer.initial_parameter")
        # In place, not by return value: transformers' from_pretrained swaps nn.init for no-ops returning None
        # (the weights come from the checkpoint right after).
        value = torch.empty(shape)
        nn.init.trunc_normal_(value, std=std, generator=generator)
        if name == "head.out.weight":
            value.mul_(0.02)
        elif name == "head.ada_lin.1.weight":
            value.mul_(0.5)  # VAR's init_adaln for scale/shift
        elif name.endswith(("attn.proj.weight", "ffn.fc2.weight")):  # self- and cross-attention out-projections
            value.div_(math.sqrt(2 * self.cfg.depth))
        elif name.startswith("blocks.") and name.endswith("ada_lin.1.weight"):
            value[: 2 * self.dim].mul_(self.cfg.alng)  # gamma1, gamma2: residual branches start near zero
            value[2 * self.dim :].mul_(0.5)  # scales and shifts
        return value

    @torch.no_grad()
    def init_weights(self) -> None:
        """Every parameter from ``initial_parameter`` (a sharded backend fills its shards from the same values)."""
        for name, param in self.named_parameters():
            param.copy_(self.initial_parameter(name))

    # ------------------------------------------------------------------------------------------ condition

    def condition(
        self,
        text_states: Optional[torch.Tensor],
        text_mask: Optional[torch.Tensor],
        class_ids: Optional[torch.Tensor],
        cond_drop: Optional[torch.Tensor],
        batch_size: int,
    ) -> Condition:
        """Build y and the text context; dropped rows (CFG) get the null condition / null class / no text."""
        device = self.pos_embed.device
        if cond_drop is None:
            if self.training and self.cfg.cond_drop_prob > 0:
                cond_drop = torch.rand(batch_size, device=device) < self.cfg.cond_drop_prob
            else:
                cond_drop = torch.zeros(batch_size, dtype=torch.bool, device=device)
        keep = ~cond_drop.to(device=device, dtype=torch.bool)

        vector = self.null_cond.expand(batch_size, -1)
        ctx = ctx_valid = None
        if self.text_dim is not None:
            null_tok = self.null_text_token.expand(batch_size, -1, -1)
            ones = torch.ones(batch_size, 1, dtype=torch.bool, device=device)
            if text_states is None:  # no caption at all: the null token is the whole context
                ctx, ctx_valid = null_tok, ones
            else:
                if text_mask is None:
                    text_mask = torch.ones(text_states.shape[:2], dtype=torch.bool, device=device)
                text_mask = text_mask.to(torch.bool) & keep[:, None]
                normed = self.text_norm(text_states)
                ctx = torch.cat([null_tok, self.text_proj(normed)], dim=1)
                ctx_valid = torch.cat([ones, text_mask], dim=1)
                weights = text_mask.to(normed.dtype)[..., None]
                pooled = (normed * weights).sum(1) / weights.sum(1).clamp(min=1.0)
                has_text = text_mask.any(1, keepdim=True)
                vector = torch.where(has_text, self.text_pool(pooled), vector)
        elif text_states is not None:
            raise ValueError("text_states given but the model was built without text (model.cross_attn=false)")
        if self.class_emb is not None:
            if class_ids is None:
                raise ValueError(f"model.num_classes={self.cfg.num_classes}: forward needs class_ids[B]")
            null_class = torch.full_like(class_ids, self.cfg.num_classes)
            class_ids = torch.where(keep & (class_ids >= 0), class_ids, null_class)
            vector = vector + self.class_emb(class_ids)
        return Condition(vector=vector, ctx=ctx, ctx_valid=ctx_valid)

    def _ada_cond(self, vector: torch.Tensor, scale: int | None) -> torch.Tensor:
        """AdaLN condition [B, K or 1, C]: y plus, with scale_cond, the embedding of each scale (or of `scale`)."""
        cond = vector[:, None, :]
        if self.scale_embed is None:
            return cond
        if scale is None:
            return cond + self.scale_embed.weight[None]
        return cond + self.scale_embed.weight[scale][None, None]

    # ------------------------------------------------------------------------------------------ forward

    def forward(
        self,
        teacher_inputs: torch.Tensor,
        text_states: Optional[torch.Tensor] = None,
        text_mask: Optional[torch.Tensor] = None,
        class_ids: Optional[torch.Tensor] = None,
        cond_drop: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Teacher-forced logits [B, L, vocab] for all scales in one pass (training / evaluation)."""
        expected = (self.seq_len - self.first_len, self.latent_dim)
        if teacher_inputs.ndim != 3 or tuple(teacher_inputs.shape[1:]) != expected:
            raise ValueError(
                f"teacher_inputs has shape {tuple(teacher_inputs.shape)}, expected [B, {expected[0]}, {expected[1]}] "
                f"for the schedule patch_nums={list(self.patch_nums)} this model was built for "
                f"(L - p0^2 tokens of latent_dim channels)"
            )
        batch = teacher_inputs.shape[0]
        cond = self.condition(text_states, text_mask, class_ids, cond_drop, batch)
        start = cond.vector[:, None, :] + self.pos_start
        x = torch.cat([start.expand(batch, -1, -1), self.word_embed(teacher_inputs)], dim=1)
        x = x + self.lvl_embed(self.token_scale)[None] + self.pos_embed
        layout = self.attn_layout(x.device)
        ada_cond = self._ada_cond(cond.vector, None)
        for block in self._compiled_blocks or self.blocks:
            x = block(x, ada_cond, cond.ctx, cond.ctx_valid, layout)
        return self.head(x, ada_cond, layout.cond_sizes)

    def attn_layout(self, device: torch.device) -> AttnLayout:
        """The full-forward layout on `device`: attention path, its mask form, per-scale AdaLN rows. Also
        compiles the blocks the first time when model.compile asks for it."""
        impl = resolve_attention_impl(self.cfg.attention_impl, device, self.cfg.compile)
        layout = AttnLayout(sizes=self.scale_sizes, impl=impl, per_scale_cond=self.scale_embed is not None)
        if impl == "flex":
            key = str(device)
            if key not in self._block_masks:
                self._block_masks[key] = flex_block_mask(self.patch_nums, self.mask_mode, device)
            layout.block_mask = self._block_masks[key]
        elif impl == "math":
            layout.mask = self.attn_allowed
        else:
            layout.first_key_scales = self.first_key_scales
        if self._compiled_blocks is None and compile_enabled(self.cfg.compile, device):
            # Regional: one compiled graph per block (they share code, so one compile serves all), kept out of
            # the module tree so state_dict keys do not change.
            self._compiled_blocks = [torch.compile(block) for block in self.blocks]
        return layout

    def new_cache(self) -> list[LayerKV]:
        """Per-block inference caches; under `markovian` they hold only the text K/V (no self-attention cache)."""
        keep = history_scales(self.mask_mode)
        if keep is None:
            return [PrefixKV(self.seq_len) for _ in self.blocks]
        return [WindowKV(keep) for _ in self.blocks]

    def forward_scale(
        self, scale: int, scale_input: Optional[torch.Tensor], cond: Condition, cache: list[LayerKV]
    ) -> torch.Tensor:
        """Logits [B, p_k^2, vocab] of scale `scale` from its input alone (sampling; scales in order).

        `scale_input` is the tokenizer's `next_scale_input` for scale >= 1 ([B, p_k^2, latent_dim]) and None
        for scale 0 (the start token). Under markovian nothing but this scale's tokens is processed.
        """
        if not 0 <= scale < self.num_scales:
            raise ValueError(f"scale={scale}: this model has {self.num_scales} scales "
                             f"(patch_nums={list(self.patch_nums)})")
        batch = cond.vector.shape[0]
        begin = sum(p * p for p in self.patch_nums[:scale])
        n = self.patch_nums[scale] ** 2
        if scale == 0:
            x = (cond.vector[:, None, :] + self.pos_start).expand(batch, -1, -1)
        else:
            if scale_input is None or tuple(scale_input.shape[1:]) != (n, self.latent_dim):
                got = None if scale_input is None else tuple(scale_input.shape)
                raise ValueError(
                    f"scale {scale} input has shape {got}, expected [B, {n}, {self.latent_dim}] "
                    f"(patch_nums={list(self.patch_nums)})"
                )
            x = self.word_embed(scale_input)
        x = x + self.lvl_embed.weight[scale] + self.pos_embed[:, begin : begin + n]
        ada_cond = self._ada_cond(cond.vector, scale)
        impl = resolve_attention_impl(self.cfg.attention_impl, x.device, self.cfg.compile)
        layout = AttnLayout(impl="sdpa" if impl == "flex" else impl)  # one scale: plain attention, no mask
        for block, kv in zip(self.blocks, cache):
            x = block(x, ada_cond, cond.ctx, cond.ctx_valid, layout, kv)
        return self.head(x, ada_cond, None)

    # ------------------------------------------------------------------------------------------ sizes

    def parameter_groups(self) -> dict[str, int]:
        """Instantiated parameter counts by group (same keys as flops.parameter_counts)."""
        counts = {"core": 0, "text": 0, "embeddings": 0, "head": 0}
        for name, param in self.named_parameters():
            if name.startswith(TEXT_PREFIXES) or ".cross_" in name:
                group = "text"
            elif name.startswith(EMBED_PREFIXES):
                group = "embeddings"
            elif name.startswith(HEAD_PREFIXES):
                group = "head"
            else:
                group = "core"
            counts[group] += param.numel()
        counts["total"] = sum(counts.values())
        return counts


def state_dict_for_schedule(
    state: dict[str, torch.Tensor], patch_nums: tuple[int, ...], new_patch_nums: tuple[int, ...]
) -> dict[str, torch.Tensor]:
    """Weights of a model trained on `patch_nums` re-laid for a subset schedule (docs/method.md §6.6).

    Every kept scale keeps its own position, level and scale embeddings (docs/method.md §6.6); all
    other weights are shared by every schedule. Load the result into build_model(..., new_patch_nums, ...).
    """
    missing = [p for p in new_patch_nums if p not in patch_nums]
    if missing or new_patch_nums[0] != patch_nums[0]:
        raise ValueError(
            f"new schedule {list(new_patch_nums)} must keep the first scale and use only scales of the trained "
            f"schedule {list(patch_nums)} (not found: {missing or [new_patch_nums[0]]})"
        )
    kept = [patch_nums.index(p) for p in new_patch_nums]
    bounds = [0]
    for p in patch_nums:
        bounds.append(bounds[-1] + p * p)
    rows = torch.cat([torch.arange(bounds[k], bounds[k + 1]) for k in kept])
    out = dict(state)
    out["pos_embed"] = state["pos_embed"][:, rows]
    for name in ("lvl_embed.weight", "scale_embed.weight"):
        if name in state:
            out[name] = state[name][kept]
    return out


def compile_enabled(setting: Optional[bool], device: torch.device) -> bool:
    """model.compile: True/False, or None = on for CUDA only (CPU compiles cost more than they save in tests)."""
    return device.type == "cuda" if setting is None else setting


def resolve_attention_impl(impl: str, device: torch.device, compile_setting: Optional[bool] = None) -> str:
    """model.attention_impl "auto" -> the path measured fastest on this device (docs/benchmarks.md, VAR section).

    CPU: torch's fused SDPA (flash) at every shape. tools/bench_attention.py times each per-scale call on both
    backends in the model's layout (docs/benchmarks.md, per-shape table): math wins a few mid-sized training shapes
    by a few percent, but picking it there would save about 0.1% of a d16 layer step and keep score matrices for
    backward; fused wins or ties the rest, the finest scale and every forward-only shape above 4 queries included;
    flex has no CPU backward.
    CUDA: FlexAttention when the blocks are compiled (one fused kernel over the block mask), else fused SDPA;
    not measured yet (no GPU lent so far): tools/gpu_check.py times SDPA per shape (attention_shapes) and the
    compiled flex blocks in its training section.
    """
    if impl != "auto":
        return impl
    if device.type == "cuda":
        return "flex" if compile_enabled(compile_setting, device) else "sdpa"
    return "sdpa"


def build_model(
    cfg: ModelConfig, patch_nums: tuple[int, ...], vocab_size: int, latent_dim: int, text_dim: int | None
) -> SRDDTransformer:
    """The one constructor every caller uses (docs/contracts.md)."""
    return SRDDTransformer(cfg, patch_nums, vocab_size, latent_dim, text_dim)
