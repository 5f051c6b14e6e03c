"""The metric registry: every metric is one row of data (lm-eval / pyiqa style).

Each :class:`MetricSpec` states the metric's name, direction, kind (full-reference,
no-reference, set-level distribution, text-conditioned), the convention it computes
(colour space, Y formula and range, border crop, data range, checkpoint variant,
FID mode and resize), input size rules, and the weight files it needs, relative to
the weights directory. Where pyiqa has a metric, the name and meaning are pyiqa's.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

FR, NR, SET, TEXT = "full-reference", "no-reference", "distribution", "text"


@dataclass(frozen=True)
class MetricSpec:
    """One metric: what it means and what it needs."""

    name: str
    kind: str  # FR, NR, SET (FID: one value for the set) or TEXT (needs a caption)
    lower_better: bool
    description: str
    backend: str  # "pyiqa", "clip" (transformers CLIPModel) or "pirs"
    backend_name: str = ""  # the backend's own name for it (pyiqa metric name, ...)
    backend_kwargs: dict[str, Any] = field(default_factory=dict)
    convention: dict[str, Any] = field(default_factory=dict)
    input_rules: str = "any size; RGB in [0, 1]"
    weights: tuple[str, ...] = ()  # files needed, relative to the weights directory
    score_range: tuple[float, float] | None = None
    options: tuple[str, ...] = ()  # harness options that change the result (crop_border, clip_model)
    min_side: int = 1  # smallest image side accepted (before any border crop)

    @property
    def direction(self) -> str:
        """An arrow for tables: down when lower is better."""
        return "lower" if self.lower_better else "higher"


REGISTRY: dict[str, MetricSpec] = {}


def register(spec: MetricSpec) -> MetricSpec:
    """Add a metric; names are unique."""
    if spec.name in REGISTRY:
        raise ValueError(f"metric {spec.name!r} is registered twice")
    REGISTRY[spec.name] = spec
    return spec


def get(name: str) -> MetricSpec:
    """The metric called ``name`` (case-insensitive), with a "did you mean" on a typo."""
    key = name.strip().lower()
    if key in REGISTRY:
        return REGISTRY[key]
    close = difflib.get_close_matches(key, list(REGISTRY), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise KeyError(f"unknown metric {name!r}.{hint} Known metrics: {', '.join(sorted(REGISTRY))}")


def parse(names: str | list[str]) -> list[MetricSpec]:
    """``"psnr,ssim"`` or a list of names to specs, in order, without repeats."""
    items = names.split(",") if isinstance(names, str) else list(names)
    out: list[MetricSpec] = []
    for n in items:
        if n.strip():
            spec = get(n)
            if spec not in out:
                out.append(spec)
    if not out:
        raise KeyError("no metrics given")
    return out


# --------------------------------------------------------------------------------------------
# The table. pyiqa names and meanings are pyiqa 0.1.16's (pyiqa/default_model_configs.py and
# pyiqa/archs/*_arch.py); the conventions below are read from that source.
# --------------------------------------------------------------------------------------------

_YIQ = "Y = 0.299 R + 0.587 G + 0.114 B (luma of YIQ, pyiqa's default color_space='yiq'; not BT.601 YCbCr)"
_YCBCR = "Y = (16 + 65.481 R + 128.553 G + 24.966 B) / 255 with R, G, B in [0, 1] (ITU-R BT.601 YCbCr, studio swing)"
_INPUTS = "the decoded 8-bit images / 255, not re-quantized"
_PSNR_ID = ("identical images give 80 dB, not inf: pyiqa adds eps = 1e-8 to the MSE, so the value is capped at "
            "10 log10(1 / 1e-8)")
_SSIM_CORE = {
    "window": "11x11 Gaussian, sigma 1.5, 'valid' filtering (the mean is over the interior, 5 px from each edge)",
    "constants": "K1 = 0.01, K2 = 0.03, L = 255",
    "downsample": False,
    "precision": "float64",
    "contrast_term": "clamped at 0 (pyiqa applies relu to the contrast-structure map)",
    "filtering": "the Gaussian window applied as 1x11 and 11x1 passes (separable; equals pyiqa's 11x11 "
                 "conv within 1e-6 (pyiqa rounds its window to float32), about 5x faster)",
}
_PAPERS = "reported by SPIRE, XPSR (ablations) and DPIR"

register(MetricSpec(
    name="psnr", kind=FR, lower_better=False, backend="pyiqa", backend_name="psnr",
    description="PSNR on RGB (pyiqa 'psnr'): MSE over the three channels together.",
    convention={"color_space": "RGB", "y_formula": None, "data_range": 1.0, "inputs": _INPUTS,
                "rounding": "none", "crop_border": 0, "identical_images": _PSNR_ID, "papers": _PAPERS},
    input_rules="pred and ref the same size; RGB in [0, 1]", options=("crop_border",), score_range=(0.0, 80.0)))

register(MetricSpec(
    name="psnry", kind=FR, lower_better=False, backend="pyiqa", backend_name="psnry",
    description="PSNR on the luma of YIQ (pyiqa 'psnry'); 1.32 dB below psnr-ycbcr on every pair.",
    convention={"color_space": "YIQ luma", "y_formula": _YIQ, "y_range": "[0, 1], no offset", "data_range": 1.0,
                "inputs": _INPUTS, "rounding": "none (Y stays float)", "crop_border": 0,
                "identical_images": _PSNR_ID,
                "relation": "psnr-ycbcr = psnry + 20 log10(255 / 219) = psnry + 1.3225 dB (YCbCr Y = 16/255 + "
                            "219/255 * YIQ Y), up to the 80 dB cap"},
    input_rules="pred and ref the same size; RGB in [0, 1]", options=("crop_border",), score_range=(0.0, 80.0)))

register(MetricSpec(
    name="psnr-ycbcr", kind=FR, lower_better=False, backend="pyiqa", backend_name="psnry",
    backend_kwargs={"color_space": "ycbcr"},
    description="PSNR on the BT.601 YCbCr Y channel, as BasicSR calculate_psnr(test_y_channel=True) and most SR "
                "papers' 'PSNR on Y'.",
    convention={"color_space": "YCbCr Y (BT.601)", "y_formula": _YCBCR, "y_range": "[16/255, 235/255]",
                "data_range": 1.0, "inputs": _INPUTS,
                "rounding": "none (Y stays float, as BasicSR; MATLAB's rgb2ycbcr on uint8 rounds Y)",
                "crop_border": 0, "identical_images": _PSNR_ID,
                "implementation": "pyiqa psnr(test_y_channel=True, color_space='ycbcr')",
                "matches": "BasicSR basicsr.metrics.calculate_psnr(..., test_y_channel=True) on 8-bit images"},
    input_rules="pred and ref the same size; RGB in [0, 1]", options=("crop_border",), score_range=(0.0, 80.0)))

register(MetricSpec(
    name="ssim", kind=FR, lower_better=False, backend="pyiqa", backend_name="ssim",
    description="SSIM on the luma of YIQ, rounded to integers (pyiqa 'ssim').",
    convention={"color_space": "YIQ luma", "y_formula": _YIQ, "y_range": "[0, 255]", "data_range": 255,
                "inputs": _INPUTS, "rounding": "Y * 255 rounded to integers before SSIM", "crop_border": 0,
                **_SSIM_CORE, "papers": _PAPERS},
    input_rules="pred and ref the same size, at least 11x11 after the border crop", options=("crop_border",),
    min_side=11, score_range=(0.0, 1.0)))

register(MetricSpec(
    name="ssimc", kind=FR, lower_better=False, backend="pyiqa", backend_name="ssimc",
    description="SSIM on each RGB channel, averaged (pyiqa 'ssimc').",
    convention={"color_space": "RGB", "y_formula": None, "data_range": 255, "inputs": _INPUTS,
                "rounding": "RGB * 255 rounded to integers", "channels": "SSIM map averaged over R, G, B",
                "crop_border": 0, **_SSIM_CORE},
    input_rules="pred and ref the same size, at least 11x11 after the border crop", options=("crop_border",),
    min_side=11, score_range=(0.0, 1.0)))

register(MetricSpec(
    name="ssim-ycbcr", kind=FR, lower_better=False, backend="pirs", backend_name="ssim-ycbcr",
    description="SSIM on the BT.601 YCbCr Y channel in [16, 235], as BasicSR calculate_ssim(test_y_channel=True).",
    convention={"color_space": "YCbCr Y (BT.601)", "y_formula": _YCBCR, "y_range": "[16, 235]", "data_range": 255,
                "inputs": _INPUTS,
                "rounding": "none (Y stays float, as BasicSR; MATLAB's rgb2ycbcr on uint8 rounds Y, which moves "
                            "SSIM by about 1e-3, as pyiqa's ssim with color_space='ycbcr' does)",
                "crop_border": 0, **_SSIM_CORE,
                "implementation": "pyiqa's rgb2ycbcr and ssim formula, without the rounding step",
                "matches": "BasicSR basicsr.metrics.calculate_ssim(..., test_y_channel=True) on 8-bit images"},
    input_rules="pred and ref the same size, at least 11x11 after the border crop", options=("crop_border",),
    min_side=11, score_range=(0.0, 1.0)))

_LPIPS = {"version": "0.1", "inputs": "RGB scaled to [-1, 1], then LPIPS' ScalingLayer",
          "reduction": "spatial mean of each layer's weighted distance, summed over layers",
          "resize": "none (any size the backbone accepts)"}

register(MetricSpec(
    name="lpips", kind=FR, lower_better=True, backend="pyiqa", backend_name="lpips",
    description="LPIPS v0.1 with AlexNet features (pyiqa 'lpips'), the variant SPIRE, Diff-Restorer and DPIR report.",
    convention={"checkpoint": "LPIPS v0.1 alex linear layers + torchvision AlexNet IMAGENET1K_V1", **_LPIPS},
    input_rules="pred and ref the same size, at least 32x32", min_side=32,
    weights=("torch/hub/checkpoints/alexnet-owt-7be5be79.pth", "torch/hub/pyiqa/LPIPS_v0.1_alex-df73285e.pth"),
    score_range=(0.0, 1.0)))

register(MetricSpec(
    name="lpips-vgg", kind=FR, lower_better=True, backend="pyiqa", backend_name="lpips-vgg",
    description="LPIPS v0.1 with VGG16 features (pyiqa 'lpips-vgg').",
    convention={"checkpoint": "LPIPS v0.1 vgg linear layers + torchvision VGG16 IMAGENET1K_V1", **_LPIPS},
    input_rules="pred and ref the same size, at least 32x32", min_side=32,
    weights=("torch/hub/checkpoints/vgg16-397923af.pth", "torch/hub/pyiqa/LPIPS_v0.1_vgg-a78928a0.pth"),
    score_range=(0.0, 1.0)))

register(MetricSpec(
    name="dists", kind=FR, lower_better=True, backend="pyiqa", backend_name="dists",
    description="DISTS (pyiqa 'dists'), reported by Diff-Restorer and DPIR.",
    convention={"checkpoint": "DISTS alpha/beta weights + torchvision VGG16 IMAGENET1K_V1",
                "inputs": "RGB in [0, 1] normalized with ImageNet mean/std", "resize": "none"},
    input_rules="pred and ref the same size, at least 32x32", min_side=32,
    weights=("torch/hub/checkpoints/vgg16-397923af.pth", "torch/hub/pyiqa/DISTS_weights-f5e65c96.pth"),
    score_range=(0.0, 1.0)))

register(MetricSpec(
    name="fid", kind=SET, lower_better=True, backend="pirs", backend_name="fid",
    description="FID between the restored set and the ground-truth set of the same test set (clean-fid's 'clean' "
                "mode, pyiqa's Inception), as SPIRE and Diff-Restorer report it.",
    convention={"mode": "clean", "network": "InceptionV3 ported from TensorFlow FID (pt_inception-2015-12-05)",
                "features": "pool3, 2048-d", "resize": "each channel to 299x299 with PIL bicubic in float "
                "(clean-fid), after rounding the inputs to 8 bits; then (x - 128) / 128",
                "reference": "the ground-truth (HQ) images of the test set, features cached by test-set "
                             "fingerprint and image content",
                "statistics": "mean and unbiased covariance (np.cov)",
                "trace_sqrt": "exact: sum of singular values of A1 A2^T when the smaller set has at most 2048 "
                              "images, else scipy sqrtm as pyiqa's frechet_distance",
                "implementation": "pyiqa's InceptionV3 and frechet_distance on tensors (pyiqa's own FID reads "
                                  "folders)"},
    input_rules="any size; one value for the whole set (needs a reference set)",
    weights=("torch/hub/pyiqa/pt_inception-2015-12-05-6726825d.pth",), score_range=None))

register(MetricSpec(
    name="niqe", kind=NR, lower_better=True, backend="pyiqa", backend_name="niqe",
    description="NIQE (pyiqa 'niqe'), reported by Diff-Restorer.",
    convention={"version": "original (niqe_modelparameters.mat, as BasicSR)", "color_space": "YIQ luma",
                "y_formula": _YIQ, "rounding": "Y * 255 rounded", "blocks": "96x96; the image is cut to whole "
                "blocks", "crop_border": 0, "precision": "float64"},
    input_rules="at least 96x96; a few 96x96 blocks per side give a stable value", min_side=96,
    weights=("torch/hub/pyiqa/niqe_modelparameters.mat",), score_range=(0.0, 100.0)))

register(MetricSpec(
    name="musiq", kind=NR, lower_better=False, backend="pyiqa", backend_name="musiq",
    description="MUSIQ trained on KonIQ-10k (pyiqa 'musiq'), reported by SPIRE, XPSR, Diff-Restorer and DPIR.",
    convention={"checkpoint": "koniq10k", "scales": "native resolution + longer side 224 and 384",
                "inputs": "RGB scaled to [-1, 1]"},
    input_rules="any size; one size per batch",
    weights=("torch/hub/pyiqa/musiq_koniq_ckpt-e95806b9.pth",), score_range=(0.0, 100.0)))

register(MetricSpec(
    name="maniqa", kind=NR, lower_better=False, backend="pyiqa", backend_name="maniqa",
    description="MANIQA trained on KonIQ-10k (pyiqa 'maniqa'; 'maniqa-pipal' is the PIPAL one), reported by "
                "SPIRE and XPSR.",
    convention={"checkpoint": "koniq (ckpt_koniq10k.pt)",
                "crops": "20 uniformly placed 224x224 crops, their weighted patch scores pooled into one value; "
                         "a short side of 224 or less is bilinearly upscaled to 225 first",
                "backbone": "timm vit_base_patch8_224 built without ImageNet weights: the MANIQA checkpoint "
                            "overwrites all of them (strict load)"},
    input_rules="any size (upscaled below 224)",
    weights=("torch/hub/pyiqa/ckpt_koniq10k.pt",), score_range=(0.0, 1.0)))

register(MetricSpec(
    name="clipiqa", kind=NR, lower_better=False, backend="pyiqa", backend_name="clipiqa",
    description="CLIP-IQA (pyiqa 'clipiqa'), reported by SPIRE, XPSR, Diff-Restorer and DPIR.",
    convention={"checkpoint": "OpenAI CLIP RN50", "prompts": "pyiqa's ensemble of 5 antonym pairs (good/bad, "
                "sharp/blurry, sharp edges/blurry edges, high/low resolution, noise-free/noisy), softmax per pair, "
                "averaged; the CLIP-IQA paper used the single pair 'Good photo.'/'Bad photo.'",
                "positional_embedding": "not interpolated (pos_embedding=False), so any size is accepted",
                "inputs": "RGB normalized with CLIP mean/std, no resize"},
    input_rules="any size",
    weights=("torch/hub/clip/RN50.pt",), score_range=(0.0, 1.0)))

register(MetricSpec(
    name="liqe", kind=NR, lower_better=False, backend="pyiqa", backend_name="liqe",
    description="LIQE trained on KonIQ-10k (pyiqa 'liqe'), reported by XPSR.",
    convention={"checkpoint": "liqe_koniq.pt over OpenAI CLIP ViT-B/32",
                "patches": "15 of the 224x224 patches at stride 32 (every n//15-th in raster order), logits averaged",
                "text_features": "computed once and kept in the weights dir (torch/hub/pyiqa/liqe_text_feat.pt)"},
    input_rules="short side at least 224", min_side=224,
    weights=("torch/hub/clip/ViT-B-32.pt", "torch/hub/pyiqa/liqe_koniq.pt"), score_range=(1.0, 5.0)))

_CLIP_DEFAULT = "ViT-L/14"
_CLIP = {"clip_model": _CLIP_DEFAULT,
         "checkpoint_note": "SPIRE does not name the CLIP checkpoint of its CLIP-I / CLIP-T; ViT-L/14 (the text "
                            "encoder of Stable Diffusion 1.x) is pirs' default; set options['clip_model']",
         "preprocess": "the checkpoint's CLIPImageProcessor: shorter side to 224 (bicubic), centre crop 224, CLIP "
                       "mean/std; non-square images lose their borders",
         "embedding": "projected CLIP embedding (get_image_features / get_text_features), L2-normalized"}


def _clip_weights(text: bool) -> tuple[str, ...]:
    from .weights import clip_files

    return tuple(f.path for f in clip_files(_CLIP_DEFAULT, text=text))


register(MetricSpec(
    name="clip-i", kind=FR, lower_better=False, backend="clip", backend_name="clip-i",
    description="Cosine similarity of the CLIP image embeddings of the restored and the ground-truth image "
                "(SPIRE's CLIP-I).",
    convention={**_CLIP, "similarity": "cosine, not scaled or clipped (identical images give 1)",
                "reference": "the ground-truth image; its embeddings cached by test-set fingerprint"},
    input_rules="any size (centre square seen)", options=("clip_model",), weights=_clip_weights(text=False),
    score_range=(-1.0, 1.0)))

register(MetricSpec(
    name="clip-t", kind=TEXT, lower_better=False, backend="clip", backend_name="clip-t",
    description="Cosine similarity of the restored image's CLIP embedding and its caption's (SPIRE's CLIP-T).",
    convention={**_CLIP, "similarity": "cosine, not scaled by 100 or 2.5 and not clipped (unlike CLIPScore)",
                "text": "the caption given for the image, truncated to CLIP's 77 tokens; an empty caption is an "
                        "error"},
    input_rules="any size (centre square seen); needs a non-empty caption per image", options=("clip_model",),
    weights=_clip_weights(text=True), score_range=(-1.0, 1.0)))
