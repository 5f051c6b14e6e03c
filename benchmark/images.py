"""Image bytes for the harness: which files are images, their size from the header, strict decoding.

Predictions and reference image files are decoded with the same strict decoder as
``degrade build`` inputs (:func:`pirs.degrade.sources.decode`): uint8 RGB, EXIF
orientation applied, 16-bit rounded to 8 bits, greyscale and palette expanded, alpha
composited on white; truncated or corrupt files raise :class:`BadImage` with the reason.
The PNG members of pirs reference shards go through the faster
:func:`pirs.degrade.sources.decode_png`, which checks the same pixel limit before decoding.
"""

from __future__ import annotations

import io
import warnings

import numpy as np

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
# EXIF orientations that swap width and height.
_TRANSPOSED = (5, 6, 7, 8)


class BadImage(ValueError):
    """Bytes that are not a usable image; ``str(e)`` is the one-line reason."""


def is_image_name(name: str) -> bool:
    """Whether a file name has one of the image extensions (case-insensitive)."""
    return name.lower().endswith(IMAGE_EXTS)


def header_size(data: bytes) -> tuple[int, int]:
    """``(height, width)`` from the image header (EXIF orientation applied), without decoding pixels."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise BadImage("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im = Image.open(io.BytesIO(data))
            w, h = im.size
            orientation = 1
            if im.format != "PNG":  # Pillow's getexif() loads a PNG's pixels; other formats keep EXIF in the header
                try:
                    orientation = int(im.getexif().get(0x0112, 1) or 1)
                except Exception:
                    orientation = 1
    except UnidentifiedImageError:
        raise BadImage("not an image (no known image format, or a corrupt header)") from None
    except Image.DecompressionBombError:
        from pirs.degrade.sources import DEFAULT_MAX_PIXELS

        raise BadImage(f"over the decompression-bomb limit of {DEFAULT_MAX_PIXELS} pixels") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise BadImage(f"unreadable image header ({e})") from None
    from pirs.degrade.sources import DEFAULT_MAX_PIXELS

    if w * h > DEFAULT_MAX_PIXELS:
        raise BadImage(f"{w}x{h} = {w * h} pixels is over the decompression-bomb limit of {DEFAULT_MAX_PIXELS}")
    return (w, h) if orientation in _TRANSPOSED else (h, w)


def decode_image(data: bytes) -> np.ndarray:
    """Strictly decode image file bytes to uint8 RGB ``(H, W, 3)``; raise :class:`BadImage`."""
    from pirs.degrade.sources import BadInput, decode

    try:
        return decode(data)
    except BadInput as e:
        raise BadImage(str(e)) from None


def decode_shard_png(data: bytes) -> np.ndarray:
    """uint8 RGB from a pirs shard's PNG member."""
    from pirs.degrade.build import decode_png

    try:
        return decode_png(data)
    except ValueError as e:
        raise BadImage(str(e)) from None


def size_text(size: tuple[int, int] | list[int] | None) -> str:
    """``(h, w)`` as ``WxH`` for messages."""
    return "?" if size is None else f"{size[1]}x{size[0]}"


def to_batch(images: list[np.ndarray], device: str = "cpu"):
    """Equal-size uint8 RGB arrays to a float32 ``(B, 3, H, W)`` tensor in [0, 1] on ``device``."""
    import torch

    arr = np.stack(images)  # (B, H, W, 3) uint8
    t = torch.from_numpy(arr).to(device).permute(0, 3, 1, 2)
    return t.float().div_(255.0).contiguous()
