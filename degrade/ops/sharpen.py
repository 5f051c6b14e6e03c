"""Unsharp-mask sharpening of the ground truth (Real-ESRGAN's ``USMSharp``).

``blur`` is a Gaussian of ``radius`` taps, rounded up to odd as BasicSR does (radius
50 gives 51 taps; OpenCV's sigma rule when ``sigma`` is 0); the sharpened image
``img + weight*(img - blur)`` is blended in through a soft mask of the pixels whose
residual exceeds ``threshold`` (0-255 scale).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

NAME = "usm_sharpen"


def _blur(img: np.ndarray, k: np.ndarray) -> np.ndarray:
    out = cv2.sepFilter2D(img, -1, k, k, borderType=cv2.BORDER_REFLECT_101)
    return out.reshape(img.shape)


def usm(img: np.ndarray, radius: int = 50, sigma: float = 0.0, weight: float = 0.5, threshold: float = 10.0):
    """Sharpen an ``(H, W, C)`` float32 image in [0, 1]."""
    size = int(radius) + 1 if int(radius) % 2 == 0 else int(radius)
    k = cv2.getGaussianKernel(size, sigma).astype(np.float32)
    residual = img - _blur(img, k)
    mask = (np.abs(residual) * 255.0 > threshold).astype(np.float32)
    soft = _blur(mask, k)
    sharp = np.clip(img + np.float32(weight) * residual, 0.0, 1.0)
    return soft * sharp + (1.0 - soft) * img


def apply(img: np.ndarray, params: dict) -> np.ndarray:
    """Sharpen ``img`` with the stored radius, sigma, weight and threshold."""
    return usm(img, params["radius"], params["sigma"], params["weight"], params["threshold"])


@dataclass(frozen=True)
class Spec:
    """Fixed parameters (Real-ESRGAN: radius 50, i.e. a 51-tap kernel, weight 0.5, threshold 10)."""

    radius: int = 50
    sigma: float = 0.0
    weight: float = 0.5
    threshold: float = 10.0

    def validate(self) -> None:
        if int(self.radius) != self.radius or self.radius < 1:
            raise ValueError(f"radius must be a positive integer, got {self.radius}")
        if self.weight < 0 or self.threshold < 0 or self.sigma < 0:
            raise ValueError("weight, threshold and sigma must be non-negative")


def sample(rng: np.random.Generator, spec: Spec, ctx: dict) -> dict:
    """USM has no random parameters; returns the fixed ones."""
    return {"radius": int(spec.radius), "sigma": float(spec.sigma), "weight": float(spec.weight),
            "threshold": float(spec.threshold)}


def label(params: dict) -> str | None:
    """Sharpening is applied to the ground truth, not a degradation: no label."""
    return None


def prompt(params: dict, bare: bool) -> str | None:
    """No restoration prompt."""
    return None
