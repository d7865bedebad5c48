"""Read colour, shape, size and position of the shapes in an image from its pixels.

Deterministic and model-free, so that prompt accuracy of generated images can be scored without a
learned classifier. It segments what differs from the background (estimated from the image border),
then for each connected blob: colour = nearest named colour to the median of the blob pixels least
blended with the background; shape = the template (``srdd_scale.data.shapes.unit_outline``, its
square box fitted to the blob with sub-pixel steps) with the highest soft IoU; size = nearest box
side; position = nearest nominal centre (one blob) or the dominant axis between two blobs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional, Union

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from srdd_scale.data.shapes import (
    BACKGROUND_RGB,
    COLOUR_RGB,
    POSITION_CENTRES,
    SHAPES,
    SIZE_FRACTIONS,
    SUPERSAMPLE,
    draw_shape,
)

# A pixel is foreground when its RGB distance to the background exceeds this; the closest
# shape/background pair (purple on grey) is ~115 apart, noise in decoded images stays well below.
FOREGROUND_THRESHOLD = 50.0
# Blobs smaller than this fraction of the image are noise; the smallest shape (a small triangle)
# covers 0.02 of it.
MIN_OBJECT_FRACTION = 0.005
MAX_OBJECTS = 2
FIT_STEPS = (0.5, 0.25)  # sub-pixel steps (pixels) of the template box fit
FIT_MAX_PASSES = 4  # coordinate-ascent passes per step
FIT_CANDIDATES = 4  # shapes whose box is fitted, ranked by IoU at the unfitted box
COLOUR_PIXEL_FRACTION = 0.3  # colour = median of this fraction of blob pixels farthest from background

_COLOUR_NAMES = tuple(COLOUR_RGB)
_COLOUR_TABLE = np.array([COLOUR_RGB[c] for c in _COLOUR_NAMES], dtype=np.float64)
_BACKGROUND_NAMES = tuple(BACKGROUND_RGB)
_BACKGROUND_TABLE = np.array([BACKGROUND_RGB[b] for b in _BACKGROUND_NAMES], dtype=np.float64)


@dataclass(frozen=True)
class DetectedObject:
    """One blob read from the image; ``centre`` and ``side`` are fractions of the image side."""

    shape: str
    colour: str
    size: str
    position: str
    centre: tuple[float, float]
    side: float
    shape_score: float  # soft IoU of the best template; low values mean an unclear shape

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ShapesAnalysis:
    """What the analyser read: objects (left/top one first for pairs), relation and background."""

    objects: tuple[DetectedObject, ...]
    relation: Optional[str]
    background: str

    def to_dict(self) -> dict:
        return {
            "objects": [o.to_dict() for o in self.objects],
            "relation": self.relation,
            "background": self.background,
        }


def _nearest(table: np.ndarray, names: tuple[str, ...], rgb: np.ndarray) -> str:
    return names[int(np.argmin(np.linalg.norm(table - rgb, axis=1)))]


def _template_coverage(shape: str, box: tuple[float, float, float, float], height: int, width: int
                       ) -> np.ndarray:
    """Per-pixel coverage in [0, 1] of ``shape`` drawn in ``box`` (pixel coords) on a crop of that size."""
    canvas = Image.new("L", (width * SUPERSAMPLE, height * SUPERSAMPLE), 0)
    draw_shape(ImageDraw.Draw(canvas), shape, tuple(v * SUPERSAMPLE for v in box), 255)
    return np.asarray(canvas.reduce(SUPERSAMPLE), dtype=np.float64) / 255.0


def _soft_iou(crop: np.ndarray, shape: str, box: tuple[float, float, float, float]) -> float:
    template = _template_coverage(shape, box, crop.shape[0], crop.shape[1])
    return float(np.minimum(crop, template).sum() / max(np.maximum(crop, template).sum(), 1e-9))


def _fit_template(crop: np.ndarray, shape: str, start: tuple[float, float, float]
                  ) -> tuple[float, tuple[float, float, float]]:
    """Refine the square box ``(cx, cy, half_side)`` by coordinate ascent to maximise the soft IoU.

    The blob's pixel bounding box is only accurate to about a pixel, which at 64 px is enough to
    make a small square look rounder than a circle; fitting each template's box removes that bias.
    Boxes are square because the generator draws every shape in a square box.
    """
    best, best_iou = start, _soft_iou(crop, shape, _box(start))
    for step in FIT_STEPS:
        for _ in range(FIT_MAX_PASSES):
            improved = False
            for axis, sign in ((0, -1), (0, 1), (1, -1), (1, 1), (2, -1), (2, 1)):
                candidate = list(best)
                candidate[axis] += sign * step
                if candidate[2] < 0.5:
                    continue
                iou = _soft_iou(crop, shape, _box(tuple(candidate)))
                if iou > best_iou + 1e-6:
                    best, best_iou, improved = tuple(candidate), iou, True
            if not improved:
                break
    return best_iou, best


def _box(square: tuple[float, float, float]) -> tuple[float, float, float, float]:
    cx, cy, half = square
    return (cx - half, cy - half, cx + half, cy + half)


def _classify_shape(alpha: np.ndarray, mask: np.ndarray
                    ) -> tuple[str, float, tuple[float, float, float, float]]:
    """Best-matching shape for the blob ``mask`` with soft coverage ``alpha``; also its fitted box."""
    solid = mask & (alpha > 0.5)
    rows = np.flatnonzero((solid if solid.any() else mask).any(axis=1))
    cols = np.flatnonzero((solid if solid.any() else mask).any(axis=0))
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    pad = 2
    top, left = max(y0 - pad, 0), max(x0 - pad, 0)
    bottom, right = min(y1 + pad, alpha.shape[0]), min(x1 + pad, alpha.shape[1])
    crop = np.where(ndimage.binary_dilation(mask), alpha, 0.0)[top:bottom, left:right]
    start = ((x0 + x1) / 2 - left, (y0 + y1) / 2 - top, max(x1 - x0, y1 - y0) / 2)
    # Fitting is the costly part: only the best few candidates at the unfitted box are fitted.
    candidates = sorted(SHAPES, key=lambda name: -_soft_iou(crop, name, _box(start)))[:FIT_CANDIDATES]
    fits = {shape: _fit_template(crop, shape, start) for shape in candidates}
    shape = max(candidates, key=lambda name: fits[name][0])
    iou, square = fits[shape]
    bx0, by0, bx1, by1 = _box(square)
    return shape, iou, (bx0 + left, by0 + top, bx1 + left, by1 + top)


def _to_array(image: Union[Image.Image, np.ndarray]) -> np.ndarray:
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.float64)
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise ValueError(f"Expected a PIL image or a uint8 array (H, W, 3), got {array.dtype} {array.shape}")
    return array.astype(np.float64)


def analyse_image(image: Union[Image.Image, np.ndarray]) -> ShapesAnalysis:
    """Read the (up to two) shapes in ``image``; an image with no foreground gives no objects."""
    pixels = _to_array(image)
    height, width = pixels.shape[:2]
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    background_rgb = np.median(border, axis=0)
    background = _nearest(_BACKGROUND_TABLE, _BACKGROUND_NAMES, background_rgb)

    foreground = np.linalg.norm(pixels - background_rgb, axis=-1) > FOREGROUND_THRESHOLD
    labels, count = ndimage.label(foreground, structure=np.ones((3, 3)))
    areas = ndimage.sum_labels(foreground, labels, index=np.arange(1, count + 1))
    order = np.argsort(-areas, kind="stable")
    min_area = MIN_OBJECT_FRACTION * height * width
    kept = [int(i) + 1 for i in order[:MAX_OBJECTS] if areas[i] >= min_area]

    side_px = float(max(height, width))
    blobs = []
    for label in kept:
        mask = labels == label
        # The pixels farthest from the background are the least blended with it; thin parts of a
        # blurred shape (a small star) have no eroded interior at all.
        blob_pixels = pixels[mask]
        distance = np.linalg.norm(blob_pixels - background_rgb, axis=1)
        farthest = np.argsort(-distance)[: max(1, int(COLOUR_PIXEL_FRACTION * len(distance)))]
        colour_rgb = np.median(blob_pixels[farthest], axis=0)
        colour = _nearest(_COLOUR_TABLE, _COLOUR_NAMES, colour_rgb)
        # Soft coverage: how far each pixel lies from the background towards the blob colour, so
        # anti-aliased edges count fractionally in the template IoU.
        direction = colour_rgb - background_rgb
        alpha = np.clip((pixels - background_rgb) @ direction / max(direction @ direction, 1e-9), 0.0, 1.0)
        shape, score, (x0, y0, x1, y1) = _classify_shape(alpha, mask)
        side = max(x1 - x0, y1 - y0) / side_px
        size = min(SIZE_FRACTIONS, key=lambda name: abs(SIZE_FRACTIONS[name] - side))
        centre = ((x0 + x1) / 2 / width, (y0 + y1) / 2 / height)
        blobs.append((shape, colour, size, centre, side, score))

    relation = None
    if len(blobs) == 2:
        (ax, ay), (bx, by) = blobs[0][3], blobs[1][3]
        horizontal = abs(ax - bx) >= abs(ay - by)
        first, second = ("left", "right") if horizontal else ("top", "bottom")
        leading = 0 if (ax < bx if horizontal else ay < by) else 1
        blobs = [blobs[leading], blobs[1 - leading]]
        positions = [first, second]
        relation = "left_of" if horizontal else "above"
    else:
        positions = [
            min(POSITION_CENTRES, key=lambda p: np.hypot(*np.subtract(POSITION_CENTRES[p], blob[3])))
            for blob in blobs
        ]
    objects = tuple(
        DetectedObject(shape=shape, colour=colour, size=size, position=position,
                       centre=(round(centre[0], 4), round(centre[1], 4)), side=round(side, 4),
                       shape_score=round(score, 4))
        for (shape, colour, size, centre, side, score), position in zip(blobs, positions)
    )
    return ShapesAnalysis(objects=objects, relation=relation, background=background)
