"""The metric registry: every metric is one row of data (lm-eval / pyiqa style).

Each :class:`MetricSpec` states the metric's name, direction, kind (full-reference,
no-reference, set-level distribution, text-conditioned), role (pixel fidelity, perceptual
quality or semantic agreement), the convention it computes (colour space, Y formula and
range, border crop, data range, checkpoint variant, FID mode and resize), input size rules,
the weight files it needs (relative to the weights directory), and the reference
implementation it equals with the tolerance the calibration test asserts
(``tests/test_bench_calibration.py``, values from ``benchmarks/calibrate_metrics.py``).
Where pyiqa has a metric, the name and meaning are pyiqa's; any other pyiqa metric can be
asked for as ``pyiqa:NAME`` (:func:`pyiqa_spec`), its direction and kind read from pyiqa's
own table.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

FR, NR, SET, TEXT = "full-reference", "no-reference", "distribution", "text"
FIDELITY, PERCEPTUAL, SEMANTIC = "fidelity", "perceptual", "semantic"
PYIQA_PREFIX = "pyiqa:"


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
    # pixel fidelity to the ground truth (PSNR, SSIM), perceptual quality (LPIPS, FID, NIQE, MUSIQ...)
    # or semantic agreement (CLIP): the perception-distortion plot puts a fidelity metric against a
    # perceptual one, never two perceptual ones
    role: str = PERCEPTUAL
    reference: str = ""  # the implementation this metric equals (a library call with its version)
    tolerance: float | None = None  # largest absolute difference to ``reference`` the calibration test allows

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
    """The metric called ``name`` (case-insensitive), with a "did you mean" on a typo.

    ``pyiqa:NAME`` is any metric of pyiqa's own table, by pyiqa's name (:func:`pyiqa_spec`).
    """
    key = name.strip().lower()
    if key in REGISTRY:
        return REGISTRY[key]
    if key.startswith(PYIQA_PREFIX):
        return pyiqa_spec(name.strip()[len(PYIQA_PREFIX):])
    close = difflib.get_close_matches(key, list(REGISTRY), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise KeyError(f"unknown metric {name!r}.{hint} Known metrics: {', '.join(sorted(REGISTRY))}; any pyiqa metric "
                   f"as pyiqa:NAME (e.g. pyiqa:nima)")


# pyiqa metrics that are not a score per image: they read whole folders or need a caption
_PYIQA_REFUSED = {
    "fid": "it compares two folders; use pirs' fid (or kid), which scores the test set's pairs",
    "fid_dinov2": "it compares two folders; pirs has fid and kid on Inception features",
    "sfid": "it compares two folders; pirs has fid and kid on Inception features",
    "inception_score": "it scores a whole folder at once, not an image",
    "clipscore": "it needs a caption per image; use clip-t",
}
# pyiqa's classic full-reference signal measures: pixel fidelity, like PSNR and SSIM
_PYIQA_FIDELITY = {"psnr", "psnry", "ssim", "ssimc", "ms_ssim", "cw_ssim", "fsim", "gmsd", "vif", "vsi", "mad",
                   "nlpd"}
_PYIQA_SPECS: dict[str, MetricSpec] = {}


def pyiqa_configs() -> dict[str, dict]:
    """pyiqa's own metric table (``pyiqa/default_model_configs.py``), read without importing pyiqa (or torch)."""
    if not hasattr(pyiqa_configs, "_cache"):
        import importlib.util
        from pathlib import Path

        found = importlib.util.find_spec("pyiqa")
        if found is None or not found.submodule_search_locations:
            raise KeyError("pyiqa is not installed: pyiqa:NAME metrics need it")
        path = Path(list(found.submodule_search_locations)[0]) / "default_model_configs.py"
        spec = importlib.util.spec_from_file_location("_pirs_pyiqa_default_model_configs", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        pyiqa_configs._cache = dict(module.DEFAULT_CONFIGS)
    return pyiqa_configs._cache


def _pyiqa_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pyiqa")
    except PackageNotFoundError:
        return "?"


def pyiqa_spec(name: str) -> MetricSpec:
    """The spec of pyiqa's metric ``name`` (``pyiqa:NAME``): kind and direction from pyiqa's table, pyiqa's
    default options as the convention; its weight files are named when pyiqa asks for them (offline, the
    error names the file, where it goes and its URL)."""
    configs = pyiqa_configs()
    by_lower = {k.lower(): k for k in configs}
    real = by_lower.get(name.strip().lower())
    if real is None:
        close = difflib.get_close_matches(name.strip().lower(), list(by_lower), n=1)
        hint = f" Did you mean 'pyiqa:{by_lower[close[0]]}'?" if close else ""
        raise KeyError(f"unknown pyiqa metric {name!r}.{hint} pyiqa's metrics: {', '.join(sorted(configs))}")
    if real in _PYIQA_REFUSED:
        raise KeyError(f"pyiqa:{real} cannot be scored per image: {_PYIQA_REFUSED[real]}")
    if real in _PYIQA_SPECS:
        return _PYIQA_SPECS[real]
    cfg = configs[real]
    kind = FR if cfg.get("metric_mode") == "FR" else NR
    rng = str(cfg.get("score_range", ""))
    opts = {k: v for k, v in cfg.get("metric_opts", {}).items()}
    spec = MetricSpec(
        name=f"{PYIQA_PREFIX}{real}", kind=kind, lower_better=bool(cfg.get("lower_better", False)),
        description=f"pyiqa's '{real}' with pyiqa's default options ({opts.get('type', '?')})",
        backend="pyiqa", backend_name=real,
        convention={"implementation": f"pyiqa {_pyiqa_version()} create_metric({real!r})", "metric_opts": opts,
                    "score_range": rng or None, "metric_mode": cfg.get("metric_mode"),
                    "inputs": "RGB in [0, 1], the decoded 8-bit images / 255; pyiqa resizes or crops as its "
                              "metric does"},
        input_rules=("pred and ref the same size (pyiqa metric_mode FR); RGB in [0, 1]" if kind == FR
                     else "any size pyiqa's metric accepts; RGB in [0, 1]"),
        role=FIDELITY if real in _PYIQA_FIDELITY else PERCEPTUAL,
        reference=f"pyiqa {_pyiqa_version()} create_metric({real!r})")
    _PYIQA_SPECS[real] = spec
    return spec


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
_PYIQA = "pyiqa 0.1.16"
_BASICSR = "BasicSR 1.4.2"
# BasicSR's conventions (benchmark/basicsr_metrics.py): Y from the 8-bit values in float32, as its to_y_channel
_BASICSR_Y = ("Y = (16 + 65.481 R + 128.553 G + 24.966 B) / 255 formed in float64 from R, G, B = v / 255 in "
              "float32, rounded to float32, times 255 in float32 (BasicSR's to_y_channel, bit for bit)")

register(MetricSpec(
    name="psnr", kind=FR, lower_better=False, backend="pyiqa", backend_name="psnr",
    description="PSNR on RGB (pyiqa 'psnr'): MSE over the three channels together.",
    convention={"color_space": "RGB", "y_formula": None, "data_range": 1.0, "inputs": _INPUTS,
                "rounding": "none", "precision": "float32, MSE + 1e-8 (a batch and single images differ by up "
                "to 4e-6 dB in pyiqa itself)", "crop_border": 0,
                "identical_images": _PSNR_ID, "papers": _PAPERS},
    input_rules="pred and ref the same size; RGB in [0, 1]", options=("crop_border",), score_range=(0.0, 80.0),
    role=FIDELITY, reference=f"{_PYIQA} create_metric('psnr', crop_border=N)", tolerance=1e-5))

register(MetricSpec(
    name="psnry", kind=FR, lower_better=False, backend="pyiqa", backend_name="psnry",
    description="PSNR on the luma of YIQ (pyiqa 'psnry'); about 1.32 dB below psnr-ycbcr (see relation).",
    convention={"color_space": "YIQ luma", "y_formula": _YIQ, "y_range": "[0, 1], no offset", "data_range": 1.0,
                "inputs": _INPUTS, "rounding": "none (Y stays float)", "crop_border": 0,
                "precision": "float32, MSE + 1e-8", "identical_images": _PSNR_ID,
                "relation": "in exact arithmetic psnr-ycbcr = psnry + 20 log10(255 / 219) = psnry + 1.3219 dB "
                            "(YCbCr Y = 16/255 + 219/255 * YIQ Y); psnry's float32 and eps move it by up to "
                            "0.003 dB on the calibration pairs (benchmarks/calibrate_metrics.py), more near "
                            "the 80 dB cap"},
    input_rules="pred and ref the same size; RGB in [0, 1]", options=("crop_border",), score_range=(0.0, 80.0),
    role=FIDELITY, reference=f"{_PYIQA} create_metric('psnry', crop_border=N)", tolerance=1e-5))

register(MetricSpec(
    name="psnr-ycbcr", kind=FR, lower_better=False, backend="pirs", backend_name="psnr-ycbcr",
    description="PSNR on the BT.601 YCbCr Y channel, BasicSR's calculate_psnr(test_y_channel=True), most SR "
                "papers' 'PSNR on Y'.",
    convention={"color_space": "YCbCr Y (BT.601)", "y_formula": _YCBCR, "y_computation": _BASICSR_Y,
                "y_range": "[16, 235]", "data_range": 255, "inputs": _INPUTS,
                "rounding": "none (Y stays float, as BasicSR; MATLAB's rgb2ycbcr on uint8 rounds Y)",
                "precision": "float64 MSE, no eps", "crop_border": 0,
                "identical_images": "inf, as BasicSR (no eps under the MSE; a mean over images with one "
                                    "identical pair is inf)",
                "implementation": "pirs (benchmark/basicsr_metrics.py: psnr_y)",
                "matches": "BasicSR basicsr.metrics.calculate_psnr(img, img2, crop_border, test_y_channel=True) on "
                           "8-bit BGR images"},
    input_rules="pred and ref the same size; RGB in [0, 1] as decoded from 8 bits", options=("crop_border",),
    score_range=None, role=FIDELITY,
    reference=f"{_BASICSR} basicsr.metrics.calculate_psnr(img, img2, crop_border=N, test_y_channel=True)",
    tolerance=1e-6))

register(MetricSpec(
    name="psnr-rgb", kind=FR, lower_better=False, backend="pirs", backend_name="psnr-rgb",
    description="PSNR on RGB as BasicSR's calculate_psnr(test_y_channel=False): float64, no eps (pyiqa's psnr "
                "differs by up to 0.0012 dB on the calibration pairs).",
    convention={"color_space": "RGB", "y_formula": None, "data_range": 255, "inputs": "the 8-bit values",
                "rounding": "none", "precision": "float64 MSE over the three channels, no eps", "crop_border": 0,
                "identical_images": "inf, as BasicSR (no eps under the MSE)",
                "implementation": "pirs (benchmark/basicsr_metrics.py: psnr_rgb)",
                "matches": "BasicSR basicsr.metrics.calculate_psnr(img, img2, crop_border) on 8-bit images"},
    input_rules="pred and ref the same size; RGB in [0, 1] as decoded from 8 bits", options=("crop_border",),
    score_range=None, role=FIDELITY,
    reference=f"{_BASICSR} basicsr.metrics.calculate_psnr(img, img2, crop_border=N)", tolerance=1e-6))

register(MetricSpec(
    name="ssim", kind=FR, lower_better=False, backend="pyiqa", backend_name="ssim",
    description="SSIM on the luma of YIQ, rounded to integers (pyiqa 'ssim').",
    convention={"color_space": "YIQ luma", "y_formula": _YIQ, "y_range": "[0, 255]", "data_range": 255,
                "inputs": _INPUTS, "rounding": "Y * 255 rounded to integers before SSIM", "crop_border": 0,
                **_SSIM_CORE, "papers": _PAPERS},
    input_rules="pred and ref the same size, at least 11x11 after the border crop", options=("crop_border",),
    min_side=11, score_range=(0.0, 1.0), role=FIDELITY,
    reference=f"{_PYIQA} create_metric('ssim', crop_border=N)", tolerance=1e-6))

register(MetricSpec(
    name="ssimc", kind=FR, lower_better=False, backend="pyiqa", backend_name="ssimc",
    description="SSIM on each RGB channel, averaged (pyiqa 'ssimc').",
    convention={"color_space": "RGB", "y_formula": None, "data_range": 255, "inputs": _INPUTS,
                "rounding": "RGB * 255 rounded to integers", "channels": "SSIM map averaged over R, G, B",
                "crop_border": 0, **_SSIM_CORE},
    input_rules="pred and ref the same size, at least 11x11 after the border crop", options=("crop_border",),
    min_side=11, score_range=(0.0, 1.0), role=FIDELITY,
    reference=f"{_PYIQA} create_metric('ssimc', crop_border=N)", tolerance=1e-6))

register(MetricSpec(
    name="ssim-rgb", kind=FR, lower_better=False, backend="pirs", backend_name="ssim-rgb",
    description="SSIM of each RGB channel, averaged, as BasicSR's calculate_ssim(test_y_channel=False): the "
                "contrast-structure term not clamped (pyiqa's ssimc differs by up to 0.013 on the calibration "
                "pairs).",
    convention={"color_space": "RGB", "y_formula": None, "data_range": 255, "inputs": "the 8-bit values",
                "rounding": "none", "channels": "SSIM map of each channel, the three means averaged",
                "crop_border": 0, **_SSIM_CORE,
                "contrast_term": "not clamped (BasicSR)",
                "implementation": "pirs (benchmark/basicsr_metrics.py: ssim_rgb)",
                "matches": "BasicSR basicsr.metrics.calculate_ssim(img, img2, crop_border) on 8-bit images"},
    input_rules="pred and ref the same size, at least 11x11 after the border crop", options=("crop_border",),
    min_side=11, score_range=(-1.0, 1.0), role=FIDELITY,
    reference=f"{_BASICSR} basicsr.metrics.calculate_ssim(img, img2, crop_border=N)", tolerance=1e-7))

register(MetricSpec(
    name="ssim-ycbcr", kind=FR, lower_better=False, backend="pirs", backend_name="ssim-ycbcr",
    description="SSIM on the BT.601 YCbCr Y channel in [16, 235], BasicSR's calculate_ssim(test_y_channel=True).",
    convention={"color_space": "YCbCr Y (BT.601)", "y_formula": _YCBCR, "y_computation": _BASICSR_Y,
                "y_range": "[16, 235]", "data_range": 255, "inputs": _INPUTS,
                "rounding": "none (Y stays float, as BasicSR; MATLAB's rgb2ycbcr on uint8 rounds Y, which moves "
                            "SSIM by about 1e-3, as pyiqa's ssim with color_space='ycbcr' does)",
                "crop_border": 0, **_SSIM_CORE,
                "contrast_term": "not clamped (BasicSR; pyiqa's relu raises SSIM where local structure is "
                                 "anti-correlated: by up to 0.005 on the calibration pairs, a bicubic-aliased zone "
                                 "plate)",
                "implementation": "pirs (benchmark/basicsr_metrics.py: ssim_y)",
                "matches": "BasicSR basicsr.metrics.calculate_ssim(img, img2, crop_border, test_y_channel=True) on "
                           "8-bit BGR images"},
    input_rules="pred and ref the same size, at least 11x11 after the border crop", options=("crop_border",),
    min_side=11, score_range=(-1.0, 1.0), role=FIDELITY,
    reference=f"{_BASICSR} basicsr.metrics.calculate_ssim(img, img2, crop_border=N, test_y_channel=True)",
    tolerance=1e-7))

_LPIPS = {"version": "0.1", "inputs": "RGB scaled to [-1, 1], then LPIPS' ScalingLayer",
          "reduction": "spatial mean of each layer's weighted distance, summed over layers",
          "resize": "none (any size the backbone accepts)"}

register(MetricSpec(
    name="lpips", kind=FR, lower_better=True, backend="pyiqa", backend_name="lpips",
    description="LPIPS v0.1 with AlexNet features (pyiqa 'lpips'), the variant SPIRE, Diff-Restorer and DPIR report.",
    convention={"checkpoint": "LPIPS v0.1 alex linear layers + torchvision AlexNet IMAGENET1K_V1", **_LPIPS},
    input_rules="pred and ref the same size, at least 32x32", min_side=32,
    weights=("torch/hub/checkpoints/alexnet-owt-7be5be79.pth", "torch/hub/pyiqa/LPIPS_v0.1_alex-df73285e.pth"),
    score_range=(0.0, 1.0), reference=f"{_PYIQA} create_metric('lpips')", tolerance=1e-6))

register(MetricSpec(
    name="lpips-vgg", kind=FR, lower_better=True, backend="pyiqa", backend_name="lpips-vgg",
    description="LPIPS v0.1 with VGG16 features (pyiqa 'lpips-vgg').",
    convention={"checkpoint": "LPIPS v0.1 vgg linear layers + torchvision VGG16 IMAGENET1K_V1", **_LPIPS},
    input_rules="pred and ref the same size, at least 32x32", min_side=32,
    weights=("torch/hub/checkpoints/vgg16-397923af.pth", "torch/hub/pyiqa/LPIPS_v0.1_vgg-a78928a0.pth"),
    score_range=(0.0, 1.0), reference=f"{_PYIQA} create_metric('lpips-vgg')", tolerance=1e-6))

register(MetricSpec(
    name="dists", kind=FR, lower_better=True, backend="pyiqa", backend_name="dists",
    description="DISTS (pyiqa 'dists'), reported by Diff-Restorer and DPIR.",
    convention={"checkpoint": "DISTS alpha/beta weights + torchvision VGG16 IMAGENET1K_V1",
                "inputs": "RGB in [0, 1] normalized with ImageNet mean/std", "resize": "none"},
    input_rules="pred and ref the same size, at least 32x32", min_side=32,
    weights=("torch/hub/checkpoints/vgg16-397923af.pth", "torch/hub/pyiqa/DISTS_weights-f5e65c96.pth"),
    score_range=(0.0, 1.0), reference=f"{_PYIQA} create_metric('dists')", tolerance=1e-6))

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
    weights=("torch/hub/pyiqa/pt_inception-2015-12-05-6726825d.pth",), score_range=None,
    reference=f"{_PYIQA} fid_arch: get_folder_features(mode='clean') and frechet_distance on the same 8-bit images",
    tolerance=None))

