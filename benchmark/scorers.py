"""Scorers: the registry's metrics built once and applied to batches of decoded images.

``build_scorers`` checks every weight file first (one :class:`~pirs.benchmark.weights.MissingWeights`
naming all that are missing), then builds each model once, offline. A :class:`Scorer` takes
batches of predictions (and references, and captions for text metrics) and returns one value
per image; a :class:`SetScorer` (FID) accumulates features and returns one value for the set.
Reference-side features of FID and CLIP-I can be cached under ``cache_dir/<fingerprint>/``,
keyed by image content, so a second evaluation of the same test set skips them.

torch, pyiqa and transformers are imported inside functions only.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import registry
from .registry import FR, NR, TEXT, MetricSpec
from .weights import CLIP_ALIASES, check_weights, clip_dir_rel, clip_repo, file_stamp, offline

if TYPE_CHECKING:
    import torch

DEFAULT_OPTIONS: dict[str, Any] = {"crop_border": 0, "clip_model": "ViT-L/14"}
_CHANNELS_LAST = {"lpips", "lpips-vgg", "dists"}  # pyiqa names of conv-net metrics run channels-last
# pyiqa archs importing openai-clip
_OPENAI_CLIP_METRICS = ("clipiqa", "liqe", "laion_aes", "maclip", "afine", "qualiclip", "topiq_nr-face")
_FID_DIMS = 2048


def resolve_options(options: dict | None) -> dict[str, Any]:
    """The defaults updated with ``options``; unknown keys and bad values fail here, before any work."""
    out = dict(DEFAULT_OPTIONS)
    for key, value in (options or {}).items():
        if key not in DEFAULT_OPTIONS:
            close = difflib.get_close_matches(key, list(DEFAULT_OPTIONS), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"unknown metric option {key!r}.{hint} Known: {', '.join(DEFAULT_OPTIONS)}")
        out[key] = value
    crop = out["crop_border"]
    if isinstance(crop, bool) or not isinstance(crop, int) or crop < 0:
        raise ValueError(f"crop_border must be a non-negative integer, got {crop!r}")
    if not isinstance(out["clip_model"], str) or not out["clip_model"].strip():
        raise ValueError(f"clip_model must be a CLIP name such as {', '.join(CLIP_ALIASES)}, got {out['clip_model']!r}")
    clip_dir_rel(out["clip_model"])  # raises on a name that cannot be a folder
    return out


def _as_specs(specs: Sequence[MetricSpec | str]) -> list[MetricSpec]:
    return [registry.get(s) if isinstance(s, str) else s for s in specs]


def conventions(specs: Sequence[MetricSpec | str], options: dict | None = None) -> dict[str, dict[str, Any]]:
    """Metric name -> the convention actually used with these options (for the results file)."""
    opts = resolve_options(options)
    out = {}
    for spec in _as_specs(specs):
        conv = dict(spec.convention)
        if "crop_border" in spec.options:
            conv["crop_border"] = opts["crop_border"]
        if "clip_model" in spec.options:
            conv["clip_model"] = opts["clip_model"]
            conv["clip_checkpoint"] = clip_repo(opts["clip_model"])
        kwargs = "".join(f", {k}={v!r}" for k, v in spec.backend_kwargs.items())
        conv["backend"] = f"{spec.backend} {spec.backend_name!r}{kwargs}"
        out[spec.name] = conv
    return out


# ------------------------------------------------------------------------------------------
# Interfaces
# ------------------------------------------------------------------------------------------


class Scorer:
    """A per-image metric (full-reference, no-reference or text)."""

    spec: MetricSpec

    def __init__(self, spec: MetricSpec, device: str = "cpu", crop_border: int = 0):
        self.spec = spec
        self.device = device
        self.crop_border = crop_border if "crop_border" in spec.options else 0

    def score(self, pred: torch.Tensor, ref: torch.Tensor | None,
              captions: list[str] | None = None) -> torch.Tensor:
        """``pred``/``ref``: float32 (B, 3, H, W) RGB in [0, 1] on ``self.device``; returns (B,) float64 on the CPU."""
        self._check(pred, ref, captions)
        import torch

        with torch.inference_mode():
            out = self._score(pred, ref, captions)
        return out.detach().reshape(pred.shape[0]).to("cpu", torch.float64)

    def _score(self, pred: torch.Tensor, ref: torch.Tensor | None, captions: list[str] | None) -> torch.Tensor:
        raise NotImplementedError

    def _check(self, pred: torch.Tensor, ref: torch.Tensor | None, captions: list[str] | None) -> None:
        name = self.spec.name
        if pred.ndim != 4 or pred.shape[1] != 3:
            raise ValueError(f"{name}: pred must be (B, 3, H, W), got {tuple(pred.shape)}")
        for what, t in (("pred", pred), ("ref", ref)):
            if t is not None and t.numel() and (float(t.min()) < 0.0 or float(t.max()) > 1.0):
                raise ValueError(f"{name}: {what} must be RGB in [0, 1], got values in "
                                 f"[{float(t.min()):.4g}, {float(t.max()):.4g}]")
        need = self.spec.min_side + 2 * self.crop_border
        if min(pred.shape[-2:]) < need:
            raise ValueError(f"{name}: images of {pred.shape[-2]}x{pred.shape[-1]} are too small; it needs sides of "
                             f"at least {need} ({self.spec.input_rules})")
        if self.spec.kind == FR:
            if ref is None:
                raise ValueError(f"{name} is full-reference: a reference batch is needed")
            if tuple(ref.shape) != tuple(pred.shape):
                raise ValueError(f"{name}: pred {tuple(pred.shape)} and ref {tuple(ref.shape)} differ in size")
        if self.spec.kind == TEXT:
            if captions is None or len(captions) != pred.shape[0]:
                raise ValueError(f"{name} needs one caption per image ({pred.shape[0]}), got "
                                 f"{'none' if captions is None else len(captions)}")
            empty = [i for i, c in enumerate(captions) if not (isinstance(c, str) and c.strip())]
            if empty:
                raise ValueError(f"{name}: {len(empty)} of {len(captions)} captions in the batch are empty "
                                 f"(batch positions {empty[:5]})")


class SetScorer:
    """A distribution metric (FID): one value for the whole set."""

    spec: MetricSpec

    def __init__(self, spec: MetricSpec, device: str = "cpu"):
        self.spec = spec
        self.device = device

    def update(self, pred: torch.Tensor, ref: torch.Tensor | None) -> None:
        """Add a batch of predictions and their references (float32 (B, 3, H, W) in [0, 1])."""
        raise NotImplementedError

    def compute(self) -> float:
        """The set's value from everything added so far."""
        raise NotImplementedError


