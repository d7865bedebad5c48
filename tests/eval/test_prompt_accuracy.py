"""Prompt accuracy scores what the caption asked for, and only that."""

import copy
import json

import pytest
from PIL import Image

from srdd_scale.data.shapes import BACKGROUND_RGB, generate_shape_sample, iter_shapes
from srdd_scale.eval.prompt_accuracy import prompt_accuracy, score_image


def _first(predicate, split="train", seed=3):
    return next(s for s in iter_shapes(split, seed, 64, count=500) if predicate(s.attrs))


def test_dataset_images_score_perfectly_and_result_is_json():
    samples = list(iter_shapes("heldout", seed=8, image_size=64, count=40))
    result = prompt_accuracy([(s.image, s.attrs) for s in samples])
    json.dumps(result)
    assert result["num_images"] == 40 and result["num_objects"] > 40
    assert result["accuracy"] == {"colour": 1.0, "shape": 1.0, "size": 1.0, "position": 1.0}
    assert result["joint_colour_shape"] == result["count"] == result["all"] == 1.0


def test_wrong_colour_and_wrong_shape_are_counted():
    sample = _first(lambda a: len(a["objects"]) == 1)
    wrong_colour = copy.deepcopy(sample.attrs)
    obj = wrong_colour["objects"][0]
    obj["colour"] = "blue" if obj["colour"] != "blue" else "red"
    result = score_image(sample.image, wrong_colour)
    assert result["objects"][0]["colour"] is False and result["objects"][0]["shape"] is True
    assert not result["colour_shape_correct"] and not result["all_correct"]

    wrong_shape = copy.deepcopy(sample.attrs)
    wrong_shape["objects"][0]["shape"] = "star" if obj["shape"] != "star" else "heart"
    summary = prompt_accuracy([(sample.image, sample.attrs), (sample.image, wrong_shape)])
    assert summary["accuracy"]["shape"] == 0.5 and summary["accuracy"]["colour"] == 1.0
    assert summary["joint_colour_shape"] == 0.5


def test_swapped_pair_is_right_objects_in_wrong_positions():
    sample = _first(lambda a: a["relation"] == "left_of")
    swapped = copy.deepcopy(sample.attrs)
    swapped["relation"] = "right_of"
    for obj, position in zip(swapped["objects"], ("right", "left")):
        obj["position"] = position
    result = score_image(sample.image, swapped)
    assert [o["position"] for o in result["objects"]] == [False, False]
    assert result["colour_shape_correct"] and result["count_correct"]


def test_unstated_size_is_not_scored():
    sample = _first(lambda a: "size" not in a["caption_fields"] and len(a["objects"]) == 1)
    other_size = copy.deepcopy(sample.attrs)
    other_size["objects"][0]["size"] = "small" if other_size["objects"][0]["size"] != "small" else "large"
    result = prompt_accuracy([(sample.image, other_size)])
    assert result["accuracy"]["size"] is None and result["all"] == 1.0
    stated = {**other_size, "caption_fields": [*other_size["caption_fields"], "size"]}
    assert prompt_accuracy([(sample.image, stated)])["accuracy"]["size"] == 0.0


def test_blank_image_scores_zero():
    attrs = generate_shape_sample(0, "train", seed=0).attrs
    blank = Image.new("RGB", (64, 64), BACKGROUND_RGB[attrs["background"]])
    result = prompt_accuracy([(blank, attrs)])
    assert result["count"] == 0.0 and result["joint_colour_shape"] == 0.0
    assert result["accuracy"]["colour"] == result["accuracy"]["position"] == 0.0


def test_empty_input_is_an_error():
    with pytest.raises(ValueError, match="no \\(image, attrs\\) pairs"):
        prompt_accuracy([])
