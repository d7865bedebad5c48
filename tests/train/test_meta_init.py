"""FSDP and ZeRO-3 never build the whole model on a rank; the weights they initialise equal a single process's."""

import pytest
import torch
from safetensors.torch import load_file

from srdd_scale.run_config import RunConfig
from srdd_scale.train.task import SRDDTask

from tests.helpers.training import Ranks

RANK_SCRIPT = __import__("pathlib").Path(__file__).with_name("init_weights_rank.py")
# A d3 model with text cross-attention and classes (every kind of parameter), odd widths so shards are uneven.
OVERRIDES = ["model.depth=3", "model.width=72", "model.num_heads=3", "model.num_classes=5",
             "tokenizer.image_size=32", "tokenizer.ch=8", "tokenizer.ch_mult=[1,2,2]", "tokenizer.num_res_blocks=1",
             "tokenizer.latent_dim=4", "tokenizer.vocab_size=40", "tokenizer.patch_nums=[1,2,4,8]",
             "tokenizer.norm_groups=4", "text.encoder=tiny_t5", "text.d_model=24", "text.num_heads=2",
             "text.d_ff=32", "text.num_layers=1", "train.global_batch_size=4", "train.precision=fp32",
             "train.seed=7"]


def single_process_init() -> dict[str, torch.Tensor]:
    cfg = RunConfig.load([], OVERRIDES)
    task = SRDDTask(cfg, torch.device("cpu"))
    torch.manual_seed(cfg.train.seed)
    return task.build_model().state_dict()


@pytest.mark.slow
@pytest.mark.world_size(2)
@pytest.mark.parametrize("backend, world", [("fsdp", 1), ("fsdp", 2), ("ddp", 2), ("deepspeed", 1), ("deepspeed", 2)])
def test_initial_weights_equal_single_process_init_bitwise(tmp_path, backend, world):
    """FSDP: meta build + sharded materialisation; DeepSpeed: ZeRO-3 under ``deepspeed.zero.Init``."""
    out = tmp_path / "init.safetensors"
    overrides = [*OVERRIDES, f"parallel.backend={backend}", "parallel.zero_stage=3", "train.non_finite=stop"]
    ranks = Ranks(overrides, tmp_path, world=world, script=RANK_SCRIPT, args=(str(out),))
    assert ranks.wait() == [0] * world, ranks.output()
    built = load_file(out)
    expected = single_process_init()
    assert set(built) == set(expected)
    for name, value in expected.items():
        assert torch.equal(built[name], value), name


def test_meta_build_holds_no_storage_and_draws_like_a_full_build():
    from srdd_scale.train.backends.fsdp import FSDPBackend

    cfg = RunConfig.load([], OVERRIDES)
    task = SRDDTask(cfg, torch.device("cpu"))
    torch.manual_seed(cfg.train.seed)
    with FSDPBackend.construction(cfg.parallel, cfg.train):
        meta = task.build_model()
    assert all(p.is_meta for p in meta.parameters())
    expected = single_process_init()
    for name in ("pos_embed", "blocks.2.ada_lin.1.weight", "head.out.weight", "blocks.0.attn.scale_mul"):
        assert torch.equal(meta.initial_parameter(name), expected[name]), name
