"""Native-size inference: latent tiles, tiled VAE, colour fixes, memory bounded by the tile, resumable predict."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import synthetic_photo, write_png
from pirs.degrade.ingest import IngestConfig, ingest
from pirs.models.colorfix import adain, color_fix, wavelet
from pirs.models.memory import TensorMemory
from pirs.models.predict import PredictConfig, fit_shape, predict, process_shape
from pirs.models.sampling import make_sampler
from pirs.models.tiling import Box, gaussian_weights, tile_starts, tiled
from pirs.models.train import TrainConfig, build_method, train

METHODS = ("spire", "xpsr", "diffrestorer", "dpir")


# ---------------------------------------------------------------------------------------------- tiles


@pytest.mark.parametrize("length,tile,overlap", [(5, 8, 2), (8, 8, 2), (9, 8, 2), (31, 8, 3), (100, 16, 0),
                                                 (17, 4, 3)])
def test_tiles_cover_the_side_overlap_and_end_flush(length, tile, overlap) -> None:
    starts = tile_starts(length, tile, overlap)
    size = min(tile, length)
    covered = np.zeros(length, bool)
    for s in starts:
        covered[s:s + size] = True
    assert covered.all() and starts[0] == 0 and starts[-1] + size == length
    assert all(b - a <= size - overlap for a, b in zip(starts, starts[1:], strict=False))
    assert starts == sorted(set(starts))


def test_bad_tiles_are_refused() -> None:
    with pytest.raises(ValueError, match="overlap"):
        tile_starts(20, 8, 8)
    with pytest.raises(ValueError, match="positive"):
        tile_starts(20, 0, 0)


def test_weights_are_positive_smooth_and_peak_in_the_middle() -> None:
    w = gaussian_weights(9, 12)
    assert (w > 0).all() and torch.allclose(w, w.flip(0)) and torch.allclose(w, w.flip(1))
    assert w[4, 5] == w.max() and w[0, 0] == w.min()


@pytest.mark.parametrize("factor", [1, 2, 8])
def test_blending_reassembles_the_input_exactly(factor) -> None:
    """A function that returns its tile (upsampled by ``factor``) gives back the whole input, seams included."""
    x = torch.rand(2, 3, 23, 37, dtype=torch.float64)

    def fn(boxes: list[Box]) -> torch.Tensor:
        return torch.cat([b.crop(x).repeat_interleave(factor, -2).repeat_interleave(factor, -1) for b in boxes])

    for tile, overlap, batch in ((8, 3, 1), (5, 0, 3), (16, 7, 2)):
        out = tiled(fn, (23, 37), tile, overlap, factor, batch)
        want = x.repeat_interleave(factor, -2).repeat_interleave(factor, -1)
        assert out.shape == want.shape
        assert torch.allclose(out.double(), want, atol=1e-6)


def test_one_tile_returns_the_function_output_untouched() -> None:
    x = torch.rand(1, 4, 10, 14)
    out = tiled(lambda boxes: x[..., : boxes[0].h, : boxes[0].w] * 3, (10, 14), 64, 8)
    assert torch.equal(out, x * 3)


def test_a_constant_image_stays_constant_across_tile_seams() -> None:
    """A translation-equivariant network that keeps constants constant: the blended output is one value."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1, padding_mode="replicate"), torch.nn.SiLU(),
                              torch.nn.Conv2d(8, 3, 3, padding=1, padding_mode="replicate"))
    x = torch.full((1, 3, 40, 56), 0.3)
    with torch.no_grad():
        out = tiled(lambda boxes: net(torch.cat([b.crop(x) for b in boxes])), (40, 56), 16, 6)
        ref = net(x[..., :8, :8])[0, :, 0, 0]
    assert torch.allclose(out, ref[None, :, None, None].expand_as(out), atol=1e-6)


# ---------------------------------------------------------------------------------------------- colour fixes


