import io

import numpy as np
import pytest
import torch
from PIL import Image

from srdd_scale.data.preprocess import SkipSample, image_to_tensor, image_to_uint8, to_rgb


def _reopen(image: Image.Image, fmt: str, **save) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return Image.open(io.BytesIO(buffer.getvalue()))


def test_output_shape_range_and_centre_crop():
    # 80x40 image: left half black, right half white -> short side 40 -> 36 (1.125 * 32) -> crop 32.
    pixels = np.zeros((40, 80, 3), np.uint8)
    pixels[:, 40:] = 255
    out = image_to_tensor(Image.fromarray(pixels), 32)
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    assert out.min() >= -1 and out.max() <= 1
    assert out[:, :, :12].max() < -0.9 and out[:, :, -12:].min() > 0.9  # the crop is centred on the edge


def test_resize_ratio_is_configurable():
    pixels = np.zeros((64, 64, 3), np.uint8)
    pixels[:, :8] = 255  # a white band at the left that the 1.5x-resize-then-crop cuts away
    image = Image.fromarray(pixels)
    assert image_to_uint8(image, 32, resize_ratio=1.0)[:, 0].min() == 255
    assert image_to_uint8(image, 32, resize_ratio=1.5)[:, :2].max() == 0


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_transparency_goes_on_white(mode):
    rgba = Image.new("RGBA", (40, 40), (255, 0, 0, 0))  # fully transparent red
    rgba.paste((0, 0, 255, 255), (10, 10, 30, 30))  # opaque blue square
    if mode == "P":  # palette entry 0 (red) is the transparent one
        indices = np.zeros((40, 40), np.uint8)
        indices[10:30, 10:30] = 1
        image = Image.fromarray(indices, "P")
        image.putpalette([255, 0, 0, 0, 0, 255])
        image = _reopen(image, "PNG", transparency=0)
    else:
        image = rgba.convert(mode)
    rgb = np.asarray(to_rgb(image))
    assert rgb.shape == (40, 40, 3)
    assert (rgb[0, 0] == 255).all()  # transparent corner -> white
    assert rgb[20, 20].tolist() != [255, 255, 255]


def test_cmyk_grey_and_16_bit_become_rgb():
    cmyk = to_rgb(_reopen(Image.new("CMYK", (20, 20), (0, 255, 255, 0)), "JPEG"))  # red in CMYK
    r, g, b = np.asarray(cmyk)[10, 10].tolist()
    assert cmyk.mode == "RGB" and r > 200 and g < 60 and b < 60
    grey = to_rgb(Image.new("L", (4, 4), 77))
    assert np.asarray(grey)[0, 0].tolist() == [77, 77, 77]
    deep = np.full((8, 8), 65535, np.uint16)
    deep[0, 0] = 0
    sixteen = _reopen(Image.fromarray(deep), "PNG")
    assert sixteen.mode.startswith("I")
    rgb = np.asarray(to_rgb(sixteen))
    assert rgb[1, 1].tolist() == [255, 255, 255] and rgb[0, 0].tolist() == [0, 0, 0]


def test_exif_orientation_is_applied():
    pixels = np.zeros((20, 40, 3), np.uint8)  # wide: 40x20
    pixels[:, :20] = 255  # left half white
    image = Image.fromarray(pixels)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    oriented = _reopen(image, "JPEG", exif=exif.tobytes(), quality=95)
    out = image_to_uint8(oriented, 16, resize_ratio=1.0)
    # Displayed upright the image is tall, with the white half on top.
    assert out[:4].mean() > 200 and out[-4:].mean() < 50


def test_small_and_huge_images_are_skipped():
    with pytest.raises(SkipSample) as err:
        image_to_uint8(Image.new("RGB", (20, 50)), 32, min_size=24)
    assert err.value.reason == "too_small"
    image_to_uint8(Image.new("RGB", (20, 50)), 32)  # no minimum by default: upscaled
    with pytest.raises(SkipSample) as err:
        image_to_uint8(Image.new("RGB", (100, 100)), 32, max_pixels=9999)
    assert err.value.reason == "decompression_bomb"


