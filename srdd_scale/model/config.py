"""Typed configs for the SRDD transformer (sized by `depth` alone) and for sampling from it."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Optional, get_args

try:  # the one project import allowed here, guarded for HF remote code (docs/contracts.md)
    from srdd_scale.config import ConfigError
except ImportError:
    class ConfigError(ValueError):
        """Stand-in when srdd_scale is not importable (an exported folder loaded by transformers)."""

MaskMode = Literal["markovian", "markovian_prev", "block_causal"]
MASK_MODES: tuple[str, ...] = get_args(MaskMode)
# VAR's 256 px schedule (docs/method.md §2.3): 10 scales, 680 tokens on a 16x16 latent. Defined here, the
# package's base layer, because the exported remote code (hf.py) needs it too.
VAR_PATCH_NUMS_256 = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)


def _require(ok: bool, key: str, value: object, expected: str) -> None:
    """``srdd_scale.config.require``, copied so that this file stays stdlib-only for HF remote code."""
    if not ok:
        text = repr(value)
        raise ConfigError(f"{key}: got {text if len(text) <= 80 else text[:77] + '...'}, expected {expected}")
ATTENTION_IMPLS = ("auto", "math", "sdpa", "flex")


@dataclass(frozen=True)
class ModelConfig:
    """VAR's transformer (docs/method.md §4) with SRDD's Markovian mask (§3.1) and text cross-attention.

    Everything but `depth` is derived by default (nanoGPT-style single size knob): width 64*depth,
    depth heads of 64 channels, drop-path 0.1*depth/24. `width`/`num_heads` exist only for ablations.
    """

    depth: int = 16  # number of transformer blocks; the one size knob
    width: int = 0  # model width C; 0 = 64 * depth (VAR)
    num_heads: int = 0  # attention heads; 0 = depth (head dim 64, VAR)
    mlp_ratio: float = 4.0  # MLP hidden width / C (VAR: 4, GELU-tanh)
    drop_path_rate: float = -1.0  # max stochastic depth (last block); -1 = 0.1 * depth / 24 (VAR)
    alng: float = 1e-3  # init scale of the AdaLN gate weights (VAR: 1e-3 d16/d20, 1e-4 d24, 1e-5 d30, 5e-6 d36)
    mask: MaskMode = "markovian"  # self-attention mask between scales (docs/method.md §3; masks.py)
    scale_cond: bool = True  # per-scale embedding in the AdaLN condition: f(I_n, n, y) (docs/method.md §4.5, §9.2)
    cross_attn: bool = True  # text cross-attention in every block (needs text_dim at build time)
    num_classes: int = 0  # class-conditional when > 0 (index num_classes is the learned null class)
    cond_drop_prob: float = 0.1  # training-time probability of replacing the condition by null, for CFG (VAR: 0.1)
    loss_weighting: Literal["token", "scale"] = "token"  # token: every token equal (VAR); scale: every scale equal
    label_smoothing: float = 0.0  # CE label smoothing (VAR default 0)
    # Self-attention path (transformer.resolve_attention_impl): auto = the measured fastest for the device
    # (docs/benchmarks.md); math = SDPA math backend per scale / with a mask tensor (the reference); sdpa =
    # torch's fused SDPA kernels; flex = one FlexAttention call with a block mask built once per schedule.
    attention_impl: Literal["auto", "math", "sdpa", "flex"] = "auto"
    # Regional torch.compile of each block at its first forward: null (auto) = on for CUDA, off elsewhere.
    compile: Optional[bool] = None

    @property
    def embed_dim(self) -> int:
        return self.width or 64 * self.depth

    @property
    def heads(self) -> int:
        return self.num_heads or self.depth

    @property
    def max_drop_path(self) -> float:
        return 0.1 * self.depth / 24 if self.drop_path_rate < 0 else self.drop_path_rate

    def validate(self) -> None:
        if self.depth < 1:
            raise ConfigError(f"model.depth={self.depth}: expected a positive number of blocks")
        if self.width < 0 or self.num_heads < 0:
            raise ConfigError(
                f"model.width={self.width}, model.num_heads={self.num_heads}: expected >= 0 (0 = derive from depth)"
            )
        if self.embed_dim % self.heads:
            raise ConfigError(
                f"model.num_heads={self.heads} does not divide model.width={self.embed_dim} "
                f"(depth={self.depth}); choose heads so that width % heads == 0"
            )
        if not 0 < self.mlp_ratio < float("inf"):
            raise ConfigError(f"model.mlp_ratio={self.mlp_ratio}: expected > 0")
        _require(self.drop_path_rate == -1 or 0.0 <= self.drop_path_rate < 1.0, "model.drop_path_rate",
                 self.drop_path_rate, "-1 (derive 0.1 * depth / 24) or a value in [0, 1)")
        _require(self.max_drop_path < 1.0, "model.depth", self.depth,
                 f"< 240 while model.drop_path_rate=-1 derives 0.1 * depth / 24 = {self.max_drop_path:g} (must be < 1);"
                 " set model.drop_path_rate explicitly for deeper models")
        if not 0.0 < self.alng < float("inf"):
            raise ConfigError(f"model.alng={self.alng}: expected a finite value > 0")
        if self.mask not in MASK_MODES:
            raise ConfigError(f"model.mask={self.mask!r}: expected one of {', '.join(MASK_MODES)}")
        if self.attention_impl not in ATTENTION_IMPLS:
            raise ConfigError(f"model.attention_impl={self.attention_impl!r}: expected one of {', '.join(ATTENTION_IMPLS)}")
        if self.compile not in (None, True, False):
            raise ConfigError(f"model.compile={self.compile!r}: expected true, false or null (auto: on for CUDA)")
        if self.num_classes < 0:
            raise ConfigError(f"model.num_classes={self.num_classes}: expected >= 0 (0 = no class labels)")
        if not 0.0 <= self.cond_drop_prob < 1.0:
            raise ConfigError(f"model.cond_drop_prob={self.cond_drop_prob}: expected a probability in [0, 1)")
        if self.loss_weighting not in ("token", "scale"):
            raise ConfigError(f"model.loss_weighting={self.loss_weighting!r}: expected 'token' or 'scale'")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"model.label_smoothing={self.label_smoothing}: expected a value in [0, 1)")


@dataclass(frozen=True)
class SamplingConfig:
    """Sampler settings (docs/method.md §6, §8.4). Defaults are VAR's FID setting."""

    cfg_scale: float = 1.5  # classifier-free guidance strength w: logits = (1+t)*cond - t*uncond
    cfg_schedule: Literal["linear", "constant"] = "linear"  # linear: t = w*k/(K-1) (VAR ramp); constant: t = w
    top_k: int = 900  # keep the k most likely tokens; 0 = off
    top_p: float = 0.96  # nucleus threshold; 1.0 = off
    temperature: float = 1.0  # logits are divided by this before top-k/top-p
    resample: Literal["none", "simple", "mask"] = "none"  # SR (docs/method.md §6.4) or MR (§6.5) inside each scale
    mr_steps: int = 0  # mask resampling (resample=mask): rounds per scale (docs/method.md §6.5); 0 = plain sampling
    p_resample: float = 0.0  # mask resampling: tokens whose sampled probability is below this are redrawn each round
    sr_steps: int = 0  # simple resampling (resample=simple): extra forwards per scale >= 1; 0 = plain sampling

    def validate(self) -> None:
        if self.cfg_scale < 0 or not math.isfinite(self.cfg_scale):
            raise ConfigError(f"sampling.cfg_scale={self.cfg_scale}: expected a finite value >= 0")
        if self.cfg_schedule not in ("linear", "constant"):
            raise ConfigError(f"sampling.cfg_schedule={self.cfg_schedule!r}: expected 'linear' or 'constant'")
        if self.top_k < 0:
            raise ConfigError(f"sampling.top_k={self.top_k}: expected >= 0 (0 = off)")
        if not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"sampling.top_p={self.top_p}: expected a value in (0, 1] (1 = off)")
        if not 0 < self.temperature < float("inf"):
            raise ConfigError(f"sampling.temperature={self.temperature}: expected > 0")
        if self.resample not in ("none", "simple", "mask"):
            raise ConfigError(f"sampling.resample={self.resample!r}: expected 'none', 'simple' or 'mask'")
        if self.mr_steps < 0 or self.sr_steps < 0:
            raise ConfigError(f"sampling.mr_steps={self.mr_steps}, sampling.sr_steps={self.sr_steps}: expected >= 0")
        if self.mr_steps and self.resample != "mask":
            raise ConfigError(f"sampling.mr_steps={self.mr_steps} needs sampling.resample=mask "
                              f"(got {self.resample!r})")
        if self.sr_steps and self.resample != "simple":
            raise ConfigError(f"sampling.sr_steps={self.sr_steps} needs sampling.resample=simple "
                              f"(got {self.resample!r})")
        if not 0.0 <= self.p_resample <= 1.0:  # comparisons are False for nan, so nan is refused too
            raise ConfigError(f"sampling.p_resample={self.p_resample}: expected a probability in [0, 1]")
