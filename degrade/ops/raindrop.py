"""Raindrops on the lens: small refracting drops showing a blurred, inverted view.

A drop acts as a tiny lens (Qian et al., "Attentive Generative Adversarial Network for
Raindrop Removal", CVPR 2018, Sec. 3, model the image as ``(1 - M) B + R`` with the drop
mask ``M``): inside each drop the pixels come from the defocused background seen through
the drop, inverted and magnified about its centre, with a darker rim and a specular
highlight; outside every drop the image is untouched. Drops come from ``params['seed']``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from ..labels import sentence

NAME = "raindrop"


def drops(shape: tuple[int, int], params: dict) -> list[tuple[float, float, float, float]]:
    """The drops ``(cx, cy, radius, aspect)`` for an image of ``shape`` (radius in pixels)."""
    h, w = shape
    rng = np.random.default_rng(params["seed"])
    short = min(h, w)
    n = max(1, int(round(params["density"] * h * w / 1e4)))
    out = []
    for _ in range(n):
        r = max(1.5, float(rng.uniform(*params["radius"])) * short)
        out.append((float(rng.uniform(0, w)), float(rng.uniform(0, h)), r, float(rng.uniform(1.0, 1.3))))
    return out


def _rho(shape: tuple[int, int], drop: tuple[float, float, float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    h, w = shape
    cx, cy, r, asp = drop
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    rho = np.sqrt(((xx - cx) / r) ** 2 + ((yy - cy) / (r * asp)) ** 2)
    return rho, xx, yy


def drop_mask(shape: tuple[int, int], params: dict) -> np.ndarray:
    """Boolean ``(H, W)`` union of the drops: the only pixels the op may change."""
    m = np.zeros(shape, bool)
    for d in drops(shape, params):
        m |= _rho(shape, d)[0] < 1.0
    return m


def apply(img: np.ndarray, params: dict) -> np.ndarray:
    """Put the drops on ``img``."""
    h, w = img.shape[:2]
    background = cv2.GaussianBlur(img, (0, 0), sigmaX=float(params["blur"]) * min(h, w) / 100.0 + 0.5,
                                  borderType=cv2.BORDER_REFLECT_101)
    out = img.copy()
    mag = np.float32(params["magnification"])
    for d in drops((h, w), params):
        cx, cy, r, asp = d
        rho, xx, yy = _rho((h, w), d)
        inside = rho < 1.0
        if not inside.any():
            continue
        mapx = (cx - (xx - cx) * mag).astype(np.float32)
        mapy = (cy - (yy - cy) * mag).astype(np.float32)
        seen = cv2.remap(background, mapx, mapy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        shade = (1.0 - 0.35 * rho**4)[..., None]
        hx, hy = cx - 0.35 * r, cy - 0.35 * r * asp
        spot = 0.5 * np.exp(-((xx - hx) ** 2 + (yy - hy) ** 2) / (2 * (0.12 * r) ** 2))[..., None]
        drop_img = np.clip(seen * shade + spot, 0.0, 1.0)
        alpha = np.where(inside, np.clip((1.0 - rho) / 0.15, 0.0, 1.0), 0.0)[..., None].astype(np.float32)
        out = np.where(inside[..., None], out * (1.0 - alpha) + drop_img * alpha, out)
    return out.astype(np.float32)


@dataclass(frozen=True)
class Spec:
    """Ranges: ``density`` (drops per 10,000 pixels), ``radius`` (fraction of the short
    side), ``magnification`` of the inverted view, ``blur`` (background defocus, percent of
    the short side)."""

    density: list[float] = field(default_factory=lambda: [1.0, 3.0])
    radius: list[float] = field(default_factory=lambda: [0.02, 0.07])
    magnification: list[float] = field(default_factory=lambda: [0.4, 0.8])
    blur: list[float] = field(default_factory=lambda: [0.5, 1.5])

    def validate(self) -> None:
        from ..recipe_checks import check_range

        check_range("density", self.density, low=0.0, high=50.0)
        check_range("radius", self.radius, low=0.001, high=0.5)
        check_range("magnification", self.magnification, low=0.0, high=2.0)
        check_range("blur", self.blur, low=0.0)


def sample(rng: np.random.Generator, spec: Spec, ctx: dict) -> dict:
    """Draw density, magnification, blur and the drops' seed; the radius range is kept and
    each drop draws its own radius from it."""
    return {"density": float(rng.uniform(*spec.density)), "radius": [float(v) for v in spec.radius],
            "magnification": float(rng.uniform(*spec.magnification)), "blur": float(rng.uniform(*spec.blur)),
            "seed": int(rng.integers(2**63))}


def label(params: dict) -> str | None:
    """Degradation label: ``raindrop``."""
    return "raindrop"


def prompt(params: dict, bare: bool) -> str:
    """Restoration sentence: ``Remove the raindrops``."""
    return sentence("raindrop")
