"""Typed configs for the multi-scale residual VQ tokenizer and for training it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from srdd_scale.config import ConfigError, require
from srdd_scale.data.config import DataConfig
from srdd_scale.model.config import VAR_PATCH_NUMS_256

# Codes are stored as uint16 in the MDS shards (docs/contracts.md), which caps the codebook.
MAX_VOCAB_SIZE = 1 << 16


def check_patch_nums(patch_nums: tuple[int, ...], latent_size: int, key: str = "tokenizer.patch_nums") -> None:
    """Raise ConfigError unless `patch_nums` is strictly increasing, positive and ends at the latent grid."""
    if len(patch_nums) == 0:
        raise ConfigError(f"{key}: expected at least one scale, got an empty schedule")
    if any(not isinstance(p, int) or isinstance(p, bool) or p < 1 for p in patch_nums):
        raise ConfigError(f"{key}={list(patch_nums)}: every entry must be a positive integer")
    if any(b <= a for a, b in zip(patch_nums, patch_nums[1:])):
        raise ConfigError(f"{key}={list(patch_nums)}: scales must be strictly increasing (coarse to fine)")
    if patch_nums[-1] != latent_size:
        raise ConfigError(
            f"{key}={list(patch_nums)}: the last scale must equal the latent grid size {latent_size} "
            f"(image_size // downsample), got {patch_nums[-1]}"
        )


@dataclass(frozen=True)
class TokenizerConfig:
    """Architecture of the VQ-VAE and its residual quantizer (VAR's family; docs/method.md §2.1)."""

    image_size: int = 256  # side of the square input images in pixels
    ch: int = 160  # base channel width of the CNN encoder/decoder
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)  # width multiplier per resolution level; downsample = 2**(levels-1)
    num_res_blocks: int = 2  # residual blocks per encoder level (the decoder uses one more, as VAR)
    latent_dim: int = 32  # VAR's Cvae / z_channels: width of the latent and of each codebook entry
    vocab_size: int = 4096  # codebook entries shared by all scales
    patch_nums: tuple[int, ...] = VAR_PATCH_NUMS_256  # side of each scale's token map, coarse to fine
    quant_resi: float = 0.5  # Phi mixing ratio r in (1-r)*h + r*conv3x3(h)
    share_quant_resi: int = 4  # number of Phi convs shared across the scales (VAR's tick rule picks one)
    norm_groups: int = 32  # GroupNorm groups (VAR: 32); small CPU configs need fewer
    # "group": VAR's GroupNorm before every conv. "none": no normalisation layers. Per-image GroupNorm
    # erases each image's absolute colour, which flat-colour images are made of: the small shapes
    # tokenizer learns colour several times faster without it (docs/LOG.md, 2026-11-26).
    norm: Literal["group", "none"] = "group"
    checkpoint: Optional[str] = None  # load weights from here (our folder or VAR's .pth) instead of random init

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    @property
    def latent_size(self) -> int:
        return self.image_size // self.downsample

    def validate(self) -> None:
        for key in ("image_size", "ch", "num_res_blocks", "latent_dim", "share_quant_resi", "norm_groups"):
            value = getattr(self, key)
            if value < 1:
                raise ConfigError(f"tokenizer.{key}={value}: expected a positive integer")
        if not self.ch_mult or any(m < 1 for m in self.ch_mult):
            raise ConfigError(f"tokenizer.ch_mult={list(self.ch_mult)}: expected a non-empty list of positive ints")
        if not 2 <= self.vocab_size <= MAX_VOCAB_SIZE:
            raise ConfigError(
                f"tokenizer.vocab_size={self.vocab_size}: expected 2..{MAX_VOCAB_SIZE} (codes are stored as uint16)"
            )
        if not 0.0 < self.quant_resi <= 1.0:
            raise ConfigError(f"tokenizer.quant_resi={self.quant_resi}: expected a ratio in (0, 1]")
        if self.norm not in ("group", "none"):
            raise ConfigError(f"tokenizer.norm={self.norm!r}: expected 'group' (VAR) or 'none'")
        widths = {self.ch * m for m in self.ch_mult}
        bad = sorted(w for w in widths if w % self.norm_groups) if self.norm == "group" else []
        if bad:
            raise ConfigError(
                f"tokenizer.norm_groups={self.norm_groups}: must divide every level width ch*ch_mult, "
                f"but not {bad} (ch={self.ch}, ch_mult={list(self.ch_mult)})"
            )
        if self.image_size % self.downsample:
            raise ConfigError(
                f"tokenizer.image_size={self.image_size}: must be a multiple of the downsample factor "
                f"{self.downsample} (2**(len(ch_mult)-1))"
            )
        check_patch_nums(self.patch_nums, self.latent_size)