def _wavelet_reference(x: np.ndarray, ref: np.ndarray, levels: int = 5) -> np.ndarray:
    """StableSR's wavelet_reconstruction written with scipy: dilated binomial blurs, edge padding."""
    from scipy.ndimage import correlate

    def split(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        high = np.zeros_like(img)
        for i in range(levels):
            r = 2 ** i
            k = np.zeros((2 * r + 1, 2 * r + 1))
            for a, wa in zip((0, r, 2 * r), (1, 2, 1), strict=True):
                for b, wb in zip((0, r, 2 * r), (1, 2, 1), strict=True):
                    k[a, b] = wa * wb / 16
            low = np.stack([correlate(img[c], k, mode="nearest") for c in range(img.shape[0])])
            high += img - low
            img = low
        return high, img

    return split(x)[0] + split(ref)[1]


def test_adain_gives_the_references_channel_statistics() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 20, 30, generator=g)
    ref = torch.rand(1, 3, 20, 30, generator=g) * 0.5 + 0.2
    out = adain(x, ref).double().numpy()[0]
    xn, rn = x.double().numpy()[0], ref.double().numpy()[0]
    for c in range(3):  # (x - mean x) / sqrt(var x + 1e-5) * sqrt(var ref + 1e-5) + mean ref, unbiased variances
        want = (xn[c] - xn[c].mean()) / np.sqrt(xn[c].var(ddof=1) + 1e-5) * np.sqrt(rn[c].var(ddof=1) + 1e-5) \
            + rn[c].mean()
        assert np.allclose(out[c], want, atol=1e-5)


def test_wavelet_fix_matches_an_independent_implementation() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(1, 3, 40, 52, generator=g, dtype=torch.float64)
    ref = torch.rand(1, 3, 40, 52, generator=g, dtype=torch.float64)
    out = wavelet(x, ref).numpy()[0]
    assert np.allclose(out, _wavelet_reference(x.numpy()[0], ref.numpy()[0]), atol=1e-10)


def test_color_fix_works_in_unit_range_and_none_is_identity() -> None:
    g = torch.Generator().manual_seed(2)
    x, ref = torch.rand(1, 3, 16, 16, generator=g) * 2 - 1, torch.rand(1, 3, 16, 16, generator=g) * 2 - 1
    assert torch.equal(color_fix(x, ref, "none"), x)
    assert torch.allclose(color_fix(x, ref, "adain"), adain((x + 1) / 2, (ref + 1) / 2) * 2 - 1, atol=1e-6)
    assert torch.allclose(color_fix(x, ref, "wavelet"), wavelet(x, ref), atol=1e-5)
    with pytest.raises(ValueError, match="unknown colour fix"):
        color_fix(x, ref, "hist")


# ---------------------------------------------------------------------------------------------- sizes


def test_process_size_and_fit_follow_the_official_rules() -> None:
    assert process_shape((100, 300), 512) == (512, 1536)
    assert process_shape((301, 200), 512) == (770, 512)
    assert process_shape((600, 700), 512) == (600, 700) and process_shape((10, 20), 0) == (10, 20)
    assert fit_shape((37, 53), 8, "pad") == ((40, 56), (3, 3))
    assert fit_shape((37, 53), 8, "resize") == ((32, 48), (0, 0))


@pytest.fixture(scope="module")
def odd_set(tmp_path_factory) -> Path:
    """Unpaired photos of odd, non-square sizes at scale 2 (outputs must be twice the LQ size)."""
    root = tmp_path_factory.mktemp("odd")
    write_png(root / "photos" / "a.png", synthetic_photo(19, 27, 1))
    write_png(root / "photos" / "b.png", synthetic_photo(23, 13, 2))
    ingest(IngestConfig(layout="folder", input=str(root / "photos"), out=str(root / "set"), scale=2,
                        progress=False))
    return root / "set"


@pytest.fixture(scope="module")
def runs(tmp_path_factory, odd_set) -> dict[str, Path]:
    """One optimizer step of each tiny method (a checkpoint to predict with)."""
    from pirs.degrade.build import BuildConfig, build

    root = tmp_path_factory.mktemp("runs")
    photos = root / "photos"
    for i in range(2):
        write_png(photos / f"p{i}.png", synthetic_photo(40, 40, i))
    shards = root / "shards"
    build(BuildConfig(pipeline="parameterized", out=str(shards), input=str(photos), num_samples=2, crop_size=32,
                      shard_size=2, progress=False))
    out = {}
    for m in METHODS:
        out[m] = root / m
        train(TrainConfig(method=m, data=str(shards), out=str(out[m]), max_steps=1, batch_size=1, progress=False,
                          allow_empty_text=True))  # XPSR reads caption_low; these shards have none
    return out


