"""JPEG compression through libjpeg (OpenCV), quality as an integer 1-100."""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

NAME = "jpeg"


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Float [0, 1] to uint8 with rounding and clipping."""
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def compress(img: np.ndarray, quality: int) -> np.ndarray:
    """Encode an RGB float32 image as baseline JPEG (4:2:0) at ``quality`` and decode it."""
    if int(quality) != quality or not 1 <= int(quality) <= 100:
        raise ValueError(f"JPEG quality must be an integer in 1..100, got {quality}")
    bgr = np.ascontiguousarray(to_uint8(img)[..., ::-1])
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("libjpeg failed to encode the image")
    out = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return out[..., ::-1].astype(np.float32) / np.float32(255.0)


def apply(img: np.ndarray, params: dict) -> np.ndarray:
    """Compress ``img`` at ``params['quality']``."""
    return compress(img, params["quality"])


@dataclass(frozen=True)
class Spec:
    """Quality drawn uniformly from the integers in ``quality = [low, high]`` (inclusive)."""

    quality: list[int] = field(default_factory=lambda: [30, 95])

    def validate(self) -> None:
        from ..recipe_checks import check_range

        check_range("quality", self.quality, low=1, high=100)
        if any(int(q) != q for q in self.quality):
            raise ValueError(f"quality must be integers, got {self.quality}")


def sample(rng: np.random.Generator, spec: Spec, ctx: dict) -> dict:
    """Draw an integer quality."""
    return {"quality": int(rng.integers(int(spec.quality[0]), int(spec.quality[1]) + 1))}


def label(params: dict) -> str | None:
    """Degradation label: ``jpeg``."""
    return "jpeg"


def prompt(params: dict, bare: bool) -> str:
    """SPIRE restoration prompt: ``Dejpeg with quality 45`` or ``Dejpeg``."""
    return "Dejpeg" if bare else f"Dejpeg with quality {params['quality']}"
