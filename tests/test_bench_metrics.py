"""Metric registry and scorers: calibration against independent code, network metrics with random weights."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio as sk_psnr
from skimage.metrics import structural_similarity as sk_ssim

from conftest import random_metric_weights, synthetic_photo, write_png
from pirs.benchmark import registry
from pirs.benchmark.registry import FR, NR, SET, TEXT
from pirs.benchmark.scorers import (
    ClipImageScorer,
    FIDScorer,
    build_scorers,
    conventions,
    frechet_distance,
    resolve_options,
)
from pirs.benchmark.weights import CATALOG, clip_files

EMPTY = "/nonexistent/pirs-weights"  # the pixel metrics need no weights at all

# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------

REQUIRED = ["psnr", "psnry", "psnr-ycbcr", "ssim", "ssimc", "ssim-ycbcr", "ms-ssim", "lpips", "lpips-vgg", "dists",
            "fid", "kid", "niqe", "niqe-ycbcr", "musiq", "maniqa", "clipiqa", "clipiqa+", "liqe", "topiq_fr",
            "topiq_nr", "brisque", "pi", "clip-i", "clip-t"]


def test_registry_has_every_required_metric_with_its_metadata():
    for name in REQUIRED:
        spec = registry.get(name)
        assert spec.kind in (FR, NR, SET, TEXT)
        assert spec.direction in ("lower", "higher")
        assert spec.convention and spec.description and spec.input_rules
        assert isinstance(spec.weights, tuple)
        clip_paths = {f.path for f in clip_files("ViT-L/14", text=True)}
        assert all(w in CATALOG or w in clip_paths for w in spec.weights), name
    assert registry.get("fid").kind == SET and registry.get("clip-t").kind == TEXT
    assert not any(registry.get(n).weights for n in REQUIRED[:7])  # pixel metrics need no files
    roles = {n: registry.get(n).role for n in REQUIRED}
    assert {n for n, r in roles.items() if r == registry.FIDELITY} == set(REQUIRED[:7])
    assert roles["lpips"] == roles["fid"] == roles["niqe"] == registry.PERCEPTUAL
    assert roles["clip-i"] == registry.SEMANTIC
    for name in REQUIRED:  # every metric names the implementation it equals
        assert registry.get(name).reference, name


def test_pyiqa_entries_keep_pyiqa_names_and_directions():
    from pyiqa.default_model_configs import DEFAULT_CONFIGS

    for spec in registry.REGISTRY.values():
        if spec.backend == "pyiqa":
            cfg = DEFAULT_CONFIGS[spec.backend_name]
            assert spec.lower_better == cfg.get("lower_better", False), spec.name
            assert (spec.kind == FR) == (cfg["metric_mode"] == "FR"), spec.name
            if spec.name in DEFAULT_CONFIGS:
                assert spec.backend_name == spec.name  # same name, same meaning
    for name in ("topiq_nr", "pyiqa:nima", "pyiqa:topiq_nr-flive", "pyiqa:CLIPIQA+_vitL14_512"):
        spec = registry.get(name)
        cfg = DEFAULT_CONFIGS[spec.backend_name]
        assert spec.lower_better == cfg.get("lower_better", False) and (spec.kind == FR) == (cfg["metric_mode"] == "FR")
    assert registry.get("ssim").convention["color_space"] == "YIQ luma"
    assert registry.get("psnr").convention["color_space"] == "RGB"
    assert "0.299 R + 0.587 G + 0.114 B" in registry.get("psnry").convention["y_formula"]
    assert "65.481 R + 128.553 G + 24.966 B" in registry.get("ssim-ycbcr").convention["y_formula"]


def test_unknown_metric_says_did_you_mean_and_parse_keeps_order_without_repeats():
    with pytest.raises(KeyError, match="Did you mean 'lpips'"):
        registry.get("lpip")
    with pytest.raises(KeyError, match="Did you mean 'psnr-ycbcr'"):
        registry.get("psnr_ycbcr")
    assert registry.get(" PSNR ").name == "psnr"
    assert [s.name for s in registry.parse("ssim, psnr,ssim,,LPIPS")] == ["ssim", "psnr", "lpips"]
    assert [s.name for s in registry.parse(["fid", "fid", "clip-i"])] == ["fid", "clip-i"]
    with pytest.raises(KeyError, match="no metrics"):
        registry.parse(" , ")


def test_conventions_record_the_options_used():
    conv = conventions(["psnr-ycbcr", "clip-t", "lpips"], {"crop_border": 4, "clip_model": "ViT-B/32"})
    assert conv["psnr-ycbcr"]["crop_border"] == 4 and "ycbcr" in conv["psnr-ycbcr"]["backend"]
    assert conv["clip-t"]["clip_checkpoint"] == "openai/clip-vit-base-patch32"
    assert "crop_border" not in conv["lpips"]
    with pytest.raises(ValueError, match="Did you mean 'crop_border'"):
        resolve_options({"crop_boarder": 4})
    with pytest.raises(ValueError, match="non-negative integer"):
        resolve_options({"crop_border": -1})
    with pytest.raises(ValueError, match="not a path"):
        resolve_options({"clip_model": "/some/dir"})


# ---------------------------------------------------------------------------------------------
# PSNR / SSIM against numpy and scikit-image
# ---------------------------------------------------------------------------------------------

YIQ = np.array([0.299, 0.587, 0.114])
YCBCR = np.array([65.481, 128.553, 24.966])


@pytest.fixture(scope="module")
def noisy_pair() -> tuple[np.ndarray, np.ndarray]:
    """A 64x64 photo and a copy with Gaussian noise (sigma 10), both 8-bit."""
    gt = synthetic_photo(64, 64, 3)
    rng = np.random.default_rng(0)
    noisy = np.clip(np.round(gt + rng.normal(0, 10, gt.shape)), 0, 255).astype(np.uint8)
    return noisy, gt


def to_tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(img.astype(np.float32) / 255.0).permute(2, 0, 1)[None]


def scores(names: list[str], pred: np.ndarray, ref: np.ndarray, **options) -> dict[str, float]:
    scorers = build_scorers(names, weights_dir=EMPTY, options=options)
    return {s.spec.name: float(s.score(to_tensor(pred), to_tensor(ref))[0]) for s in scorers}


def y_yiq(img: np.ndarray) -> np.ndarray:
    return img.astype(np.float64) @ YIQ  # [0, 255]


def y_ycbcr(img: np.ndarray) -> np.ndarray:
    return 16.0 + (img.astype(np.float64) / 255.0) @ YCBCR  # [16, 235], as BasicSR's bgr2ycbcr * 255


SSIM_KW = {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False, "data_range": 255}
FAMILY = ["psnr", "psnry", "psnr-ycbcr", "ssim", "ssimc", "ssim-ycbcr"]


def independent(pred: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """The same six numbers from numpy and scikit-image only."""
    return {
        "psnr": sk_psnr(ref, pred, data_range=255),
        "psnry": sk_psnr(y_yiq(ref), y_yiq(pred), data_range=255),
        "psnr-ycbcr": sk_psnr(y_ycbcr(ref), y_ycbcr(pred), data_range=255),
        "ssim": sk_ssim(np.round(y_yiq(ref)), np.round(y_yiq(pred)), **SSIM_KW),
        "ssimc": sk_ssim(ref.astype(np.float64), pred.astype(np.float64), channel_axis=2, **SSIM_KW),
        "ssim-ycbcr": sk_ssim(y_ycbcr(ref), y_ycbcr(pred), **SSIM_KW),
    }


# Tolerances: PSNR is computed by pyiqa in float32 (about 1e-4 dB); pyiqa's ssim rounds a float32
# YIQ luma, so a few pixels sitting at .5 may round the other way (about 1e-5).
TOL = {"psnr": 1e-3, "psnry": 1e-3, "psnr-ycbcr": 1e-3, "ssim": 1e-4, "ssimc": 1e-5, "ssim-ycbcr": 1e-5}


def test_psnr_ssim_every_convention_matches_numpy_and_scikit_image(noisy_pair):
    pred, ref = noisy_pair
    ours, theirs = scores(FAMILY, pred, ref), independent(pred, ref)
    for name in FAMILY:
        assert ours[name] == pytest.approx(theirs[name], abs=TOL[name]), (name, ours[name], theirs[name])
    assert 20 < ours["psnr"] < 40 and 0.3 < ours["ssim"] < 0.99


def test_yiq_luma_and_ycbcr_y_differ_by_twenty_log_255_over_219(noisy_pair):
    pred, ref = noisy_pair
    ours = scores(["psnry", "psnr-ycbcr", "ssim", "ssim-ycbcr"], pred, ref)
    gap = ours["psnr-ycbcr"] - ours["psnry"]
    assert gap > 1.0  # the 33.86 against 35.18
    assert gap == pytest.approx(20 * math.log10(255 / 219), abs=1e-3)
    assert ours["ssim"] != pytest.approx(ours["ssim-ycbcr"], abs=1e-3)


def test_ssim_ycbcr_is_basicsr_not_pyiqa_rounded_y(noisy_pair):
    """pyiqa's ssim with color_space='ycbcr' rounds Y (MATLAB on uint8); pirs' ssim-ycbcr keeps it (BasicSR)."""
    import pyiqa

    pred, ref = noisy_pair
    rounded = float(pyiqa.create_metric("ssim", color_space="ycbcr", device="cpu")(to_tensor(pred), to_tensor(ref)))
    assert rounded == pytest.approx(sk_ssim(np.round(y_ycbcr(ref)), np.round(y_ycbcr(pred)), **SSIM_KW), abs=1e-5)
    assert scores(["ssim-ycbcr"], pred, ref)["ssim-ycbcr"] != pytest.approx(rounded, abs=1e-5)


def test_crop_border_drops_the_border_before_scoring(noisy_pair):
    pred, ref = noisy_pair[0].copy(), noisy_pair[1]
    c = 8
    pred[:c] = 255 - pred[:c]  # damage only the top rows
    full, cropped = scores(FAMILY, pred, ref), scores(FAMILY, pred, ref, crop_border=c)
    expect = independent(pred[c:-c, c:-c], ref[c:-c, c:-c])
    for name in FAMILY:
        assert cropped[name] == pytest.approx(expect[name], abs=TOL[name]), name
        assert cropped[name] > full[name] + 1e-3, name  # the damage was cropped away
    with pytest.raises(ValueError, match="too small"):
        build_scorers(["ssim"], weights_dir=EMPTY, options={"crop_border": 27})[0].score(
            to_tensor(pred), to_tensor(ref))


def test_identical_images_give_80_db_in_pyiqa_inf_in_basicsr_and_ssim_one(noisy_pair):
    _, ref = noisy_pair
    ours = scores(FAMILY, ref, ref)
    for name in ("psnr", "psnry"):
        assert ours[name] == pytest.approx(80.0, abs=1e-9)  # pyiqa: 10 log10(1 / 1e-8), capped
        assert "80 dB" in registry.get(name).convention["identical_images"]
    assert ours["psnr-ycbcr"] == math.inf  # BasicSR: no eps under the MSE
    assert "inf" in registry.get("psnr-ycbcr").convention["identical_images"]
    for name in ("ssim", "ssimc", "ssim-ycbcr"):
        assert ours[name] == pytest.approx(1.0, abs=1e-12)


def test_scorers_take_batches_and_check_their_inputs(noisy_pair):
    pred, ref = noisy_pair
    (psnr,) = build_scorers(["psnr"], weights_dir=EMPTY)
    batch_p = torch.cat([to_tensor(pred), to_tensor(ref)])
    batch_r = torch.cat([to_tensor(ref), to_tensor(ref)])
    out = psnr.score(batch_p, batch_r)
    assert out.dtype == torch.float64 and out.shape == (2,) and out.device.type == "cpu"
    assert out[1] == 80.0 and out[0] == pytest.approx(sk_psnr(ref, pred, data_range=255), abs=1e-3)
    with pytest.raises(ValueError, match="differ in size"):
        psnr.score(batch_p, batch_r[..., :32])
    with pytest.raises(ValueError, match="reference batch is needed"):
        psnr.score(batch_p, None)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        psnr.score(batch_p * 255, batch_r)


# ---------------------------------------------------------------------------------------------
# Network metrics with random weights in the layout the harness expects
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory) -> Path:
    """A weights dir with random LPIPS (alex), MUSIQ, FID-Inception checkpoints under their real names."""
    return random_metric_weights(tmp_path_factory.mktemp("weights"))


def photos_batch(n: int, seed: int, size: int = 64) -> torch.Tensor:
    return torch.cat([to_tensor(synthetic_photo(size, size, seed + i)) for i in range(n)])


def test_lpips_end_to_end_with_random_weights(random_weights):
    hub_before = torch.hub.get_dir()
    (lpips,) = build_scorers(["lpips"], weights_dir=str(random_weights))
    assert torch.hub.get_dir() == hub_before  # the offline context restores torch's hub dir
    x, y = photos_batch(2, 0), photos_batch(2, 5)
    same, diff = lpips.score(x, x), lpips.score(x, y)
    assert torch.isfinite(diff).all() and (diff > 1e-4).all()
    assert same.abs().max() < 1e-6


def test_musiq_no_reference_end_to_end_with_random_weights(random_weights):
    (musiq,) = build_scorers(["musiq"], weights_dir=str(random_weights))
    out = musiq.score(photos_batch(2, 0), None)
    assert out.shape == (2,) and torch.isfinite(out).all()


def test_fid_matches_pyiqa_features_and_caches_the_reference_side(random_weights, tmp_path):
    from pyiqa.archs.fid_arch import get_folder_features

    preds, refs = photos_batch(2, 0), photos_batch(2, 20)
    cache = tmp_path / "cache"
    (fid,) = build_scorers(["fid"], weights_dir=str(random_weights), cache_dir=str(cache), fingerprint="set-1")
    assert isinstance(fid, FIDScorer)
    fid.update(preds[:1], refs[:1])  # two batches: two cache parts
    fid.update(preds[1:], refs[1:])
    first = fid.compute()
    assert first > 0 and fid.cache.misses == 2 and fid.cache.hits == 0
    assert len(list((cache / "set-1").glob("fid-clean-2048-*/part-*.npz"))) == 2

    for i, img in enumerate(refs):  # pyiqa's own folder path on the same 8-bit images and the same network
        write_png(tmp_path / "refs" / f"{i}.png", (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    theirs = get_folder_features(str(tmp_path / "refs"), fid.model, num_workers=0, batch_size=2,
                                 device=torch.device("cpu"), mode="clean", verbose=False)
    ours = fid.features(refs)
    assert np.allclose(ours, theirs, rtol=1e-4, atol=1e-4 * np.abs(theirs).max())

    (again,) = build_scorers(["fid"], weights_dir=str(random_weights), cache_dir=str(cache), fingerprint="set-1")
    again.update(preds, refs)
    assert again.cache.hits == 2 and again.cache.misses == 0
    assert again.compute() == pytest.approx(first, rel=1e-6)

    assert abs(frechet_distance(ours, ours)) < 1e-6 * first  # a set against itself


def test_frechet_distance_svd_path_equals_sqrtm():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(60, 16))
    b = rng.normal(0.3, 1.5, size=(50, 16)) @ rng.normal(size=(16, 16)) * 0.3
    assert frechet_distance(a, b, "svd") == pytest.approx(frechet_distance(a, b, "sqrtm"), rel=1e-8)
    few = rng.normal(size=(5, 16))  # fewer samples than dimensions: singular covariances
    assert frechet_distance(few, few) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance(a[:1], b)


# ---------------------------------------------------------------------------------------------
# CLIP-I / CLIP-T with a tiny random CLIP
# ---------------------------------------------------------------------------------------------

TINY = "pirs-test/tiny-clip"  # -> <weights dir>/clip-models/tiny-clip/


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> Path:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    root = tmp_path_factory.mktemp("clip-weights")
    folder = root / "clip-models" / "tiny-clip"
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in "abcdefghijklmnopqrstuvwxyz":
        vocab[ch] = len(vocab)
        vocab[ch + "</w>"] = len(vocab)
    text = {"vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 2, "max_position_embeddings": 77, "bos_token_id": 0, "eos_token_id": 1,
            "pad_token_id": 1}
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
              "image_size": 32, "patch_size": 8}
    torch.manual_seed(0)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(folder)
    CLIPTokenizer(vocab=vocab, merges=[]).save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return root


def test_clip_i_and_clip_t_with_a_tiny_random_clip(tiny_clip, tmp_path):
    opts = {"clip_model": TINY}
    clip_i, clip_t = build_scorers(["clip-i", "clip-t"], weights_dir=str(tiny_clip), options=opts,
                                   cache_dir=str(tmp_path), fingerprint="set-2")
    assert clip_i.clip is clip_t.clip  # one model for both
    x, y = photos_batch(2, 0, size=48), photos_batch(2, 7, size=48)
    assert torch.allclose(clip_i.score(x, x), torch.ones(2, dtype=torch.float64), atol=1e-5)
    cross = clip_i.score(x, y)
    assert ((cross > -1) & (cross < 1 - 1e-6)).all()

    a = clip_t.score(x, None, ["a cat on a mat", "a red house"])
    b = clip_t.score(x, None, ["zebra", "quick brown fox jumps"])
    assert torch.isfinite(a).all() and (a.abs() <= 1).all() and (b.abs() <= 1).all()
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="captions in the batch are empty"):
        clip_t.score(x, None, ["a cat", ""])
    with pytest.raises(ValueError, match="one caption per image"):
        clip_t.score(x, None, None)

    (again,) = build_scorers(["clip-i"], weights_dir=str(tiny_clip), options=opts, cache_dir=str(tmp_path),
                             fingerprint="set-2")
    assert isinstance(again, ClipImageScorer)
    assert torch.allclose(again.score(x, y), cross, atol=1e-6)
    assert again.cache.hits == 2 and again.cache.misses == 0


@pytest.mark.parametrize("name", ["ssim", "ssimc"])
def test_separable_ssim_equals_pyiqa(name):
    """The separable window gives pyiqa's own SSIM (its 11x11 conv) to 1e-6: pyiqa rounds its window to float32.
    (ssim-ycbcr is BasicSR's: tests/test_bench_calibration.py.)"""
    import pyiqa

    x, y = photos_batch(3, 0, size=48), photos_batch(3, 7, size=48)
    (ours,) = build_scorers([name])
    got = ours.score(x, y)
    want = pyiqa.create_metric(name, device="cpu")(x, y)
    assert torch.allclose(got, want.double().cpu(), atol=registry.get(name).tolerance, rtol=0)


# ---------------------------------------------------------------------------------------------
# KID and pyiqa:NAME
# ---------------------------------------------------------------------------------------------


def test_kid_is_the_unbiased_cubic_kernel_mmd_and_shares_fid_features(random_weights):
    from pirs.benchmark.scorers import KIDScorer, kernel_inception_distance

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(12, 8)), rng.normal(0.5, 1.0, size=(10, 8))

    def k(x, y):
        return (x @ y.T / 8 + 1) ** 3

    m = 10  # every subset of the smaller set is the whole set: the closed form, whatever the seed
    kxx, kyy, kxy = k(a[:m], a[:m]), k(b, b), k(a[:m], b)
    closed = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean()
    assert kernel_inception_distance(b, b[::-1], subsets=3) == pytest.approx(
        2 * (kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kyy.mean())
    assert kernel_inception_distance(a[:m], b, subsets=5, seed=3) == pytest.approx(closed)
    fid, kid = build_scorers(["fid", "kid"], weights_dir=str(random_weights))
    assert isinstance(kid, KIDScorer) and kid.inception is fid.inception
    preds, refs = photos_batch(3, 0), photos_batch(3, 20)
    for s in (fid, kid):
        s.update(preds, refs)
    assert len(fid.inception.pred_feats) == 1  # one batch, computed once for both
    assert np.isfinite(kid.compute()) and fid.compute() > 0


def test_any_pyiqa_metric_by_name(tmp_path):
    import pyiqa

    from pirs.benchmark.weights import DownloadBlocked

    x, y = photos_batch(2, 0), photos_batch(2, 5)
    (ours,) = build_scorers(["pyiqa:psnr"], weights_dir=str(tmp_path))
    assert torch.allclose(ours.score(x, y), pyiqa.create_metric("psnr", device="cpu")(x, y).double())
    assert conventions(["pyiqa:psnr"])["pyiqa:psnr"]["implementation"].startswith("pyiqa ")
    with pytest.raises(DownloadBlocked) as info:  # the offline message names the file and where it goes
        build_scorers(["pyiqa:cnniqa"], weights_dir=str(tmp_path / "w"))
    text = str(info.value)
    assert "\n" not in text and str(tmp_path / "w" / "torch/hub/pyiqa/CNNIQA_koniq10k-e6f14c91.pth") in text
    assert "curl -L --create-dirs -o torch/hub/pyiqa/CNNIQA_koniq10k-e6f14c91.pth https://" in text
    with pytest.raises(KeyError, match="Did you mean 'pyiqa:topiq_nr'"):
        registry.get("pyiqa:topiq_nx")
    with pytest.raises(KeyError, match="use clip-t"):
        registry.get("pyiqa:clipscore")