# ------------------------------------------------------------------------------------------
# Reference-feature cache
# ------------------------------------------------------------------------------------------


def image_key(img: torch.Tensor) -> str:
    """Content key of one (3, H, W) image: SHA-1 of its float32 bytes and shape."""
    import numpy as np

    arr = np.ascontiguousarray(img.detach().to("cpu").float().numpy())
    return hashlib.sha1(repr(arr.shape).encode() + arr.tobytes()).hexdigest()


class FeatureCache:
    """Features of reference images, keyed by content, stored as append-only parts under one folder.

    ``root/<tag>/part-<sha1>.npz`` holds ``keys`` and ``feats``; each batch's new features are one
    part, written atomically, so an interrupted run keeps what it computed and nothing is rewritten.
    """

    def __init__(self, root: Path, tag: str):
        import numpy as np

        self.folder = Path(root) / tag
        self.features: dict[str, np.ndarray] = {}
        self.hits = 0
        self.misses = 0
        for part in sorted(self.folder.glob("part-*.npz")) if self.folder.is_dir() else []:
            try:
                with np.load(part, allow_pickle=False) as z:
                    self.features.update(zip(z["keys"].tolist(), z["feats"], strict=True))
            except (OSError, ValueError, KeyError) as err:  # a damaged part is recomputed, not trusted
                print(f"pirs: ignoring damaged feature cache {part}: {err}", file=sys.stderr)

    def lookup(self, keys: list[str]) -> list[np.ndarray | None]:
        """Cached features for ``keys`` (None where absent); counts hits and misses."""
        out = [self.features.get(k) for k in keys]
        found = sum(f is not None for f in out)
        self.hits += found
        self.misses += len(keys) - found
        return out

    def add(self, keys: list[str], feats: np.ndarray) -> None:
        """Store new features as one part."""
        import numpy as np

        if not keys:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        name = hashlib.sha1("".join(keys).encode()).hexdigest()[:16]
        final = self.folder / f"part-{name}.npz"
        tmp = self.folder / f".part-{name}.{os.getpid()}.tmp.npz"
        np.savez(tmp, keys=np.array(keys), feats=np.asarray(feats, dtype=np.float32))
        os.replace(tmp, final)
        self.features.update(zip(keys, np.asarray(feats, dtype=np.float32), strict=True))


