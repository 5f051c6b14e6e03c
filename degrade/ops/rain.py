"""Rain streaks: thin, bright, slanted streaks screened over the image.

Streaks of similar length and angle with random positions and brightness, slightly
blurred, then combined by a screen blend ``1 - (1 - I)(1 - a L)`` (light adds, never
darkens), as rain-streak synthesis in Rain1400 (Fu et al., CVPR 2017, Sec. 4.1) and
the usual weather augmentations model it. Positions come from ``params['seed']``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from ..labels import sentence

NAME = "rain"


def screen(img: np.ndarray, layer: np.ndarray) -> np.ndarray:
    """Screen-blend a ``(H, W)`` light layer in [0, 1] onto an RGB image."""
    return (1.0 - (1.0 - img) * (1.0 - layer[..., None])).astype(np.float32)


def streak_layer(shape: tuple[int, int], params: dict) -> np.ndarray:
    """The ``(H, W)`` rain layer in [0, 1] (before ``alpha``) for an image of ``shape``."""
    h, w = shape
    rng = np.random.default_rng(params["seed"])
    n = max(1, int(round(params["density"] * h * w / 1e4)))
    a = math.radians(params["angle"])
    dx, dy = math.sin(a), math.cos(a)
    length = float(params["length"])
    xs = rng.uniform(0, w, n)  # streak midpoints, so every streak crosses the image
    ys = rng.uniform(0, h, n)
    lens = length * rng.uniform(0.7, 1.3, n)
    vals = rng.uniform(0.5, 1.0, n)
    scale = 16  # cv2 sub-pixel coordinates (shift=4)
    layer = np.zeros((h, w), np.float32)
    for x, y, ln, v in zip(xs, ys, lens, vals, strict=True):
        hx, hy = dx * ln / 2, dy * ln / 2
        p0 = (int(round((x - hx) * scale)), int(round((y - hy) * scale)))
        p1 = (int(round((x + hx) * scale)), int(round((y + hy) * scale)))
        cv2.line(layer, p0, p1, float(v), int(params["width"]), cv2.LINE_AA, 4)
    if params["blur"] > 0:
        layer = cv2.GaussianBlur(layer, (0, 0), sigmaX=float(params["blur"]), borderType=cv2.BORDER_REFLECT_101)
    return np.clip(layer, 0.0, 1.0)


def apply(img: np.ndarray, params: dict) -> np.ndarray:
    """Add rain streaks to ``img``."""
    layer = streak_layer(img.shape[:2], params) * np.float32(params["alpha"])
    return screen(img, layer)


@dataclass(frozen=True)
class Spec:
    """Ranges: ``density`` (streaks per 10,000 pixels), ``length`` (pixels), ``angle``
    (degrees from vertical; one angle per image, as rain falls in one direction),
    ``alpha`` (streak opacity); ``width`` in pixels (integers) and ``blur`` (sigma)."""

    density: list[float] = field(default_factory=lambda: [4.0, 12.0])
    length: list[float] = field(default_factory=lambda: [10.0, 40.0])
    angle: list[float] = field(default_factory=lambda: [-25.0, 25.0])
    alpha: list[float] = field(default_factory=lambda: [0.5, 0.9])
    width: list[int] = field(default_factory=lambda: [1, 2])
    blur: list[float] = field(default_factory=lambda: [0.5, 1.0])

    def validate(self) -> None:
        from ..recipe_checks import check_range

        check_range("density", self.density, low=0.0, high=200.0)
        check_range("length", self.length, low=1.0)
        check_range("angle", self.angle, low=-80.0, high=80.0)
        check_range("alpha", self.alpha, low=0.0, high=1.0)
        check_range("width", self.width, low=1, high=8)
        check_range("blur", self.blur, low=0.0)


def sample(rng: np.random.Generator, spec: Spec, ctx: dict) -> dict:
    """Draw density, length, angle, opacity, width, blur and the streak field's seed."""
    return {"density": float(rng.uniform(*spec.density)), "length": float(rng.uniform(*spec.length)),
            "angle": float(rng.uniform(*spec.angle)), "alpha": float(rng.uniform(*spec.alpha)),
            "width": int(rng.integers(int(spec.width[0]), int(spec.width[1]) + 1)),
            "blur": float(rng.uniform(*spec.blur)), "seed": int(rng.integers(2**63))}


def label(params: dict) -> str | None:
    """Degradation label: ``rain``."""
    return "rain"


def prompt(params: dict, bare: bool) -> str:
    """Restoration sentence: ``Remove the rain``."""
    return sentence("rain")
