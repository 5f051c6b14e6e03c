"""SPIRE and the shared restore path on tiny random models: train, resume, predict, score."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pirs.degrade.build import BuildConfig, build
from pirs.models.components import WeightsMissing, save_sd, tiny_sd
from pirs.models.data import ShardPairs
from pirs.models.predict import PredictConfig, load_trained, predict
from pirs.models.sizes import SD15_UNET, SD15_VAE
from pirs.models.spire import ModulationFusion, Spire
from pirs.models.train import TrainConfig, build_method, data_options, step_generator, train
from pirs.models.unet_fusion import unet_with_fusion


@pytest.fixture(scope="module")
def shards(tmp_path_factory, photos_dir) -> Path:
    out = tmp_path_factory.mktemp("spire") / "shards"
    build(BuildConfig(pipeline="parameterized", out=str(out), input=str(photos_dir), num_samples=6, crop_size=32,
                      shard_size=3, progress=False))
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory, shards) -> Path:
    out = tmp_path_factory.mktemp("spire") / "run"
    train(TrainConfig(method="spire", data=str(shards), out=str(out), max_steps=4, batch_size=2,
                      checkpoint_every=2, progress=False, learning_rate=3e-3))
    return out


def test_trainable_and_frozen_parts(shards) -> None:
    m = build_method("spire", "tiny", [], None)
    counts = m.parameter_counts()
    own = sum(p.numel() for mod in (m.encoder, m.lq_embedding, m.skip_fusion, m.mid_fusion) for p in mod.parameters())
    assert counts["trainable"] == own > 0
    frozen = {n: p.detach().clone() for n, p in m.named_parameters() if not p.requires_grad}
    assert all(n.split(".")[0] in ("unet", "vae", "text_encoder") for n in frozen)
    assert sum(p.numel() for p in frozen.values()) == counts["frozen"] > 0
    data = ShardPairs(str(shards), data_options(m, 0))
    opt = torch.optim.AdamW(m.trainable_parameters(), lr=1e-2)
    m.train()
    assert not m.unet.training and m.encoder.training
    for step in range(2):
        opt.zero_grad()
        m.training_step(data.batch(step, 2), step_generator(0, step, 0))["loss"].backward()
        opt.step()
    for n, p in m.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), n


def test_zero_initialized_fusion_starts_as_the_frozen_unet() -> None:
    m = build_method("spire", "tiny", [], None)
    z, t = torch.randn(2, 4, 16, 16), torch.tensor([10, 700])
    lq = torch.rand(2, 3, 32, 32) * 2 - 1
    r, s = m.text(["Deblur with sigma 2.1", "Remove all degradation"]), m.text(["a photo", ""])
    assert torch.equal(m.eps(z, t, lq, r, s), m.unet(z, t, encoder_hidden_states=s).sample)
    assert torch.equal(unet_with_fusion(m.unet, z, t, s), m.unet(z, t, encoder_hidden_states=s).sample)


def test_modulation_fusion_is_one_plus_gamma_times_skip_plus_beta() -> None:
    fusion = ModulationFusion(4)
    torch.nn.init.normal_(fusion.to_gamma_beta.weight)
    torch.nn.init.normal_(fusion.to_gamma_beta.bias)
    skip, feat = torch.randn(2, 4, 5, 5), torch.randn(2, 4, 5, 5)
    w, b = fusion.to_gamma_beta.weight[:, :, 0, 0], fusion.to_gamma_beta.bias
    gb = torch.einsum("oc,bchw->bohw", w, feat) + b[None, :, None, None]
    want = (1 + gb[:, :4]) * skip + gb[:, 4:]
    torch.testing.assert_close(fusion(skip, feat), want)


def test_resume_is_exact(tmp_path, shards, trained) -> None:
    a = tmp_path / "a"
    args = {"method": "spire", "data": str(shards), "batch_size": 2, "checkpoint_every": 2, "progress": False,
            "learning_rate": 3e-3}
    train(TrainConfig(out=str(a), max_steps=2, **args))
    r = train(TrainConfig(out=str(a), max_steps=4, **args))
    assert r["start"] == 2
    from safetensors.torch import load_file

    straight = load_file(trained / "checkpoint-0000004" / "model.safetensors")
    resumed = load_file(a / "checkpoint-0000004" / "model.safetensors")
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    init = build_method("spire", "tiny", [], None).trainable_state_dict()
    assert any(not torch.equal(init[k], straight[k]) for k in straight)  # training did change the weights
    log = [json.loads(line) for line in (trained / "log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 4


def test_predict_writes_keys_and_run_json_and_bench_scores_them(tmp_path, shards, trained) -> None:
    from pirs.benchmark.evaluate import EvalConfig, evaluate

    out = tmp_path / "pred"
    run = predict(PredictConfig(checkpoint=str(trained), input=str(shards), out=str(out), steps=3, batch_size=4,
                                progress=False))
    keys = sorted(p.stem for p in out.glob("*.png"))
    assert keys == [f"{i:08d}" for i in range(6)]
    meta = json.loads((out / "run.json").read_text())
    assert meta["method"] == "spire" and meta["step"] == 4 and meta["sampler"] == "ddim" and meta["steps"] == 3
    assert meta["prompts"]["00000000"]["restoration"] and len(meta["weights_sha256"]) == 64
    assert Image.open(out / "00000000.png").size == (32, 32)
    again = tmp_path / "again"
    predict(PredictConfig(checkpoint=str(trained), input=str(shards), out=str(again), steps=3, batch_size=4,
                          progress=False))
    assert all((out / f"{k}.png").read_bytes() == (again / f"{k}.png").read_bytes() for k in keys)
    res = evaluate(EvalConfig(predictions=str(out), reference=str(shards), metrics="psnr,ssim", progress=False,
                              out=str(tmp_path / "res.json")))
    assert res["method"]["name"] == "spire" and res["method"]["run"]["step"] == 4
    assert res["count"] == 6 and res["metrics"]["psnr"]["count"] == 6
    assert run["blind"] is False


def test_loss_falls_when_overfitting_one_batch(shards) -> None:
    m = build_method("spire", "tiny", [], None)
    batch = ShardPairs(str(shards), data_options(m, 0)).batch(0, 2)
    opt = torch.optim.AdamW(m.trainable_parameters(), lr=3e-3)
    m.train()
    losses = []
    for _ in range(20):
        opt.zero_grad()
        loss = m.training_step(batch, torch.Generator().manual_seed(0))["loss"]
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.85 * losses[0], losses


def test_restoration_prompt_reaches_the_output(shards, trained) -> None:
    model, _, _ = load_trained(str(trained))
    data = ShardPairs(str(shards), data_options(model, 0))
    from pirs.models.data import collate

    outs = []
    for prompt in ("Deblur with sigma 3.0", "Denoise with sigma 0.12"):
        s = data.sample(0)
        s["restoration_prompt"] = prompt
        outs.append(model.predict(collate([s]), 3, torch.Generator().manual_seed(1)))
    assert (outs[0] - outs[1]).abs().max() > 1e-4
    fresh = build_method("spire", "tiny", [], None)  # untrained: zero fusion, the prompt cannot matter yet
    s = data.sample(0)
    a, b = (fresh.predict(collate([dict(s, restoration_prompt=p)]), 2, torch.Generator().manual_seed(1))
            for p in ("Deblur with sigma 3.0", "Denoise with sigma 0.12"))
    assert torch.equal(a, b)


def test_loads_a_local_stable_diffusion_folder(tmp_path) -> None:
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    from pirs.models.method import load_config

    parts = tiny_sd(seed=3)
    pipe = StableDiffusionPipeline(vae=parts.vae, text_encoder=parts.text_encoder, tokenizer=parts.tokenizer,
                                   unet=parts.unet, scheduler=DDIMScheduler(**parts.scheduler_config),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(tmp_path / "sd")  # what a local Stable Diffusion folder looks like
    m = Spire.build(load_config("spire", "tiny", ["variant=sd"]), base=str(tmp_path / "sd"))
    for (n, p), q in zip(m.unet.named_parameters(), parts.unet.parameters(), strict=True):
        assert torch.equal(p, q), n
    assert not any(p.requires_grad for p in m.unet.parameters())
    assert m.text(["Remove the haze"]).shape[-1] == parts.text_encoder.config.hidden_size
    assert m.scheduler_config["beta_schedule"] == "scaled_linear"
    (tmp_path / "sd" / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(WeightsMissing, match=r"unet/diffusion_pytorch_model.safetensors.*huggingface-cli download"):
        Spire.build(load_config("spire", "tiny", ["variant=sd"]), base=str(tmp_path / "sd"))
    save_sd(parts, str(tmp_path / "sd2"))  # pirs' own writer gives the same layout
    assert Spire.build(load_config("spire", "tiny", ["variant=sd"]), base=str(tmp_path / "sd2")).parameter_counts() \
        == m.parameter_counts()


def test_ema_validation_images_and_gradient_accumulation(tmp_path, shards) -> None:
    from safetensors.torch import load_file

    out = tmp_path / "run"
    train(TrainConfig(method="spire", data=str(shards), out=str(out), max_steps=2, batch_size=1, grad_accum=2,
                      ema_decay=0.5, validate_every=2, validation_steps=2, progress=False, learning_rate=3e-3))
    ck = out / "checkpoint-0000002"
    model, ema = load_file(ck / "model.safetensors"), load_file(ck / "ema.safetensors")
    init = build_method("spire", "tiny", [], None).trainable_state_dict()
    k = next(k for k in model if not torch.equal(model[k], init[k]))
    assert not torch.equal(ema[k], model[k])  # the EMA lags the weights
    png = out / "validation" / "step-0000002.png"
    assert png.is_file() and Image.open(png).size == (3 * 32, 4 * 32)
    meta = json.loads((ck / "trainer.json").read_text())
    assert meta["grad_accum"] == 2 and meta["step"] == 2


def test_no_pickle_loading_anywhere_in_models() -> None:
    import re

    root = Path(__file__).resolve().parents[1] / "models"
    for path in root.rglob("*.py"):
        for call in re.findall(r"torch\.load\([^)]*\)", path.read_text()):
            assert "weights_only=True" in call, (path, call)


def test_cli_train_predict_and_errors(tmp_path, shards, capsys) -> None:
    from pirs.models.cli import main

    assert main(["train", "--method", "spire", "--data", str(shards), "--out", str(tmp_path / "r"), "--max-steps", "1",
                 "--batch-size", "2", "--quiet"]) == 0
    assert main(["predict", "--checkpoint", str(tmp_path / "r"), "--input", str(shards), "--out",
                 str(tmp_path / "p"), "--steps", "2", "--blind", "--quiet"]) == 0
    meta = json.loads((tmp_path / "p" / "run.json").read_text())
    assert {v["restoration"] for v in meta["prompts"].values()} == {"Remove all degradation"}
    assert {v["semantic"] for v in meta["prompts"].values()} == {""}
    assert main(["train", "--method", "spir", "--data", str(shards), "--out", str(tmp_path / "x")]) == 2
    assert "did you mean 'spire'" in capsys.readouterr().err.lower()
    assert main(["train", "--method", "spire", "--data", str(shards), "--out", str(tmp_path / "y"),
                 "--base", str(tmp_path / "nothing")]) == 2
    assert "missing unet/config.json" in capsys.readouterr().err
    assert main(["predict", "--checkpoint", str(tmp_path / "none"), "--input", str(shards), "--out",
                 str(tmp_path / "z")]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert main(["methods"]) == 0 and "spire" in capsys.readouterr().out


def test_data_batches_are_pure_functions_of_their_index(shards) -> None:
    from pirs.models.data import DataOptions

    opts = DataOptions(semantic_dropout=0.5, restoration_dropout=0.5, seed=1)
    a, b = ShardPairs(str(shards), opts), ShardPairs(str(shards), opts)
    for i in (0, 3, 7):
        x, y = a.batch(i, 2), b.batch(i, 2)
        assert x["key"] == y["key"] and torch.equal(x["lq"], y["lq"])
        assert x["restoration_prompt"] == y["restoration_prompt"] and x["semantic_prompt"] == y["semantic_prompt"]
    keys = [k for i in range(3) for k in a.batch(i, 2)["key"]]
    assert sorted(keys) == sorted(f"{i:08d}" for i in range(6))  # one epoch: every sample once
    drops = [a.batch(i, 2)["restoration_prompt"].count("") for i in range(30)]
    assert 0 < sum(drops) < 60
    hq = np.asarray(a.sample(0)["hq"])
    assert hq.min() >= -1 and hq.max() <= 1


def test_predictions_are_restored_at_the_test_sets_size(tmp_path, photos_dir, trained) -> None:
    """The tiny model trained at 32 px restores a test set of 48 px crops at 48 px (no resize) that bench pairs."""
    from pirs.benchmark.evaluate import EvalConfig, evaluate

    shards = tmp_path / "big"
    build(BuildConfig(pipeline="realesrgan", out=str(shards), input=str(photos_dir), num_samples=3, crop_size=48,
                      shard_size=3, progress=False))
    out = tmp_path / "pred"
    run = predict(PredictConfig(checkpoint=str(trained), input=str(shards), out=str(out), steps=2, progress=False))
    assert run["resized"] == 0 and run["count"] == 3 and run["protocol"]["fit"] == "pad"
    assert {Image.open(p).size for p in out.glob("*.png")} == {(48, 48)}
    res = evaluate(EvalConfig(predictions=str(out), reference=str(shards), metrics="psnr", progress=False,
                              out=str(tmp_path / "res.json")))
    assert res["metrics"]["psnr"]["count"] == 3 and res["pairing"]["size_mismatch"]["count"] == 0


def _prompted(seed: int = 0) -> Spire:
    """A tiny SPIRE whose fusion layers are no longer zero, so both prompts change its prediction."""
    m = build_method("spire", "tiny", [], None)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for f in [*m.skip_fusion, m.mid_fusion]:
            f.to_gamma_beta.weight.copy_(torch.randn(f.to_gamma_beta.weight.shape, generator=g) * 0.2)
    return m


def test_condition_dropout_drops_both_prompts_together(shards) -> None:
    """Sec. 3.1: the whole text condition is dropped, so the null condition CFG uses is trained (rate: pirs 0.1)."""
    from pirs.models.data import DataOptions
    from pirs.models.method import load_config

    for name in ("sd15", "tiny"):
        c = load_config("spire", name)
        assert (c.condition_dropout, c.semantic_dropout, c.restoration_dropout) == (0.1, 0.1, 0.0), name
    m = _prompted()
    r, s = m.drop_condition(["Deblur with sigma 2.0"] * 4000, ["a house"] * 4000, torch.Generator().manual_seed(0))
    assert [a == "" for a in r] == [b == "" for b in s]  # never one prompt without the other
    assert abs(r.count("") / 4000 - 0.1) < 4 * (0.1 * 0.9 / 4000) ** 0.5
    batch = dict(ShardPairs(str(shards), DataOptions(resolution=32)).batch(0, 2), semantic_prompt=["a house", "a cat"])
    empty = dict(batch, restoration_prompt=["", ""], semantic_prompt=["", ""])

    def loss(b: dict, rate: float) -> torch.Tensor:
        m.config.condition_dropout = rate
        return m.training_step(b, step_generator(0, 0, 0))["loss"]

    dropped, kept = loss(batch, 1.0), loss(batch, 0.0)
    assert torch.equal(dropped, loss(empty, 0.0)) and not torch.equal(dropped, kept)


def test_guidance_is_the_null_condition_plus_g_times_the_difference() -> None:
    """``restore`` with guidance g: DDIM on ``eps_null + g (eps - eps_null)``, the null branch both prompts ""."""
    from pirs.models.sampling import make_sampler

    m = _prompted(1)
    lq = torch.rand(1, 3, 24, 40, generator=torch.Generator().manual_seed(4)) * 2 - 1
    batch = {"lq": lq, "restoration_prompt": ["Denoise with sigma 0.06"], "semantic_prompt": ["a house"]}
    tiles = {"tile_size": 64, "vae_decoder_tile": 64}
    plain = m.predict(batch, 3, torch.Generator().manual_seed(5), guidance_scale=1.0, **tiles)
    guided = m.predict(batch, 3, torch.Generator().manual_seed(5), guidance_scale=3.0, **tiles)
    assert (plain - guided).abs().max() > 1e-3
    sched = make_sampler("ddim", m.scheduler_config, 3)
    z = torch.randn((1, 4, 12, 20), generator=torch.Generator().manual_seed(5)) * sched.init_noise_sigma
    r, s, null = m.text(batch["restoration_prompt"]), m.text(batch["semantic_prompt"]), m.text([""])
    with torch.no_grad():
        for t in sched.timesteps:
            eps, eps_null = m.eps(z, t, lq, r, s), m.eps(z, t, lq, null, null)
            z = sched.step(eps_null + 3.0 * (eps - eps_null), t, z).prev_sample
        want = m.vae.decode(z / m.vae.config.scaling_factor).sample.clamp(-1, 1)
    assert torch.equal(guided, want)




def test_real_size_parameter_counts_against_the_paper() -> None:
    """SD 1.5 shapes on the meta device: the totals the README explains (paper: 1240 M, 275 M trainable)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from pirs.models.components import SDComponents, tiny_tokenizer
    from pirs.models.method import load_config

    with torch.device("meta"):
        parts = SDComponents(unet=UNet2DConditionModel(**SD15_UNET), vae=AutoencoderKL(**SD15_VAE),
                             text_encoder=CLIPTextModel(CLIPTextConfig(hidden_size=768, num_hidden_layers=1)),
                             tokenizer=tiny_tokenizer(77), scheduler_config={})
        m = Spire(load_config("spire", "sd15"), parts)

    def count(*mods) -> int:
        return sum(p.numel() for mod in mods for p in mod.parameters())

    trainable, unet = m.parameter_counts()["trainable"], count(m.unet)
    fusion = count(m.skip_fusion, m.mid_fusion)
    assert abs(trainable / 1e6 - 372.1) < 0.1  # +35% on the paper's 275 M: the README's SPIRE section says why
    assert abs((unet + trainable) / 1240e6 - 1) < 0.01  # the paper's "UNet model has 1240 M" (line 266)
    assert count(m.encoder) > 275e6  # a copy of SD 1.5's encoder half alone exceeds the paper's trainable count
    # Tab. 7: modulating the skips costs 1.03x the parameters of ControlNet-SR, whose zero convs are c -> c.
    zero_convs = sum(f.to_gamma_beta.in_channels * (f.to_gamma_beta.in_channels + 1)
                     for f in [*m.skip_fusion, m.mid_fusion])
    assert abs(trainable / (trainable - fusion + zero_convs) - 1.03) < 0.005


