"""Decoded PIL image -> square RGB tensor the image tokenizer expects, or a named reason to skip it."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageOps

WHITE = (255, 255, 255)


class SkipSample(Exception):
    """The sample cannot be used; ``reason`` is a short key counted in stats.json."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def _load(image: Image.Image) -> None:
    """Decode the pixels, mapping decoder failures to skip reasons."""
    try:
        image.load()
    except OSError as err:  # Pillow reports cut-off files as "image file is truncated" / "broken data stream"
        message = str(err).lower()
        reason = "truncated_image" if ("truncated" in message or "broken" in message) else "unreadable_image"
        raise SkipSample(reason, str(err)) from None
    except (ValueError, SyntaxError, EOFError) as err:
        raise SkipSample("unreadable_image", str(err)) from None


# Full scale of the single-channel modes that Pillow's own convert("RGB") would clip instead of rescale.
# The range is fixed per mode, never guessed from the pixels: a guess makes a near-black 16-bit image
# (all values <= 255) come out as if it were 8-bit, i.e. bright grey.
DEEP_MODE_FULL_SCALE = {"I;16": 65535.0, "I;16B": 65535.0, "I;16L": 65535.0, "I;16N": 65535.0,
                        "I": 65535.0,  # 32-bit int: in practice 16-bit PNG/TIFF data; above 65535 is clipped
                        "F": 1.0}  # float images follow the 0..1 convention of float TIFF/EXR writers


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB; transparency is composited on white, 16/32-bit is rescaled.

    Raises SkipSample("unsupported_mode") for a mode Pillow cannot convert.
    """
    if image.mode == "RGB":
        return image
    if image.mode in DEEP_MODE_FULL_SCALE:
        pixels = np.asarray(image, dtype=np.float64) * (255.0 / DEEP_MODE_FULL_SCALE[image.mode])
        grey = np.clip(np.rint(np.nan_to_num(pixels)), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode == "P" and "transparency" in image.info
    )
    try:
        if has_alpha:
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, WHITE + (255,))
            return Image.alpha_composite(background, rgba).convert("RGB")
        return image.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV: Pillow's conversions are exact enough
    except ValueError as err:  # "conversion from X to Y not supported"
        raise SkipSample("unsupported_mode", f"{image.mode}: {err}") from None


def image_to_uint8(image: Image.Image, image_size: int, resize_ratio: float = 1.125, min_size: int = 0,
                   max_pixels: int = 89_478_485, max_aspect_ratio: float = 20.0) -> np.ndarray:
    """Orient by EXIF, convert to RGB, resize the short side to ``resize_ratio * image_size`` and centre-crop.

    Returns uint8 [image_size, image_size, 3] (4x less to ship between processes than floats).
    VAR resizes to 1.125x then crops (docs/method.md §8.3); the crop is central here because
    pretokenized codes are fixed per image, unlike VAR's per-epoch random crop.
    """
    width, height = image.size
    if width * height > max_pixels:
        raise SkipSample("decompression_bomb", f"{width}x{height} pixels > data.max_image_pixels={max_pixels}")
    if min(width, height) < max(min_size, 1):
        raise SkipSample("too_small", f"{width}x{height}, short side below data.min_size={min_size}")
    # A 1x200000 strip passes the pixel cap but would be upscaled to 72x14.4M before the crop: the aspect
    # cap bounds the resized image to image_size**2 * resize_ratio**2 * max_aspect_ratio pixels.
    if max(width, height) > max_aspect_ratio * min(width, height):
        raise SkipSample("extreme_aspect_ratio",
                         f"{width}x{height}, aspect ratio above data.max_aspect_ratio={max_aspect_ratio}")
    target = max(image_size, round(image_size * resize_ratio))
    if image.format == "JPEG":
        # Let the JPEG decoder downscale by a power of two while decoding (never below the target).
        scale = min(width, height) / target
        image.draft(None, (max(1, int(width / scale)), max(1, int(height / scale))))
    _load(image)
    try:
        image = ImageOps.exif_transpose(image)
    except (OSError, ValueError, SyntaxError) as err:  # malformed EXIF blocks
        raise SkipSample("unreadable_image", f"EXIF: {err}") from None
    image = to_rgb(image)
    width, height = image.size
    scale = target / min(width, height)
    new_size = (max(target, round(width * scale)), max(target, round(height * scale)))
    image = image.resize(new_size, Image.Resampling.LANCZOS)
    left = (new_size[0] - image_size) // 2
    top = (new_size[1] - image_size) // 2
    image = image.crop((left, top, left + image_size, top + image_size))
    return np.array(image, dtype=np.uint8)  # a writable copy: torch refuses read-only buffers


def uint8_to_tensor(pixels: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 [..., H, W, 3] -> float [..., 3, H, W] in [-1, 1] (the tokenizer's input range)."""
    pixels = torch.as_tensor(pixels)
    return pixels.movedim(-1, -3).float().div(127.5).sub(1.0)


def image_to_tensor(image: Image.Image, image_size: int, resize_ratio: float = 1.125, min_size: int = 0,
                    max_pixels: int = 89_478_485, max_aspect_ratio: float = 20.0) -> torch.Tensor:
    """PIL image -> FloatTensor[3, image_size, image_size] in [-1, 1]; raises SkipSample."""
    return uint8_to_tensor(image_to_uint8(image, image_size, resize_ratio, min_size, max_pixels, max_aspect_ratio))
