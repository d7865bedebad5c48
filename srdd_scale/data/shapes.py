"""Deterministic synthetic captioned shapes: the stack's embedded default data source.

Sample ``i`` of a split is a pure function of ``(seed, split, i)``, so any number of samples can be
streamed in O(1) memory, sharded without coordination and regenerated later for scoring. Every
sample carries its attribute labels; ``srdd_scale.eval.shapes_analyser`` reads the same attributes
back from pixels. The ``heldout`` split contains only colour x shape pairs (``HELDOUT_PAIRS``) that
``train`` never shows, to measure compositional generalisation.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np
from PIL import Image, ImageDraw

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "heart")

# Saturated colours at least ~90 apart in RGB (nearest pair: orange/yellow), so that a small model
# can tell them apart and the analyser can classify by nearest colour.
COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (230, 25, 25),
    "orange": (255, 140, 0),
    "yellow": (250, 230, 20),
    "green": (20, 170, 40),
    "cyan": (0, 210, 230),
    "blue": (20, 50, 230),
    "purple": (130, 30, 190),
    "pink": (255, 105, 180),
}
COLOURS: tuple[str, ...] = tuple(COLOUR_RGB)

# Backgrounds are neutral so that they never share a name or a hue with a shape colour.
BACKGROUND_RGB: dict[str, tuple[int, int, int]] = {
    "white": (245, 245, 245),
    "grey": (128, 128, 128),
    "black": (15, 15, 15),
}
BACKGROUNDS: tuple[str, ...] = tuple(BACKGROUND_RGB)

# Side of the shape's bounding box as a fraction of the image side. `large` fits in half the image
# with a margin, so two shapes side by side never touch.
SIZE_FRACTIONS: dict[str, float] = {"small": 0.2, "medium": 0.3, "large": 0.4}
SIZES: tuple[str, ...] = tuple(SIZE_FRACTIONS)

# Nominal centre (x, y) of each position, as fractions of the image side (y grows downwards).
POSITION_CENTRES: dict[str, tuple[float, float]] = {
    "left": (0.25, 0.5),
    "right": (0.75, 0.5),
    "top": (0.5, 0.25),
    "bottom": (0.5, 0.75),
    "centre": (0.5, 0.5),
}
POSITIONS: tuple[str, ...] = tuple(POSITION_CENTRES)

# Relation of the first object to the second in two-shape images -> (position of first, of second).
RELATIONS: dict[str, tuple[str, str]] = {
    "left_of": ("left", "right"),
    "right_of": ("right", "left"),
    "above": ("top", "bottom"),
    "below": ("bottom", "top"),
}

# One reserved colour per shape, every colour reserved at most once: train still shows every colour
# and every shape, only these combinations are new in `heldout`.
HELDOUT_PAIRS: frozenset[tuple[str, str]] = frozenset(
    {
        ("blue", "circle"),
        ("green", "square"),
        ("red", "triangle"),
        ("yellow", "star"),
        ("purple", "cross"),
        ("orange", "heart"),
    }
)
SPLITS: tuple[str, ...] = ("train", "heldout")
NUM_CLASSES: int = len(COLOURS) * len(SHAPES)

TWO_SHAPE_PROBABILITY = 0.4
SIZE_MENTION_PROBABILITY = 0.5
POSITION_JITTER = 0.03  # max offset of a centre from its nominal position (fraction of the side)
EDGE_MARGIN = 0.04  # min gap between a shape and its region's border (fraction of the side)
SUPERSAMPLE = 4  # draw at 4x and box-downsample: smooth edges, interiors keep their exact colour

_POSITION_PHRASES = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "centre": "in the centre",
}
_RELATION_PHRASES = {
    "left_of": "to the left of",
    "right_of": "to the right of",
    "above": "above",
    "below": "below",
}
_SINGLE_TEMPLATES = (
    "{obj} {pos}",
    "there is {obj} {pos}",
    "a picture of {obj} {pos}",
    "{obj} {pos} on a {bg} background",
    "{pos}, {obj}",
)
_PAIR_TEMPLATES = (
    "{obj} {rel} {obj2}",
    "a picture of {obj} {rel} {obj2}",
    "{obj} {rel} {obj2} on a {bg} background",
)


@dataclass(frozen=True)
class ShapeSample:
    """One generated image, its caption and the attributes the caption was made from.

    ``attrs`` is JSON-able: ``objects`` (list of dicts with ``shape``, ``colour``, ``size``,
    ``position``, in caption order), ``relation`` (None or a key of ``RELATIONS``), ``background``,
    ``caption_fields`` (which attributes the caption states: always colour, shape, position; size and
    background only when mentioned), ``split`` and ``index``.
    """

    image: Image.Image
    caption: str
    attrs: dict


@functools.cache
def unit_outline(shape: str, points: int = 64) -> np.ndarray:
    """Outline of ``shape`` as read-only float array (N, 2), scaled so its bounding box is [-1, 1]^2.

    Shared by the generator and the analyser so that templates match drawn shapes exactly; cached
    because the analyser draws thousands of templates.
    """
    if shape == "circle":
        angles = np.linspace(0.0, 2 * math.pi, points, endpoint=False)
        outline = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    elif shape == "square":
        outline = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=float)
    elif shape == "triangle":
        outline = np.array([[0, -1], [1, 1], [-1, 1]], dtype=float)
    elif shape == "star":
        angles = -math.pi / 2 + np.arange(10) * math.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
        outline = np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)
    elif shape == "cross":
        a = 0.35  # half thickness of the arms
        outline = np.array(
            [[-a, -1], [a, -1], [a, -a], [1, -a], [1, a], [a, a], [a, 1], [-a, 1], [-a, a],
             [-1, a], [-1, -a], [-a, -a]],
            dtype=float,
        )
    elif shape == "heart":
        t = np.linspace(0.0, 2 * math.pi, points, endpoint=False)
        x = 16 * np.sin(t) ** 3
        y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
        outline = np.stack([x, y], axis=1)
    else:
        raise ValueError(f"Unknown shape {shape!r}; expected one of {list(SHAPES)}")
    low, high = outline.min(axis=0), outline.max(axis=0)
    outline = (outline - low) / (high - low) * 2.0 - 1.0
    outline.setflags(write=False)
    return outline


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: tuple[float, float, float, float],
               fill: tuple[int, int, int] | int) -> None:
    """Fill ``shape`` stretched to the pixel bounding box ``box = (x0, y0, x1, y1)``.

    ``fill`` is an RGB tuple for the generator, or an int when the analyser draws grey templates.
    """
    x0, y0, x1, y1 = box
    outline = unit_outline(shape)
    xs = x0 + (outline[:, 0] + 1.0) * 0.5 * (x1 - x0)
    ys = y0 + (outline[:, 1] + 1.0) * 0.5 * (y1 - y0)
    draw.polygon(list(zip(xs.tolist(), ys.tolist())), fill=fill)


def class_id(attrs: dict) -> int:
    """Class index of the first object's (colour, shape) pair, in ``range(NUM_CLASSES)``."""
    first = attrs["objects"][0]
    return COLOURS.index(first["colour"]) * len(SHAPES) + SHAPES.index(first["shape"])


