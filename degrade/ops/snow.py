"""Snow: flakes of several sizes, smeared along their fall, over a whitening veil.

Snow100K (Liu et al., "DesnowNet", TIP 2018, Sec. IV-A) composes snow masks of small,
medium and large flakes over clean images with ``I = a z + J (1 - z)``; here the flake
layer is drawn procedurally: discs whose sizes follow a power law (many small, few
large), motion-blurred along the fall direction, screen-blended over the image after a
veil ``J (1 - v) + v`` of scattered light. Flakes come from ``params['seed']``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from ..labels import sentence
from .motion import line_kernel
from .rain import screen

NAME = "snow"


def flake_layer(shape: tuple[int, int], params: dict) -> np.ndarray:
    """The ``(H, W)`` flake layer in [0, 1] for an image of ``shape``."""
    h, w = shape
    rng = np.random.default_rng(params["seed"])
    n = max(1, int(round(params["density"] * h * w / 1e4)))
    xs, ys = rng.uniform(0, w, n), rng.uniform(0, h, n)
    radii = 0.5 + (float(params["size"]) - 0.5) * rng.uniform(0, 1, n) ** 3
    vals = rng.uniform(0.6, 1.0, n)
    layer = np.zeros((h, w), np.float32)
    scale = 16
    for x, y, r, v in zip(xs, ys, radii, vals, strict=True):
        cv2.circle(layer, (int(round(x * scale)), int(round(y * scale))), max(1, int(round(r * scale))), float(v),
                   -1, cv2.LINE_AA, 4)
    if params["streak"] > 1:
        layer = cv2.filter2D(layer, -1, line_kernel(int(params["streak"]), float(params["angle"])),
                             borderType=cv2.BORDER_REFLECT_101)
    layer = cv2.GaussianBlur(layer, (0, 0), sigmaX=0.6, borderType=cv2.BORDER_REFLECT_101)
    return np.clip(layer, 0.0, 1.0)


def apply(img: np.ndarray, params: dict) -> np.ndarray:
    """Whiten ``img`` by the veil and screen the flakes over it."""
    v = np.float32(params["veil"])
    veiled = img * (1.0 - v) + v
    return screen(veiled, flake_layer(img.shape[:2], params))


@dataclass(frozen=True)
class Spec:
    """Ranges: ``density`` (flakes per 10,000 pixels), ``size`` (largest flake radius,
    pixels), ``angle`` (fall direction, degrees from the x axis), ``streak`` (odd motion
    length in pixels, 1 = none; integers) and ``veil`` (0-1)."""

    density: list[float] = field(default_factory=lambda: [40.0, 120.0])
    size: list[float] = field(default_factory=lambda: [2.0, 5.0])
    angle: list[float] = field(default_factory=lambda: [240.0, 300.0])
    streak: list[int] = field(default_factory=lambda: [1, 7])
    veil: list[float] = field(default_factory=lambda: [0.05, 0.25])

    def validate(self) -> None:
        from ..recipe_checks import check_range

        check_range("density", self.density, low=0.0, high=500.0)
        check_range("size", self.size, low=0.5, high=50.0)
        check_range("angle", self.angle, low=-360.0, high=360.0)
        check_range("streak", self.streak, low=1, high=51)
        check_range("veil", self.veil, low=0.0, high=1.0)


def sample(rng: np.random.Generator, spec: Spec, ctx: dict) -> dict:
    """Draw density, flake size, fall angle, streak length (odd), veil and the flakes' seed."""
    odd = [v for v in range(int(spec.streak[0]), int(spec.streak[1]) + 1) if v % 2] or [1]
    return {"density": float(rng.uniform(*spec.density)), "size": float(rng.uniform(*spec.size)),
            "angle": float(rng.uniform(*spec.angle)), "streak": int(odd[int(rng.integers(len(odd)))]),
            "veil": float(rng.uniform(*spec.veil)), "seed": int(rng.integers(2**63))}


def label(params: dict) -> str | None:
    """Degradation label: ``snow``."""
    return "snow"


def prompt(params: dict, bare: bool) -> str:
    """Restoration sentence: ``Remove the snow``."""
    return sentence("snow")
