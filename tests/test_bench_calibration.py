"""Calibration is a test: pirs' PSNR / SSIM / NIQE against BasicSR's stored values and pyiqa's live ones.

The pairs come from ``tests/calibration_pairs.py`` (checked by hash against the fixture), the
BasicSR values and NIQE's model parameters from ``tests/fixtures/calibration/basicsr.json``
(``benchmarks/calibrate_metrics.py --write``). Every bound asserted is the registry's own
``tolerance`` for the metric: the registry's claims are what this test holds pirs to.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from calibration_pairs import BORDERS, digest, pairs
from pirs.benchmark import registry
from pirs.benchmark.scorers import build_scorers

FIXTURE = Path(__file__).parent / "fixtures" / "calibration" / "basicsr.json"


@pytest.fixture(scope="module")
def calibration() -> dict:
    return json.loads(FIXTURE.read_text())


@pytest.fixture(scope="module")
def all_pairs(calibration):
    made = pairs()
    for name, pred, gt in made:  # the images are the ones BasicSR scored, bit for bit
        assert calibration["digests"][name] == {"pred": digest(pred), "gt": digest(gt)}, (
            f"calibration pair {name} differs from the one BasicSR scored (OpenCV or numpy changed its output?): "
            "rerun benchmarks/calibrate_metrics.py --write with BasicSR installed")
    return made


@pytest.fixture(scope="module")
def niqe_weights(calibration, tmp_path_factory) -> Path:
    """A weights dir whose niqe_modelparameters.mat holds the parameters BasicSR ships (niqe_pris_params.npz)."""
    from scipy.io import savemat

    root = tmp_path_factory.mktemp("niqe-weights")
    path = root / "torch/hub/pyiqa/niqe_modelparameters.mat"
    path.parent.mkdir(parents=True)
    prior = calibration["niqe_prior"]
    savemat(path, {"mu_prisparam": np.asarray(prior["mu"])[None, :], "cov_prisparam": np.asarray(prior["cov"])})
    return root


def batch(images: list[np.ndarray]) -> torch.Tensor:
    return torch.stack([torch.from_numpy(i).permute(2, 0, 1) for i in images]).float().div_(255.0)


def ours(names: list[str], all_pairs, border: int, weights: Path | None = None) -> dict[str, list[float]]:
    preds, gts = batch([p for _, p, _ in all_pairs]), batch([g for _, _, g in all_pairs])
    out = {}
    scorers = build_scorers(names, weights_dir=str(weights or "/nonexistent"), options={"crop_border": border})
    for name, scorer in zip(names, scorers, strict=True):
        ref = gts if registry.get(name).kind == registry.FR else None
        out[name] = scorer.score(preds, ref).tolist()
    return out


SOME = {"zoneplate-bicubic", "textured-jpeg", "smooth-blur", "textured-noise"}
BASICSR = {"psnr-ycbcr": "psnr_y", "ssim-ycbcr": "ssim_y", "niqe-ycbcr": "niqe_y", "psnr-rgb": "psnr_rgb",
           "ssim-rgb": "ssim_rgb"}


@pytest.mark.parametrize("border", BORDERS)
def test_basicsr_conventions_equal_basicsr(calibration, all_pairs, niqe_weights, border):
    got = ours(list(BASICSR), all_pairs, border, niqe_weights)
    for name, key in BASICSR.items():
        tol = registry.get(name).tolerance
        assert tol is not None and tol <= 1e-6
        for i, (pname, _, _) in enumerate(all_pairs):
            want = calibration["values"][f"{pname}@{border}"][key]
            assert abs(got[name][i] - want) <= tol, (name, pname, border, got[name][i], want)


@pytest.mark.parametrize("border", BORDERS)
def test_pyiqa_named_metrics_equal_pyiqa_one_image_at_a_time(all_pairs, niqe_weights, border):
    import pyiqa

    from pirs.benchmark.weights import offline

    names = {"psnr": "psnr", "psnry": "psnry", "ssim": "ssim", "ssimc": "ssimc", "niqe": "niqe"}
    got = ours(list(names), all_pairs, border, niqe_weights)
    # pyiqa's SSIM (a float64 11x11 convolution) and NIQE take seconds per image: one pair of each degradation
    # for them, the zone plate's bicubic pair among them (tests/test_bench_metrics.py checks SSIM on other images)
    for name, theirs in names.items():
        with offline(niqe_weights):
            metric = pyiqa.create_metric(theirs, device="cpu", crop_border=border)
        for i, (pname, pred, gt) in enumerate(all_pairs):
            if name in ("ssim", "ssimc", "niqe") and pname not in SOME:
                continue
            x, y = batch([pred]), batch([gt])
            want = float(metric(x, y) if metric.metric_mode == "FR" else metric(x))
            assert abs(got[name][i] - want) <= registry.get(name).tolerance, (name, pname, border, got[name][i], want)


def test_ms_ssim_equals_pyiqa(all_pairs):
    import pyiqa

    got = ours(["ms-ssim"], all_pairs, 0)["ms-ssim"]
    metric = pyiqa.create_metric("ms_ssim", device="cpu")
    for i, (pname, pred, gt) in enumerate(all_pairs):
        if pname not in SOME:
            continue
        assert abs(got[i] - float(metric(batch([pred]), batch([gt])))) <= registry.get("ms-ssim").tolerance


def test_the_differences_the_registry_and_readme_state(calibration, all_pairs, niqe_weights):
    """pyiqa's clamp moves SSIM on these pairs; psnr-ycbcr - psnry is 1.3219 dB only up to psnry's float32."""
    got = ours(["psnr-ycbcr", "psnry", "ssim-ycbcr", "ssim-rgb", "ssimc"], all_pairs, 0)
    gaps = [a - b - 20 * math.log10(255 / 219) for a, b in zip(got["psnr-ycbcr"], got["psnry"], strict=True)]
    assert max(abs(g) for g in gaps) < 0.003  # the bound psnry's convention states
    clamp = max(b - a for a, b in zip(got["ssim-rgb"], got["ssimc"], strict=True))
    assert 0.005 < clamp < 0.015  # pyiqa's ssimc clamps what BasicSR's RGB SSIM does not
    values = calibration["values"]
    basicsr_y = [values[f"{p}@0"]["niqe_y"] for p, _, _ in all_pairs]
    pyiqa_yiq = ours(["niqe"], all_pairs, 0, niqe_weights)["niqe"]
    assert max(abs(a - b) for a, b in zip(basicsr_y, pyiqa_yiq, strict=True)) > 0.05  # niqe is not niqe-ycbcr