register(MetricSpec(
    name="kid", kind=SET, lower_better=True, backend="pirs", backend_name="kid",
    description="Kernel Inception Distance between the restored set and the ground-truth set (Binkowski et al. "
                "2018): unbiased MMD^2 with the cubic polynomial kernel on the same Inception features as fid.",
    convention={"mode": "clean", "network": "InceptionV3 ported from TensorFlow FID (pt_inception-2015-12-05)",
                "features": "pool3, 2048-d, as fid (the two share the features and the reference cache)",
                "kernel": "k(x, y) = (x . y / 2048 + 1)^3",
                "estimator": "unbiased MMD^2 averaged over 100 subsets of min(1000, n) images drawn without "
                             "replacement from each set (clean-fid's and torch-fidelity's defaults)",
                "seed": "subsets drawn with numpy's default_rng(0); with at most 1000 images per set every subset "
                        "is the whole set and the seed does not matter",
                "scale": "raw MMD^2 (papers often print KID x 1000)",
                "reference": "the ground-truth (HQ) images of the test set"},
    input_rules="any size; one value for the whole set (needs a reference set)",
    weights=("torch/hub/pyiqa/pt_inception-2015-12-05-6726825d.pth",), score_range=None,
    reference="clean-fid kernel_distance / torch-fidelity KID formula (not installed here: checked against the "
              "closed form on small sets in tests/test_bench_metrics.py)", tolerance=None))