def _rng(seed: int, split: str, index: int) -> np.random.Generator:
    if split not in SPLITS:
        raise ValueError(f"Unknown shapes split {split!r}; expected one of {list(SPLITS)}")
    if index < 0:
        raise ValueError(f"Sample index must be >= 0, got {index}")
    return np.random.default_rng(np.random.SeedSequence([int(seed), SPLITS.index(split), int(index)]))


def _pick(rng: np.random.Generator, options) -> str:
    return options[int(rng.integers(len(options)))]


_TRAIN_COLOURS_BY_SHAPE = {
    shape: tuple(c for c in COLOURS if (c, shape) not in HELDOUT_PAIRS) for shape in SHAPES
}
_HELDOUT_LIST = tuple(sorted(HELDOUT_PAIRS))


def _sample_pair(rng: np.random.Generator, heldout: bool) -> tuple[str, str]:
    if heldout:
        return _HELDOUT_LIST[int(rng.integers(len(_HELDOUT_LIST)))]
    shape = _pick(rng, SHAPES)
    return _pick(rng, _TRAIN_COLOURS_BY_SHAPE[shape]), shape


def _centre(rng: np.random.Generator, position: str, size: float, region: tuple[float, float, float, float]
            ) -> tuple[float, float]:
    """Jittered nominal centre, clamped so the shape stays inside ``region`` with a margin."""
    lo_x, lo_y, hi_x, hi_y = region
    half = size / 2 + EDGE_MARGIN
    centre = []
    for nominal, lo, hi in zip(POSITION_CENTRES[position], (lo_x, lo_y), (hi_x, hi_y)):
        value = nominal + rng.uniform(-POSITION_JITTER, POSITION_JITTER)
        centre.append(min(max(value, lo + half), hi - half))
    return centre[0], centre[1]


