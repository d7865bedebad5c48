"""Prompt accuracy: does a generated image show what its shapes prompt asked for?

Each image is read by ``shapes_analyser.analyse_image`` and compared with the prompt's attribute
labels (``attrs`` of ``srdd_scale.data.shapes.ShapeSample``). Attributes the caption did not state
(size unless ``caption_fields`` lists it) are not scored.
"""

from __future__ import annotations

import itertools
from typing import Callable, Iterable, Optional, Sequence, Union

import numpy as np
from PIL import Image

from srdd_scale.data.shapes import SPLITS, iter_shapes
from srdd_scale.eval.shapes_analyser import DetectedObject, analyse_image

OBJECT_ATTRIBUTES = ("colour", "shape", "size", "position")
ALL_FIELDS = OBJECT_ATTRIBUTES + ("background",)
# The analyser must read dataset images at least this well before its scores of models mean anything.
REQUIRED_ANALYSER_ACCURACY = 0.98


def _match(expected: Sequence[dict], detected: Sequence[DetectedObject]) -> list[Optional[DetectedObject]]:
    """Assign detected objects to expected ones: most colour+shape agreements, then positions.

    Matching by appearance first means a prompt "red circle left of blue square" drawn swapped is
    scored as right objects in wrong positions, not as wrong objects.
    """
    padded = list(detected) + [None] * max(0, len(expected) - len(detected))

    def agreement(perm) -> tuple[int, int]:
        pairs = [(e, d) for e, d in zip(expected, perm) if d is not None]
        appearance = sum(d.colour == e["colour"] and d.shape == e["shape"] for e, d in pairs)
        return appearance, sum(d.position == e["position"] for e, d in pairs)

    return list(max(itertools.permutations(padded, len(expected)), key=agreement))


def score_image(image: Union[Image.Image, np.ndarray], attrs: dict) -> dict:
    """Per-image result: the analysis and, per expected object, which stated attributes are right."""
    analysis = analyse_image(image)
    expected = attrs["objects"]
    stated = set(attrs.get("caption_fields", ALL_FIELDS))
    matched = _match(expected, analysis.objects)
    objects = []
    for exp, det in zip(expected, matched):
        objects.append({
            attr: (det is not None and getattr(det, attr) == exp[attr])
            for attr in OBJECT_ATTRIBUTES if attr in stated
        })
    return {
        "analysis": analysis.to_dict(),
        "objects": objects,
        "count_correct": len(analysis.objects) == len(expected),
        "background_correct": analysis.background == attrs["background"] if "background" in stated else None,
        "colour_shape_correct": all(o["colour"] and o["shape"] for o in objects),
        "all_correct": len(analysis.objects) == len(expected) and all(all(o.values()) for o in objects),
    }


def _mean(values: list[bool]) -> Optional[float]:
    return float(np.mean(values)) if values else None


def prompt_accuracy(items: Iterable[tuple[Union[Image.Image, np.ndarray], dict]],
                    keep_details: bool = False) -> dict:
    """Score ``(image, attrs)`` pairs; returns a JSON-able dict of accuracies in [0, 1].

    ``accuracy[attr]`` is over expected objects whose caption states ``attr`` (None if none does);
    ``joint_colour_shape`` is the fraction of images whose every object has both colour and shape
    right; ``count`` the fraction with the right number of objects; ``all`` every stated object
    attribute right; ``background`` over images whose caption states it.
    """
    results = [score_image(image, attrs) for image, attrs in items]
    if not results:
        raise ValueError("prompt_accuracy got no (image, attrs) pairs to score")
    objects = [o for r in results for o in r["objects"]]
    summary = {
        "num_images": len(results),
        "num_objects": len(objects),
        "accuracy": {attr: _mean([o[attr] for o in objects if attr in o]) for attr in OBJECT_ATTRIBUTES},
        "joint_colour_shape": _mean([r["colour_shape_correct"] for r in results]),
        "count": _mean([r["count_correct"] for r in results]),
        "all": _mean([r["all_correct"] for r in results]),
        "background": _mean([r["background_correct"] for r in results if r["background_correct"] is not None]),
    }
    if keep_details:
        summary["details"] = results
    return summary


def soften(image: Image.Image, seed: int, scale: float = 0.75, noise_std: float = 8.0) -> Image.Image:
    """Low-resolution round trip plus Gaussian pixel noise: a stand-in for decoded/generated images."""
    side = image.size[0]
    low = max(1, round(side * scale))
    soft = image.resize((low, low), Image.Resampling.BILINEAR).resize((side, side), Image.Resampling.BICUBIC)
    noise = np.random.default_rng(seed).normal(0.0, noise_std, (side, side, 3))
    return Image.fromarray(np.clip(np.asarray(soft, dtype=np.float64) + noise, 0, 255).astype(np.uint8))


def analyser_accuracy(seed: int, count_per_split: int, image_size: int = 64,
                      degrade: Optional[Callable[[Image.Image, int], Image.Image]] = None) -> dict:
    """Accuracy of the analyser itself on dataset images of both splits, every attribute scored.

    ``degrade(image, index)`` optionally transforms each image first (e.g. ``soften``). ``min`` is the worst of all
    accuracies; ``passed`` says whether it reaches ``REQUIRED_ANALYSER_ACCURACY``.
    """
    result: dict = {"seed": seed, "count_per_split": count_per_split, "image_size": image_size}
    for split in SPLITS:
        samples = iter_shapes(split, seed, image_size, count=count_per_split)
        result[split] = prompt_accuracy(
            (degrade(s.image, s.attrs["index"]) if degrade else s.image, {**s.attrs, "caption_fields": ALL_FIELDS})
            for s in samples
        )
    result["min"] = min(
        value
        for split in SPLITS
        for value in [*result[split]["accuracy"].values(), result[split]["count"], result[split]["background"]]
    )
    result["passed"] = result["min"] >= REQUIRED_ANALYSER_ACCURACY
    return result
