"""Resize by a factor or to a target size: area, bilinear or bicubic.

Semantics follow PyTorch's ``F.interpolate`` as Real-ESRGAN calls it: no
anti-aliasing, half-pixel centres, bicubic with ``a = -0.75``, and ``area`` as
adaptive average pooling (each output pixel averages input pixels
``floor(i*n/m) .. ceil((i+1)*n/m)``). A resize given by a factor (``grid: factor``,
Real-ESRGAN's first order calls ``interpolate(scale_factor=f)``) maps output pixel
``i`` to input coordinate ``(i + 0.5) / f - 0.5``, not ``(i + 0.5) * n / m - 0.5``: the
two differ by up to one pixel at the far edge, so both are implemented.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

NAME = "resize"
MODES = ("area", "bilinear", "bicubic")
_CV2 = {"bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC}


def _bins(n: int, out: int) -> tuple[np.ndarray, np.ndarray]:
    """Adaptive-pooling bins: output ``i`` averages inputs ``start_i .. end_i - 1``."""
    i = np.arange(out)
    return (i * n) // out, -((-(i + 1) * n) // out)


def _area_up_axis(img: np.ndarray, out: int, axis: int) -> np.ndarray:
    """Upscaling bins hold one or two inputs: the mean of the first and last is exact for both."""
    start, end = _bins(img.shape[axis], out)
    return (np.take(img, start, axis=axis) + np.take(img, end - 1, axis=axis)) * np.float32(0.5)


def _area_down(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """Downscaling on both axes: bin sums from one float64 integral image."""
    integral = cv2.integral(img, sdepth=cv2.CV_64F)
    if integral.ndim == 2:
        integral = integral[..., None]
    sh, eh = _bins(img.shape[0], h)
    sw, ew = _bins(img.shape[1], w)
    total = integral[eh][:, ew] - integral[sh][:, ew] - integral[eh][:, sw] + integral[sh][:, sw]
    count = ((eh - sh)[:, None] * (ew - sw)[None, :])[..., None]
    return (total / count).astype(np.float32)


def _area(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """PyTorch's ``area`` (adaptive average pooling) to ``h x w``."""
    if h > img.shape[0]:
        img = _area_up_axis(img, h, 0)
    if w > img.shape[1]:
        img = _area_up_axis(img, w, 1)
    if (h, w) != img.shape[:2]:
        img = _area_down(img, h, w)
    return img


def _cubic_weights(t: np.ndarray, a: float = -0.75) -> np.ndarray:
    """Keys cubic convolution weights of the taps at offsets -1, 0, 1, 2 for fractions ``t``."""
    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], axis=1)


def _grid_axis(img: np.ndarray, out: int, inv_scale: float, mode: str, axis: int) -> np.ndarray:
    """Interpolate along ``axis`` with PyTorch's source-index rule for a given scale."""
    n = img.shape[axis]
    src = inv_scale * (np.arange(out, dtype=np.float64) + 0.5) - 0.5
    if mode == "bilinear":
        src = np.maximum(src, 0.0)
        i0 = np.minimum(np.floor(src).astype(np.int64), n - 1)
        lam = np.clip(src - i0, 0.0, 1.0)
        idx = np.stack([i0, np.minimum(i0 + 1, n - 1)], axis=1)
        w = np.stack([1.0 - lam, lam], axis=1)
    else:
        i0 = np.floor(src).astype(np.int64)
        idx = np.clip(i0[:, None] + np.arange(-1, 3)[None, :], 0, n - 1)
        w = _cubic_weights(src - i0)
    moved = np.moveaxis(img, axis, 0)
    acc = np.zeros((out,) + moved.shape[1:], dtype=np.float32)
    for k in range(idx.shape[1]):
        acc += moved[idx[:, k]] * w[:, k].astype(np.float32).reshape((out,) + (1,) * (moved.ndim - 1))
    return np.moveaxis(acc, 0, axis)


