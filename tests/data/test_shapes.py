"""Synthetic captioned shapes: determinism, caption/attribute consistency, held-out disjointness."""

import itertools
import json
import re

import numpy as np
import pytest

from srdd_scale.data import shapes
from srdd_scale.data.shapes import (
    BACKGROUNDS,
    COLOURS,
    HELDOUT_PAIRS,
    POSITIONS,
    SHAPES,
    SIZES,
    generate_shape_sample,
    iter_shapes,
)


def test_vocabulary_is_rich_enough():
    assert len(SHAPES) >= 5 and len(COLOURS) >= 8 and 2 <= len(SIZES) <= 3
    assert set(POSITIONS) == {"left", "right", "top", "bottom", "centre"}
    assert len(BACKGROUNDS) >= 2 and not set(BACKGROUNDS) & set(COLOURS)
    # Every colour and every shape still appears in training in some combination.
    for colour in COLOURS:
        assert any((colour, s) not in HELDOUT_PAIRS for s in SHAPES)
    for shape in SHAPES:
        assert any((c, shape) not in HELDOUT_PAIRS for c in COLOURS)


def test_colours_are_well_separated():
    rgb = np.array(list(shapes.COLOUR_RGB.values()) + list(shapes.BACKGROUND_RGB.values()), float)
    distances = np.linalg.norm(rgb[:, None] - rgb[None], axis=-1)
    assert distances[~np.eye(len(rgb), dtype=bool)].min() > 80


@pytest.mark.parametrize("split", ["train", "heldout"])
def test_same_seed_same_bytes(split):
    for index in (0, 7, 123456):
        a = generate_shape_sample(index, split, seed=3, image_size=64)
        b = generate_shape_sample(index, split, seed=3, image_size=64)
        assert a.image.tobytes() == b.image.tobytes()
        assert a.caption == b.caption and a.attrs == b.attrs


def test_different_seed_or_index_differs():
    base = [generate_shape_sample(i, "train", seed=0).image.tobytes() for i in range(20)]
    other_seed = [generate_shape_sample(i, "train", seed=1).image.tobytes() for i in range(20)]
    assert sum(a != b for a, b in zip(base, other_seed)) >= 18
    assert len(set(base)) == 20


def test_image_format_and_size():
    for size in (32, 64, 96):
        sample = generate_shape_sample(5, "train", seed=0, image_size=size)
        assert sample.image.mode == "RGB" and sample.image.size == (size, size)
    with pytest.raises(ValueError, match="image_size"):
        generate_shape_sample(0, "train", seed=0, image_size=8)
    with pytest.raises(ValueError, match="'valid'.*train"):
        generate_shape_sample(0, "valid", seed=0)


def test_antialiased_but_interior_colour_exact():
    sample = generate_shape_sample(0, "train", seed=0)
    pixels = np.asarray(sample.image).reshape(-1, 3)
    colours = {tuple(p) for p in pixels}
    obj_rgb = shapes.COLOUR_RGB[sample.attrs["objects"][0]["colour"]]
    bg_rgb = shapes.BACKGROUND_RGB[sample.attrs["background"]]
    assert obj_rgb in colours and bg_rgb in colours
    assert len(colours) > 2  # edge pixels are blends, not a hard two-colour image


def _words(pattern_words, caption):
    regex = r"\b(" + "|".join(sorted(pattern_words, key=len, reverse=True)) + r")\b"
    return re.findall(regex, caption)


def test_caption_states_exactly_the_attributes():
    seen_templates = set()
    for split, index in itertools.product(("train", "heldout"), range(400)):
        sample = generate_shape_sample(index, split, seed=11)
        attrs, caption = sample.attrs, sample.caption
        json.dumps(attrs)  # stored as an MDS json column
        objects = attrs["objects"]
        assert len(objects) in (1, 2) and attrs["split"] == split and attrs["index"] == index
        # colour/shape words appear in caption order and match the objects.
        assert _words(COLOURS, caption) == [o["colour"] for o in objects]
        assert _words(SHAPES, caption) == [o["shape"] for o in objects]
        fields = attrs["caption_fields"]
        if "size" in fields:
            assert _words(SIZES, caption) == [o["size"] for o in objects]
        else:
            assert _words(SIZES, caption) == []
        assert _words(BACKGROUNDS, caption) == ([attrs["background"]] if "background" in fields else [])
        if len(objects) == 1:
            assert attrs["relation"] is None
            phrase = {"left": "on the left", "right": "on the right", "top": "at the top",
                      "bottom": "at the bottom", "centre": "in the centre"}[objects[0]["position"]]
            assert phrase in caption
        else:
            relation = attrs["relation"]
            phrase = {"left_of": " to the left of ", "right_of": " to the right of ",
                      "above": " above ", "below": " below "}[relation]
            assert phrase in caption
            assert tuple(o["position"] for o in objects) == shapes.RELATIONS[relation]
        seen_templates.add(re.sub(r"\b(" + "|".join(COLOURS + SHAPES + SIZES + BACKGROUNDS) + r")\b",
                                  "X", caption))
    assert len(seen_templates) >= 8


def test_heldout_combinations_never_in_train():
    train_pairs = set()
    for sample in iter_shapes("train", seed=5, image_size=32, count=3000):
        pairs = {(o["colour"], o["shape"]) for o in sample.attrs["objects"]}
        assert not pairs & HELDOUT_PAIRS, (sample.attrs, sample.caption)
        train_pairs |= pairs
    assert len(train_pairs) == len(COLOURS) * len(SHAPES) - len(HELDOUT_PAIRS)
    heldout_seen = set()
    for sample in iter_shapes("heldout", seed=5, image_size=32, count=600):
        pairs = {(o["colour"], o["shape"]) for o in sample.attrs["objects"]}
        assert pairs & HELDOUT_PAIRS, (sample.attrs, sample.caption)
        heldout_seen |= pairs & HELDOUT_PAIRS
    assert heldout_seen == HELDOUT_PAIRS


def test_attribute_coverage():
    samples = [s.attrs for s in iter_shapes("train", seed=0, image_size=32, count=600)]
    objects = [o for a in samples for o in a["objects"]]
    assert {o["position"] for o in objects} == set(POSITIONS)
    assert {o["size"] for o in objects} == set(SIZES)
    assert {a["background"] for a in samples} == set(BACKGROUNDS)
    two = sum(len(a["objects"]) == 2 for a in samples) / len(samples)
    assert 0.25 < two < 0.55
    assert {a["relation"] for a in samples} == {None, *shapes.RELATIONS}


def test_streaming_large_index_is_pure_function():
    start = 10**12
    streamed = list(iter_shapes("heldout", seed=2, image_size=32, start=start, count=5))
    assert [s.attrs["index"] for s in streamed] == list(range(start, start + 5))
    direct = generate_shape_sample(start + 3, "heldout", seed=2, image_size=32)
    assert streamed[3].image.tobytes() == direct.image.tobytes()
    # An unbounded stream is lazy: taking a few items from it terminates.
    assert len(list(itertools.islice(iter_shapes("train", seed=2, image_size=32), 3))) == 3


def test_class_id_range():
    ids = {shapes.class_id(s.attrs) for s in iter_shapes("train", seed=0, image_size=32, count=400)}
    assert ids <= set(range(shapes.NUM_CLASSES)) and len(ids) > 30