register(MetricSpec(
    name="niqe", kind=NR, lower_better=True, backend="pyiqa", backend_name="niqe",
    description="NIQE on the YIQ luma (pyiqa 'niqe'), reported by Diff-Restorer; niqe-ycbcr is BasicSR's NIQE "
                "on YCbCr Y.",
    convention={"version": "original (niqe_modelparameters.mat, as BasicSR)", "color_space": "YIQ luma",
                "y_formula": _YIQ, "rounding": "Y * 255 rounded", "blocks": "96x96; the image is cut to whole "
                "blocks", "crop_border": 0, "precision": "float64"},
    input_rules="at least 96x96 after the border crop; a few 96x96 blocks per side give a stable value",
    min_side=96, options=("crop_border",),
    weights=("torch/hub/pyiqa/niqe_modelparameters.mat",), score_range=(0.0, 100.0),
    reference=f"{_PYIQA} create_metric('niqe', crop_border=N)", tolerance=1e-9))

register(MetricSpec(
    name="niqe-ycbcr", kind=NR, lower_better=True, backend="pirs", backend_name="niqe-ycbcr",
    description="NIQE on the BT.601 YCbCr Y channel, BasicSR's calculate_niqe(convert_to='y'), as SR papers "
                "using BasicSR report it.",
    convention={"version": "original (niqe_modelparameters.mat)", "color_space": "YCbCr Y (BT.601)",
                "y_formula": _YCBCR, "y_computation": _BASICSR_Y, "rounding": "Y rounded to integers (half to "
                "even) after the border crop", "blocks": "96x96 without overlap; the image is cut to whole blocks",
                "crop_border": 0, "normalisation": "7x7 Gaussian (sigma 7/6), edges replicated, (Y - mu) / "
                "(sigma + 1)", "half_scale": "MATLAB imresize 0.5, bicubic, antialiased",
                "precision": "float32 image and block features (as BasicSR), float64 distance",
                "implementation": "pirs (benchmark/basicsr_metrics.py: niqe_y)",
                "matches": "BasicSR basicsr.metrics.calculate_niqe(img, crop_border, convert_to='y') on 8-bit BGR "
                           "images, its niqe_pris_params.npz holding the same parameters as the .mat"},
    input_rules="at least 96x96 after the border crop", min_side=96, options=("crop_border",),
    weights=("torch/hub/pyiqa/niqe_modelparameters.mat",), score_range=(0.0, 100.0),
    reference=f"{_BASICSR} basicsr.metrics.calculate_niqe(img, crop_border=N, convert_to='y')", tolerance=1e-6))

