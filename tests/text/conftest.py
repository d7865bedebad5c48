import os

# Nothing in these tests may reach a model hub; local_files_only is also passed explicitly.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest

from srdd_scale.data.shapes import iter_shapes
from srdd_scale.text import train_sentencepiece


@pytest.fixture(scope="session")
def shapes_captions() -> list[str]:
    return [s.caption for s in iter_shapes("train", seed=0, image_size=16, count=300)]


@pytest.fixture(scope="session")
def spm_model(tmp_path_factory, shapes_captions):
    return train_sentencepiece(shapes_captions, tmp_path_factory.mktemp("spm") / "shapes", vocab_size=128)
