"""Tiny models and inputs shared by the model tests (CPU, seconds)."""
import pytest
import torch

from srdd_scale.model import ModelConfig, build_model

PATCH_NUMS = (1, 2, 3, 4)
VOCAB = 64
LATENT = 8
TEXT_DIM = 16
SEQ_LEN = sum(p * p for p in PATCH_NUMS)


def tiny_model(mask: str = "markovian", depth: int = 2, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    # alng well above VAR's 1e-3 so residual branches matter at init and dependence tests are sensitive.
    overrides.setdefault("alng", 0.3)
    cfg = ModelConfig(depth=depth, mask=mask, **overrides)
    text_dim = TEXT_DIM if cfg.cross_attn else None
    return build_model(cfg, PATCH_NUMS, VOCAB, LATENT, text_dim).eval()


@pytest.fixture(autouse=True)
def one_thread():
    """2 shared cores: one intra-op thread avoids oversubscription that makes tiny models 10x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def batch():
    """Random teacher-forcing inputs, text states with padding, class ids and target codes."""
    gen = torch.Generator().manual_seed(1)
    text_mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.bool)
    return {
        "teacher_inputs": torch.randn(3, SEQ_LEN - 1, LATENT, generator=gen),
        "text_states": torch.randn(3, 5, TEXT_DIM, generator=gen),
        "text_mask": text_mask,
        "targets": torch.randint(0, VOCAB, (3, SEQ_LEN), generator=gen),
    }