register(MetricSpec(
    name="musiq", kind=NR, lower_better=False, backend="pyiqa", backend_name="musiq",
    description="MUSIQ trained on KonIQ-10k (pyiqa 'musiq'), reported by SPIRE, XPSR, Diff-Restorer and DPIR.",
    convention={"checkpoint": "koniq10k", "scales": "native resolution + longer side 224 and 384",
                "inputs": "RGB scaled to [-1, 1]"},
    input_rules="any size; one size per batch",
    weights=("torch/hub/pyiqa/musiq_koniq_ckpt-e95806b9.pth",), score_range=(0.0, 100.0),
    reference=f"{_PYIQA} create_metric('musiq')", tolerance=1e-4))

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
    weights=("torch/hub/pyiqa/ckpt_koniq10k.pt",), score_range=(0.0, 1.0),
    reference=f"{_PYIQA} create_metric('maniqa')"))

register(MetricSpec(
    name="clipiqa", kind=NR, lower_better=False, backend="pyiqa", backend_name="clipiqa",
    description="CLIP-IQA (pyiqa 'clipiqa'), reported by SPIRE, XPSR, Diff-Restorer and DPIR.",
    convention={"checkpoint": "OpenAI CLIP RN50", "prompts": "pyiqa's ensemble of 5 antonym pairs (good/bad, "
                "sharp/blurry, sharp edges/blurry edges, high/low resolution, noise-free/noisy), softmax per pair, "
                "averaged; the CLIP-IQA paper used the single pair 'Good photo.'/'Bad photo.'",
                "positional_embedding": "not interpolated (pos_embedding=False), so any size is accepted",
                "inputs": "RGB normalized with CLIP mean/std, no resize"},
    input_rules="any size",
    weights=("torch/hub/clip/RN50.pt",), score_range=(0.0, 1.0), reference=f"{_PYIQA} create_metric('clipiqa')"))