def _cached_features(cache: FeatureCache | None, refs: torch.Tensor, compute: Any) -> np.ndarray:
    """Features of ``refs`` from the cache where present, computing (and caching) only the rest."""
    import numpy as np

    if cache is None:
        return compute(refs)
    keys = [image_key(r) for r in refs]
    found = cache.lookup(keys)
    todo = [i for i, f in enumerate(found) if f is None]
    if todo:
        fresh = compute(refs[todo])
        cache.add([keys[i] for i in todo], fresh)
        for i, f in zip(todo, fresh, strict=True):
            found[i] = f
    return np.stack(found).astype(np.float32)


# ------------------------------------------------------------------------------------------
# pyiqa metrics
# ------------------------------------------------------------------------------------------


class PyiqaScorer(Scorer):
    """A pyiqa metric built with ``pyiqa.create_metric`` (pyiqa's name, defaults and kwargs)."""

    def __init__(self, spec: MetricSpec, device: str = "cpu", crop_border: int = 0):
        super().__init__(spec, device, crop_border)
        import pyiqa

        kwargs = dict(spec.backend_kwargs)
        if "crop_border" in spec.options:
            kwargs["crop_border"] = self.crop_border
        self.model = pyiqa.create_metric(spec.backend_name, device=device, **kwargs)
        # Convolutional feature nets run about 20% faster on the CPU in channels-last layout (oneDNN);
        # the values are the same to float rounding.
        self.channels_last = spec.backend_name in _CHANNELS_LAST
        if self.channels_last:
            import torch

            self.model = self.model.to(memory_format=torch.channels_last)

    def _score(self, pred: torch.Tensor, ref: torch.Tensor | None, captions: list[str] | None) -> torch.Tensor:
        if self.channels_last:
            import torch

            pred = pred.contiguous(memory_format=torch.channels_last)
            ref = ref.contiguous(memory_format=torch.channels_last) if ref is not None else None
        if self.spec.kind == FR:
            return self.model(pred, ref)
        return self.model(pred)


class SsimScorer(Scorer):
    """pyiqa's ``ssim`` (YIQ luma, rounded) or ``ssimc`` (RGB, rounded): pyiqa's preprocessing and formula,
    with the 11x11 Gaussian window applied as two 1-D passes (the window is separable)."""

    def _score(self, pred: torch.Tensor, ref: torch.Tensor | None, captions: list[str] | None) -> torch.Tensor:
        import torch
        from pyiqa.archs.func_util import preprocess_rgb

        if self.crop_border:
            c = self.crop_border
            pred, ref = pred[..., c:-c, c:-c], ref[..., c:-c, c:-c]
        y_channel = self.spec.backend_kwargs.get("test_y_channel", self.spec.backend_name == "ssim")
        color_space = self.spec.backend_kwargs.get("color_space", "yiq")
        x = preprocess_rgb(pred, y_channel, 255, color_space).to(torch.float64)
        y = preprocess_rgb(ref, y_channel, 255, color_space).to(torch.float64)
        return ssim_separable(x, y, data_range=255.0)


