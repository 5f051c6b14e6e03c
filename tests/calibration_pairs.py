"""The image pairs of the metric calibration: made from code, checked by hash.

Three ground-truth images (a textured synthetic photo, a smooth one, and a zone plate with
fine stripes whose bicubic aliasing makes local structure anti-correlated, where pyiqa's clamp
of SSIM's contrast-structure term shows), each degraded four ways (x4 area down and bicubic
up, JPEG quality 25, Gaussian blur sigma 2, Gaussian noise sigma 10), all 200x200 so that
NIQE sees 2x2 blocks of 96 with and without a 4 px border. Used by
``benchmarks/calibrate_metrics.py`` (which computes the reference values with BasicSR and
pyiqa) and ``tests/test_bench_calibration.py`` (which checks pirs against them); the fixture
stores each image's SHA-256 so that a change in OpenCV's or numpy's output is caught before
it could pass for a metric difference.
"""

from __future__ import annotations

import hashlib

import cv2
import numpy as np

SIZE = 200
GROUND_TRUTHS = ("textured", "smooth", "zoneplate")
DEGRADATIONS = ("bicubic", "jpeg", "blur", "noise")
BORDERS = (0, 4)


def ground_truth(kind: str) -> np.ndarray:
    """A 200x200 uint8 RGB image: ``textured`` (edges, stripes, fine noise), ``smooth`` (gradients, soft shapes)
    or ``zoneplate`` (a chirp, 3 px checks and fine stripes)."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    rng = np.random.default_rng({"textured": 17, "smooth": 29, "zoneplate": 41}.get(kind, 0))
    if kind == "textured":
        img = np.stack([128 + 100 * np.sin(xx / 6.0) * np.cos(yy / 9.0),
                        255 * xx / (SIZE - 1),
                        255 * ((xx // 10 + yy // 10) % 2)], axis=-1)
        img += rng.normal(0, 6, img.shape)
    elif kind == "smooth":
        r = np.hypot(xx - 90, yy - 110)
        img = np.stack([200 - 0.6 * r, 40 + 150 * np.exp(-((xx - 140) ** 2 + (yy - 50) ** 2) / 2000.0),
                        120 + 60 * np.sin(yy / 23.0)], axis=-1)
        img += rng.normal(0, 1.5, img.shape)
    elif kind == "zoneplate":
        r = np.hypot(xx - 100, yy - 100)
        img = np.stack([128 + 110 * np.sin(r * r / 180.0), 128 + 100 * np.sin(xx * 1.3) * (yy < 100),
                        255 * ((xx // 3 + yy // 3) % 2)], axis=-1)
        img += rng.normal(0, 4, img.shape)
    else:
        raise ValueError(kind)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def degrade(gt: np.ndarray, how: str) -> np.ndarray:
    """``gt`` degraded one way, uint8 RGB of the same size."""
    if how == "bicubic":
        small = cv2.resize(gt, (SIZE // 4, SIZE // 4), interpolation=cv2.INTER_AREA)
        return cv2.resize(small, (SIZE, SIZE), interpolation=cv2.INTER_CUBIC)
    if how == "jpeg":
        ok, buf = cv2.imencode(".jpg", gt[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 25])
        assert ok
        return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1].copy()
    if how == "blur":
        return cv2.GaussianBlur(gt, (0, 0), 2.0, borderType=cv2.BORDER_REFLECT_101)
    if how == "noise":
        rng = np.random.default_rng(5)
        return np.clip(np.round(gt + rng.normal(0, 10, gt.shape)), 0, 255).astype(np.uint8)
    raise ValueError(how)


def pairs() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``(name, prediction, ground truth)`` for every ground truth and degradation, e.g. ``textured-jpeg``."""
    out = []
    for kind in GROUND_TRUTHS:
        gt = ground_truth(kind)
        out += [(f"{kind}-{how}", degrade(gt, how), gt) for how in DEGRADATIONS]
    return out


def digest(img: np.ndarray) -> str:
    """SHA-256 of an image's shape and bytes."""
    return hashlib.sha256(repr(img.shape).encode() + np.ascontiguousarray(img).tobytes()).hexdigest()
