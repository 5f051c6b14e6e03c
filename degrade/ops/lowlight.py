"""Low-light: exposure and gamma darkening in linear light with shot and read noise.

In the spirit of unprocessing (Brooks et al., "Unprocessing Images for Learned Raw
Denoising", CVPR 2019, Sec. 3.1 and 4): the sRGB image is taken to linear light,
darkened by an exposure factor and an extra gamma, given heteroscedastic sensor noise
of variance ``shot * x + read`` (shot noise grows with the signal, read noise does
not), clipped and taken back to sRGB. The noise field is drawn from ``params['seed']``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..labels import sentence

NAME = "low_light"


def srgb_to_linear(img: np.ndarray) -> np.ndarray:
    """The sRGB transfer function inverted (IEC 61966-2-1), float32 in [0, 1]."""
    img = np.clip(img, 0.0, 1.0)
    return np.where(img <= 0.04045, img / 12.92, ((img + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(lin: np.ndarray) -> np.ndarray:
    """The sRGB transfer function, float32 in [0, 1]."""
    lin = np.clip(lin, 0.0, 1.0)
    return np.where(lin <= 0.0031308, lin * 12.92, 1.055 * lin ** (1 / 2.4) - 0.055).astype(np.float32)


def darken(img: np.ndarray, exposure: float, gamma: float) -> np.ndarray:
    """Linear-light image darkened to ``exposure * x ** gamma`` (no noise)."""
    return (np.float32(exposure) * srgb_to_linear(img) ** np.float32(gamma)).astype(np.float32)


def apply(img: np.ndarray, params: dict) -> np.ndarray:
    """Darken ``img`` and add shot/read noise in linear light; back to sRGB in [0, 1]."""
    dark = darken(img, params["exposure"], params["gamma"])
    rng = np.random.default_rng(params["seed"])
    var = np.float32(params["shot"]) * dark + np.float32(params["read"])
    noisy = dark + rng.standard_normal(dark.shape, dtype=np.float32) * np.sqrt(var)
    return linear_to_srgb(noisy)


@dataclass(frozen=True)
class Spec:
    """``exposure`` (fraction of the light kept) and extra ``gamma`` ranges; the shot-noise
    level is log-uniform in ``shot`` and the read noise follows Brooks et al.'s fit
    ``log(read) = 2.18 log(shot) + 1.20 + N(0, 0.26)`` (their Sec. 4, Fig. 2)."""

    exposure: list[float] = field(default_factory=lambda: [0.03, 0.15])
    gamma: list[float] = field(default_factory=lambda: [1.0, 1.4])
    shot: list[float] = field(default_factory=lambda: [0.0001, 0.012])

    def validate(self) -> None:
        from ..recipe_checks import check_range

        check_range("exposure", self.exposure, low=1e-4, high=1.0)
        check_range("gamma", self.gamma, low=0.1, high=5.0)
        check_range("shot", self.shot, low=1e-8, high=1.0)


def sample(rng: np.random.Generator, spec: Spec, ctx: dict) -> dict:
    """Draw exposure, gamma, shot and read noise levels and the noise field's seed."""
    exposure = float(rng.uniform(*spec.exposure))
    gamma = float(rng.uniform(*spec.gamma))
    log_shot = float(rng.uniform(math.log(spec.shot[0]), math.log(spec.shot[1])))
    log_read = 2.18 * log_shot + 1.20 + float(rng.normal(0.0, 0.26))
    return {"exposure": exposure, "gamma": gamma, "shot": math.exp(log_shot), "read": math.exp(log_read),
            "seed": int(rng.integers(2**63))}


def label(params: dict) -> str | None:
    """Degradation label: ``low-light``."""
    return "low-light"


def prompt(params: dict, bare: bool) -> str:
    """Restoration sentence: ``Brighten the low-light image``."""
    return sentence("low-light")
