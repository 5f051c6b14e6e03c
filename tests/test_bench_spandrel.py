"""`bench baseline --checkpoint`: random-weight models of spandrel's own architectures, saved and detected back.

Tiny configs (5 k - 230 k parameters) keep the whole file to seconds on 2 CPU cores.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from conftest import quick_config, synthetic_photo, write_png
from pirs.benchmark.baselines import restore as trivial_restore
from pirs.benchmark.cli import main as bench_main
from pirs.benchmark.evaluate import EvalConfig, evaluate
from pirs.benchmark.spandrel_baseline import (
    ARCH_METHODS,
    CheckpointError,
    load_model,
    method_for,
    plan,
    restore_image,
    run_tiled,
    span_weights,
    tile_spans,
    write_spandrel_baseline,
)
from pirs.degrade.build import build


def _esrgan_x4():  # RRDBNet as Real-ESRGAN x4plus / BSRGAN, 1 block, 8 features
    from spandrel.architectures.ESRGAN import ESRGAN

    return ESRGAN(num_filters=8, num_blocks=1, scale=4)


def _esrgan_x2_unshuffle():  # as RealESRGAN_x2plus: pixel-unshuffle input, so sizes must be multiples of 4
    from spandrel.architectures.ESRGAN import ESRGAN

    return ESRGAN(num_filters=8, num_blocks=1, scale=4, shuffle_factor=2, in_nc=12)


def _swinir_x2():
    from spandrel.architectures.SwinIR import SwinIR

    return SwinIR(img_size=16, embed_dim=12, depths=[1], num_heads=[2], window_size=4, mlp_ratio=2.0, upscale=2,
                  upsampler="pixelshuffledirect")


def _nafnet():
    from spandrel.architectures.NAFNet import NAFNet

    return NAFNet(width=8, middle_blk_num=1, enc_blk_nums=[1, 1], dec_blk_nums=[1, 1])


def _compact_x4():  # SRVGGNetCompact with 2 body convs: a receptive field of 4 LQ px
    from spandrel.architectures.Compact import Compact

    return Compact(num_feat=8, num_conv=2, upscale=4)


# name: (factory, spandrel id, scale, file name, wrapper key of the saved dict)
MODELS = {
    "esrgan": (_esrgan_x4, "ESRGAN", 4, "RealESRGAN_x4plus_tiny.pth", "params_ema"),
    "esrgan-x2": (_esrgan_x2_unshuffle, "ESRGAN", 2, "x2_unshuffle.safetensors", None),
    "swinir": (_swinir_x2, "SwinIR", 2, "swinir_tiny_x2.pth", "params"),
    "nafnet": (_nafnet, "NAFNet", 1, "nafnet_tiny.safetensors", None),
    "compact": (_compact_x4, "Compact", 4, "compact_x4.safetensors", None),
}


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, tuple[Path, torch.nn.Module]]:
    """Each model saved once (.pth wrapped as the published files are, or .safetensors), with the module."""
    root = tmp_path_factory.mktemp("ckpt")
    out = {}
    for i, (name, (make, _, _, fname, wrap)) in enumerate(MODELS.items()):
        torch.manual_seed(i)
        model = make().eval()
        sd = {k: v.contiguous() for k, v in model.state_dict().items()}
        path = root / fname
        if path.suffix == ".safetensors":
            save_file(sd, str(path))
        else:
            torch.save({wrap: sd} if wrap else sd, path)
        out[name] = (path, model)
    return out


@pytest.fixture(scope="module")
def ref4(tmp_path_factory) -> Path:
    """A x4 test set (LQ 9 x 9, HQ 36 x 36) of 3 records."""
    photos = tmp_path_factory.mktemp("photos")
    for i in range(3):
        write_png(photos / f"p{i}.png", synthetic_photo(60, 76, i))
    out = tmp_path_factory.mktemp("ref") / "testset"
    build(quick_config(out, photos, num_samples=3, crop_size=36, scale=4))
    return out


@pytest.mark.parametrize("name", list(MODELS))
def test_detects_architecture_and_loads_the_weights(ckpts, name):
    path, module = ckpts[name]
    _, arch, scale, _, _ = MODELS[name]
    lm = load_model(path, "cpu")
    assert lm.arch_id == arch and lm.scale == scale
    assert lm.parameters == sum(p.numel() for p in module.parameters()) < 300_000
    assert lm.file_format.startswith("safetensors" if path.suffix == ".safetensors" else "pickle")
    x = torch.rand(1, 3, 24, 20)
    with torch.inference_mode():  # the detected hyper-parameters and loaded weights compute the same function
        assert torch.allclose(lm.descriptor(x), module(x).clamp(0, 1), atol=1e-5)


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("hw", [(37, 29), (29, 38)])
def test_output_is_lq_size_times_scale_for_odd_sizes(ckpts, name, hw):
    lm = load_model(ckpts[name][0], "cpu")
    x = torch.rand(1, 3, *hw)
    y, tiles = run_tiled(lm.descriptor, x, tile=None)
    assert tiles == 1 and tuple(y.shape) == (1, 3, hw[0] * lm.scale, hw[1] * lm.scale)
    # the same reflect padding and crop as spandrel's own call (the x2 unshuffle model needs multiples of 4)
    assert torch.allclose(y, lm.descriptor(x), atol=1e-6)
    # through restore_image: uint8 in, uint8 out at the requested size
    lq = (np.random.default_rng(0).random((*hw, 3)) * 255).astype(np.uint8)
    size = (hw[0] * lm.scale, hw[1] * lm.scale)
    pred, info = restore_image(lm, lq, size, lm.scale, 512, 32)
    assert pred.shape == (*size, 3) and pred.dtype == np.uint8 and not info["input_resized"]
    assert not info["output_resized"]


@pytest.mark.parametrize("name", ["esrgan-x2", "swinir", "compact"])
def test_one_tile_covering_the_image_is_the_untiled_result_exactly(ckpts, name):
    lm = load_model(ckpts[name][0], "cpu")
    x = torch.rand(1, 3, 37, 30)
    whole, _ = run_tiled(lm.descriptor, x, tile=None)
    tiled, n = run_tiled(lm.descriptor, x, tile=40, overlap=8)
    assert n == 1 and torch.equal(whole, tiled)


def test_tiles_with_overlap_match_untiled_for_a_small_receptive_field(ckpts):
    """Compact's output reaches 4 LQ px; an overlap of >= 16 px zeroes every tile's outer 4 px."""
    lm = load_model(ckpts["compact"][0], "cpu")
    x = torch.rand(1, 3, 61, 83)
    whole, _ = run_tiled(lm.descriptor, x, tile=None)
    tiled, n = run_tiled(lm.descriptor, x, tile=32, overlap=16)
    assert n == 3 * 5
    assert (tiled - whole).abs().max() < 1e-5


class _Stub:
    """A spandrel-like model: x2 nearest upscaling whose tile borders are garbage (as with zero padding)."""

    class size_requirements:  # noqa: N801
        minimum, multiple_of, square = 0, 1, False

    scale = 2
    tiling = None

    def __init__(self, border: int, const: float | None = None):
        self.border, self.const = border, const

    def __call__(self, x):
        if self.const is not None:
            return torch.full((1, 3, x.shape[-2] * 2, x.shape[-1] * 2), self.const)
        y = x.repeat_interleave(2, -2).repeat_interleave(2, -1).clone()
        b = self.border
        y[..., :b, :], y[..., -b:, :], y[..., :, :b], y[..., :, -b:] = 1.0, 0.0, 1.0, 0.0
        return y


def test_tile_borders_never_reach_the_output_and_constant_stays_constant():
    x = torch.rand(1, 3, 50, 70)
    # output px within overlap/4 of a tile's inner edge get weight 0: garbage there never shows
    stub = _Stub(border=2 * 4)  # 4 LQ px at x2 = overlap 16 / 4
    tiled, n = run_tiled(stub, x, tile=24, overlap=16)
    ref = x.repeat_interleave(2, -2).repeat_interleave(2, -1)
    inner = (slice(None), slice(None), slice(8, -8), slice(8, -8))  # the image's own border is garbage untiled too
    assert n > 4 and torch.allclose(tiled[inner], ref[inner], atol=1e-6)
    const, _ = run_tiled(_Stub(border=1, const=0.37), x, tile=24, overlap=16)
    assert torch.allclose(const, torch.full_like(const, 0.37), atol=1e-6)


def test_tile_spans_cover_evenly_and_weights_sum_to_one():
    for length in (17, 64, 100, 257, 1000):
        for tile, overlap, mult in ((32, 8, 1), (64, 16, 4), (512, 32, 8), (48, 0, 1)):
            if length % mult:
                continue
            spans = tile_spans(length, tile, overlap, mult)
            assert spans[0][0] == 0 and spans[-1][1] == length
            assert len({b - a for a, b in spans}) == 1 and (spans[0][1] - spans[0][0]) % mult == 0
            assert all(spans[i][1] - spans[i + 1][0] >= overlap for i in range(len(spans) - 1))
            for s in (1, 4):
                total = np.zeros(length * s)
                for i, (a, b) in enumerate(spans):
                    total[a * s:b * s] += span_weights(spans, i, s)
                assert np.allclose(total, 1.0)


def test_plan_resizes_only_on_a_scale_mismatch():
    assert plan((9, 7), (36, 28), 4, 4) == (None, False)  # x4 model, x4 set
    assert plan((36, 28), (36, 28), 1, 1) == (None, False)  # x1 model, LQ at HQ size
    assert plan((9, 7), (36, 28), 1, 4) == ((36, 28), False)  # x1 model on a x4 set: bicubic-upsampled LQ
    assert plan((36, 28), (36, 28), 4, 1) == ((9, 7), False)  # x4 model on LQ at HQ size: LQ downscaled
    assert plan((9, 7), (37, 28), 4, 4) == (None, True)  # HQ not LQ x scale: output resized
    assert plan((9, 7), (36, 28), 2, 4) == ((18, 14), False)


def test_x1_model_on_a_x4_set_restores_the_bicubic_baseline(ckpts):
    lm = load_model(ckpts["nafnet"][0], "cpu")
    lq = np.asarray(synthetic_photo(9, 11, 3))
    pred, info = restore_image(lm, lq, (36, 44), 4, 512, 32)
    assert info["input_resized"] and not info["output_resized"] and pred.shape == (36, 44, 3)
    up = torch.from_numpy(trivial_restore("bicubic", lq, (36, 44)).copy()).permute(2, 0, 1)[None] / 255.0
    expect = (run_tiled(lm.descriptor, up)[0][0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    assert np.array_equal(pred, expect)


def test_names_follow_the_leaderboard(ckpts):
    from pirs.leaderboard.papers import load_paper_tables

    printed = set(load_paper_tables()["method"])
    for arch in ("SwinIR", "NAFNet", "Restormer"):
        assert ARCH_METHODS[arch] in printed
    assert method_for("ESRGAN", "ESRGAN", "weights/RealESRGAN_x4plus.pth")[0] == "Real-ESRGAN" in printed
    assert method_for("ESRGAN", "ESRGAN", "BSRGAN.pth")[0] == "BSRGAN"
    assert method_for("ESRGAN", "ESRGAN", "RealESRNet_x4plus.pth")[0] == "Real-ESRNet"
    assert method_for("ESRGAN", "ESRGAN", "4x_foo.pth")[0] == "ESRGAN"
    assert method_for("Compact", "RealESRGAN Compact", "realesr-general-x4v3.pth")[0] == "Real-ESRGAN"
    assert method_for("DRUNet", "DRUNet", "drunet_color.pth")[0] == "DRUNet"  # never the DPIR of the leaderboard
    assert method_for("NewNet", "New Net", "x.pth")[0] == "New Net"


def test_end_to_end_name_reaches_bench_evaluate(tmp_path, ckpts, ref4, capsys):
    ck = ckpts["esrgan"][0]
    run = write_spandrel_baseline(ck, ref4, tmp_path / "pred", device="cpu", progress=False)
    assert run["method"] == "Real-ESRGAN" and run["architecture"]["id"] == "ESRGAN"
    assert run["checkpoint_sha256"] == hashlib.sha256(ck.read_bytes()).hexdigest()
    assert run["scale"] == {"model": 4, "test_set": [4], "mismatch": False, "note": run["scale"]["note"]}
    assert run["counts"]["images"] == 3 and run["counts"]["input_resized"] == run["counts"]["output_resized"] == 0
    assert run["dtype"] == "float32" and run["device"] == "cpu" and run["tile"]["size"] == 512
    s = evaluate(EvalConfig(str(tmp_path / "pred"), str(ref4), "psnr", str(tmp_path / "r.json"), progress=False,
                            cache_dir=None))
    assert s["method"]["name"] == "Real-ESRGAN" and s["count"] == 3
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["method"]["run"]["checkpoint_sha256"] == run["checkpoint_sha256"]
    # --name overrides; a x1 model on this x4 set is a recorded mismatch
    rc = bench_main(["baseline", "--checkpoint", str(ckpts["nafnet"][0]), "--name", "NAFNet-width8", "--reference",
                     str(ref4), "--out", str(tmp_path / "naf"), "--device", "cpu", "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0 and "scale mismatch: a x1 model on a test set of scale x4" in out
    run = json.loads((tmp_path / "naf" / "run.json").read_text())
    assert run["method"] == "NAFNet-width8" and run["method_name_source"] == "--name"
    assert run["scale"]["mismatch"] and run["counts"]["input_resized"] == 3
    s = evaluate(EvalConfig(str(tmp_path / "naf"), str(ref4), "psnr", str(tmp_path / "n.json"), progress=False,
                            cache_dir=None))
    assert s["method"]["name"] == "NAFNet-width8"


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path, ref4, capsys):
    marker = tmp_path / "pwned"
    zipped = tmp_path / "evil.pth"
    torch.save({"params_ema": {"w": torch.zeros(1)}, "x": _Evil(marker)}, zipped)
    raw = tmp_path / "evil_raw.ckpt"
    raw.write_bytes(pickle.dumps({"x": _Evil(marker)}, protocol=2))
    for f in (zipped, raw):
        with pytest.raises(CheckpointError, match=r"refused: unpickling it would load (posix|nt)\.system"):
            load_model(f)
        rc = bench_main(["baseline", "--checkpoint", str(f), "--reference", str(ref4), "--out", str(tmp_path / "o"),
                         "--device", "cpu", "--quiet"])
        err = capsys.readouterr().err
        assert rc == 2 and err.count("\n") == 1 and str(f) in err and "refused" in err
    assert not marker.exists()
    assert not list((tmp_path / "o").glob("*.png")) and not (tmp_path / "o" / "run.json").exists()  # only the lock


def test_bad_checkpoints_fail_with_one_line(tmp_path, ckpts, ref4, capsys):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(os.urandom(2000))
    trunc = tmp_path / "trunc.pth"
    trunc.write_bytes(ckpts["esrgan"][0].read_bytes()[:4000])
    unknown = tmp_path / "unknown.safetensors"
    save_file({"encoder.foo.weight": torch.zeros(4, 4)}, str(unknown))
    bad_st = tmp_path / "bad.safetensors"
    bad_st.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"x")
    cases = {tmp_path / "missing.pth": "no such file", junk: "refused", trunc: "not a readable PyTorch checkpoint",
             unknown: "unknown architecture", bad_st: "not a readable safetensors file",
             onnx: "unsupported extension"}
    for f, why in cases.items():
        rc = bench_main(["baseline", "--checkpoint", str(f), "--reference", str(ref4), "--out", str(tmp_path / "o"),
                         "--device", "cpu", "--quiet"])
        err = capsys.readouterr().err
        assert rc == 2 and err.count("\n") == 1 and f"--checkpoint {f}: " in err and why in err, err
        assert "Traceback" not in err
    rc = bench_main(["baseline", "bicubic", "--checkpoint", str(junk), "--reference", str(ref4), "--out", "x"])
    assert rc == 2 and "either a method" in capsys.readouterr().err
    rc = bench_main(["baseline", "--checkpoint", str(ckpts["compact"][0]), "--reference", str(ref4), "--out",
                     str(tmp_path / "o"), "--tile-size", "64", "--tile-overlap", "32", "--quiet"])
    assert rc == 2 and "less than half" in capsys.readouterr().err


def test_restormer_with_spandrel_extra_arches(tmp_path):
    """Restormer lives in spandrel_extra_arches (restrictive licences, not a pirs dependency): used when installed."""
    pytest.importorskip("spandrel_extra_arches")
    from spandrel_extra_arches.architectures.Restormer import Restormer

    model = Restormer(dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1, heads=[1, 1, 1, 1],
                      ffn_expansion_factor=1.0).eval()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "restormer.safetensors"))
    lm = load_model(tmp_path / "restormer.safetensors")
    assert lm.arch_id == "Restormer" and lm.scale == 1 and lm.descriptor.size_requirements.multiple_of == 8
    assert method_for(lm.arch_id, "Restormer", "motion_deblurring.pth")[0] == "Restormer"
    x = torch.rand(1, 3, 37, 29)  # padded to 40 x 32, cropped back
    assert tuple(run_tiled(lm.descriptor, x)[0].shape) == (1, 3, 37, 29)