_REGIONS = {
    "left": (0.0, 0.0, 0.5, 1.0),
    "right": (0.5, 0.0, 1.0, 1.0),
    "top": (0.0, 0.0, 1.0, 0.5),
    "bottom": (0.0, 0.5, 1.0, 1.0),
}


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _object_phrase(obj: dict, with_size: bool) -> str:
    words = ([obj["size"]] if with_size else []) + [obj["colour"], obj["shape"]]
    return f"{_article(words[0])} {' '.join(words)}"


def generate_shape_sample(index: int, split: str, seed: int, image_size: int = 64) -> ShapeSample:
    """Sample ``index`` of ``split`` (``train`` or ``heldout``): a pure function of its arguments."""
    if image_size < 16:
        raise ValueError(f"Shapes image_size must be >= 16 pixels, got {image_size}")
    rng = _rng(seed, split, index)
    heldout = split == "heldout"
    two_shapes = rng.random() < TWO_SHAPE_PROBABILITY
    background = _pick(rng, BACKGROUNDS)
    with_size = bool(rng.random() < SIZE_MENTION_PROBABILITY)

    if two_shapes:
        relation = _pick(rng, tuple(RELATIONS))
        positions = RELATIONS[relation]
        # In heldout, one of the two objects (either) carries the reserved pair.
        reserved_slot = int(rng.integers(2)) if heldout else -1
        pairs = [_sample_pair(rng, slot == reserved_slot) for slot in range(2)]
        regions = [_REGIONS[p] for p in positions]
        template = _pick(rng, _PAIR_TEMPLATES)
    else:
        relation = None
        positions = (_pick(rng, POSITIONS),)
        pairs = [_sample_pair(rng, heldout)]
        regions = [(0.0, 0.0, 1.0, 1.0)]
        template = _pick(rng, _SINGLE_TEMPLATES)

    canvas = image_size * SUPERSAMPLE
    image = Image.new("RGB", (canvas, canvas), BACKGROUND_RGB[background])
    draw = ImageDraw.Draw(image)
    objects = []
    for (colour, shape), position, region in zip(pairs, positions, regions):
        size = _pick(rng, SIZES)
        side = SIZE_FRACTIONS[size]
        cx, cy = _centre(rng, position, side, region)
        box = tuple(v * canvas for v in (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2))
        draw_shape(draw, shape, box, COLOUR_RGB[colour])
        objects.append({"shape": shape, "colour": colour, "size": size, "position": position})
    image = image.resize((image_size, image_size), Image.Resampling.BOX)

    caption = template.format(
        obj=_object_phrase(objects[0], with_size),
        obj2=_object_phrase(objects[1], with_size) if two_shapes else "",
        pos=_POSITION_PHRASES[positions[0]],
        rel=_RELATION_PHRASES[relation] if relation else "",
        bg=background,
    )
    fields = ["colour", "shape", "position"] + (["size"] if with_size else [])
    if "{bg}" in template:
        fields.append("background")
    attrs = {
        "objects": objects,
        "relation": relation,
        "background": background,
        "caption_fields": fields,
        "split": split,
        "index": int(index),
    }
    return ShapeSample(image=image, caption=caption, attrs=attrs)


def iter_shapes(split: str, seed: int, image_size: int = 64, start: int = 0,
                count: Optional[int] = None) -> Iterator[ShapeSample]:
    """Stream samples ``start, start+1, ...`` (forever when ``count`` is None) in O(1) memory."""
    index = start
    while count is None or index < start + count:
        yield generate_shape_sample(index, split, seed, image_size)
        index += 1
