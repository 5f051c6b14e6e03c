"""Additive Gaussian and Poisson noise, colour or grey (Real-ESRGAN's noise models).

The noise field is drawn from its own generator seeded by ``params['seed']``, so a
stored parameter set replays the same noise bit for bit.
"""

from __future__ import annotations

import math
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
    (``poisson_scale``); the noise is grey (one field for all channels) with ``gray_prob``.

    ``unit_decimals``: round the drawn sigma so that ``sigma / 255`` (the 0-1 scale SPIRE's
    prompt prints, "Denoise with sigma 0.06") has this many decimals, staying inside
    ``sigma``; the stored sigma stays on the 0-255 scale (0.06 -> 15.3).
    """

    gaussian_prob: float = 0.5
    sigma: list[float] = field(default_factory=lambda: [1.0, 30.0])
    poisson_scale: list[float] = field(default_factory=lambda: [0.05, 3.0])
    gray_prob: float = 0.4
    unit_decimals: int | None = None

    def validate(self) -> None:
        from ..recipe_checks import check_prob, check_range

        check_prob("gaussian_prob", self.gaussian_prob)
        check_prob("gray_prob", self.gray_prob)
        check_range("sigma", self.sigma, low=0.0)
        check_range("poisson_scale", self.poisson_scale, low=0.0)
        if self.unit_decimals is not None:
            if not isinstance(self.unit_decimals, int) or isinstance(self.unit_decimals, bool) \
                    or not 0 <= self.unit_decimals <= 6:
                raise ValueError(f"unit_decimals must be an integer in 0..6, got {self.unit_decimals!r}")
            lo, hi = _unit_grid(self.sigma, self.unit_decimals)
            if lo > hi:
                raise ValueError(f"sigma {list(self.sigma)} holds no multiple of 255 x 10^-{self.unit_decimals}")


def _unit_grid(sigma: list[float], d: int) -> tuple[int, int]:
    """The first and last grid steps ``k`` (``sigma = k / 10**d * 255``) inside the range ``sigma``."""
    step = 10**d / 255.0
    return math.ceil(sigma[0] * step - 1e-9), math.floor(sigma[1] * step + 1e-9)


def to_unit_grid(sigma: float, spec_sigma: list[float], d: int) -> float:
    """``sigma`` (0-255) moved to the nearest value whose ``sigma / 255`` has ``d`` decimals, inside the range."""
    lo, hi = _unit_grid(spec_sigma, d)
    k = min(max(round(sigma / 255.0 * 10**d), lo), hi)
    return round(k / 10**d * 255.0, 9)


def sample(rng: np.random.Generator, spec: Spec, ctx: dict) -> dict:
    """Draw the noise kind, its strength, grey or colour, and the noise field's seed."""
    if rng.uniform() < spec.gaussian_prob:
        sigma = float(rng.uniform(*spec.sigma))
        if spec.unit_decimals is not None:
            sigma = to_unit_grid(sigma, spec.sigma, spec.unit_decimals)
        params = {"kind": "gaussian", "sigma": sigma, "scale": None}
    else:
        params = {"kind": "poisson", "sigma": None, "scale": float(rng.uniform(*spec.poisson_scale))}
    params["gray"] = bool(rng.uniform() < spec.gray_prob)
    params["seed"] = int(rng.integers(2**63))
    return params


def label(params: dict) -> str | None:
    """Degradation label: ``noise``."""
    return "noise"


def prompt(params: dict, bare: bool) -> str:
    """SPIRE restoration prompt: ``Denoise with sigma 0.06`` (Gaussian) or ``Denoise``.

    SPIRE writes the noise sigma on the 0-1 intensity scale with two decimals ("Denoise with
    sigma 0.06" ... "0.24", Sec. 4.4), so the stored 0-255 sigma is divided by 255; a recipe
    with ``unit_decimals: 2`` draws sigmas for which this text is exact (15.3 -> 0.06), a fixed
    0-255 setting such as Diff-Restorer's sigma 50 prints rounded (0.196 -> 0.20).
    """
    if bare or params["kind"] != "gaussian":
        return "Denoise"
    return f"Denoise with sigma {params['sigma'] / 255.0:.2f}"
