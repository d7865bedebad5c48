"""configs/model/d*.yaml resolve, validate and differ from the shared skeleton only in depth (and alng)."""
from pathlib import Path

import pytest

from srdd_scale.config import build, read_yaml
from srdd_scale.model import ModelConfig

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "model"


@pytest.mark.parametrize("depth", [4, 6, 8, 12, 16, 20, 24, 30, 36])
def test_depth_configs(depth):
    cfg = build(ModelConfig, read_yaml(CONFIG_DIR / f"d{depth}.yaml")["model"], "model")
    cfg.validate()
    assert (cfg.depth, cfg.embed_dim, cfg.heads) == (depth, 64 * depth, depth)
    own = read_yaml(CONFIG_DIR / f"d{depth}.yaml")["model"]
    base = read_yaml(CONFIG_DIR / "base.yaml")["model"]
    assert {k for k in own if own[k] != base[k]} <= {"depth", "alng"}
