"""Crop, pad and flip: where the HQ crop comes from in its source image."""

from __future__ import annotations

import numpy as np


def pad_to(img: np.ndarray, size: int) -> tuple[np.ndarray, list[int]]:
    """Reflect-pad ``img`` so both sides are at least ``size``; returns ``(img, [top, bottom, left, right])``."""
    h, w = img.shape[:2]
    ph, pw = max(0, size - h), max(0, size - w)
    pads = [ph // 2, ph - ph // 2, pw // 2, pw - pw // 2]
    if ph or pw:
        mode = "reflect" if min(h, w) > 1 else "edge"
        img = np.pad(img, ((pads[0], pads[1]), (pads[2], pads[3]), (0, 0)), mode=mode)
    return img, pads


def sample_crop(rng: np.random.Generator, h: int, w: int, size: int) -> list[int]:
    """Draw a ``size x size`` crop box ``[top, left, size, size]`` inside an ``h x w`` image."""
    if h < size or w < size:
        raise ValueError(f"image {h}x{w} is smaller than the crop {size}")
    top = int(rng.integers(h - size + 1))
    left = int(rng.integers(w - size + 1))
    return [top, left, size, size]


def crop(img: np.ndarray, box: list[int]) -> np.ndarray:
    """Cut ``box = [top, left, height, width]`` out of ``img``."""
    t, left, h, w = box
    return img[t : t + h, left : left + w]


def hflip(img: np.ndarray) -> np.ndarray:
    """Mirror left-right."""
    return img[:, ::-1]