register(MetricSpec(
    name="liqe", kind=NR, lower_better=False, backend="pyiqa", backend_name="liqe",
    description="LIQE trained on KonIQ-10k (pyiqa 'liqe'), reported by XPSR.",
    convention={"checkpoint": "liqe_koniq.pt over OpenAI CLIP ViT-B/32",
                "patches": "15 of the 224x224 patches at stride 32 (every n//15-th in raster order), logits averaged",
                "text_features": "computed once and kept in the weights dir (torch/hub/pyiqa/liqe_text_feat.pt)"},
    input_rules="short side at least 224", min_side=224,
    weights=("torch/hub/clip/ViT-B-32.pt", "torch/hub/pyiqa/liqe_koniq.pt"), score_range=(1.0, 5.0),
    reference=f"{_PYIQA} create_metric('liqe')"))

_TOPIQ = {"backbone": "timm resnet50 built without ImageNet weights: the CFANet checkpoint overwrites all of "
                      "them (strict load)",
          "inputs": "RGB normalised with ImageNet mean/std, no resize, one crop (num_crop=1)",
          "output": "the predicted MOS mapped to about [0, 1] (pyiqa's dist_to_mos)"}

register(MetricSpec(
    name="topiq_fr", kind=FR, lower_better=False, backend="pyiqa", backend_name="topiq_fr",
    description="TOPIQ full-reference, trained on KADID-10k (pyiqa 'topiq_fr').",
    convention={"checkpoint": "cfanet_fr_kadid_res50 (KADID-10k)", **_TOPIQ},
    input_rules="pred and ref the same size, at least 32x32", min_side=32,
    weights=("torch/hub/pyiqa/cfanet_fr_kadid_res50-2c4cc61d.pth",), score_range=(0.0, 1.0),
    reference=f"{_PYIQA} create_metric('topiq_fr')"))

