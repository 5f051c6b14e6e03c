"""PSNR, SSIM and NIQE computed the way BasicSR computes them (on BT.601 YCbCr Y, and PSNR/SSIM on RGB).

Most super-resolution papers report "PSNR / SSIM on Y" and NIQE from BasicSR's
``basicsr.metrics`` (``calculate_psnr``, ``calculate_ssim`` with ``test_y_channel=True``,
``calculate_niqe`` with ``convert_to='y'``). pyiqa's metrics of the same names differ in
small, citable ways (float32 and an eps of 1e-8 in the MSE, a contrast-structure term clamped
at 0, the YIQ luma instead of YCbCr Y), so pirs computes BasicSR's conventions itself, here,
and ``tests/test_bench_calibration.py`` checks the values against BasicSR's own output
(stored in ``tests/fixtures/calibration/basicsr.json`` by ``benchmarks/calibrate_metrics.py``).

The conventions, as BasicSR 1.4.2 applies them to 8-bit images:

* **Y.** The 8-bit values are divided by 255 in float32; Y = (16 + 65.481 R + 128.553 G +
  24.966 B) / 255 is formed in float64 from those float32 values, rounded to float32, and
  multiplied by 255 in float32. PSNR and SSIM then work in float64; NIQE rounds Y to
  integers (half to even) and stays in float32 until its features.
* **Border.** ``crop_border`` pixels are removed from every side before anything else.
* **PSNR.** 10 log10(255^2 / MSE), MSE the float64 mean over the Y plane (or over the three
  8-bit channels); identical images give ``inf`` (no eps).
* **SSIM.** Wang et al.'s SSIM with an 11x11 Gaussian window (sigma 1.5), 'valid' filtering,
  C1 = (0.01 * 255)^2, C2 = (0.03 * 255)^2, no downsampling and no clamping of the
  contrast-structure term (it can be negative), mean of the map (on RGB: of each channel's
  map, averaged).
* **NIQE.** Mittal et al.'s NIQE with the official model parameters, 96x96 blocks without
  overlap (the image cut to whole blocks), local normalisation by a 7x7 Gaussian (sigma 7/6,
  edges replicated) with + 1 in the denominator, 18 AGGD features per block at full and half
  size (MATLAB's bicubic ``imresize`` with antialiasing), the AGGD shape found on MATLAB's grid
  0.2:0.001:10, block features in float32, the distance in float64.

numpy, scipy and OpenCV do the work; torch only NIQE's half-size resize (imported there).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

#: BT.601 weights of B, G and R (BasicSR forms Y from BGR in this order).
_Y_BGR = (24.966, 128.553, 65.481)


def ycbcr_y(rgb: np.ndarray) -> np.ndarray:
    """Y of (..., H, W, 3) RGB, given as uint8 or as float32 values v / 255, as float32 in [16, 235].

    float32 inputs must be exactly ``uint8 / 255`` in float32 (what ``bench``'s decoder gives);
    the result is bit for bit BasicSR's ``to_y_channel`` of the same 8-bit image.
    """
    x = rgb.astype(np.float32) / np.float32(255.0) if rgb.dtype == np.uint8 else np.asarray(rgb, np.float32)
    b, g, r = x[..., 2].astype(np.float64), x[..., 1].astype(np.float64), x[..., 0].astype(np.float64)
    y = b * _Y_BGR[0] + g * _Y_BGR[1] + r * _Y_BGR[2]
    y = ((y + 16.0) / 255.0).astype(np.float32)
    return y * np.float32(255.0)


def _crop(a: np.ndarray, c: int) -> np.ndarray:
    return a[..., c:-c, c:-c] if c else a


def psnr_y(pred: np.ndarray, ref: np.ndarray, crop_border: int = 0) -> float:
    """PSNR on Y of one pair of (H, W, 3) RGB images (uint8 or uint8 / 255 in float32); ``inf`` if equal."""
    yp = _crop(ycbcr_y(pred), crop_border).astype(np.float64)
    yr = _crop(ycbcr_y(ref), crop_border).astype(np.float64)
    mse = np.mean((yp - yr) ** 2)
    return math.inf if mse == 0 else float(10.0 * np.log10(255.0 * 255.0 / mse))


def gaussian_window_1d(size: int, sigma: float) -> np.ndarray:
    """A normalised 1-D Gaussian (the separable factor of MATLAB's ``fspecial('gaussian', size, sigma)``)."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


def ssim_map(x: np.ndarray, y: np.ndarray, clamp_cs: bool = False) -> np.ndarray:
    """The 'valid' SSIM map of two float64 (H, W) planes in [0, 255] (11x11 Gaussian window, sigma 1.5).

    The five local moments are filtered separably (OpenCV, float64), which equals the 11x11
    window of the reference to float64 rounding. ``clamp_cs`` clamps the contrast-structure
    term at 0 (pyiqa); BasicSR does not.
    """
    import cv2

    if min(x.shape) < 11:
        raise ValueError(f"SSIM needs planes of at least 11x11, got {x.shape}")
    g = gaussian_window_1d(11, 1.5)

    def f(a: np.ndarray) -> np.ndarray:
        return cv2.sepFilter2D(a, cv2.CV_64F, g, g, borderType=cv2.BORDER_REFLECT_101)[5:-5, 5:-5]

    c1, c2 = (0.01 * 255.0) ** 2, (0.03 * 255.0) ** 2
    mu1, mu2 = f(x), f(y)
    s1, s2, s12 = f(x * x) - mu1 * mu1, f(y * y) - mu2 * mu2, f(x * y) - mu1 * mu2
    cs = (2.0 * s12 + c2) / (s1 + s2 + c2)
    if clamp_cs:
        cs = np.maximum(cs, 0.0)
    return (2.0 * mu1 * mu2 + c1) / (mu1 * mu1 + mu2 * mu2 + c1) * cs


def ssim_y(pred: np.ndarray, ref: np.ndarray, crop_border: int = 0) -> float:
    """SSIM on Y of one pair of (H, W, 3) RGB images, BasicSR's convention (no clamp, Y not rounded)."""
    yp = _crop(ycbcr_y(pred), crop_border).astype(np.float64)
    yr = _crop(ycbcr_y(ref), crop_border).astype(np.float64)
    return float(ssim_map(yp, yr).mean())


def _eight_bit(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8, or float32 v / 255, as float64 values 0..255 (BasicSR's ``img.astype(np.float64)``)."""
    if rgb.dtype == np.uint8:
        return rgb.astype(np.float64)
    return np.rint(np.asarray(rgb, np.float64) * 255.0)


def psnr_rgb(pred: np.ndarray, ref: np.ndarray, crop_border: int = 0) -> float:
    """PSNR over the three channels of one pair of 8-bit RGB images, BasicSR's ``calculate_psnr`` without Y:
    float64 MSE, no eps, ``inf`` if equal."""
    p = _crop(np.moveaxis(_eight_bit(pred), -1, 0), crop_border)
    r = _crop(np.moveaxis(_eight_bit(ref), -1, 0), crop_border)
    mse = np.mean((p - r) ** 2)
    return math.inf if mse == 0 else float(10.0 * np.log10(255.0 * 255.0 / mse))


def ssim_rgb(pred: np.ndarray, ref: np.ndarray, crop_border: int = 0) -> float:
    """SSIM of each RGB channel, averaged, BasicSR's ``calculate_ssim`` without Y (no clamp, values 0..255)."""
    p = _crop(np.moveaxis(_eight_bit(pred), -1, 0), crop_border)
    r = _crop(np.moveaxis(_eight_bit(ref), -1, 0), crop_border)
    return float(np.mean([ssim_map(np.ascontiguousarray(p[c]), np.ascontiguousarray(r[c])).mean()
                          for c in (2, 1, 0)]))


# ---------------------------------------------------------------------------------------------- NIQE

NIQE_BLOCK = 96


@lru_cache(maxsize=1)
def _aggd_table() -> tuple[np.ndarray, np.ndarray]:
    """MATLAB's shape grid 0.2:0.001:10 and the ratio Gamma(2/a)^2 / (Gamma(1/a) Gamma(3/a)) on it."""
    from scipy.special import gamma

    grid = np.arange(0.2, 10.001, 0.001)
    inv = np.reciprocal(grid)
    return grid, np.square(gamma(inv * 2)) / (gamma(inv) * gamma(inv * 3))


def aggd_fit(x: np.ndarray) -> tuple[float, float, float]:
    """Shape, left and right scale of an asymmetric generalised Gaussian fitted by moment matching.

    ``x`` keeps its dtype (float32 for NIQE's blocks): the moments are taken in it, the shape
    is the grid point whose ratio is nearest, the scales are in float64.
    """
    from scipy.special import gamma

    v = x.ravel()
    left = np.sqrt(np.mean(v[v < 0] ** 2))
    right = np.sqrt(np.mean(v[v > 0] ** 2))
    g_hat = left / right
    r_hat = np.mean(np.abs(v)) ** 2 / np.mean(v ** 2)
    r_norm = r_hat * (g_hat ** 3 + 1) * (g_hat + 1) / ((g_hat ** 2 + 1) ** 2)
    grid, ratio = _aggd_table()
    alpha = grid[np.argmin((ratio - r_norm) ** 2)]
    k = np.sqrt(gamma(1 / alpha) / gamma(3 / alpha))
    return alpha, left * k, right * k


def niqe_block_features(block: np.ndarray) -> list[float]:
    """The 18 NIQE features of one normalised block: the AGGD of the block and of its four neighbour products."""
    from scipy.special import gamma

    alpha, bl, br = aggd_fit(block)
    out = [alpha, (bl + br) / 2]
    for shift in ((0, 1), (1, 0), (1, 1), (1, -1)):
        alpha, bl, br = aggd_fit(block * np.roll(block, shift, axis=(0, 1)))
        out += [alpha, (br - bl) * (gamma(2 / alpha) / gamma(1 / alpha)), bl, br]
    return out


def _cubic(x):
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's 'bicubic'), on a float32 torch tensor."""
    ax = x.abs()
    ax2, ax3 = ax ** 2, ax ** 3
    near = (1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1).to(ax.dtype)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2)).to(ax.dtype)
    return near + far


def _contributions(n_in: int, scale: float):
    """MATLAB ``imresize``'s contributions along one axis in float32: ``(weights (n_out, taps), first index
    (n_out,) into the input mirrored by ``pad_start`` samples, pad_start, pad_end)``.

    With antialiasing when shrinking, the kernel is widened by 1 / scale and scaled by scale; each
    output's weights are normalised to sum 1. A first or last tap that is zero for some output is
    dropped, as BasicSR's port does.
    """
    import torch

    n_out = math.ceil(n_in * scale)
    width = 4.0 / scale if scale < 1 else 4.0
    x = torch.linspace(1, n_out, n_out)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = torch.floor(u - width / 2)
    taps = math.ceil(width) + 2
    idx = left.view(n_out, 1) + torch.linspace(0, taps - 1, taps).view(1, taps)
    dist = u.view(n_out, 1) - idx
    w = scale * _cubic(dist * scale) if scale < 1 else _cubic(dist)
    w = w / torch.sum(w, 1).view(n_out, 1)
    zeros = torch.sum(w == 0, 0)
    if int(zeros[0]) != 0:
        idx, w = idx[:, 1:], w[:, 1:]
    if int(zeros[-1]) != 0:
        idx, w = idx[:, :-1], w[:, :-1]
    pad_start = int(-idx.min() + 1)
    pad_end = int(idx.max() - n_in)
    first = (idx[:, 0] + pad_start - 1).long()
    return w.contiguous(), first, pad_start, pad_end


def _mirror(t, pad_start: int, pad_end: int, dim: int):
    """``t`` with ``pad_start`` / ``pad_end`` samples mirrored (edge sample repeated) along ``dim``."""
    import torch

    n = t.shape[dim]
    parts = [t.narrow(dim, 0, pad_start).flip(dim)] if pad_start > 0 else []
    parts.append(t)
    if pad_end > 0:
        parts.append(t.narrow(dim, n - pad_end, pad_end).flip(dim))
    return torch.cat(parts, dim).contiguous()


def imresize_half(img: np.ndarray) -> np.ndarray:
    """MATLAB ``imresize(img, 0.5)`` (bicubic, antialiased) of a float32 (H, W) plane, in float32.

    Rows first, then columns, one matrix-vector product per output line in float32 with torch,
    the way BasicSR's ``imresize`` evaluates it (so the result is the same to the last bit).
    """
    import torch

    x = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))
    wh, fh, sh, eh = _contributions(x.shape[0], 0.5)
    ww, fw, sw, ew = _contributions(x.shape[1], 0.5)
    rows = _mirror(x, sh, eh, 0)
    k = wh.shape[1]
    mid = torch.empty(wh.shape[0], x.shape[1])
    for i in range(wh.shape[0]):
        s = int(fh[i])
        mid[i, :] = rows[s:s + k, :].transpose(0, 1).mv(wh[i])
    cols = _mirror(mid, sw, ew, 1)
    k = ww.shape[1]
    out = torch.empty(wh.shape[0], ww.shape[0])
    for j in range(ww.shape[0]):
        s = int(fw[j])
        out[:, j] = cols[:, s:s + k].mv(ww[j])
    return out.numpy()


