"""Every degradation op against an independent, direct computation of what it claims to do.

The references here are written from the definitions (explicit loops, scipy, raw
OpenCV calls), never by calling the op's own helpers, so a wrong convention in an op
(axis order, border rule, normalisation, rounding) shows up as a mismatch.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from scipy import ndimage
from scipy.special import j1

from pirs.degrade import ops
from pirs.degrade.ops import blur, geometry, jpeg, kernels, noise, resize, sharpen

SIZES = [7, 9, 11, 13, 15, 17, 19, 21]


def rand_img(h: int, w: int, seed: int = 0, c: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).random((h, w, c), dtype=np.float32)


def photo(h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    """A smooth image with edges and a little texture, float32 in [0, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([
        0.5 + 0.4 * np.sin(xx / 5.0) * np.cos(yy / 7.0),
        xx / (w - 1),
        ((xx // 8 + yy // 8) % 2) * 0.8 + 0.1,
    ], axis=-1)
    img += rng.normal(0, 0.02, img.shape)
    return np.clip(img, 0, 1).astype(np.float32)


def correlate_mirror(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Per-channel 2-D correlation with reflect-101 borders (scipy's "mirror"), in float64."""
    k = np.asarray(kernel, dtype=np.float64)
    return np.stack([ndimage.correlate(img[..., c].astype(np.float64), k, mode="mirror")
                     for c in range(img.shape[2])], axis=-1)


# ---------------------------------------------------------------- kernels


def gauss_1d(size: int, sigma: float) -> np.ndarray:
    x = np.arange(size, dtype=np.float64) - size // 2
    return np.exp(-0.5 * (x / sigma) ** 2)


def mahalanobis_loops(size: int, sx: float, sy: float, theta: float) -> np.ndarray:
    """d[row, col] = x^T Sigma^-1 x with x = (col - c, row - c), Sigma = R diag(sx^2, sy^2) R^T."""
    c, s = math.cos(theta), math.sin(theta)
    # Sigma = R D R^T, written out element by element.
    s00 = c * c * sx * sx + s * s * sy * sy
    s01 = c * s * sx * sx - s * c * sy * sy
    s11 = s * s * sx * sx + c * c * sy * sy
    det = s00 * s11 - s01 * s01
    i00, i01, i11 = s11 / det, -s01 / det, s00 / det
    half = size // 2
    d = np.zeros((size, size))
    for row in range(size):
        for col in range(size):
            x, y = col - half, row - half
            d[row, col] = i00 * x * x + 2 * i01 * x * y + i11 * y * y
    return d


def test_isotropic_gaussian_is_outer_product_of_1d():
    for size, sigma in [(7, 0.5), (13, 1.7), (21, 3.0)]:
        g = gauss_1d(size, sigma)
        ref = np.outer(g, g)
        ref /= ref.sum()
        np.testing.assert_allclose(kernels.gaussian(size, sigma), ref, rtol=1e-5, atol=1e-8)
        np.testing.assert_allclose(kernels.make_kernel({"kernel": "iso", "size": size, "sigma_x": sigma,
                                                        "sigma_y": sigma, "theta": 0.0}), ref, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("sx,sy,theta", [(2.5, 0.8, 0.6), (0.9, 2.2, -1.1), (3.0, 1.0, 2.9)])
def test_anisotropic_gaussian_matches_per_tap_evaluation(sx, sy, theta):
    size = 15
    ref = np.exp(-0.5 * mahalanobis_loops(size, sx, sy, theta))
    ref /= ref.sum()
    np.testing.assert_allclose(kernels.gaussian(size, sx, sy, theta), ref, rtol=1e-5, atol=1e-8)
    params = {"kernel": "aniso", "size": size, "sigma_x": sx, "sigma_y": sy, "theta": theta}
    np.testing.assert_allclose(kernels.make_kernel(params), ref, rtol=1e-5, atol=1e-8)


def test_anisotropic_gaussian_axes():
    # theta = 0: sigma_x spreads along columns (x), sigma_y along rows (y).
    k = kernels.gaussian(21, 3.0, 1.0, 0.0).astype(np.float64)
    ref = np.outer(gauss_1d(21, 1.0), gauss_1d(21, 3.0))
    np.testing.assert_allclose(k, ref / ref.sum(), rtol=1e-5, atol=1e-8)
    # Rotating by pi/2 swaps the two sigmas.
    np.testing.assert_allclose(kernels.gaussian(21, 3.0, 1.0, math.pi / 2), kernels.gaussian(21, 1.0, 3.0, 0.0),
                               atol=1e-7)
    np.testing.assert_allclose(kernels.gaussian(21, 3.0, 1.0, math.pi / 2), k.T, atol=1e-7)


def test_generalized_gaussian_beta_one_is_gaussian():
    for sx, sy, theta in [(1.5, 1.5, 0.0), (2.0, 0.7, 0.4)]:
        np.testing.assert_allclose(kernels.generalized_gaussian(13, sx, sy, theta, 1.0),
                                   kernels.gaussian(13, sx, sy, theta), atol=1e-8)


@pytest.mark.parametrize("beta", [0.5, 2.0, 3.7])
def test_generalized_gaussian_matches_definition(beta):
    d = mahalanobis_loops(11, 1.8, 1.1, 0.3)
    ref = np.exp(-0.5 * d**beta)
    np.testing.assert_allclose(kernels.generalized_gaussian(11, 1.8, 1.1, 0.3, beta), ref / ref.sum(),
                               rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("beta", [1.0, 1.5, 2.0])
def test_plateau_matches_definition(beta):
    d = mahalanobis_loops(17, 2.2, 1.3, -0.8)
    ref = 1.0 / (d**beta + 1.0)
    np.testing.assert_allclose(kernels.plateau(17, 2.2, 1.3, -0.8, beta), ref / ref.sum(), rtol=1e-5, atol=1e-8)
    params = {"kernel": "plateau_aniso", "size": 17, "sigma_x": 2.2, "sigma_y": 1.3, "theta": -0.8, "beta": beta}
    np.testing.assert_allclose(kernels.make_kernel(params), ref / ref.sum(), rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("size,omega", [(7, math.pi / 3), (13, 1.3), (21, math.pi / 5), (21, math.pi)])
def test_sinc_matches_definition(size, omega):
    half = size // 2
    ref = np.zeros((size, size))
    for row in range(size):
        for col in range(size):
            r = math.hypot(col - half, row - half)
            ref[row, col] = omega**2 / (4 * math.pi) if r == 0 else omega * j1(omega * r) / (2 * math.pi * r)
    k = kernels.sinc(size, omega)
    np.testing.assert_allclose(k, ref / ref.sum(), rtol=1e-5, atol=1e-7)
    # The centre value before normalisation is omega^2 / (4 pi): the ratio to a neighbour shows it.
    ratio = k[half, half] / k[half, half + 1]
    assert ratio == pytest.approx((omega**2 / (4 * math.pi)) / (omega * j1(omega) / (2 * math.pi)), rel=1e-5)
    # ... which is the limit of the off-centre formula at r -> 0 (no discontinuity at the centre).
    r = 1e-6
    assert omega * j1(omega * r) / (2 * math.pi * r) == pytest.approx(omega**2 / (4 * math.pi), rel=1e-9)
    assert np.array_equal(k, k.T) and np.array_equal(k, k[::-1, ::-1]) and np.array_equal(k, k[::-1])
    assert abs(float(k.sum(dtype=np.float64)) - 1.0) < 1e-5
    assert kernels.make_kernel({"kernel": "sinc", "size": size, "omega_c": omega}).tolist() == k.tolist()


ALL_KERNELS = [
    {"kernel": "iso", "sigma_x": 1.3, "sigma_y": 1.3, "theta": 0.0},
    {"kernel": "aniso", "sigma_x": 2.7, "sigma_y": 0.6, "theta": 1.0},
    {"kernel": "generalized_iso", "sigma_x": 1.1, "sigma_y": 1.1, "theta": 0.0, "beta": 0.6},
    {"kernel": "generalized_aniso", "sigma_x": 2.0, "sigma_y": 0.9, "theta": -2.0, "beta": 3.5},
    {"kernel": "plateau_iso", "sigma_x": 1.5, "sigma_y": 1.5, "theta": 0.0, "beta": 1.2},
    {"kernel": "plateau_aniso", "sigma_x": 0.4, "sigma_y": 2.5, "theta": 0.5, "beta": 1.9},
    {"kernel": "sinc", "omega_c": 0.9},
]


@pytest.mark.parametrize("size", SIZES)
def test_every_kernel_every_size(size):
    for p in ALL_KERNELS:
        k = kernels.make_kernel({**p, "size": size})
        assert k.shape == (size, size), p
        assert k.dtype == np.float32, p
        assert abs(float(k.sum(dtype=np.float64)) - 1.0) < 1e-5, p
        assert np.all(np.isfinite(k)), p
        # Point symmetry about the centre tap holds for every kernel of the family.
        np.testing.assert_allclose(k, k[::-1, ::-1], rtol=1e-5, atol=1e-9)
        if p["kernel"] != "sinc":
            assert np.all(k >= 0) and k[size // 2, size // 2] == k.max(), p


@pytest.mark.parametrize("size", [0, -1, -3, 2, 4, 8, 20])
def test_bad_kernel_sizes_raise(size):
    with pytest.raises(ValueError):
        kernels.gaussian(size, 1.0)
    with pytest.raises(ValueError):
        kernels.generalized_gaussian(size, 1.0, 1.0, 0.0, 1.0)
    with pytest.raises(ValueError):
        kernels.plateau(size, 1.0, 1.0, 0.0, 1.0)
    with pytest.raises(ValueError):
        kernels.sinc(size, 1.0)
    for p in ALL_KERNELS:
        with pytest.raises(ValueError):
            kernels.make_kernel({**p, "size": size})


def test_bad_kernel_parameters_raise():
    with pytest.raises(ValueError):
        kernels.gaussian(7, 0.0)
    with pytest.raises(ValueError):
        kernels.gaussian(7, 1.0, -1.0)
    for omega in (0.0, -0.5, math.pi + 1e-3):
        with pytest.raises(ValueError):
            kernels.sinc(7, omega)
    with pytest.raises(ValueError, match="unknown kernel"):
        kernels.make_kernel({"kernel": "box", "size": 7, "sigma_x": 1.0, "sigma_y": 1.0, "theta": 0.0})


# ---------------------------------------------------------------- blur


@pytest.mark.parametrize("p", ALL_KERNELS, ids=[p["kernel"] for p in ALL_KERNELS])
@pytest.mark.parametrize("size", [7, 21])
def test_blur_equals_scipy_correlate_mirror(p, size):
    img = rand_img(37, 45, seed=size)
    params = {**p, "size": size}
    out = blur.apply(img, params)
    assert out.shape == img.shape and out.dtype == np.float32
    ref = correlate_mirror(img, kernels.make_kernel(params))
    np.testing.assert_allclose(out, ref, atol=1e-5, rtol=0)


def test_blur_is_correlation_not_convolution_and_keeps_input():
    # An asymmetric one-hot kernel moves the image: correlation samples img[y + dy, x + dx].
    img = rand_img(20, 24, seed=3)
    before = img.copy()
    k = np.zeros((3, 3), np.float32)
    k[1, 2] = 1.0  # dx = +1
    out = blur.filter2d(img, k)
    np.testing.assert_array_equal(out[:, :-1], img[:, 1:])
    np.testing.assert_array_equal(out[:, -1], img[:, -2])  # reflect-101: index w maps to w - 2
    np.testing.assert_array_equal(img, before)


def test_blur_smaller_image_than_kernel_and_flipped_view():
    small = rand_img(6, 5, seed=4)
    k = kernels.gaussian(21, 3.0)
    np.testing.assert_allclose(blur.filter2d(small, k), correlate_mirror(small, k), atol=1e-5, rtol=0)
    flipped = geometry.hflip(rand_img(16, 18, seed=5))  # a negative-stride view
    np.testing.assert_allclose(blur.filter2d(flipped, k), correlate_mirror(np.ascontiguousarray(flipped), k),
                               atol=1e-5, rtol=0)


# ---------------------------------------------------------------- resize


def adaptive_avg_pool_loops(img: np.ndarray, oh: int, ow: int) -> np.ndarray:
    """PyTorch's adaptive average pooling rule, one output pixel at a time, in float64."""
    h, w, c = img.shape
    out = np.zeros((oh, ow, c))
    for i in range(oh):
        y0, y1 = (i * h) // oh, math.ceil((i + 1) * h / oh)
        for j in range(ow):
            x0, x1 = (j * w) // ow, math.ceil((j + 1) * w / ow)
            out[i, j] = img[y0:y1, x0:x1].astype(np.float64).mean(axis=(0, 1))
    return out


def keys_cubic(d: float, a: float = -0.75) -> float:
    d = abs(d)
    if d <= 1:
        return (a + 2) * d**3 - (a + 3) * d**2 + 1
    if d < 2:
        return a * d**3 - 5 * a * d**2 + 8 * a * d - 4 * a
    return 0.0


def bicubic_1d(x: np.ndarray, m: int) -> np.ndarray:
    """Resize a 1-D signal to ``m`` samples: half-pixel centres, Keys a=-0.75, clamped borders."""
    n = len(x)
    out = np.zeros(m)
    for j in range(m):
        src = (j + 0.5) * n / m - 0.5
        i0 = math.floor(src)
        t = src - i0
        for k in range(-1, 3):
            out[j] += keys_cubic(t - k) * x[min(max(i0 + k, 0), n - 1)]
    return out


def test_area_integer_factor_is_block_mean():
    img = rand_img(36, 48, seed=1)
    for f in (2, 3, 4):
        out = resize.resize(img, (36 // f, 48 // f), "area")
        ref = img.astype(np.float64).reshape(36 // f, f, 48 // f, f, 3).mean(axis=(1, 3))
        assert out.dtype == np.float32
        np.testing.assert_allclose(out, ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize("shape,out", [((37, 45), (17, 20)), ((30, 41), (7, 29)), ((13, 11), (29, 17)),
                                       ((40, 40), (40, 23))])
def test_area_non_integer_factor_is_adaptive_avg_pool(shape, out):
    img = rand_img(*shape, seed=2)
    got = resize.resize(img, out, "area")
    assert got.shape == (*out, 3)
    np.testing.assert_allclose(got, adaptive_avg_pool_loops(img, *out), atol=1e-6, rtol=0)


def test_bilinear_half_is_2x2_block_mean():
    img = rand_img(34, 50, seed=3)
    out = resize.resize(img, (17, 25), "bilinear")
    ref = img.astype(np.float64).reshape(17, 2, 25, 2, 3).mean(axis=(1, 3))
    np.testing.assert_allclose(out, ref, atol=1e-6, rtol=0)


def test_bilinear_matches_half_pixel_rule_off_the_fast_path():
    # 3/2 downscale is not an integer factor: check a direct half-pixel, clamped bilinear evaluation.
    rng = np.random.default_rng(4)
    row = rng.random(30).astype(np.float32)
    img = np.repeat(np.repeat(row[None, :, None], 9, axis=0), 3, axis=2)
    out = resize.resize(img, (9, 20), "bilinear")
    ref = np.zeros(20)
    for j in range(20):
        src = max((j + 0.5) * 30 / 20 - 0.5, 0.0)
        i0 = min(math.floor(src), 29)
        t = src - i0
        ref[j] = (1 - t) * row[i0] + t * row[min(i0 + 1, 29)]
    np.testing.assert_allclose(out[4, :, 1], ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("axis", [0, 1])
def test_bicubic_upscale_by_two_is_keys_cubic(axis):
    rng = np.random.default_rng(5 + axis)
    sig = rng.random(23).astype(np.float32)
    if axis == 1:  # varies along x, constant along y
        img = np.broadcast_to(sig[None, :, None], (9, 23, 3)).copy()
        out = resize.resize(img, (18, 46), "bicubic")
        for r in range(18):
            np.testing.assert_allclose(out[r, :, 0], bicubic_1d(sig, 46), atol=1e-4, rtol=0)
    else:  # varies along y
        img = np.broadcast_to(sig[:, None, None], (23, 9, 3)).copy()
        out = resize.resize(img, (46, 18), "bicubic")
        for col in range(18):
            np.testing.assert_allclose(out[:, col, 2], bicubic_1d(sig, 46), atol=1e-4, rtol=0)
    assert out.dtype == np.float32


@pytest.mark.parametrize("mode", resize.MODES)
@pytest.mark.parametrize("size", [(1, 1), (5, 7), (33, 17), (64, 90), (40, 60)])
def test_resize_output_size_exact(mode, size):
    img = rand_img(40, 60, seed=6)
    out = resize.apply(img, {"mode": mode, "size": list(size)})
    assert out.shape == (*size, 3)
    assert out.dtype == np.float32
    assert np.all(np.isfinite(out))


def test_resize_single_channel_keeps_channel_axis():
    img = rand_img(20, 30, c=1)
    for mode in resize.MODES:
        assert resize.resize(img, (10, 12), mode).shape == (10, 12, 1)


@pytest.mark.parametrize("size", [(0, 5), (5, 0), (-1, 4), (0, 0)])
def test_resize_bad_size_raises(size):
    for mode in resize.MODES:
        with pytest.raises(ValueError):
            resize.resize(rand_img(8, 8), size, mode)


def test_resize_unknown_mode_raises():
    with pytest.raises(ValueError, match="unknown resize mode"):
        resize.resize(rand_img(8, 8), (4, 4), "lanczos")


def test_resize_resolve_sizes():
    spec_in = resize.Spec(directions={"down": 1.0}, range=[0.15, 1.0], relative_to="input")
    p = resize.resolve({"mode": "area", "direction": "down", "factor": 0.37, "size": None}, spec_in,
                       {"size": (101, 64), "target": (25, 16)})
    assert p["size"] == [math.floor(101 * 0.37), math.floor(64 * 0.37)] and p["direction"] == "down"
    spec_t = resize.Spec(relative_to="target")
    p = resize.resolve({"mode": "area", "direction": "down", "factor": 0.7, "size": None}, spec_t,
                       {"size": (40, 40), "target": (25, 16)})
    assert p["size"] == [17, 11] and p["direction"] == "down"  # int(17.5), int(11.2): truncated, not rounded
    p = resize.resolve({"mode": "area", "direction": "up", "factor": 1.2, "size": None}, spec_t,
                       {"size": (20, 10), "target": (25, 16)})
    assert p["size"] == [30, 19] and p["direction"] == "up"
    p = resize.resolve({"mode": "area", "direction": "down", "factor": 1e-4, "size": None}, spec_in,
                       {"size": (10, 10), "target": (5, 5)})
    assert p["size"] == [1, 1]


# ---------------------------------------------------------------- noise


def test_gaussian_noise_reproducible_and_seeded():
    img = photo()
    a = noise.apply(img, {"kind": "gaussian", "sigma": 12.0, "gray": False, "seed": 7})
    b = noise.apply(img, {"kind": "gaussian", "sigma": 12.0, "gray": False, "seed": 7})
    c = noise.apply(img, {"kind": "gaussian", "sigma": 12.0, "gray": False, "seed": 8})
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.dtype == np.float32


def test_gaussian_noise_is_the_seeded_normal_field():
    # The replay contract: the field is standard normal float32 draws from default_rng(seed), one
    # channel when grey, times sigma/255. Stored datasets rely on this staying bit for bit.
    img = photo(24, 32)
    for gray in (False, True):
        z = np.random.default_rng(99).standard_normal((24, 32, 1 if gray else 3), dtype=np.float32)
        ref = np.clip(img + z * np.float32(7.5 / 255.0), 0.0, 1.0)
        np.testing.assert_array_equal(noise.gaussian(img, 7.5, gray, 99), ref)


@pytest.mark.parametrize("sigma", [2.0, 10.0, 25.0])
def test_gaussian_noise_statistics(sigma):
    img = np.full((160, 160, 3), 0.5, np.float32)
    out = noise.gaussian(img, sigma, gray=False, seed=11)
    r = (out - img).astype(np.float64)
    assert r.std() == pytest.approx(sigma / 255.0, rel=0.03)
    assert abs(r.mean()) < 4 * (sigma / 255.0) / math.sqrt(r.size)
    for ch in range(3):  # each channel has the full variance
        assert r[..., ch].std() == pytest.approx(sigma / 255.0, rel=0.03)


def test_gaussian_noise_gray_vs_colour():
    img = np.full((64, 64, 3), 0.5, np.float32)
    r = noise.gaussian(img, 10.0, gray=True, seed=3) - img
    np.testing.assert_array_equal(r[..., 0], r[..., 1])
    np.testing.assert_array_equal(r[..., 0], r[..., 2])
    r = noise.gaussian(img, 10.0, gray=False, seed=3) - img
    assert not np.allclose(r[..., 0], r[..., 1]) and not np.allclose(r[..., 1], r[..., 2])
    # Independent channels: their correlation is ~0.
    assert abs(np.corrcoef(r[..., 0].ravel(), r[..., 1].ravel())[0, 1]) < 0.1


def test_noise_output_in_unit_range():
    img = np.concatenate([np.zeros((32, 64, 3)), np.ones((32, 64, 3))]).astype(np.float32)
    img[::3] = 0.5
    for params in ({"kind": "gaussian", "sigma": 30.0, "gray": False, "seed": 1},
                   {"kind": "gaussian", "sigma": 30.0, "gray": True, "seed": 1},
                   {"kind": "poisson", "scale": 3.0, "gray": False, "seed": 1},
                   {"kind": "poisson", "scale": 3.0, "gray": True, "seed": 1}):
        out = noise.apply(img, params)
        assert out.shape == img.shape and out.dtype == np.float32
        assert out.min() >= 0.0 and out.max() <= 1.0
        assert out.min() == 0.0 and out.max() == 1.0  # strong noise does reach and get clipped at both ends


def test_noise_unknown_kind_raises():
    with pytest.raises(ValueError, match="unknown noise kind"):
        noise.apply(photo(), {"kind": "speckle", "gray": False, "seed": 0})


def levels_image(levels: list[int], reps: int = 4000, seed: int = 0) -> np.ndarray:
    """An image whose pixels take exactly the given 8-bit levels (equal in all channels), shuffled."""
    v = np.repeat(np.asarray(levels, np.float32), reps)
    np.random.default_rng(seed).shuffle(v)
    side = int(math.ceil(math.sqrt(v.size)))
    v = np.concatenate([v, np.full(side * side - v.size, levels[0], np.float32)])
    return np.repeat((v.reshape(side, side) / 255.0)[..., None], 3, axis=2).astype(np.float32)


@pytest.mark.parametrize("levels,vals", [([60, 100, 128, 150, 190], 8), ([64, 96, 128, 160, 176, 192, 200, 208], 8),
                                         ([60 + 8 * i for i in range(17)], 32)])
@pytest.mark.parametrize("gray", [False, True])
def test_poisson_noise_statistics(levels, vals, gray):
    scale = 0.1  # small enough that nothing is clipped
    img = levels_image(levels)
    out = noise.poisson(img, scale, gray=gray, seed=5)
    assert 0.0 < out.min() and out.max() < 1.0
    r = (out - img).astype(np.float64)
    q = np.rint(img[..., 0] * 255.0)
    for lv in levels:
        sel = r[q == lv]
        expect_var = (lv / 255.0) / vals * scale**2
        assert sel.var() == pytest.approx(expect_var, rel=0.08), (lv, sel.var(), expect_var)
        assert abs(sel.mean()) < 5 * math.sqrt(expect_var / sel.size)
    # The total mean of the residual is ~0 (shot noise is unbiased).
    assert abs(r.mean()) < 5 * math.sqrt(np.mean(img) / vals * scale**2 / r.size)


@pytest.mark.parametrize("gray", [False, True])
def test_poisson_noise_is_the_seeded_shot_noise(gray):
    # Real-ESRGAN's generate_poisson_noise, drawn from default_rng(seed): quantise to 8 bits (of the
    # luma when grey), vals = 2^ceil(log2(#distinct levels)), noise = Poisson(q*vals)/vals - q.
    img = photo(30, 40, seed=4) * np.float32(0.997) + np.float32(0.0013)  # off the 8-bit grid
    base = img.astype(np.float64) @ np.array([0.299, 0.587, 0.114]) if gray else img.astype(np.float64)
    q = np.clip(np.round(base * 255.0), 0, 255) / 255.0
    vals = 2 ** math.ceil(math.log2(len(np.unique(q))))
    q32 = q.astype(np.float32)
    n = np.random.default_rng(123).poisson(q32 * vals).astype(np.float32) / np.float32(vals) - q32
    if gray:
        n = n[..., None]
    ref = np.clip(img + n * np.float32(0.8), 0.0, 1.0)
    np.testing.assert_allclose(noise.poisson(img, 0.8, gray, 123), ref, atol=1e-6, rtol=0)


def test_poisson_noise_reproducible_and_gray():
    img = photo()
    p = {"kind": "poisson", "scale": 1.5, "gray": False, "seed": 21}
    np.testing.assert_array_equal(noise.apply(img, p), noise.apply(img, p))
    assert not np.array_equal(noise.apply(img, p), noise.apply(img, {**p, "seed": 22}))
    mid = np.clip(img * 0.5 + 0.25, 0, 1)  # keep away from the clip so residual == noise
    r = noise.poisson(mid, 0.5, gray=True, seed=3) - mid
    np.testing.assert_allclose(r[..., 0], r[..., 1], atol=1e-6)
    np.testing.assert_allclose(r[..., 0], r[..., 2], atol=1e-6)
    assert np.abs(r).max() > 1e-3
    r = noise.poisson(mid, 0.5, gray=False, seed=3) - mid
    assert np.abs(r[..., 0] - r[..., 1]).max() > 1e-3


def test_poisson_gray_counts_levels_of_the_grey_image():
    # Channels differ but the luma (0.299 R + 0.587 G + 0.114 B) takes 2 levels: vals = 2.
    a = np.array([100, 200, 50], np.float32)
    luma_a = 0.299 * 100 + 0.587 * 200 + 0.114 * 50
    b = np.array([luma_a + 20] * 3, np.float32)  # a grey pixel whose luma differs from a's
    n = 20000
    img = np.concatenate([np.tile(a, (n, 1)), np.tile(b, (n, 1))]).reshape(200, 200, 3) / 255.0
    img = img.astype(np.float32)
    scale = 0.05
    r = (noise.poisson(img, scale, gray=True, seed=9) - img).astype(np.float64)
    la = round(luma_a) / 255.0
    assert r[:100, :, 0].var() == pytest.approx(la / 2 * scale**2, rel=0.06)


# ---------------------------------------------------------------- jpeg


def cv2_jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    u8 = np.clip(np.round(img.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(u8, cv2.COLOR_RGB2BGR), [int(cv2.IMWRITE_JPEG_QUALITY), quality])
    assert ok
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB).astype(np.float64) / 255.0


@pytest.mark.parametrize("quality", [1, 10, 45, 95, 100])
def test_jpeg_equals_direct_cv2(quality):
    img = photo(40, 56, seed=quality)
    out = jpeg.apply(img, {"quality": quality})
    assert out.shape == img.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, cv2_jpeg(img, quality), atol=1e-6, rtol=0)
    levels = out.astype(np.float64) * 255.0
    np.testing.assert_allclose(levels, np.round(levels), atol=1e-4)


def test_jpeg_channel_order():
    # A pure red patch must stay red (a swapped RGB/BGR round trip would give blue).
    img = np.zeros((32, 32, 3), np.float32)
    img[..., 0] = 1.0
    out = jpeg.compress(img, 90)
    assert out[..., 0].mean() > 0.9 and out[..., 2].mean() < 0.1


def test_jpeg_lower_quality_more_error():
    img = photo(64, 64, seed=2)
    err = [float(np.mean((jpeg.compress(img, q) - img) ** 2)) for q in (10, 30, 60, 95)]
    assert err == sorted(err, reverse=True) and err[0] > 2 * err[-1]


@pytest.mark.parametrize("quality", [0, -5, 101, 1000, 50.5, 0.5])
def test_jpeg_bad_quality_raises(quality):
    with pytest.raises(ValueError):
        jpeg.compress(photo(16, 16), quality)


def test_jpeg_to_uint8_rounds_and_clips():
    x = np.array([-0.2, 0.0, 0.5 / 255, 1.49 / 255, 1.51 / 255, 0.5, 1.0, 1.3], np.float32)
    assert jpeg.to_uint8(x).tolist() == [0, 0, 0, 1, 2, 128, 255, 255]
    assert jpeg.to_uint8(x).dtype == np.uint8


# ---------------------------------------------------------------- sharpen


def opencv_gaussian_1d(ksize: int, sigma: float) -> np.ndarray:
    if sigma <= 0:
        sigma = 0.3 * ((ksize - 1) * 0.5 - 1) + 0.8
    x = np.arange(ksize, dtype=np.float64) - (ksize - 1) / 2
    g = np.exp(-(x**2) / (2 * sigma * sigma))
    return g / g.sum()


def usm_reference(img, radius=50, sigma=0.0, weight=0.5, threshold=10.0):
    ksize = radius + 1 if radius % 2 == 0 else radius
    g = opencv_gaussian_1d(ksize, sigma)
    k2 = np.outer(g, g)
    x = img.astype(np.float64)
    blurred = correlate_mirror(x, k2)
    residual = x - blurred
    mask = (np.abs(residual) * 255.0 > threshold).astype(np.float64)
    soft = correlate_mirror(mask, k2)
    sharp = np.clip(x + weight * residual, 0.0, 1.0)
    return soft * sharp + (1.0 - soft) * x


def test_usm_kernel_is_opencv_gaussian_51_taps():
    np.testing.assert_allclose(cv2.getGaussianKernel(51, 0).ravel(), opencv_gaussian_1d(51, 0.0), rtol=1e-6)


@pytest.mark.parametrize("shape", [(64, 72), (40, 33), (20, 24)])
def test_usm_equals_direct_implementation(shape):
    img = photo(*shape, seed=shape[1])
    out = sharpen.apply(img, sharpen.sample(np.random.default_rng(0), sharpen.Spec(), {}))
    assert out.shape == img.shape and out.dtype == np.float32
    ref = usm_reference(img)
    np.testing.assert_allclose(out, ref, atol=1e-4, rtol=0)
    assert np.abs(out - img).max() > 1e-3  # it did sharpen something


@pytest.mark.parametrize("radius,sigma,weight,threshold", [(51, 0.0, 0.5, 10.0), (20, 3.0, 1.0, 5.0),
                                                           (13, 0.0, 0.3, 2.0)])
def test_usm_other_parameters(radius, sigma, weight, threshold):
    img = photo(48, 48, seed=radius)
    out = sharpen.usm(img, radius, sigma, weight, threshold)
    np.testing.assert_allclose(out, usm_reference(img, radius, sigma, weight, threshold), atol=1e-4, rtol=0)


def test_usm_equals_basicsr_usm_sharp():
    # BasicSR's usm_sharp (basicsr/utils/img_process_util.py), with cv2.GaussianBlur. Below 11 taps
    # OpenCV's sigma=0 Gaussian comes from a fixed table rather than the formula; this covers that too.
    def usm_sharp(img, weight=0.5, radius=50, threshold=10):
        if radius % 2 == 0:
            radius += 1
        blur_ = cv2.GaussianBlur(img, (radius, radius), 0)
        residual = img - blur_
        mask = (np.abs(residual) * 255 > threshold).astype("float32")
        soft_mask = cv2.GaussianBlur(mask, (radius, radius), 0)
        k = np.clip(img + weight * residual, 0, 1)
        return soft_mask * k + (1 - soft_mask) * img

    img = photo(48, 56, seed=3)
    for radius in (50, 9, 4):
        np.testing.assert_allclose(sharpen.usm(img, radius), usm_sharp(img, radius=radius), atol=1e-5, rtol=0)


def test_usm_flat_image_unchanged():
    img = np.full((40, 40, 3), 0.3, np.float32)
    np.testing.assert_allclose(sharpen.usm(img), img, atol=1e-6)


# ---------------------------------------------------------------- samplers and specs


def draws(mod, spec, ctx, n=300, seed=0):
    rng = np.random.default_rng(seed)
    return [mod.sample(rng, spec, ctx) for _ in range(n)]


def inside(v, r):
    return r[0] <= v <= r[1]


def test_blur_sample_ranges_and_determinism():
    spec = blur.Spec(kernel_sizes=[7, 9, 13, 21],
                     kernel_types={"iso": 0.3, "aniso": 0.2, "generalized_iso": 0.1, "generalized_aniso": 0.1,
                                   "plateau_iso": 0.2, "plateau_aniso": 0.1},
                     sigma=[0.4, 2.5], beta_g=[0.5, 4.0], beta_p=[1.0, 2.0], rotation=[-1.0, 2.0], sinc_prob=0.2)
    spec.validate()
    ps = draws(blur, spec, {})
    assert ps == draws(blur, spec, {})
    assert ps != draws(blur, spec, {}, seed=1)
    kinds = set()
    for p in ps:
        kinds.add(p["kernel"])
        assert p["size"] in spec.kernel_sizes
        if p["kernel"] == "sinc":
            lo = math.pi / 3 if p["size"] < 13 else math.pi / 5
            assert inside(p["omega_c"], [lo, math.pi])
        else:
            assert inside(p["sigma_x"], spec.sigma) and inside(p["sigma_y"], spec.sigma)
            if p["kernel"].endswith("aniso"):
                assert inside(p["theta"], spec.rotation)
            else:
                assert p["sigma_x"] == p["sigma_y"] and p["theta"] == 0.0
            if p["kernel"].startswith("generalized"):
                assert inside(p["beta"], spec.beta_g)
            elif p["kernel"].startswith("plateau"):
                assert inside(p["beta"], spec.beta_p)
            else:
                assert "beta" not in p
        k = kernels.make_kernel(p)
        assert k.shape == (p["size"], p["size"])
    assert kinds == set(kernels.KERNEL_TYPES)


def test_blur_sample_sinc_omega_override_and_beta_split():
    spec = blur.Spec(kernel_sizes=[7, 21], sinc_prob=1.0, sinc_omega=[1.0, 1.5])
    assert all(inside(p["omega_c"], [1.0, 1.5]) and p["kernel"] == "sinc" for p in draws(blur, spec, {}))
    # Real-ESRGAN's beta rule: below or above 1 with equal chance.
    spec = blur.Spec(kernel_types={"generalized_iso": 1.0}, beta_g=[0.5, 4.0])
    betas = np.array([p["beta"] for p in draws(blur, spec, {}, n=2000)])
    assert 0.45 < np.mean(betas < 1.0) < 0.55
    assert betas.min() >= 0.5 and betas.max() <= 4.0


def test_blur_sample_sinc_cutoff_rule_by_size():
    # Real-ESRGAN: omega_c from [pi/3, pi] below size 13, from [pi/5, pi] from 13 up.
    ps = draws(blur, blur.Spec(kernel_sizes=[11, 13], sinc_prob=1.0), {}, n=400)
    small = [p["omega_c"] for p in ps if p["size"] == 11]
    large = [p["omega_c"] for p in ps if p["size"] == 13]
    assert min(small) >= math.pi / 3 and max(small) <= math.pi
    assert min(large) >= math.pi / 5 and max(large) <= math.pi and min(large) < math.pi / 3


def test_blur_sample_frequencies():
    types = {"iso": 0.5, "aniso": 0.3, "plateau_iso": 0.2}
    ps = draws(blur, blur.Spec(kernel_types=types, sinc_prob=0.25), {}, n=2000)
    kinds = [p["kernel"] for p in ps]
    assert abs(kinds.count("sinc") / 2000 - 0.25) < 0.04
    for kind, prob in types.items():
        assert abs(kinds.count(kind) / 2000 - 0.75 * prob) < 0.04, kind


@pytest.mark.parametrize("beta_range", [[2.0, 4.0], [0.3, 0.8], [1.5, 1.5]])
def test_blur_sample_beta_stays_in_a_range_not_containing_one(beta_range):
    for kind, key in (("generalized_aniso", "beta_g"), ("plateau_iso", "beta_p")):
        spec = blur.Spec(kernel_types={kind: 1.0}, **{key: beta_range})
        spec.validate()
        betas = [p["beta"] for p in draws(blur, spec, {}, n=200)]
        assert all(inside(b, beta_range) for b in betas), (kind, min(betas), max(betas))


def test_resize_sample_ranges_and_determinism():
    spec = resize.Spec(directions={"up": 0.3, "down": 0.5, "keep": 0.2}, range=[0.2, 1.7])
    spec.validate()
    ctx = {"size": (64, 48), "target": (16, 12)}
    ps = draws(resize, spec, ctx)
    assert ps == draws(resize, spec, ctx) and ps != draws(resize, spec, ctx, seed=2)
    seen = set()
    for p in ps:
        seen.add((p["direction"], p["mode"]))
        assert p["mode"] in resize.MODES and p["size"] is None
        if p["direction"] == "up":
            assert inside(p["factor"], [1.0, 1.7])
        elif p["direction"] == "down":
            assert inside(p["factor"], [0.2, 1.0])
        else:
            assert p["factor"] == 1.0
        r = resize.resolve(p, spec, ctx)
        assert r["size"] == [max(1, math.floor(64 * p["factor"])), max(1, math.floor(48 * p["factor"]))]
    assert {d for d, _ in seen} == {"up", "down", "keep"} and {m for _, m in seen} == set(resize.MODES)
    dirs = [p["direction"] for p in draws(resize, spec, ctx, n=2000, seed=5)]
    for d, prob in spec.directions.items():
        assert abs(dirs.count(d) / 2000 - prob) < 0.04, d
    tspec = resize.Spec(target=True, modes=["bicubic"])
    for p in draws(resize, tspec, ctx, n=5):
        assert p == {"mode": "bicubic", "direction": "down", "factor": 16 / 64, "size": [16, 12], "grid": "size"}


def test_noise_sample_ranges_and_determinism():
    spec = noise.Spec(gaussian_prob=0.7, sigma=[2.0, 20.0], poisson_scale=[0.1, 2.0], gray_prob=0.2)
    spec.validate()
    ps = draws(noise, spec, {}, n=1000)
    assert ps == draws(noise, spec, {}, n=1000) and ps != draws(noise, spec, {}, n=1000, seed=3)
    for p in ps:
        if p["kind"] == "gaussian":
            assert inside(p["sigma"], spec.sigma) and p["scale"] is None
        else:
            assert p["kind"] == "poisson" and inside(p["scale"], spec.poisson_scale) and p["sigma"] is None
        assert isinstance(p["gray"], bool) and isinstance(p["seed"], int) and 0 <= p["seed"] < 2**63
    assert abs(np.mean([p["kind"] == "gaussian" for p in ps]) - 0.7) < 0.05
    assert abs(np.mean([p["gray"] for p in ps]) - 0.2) < 0.05
    assert len({p["seed"] for p in ps}) == len(ps)


def test_jpeg_sample_ranges_and_determinism():
    spec = jpeg.Spec(quality=[30, 35])
    spec.validate()
    ps = draws(jpeg, spec, {})
    assert ps == draws(jpeg, spec, {}) and ps != draws(jpeg, spec, {}, seed=4)
    qs = [p["quality"] for p in ps]
    assert all(isinstance(q, int) for q in qs) and set(qs) == {30, 31, 32, 33, 34, 35}  # both ends inclusive


def test_sharpen_sample_fixed():
    spec = sharpen.Spec()
    spec.validate()
    rng = np.random.default_rng(0)
    state = rng.bit_generator.state
    assert sharpen.sample(rng, spec, {}) == {"radius": 50, "sigma": 0.0, "weight": 0.5, "threshold": 10.0}
    assert rng.bit_generator.state == state  # draws nothing


@pytest.mark.parametrize("mod", [blur, resize, noise, jpeg, sharpen])
def test_default_specs_validate(mod):
    mod.Spec().validate()


@pytest.mark.parametrize("mod,kw", [
    (blur, {"sigma": [3.0, 0.2]}),
    (blur, {"sigma": [-1.0, 2.0]}),
    (blur, {"beta_g": [4.0, 0.5]}),
    (blur, {"beta_p": [-1.0, 2.0]}),
    (blur, {"rotation": [1.0, -1.0]}),
    (blur, {"kernel_types": {"iso": 0.5, "aniso": 0.4}}),
    (blur, {"kernel_types": {"iso": 1.5, "aniso": -0.5}}),
    (blur, {"kernel_types": {"sinc": 1.0}}),
    (blur, {"kernel_types": {}}),
    (blur, {"kernel_sizes": [7, 8]}),
    (blur, {"kernel_sizes": []}),
    (blur, {"kernel_sizes": [1]}),
    (blur, {"sinc_prob": 1.2}),
    (blur, {"sinc_prob": -0.1}),
    (blur, {"sinc_omega": [2.0, 1.0]}),
    (blur, {"sinc_omega": [1.0, 4.0]}),
    (resize, {"range": [1.5, 0.15]}),
    (resize, {"range": [-0.5, 1.5]}),
    (resize, {"directions": {"up": 0.5, "down": 0.6}}),
    (resize, {"directions": {"down": 1.2, "keep": -0.2}}),
    (resize, {"directions": {"sideways": 1.0}}),
    (resize, {"modes": ["nearest"]}),
    (resize, {"modes": []}),
    (resize, {"relative_to": "output"}),
    (resize, {"directions": {"up": 1.0}, "range": [0.2, 0.8]}),
    (resize, {"directions": {"down": 1.0}, "range": [1.2, 2.0]}),
    (noise, {"sigma": [30.0, 1.0]}),
    (noise, {"sigma": [-1.0, 5.0]}),
    (noise, {"poisson_scale": [3.0, 0.05]}),
    (noise, {"poisson_scale": [-0.1, 1.0]}),
    (noise, {"gaussian_prob": 1.5}),
    (noise, {"gray_prob": -0.1}),
    (jpeg, {"quality": [95, 30]}),
    (jpeg, {"quality": [0, 50]}),
    (jpeg, {"quality": [30, 101]}),
    (jpeg, {"quality": [30.5, 90]}),
    (sharpen, {"radius": 0}),
    (sharpen, {"radius": 2.5}),
    (sharpen, {"weight": -0.5}),
    (sharpen, {"threshold": -1.0}),
    (sharpen, {"sigma": -1.0}),
])
def test_spec_validate_rejects(mod, kw):
    with pytest.raises(ValueError):
        mod.Spec(**kw).validate()


def test_op_registry():
    assert set(ops.OPS) == {"blur", "resize", "noise", "jpeg", "usm_sharpen", "low_light", "haze", "rain", "raindrop",
                            "snow", "motion_blur", "defocus_blur", "albumentations"}
    assert ops.get("usm_sharpen") is sharpen
    with pytest.raises(KeyError, match="did you mean 'noise'"):
        ops.get("nois")


@pytest.mark.parametrize("op,params", [
    ("blur", {"kernel": "aniso", "size": 9, "sigma_x": 2.0, "sigma_y": 1.0, "theta": 0.3}),
    ("resize", {"mode": "bicubic", "size": [20, 30]}),
    ("resize", {"mode": "area", "size": [20, 30]}),
    ("noise", {"kind": "gaussian", "sigma": 10.0, "scale": None, "gray": True, "seed": 1}),
    ("noise", {"kind": "poisson", "sigma": None, "scale": 1.0, "gray": False, "seed": 1}),
    ("jpeg", {"quality": 50}),
    ("usm_sharpen", {"radius": 50, "sigma": 0.0, "weight": 0.5, "threshold": 10.0}),
])
def test_apply_is_pure(op, params):
    img = photo(40, 48, seed=1)
    before = img.copy()
    a = ops.apply(img, op, params)
    np.testing.assert_array_equal(img, before)
    np.testing.assert_array_equal(ops.apply(img, op, params), a)
    assert a.dtype == np.float32 and a.ndim == 3 and a.shape[2] == 3
    if op != "resize":  # bicubic may overshoot [0, 1], as torch's does; the pipeline quantises at the end
        assert a.min() >= -1e-6 and a.max() <= 1 + 1e-6


# ---------------------------------------------------------------- geometry


@pytest.mark.parametrize("h,w,size", [(20, 30, 32), (31, 12, 32), (40, 50, 32), (32, 32, 32), (5, 7, 16)])
def test_pad_to(h, w, size):
    img = rand_img(h, w, seed=h * w)
    out, pads = geometry.pad_to(img, size)
    t, b, left, right = pads
    assert out.shape == (max(h, size), max(w, size), 3)
    assert t + b == max(0, size - h) and left + right == max(0, size - w)
    assert 0 <= b - t <= 1 and 0 <= right - left <= 1
    np.testing.assert_array_equal(out[t:t + h, left:left + w], img)  # the original sits where pads say
    # Reflection (edge pixel not repeated): a padded pixel at offset k outside the border equals the
    # pixel at offset k inside, one step in (for pads that fit inside the image).
    for k in range(1, min(t, h - 1) + 1):
        np.testing.assert_array_equal(out[t - k, left:left + w], img[k])
    for k in range(1, min(b, h - 1) + 1):
        np.testing.assert_array_equal(out[t + h - 1 + k, left:left + w], img[h - 1 - k])
    for k in range(1, min(left, w - 1) + 1):
        np.testing.assert_array_equal(out[t:t + h, left - k], img[:, k])
    for k in range(1, min(right, w - 1) + 1):
        np.testing.assert_array_equal(out[t:t + h, left + w - 1 + k], img[:, w - 1 - k])
    if pads == [0, 0, 0, 0]:
        assert out is img


def test_pad_to_single_pixel_side_uses_edge():
    img = rand_img(1, 6)
    out, pads = geometry.pad_to(img, 4)
    assert pads == [1, 2, 0, 0] and out.shape == (4, 6, 3)
    for r in range(4):
        np.testing.assert_array_equal(out[r], img[0])


def test_sample_crop_in_bounds_and_deterministic():
    rng = np.random.default_rng(0)
    boxes = [geometry.sample_crop(rng, 50, 37, 32) for _ in range(400)]
    tops, lefts = {b[0] for b in boxes}, {b[1] for b in boxes}
    for t, left, ch, cw in boxes:
        assert (ch, cw) == (32, 32) and 0 <= t <= 50 - 32 and 0 <= left <= 37 - 32
    assert tops == set(range(19)) and lefts == set(range(6))  # every position reachable
    rng2 = np.random.default_rng(0)
    assert boxes == [geometry.sample_crop(rng2, 50, 37, 32) for _ in range(400)]
    assert geometry.sample_crop(np.random.default_rng(1), 32, 32, 32) == [0, 0, 32, 32]
    with pytest.raises(ValueError):
        geometry.sample_crop(rng, 31, 40, 32)
    with pytest.raises(ValueError):
        geometry.sample_crop(rng, 40, 31, 32)


def test_crop_and_hflip_exact():
    img = rand_img(20, 30, seed=8)
    c = geometry.crop(img, [3, 5, 10, 12])
    assert c.shape == (10, 12, 3)
    for i in range(10):
        for j in range(12):
            assert np.array_equal(c[i, j], img[3 + i, 5 + j])
    f = geometry.hflip(img)
    assert f.shape == img.shape
    for j in range(30):
        np.testing.assert_array_equal(f[:, j], img[:, 29 - j])
    np.testing.assert_array_equal(geometry.hflip(f), img)


def _torch_rule_1d(x: np.ndarray, out: int, f: float, mode: str) -> np.ndarray:
    """Direct loop of PyTorch's interpolate(scale_factor=f) source-index rule on a 1-D signal."""
    n = len(x)
    y = np.zeros(out)
    for i in range(out):
        src = (i + 0.5) / f - 0.5
        if mode == "bilinear":
            src = max(src, 0.0)
            i0 = min(int(np.floor(src)), n - 1)
            lam = min(max(src - i0, 0.0), 1.0)
            y[i] = (1 - lam) * x[i0] + lam * x[min(i0 + 1, n - 1)]
        else:
            i0 = int(np.floor(src))
            t = src - i0
            for k, off in enumerate((-1, 0, 1, 2)):
                d = abs(t - off)
                a = -0.75
                w = ((a + 2) * d - (a + 3)) * d * d + 1 if d <= 1 else ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
                y[i] += w * x[min(max(i0 + off, 0), n - 1)]
                del k
    return y


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
@pytest.mark.parametrize("f", [0.37, 0.81, 1.27])
def test_resize_on_the_factor_grid_follows_pytorch_scale_factor(mode, f):
    from pirs.degrade.ops import resize as rz

    row = np.random.default_rng(3).random(57)
    img = np.repeat(row[None, :, None], 5, axis=0).repeat(3, axis=2).astype(np.float32)
    w = int(np.floor(57 * f))
    got = rz.resize(img, (5, w), mode, factor=f)
    assert got.shape == (5, w, 3)
    want = _torch_rule_1d(row, w, f, mode)
    assert np.abs(got[2, :, 0] - want).max() < 1e-5
    plain = rz.resize(img, (5, w), mode)  # the in/out grid differs by up to a pixel at the far edge
    assert np.abs(plain[2, :, 0] - want).max() > 1e-3


def test_first_order_resize_records_its_grid():
    from pirs.degrade.ops import resize as rz

    spec = rz.Spec(directions={"down": 1.0}, range=[0.5, 0.9])
    p = rz.resolve(rz.sample(np.random.default_rng(0), spec, {"size": (64, 64), "target": (16, 16)}), spec,
                   {"size": (64, 64), "target": (16, 16)})
    assert p["grid"] == "factor"
    spec2 = rz.Spec(directions={"down": 1.0}, range=[0.5, 0.9], relative_to="target")
    p2 = rz.resolve(rz.sample(np.random.default_rng(0), spec2, {"size": (64, 64), "target": (16, 16)}), spec2,
                    {"size": (64, 64), "target": (16, 16)})
    assert p2["grid"] == "size"