@dataclass(frozen=True)
class TokenizerTrainConfig:
    """Optimisation, losses and logging for tools/train_tokenizer.py."""

    seed: int = 0  # seeds init, data order and dead-code re-initialisation
    steps: int = 2000  # optimizer steps: the budget (the same seed gives the same weights on any machine)
    # opt-in wall-clock budget: training stops (and checkpoints) when it is spent, and the LR decays over it,
    # so the result depends on the machine's speed and load
    max_minutes: Optional[float] = None
    batch_size: int = 32  # per-process batch size
    lr: float = 2e-3  # peak AdamW learning rate
    min_lr_ratio: float = 0.05  # cosine decay ends at lr * min_lr_ratio
    warmup_steps: int = 50  # linear warm-up steps
    weight_decay: float = 0.0  # AdamW weight decay (codebook included: keep 0 unless you know why)
    grad_clip: float = 1.0  # max global grad norm (0 disables)
    l1_weight: float = 1.0  # weight of the L1 reconstruction loss
    l2_weight: float = 1.0  # weight of the L2 reconstruction loss
    beta: float = 0.25  # commitment weight (VAR / VQGAN: 0.25), straight-through estimator
    perceptual_weight: float = 0.0  # weight of the VGG perceptual loss; needs perceptual_vgg_path
    perceptual_vgg_path: Optional[str] = None  # local torchvision VGG16 state dict (.pth); never downloaded
    perceptual_lpips_path: Optional[str] = None  # optional LPIPS linear-head weights (lpips' vgg.pth) for the same
    dead_code_every: int = 50  # steps between dead-code re-initialisations (0 disables)
    dead_code_threshold: float = 0.03  # a code is dead if its EMA hits per step fall below this
    eval_every: int = 200  # steps between held-out evaluations (per-scale PSNR, usage, grid)
    eval_images: int = 256  # held-out images per evaluation
    log_every: int = 20  # steps between metrics.jsonl lines
    checkpoint_every: int = 500  # steps between resumable checkpoints
    keep_checkpoints: int = 1  # newest complete checkpoints kept on disk
    grid_images: int = 8  # images in the reconstruction grid PNG
    # torch intra-op threads; None: the cores the load average leaves free at start. Results are bit-identical
    # only at a fixed count: a conv's weight gradient summed by 2 threads rounds differently.
    num_threads: Optional[int] = None
    precision: Literal["fp32", "bf16"] = "fp32"  # autocast dtype for encoder/decoder (quantizer stays fp32)
    eval_input: str = ""  # folder/.tar of held-out images for non-synthetic data ("": synthetic `heldout` split,
    #                       or the first eval_images training images when the source has no held-out split)

    def validate(self) -> None:
        for key in ("steps", "batch_size", "eval_images", "log_every", "grid_images", "keep_checkpoints"):
            if getattr(self, key) < 1:
                raise ConfigError(f"tokenizer_train.{key}={getattr(self, key)}: expected a positive integer")
        for key in ("warmup_steps", "dead_code_every", "eval_every", "checkpoint_every"):
            if getattr(self, key) < 0:
                raise ConfigError(f"tokenizer_train.{key}={getattr(self, key)}: expected >= 0")
        if self.lr <= 0:
            raise ConfigError(f"tokenizer_train.lr={self.lr}: expected > 0")
        for key in ("seed", "weight_decay", "grad_clip", "beta", "perceptual_weight", "dead_code_threshold"):
            require(getattr(self, key) >= 0, f"tokenizer_train.{key}", getattr(self, key), "a value >= 0")
        require(self.num_threads is None or self.num_threads >= 1, "tokenizer_train.num_threads", self.num_threads,
                "an int >= 1 or null (the free cores)")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError(f"tokenizer_train.min_lr_ratio={self.min_lr_ratio}: expected 0..1")
        if self.l1_weight < 0 or self.l2_weight < 0 or self.l1_weight + self.l2_weight == 0:
            raise ConfigError(
                f"tokenizer_train.l1_weight={self.l1_weight}, l2_weight={self.l2_weight}: expected >= 0, not both 0"
            )
        if self.perceptual_weight > 0 and not self.perceptual_vgg_path:
            raise ConfigError(
                f"tokenizer_train.perceptual_weight={self.perceptual_weight} needs tokenizer_train.perceptual_vgg_path "
                "(a local VGG16 state dict; nothing is downloaded). Set perceptual_weight=0 to train without it."
            )
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ConfigError(f"tokenizer_train.max_minutes={self.max_minutes}: expected > 0 or null")


@dataclass(frozen=True)
class TokenizerRunConfig:
    """What tools/train_tokenizer.py resolves from YAML + overrides; saved as config.yaml in the output folder."""

    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    tokenizer_train: TokenizerTrainConfig = field(default_factory=TokenizerTrainConfig)

    def validate(self) -> None:
        self.data.validate()
        self.tokenizer.validate()
        self.tokenizer_train.validate()
        if self.data.image_size != self.tokenizer.image_size:
            raise ConfigError(
                f"data.image_size={self.data.image_size} but tokenizer.image_size={self.tokenizer.image_size}: "
                "the tokenizer trains on the images the data source produces, set both to the same size"
            )
