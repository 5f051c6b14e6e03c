"""Linear motion blur: a straight line kernel of a given length (pixels) and angle (degrees).

The camera-shake kind of blur Diff-Restorer takes from GoPro (Nah et al., CVPR 2017);
synthesized here as a uniform line kernel, as the usual motion-blur augmentations do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..labels import sentence
from .blur import filter2d

NAME = "motion_blur"


def line_kernel(length: int, angle: float) -> np.ndarray:
    """A ``(k, k)`` float32 kernel, k = length (odd), with a unit-sum line through the centre.

    The line is sampled at sub-pixel steps along ``angle`` (degrees, counter-clockwise from
    the x axis, image y pointing down) and bilinearly splatted, so every angle gives a line
    of the same length.
    """
    if length < 1 or length % 2 == 0:
        raise ValueError(f"motion blur length must be a positive odd integer, got {length}")
    k = np.zeros((length, length), np.float64)
    c = (length - 1) / 2.0
    dx, dy = math.cos(math.radians(angle)), -math.sin(math.radians(angle))
    n = 4 * length + 1
    for s in np.linspace(-c, c, n):
        x, y = c + s * dx, c + s * dy
        x0, y0 = int(math.floor(x)), int(math.floor(y))
        fx, fy = x - x0, y - y0
        for yy, xx, wgt in ((y0, x0, (1 - fx) * (1 - fy)), (y0, x0 + 1, fx * (1 - fy)),
                            (y0 + 1, x0, (1 - fx) * fy), (y0 + 1, x0 + 1, fx * fy)):
            if 0 <= yy < length and 0 <= xx < length and wgt > 1e-9:
                k[yy, xx] += wgt
    return (k / k.sum()).astype(np.float32)


def apply(img: np.ndarray, params: dict) -> np.ndarray:
    """Blur ``img`` along a line of ``params['length']`` pixels at ``params['angle']`` degrees."""
    return filter2d(img, line_kernel(params["length"], params["angle"]))


@dataclass(frozen=True)
class Spec:
    """Kernel ``length`` range (odd integers inside it are drawn) and ``angle`` range in degrees."""

    length: list[int] = field(default_factory=lambda: [7, 31])
    angle: list[float] = field(default_factory=lambda: [0.0, 180.0])

    def validate(self) -> None:
        from ..recipe_checks import check_range

        check_range("length", self.length, low=1, high=101)
        check_range("angle", self.angle, low=-360.0, high=360.0)
        if not any(v % 2 for v in range(int(self.length[0]), int(self.length[1]) + 1)):
            raise ValueError(f"length range {self.length} holds no odd integer")


def sample(rng: np.random.Generator, spec: Spec, ctx: dict) -> dict:
    """Draw an odd length and an angle (rounded to 0.1 degree)."""
    odd = [v for v in range(int(spec.length[0]), int(spec.length[1]) + 1) if v % 2]
    return {"length": int(odd[int(rng.integers(len(odd)))]), "angle": round(float(rng.uniform(*spec.angle)), 1)}


def label(params: dict) -> str | None:
    """Degradation label: ``blur``."""
    return "blur"


def prompt(params: dict, bare: bool) -> str:
    """Restoration prompt: ``Deblur`` (SPIRE's sigma phrase is for Gaussian blur only)."""
    return sentence("blur")
