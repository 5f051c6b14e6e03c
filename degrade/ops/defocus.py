"""Defocus blur: a uniform disk (circle of confusion) of a given radius in pixels."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..labels import sentence
from .blur import filter2d

NAME = "defocus_blur"


def disk_kernel(radius: float) -> np.ndarray:
    """A unit-sum float32 disk of ``radius`` pixels, edge pixels weighted by their covered area
    (4x4 supersampling), size ``2 * ceil(radius) + 1``."""
    if radius <= 0:
        raise ValueError(f"defocus radius must be positive, got {radius}")
    r = int(math.ceil(radius))
    sub = (np.arange(4) + 0.5) / 4 - 0.5
    ys = (np.arange(-r, r + 1)[:, None] + sub[None, :]).reshape(-1)
    inside = (ys[:, None] ** 2 + ys[None, :] ** 2) <= radius**2
    k = inside.reshape(2 * r + 1, 4, 2 * r + 1, 4).mean(axis=(1, 3))
    return (k / k.sum()).astype(np.float32)


def apply(img: np.ndarray, params: dict) -> np.ndarray:
    """Blur ``img`` with a disk of ``params['radius']`` pixels."""
    return filter2d(img, disk_kernel(params["radius"]))


@dataclass(frozen=True)
class Spec:
    """Disk ``radius`` range in pixels."""

    radius: list[float] = field(default_factory=lambda: [1.5, 6.0])

    def validate(self) -> None:
        from ..recipe_checks import check_range

        check_range("radius", self.radius, low=0.5, high=50.0)


def sample(rng: np.random.Generator, spec: Spec, ctx: dict) -> dict:
    """Draw a radius (rounded to 0.1 pixel)."""
    return {"radius": round(float(rng.uniform(*spec.radius)), 1)}


def label(params: dict) -> str | None:
    """Degradation label: ``blur``."""
    return "blur"


def prompt(params: dict, bare: bool) -> str:
    """Restoration prompt: ``Deblur``."""
    return sentence("blur")