def _hwc(batch: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) float32 in [0, 1] to a (B, H, W, 3) float32 numpy array on the CPU (values unchanged)."""
    import torch

    return batch.detach().to("cpu", torch.float32).permute(0, 2, 3, 1).contiguous().numpy()


class BasicsrYScorer(Scorer):
    """PSNR or SSIM on YCbCr Y (``psnr-ycbcr``, ``ssim-ycbcr``) or RGB (``psnr-rgb``, ``ssim-rgb``), BasicSR's way
    (:mod:`.basicsr_metrics`)."""

    def _score(self, pred: torch.Tensor, ref: torch.Tensor | None, captions: list[str] | None) -> torch.Tensor:
        import torch

        from .basicsr_metrics import psnr_rgb, psnr_y, ssim_rgb, ssim_y

        fn = {"psnr-ycbcr": psnr_y, "ssim-ycbcr": ssim_y, "psnr-rgb": psnr_rgb, "ssim-rgb": ssim_rgb}[
            self.spec.backend_name]
        return torch.tensor([fn(p, r, self.crop_border) for p, r in zip(_hwc(pred), _hwc(ref), strict=True)],
                            dtype=torch.float64)


class NiqeYScorer(Scorer):
    """NIQE on rounded YCbCr Y, BasicSR's way, with the model parameters of ``niqe_modelparameters.mat``."""

    def __init__(self, spec: MetricSpec, prior_file: Path, device: str = "cpu", crop_border: int = 0):
        super().__init__(spec, device, crop_border)
        from .basicsr_metrics import load_niqe_prior

        self.mu, self.cov = load_niqe_prior(str(prior_file))

    def _score(self, pred: torch.Tensor, ref: torch.Tensor | None, captions: list[str] | None) -> torch.Tensor:
        import torch

        from .basicsr_metrics import niqe_y

        return torch.tensor([niqe_y(p, self.mu, self.cov, self.crop_border) for p in _hwc(pred)],
                            dtype=torch.float64)


def _gaussian_1d(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """The 1-D factor of MATLAB's ``fspecial('gaussian', size, sigma)`` (which pyiqa's ssim uses).

    fspecial zeroes taps below ``eps * max``; for 11 taps at sigma 1.5 the smallest 2-D tap is
    about 1.5e-5 of the largest, so nothing is zeroed and the window is exactly separable.
    """
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x * x) / (2.0 * sigma * sigma))
    assert (g[0] * g[0]) / (g.max() ** 2) > np.finfo(np.float64).eps
    return g / g.sum()


def _filter_moments(stack: torch.Tensor, g: np.ndarray) -> torch.Tensor:
    """'valid' separable Gaussian filtering of every (H, W) plane of a float64 (B, C, H, W) tensor."""
    import torch

    m = len(g) // 2
    if stack.device.type == "cpu":  # OpenCV's float64 separable filter: ~10x faster than torch's float64 conv
        import cv2

        planes = stack.detach().numpy().reshape(-1, *stack.shape[-2:])
        out = np.stack([cv2.sepFilter2D(p, cv2.CV_64F, g, g, borderType=cv2.BORDER_REFLECT_101)[m:-m, m:-m]
                        for p in planes])
        return torch.from_numpy(out.reshape(*stack.shape[:2], *out.shape[-2:]))
    import torch.nn.functional as F

    n, k = stack.shape[1], torch.from_numpy(g).to(stack)
    return F.conv2d(F.conv2d(stack, k.view(1, 1, 1, -1).expand(n, 1, 1, -1), groups=n),
                    k.view(1, 1, -1, 1).expand(n, 1, -1, 1), groups=n)


def ssim_separable(x: torch.Tensor, y: torch.Tensor, data_range: float = 255.0) -> torch.Tensor:
    """pyiqa's ``ssim`` (Wang et al. 2004; 11x11 Gaussian, sigma 1.5, 'valid' filtering, no downsampling,
    negative contrast-structure clipped to 0) on float64 (B, C, H, W) inputs; returns (B,) on the CPU.

    The five local moments are filtered with a 1x11 and an 11x1 kernel, 22 taps per pixel instead of
    121 (the interior of a bordered separable filter is exactly the 'valid' result); the value equals
    pyiqa's within 1e-6 (pyiqa rounds its window to float32).
    """
    import numpy as np  # noqa: F811
    import torch
    import torch.nn.functional as F

    c = x.shape[1]
    if min(x.shape[-2:]) < 11:
        raise ValueError(f"SSIM needs images of at least 11x11, got {tuple(x.shape[-2:])}")
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    stack = torch.cat([x, y, x * x, y * y, x * y], dim=1).to(torch.float64).contiguous()
    moments = _filter_moments(stack, np.ascontiguousarray(_gaussian_1d()))
    mu1, mu2, xx, yy, xy = moments.split(c, dim=1)
    mu1_sq, mu2_sq, mu1_mu2 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    cs_map = F.relu((2 * (xy - mu1_mu2) + c2) / ((xx - mu1_sq) + (yy - mu2_sq) + c2))
    ssim_map = ((2 * mu1_mu2 + c1) / (mu1_sq + mu2_sq + c1)) * cs_map
    return ssim_map.mean([1, 2, 3]).cpu()


