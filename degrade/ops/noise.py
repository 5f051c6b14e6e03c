"""Additive Gaussian and Poisson noise, colour or grey (Real-ESRGAN's noise models).

The noise field is drawn from its own generator seeded by ``params['seed']``, so a
stored parameter set replays the same noise bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

NAME = "noise"
_GREY = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def gaussian(img: np.ndarray, sigma: float, gray: bool, seed: int) -> np.ndarray:
    """Add N(0, (sigma/255)^2) noise, one field for all channels when ``gray``; clip to [0, 1]."""
    rng = np.random.default_rng(seed)
    h, w, c = img.shape
    n = rng.standard_normal((h, w, 1 if gray else c), dtype=np.float32)
    n *= np.float32(sigma / 255.0)
    return np.clip(img + n, 0.0, 1.0)


def poisson(img: np.ndarray, scale: float, gray: bool, seed: int) -> np.ndarray:
    """Add ``scale`` times Poisson shot noise of the 8-bit-quantised image; clip to [0, 1].

    As Real-ESRGAN: the number of photon levels is the number of distinct 8-bit values
    in the (grey, when ``gray``) image, rounded up to a power of two.
    """
    rng = np.random.default_rng(seed)
    base = img @ _GREY if gray else img
    q = np.clip(np.rint(base * 255.0), 0, 255)
    levels = int(np.count_nonzero(np.bincount(q.astype(np.int64).ravel(), minlength=256)))
    vals = float(2 ** np.ceil(np.log2(max(levels, 1))))
    q = (q / 255.0).astype(np.float32)
    noisy = rng.poisson(q * vals).astype(np.float32) / np.float32(vals)
    n = noisy - q
    if gray:
        n = n[..., None]
    return np.clip(img + n * np.float32(scale), 0.0, 1.0)


def apply(img: np.ndarray, params: dict) -> np.ndarray:
    """Add the noise ``params`` describe (``kind`` gaussian or poisson)."""
    if params["kind"] == "gaussian":
        return gaussian(img, params["sigma"], params["gray"], params["seed"])
    if params["kind"] == "poisson":
        return poisson(img, params["scale"], params["gray"], params["seed"])
    raise ValueError(f"unknown noise kind {params['kind']!r}; expected gaussian or poisson")


@dataclass(frozen=True)
class Spec:
    """Gaussian with chance ``gaussian_prob`` (``sigma`` on the 0-255 scale), else Poisson
    (``poisson_scale``); the noise is grey (one field for all channels) with ``gray_prob``."""

    gaussian_prob: float = 0.5
    sigma: list[float] = field(default_factory=lambda: [1.0, 30.0])
    poisson_scale: list[float] = field(default_factory=lambda: [0.05, 3.0])
    gray_prob: float = 0.4

    def validate(self) -> None:
        from ..recipe_checks import check_prob, check_range

        check_prob("gaussian_prob", self.gaussian_prob)
        check_prob("gray_prob", self.gray_prob)
        check_range("sigma", self.sigma, low=0.0)
        check_range("poisson_scale", self.poisson_scale, low=0.0)


def sample(rng: np.random.Generator, spec: Spec, ctx: dict) -> dict:
    """Draw the noise kind, its strength, grey or colour, and the noise field's seed."""
    if rng.uniform() < spec.gaussian_prob:
        params = {"kind": "gaussian", "sigma": float(rng.uniform(*spec.sigma)), "scale": None}
    else:
        params = {"kind": "poisson", "sigma": None, "scale": float(rng.uniform(*spec.poisson_scale))}
    params["gray"] = bool(rng.uniform() < spec.gray_prob)
    params["seed"] = int(rng.integers(2**63))
    return params


def label(params: dict) -> str | None:
    """Degradation label: ``noise``."""
    return "noise"


def prompt(params: dict, bare: bool) -> str:
    """SPIRE restoration prompt: ``Denoise with sigma 15`` (Gaussian, 0-255 scale) or ``Denoise``."""
    if bare or params["kind"] != "gaussian":
        return "Denoise"
    return f"Denoise with sigma {params['sigma']:.0f}"