def niqe_features(y: np.ndarray, block: int = NIQE_BLOCK) -> np.ndarray:
    """(n_blocks, 36) NIQE features of a float32 Y plane in [0, 255] (whole blocks at two scales)."""
    from scipy.ndimage import convolve

    nh, nw = y.shape[0] // block, y.shape[1] // block
    if nh == 0 or nw == 0:
        raise ValueError(f"NIQE needs at least {block}x{block} pixels, got {y.shape[0]}x{y.shape[1]}")
    img = y[: nh * block, : nw * block].astype(np.float32)
    g = gaussian_window_1d(7, 7.0 / 6.0)
    window = np.outer(g, g)
    scales = []
    for scale in (1, 2):
        mu = convolve(img, window, mode="nearest")
        sigma = np.sqrt(np.abs(convolve(np.square(img), window, mode="nearest") - np.square(mu)))
        norm = (img - mu) / (sigma + 1)
        b = block // scale
        scales.append(np.array([niqe_block_features(norm[i * b:(i + 1) * b, j * b:(j + 1) * b])
                                for j in range(nw) for i in range(nh)]))
        if scale == 1:
            img = imresize_half(img / np.float32(255.0)) * np.float32(255.0)
    return np.concatenate(scales, axis=1)


def niqe_distance(feats: np.ndarray, mu_prior: np.ndarray, cov_prior: np.ndarray) -> float:
    """NIQE's distance between the pristine model and the Gaussian fitted to ``feats`` (rows with NaN dropped
    from the covariance)."""
    mu = np.nanmean(feats, axis=0)
    clean = feats[~np.isnan(feats).any(axis=1)]
    cov = np.cov(clean, rowvar=False)
    d = np.ravel(mu_prior) - mu
    return float(np.sqrt(d @ np.linalg.pinv((cov_prior + cov) / 2) @ d))