def test_latent_is_the_vae_posterior_mean() -> None:
    m = build_method("spire", "tiny", [], None)
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        want = m.vae.encode(x).latent_dist.mean * m.vae.config.scaling_factor
    assert torch.equal(m.latents(x), want)


def test_sd15_config_cites_every_value() -> None:
    """Every key of the SD 1.5 config carries its source (the paper's line, other code, or 'pirs'), and the
    choices the README's SPIRE section lists hold."""
    from pirs.models.method import load_config

    path = Path(__file__).resolve().parents[1] / "models" / "configs" / "spire" / "sd15.yaml"
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            assert "  # " in line, line
    c = load_config("spire", "sd15")
    assert (c.steps, c.sampler, c.guidance_scale, c.negative_prompt, c.added_prompt) == (50, "ddim", 1.0, "", "")
    assert (c.resolution, c.learning_rate, c.lq_embedding_width, c.semantic_field) == (512, 5e-5, 128,
                                                                                       "caption_source")


def test_mid_feature_is_modulated_like_the_skips() -> None:
    """The mid-block feature fuses as ``(1 + gamma) * mid + beta`` too (a pirs choice, the README's SPIRE section)."""
    m = build_method("spire", "tiny", [], None)
    z, t = torch.randn(1, 4, 16, 16), torch.tensor([500])
    lq, s = torch.rand(1, 3, 32, 32) * 2 - 1, m.text(["a photo"])
    r = m.text(["Deblur with sigma 2.0"])
    plain = m.unet(z, t, encoder_hidden_states=s).sample
    with torch.no_grad():
        m.mid_fusion.to_gamma_beta.bias.fill_(0.5)  # beta = gamma = 0.5 on the mid feature only
    assert (m.eps(z, t, lq, r, s) - plain).abs().max() > 1e-3


def test_lq_embedding_reaches_the_latent_grid_and_starts_at_zero() -> None:
    m = build_method("spire", "tiny", [], None)
    lq = torch.rand(2, 3, 32, 48) * 2 - 1
    assert m.lq_embedding(lq).shape == (2, m.config.lq_embedding_channels, 32 // m.latent_factor,
                                        48 // m.latent_factor)
    latent_in = m.unet.conv_in.in_channels
    assert torch.count_nonzero(m.encoder.conv_in.weight[:, latent_in:]) == 0
    assert torch.equal(m.encoder.conv_in.weight[:, :latent_in], m.unet.conv_in.weight)