register(MetricSpec(
    name="topiq_nr", kind=NR, lower_better=False, backend="pyiqa", backend_name="topiq_nr",
    description="TOPIQ no-reference, trained on KonIQ-10k (pyiqa 'topiq_nr').",
    convention={"checkpoint": "cfanet_nr_koniq_res50 (KonIQ-10k)", **_TOPIQ},
    input_rules="any size, at least 32x32", min_side=32,
    weights=("torch/hub/pyiqa/cfanet_nr_koniq_res50-9a73138b.pth",), score_range=(0.0, 1.0),
    reference=f"{_PYIQA} create_metric('topiq_nr')"))

register(MetricSpec(
    name="clipiqa+", kind=NR, lower_better=False, backend="pyiqa", backend_name="clipiqa+",
    description="CLIP-IQA+ (pyiqa 'clipiqa+'): CLIP-IQA with the learned prompt context of the CLIP-IQA paper.",
    convention={"checkpoint": "OpenAI CLIP RN50 + CLIP-IQA+ learned prompts (KonIQ-10k)",
                "prompts": "16 learned context tokens for the good/bad pair",
                "positional_embedding": "not interpolated (pos_embedding=False), so any size is accepted",
                "inputs": "RGB normalized with CLIP mean/std, no resize"},
    input_rules="any size",
    weights=("torch/hub/clip/RN50.pt", "torch/hub/pyiqa/CLIP-IQA%2B_learned_prompts-603f3273.pth"),
    score_range=(0.0, 1.0), reference=f"{_PYIQA} create_metric('clipiqa+')"))

