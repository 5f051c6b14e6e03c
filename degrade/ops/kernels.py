"""Blur kernels of the Real-ESRGAN family, as pure functions of their parameters.

Every kernel is a float32 ``(size, size)`` array summing to 1, defined on the
integer grid centred on the middle tap (``size`` odd). Covariances follow
Real-ESRGAN (Wang et al., ICCV-W 2021, Sec. 3.1): ``Sigma = R diag(sx^2, sy^2) R^T``
with ``R`` the rotation by ``theta`` (radians).
"""

from __future__ import annotations

import math

import numpy as np

KERNEL_TYPES = (
    "iso",
    "aniso",
    "generalized_iso",
    "generalized_aniso",
    "plateau_iso",
    "plateau_aniso",
    "sinc",
)


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    if size < 1 or size % 2 == 0:
        raise ValueError(f"kernel size must be a positive odd integer, got {size}")
    ax = np.arange(-(size // 2), size // 2 + 1, dtype=np.float64)
    xx, yy = np.meshgrid(ax, ax)
    return xx, yy


def _mahalanobis(size: int, sigma_x: float, sigma_y: float, theta: float) -> np.ndarray:
    """Squared Mahalanobis distance of every tap under the rotated covariance."""
    if sigma_x <= 0 or sigma_y <= 0:
        raise ValueError(f"kernel sigmas must be positive, got {sigma_x}, {sigma_y}")
    c, s = math.cos(theta), math.sin(theta)
    rot = np.array([[c, -s], [s, c]])
    cov = rot @ np.diag([sigma_x**2, sigma_y**2]) @ rot.T
    inv = np.linalg.inv(cov)
    xx, yy = _grid(size)
    return inv[0, 0] * xx * xx + (inv[0, 1] + inv[1, 0]) * xx * yy + inv[1, 1] * yy * yy


def _normalise(k: np.ndarray) -> np.ndarray:
    return (k / k.sum()).astype(np.float32)


def gaussian(size: int, sigma_x: float, sigma_y: float | None = None, theta: float = 0.0) -> np.ndarray:
    """Bivariate Gaussian kernel; isotropic when ``sigma_y`` is None."""
    sigma_y = sigma_x if sigma_y is None else sigma_y
    return _normalise(np.exp(-0.5 * _mahalanobis(size, sigma_x, sigma_y, theta)))


def generalized_gaussian(size: int, sigma_x: float, sigma_y: float, theta: float, beta: float) -> np.ndarray:
    """Generalized Gaussian ``exp(-0.5 * d^beta)`` (``d`` the squared Mahalanobis distance)."""
    return _normalise(np.exp(-0.5 * np.power(_mahalanobis(size, sigma_x, sigma_y, theta), beta)))


def plateau(size: int, sigma_x: float, sigma_y: float, theta: float, beta: float) -> np.ndarray:
    """Plateau-shaped kernel ``1 / (d^beta + 1)``."""
    return _normalise(1.0 / (np.power(_mahalanobis(size, sigma_x, sigma_y, theta), beta) + 1.0))


def sinc(size: int, omega_c: float) -> np.ndarray:
    """2-D sinc (ideal circular low-pass) kernel with cut-off ``omega_c`` in radians/pixel."""
    from scipy.special import j1

    if not 0 < omega_c <= math.pi:
        raise ValueError(f"sinc cut-off must be in (0, pi], got {omega_c}")
    xx, yy = _grid(size)
    r = np.sqrt(xx * xx + yy * yy)
    with np.errstate(divide="ignore", invalid="ignore"):
        k = omega_c * j1(omega_c * r) / (2 * math.pi * r)
    k[size // 2, size // 2] = omega_c**2 / (4 * math.pi)
    return _normalise(k)


def make_kernel(params: dict) -> np.ndarray:
    """Build the kernel described by a stored ``blur`` parameter dict."""
    kind, size = params["kernel"], int(params["size"])
    if kind == "sinc":
        return sinc(size, params["omega_c"])
    sx, sy, theta = params["sigma_x"], params["sigma_y"], params["theta"]
    if kind in ("iso", "aniso"):
        return gaussian(size, sx, sy, theta)
    if kind in ("generalized_iso", "generalized_aniso"):
        return generalized_gaussian(size, sx, sy, theta, params["beta"])
    if kind in ("plateau_iso", "plateau_aniso"):
        return plateau(size, sx, sy, theta, params["beta"])
    raise ValueError(f"unknown kernel type {kind!r}; expected one of {', '.join(KERNEL_TYPES)}")
