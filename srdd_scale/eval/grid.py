"""A PNG grid of prompt -> sample, the caption written above each image."""

from __future__ import annotations

import textwrap
from typing import Optional, Sequence

from PIL import Image, ImageDraw, ImageFont

_TEXT_COLOUR = (20, 20, 20)
_CORRECT_COLOUR = (0, 120, 0)
_WRONG_COLOUR = (190, 0, 0)


def captioned_grid(images: Sequence[Image.Image], captions: Sequence[str], columns: int = 8, cell: int = 160,
                   correct: Optional[Sequence[bool]] = None, lines: int = 3) -> Image.Image:
    """Images upscaled (nearest) to ``cell`` px under their wrapped captions; ``correct`` colours them.

    Nearest-neighbour upscaling keeps the generated pixels visible as they are.
    """
    if len(images) != len(captions) or not images:
        raise ValueError(f"captioned_grid needs as many captions as images (>= 1), got {len(images)} images "
                         f"and {len(captions)} captions")
    font = ImageFont.load_default()
    line_height = font.getbbox("Ag")[3] + 2
    chars_per_line = max(8, cell // max(1, int(font.getlength("x"))))
    header = lines * line_height + 4
    columns = min(columns, len(images))
    rows = -(-len(images) // columns)
    grid = Image.new("RGB", (columns * (cell + 4), rows * (cell + header + 4)), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for number, (image, caption) in enumerate(zip(images, captions)):
        x = (number % columns) * (cell + 4) + 2
        y = (number // columns) * (cell + header + 4) + 2
        colour = _TEXT_COLOUR if correct is None else (_CORRECT_COLOUR if correct[number] else _WRONG_COLOUR)
        wrapped = textwrap.wrap(caption, chars_per_line)[:lines]
        draw.multiline_text((x, y), "\n".join(wrapped), fill=colour, font=font, spacing=2)
        grid.paste(image.convert("RGB").resize((cell, cell), Image.Resampling.NEAREST), (x, y + header))
    return grid
