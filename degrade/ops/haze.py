"""Haze by the atmospheric scattering model ``I = J t + A (1 - t)``, ``t = exp(-beta d)``.

Koschmieder's model as RESIDE synthesizes its hazy images (Li et al., "Benchmarking
Single-Image Dehazing and Beyond", TIP 2019, Sec. II-A; airlight A in [0.7, 1]). There is
no depth map for an arbitrary photo, so ``d`` is a depth proxy in [0, 1]: a mix of a
vertical ramp (the top of a photo is usually farther away) and the blurred luminance
(sky and distant surfaces are bright), weighted by ``depth_mix``. Nothing is random
beyond the stored parameters.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from ..labels import sentence

NAME = "haze"
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def depth_proxy(img: np.ndarray, depth_mix: float) -> np.ndarray:
    """A smooth ``(H, W)`` depth proxy in [0, 1]: ``depth_mix`` * luminance + the rest * ramp."""
    h, w = img.shape[:2]
    ramp = np.linspace(1.0, 0.0, h, dtype=np.float32)[:, None].repeat(w, axis=1)
    sigma = max(h, w) / 16.0
    luma = cv2.GaussianBlur(img @ _LUMA, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT_101)
    lo, hi = float(luma.min()), float(luma.max())
    luma = (luma - lo) / (hi - lo) if hi > lo else np.zeros_like(luma)
    return (np.float32(depth_mix) * luma + np.float32(1.0 - depth_mix) * ramp).astype(np.float32)


def transmission(img: np.ndarray, params: dict) -> np.ndarray:
    """The transmission map ``t = exp(-beta d)`` the op uses, ``(H, W, 1)``."""
    d = depth_proxy(img, params["depth_mix"])
    return np.exp(-np.float32(params["beta"]) * d)[..., None].astype(np.float32)


def apply(img: np.ndarray, params: dict) -> np.ndarray:
    """Haze ``img``: ``img * t + airlight * (1 - t)``."""
    t = transmission(img, params)
    return (img * t + np.float32(params["airlight"]) * (1.0 - t)).astype(np.float32)


@dataclass(frozen=True)
class Spec:
    """Ranges of the scattering coefficient ``beta`` (per unit of proxy depth), the
    airlight ``airlight`` (grey, RESIDE's [0.7, 1.0]) and the proxy's luminance weight."""

    beta: list[float] = field(default_factory=lambda: [0.6, 2.0])
    airlight: list[float] = field(default_factory=lambda: [0.7, 1.0])
    depth_mix: list[float] = field(default_factory=lambda: [0.2, 0.6])

    def validate(self) -> None:
        from ..recipe_checks import check_range

        check_range("beta", self.beta, low=0.0)
        check_range("airlight", self.airlight, low=0.0, high=1.0)
        check_range("depth_mix", self.depth_mix, low=0.0, high=1.0)


def sample(rng: np.random.Generator, spec: Spec, ctx: dict) -> dict:
    """Draw beta, airlight and the depth-proxy mix."""
    return {"beta": float(rng.uniform(*spec.beta)), "airlight": float(rng.uniform(*spec.airlight)),
            "depth_mix": float(rng.uniform(*spec.depth_mix))}


def label(params: dict) -> str | None:
    """Degradation label: ``haze``."""
    return "haze"


def prompt(params: dict, bare: bool) -> str:
    """Restoration sentence: ``Remove the haze``."""
    return sentence("haze")