# ------------------------------------------------------------------------------------------
# CLIP metrics (transformers)
# ------------------------------------------------------------------------------------------


class ClipModel:
    """A transformers CLIP folder loaded once: image and text embeddings, L2-normalized."""

    def __init__(self, folder: Path, device: str, text: bool):
        from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer

        self.folder = folder
        self.device = device
        self.model = CLIPModel.from_pretrained(folder, local_files_only=True).to(device).eval()
        self.processor = CLIPImageProcessor.from_pretrained(folder, local_files_only=True)
        self.tokenizer = CLIPTokenizer.from_pretrained(folder, local_files_only=True) if text else None
        self.max_tokens = int(self.model.config.text_config.max_position_embeddings)
        weights = folder / "model.safetensors"
        self.stamp = file_stamp(weights if weights.is_file() else folder / "pytorch_model.bin")

    def load_text(self) -> None:
        """Add the tokenizer (when clip-t joins a model first loaded for clip-i)."""
        from transformers import CLIPTokenizer

        if self.tokenizer is None:
            self.tokenizer = CLIPTokenizer.from_pretrained(self.folder, local_files_only=True)

    @staticmethod
    def _features(out: Any) -> torch.Tensor:
        return out if hasattr(out, "norm") else out.pooler_output  # transformers 4 tensor, 5 output object

    def image_embeds(self, images: torch.Tensor) -> torch.Tensor:
        """(B, D) normalized embeddings of float (B, 3, H, W) images in [0, 1]."""
        pixels = self.processor(images=list(images), do_rescale=False, return_tensors="pt")["pixel_values"]
        feats = self._features(self.model.get_image_features(pixel_values=pixels.to(self.device)))
        return feats / feats.norm(dim=-1, keepdim=True)

    def text_embeds(self, captions: list[str]) -> torch.Tensor:
        """(B, D) normalized embeddings of captions (truncated to CLIP's context length)."""
        tokens = self.tokenizer(captions, padding=True, truncation=True, max_length=self.max_tokens,
                                return_tensors="pt").to(self.device)
        feats = self._features(self.model.get_text_features(**tokens))
        return feats / feats.norm(dim=-1, keepdim=True)


class ClipImageScorer(Scorer):
    """CLIP-I: cosine similarity of the restored and ground-truth image embeddings."""

    def __init__(self, spec: MetricSpec, clip: ClipModel, cache: FeatureCache | None = None):
        super().__init__(spec, clip.device)
        self.clip = clip
        self.cache = cache

    def _score(self, pred: torch.Tensor, ref: torch.Tensor | None, captions: list[str] | None) -> torch.Tensor:
        import torch

        a = self.clip.image_embeds(pred)
        b = _cached_features(self.cache, ref, lambda x: self.clip.image_embeds(x).float().cpu().numpy())
        return (a.float().cpu() * torch.from_numpy(b)).sum(-1)


class ClipTextScorer(Scorer):
    """CLIP-T: cosine similarity of the restored image's embedding and its caption's."""

    def __init__(self, spec: MetricSpec, clip: ClipModel):
        super().__init__(spec, clip.device)
        clip.load_text()
        self.clip = clip

    def _score(self, pred: torch.Tensor, ref: torch.Tensor | None, captions: list[str] | None) -> torch.Tensor:
        return (self.clip.image_embeds(pred) * self.clip.text_embeds(list(captions))).sum(-1)


# ------------------------------------------------------------------------------------------
# FID
# ------------------------------------------------------------------------------------------


def clean_resize(images: torch.Tensor, size: int = 299) -> torch.Tensor:
    """clean-fid's 'clean' preprocessing of float images in [0, 1]: 8-bit, per-channel PIL bicubic in float.

    Returns (B, 3, size, size) float32 in [0, 255], as pyiqa's ``ResizeDataset(mode='clean')`` gives for the
    same images read from 8-bit files.
    """
    import numpy as np
    import torch
    from PIL import Image

    arr = (images.detach().to("cpu", torch.float32) * 255.0).round().clamp(0, 255).to(torch.uint8).numpy()
    out = np.empty((arr.shape[0], 3, size, size), dtype=np.float32)
    for b in range(arr.shape[0]):
        for c in range(3):
            ch = Image.fromarray(arr[b, c].astype(np.float32))
            out[b, c] = np.asarray(ch.resize((size, size), resample=Image.BICUBIC)).clip(0, 255)
    return torch.from_numpy(out)


