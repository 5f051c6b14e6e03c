"""The universal degradation ops: each op's effect is what its physical model says."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from conftest import synthetic_photo
from pirs.degrade import ops
from pirs.degrade.ops import defocus, haze, lowlight, motion, rain, raindrop, snow
from pirs.degrade.ops.jpeg import to_uint8

UNIVERSAL_OPS = ["low_light", "haze", "rain", "raindrop", "snow", "motion_blur", "defocus_blur"]


def photo(h: int = 64, w: int = 80, seed: int = 3) -> np.ndarray:
    return synthetic_photo(h, w, seed).astype(np.float32) / 255.0


def drawn(name: str, seed: int = 0, **override) -> dict:
    mod = ops.get(name)
    params = mod.sample(np.random.default_rng(seed), mod.Spec(), {"size": (64, 80)})
    params.update(override)
    return params


@pytest.mark.parametrize("name", UNIVERSAL_OPS)
def test_replays_bit_for_bit_and_stays_in_range(name: str) -> None:
    img = photo()
    params = drawn(name)
    a, b = ops.apply(img, name, params), ops.apply(img.copy(), name, dict(params))
    assert a.dtype == np.float32 and a.shape == img.shape
    assert np.array_equal(a, b)
    assert a.min() >= 0.0 and a.max() <= 1.0
    assert not np.array_equal(a, img)
    other = drawn(name, seed=1)
    assert not np.array_equal(ops.apply(img, name, other), a)


@pytest.mark.parametrize("name", UNIVERSAL_OPS)
def test_label_and_prompt(name: str) -> None:
    mod = ops.get(name)
    params = drawn(name)
    want = {"low_light": ("low-light", "Brighten the low-light image"), "haze": ("haze", "Remove the haze"),
            "rain": ("rain", "Remove the rain"), "raindrop": ("raindrop", "Remove the raindrops"),
            "snow": ("snow", "Remove the snow"), "motion_blur": ("blur", "Deblur"),
            "defocus_blur": ("blur", "Deblur")}[name]
    assert (mod.label(params), mod.prompt(params, False)) == want


def test_haze_brightens_lowers_contrast_and_inverts() -> None:
    img = photo(96, 96)
    params = {"beta": 1.5, "airlight": 0.9, "depth_mix": 0.4}
    out = haze.apply(img, params)
    assert out.mean() > img.mean() + 0.05
    assert out.std() < 0.8 * img.std()
    t = haze.transmission(img, params)
    assert 0 < t.min() and t.max() <= 1
    # the model says I = J t + A (1 - t): invert it with the same t and recover J
    back = (out - params["airlight"] * (1 - t)) / t
    np.testing.assert_allclose(back, img, atol=2e-5)
    # farther (top rows of the ramp) is hazier
    flat = np.full((64, 64, 3), 0.3, np.float32)
    ramp = haze.apply(flat, {"beta": 1.5, "airlight": 0.9, "depth_mix": 0.0})
    assert ramp[0].mean() > ramp[32].mean() > ramp[-1].mean()


def test_noise_sigma_50_residual_std() -> None:
    grey = np.full((256, 256, 3), 0.5, np.float32)
    mod = ops.get("noise")
    from pirs.degrade.recipe import load_recipe

    stage = load_recipe("noise").stages[0]
    params = mod.sample(np.random.default_rng(5), stage.spec, {})
    assert params["sigma"] == 50.0 and params["gray"] is False
    resid = mod.apply(grey, params) - grey
    assert abs(resid.std() - 50 / 255) < 0.01  # clipping at 0/1 is > 2.5 sigma away
    assert abs(resid.mean()) < 0.003


def test_jpeg_quality_10_is_libjpeg() -> None:
    from pirs.degrade.recipe import load_recipe

    img = photo()
    stage = load_recipe("jpeg").stages[0]
    params = ops.get("jpeg").sample(np.random.default_rng(0), stage.spec, {})
    assert params == {"quality": 10}
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(to_uint8(img)[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 10])
    direct = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
    assert np.array_equal(to_uint8(ops.apply(img, "jpeg", params)), direct)


def test_low_light_darkens_by_exposure_and_noise_grows_with_signal() -> None:
    img = photo(128, 128)
    clean = {"exposure": 0.1, "gamma": 1.0, "shot": 0.0, "read": 0.0, "seed": 1}
    lin_in = lowlight.srgb_to_linear(img)
    lin_out = lowlight.srgb_to_linear(lowlight.apply(img, clean))
    np.testing.assert_allclose(lin_out.mean(), 0.1 * lin_in.mean(), rtol=1e-3)
    assert lowlight.apply(img, clean).mean() < 0.6 * img.mean()
    # heteroscedastic: variance = shot * x + read in linear light
    levels = [0.2, 0.8]
    var = []
    for v in levels:
        flat = np.full((128, 128, 3), v, np.float32)
        params = {"exposure": 1.0, "gamma": 1.0, "shot": 0.002, "read": 1e-6, "seed": 2}
        noisy = lowlight.darken(flat, 1.0, 1.0)
        out = lowlight.srgb_to_linear(lowlight.apply(flat, params))
        var.append(float((out - noisy).var()))
        want = 0.002 * float(noisy.mean()) + 1e-6
        assert abs(var[-1] - want) < 0.1 * want
    assert var[1] > 2 * var[0]


def test_motion_blur_of_a_point_is_a_line() -> None:
    for length, angle in ((15, 0.0), (21, 90.0), (11, 45.0)):
        k = motion.line_kernel(length, angle)
        assert k.shape == (length, length) and math.isclose(float(k.sum()), 1.0, rel_tol=1e-5)
        img = np.zeros((41, 41, 3), np.float32)
        img[20, 20] = 1.0
        out = motion.apply(img, {"length": length, "angle": angle})[..., 0]
        ys, xs = np.nonzero(out > 1e-4)
        w = out[ys, xs]
        cov = np.cov(np.stack([xs - 20, 20 - ys]), aweights=w)
        evals, evecs = np.linalg.eigh(cov)
        direction = math.degrees(math.atan2(evecs[1, 1], evecs[0, 1])) % 180
        assert min(abs(direction - angle % 180), 180 - abs(direction - angle % 180)) < 2.0
        extent = math.hypot(xs.max() - xs.min(), ys.max() - ys.min())
        assert length - 2 <= extent <= length + 1.5
        assert evals[0] < 0.05 * evals[1]


def test_defocus_of_a_point_is_a_disk() -> None:
    r = 5.0
    img = np.zeros((31, 31, 3), np.float32)
    img[15, 15] = 1.0
    out = defocus.apply(img, {"radius": r})[..., 0]
    support = out > 1e-6
    # flat interior weight = 1 / (covered area): the area of a disk of radius r
    assert abs(1.0 / out[15, 15] - math.pi * r * r) < 0.03 * math.pi * r * r
    yy, xx = np.nonzero(support)
    assert np.hypot(yy - 15, xx - 15).max() <= r + 0.75
    inner = out[np.hypot(*np.mgrid[-15:16, -15:16]) <= r - 1]
    assert inner.std() < 1e-6  # flat inside: a disk, not a Gaussian


def _gradient_energy(img: np.ndarray) -> tuple[float, float]:
    g = img.mean(axis=2)
    return float((np.diff(g, axis=1) ** 2).sum()), float((np.diff(g, axis=0) ** 2).sum())


def test_rain_adds_bright_streaks_along_its_angle() -> None:
    flat = np.full((96, 96, 3), 0.3, np.float32)
    params = drawn("rain", angle=0.0, density=10.0, length=30.0, alpha=0.8)
    out = rain.apply(flat, params)
    assert (out >= flat - 1e-6).all()  # a screen blend only adds light
    gx, gy = _gradient_energy(out)
    assert gx > 4 * gy  # vertical streaks: strong across-streak (x) gradients
    slanted = rain.apply(flat, {**params, "angle": 80.0})
    gx2, gy2 = _gradient_energy(slanted)
    assert gy2 > gx2


def test_snow_brightens_with_flakes() -> None:
    img = photo(96, 96)
    params = drawn("snow", veil=0.0, streak=1, density=80.0)
    out = snow.apply(img, params)
    assert (out >= img - 1e-6).all() and out.mean() > img.mean() + 0.005
    layer = snow.flake_layer((96, 96), params)
    assert 0.01 < (layer > 0.3).mean() < 0.6
    veiled = snow.apply(img, {**params, "veil": 0.2})
    assert veiled.mean() > out.mean() and veiled.std() < out.std()


def test_raindrops_change_only_inside_the_drops() -> None:
    img = photo(96, 96)
    params = drawn("raindrop", density=3.0)
    out = raindrop.apply(img, params)
    mask = raindrop.drop_mask((96, 96), params)
    assert 0.01 < mask.mean() < 0.6
    assert np.array_equal(out[~mask], img[~mask])
    assert np.abs(out[mask] - img[mask]).mean() > 0.01


def test_bad_parameters_are_rejected() -> None:
    with pytest.raises(ValueError, match="odd"):
        motion.line_kernel(4, 0.0)
    with pytest.raises(ValueError, match="positive"):
        defocus.disk_kernel(0.0)
    with pytest.raises(ValueError, match="exposure"):
        lowlight.Spec(exposure=[0.0, 2.0]).validate()
    with pytest.raises(ValueError, match="no odd"):
        motion.Spec(length=[4, 4]).validate()