register(MetricSpec(
    name="brisque", kind=NR, lower_better=True, backend="pyiqa", backend_name="brisque",
    description="BRISQUE (pyiqa 'brisque'), the LIVE SVR model.",
    convention={"version": "original (piq's SVR weights, brisque_svm_weights.pth)", "color_space": "YIQ luma",
                "y_formula": _YIQ, "rounding": "Y * 255 rounded", "scales": "full and half size (bicubic "
                "antialiased)", "precision": "float64"},
    input_rules="any size, at least 7x7", min_side=7,
    weights=("torch/hub/pyiqa/brisque_svm_weights.pth",), score_range=None,
    reference=f"{_PYIQA} create_metric('brisque')"))

register(MetricSpec(
    name="pi", kind=NR, lower_better=True, backend="pyiqa", backend_name="pi",
    description="Perceptual Index of the PIRM 2018 challenge (pyiqa 'pi'): ((10 - NRQM) + NIQE) / 2.",
    convention={"formula": "((10 - NRQM) + NIQE) / 2", "color_space": "YCbCr Y (BT.601; pyiqa's pi default, as "
                "PIRM's Matlab code)", "crop_border": "4 px, fixed (pyiqa's default, PIRM's shave width for x4); "
                "--crop-border does not change it", "niqe": "original parameters", "nrqm": "Ma et al.'s model "
                "(NRQM_model.mat)"},
    input_rules="at least 96x96 after its 4 px border crop", min_side=104,
    weights=("torch/hub/pyiqa/NRQM_model.mat", "torch/hub/pyiqa/niqe_modelparameters.mat"), score_range=None,
    reference=f"{_PYIQA} create_metric('pi')"))

