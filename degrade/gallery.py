"""``degrade gallery``: one page (PNG) with one example per universal degradation type.

Each tile is a centre crop of a colour photo bundled with scikit-image, degraded by the
type's recipe with a fixed seed, titled with its labels and restoration prompt; the
first tile of each row is the clean crop.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .preview import clip_lines

GALLERY_RECIPES = ("noise", "jpeg", "low-light", "haze", "rain", "raindrop", "snow", "motion-blur", "defocus-blur",
                   "dr-noise-blur", "dr-snow-noise", "dr-raindrop-noise-blur", "dr-jpeg-noise-blur")
PHOTOS = ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png")


def _crop(photo: str, size: int) -> np.ndarray:
    from .sources import bundled_dir, decode

    img = decode((bundled_dir() / photo).read_bytes())
    h, w = img.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    from .ops.resize import resize

    sq = img[top: top + s, left: left + s].astype(np.float32) / np.float32(255.0)
    from .ops.jpeg import to_uint8

    return to_uint8(resize(sq, (size, size), "area")) if s != size else img[top: top + s, left: left + s]


def gallery(out: str, tile: int = 256, seed: int = 0, recipes: tuple[str, ...] = GALLERY_RECIPES,
            per_row: int = 5) -> Path:
    """Draw the gallery to ``out`` (PNG) and return its path."""
    from PIL import Image, ImageDraw

    from .pipeline import degrade
    from .preview import _font
    from .recipe import load_recipe

    tiles: list[tuple[np.ndarray, str, str]] = []
    for i, name in enumerate(recipes):
        hq = _crop(PHOTOS[i % len(PHOTOS)], tile)
        res = degrade(hq, load_recipe(name), np.random.default_rng([seed, i]))
        tiles.append((res.lq, name, res.prompt))
    cells = [(_crop(p, tile), f"clean: {p.rsplit('.', 1)[0]}", "") for p in PHOTOS] + tiles
    pad, text_h = 8, 58
    cols = per_row
    rows = (len(cells) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * (tile + pad) + pad, rows * (tile + text_h + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    font, small = _font(15), _font(13)
    for j, (img, title, prompt) in enumerate(cells):
        x = pad + (j % cols) * (tile + pad)
        y = pad + (j // cols) * (tile + text_h + pad)
        sheet.paste(Image.fromarray(img), (x, y))
        draw.text((x, y + tile + 3), title, fill="black", font=font)
        for k, line in enumerate(clip_lines(prompt, max(16, tile // 7), 2)):
            draw.text((x, y + tile + 22 + 16 * k), line, fill="dimgray", font=small)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, optimize=True)
    return path