def frechet_distance(feats1: np.ndarray, feats2: np.ndarray, method: str = "auto") -> float:
    """Fréchet distance of two feature sets (rows are samples).

    ``method="svd"`` computes the trace of sqrt(C1 C2) exactly as the sum of the singular values of
    A1 A2^T (A = centred features / sqrt(n - 1)): no matrix square root, exact even when a set has
    fewer samples than dimensions, where the covariances are singular. ``"sqrtm"`` is pyiqa's
    ``frechet_distance`` (scipy ``sqrtm``). ``"auto"`` takes ``svd`` when the smaller set has at most
    as many samples as dimensions, else ``sqrtm``.
    """
    import numpy as np

    f1, f2 = np.asarray(feats1, dtype=np.float64), np.asarray(feats2, dtype=np.float64)
    if min(len(f1), len(f2)) < 2:
        raise ValueError(f"FID needs at least 2 images per set, got {len(f1)} and {len(f2)}")
    if method == "auto":
        method = "svd" if min(len(f1), len(f2)) <= f1.shape[1] else "sqrtm"
    mu1, mu2 = f1.mean(0), f2.mean(0)
    if method == "svd":
        a1 = (f1 - mu1) / np.sqrt(len(f1) - 1)
        a2 = (f2 - mu2) / np.sqrt(len(f2) - 1)
        tr_sqrt = np.linalg.svd(a1 @ a2.T, compute_uv=False).sum()
        diff = mu1 - mu2
        return float(diff @ diff + (a1 * a1).sum() + (a2 * a2).sum() - 2 * tr_sqrt)
    if method != "sqrtm":
        raise ValueError(f"method must be auto, svd or sqrtm, got {method!r}")
    from pyiqa.archs.fid_arch import frechet_distance as pyiqa_frechet

    return float(pyiqa_frechet(mu1, np.cov(f1, rowvar=False), mu2, np.cov(f2, rowvar=False)))