register(MetricSpec(
    name="ms-ssim", kind=FR, lower_better=False, backend="pyiqa", backend_name="ms_ssim",
    description="Multi-scale SSIM (pyiqa 'ms_ssim'): five scales, weights 0.0448, 0.2856, 0.3001, 0.2363, "
                "0.1333, product form.",
    convention={"color_space": "YIQ luma", "y_formula": _YIQ, "y_range": "[0, 255]", "data_range": 255,
                "inputs": _INPUTS, "rounding": "Y * 255 rounded to integers", "scales": 5,
                "downscale": "2x2 average pooling (odd sides padded) between scales", "downsample": False,
                "window": "11x11 Gaussian, sigma 1.5, 'valid', at every scale", "product": True,
                "contrast_term": "clamped at 0 (pyiqa)", "precision": "float64"},
    input_rules="pred and ref the same size, at least 161x161 (11 px at the fifth scale)", min_side=161,
    score_range=(0.0, 1.0), role=FIDELITY, reference=f"{_PYIQA} create_metric('ms_ssim')", tolerance=1e-9))

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
    score_range=(-1.0, 1.0), role=SEMANTIC, reference="transformers CLIPModel.get_image_features"))

register(MetricSpec(
    name="clip-t", kind=TEXT, lower_better=False, backend="clip", backend_name="clip-t",
    description="Cosine similarity of the restored image's CLIP embedding and its caption's (SPIRE's CLIP-T).",
    convention={**_CLIP, "similarity": "cosine, not scaled by 100 or 2.5 and not clipped (unlike CLIPScore)",
                "text": "the caption given for the image, truncated to CLIP's 77 tokens; an empty caption is an "
                        "error"},
    input_rules="any size (centre square seen); needs a non-empty caption per image", options=("clip_model",),
    weights=_clip_weights(text=True), score_range=(-1.0, 1.0), role=SEMANTIC,
    reference="transformers CLIPModel.get_image_features / get_text_features"))
