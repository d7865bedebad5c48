"""Tiny tokenizer configs shared by the tokenizer tests (a few thousand parameters, milliseconds per call)."""
import pytest
import torch

from srdd_scale.tokenizer import TokenizerConfig, build_tokenizer

TINY = TokenizerConfig(image_size=16, ch=8, ch_mult=(1, 2), num_res_blocks=1, latent_dim=4, vocab_size=32,
                       patch_nums=(1, 2, 4, 8), share_quant_resi=2, norm_groups=4)


@pytest.fixture
def tiny_cfg() -> TokenizerConfig:
    return TINY


@pytest.fixture
def tiny_tokenizer():
    torch.manual_seed(0)
    tokenizer = build_tokenizer(TINY).eval()
    with torch.no_grad():  # spread the codebook so that every scale picks varied codes
        tokenizer.quantize.embedding.weight.normal_(0, 0.3)
    return tokenizer


@pytest.fixture
def images() -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.rand(3, 3, 16, 16, generator=generator) * 2 - 1