def resize(img: np.ndarray, size: tuple[int, int], mode: str, factor: float | None = None) -> np.ndarray:
    """Resize an ``(H, W, C)`` float32 image to ``size = (h, w)`` with ``mode``.

    With ``factor``, bilinear and bicubic sample the input on the grid of that scale
    factor (PyTorch's ``scale_factor`` semantics) instead of the ``in/out`` ratio.
    """
    h, w = int(size[0]), int(size[1])
    if h < 1 or w < 1:
        raise ValueError(f"resize target must be at least 1x1, got {h}x{w}")
    if mode not in MODES:
        raise ValueError(f"unknown resize mode {mode!r}; expected one of {MODES}")
    if (h, w) == img.shape[:2]:
        return img
    if mode == "area":
        return _area(img, h, w)
    if factor is not None:
        if factor <= 0:
            raise ValueError(f"resize factor must be positive, got {factor}")
        return _grid_axis(_grid_axis(img, h, 1.0 / factor, mode, 0), w, 1.0 / factor, mode, 1)
    out = cv2.resize(img, (w, h), interpolation=_CV2[mode])
    return out.reshape(h, w, -1) if out.ndim == 2 else out


def apply(img: np.ndarray, params: dict) -> np.ndarray:
    """Resize ``img`` to ``params['size']`` with ``params['mode']`` (on the factor's grid if ``grid: factor``)."""
    factor = params["factor"] if params.get("grid") == "factor" else None
    return resize(img, params["size"], params["mode"], factor)


@dataclass(frozen=True)
class Spec:
    """Sampling ranges of one resize stage.

    ``directions`` gives the chance to go up, down or keep the size; the factor is drawn
    from ``[1, range[1]]`` up or ``[range[0], 1]`` down. ``relative_to: input`` scales
    the current size (``floor(n * f)``, Real-ESRGAN's first order); ``target`` scales
    the output size (``int(n / scale * f)``, its second order). ``target: true``
    resizes exactly to the output size (the final resize).

    ``upsample_decimals`` (SPIRE's "Upsample to 6.0x"): a down or keep factor is moved so
    that the upsampling that undoes this resize, ``upsample = current size / new size``, has
    this many decimals, and ``upsample`` is stored with the parameters. With ``relative_to:
    target`` on the HQ image that is ``scale / f``: the output scale and the drawn factor in
    one number, what a model that sees the LQ at HQ size has to undo.
    """

    directions: dict[str, float] = field(default_factory=lambda: {"down": 1.0})
    range: list[float] = field(default_factory=lambda: [0.15, 1.5])
    modes: list[str] = field(default_factory=lambda: list(MODES))
    relative_to: str = "input"
    target: bool = False
    upsample_decimals: int | None = None

    def validate(self) -> None:
        from ..recipe_checks import check_probs, check_range

        bad = set(self.directions) - {"up", "down", "keep"}
        if bad:
            raise ValueError(f"unknown resize directions {sorted(bad)}; expected up, down, keep")
        check_probs("directions", self.directions)
        check_range("range", self.range, low=1e-3)
        # An "up" factor is drawn from [1, range[1]] and a "down" one from [range[0], 1].
        if self.directions.get("up", 0) > 0 and self.range[1] < 1.0:
            raise ValueError(f"range must reach 1 or above when directions has 'up', got {list(self.range)}")
        if self.directions.get("down", 0) > 0 and self.range[0] > 1.0:
            raise ValueError(f"range must reach 1 or below when directions has 'down', got {list(self.range)}")
        if not self.modes or set(self.modes) - set(MODES):
            raise ValueError(f"modes must be a non-empty subset of {MODES}, got {self.modes}")
        if self.relative_to not in ("input", "target"):
            raise ValueError(f"relative_to must be 'input' or 'target', got {self.relative_to!r}")
        if self.upsample_decimals is not None:
            if not isinstance(self.upsample_decimals, int) or isinstance(self.upsample_decimals, bool) \
                    or not 0 <= self.upsample_decimals <= 6:
                raise ValueError(f"upsample_decimals must be an integer in 0..6, got {self.upsample_decimals!r}")
            if self.target or self.directions.get("up", 0) > 0:
                raise ValueError("upsample_decimals is for a drawn down (or keep) factor: not with target: true "
                                 "or an 'up' direction")


