import shutil
import tempfile

import pytest

from srdd_scale.data.config import DataConfig
from srdd_scale.data.pretokenize import PretokenizeConfig, merge_parts, pretokenize_part
from srdd_scale.data.shapes import iter_shapes
from srdd_scale.text import TextConfig, load_text_tokenizer, train_sentencepiece
from srdd_scale.tokenizer import TokenizerConfig, build_tokenizer

TINY_TOKENIZER = TokenizerConfig(image_size=32, ch=16, ch_mult=(1, 2, 2), num_res_blocks=1, latent_dim=8,
                                 vocab_size=64, patch_nums=(1, 2, 4, 8), norm_groups=8)


@pytest.fixture(autouse=True)
def own_tmpdir(monkeypatch, tmp_path_factory):
    """streaming keeps filelocks in the temp dir; one per test so leftovers never collide (env.md).

    Short and under /tmp, not inside pytest's deep tmp_path: multiprocessing puts its AF_UNIX sockets in
    TMPDIR, and their paths may not exceed 107 characters.
    """
    tmp_path_factory.getbasetemp()  # pytest's base temp dir is derived from TMPDIR once: fix it before we move it
    tmp = tempfile.mkdtemp(prefix="srdd-", dir="/tmp")
    monkeypatch.setenv("TMPDIR", tmp)
    monkeypatch.setattr(tempfile, "tempdir", None)
    yield
    tempfile.tempdir = None
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def image_tokenizer():
    import torch

    torch.manual_seed(0)
    return build_tokenizer(TINY_TOKENIZER)


@pytest.fixture(scope="session")
def text_cfg(tmp_path_factory) -> TextConfig:
    captions = [s.caption for s in iter_shapes("train", seed=0, image_size=16, count=300)]
    model = train_sentencepiece(captions, tmp_path_factory.mktemp("spm") / "shapes", vocab_size=128)
    return TextConfig(tokenizer=str(model), max_length=64)


@pytest.fixture(scope="session")
def text_tokenizer(text_cfg):
    return load_text_tokenizer(text_cfg)


def _shapes_config(text_cfg, **data) -> PretokenizeConfig:
    data = {"image_size": 32, "synthetic_train_samples": 24, "synthetic_heldout_samples": 8,
            "encode_batch_size": 8, "decode_workers": 1} | data
    return PretokenizeConfig(data=DataConfig(**data), text=text_cfg)


@pytest.fixture(scope="session")
def shapes_config(text_cfg):
    """Factory: a PretokenizeConfig for a few 32 px synthetic shapes, ``data`` fields overridable."""
    return lambda **data: _shapes_config(text_cfg, **data)


@pytest.fixture(scope="session")
def other_image_tokenizer():
    """Same architecture as ``image_tokenizer``, other weights: its shards must be refused."""
    import torch

    torch.manual_seed(1)
    return build_tokenizer(TINY_TOKENIZER)


@pytest.fixture(scope="session")
def shapes_shards(tmp_path_factory, image_tokenizer, text_tokenizer, text_cfg):
    """24 train + 8 held-out synthetic samples, pretokenized once per session."""
    root = tmp_path_factory.mktemp("shards")
    cfg = _shapes_config(text_cfg)
    for split in ("train", "heldout"):
        pretokenize_part(cfg, root / split, image_tokenizer, text_tokenizer, split)
        merge_parts(root / split, 1)
    return root
