"""The pixel-level shapes analyser reads back the attributes the generator drew."""

import numpy as np
import pytest
from PIL import Image, ImageDraw

from srdd_scale.data.shapes import BACKGROUND_RGB, COLOUR_RGB, draw_shape, generate_shape_sample
from srdd_scale.eval.prompt_accuracy import analyser_accuracy, soften
from srdd_scale.eval.shapes_analyser import analyse_image

SAMPLES_PER_SPLIT = 120
_ORDER = ("left", "top", "right", "bottom", "centre")


def test_accuracy_on_dataset_images_at_least_98_percent():
    result = analyser_accuracy(seed=21, count_per_split=SAMPLES_PER_SPLIT)
    assert result["passed"] and result["min"] >= 0.98, result
    for split in ("train", "heldout"):
        assert result[split]["num_images"] == SAMPLES_PER_SPLIT
        assert set(result[split]["accuracy"]) == {"colour", "shape", "size", "position"}


def test_accuracy_after_low_resolution_round_trip_and_noise():
    """Decoded/generated images are softer and noisier than dataset images."""
    result = analyser_accuracy(seed=22, count_per_split=SAMPLES_PER_SPLIT,
                               degrade=lambda image, index: soften(image, seed=index))
    assert result["min"] >= 0.95, result


def test_other_image_size():
    sample = generate_shape_sample(3, "train", seed=0, image_size=128)
    analysis = analyse_image(sample.image)
    assert [(o.colour, o.shape) for o in analysis.objects] == [
        (o["colour"], o["shape"]) for o in sorted(sample.attrs["objects"], key=lambda o: _ORDER.index(o["position"]))
    ]


def test_blank_image_has_no_objects():
    blank = Image.new("RGB", (64, 64), BACKGROUND_RGB["grey"])
    analysis = analyse_image(blank)
    assert analysis.objects == () and analysis.background == "grey" and analysis.relation is None


@pytest.mark.parametrize("shape", ["circle", "square", "triangle", "star", "cross", "heart"])
def test_each_shape_drawn_directly(shape):
    canvas = Image.new("RGB", (256, 256), BACKGROUND_RGB["black"])
    draw_shape(ImageDraw.Draw(canvas), shape, (40.0, 100.0, 120.0, 180.0), COLOUR_RGB["cyan"])
    image = canvas.resize((64, 64), Image.Resampling.BOX)
    (obj,) = analyse_image(image).objects
    assert (obj.shape, obj.colour, obj.size, obj.position) == (shape, "cyan", "medium", "left")
    assert obj.centre == pytest.approx((0.3125, 0.5469), abs=0.02)


def test_two_objects_relation_and_order():
    sample = next(
        s for s in (generate_shape_sample(i, "train", seed=4) for i in range(200))
        if s.attrs["relation"] in ("right_of", "below")
    )
    analysis = analyse_image(sample.image)
    first, second = sample.attrs["objects"]
    # The analyser lists the left/top object first, i.e. the caption's second one here.
    assert analysis.relation == {"right_of": "left_of", "below": "above"}[sample.attrs["relation"]]
    assert (analysis.objects[0].colour, analysis.objects[0].shape) == (second["colour"], second["shape"])
    assert (analysis.objects[1].colour, analysis.objects[1].shape) == (first["colour"], first["shape"])


def test_rejects_wrong_array():
    with pytest.raises(ValueError, match=r"uint8 array \(H, W, 3\).*float64"):
        analyse_image(np.zeros((64, 64, 3)))