@pytest.mark.parametrize("method", METHODS)
def test_every_method_predicts_odd_sizes_at_input_size_times_scale(tmp_path, odd_set, runs, method) -> None:
    run = predict(PredictConfig(checkpoint=str(runs[method]), input=str(odd_set), out=str(tmp_path / "p"),
                                steps=2, tile_size=12, tile_overlap=4, vae_decoder_tile=12, vae_encoder_tile=12,
                                vae_tile_overlap=4, progress=False))
    sizes = {p.stem: Image.open(p).size for p in (tmp_path / "p").glob("*.png")}
    assert sorted(sizes.values()) == [(26, 46), (54, 38)]
    assert run["resized"] == 0 and run["tile_size"] == 12 and run["tile_overlap"] == 4
    saved = json.loads((tmp_path / "p" / "run.json").read_text())
    for key in ("steps", "sampler", "guidance_scale", "tile_size", "tile_overlap", "color_fix", "prompts"):
        assert key in saved
    assert saved["protocol"]["vae_decoder_tile"] == 12 and saved["steps"] == 2


@pytest.mark.parametrize("method", METHODS)
def test_one_covering_tile_is_the_same_as_any_larger_tile(runs, method) -> None:
    """Tiles at least as large as the latent give the untiled computation, whatever their nominal size."""
    from pirs.models.predict import load_trained

    model = load_trained(str(runs[method]))[0]
    g = torch.Generator().manual_seed(3)
    m = model.size_multiple
    lq = torch.rand(1, 3, 6 * m, 10 * m, generator=g) * 2 - 1
    batch = {"lq": lq, "restoration_prompt": ["Denoise with sigma 0.06"], "semantic_prompt": ["a house"],
             "caption_high": ["a house"], "caption_low": ["noisy"], "labels": [["noise"]]}
    latent = 10 * m // model.latent_factor
    outs = [model.predict(batch, 2, torch.Generator().manual_seed(0), tile_size=t, vae_decoder_tile=t,
                          vae_encoder_tile=t) for t in (latent, latent + 2, 4 * latent)]
    assert outs[0].shape == (1, 3, 6 * m, 10 * m)
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])


def test_one_tile_equals_a_plain_sampling_loop(runs) -> None:
    """SPIRE through the tiled path with one tile equals DDIM written out by hand, without tiles."""
    from pirs.models.predict import load_trained

    model = load_trained(str(runs["spire"]))[0]
    g = torch.Generator().manual_seed(4)
    lq = torch.rand(1, 3, 24, 40, generator=g) * 2 - 1
    batch = {"lq": lq, "restoration_prompt": ["Deblur with sigma 2.0"], "semantic_prompt": [""]}
    got = model.predict(batch, 3, torch.Generator().manual_seed(5), tile_size=64, vae_decoder_tile=64)
    sched = make_sampler("ddim", model.scheduler_config, 3)
    gen = torch.Generator().manual_seed(5)
    z = torch.randn((1, 4, 12, 20), generator=gen) * sched.init_noise_sigma
    r, s = model.text(batch["restoration_prompt"]), model.text(batch["semantic_prompt"])
    with torch.no_grad():
        for t in sched.timesteps:
            z = sched.step(model.eps(z, t, lq, r, s), t, z).prev_sample
        want = model.vae.decode(z / model.vae.config.scaling_factor).sample.clamp(-1, 1)
    assert torch.equal(got, want)


def test_peak_memory_is_bounded_by_the_tile(runs) -> None:
    """A 4x larger image in tiles needs about the memory of one tile; untiled it needs about 4x."""
    from pirs.models.predict import load_trained

    model = load_trained(str(runs["spire"]))[0]

    def peak(side: int, tile: int) -> int:
        lq = torch.zeros(1, 3, side, side)
        batch = {"lq": lq, "restoration_prompt": [""], "semantic_prompt": [""]}
        with TensorMemory() as mem:
            model.predict(batch, 1, torch.Generator().manual_seed(0), tile_size=tile, tile_overlap=4,
                          vae_decoder_tile=tile, vae_tile_overlap=4)
        return mem.peak

    one = peak(64, 32)  # factor 2: a 32x32 latent, one tile
    tiled_big = peak(128, 32)  # 4x the area, 3x3 tiles
    untiled_big = peak(128, 64)
    assert tiled_big <= 1.5 * one, (one, tiled_big)
    assert untiled_big >= 3 * one, (one, untiled_big)


