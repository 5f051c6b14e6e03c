"""Blur by a kernel of the Real-ESRGAN family (Gaussian, generalized, plateau, sinc)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from .kernels import KERNEL_TYPES, make_kernel

NAME = "blur"


def filter2d(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Correlate an ``(H, W, C)`` float32 image with ``kernel``, reflect-101 borders."""
    return cv2.filter2D(img, -1, kernel, borderType=cv2.BORDER_REFLECT_101)


def apply(img: np.ndarray, params: dict) -> np.ndarray:
    """Blur ``img`` (float32 RGB in [0, 1]) with the kernel ``params`` describe."""
    return filter2d(img, make_kernel(params))


@dataclass(frozen=True)
class Spec:
    """Sampling ranges of one blur stage (Real-ESRGAN's ``kernel_list``/``sinc_prob`` options).

    ``kernel_types`` maps kernel type to probability; ``sigma`` (pixels), ``beta_g``
    and ``beta_p`` are ``[low, high]`` ranges; ``sinc_prob`` replaces the kernel by a
    sinc filter whose cut-off is drawn from ``sinc_omega`` or, when that is unset, from
    ``[pi/3, pi]`` below size 13 and ``[pi/5, pi]`` from 13 up (Real-ESRGAN's rule).
    """

    kernel_sizes: list[int] = field(default_factory=lambda: [7, 9, 11, 13, 15, 17, 19, 21])
    kernel_types: dict[str, float] = field(default_factory=lambda: {"iso": 1.0})
    sigma: list[float] = field(default_factory=lambda: [0.2, 3.0])
    beta_g: list[float] = field(default_factory=lambda: [0.5, 4.0])
    beta_p: list[float] = field(default_factory=lambda: [1.0, 2.0])
    rotation: list[float] = field(default_factory=lambda: [-math.pi, math.pi])
    sinc_prob: float = 0.0
    sinc_omega: list[float] | None = None

    def validate(self) -> None:
        from ..recipe_checks import check_prob, check_probs, check_range

        if not self.kernel_sizes or any(k < 3 or k % 2 == 0 or k > 41 for k in self.kernel_sizes):
            raise ValueError(f"kernel_sizes must be odd integers in 3..41, got {self.kernel_sizes}")
        bad = set(self.kernel_types) - set(KERNEL_TYPES[:-1])
        if bad:
            raise ValueError(f"unknown kernel types {sorted(bad)}; expected some of {KERNEL_TYPES[:-1]}")
        check_probs("kernel_types", self.kernel_types)
        check_range("sigma", self.sigma, low=1e-3)
        check_range("beta_g", self.beta_g, low=1e-3)
        check_range("beta_p", self.beta_p, low=1e-3)
        check_range("rotation", self.rotation)
        check_prob("sinc_prob", self.sinc_prob)
        if self.sinc_omega is not None:
            check_range("sinc_omega", self.sinc_omega, low=1e-3, high=math.pi)


def _beta(rng: np.random.Generator, lo: float, hi: float) -> float:
    # Real-ESRGAN draws beta below or above 1 with equal chance. That split only makes
    # sense for a range around 1: for one that excludes 1 it would draw from [lo, 1] or
    # [1, hi], outside the range, so draw uniformly from the range instead (the coin is
    # still drawn, so the generator advances the same way).
    below = rng.uniform() < 0.5
    if lo > 1.0 or hi < 1.0:
        return float(rng.uniform(lo, hi))
    return float(rng.uniform(lo, 1.0) if below else rng.uniform(1.0, hi))


def sample(rng: np.random.Generator, spec: Spec, ctx: dict) -> dict:
    """Draw one kernel's parameters (type, size, sigmas, rotation, beta or cut-off)."""
    size = int(spec.kernel_sizes[rng.integers(len(spec.kernel_sizes))])
    if rng.uniform() < spec.sinc_prob:
        lo, hi = spec.sinc_omega or (math.pi / 3 if size < 13 else math.pi / 5, math.pi)
        return {"kernel": "sinc", "size": size, "omega_c": float(rng.uniform(lo, hi))}
    types = list(spec.kernel_types)
    kind = types[int(rng.choice(len(types), p=_norm(list(spec.kernel_types.values()))))]
    sx = float(rng.uniform(*spec.sigma))
    if kind.endswith("iso") and not kind.endswith("aniso"):
        sy, theta = sx, 0.0
    else:
        sy, theta = float(rng.uniform(*spec.sigma)), float(rng.uniform(*spec.rotation))
    params = {"kernel": kind, "size": size, "sigma_x": sx, "sigma_y": sy, "theta": theta}
    if kind.startswith("generalized"):
        params["beta"] = _beta(rng, *spec.beta_g)
    elif kind.startswith("plateau"):
        params["beta"] = _beta(rng, *spec.beta_p)
    return params


def _norm(p: list[float]) -> np.ndarray:
    a = np.asarray(p, dtype=np.float64)
    return a / a.sum()


def label(params: dict) -> str | None:
    """Degradation label: ``sinc`` (ringing) for the sinc filter, ``blur`` otherwise."""
    return "sinc" if params["kernel"] == "sinc" else "blur"


def prompt(params: dict, bare: bool) -> str:
    """SPIRE restoration prompt: ``Deblur with sigma 2.1`` (isotropic Gaussian) or ``Deblur``."""
    if bare or params["kernel"] != "iso":
        return "Deblur"
    return f"Deblur with sigma {params['sigma_x']:.1f}"