def kernel_inception_distance(feats1: np.ndarray, feats2: np.ndarray, subsets: int = 100, subset_size: int = 1000,
                              seed: int = 0) -> float:
    """KID: the unbiased MMD^2 of two feature sets under k(x, y) = (x . y / d + 1)^3, averaged over ``subsets``
    random subsets of ``min(subset_size, n1, n2)`` rows drawn without replacement from each set."""
    import numpy as np

    f1, f2 = np.asarray(feats1, dtype=np.float64), np.asarray(feats2, dtype=np.float64)
    m = min(subset_size, len(f1), len(f2))
    if m < 2:
        raise ValueError(f"KID needs at least 2 images per set, got {len(f1)} and {len(f2)}")
    d = f1.shape[1]
    rng = np.random.default_rng(seed)
    total = 0.0
    for _ in range(subsets):
        x = f1[rng.choice(len(f1), m, replace=False)]
        y = f2[rng.choice(len(f2), m, replace=False)]
        kxx, kyy, kxy = (x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3
        total += ((kxx.sum() - np.trace(kxx)) + (kyy.sum() - np.trace(kyy))) / (m * (m - 1)) - 2 * kxy.mean()
    return float(total / subsets)


class InceptionFeatures:
    """The clean-mode Inception pool3 features of the predictions and references, shared by fid and kid: a
    batch given to both scorers is computed once."""

    def __init__(self, device: str = "cpu", cache: FeatureCache | None = None):
        from pyiqa.archs.inception import InceptionV3

        self.device = device
        self.model = InceptionV3(output_blocks=[InceptionV3.BLOCK_INDEX_BY_DIM[_FID_DIMS]]).to(device).eval()
        self.cache = cache
        self.pred_feats: list[np.ndarray] = []
        self.ref_feats: list[np.ndarray] = []
        self._last: tuple[int, int] | None = None

    def features(self, images: torch.Tensor) -> np.ndarray:
        """(B, 2048) float32 pool3 features of float images in [0, 1]."""
        import torch

        x = (clean_resize(images) - 128.0) / 128.0
        with torch.inference_mode():
            feat = self.model(x.to(self.device), False, False)[0]
        return feat.reshape(feat.shape[0], -1).float().cpu().numpy()

    def update(self, pred: torch.Tensor, ref: torch.Tensor, count: int) -> None:
        """Add a batch; ``count`` numbers the caller's batches so that the second scorer's call is a no-op."""
        if self._last == (count, id(pred)):
            return
        self._last = (count, id(pred))
        self.pred_feats.append(self.features(pred))
        self.ref_feats.append(_cached_features(self.cache, ref, self.features))

    def arrays(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        import numpy as np

        if not self.pred_feats:
            raise ValueError(f"{name}: no images were added")
        return np.concatenate(self.pred_feats), np.concatenate(self.ref_feats)


class FIDScorer(SetScorer):
    """FID of the predictions against the references (clean mode, TF-FID InceptionV3 pool3)."""

    def __init__(self, spec: MetricSpec, device: str = "cpu", cache: FeatureCache | None = None,
                 shared: InceptionFeatures | None = None):
        super().__init__(spec, device)
        self.inception = shared or InceptionFeatures(device, cache)
        self.batches = 0

    @property
    def cache(self) -> FeatureCache | None:
        return self.inception.cache

    @property
    def model(self):
        return self.inception.model

    def features(self, images: torch.Tensor) -> np.ndarray:
        """(B, 2048) float32 pool3 features of float images in [0, 1]."""
        return self.inception.features(images)

    def update(self, pred: torch.Tensor, ref: torch.Tensor | None) -> None:
        if ref is None:
            raise ValueError(f"{self.spec.name} compares the predictions with the references: a reference batch "
                             "is needed")
        self.batches += 1
        self.inception.update(pred, ref, self.batches)

    def compute(self) -> float:
        return frechet_distance(*self.inception.arrays(self.spec.name))


class KIDScorer(FIDScorer):
    """KID of the predictions against the references, on fid's features."""

    def compute(self) -> float:
        return kernel_inception_distance(*self.inception.arrays(self.spec.name))


# ------------------------------------------------------------------------------------------
# Building
# ------------------------------------------------------------------------------------------


def _cache_root(cache_dir: str | os.PathLike | None, fingerprint: str | None) -> Path | None:
    if cache_dir is None or not fingerprint:
        return None
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", fingerprint):
        raise ValueError(f"fingerprint {fingerprint!r} cannot name a cache folder")
    return Path(cache_dir).expanduser() / fingerprint


class Scorers(list):
    """The scorers of :func:`build_scorers`, in order, with :attr:`weights`: each weight file read, its SHA-256,
    the metrics using it and how it was checked (for the results file)."""

    weights: list[dict]


#: pyiqa metrics whose timm backbone is overwritten by the metric's own checkpoint (strict load): built without
#: ImageNet weights, so that timm does not try to download them
_TIMM_OVERWRITTEN = {"maniqa": ("vit_base_patch8_224",), "topiq": ("resnet50",)}
#: pickle-based file types pirs reads itself before any model is built (safetensors, .mat and .json hold plain
#: data that their readers cannot turn into code; they are hashed and recorded like the rest)
_TENSOR_FILES = (".pth", ".pt", ".ckpt", ".bin")


def _timm_fix(spec: MetricSpec):
    from . import compat

    for prefix, names in _TIMM_OVERWRITTEN.items():
        if spec.backend_name.startswith(prefix) and not spec.name.startswith(registry.PYIQA_PREFIX):
            return compat.timm_without_pretrained(*names)
    return contextlib.nullcontext()


def build_scorers(specs: Sequence[MetricSpec | str], device: str = "cpu", weights_dir: str | None = None,
                  options: dict | None = None, cache_dir: str | None = None,
                  fingerprint: str | None = None) -> Scorers:
    """One scorer per spec, in order. Weights are checked first (``MissingWeights`` lists every missing file or
    one whose content does not match the hash in its name); every weight file is then read by pirs without
    unpickling code (:mod:`.safeload`; ``UnsafeWeights`` names a file that would need it) and handed to the
    libraries as a state dict while each model is built once, offline (a download attempt raises
    ``DownloadBlocked`` naming the file). The returned list's ``weights`` records every file read.

    ``options``: ``crop_border`` (psnr/ssim/niqe family) and ``clip_model`` (clip-i, clip-t), see
    ``DEFAULT_OPTIONS``. ``cache_dir`` and ``fingerprint`` (the test set's) enable the reference-feature cache of
    fid, kid and clip-i.
    """
    specs = _as_specs(specs)
    opts = resolve_options(options)
    root = check_weights(specs, weights_dir, opts)
    cache_root = _cache_root(cache_dir, fingerprint)
    from . import compat
    from .safeload import SafeLoads
    from .weights import required_files, weight_records

    records = weight_records(specs, root, opts)
    loads = SafeLoads()
    for f, _ in required_files(specs, opts):  # refused here, before any model is built
        path = root / f.path
        if not path.is_file():
            path = next(root / a for a in f.alternatives if (root / a).is_file())
        if path.suffix.lower() in _TENSOR_FILES:
            loads.preload(path)

    scorers = Scorers()
    clips: dict[Path, ClipModel] = {}
    inception: InceptionFeatures | None = None
    with offline(root), loads, contextlib.redirect_stdout(sys.stderr):  # pyiqa prints its loading messages
        for spec in specs:
            if spec.backend == "clip":
                folder = root / clip_dir_rel(opts["clip_model"])
                if folder not in clips:
                    clips[folder] = ClipModel(folder, device, text=spec.kind == TEXT)
                clip = clips[folder]
                if spec.kind == TEXT:
                    scorers.append(ClipTextScorer(spec, clip))
                else:
                    cache = None
                    if cache_root is not None:
                        cache = FeatureCache(cache_root, f"clip-i-{folder.name}-{clip.stamp}")
                    scorers.append(ClipImageScorer(spec, clip, cache))
            elif spec.name in ("fid", "kid"):
                if inception is None:
                    cache = None
                    if cache_root is not None:
                        stamp = file_stamp(root / spec.weights[0])
                        cache = FeatureCache(cache_root, f"fid-clean-{_FID_DIMS}-{stamp}")
                    inception = InceptionFeatures(device, cache)
                scorers.append((FIDScorer if spec.name == "fid" else KIDScorer)(spec, device, shared=inception))
            elif spec.name in ("psnr-ycbcr", "ssim-ycbcr", "psnr-rgb", "ssim-rgb"):
                scorers.append(BasicsrYScorer(spec, device, opts["crop_border"]))
            elif spec.name == "niqe-ycbcr":
                scorers.append(NiqeYScorer(spec, root / spec.weights[0], device, opts["crop_border"]))
            elif spec.name in ("ssim", "ssimc"):
                scorers.append(SsimScorer(spec, device, opts["crop_border"]))
            elif spec.backend == "pyiqa" and spec.kind in (FR, NR):
                if spec.backend_name.startswith(_OPENAI_CLIP_METRICS) or spec.name.startswith(registry.PYIQA_PREFIX):
                    compat.import_openai_clip()
                with _timm_fix(spec):
                    scorers.append(_pyiqa_scorer(spec, device, opts["crop_border"]))
            else:
                raise ValueError(f"no scorer for metric {spec.name!r} (backend {spec.backend}, kind {spec.kind})")
    listed = {r["path"] for r in records}
    for path, sha in loads.files.items():  # files the libraries read beyond the listed ones (pyiqa:NAME, caches)
        p = Path(path)
        rel = str(p.relative_to(root)) if p.is_relative_to(root) else str(p)
        if rel not in listed:
            records.append({"path": rel, "sha256": sha, "metrics": [], "check": "none"})
    scorers.weights = records
    return scorers


def _pyiqa_scorer(spec: MetricSpec, device: str, crop_border: int) -> PyiqaScorer:
    """A :class:`PyiqaScorer`; a ``pyiqa:NAME`` metric that fails to build says so in one line."""
    from .safeload import UnsafeWeights
    from .weights import DownloadBlocked

    if not spec.name.startswith(registry.PYIQA_PREFIX):
        return PyiqaScorer(spec, device, crop_border)
    try:
        return PyiqaScorer(spec, device, crop_border)
    except (DownloadBlocked, UnsafeWeights):
        raise
    except Exception as e:  # whatever the library raises: an offline hub, a missing optional package...
        text = " ".join(str(e).split())[:300]
        raise ValueError(f"{spec.name}: pyiqa could not build it offline ({type(e).__name__}: {text}); its weight "
                         "files go under the weights directory where pyiqa, torch.hub or Hugging Face cache them "
                         "(a metric registered in pirs lists them: bench metrics)") from None