def test_truncated_file_is_a_skip_not_a_crash():
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    cut = Image.open(io.BytesIO(buffer.getvalue()[: len(buffer.getvalue()) // 2]))
    with pytest.raises(SkipSample) as err:
        image_to_uint8(cut, 32)
    assert err.value.reason == "truncated_image"


def _palette_with_transparent_index() -> Image.Image:
    indices = np.zeros((8, 8), np.uint8)
    indices[:, 4:] = 1  # right half: palette entry 1, the transparent one
    image = Image.fromarray(indices, "P")
    image.putpalette([10, 200, 30, 0, 0, 0])
    return image


# (mode, file format, image, expected RGB of the left half, expected RGB of the right half). Each image is
# saved in a real file format and decoded again, as pretokenize sees it; expected colours are computed from
# the format's definition, not from Pillow.
GOLDEN = {
    "I;16 near black": ("PNG", Image.new("I;16", (8, 8), 4 * 257), (4,) * 3, (4,) * 3),
    "I;16": ("PNG", Image.new("I;16", (8, 8), 200 * 257), (200,) * 3, (200,) * 3),
    "I;16B": ("TIFF", Image.new("I;16B", (8, 8), 40 * 257), (40,) * 3, (40,) * 3),
    "I": ("TIFF", Image.new("I", (8, 8), 180 * 257), (180,) * 3, (180,) * 3),
    "F 0..1": ("TIFF", Image.new("F", (8, 8), 0.25), (64,) * 3, (64,) * 3),
    "LA": ("PNG", Image.merge("LA", [Image.new("L", (8, 8), 100), Image.fromarray(
        np.repeat([[255] * 4 + [0] * 4], 8, axis=0).astype(np.uint8))]), (100,) * 3, (255,) * 3),
    "LA half alpha": ("PNG", Image.new("LA", (8, 8), (0, 128)), (127,) * 3, (127,) * 3),
    "P transparency": ("PNG", _palette_with_transparent_index(), (10, 200, 30), (255,) * 3),
    "CMYK red": ("TIFF", Image.new("CMYK", (8, 8), (0, 255, 255, 0)), (255, 0, 0), (255, 0, 0)),
    "CMYK grey": ("TIFF", Image.new("CMYK", (8, 8), (0, 0, 0, 128)), (127,) * 3, (127,) * 3),
    "CMYK JPEG": ("JPEG", Image.new("CMYK", (8, 8), (0, 255, 255, 0)), (255, 0, 0), (255, 0, 0)),
    # CIE L*=50, a*=b*=0 is sRGB 119 grey (Pillow keeps a*, b* offset by 128 in memory).
    "LAB grey": ("TIFF", Image.new("LAB", (8, 8), (128, 128, 128)), (119,) * 3, (119,) * 3),
    # JFIF: Y=94, Cb=126, Cr=204 is RGB (200, 40, 90).
    "YCbCr": ("TIFF", Image.new("YCbCr", (8, 8), (94, 126, 204)), (200, 40, 90), (200, 40, 90)),
    "1": ("PNG", Image.fromarray(np.repeat([[True] * 4 + [False] * 4], 8, axis=0)), (255,) * 3, (0,) * 3),
}


@pytest.mark.parametrize("name", list(GOLDEN))
def test_every_pil_mode_keeps_its_colour(name):
    fmt, image, left, right = GOLDEN[name]
    decoded = _reopen(image, fmt, **({"transparency": 1} if name == "P transparency" else {}))
    out = image_to_uint8(decoded, 16, resize_ratio=1.0).astype(int)
    assert np.abs(out[8, 2] - left).max() <= 2, (decoded.mode, out[8, 2].tolist(), left)
    assert np.abs(out[8, 13] - right).max() <= 2, (decoded.mode, out[8, 13].tolist(), right)


@pytest.mark.parametrize("orientation, top_left", [(1, (255, 0, 0)), (3, (0, 0, 255)), (6, (255, 0, 0)),
                                                    (8, (0, 0, 255))])
def test_exif_orientation_keeps_colour_and_turns_the_image(orientation, top_left):
    pixels = np.zeros((16, 32, 3), np.uint8)  # 32 wide: red left half, blue right half
    pixels[:, :16] = (255, 0, 0)
    pixels[:, 16:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = image_to_uint8(_reopen(Image.fromarray(pixels), "PNG", exif=exif.tobytes()), 16, resize_ratio=1.0)
    assert np.abs(out[1, 1].astype(int) - top_left).max() <= 2, out[1, 1].tolist()


def test_strip_bomb_is_skipped_before_decoding():
    strip = _reopen(Image.new("L", (200_000, 1), 128), "PNG")
    with pytest.raises(SkipSample) as err:
        image_to_uint8(strip, 32)
    assert err.value.reason == "extreme_aspect_ratio"
    assert strip._im is None  # never decoded