def sample(rng: np.random.Generator, spec: Spec, ctx: dict) -> dict:
    """Draw direction, factor and mode; the target size follows from ``ctx``."""
    mode = spec.modes[int(rng.integers(len(spec.modes)))]
    if spec.target:
        (h, w), (th, tw) = ctx["size"], ctx["target"]
        direction = "down" if th * tw < h * w else ("up" if th * tw > h * w else "keep")
        return {"mode": mode, "direction": direction, "factor": th / h, "size": [int(th), int(tw)], "grid": "size"}
    dirs = list(spec.directions)
    p = np.asarray(list(spec.directions.values()), dtype=np.float64)
    direction = dirs[int(rng.choice(len(dirs), p=p / p.sum()))]
    if direction == "up":
        factor = float(rng.uniform(1.0, spec.range[1]))
    elif direction == "down":
        factor = float(rng.uniform(spec.range[0], 1.0))
    else:
        factor = 1.0
    params = {"mode": mode, "direction": direction, "factor": factor, "size": None}
    if spec.upsample_decimals is not None:
        params.update(_upsample_grid(factor, spec, ctx))
    return params


def _upsample_grid(factor: float, spec: Spec, ctx: dict) -> dict:
    """The factor moved so that ``upsample = r / factor`` has ``spec.upsample_decimals`` decimals.

    ``r`` is 1 for a factor of the current size, ``current / target`` (the scale, on the HQ
    image) for a factor of the output size; ``upsample`` stays where ``factor`` is in
    ``[range[0], 1]``.
    """
    d = spec.upsample_decimals
    r = ctx["size"][0] / ctx["target"][0] if spec.relative_to == "target" else 1.0
    lo = math.ceil(r * 10**d - 1e-9)  # factor 1
    hi = math.floor(r / spec.range[0] * 10**d + 1e-9) if spec.range[0] < 1.0 else lo  # factor range[0]
    k = min(max(round(r / factor * 10**d), lo), max(lo, hi))
    upsample = k / 10**d
    return {"factor": r / upsample, "upsample": upsample}


def resolve(params: dict, spec: Spec, ctx: dict) -> dict:
    """Fill in the output size of a drawn resize from the current and target sizes.

    ``direction`` then says what really happened to the size (Real-ESRGAN's second
    order "keep" still moves the image to the output grid).
    """
    if params["size"] is None:
        f = params["factor"]
        if spec.relative_to == "input":
            h, w = ctx["size"]
            size = [math.floor(h * f), math.floor(w * f)]
            grid = "factor"  # interpolate(scale_factor=f)
        else:
            h, w = ctx["target"]
            size = [int(h * f), int(w * f)]
            grid = "size"  # interpolate(size=...)
        params = {**params, "size": [max(1, size[0]), max(1, size[1])], "grid": grid}
    (h, w), (nh, nw) = ctx["size"], params["size"]
    direction = "down" if nh * nw < h * w else ("up" if nh * nw > h * w else "keep")
    return {**params, "direction": direction}


def label(params: dict) -> str | None:
    """Degradation label: ``downsample`` or ``resize`` (none when the size is kept)."""
    if params["direction"] == "keep":
        return None
    return "downsample" if params["direction"] == "down" else "resize"


def prompt(params: dict, bare: bool) -> str | None:
    """SPIRE restoration prompt for a downsampling: ``Upsample to 3.2x`` or ``Upsample``.

    The factor is the stored ``upsample`` (current size / new size, the output scale
    included, see :class:`Spec`) when there is one, else ``1 / factor``.
    """
    if params["direction"] != "down":
        return None
    up = params["upsample"] if params.get("upsample") is not None else 1.0 / params["factor"]
    return "Upsample" if bare else f"Upsample to {up:.1f}x"