def niqe_y(img: np.ndarray, mu_prior: np.ndarray, cov_prior: np.ndarray, crop_border: int = 0) -> float:
    """NIQE of one (H, W, 3) RGB image (uint8 or uint8 / 255 in float32) on its rounded YCbCr Y, BasicSR's way."""
    y = np.round(_crop(ycbcr_y(img), crop_border))
    return niqe_distance(niqe_features(y), mu_prior, cov_prior)


def load_niqe_prior(path: str) -> tuple[np.ndarray, np.ndarray]:
    """``(mu, cov)`` of the pristine model from NIQE's ``niqe_modelparameters.mat`` (MATLAB v5, read by scipy:
    plain arrays, nothing unpickled)."""
    from scipy.io import loadmat

    params = loadmat(path)
    try:
        mu, cov = np.ravel(params["mu_prisparam"]).astype(np.float64), np.asarray(params["cov_prisparam"], np.float64)
    except KeyError as e:
        raise ValueError(f"{path}: not NIQE's model parameters (no {e.args[0]!r})") from None
    if mu.shape != (36,) or cov.shape != (36, 36):
        raise ValueError(f"{path}: NIQE's model parameters have shapes {mu.shape} and {cov.shape}, expected (36,) "
                         "and (36, 36)")
    return mu, cov