# ---------------------------------------------------------------------------------------------- predict runs


def test_an_interrupted_predict_resumes_and_other_settings_are_refused(tmp_path, odd_set, runs) -> None:
    ckpt = str(runs["spire"])
    full = predict(PredictConfig(checkpoint=ckpt, input=str(odd_set), out=str(tmp_path / "full"), steps=2,
                                 progress=False))
    predict(PredictConfig(checkpoint=ckpt, input=str(odd_set), out=str(tmp_path / "part"), steps=2, limit=1,
                          progress=False))
    again = predict(PredictConfig(checkpoint=ckpt, input=str(odd_set), out=str(tmp_path / "part"), steps=2,
                                  progress=False))
    assert again["resumed"] == 1 and full["resumed"] == 0
    for p in (tmp_path / "full").glob("*.png"):
        assert (tmp_path / "part" / p.name).read_bytes() == p.read_bytes()
    with pytest.raises(ValueError, match="other settings"):
        predict(PredictConfig(checkpoint=ckpt, input=str(odd_set), out=str(tmp_path / "part"), steps=3,
                              progress=False))
    redo = predict(PredictConfig(checkpoint=ckpt, input=str(odd_set), out=str(tmp_path / "part"), steps=3,
                                 overwrite=True, progress=False))
    assert redo["resumed"] == 0 and redo["steps"] == 3


def test_protocol_values_are_checked(runs) -> None:
    from pirs.models.method import ConfigError

    model = build_method("spire", "tiny", [], None)
    with pytest.raises(ConfigError, match="tile_overlap"):
        model.protocol(tile_size=8, tile_overlap=8)
    with pytest.raises(ConfigError, match="sampler"):
        model.protocol(sampler="euler-a")
    with pytest.raises(ConfigError, match="color_fix"):
        model.protocol(color_fix="histogram")


def test_predict_and_train_hold_their_output(tmp_path, odd_set, runs) -> None:
    """One writer per output: a predictions or run folder another writer holds is refused, naming it."""
    from pirs.degrade.lock import LockHeld, output_lock

    out = tmp_path / "p"
    out.mkdir()
    with output_lock(out, "someone else's restore predict"):
        with pytest.raises(LockHeld, match="someone else's restore predict"):
            predict(PredictConfig(checkpoint=str(runs["spire"]), input=str(odd_set), out=str(out), steps=1,
                                  progress=False))
    assert not list(out.glob("*.png"))
    run = tmp_path / "run"
    run.mkdir()
    with output_lock(run, "another restore train"):
        with pytest.raises(LockHeld, match="another restore train"):
            train(TrainConfig(method="spire", data=str(odd_set), out=str(run), max_steps=1, progress=False))


def test_strangers_run_files_give_one_line_errors(tmp_path, odd_set, runs, capsys) -> None:
    """A trainer.json that is not one, or a progress marker nested 100k deep: one line, exit 2, no traceback."""
    import shutil

    from pirs.models.cli import main

    ckpt = tmp_path / "ckpt"
    shutil.copytree(next(runs["spire"].glob("checkpoint-*")), ckpt)
    (ckpt / "trainer.json").write_text("[1, 2]")
    assert main(["predict", "--checkpoint", str(ckpt), "--input", str(odd_set), "--out", str(tmp_path / "p")]) == 2
    assert "not a pirs checkpoint's trainer.json" in capsys.readouterr().err
    out = tmp_path / "q"
    out.mkdir()
    (out / ".predict.json").write_text("[" * 100_000)
    assert main(["predict", "--checkpoint", str(runs["spire"]), "--input", str(odd_set), "--out", str(out),
                 "--steps", "1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "other settings" in err and "Traceback" not in err
