"""DPIR on a tiny SD3 transformer: LQ branch with cross-normalization, dual prompting, flow matching, robust VAE.

Each deliberate choice in the README's DPIR section's table is pinned by a test named there.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pirs.degrade.build import BuildConfig, build
from pirs.models.components import WeightsMissing
from pirs.models.data import ShardPairs, collate
from pirs.models.dpir import Dpir, context_box, cross_normalize, logit_normal, shifted, tiny_sd3
from pirs.models.method import ConfigError, load_config
from pirs.models.predict import PredictConfig, load_trained, predict
from pirs.models.tiling import Box
from pirs.models.train import TrainConfig, build_method, data_options, train


@pytest.fixture(scope="module")
def shards(tmp_path_factory, photos_dir) -> Path:
    out = tmp_path_factory.mktemp("dpir") / "shards"
    build(BuildConfig(pipeline="parameterized", out=str(out), input=str(photos_dir), num_samples=6, crop_size=32,
                      shard_size=3, progress=False))
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory, shards) -> Path:
    out = tmp_path_factory.mktemp("dpir") / "run"
    train(TrainConfig(method="dpir", data=str(shards), out=str(out), max_steps=4, batch_size=2, checkpoint_every=2,
                      progress=False, learning_rate=3e-3))
    return out


@pytest.fixture(scope="module")
def tiny() -> Dpir:
    return build_method("dpir", "tiny", [], None)


def random_batch(n: int, size: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    lq, hq = (torch.rand(n, 3, size, size, generator=g) * 2 - 1 for _ in range(2))
    return {"lq": lq, "hq": hq, "semantic_prompt": ["a photo"] * n}


def test_trainable_parts_per_stage(tiny) -> None:
    m = tiny
    own = sum(p.numel() for mod in (m.transformer, m.lq_branch) for p in mod.parameters())
    assert m.parameter_counts()["trainable"] == own
    frozen = (m.vae, m.text_encoder, m.image_encoder, m.image_encoder_2, m.robust_encoder)
    assert not any(p.requires_grad for mod in frozen for p in mod.parameters())
    v = build_method("dpir", "tiny", ["stage=vae"], None)
    assert v.parameter_counts()["trainable"] == sum(p.numel() for p in v.robust_encoder.parameters()) > 0
    opts = data_options(m, 0)  # the T5 half reads the high-level caption, dropped to "" 10% of the time
    assert (opts.semantic_field, opts.semantic_dropout) == ("caption_high", 0.1)


def test_transformer_path_and_cross_normalization(tiny) -> None:
    m = build_method("dpir", "tiny", [], None)
    z, zl = torch.randn(2, 16, 8, 8), torch.randn(2, 16, 8, 8)
    lq = torch.rand(2, 3, 32, 32) * 2 - 1
    vis, pooled = m.visual_prompt(lq[..., :16, :16], lq)
    g_tokens, _ = m.clip_view(lq)
    l_tokens, l_pooled = m.clip_view(lq[..., :16, :16])
    torch.testing.assert_close(vis, torch.cat([g_tokens, l_tokens], dim=1))  # c^vis_{G-L}: global, then local
    torch.testing.assert_close(pooled, l_pooled)  # c_pool: the local view's (seed 000, Sec. 3.3)
    c, pooled = m.dual_prompt(vis, pooled, m.text_prompt(["a photo", ""], "cpu"))
    assert c.shape[1] == 2 * 17 + 16  # global then local view (16 CLIP patches + class each), then T5
    vae = m.vae.config  # latents are the posterior mean, shifted and scaled as SD3's are
    want = (m.vae.encode(lq).latent_dist.mean - vae.shift_factor) * vae.scaling_factor
    torch.testing.assert_close(m.encode(lq), want)
    s = torch.tensor([0.3, 0.8])
    ref = m.transformer(hidden_states=z, timestep=s * 1000, encoder_hidden_states=c, pooled_projections=pooled).sample
    torch.testing.assert_close(m.velocity(z, s, zl, c, pooled, lq_branch=False), ref)
    torch.testing.assert_close(m.velocity(z, s, zl, c, pooled), ref)  # the gate starts at zero
    with torch.no_grad():
        m.lq_branch.gate.fill_(1.0)
    assert not torch.allclose(m.velocity(z, s, zl, c, pooled), ref)
    assert not torch.allclose(m.velocity(z, s, zl, c, pooled), m.velocity(z, s, torch.randn_like(zl), c, pooled))
    cond, main = torch.randn(2, 7, 5) * 3 + 1, torch.randn(2, 7, 5) * 0.5 - 2
    out = cross_normalize(cond, main)
    for i in range(2):
        assert abs(float(out[i].mean() - main[i].mean())) < 1e-5
        assert abs(float(out[i].std() - main[i].std())) < 1e-4


# ------------------------------------------------------------------ issue 16.2: two CLIP image encoders


def test_two_clip_image_encoders_are_joined_as_sd3_joins_its_text_encoders(tiny) -> None:
    """Tokens side by side (penultimate layer), pooled embeddings end to end, zero-padded to SD3's widths."""
    import torch.nn.functional as F

    m = tiny
    view = torch.rand(1, 3, 24, 24) * 2 - 1
    tokens, pooled = m.clip_view(view)
    outs = []
    for enc in (m.image_encoder, m.image_encoder_2):
        x = F.interpolate((view + 1) / 2, size=(32, 32), mode="bicubic", align_corners=False, antialias=True)
        mean = torch.tensor([0.48145466, 0.4578275, 0.40821073])[None, :, None, None]
        std = torch.tensor([0.26862954, 0.26130258, 0.27577711])[None, :, None, None]
        outs.append(enc(pixel_values=(x - mean) / std, output_hidden_states=True))
    w1, w2 = m.image_encoder.config.hidden_size, m.image_encoder_2.config.hidden_size
    assert w1 != w2 and tokens.shape == (1, 17, w1 + w2)
    torch.testing.assert_close(tokens[..., :w1], outs[0].hidden_states[-2])
    torch.testing.assert_close(tokens[..., w1:], outs[1].hidden_states[-2])
    torch.testing.assert_close(pooled, torch.cat([outs[0].image_embeds, outs[1].image_embeds], dim=-1))
    c, p = m.dual_prompt(torch.cat([tokens, tokens], dim=1), pooled, m.text_prompt([""], "cpu"))
    assert c.shape[-1] == m.transformer.config.joint_attention_dim and not c[:, :34, w1 + w2:].any()
    assert p.shape[-1] == m.transformer.config.pooled_projection_dim
    t, v, t5, tok, a, b = tiny_sd3()  # towers of different token counts cannot be joined side by side
    b2 = type(b)(type(b.config)(**{**b.config.to_dict(), "patch_size": 4}))
    with pytest.raises(ConfigError, match="same image_size / patch_size"):
        Dpir(load_config("dpir", "tiny"), t, v, t5, tok, a, b2)


# ------------------------------------------------------------------ issue 16.1: global-local views


def test_the_global_view_contains_the_local_one_and_is_clamped_to_the_image() -> None:
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        hgt, wid = (int(v) for v in torch.randint(8, 60, (2,), generator=g))
        h, w = (int(torch.randint(1, n + 1, (1,), generator=g)) for n in (hgt, wid))
        y, x = (int(torch.randint(0, n - k + 1, (1,), generator=g)) for n, k in ((hgt, h), (wid, w)))
        scale = float(torch.rand(1, generator=g)) * 3 + 1
        c = context_box(Box(y, x, h, w), hgt, wid, scale)
        assert 0 <= c.y0 <= y and y + h <= c.y0 + c.h <= hgt and 0 <= c.x0 <= x and x + w <= c.x0 + c.w <= wid
        assert c.h == min(hgt, max(h, round(scale * h))) and c.w == min(wid, max(w, round(scale * w)))
    assert context_box(Box(16, 16, 16, 16), 64, 64, 2.0) == Box(8, 8, 32, 32)  # centred when it fits


def contains(big: torch.Tensor, small: torch.Tensor) -> bool:
    """Whether ``small`` (C, h, w) appears pixel for pixel somewhere in ``big`` (C, H, W)."""
    h, w = small.shape[-2:]
    return any(torch.equal(big[..., i:i + h, j:j + w], small) for i in range(big.shape[-2] - h + 1)
               for j in range(big.shape[-1] - w + 1))


def test_training_views_are_cut_from_the_crop_with_the_steps_generator(tiny) -> None:
    m = tiny
    batch = random_batch(3, 32)
    a = m.training_views(batch, torch.Generator().manual_seed(1))
    b = m.training_views(batch, torch.Generator().manual_seed(1))
    c = m.training_views(batch, torch.Generator().manual_seed(2))
    assert a["local"] == b["local"] and torch.equal(a["lq"], b["lq"]) and torch.equal(a["hq"], b["hq"])
    assert a["local"] != c["local"]
    assert a["lq"].shape[-1] == 16 and a["lq_global"].shape[-1] == 32  # 32 px crop / global_scale 2
    assert len({(box.y0, box.x0) for box in a["local"] + c["local"]}) > 3
    for i in range(3):
        assert contains(a["lq_global"][i], a["lq"][i]) and contains(batch["hq"][i], a["hq"][i])
        box = a["local"][i]
        assert torch.equal(a["hq"][i], batch["hq"][i, :, box.y0:box.y0 + 16, box.x0:box.x0 + 16])
        assert torch.equal(a["lq_global"][i], batch["lq"][i])  # resolution = 2 x local: the whole crop
    with torch.no_grad():
        same = [float(m.training_step(batch, torch.Generator().manual_seed(k))["loss"]) for k in (1, 1, 2)]
    assert same[0] == same[1] != same[2]


def test_each_tile_is_restored_with_its_own_global_local_prompt(tiny) -> None:
    m = tiny
    lq = torch.rand(1, 3, 32, 48, generator=torch.Generator().manual_seed(3)) * 2 - 1
    views, prompts = [], []
    real_views, real_velocity = m.tile_views, m.velocity

    def tile_views(x, box):
        out = real_views(x, box)
        views.append((box, *out))
        return out

    def velocity(z_t, sigma, z_lq, c_dual, pooled, lq_branch=True):
        prompts.append((c_dual, pooled))
        return real_velocity(z_t, sigma, z_lq, c_dual, pooled, lq_branch)

    m.tile_views, m.velocity = tile_views, velocity
    try:
        m.predict({"lq": lq, "semantic_prompt": ["a house"]}, 2, torch.Generator().manual_seed(0), tile_size=8,
                  tile_overlap=4, vae_decoder_tile=8, vae_encoder_tile=8, vae_tile_overlap=4)
    finally:
        del m.tile_views, m.velocity
    assert len(views) == 3 * 5  # (16 - 8) / 4 + 1 by (24 - 8) / 4 + 1 latent tiles, each prompted once
    assert len(prompts) == 2 * len(views)  # two steps reuse the tiles' prompts
    for box, local, glob in views:
        assert torch.equal(local, box.scaled(2).crop(lq)) and local.shape[-2:] == (16, 16)
        assert glob.shape[-2:] == (32, 32) and contains(glob[0], local[0])  # 2 x the tile, inside the image
    first = prompts[:len(views)]
    assert len({c.sum().item() for c, _ in first}) == len(first)  # every tile has its own visual tokens
    assert len({p.sum().item() for _, p in first}) == len(first)  # and its own pooled embedding
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, prompts[len(views):], strict=True))


# ------------------------------------------------------------------ issue 16.3: one shift for training and sampling


def test_training_noise_levels_use_the_samplers_shift(tiny) -> None:
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers.training_utils import compute_density_for_timestep_sampling

    table = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0).sigmas
    torch.testing.assert_close(shifted(torch.arange(1000, 0, -1) / 1000, 3.0), table)  # the scheduler's shift
    m = tiny
    assert m.config.shift == 3.0 == load_config("dpir", "sd3").shift  # SD3 medium's scheduler_config.json
    # diffusers' SD3 training (train_dreambooth_sd3.py): a logit-normal u indexes the shifted table
    u = compute_density_for_timestep_sampling("logit_normal", 50000, logit_mean=0.0, logit_std=1.0,
                                              generator=torch.Generator().manual_seed(0))
    theirs = table[(u * 1000).long()]
    ours = m.noise_levels(50000, torch.Generator().manual_seed(1))
    q = torch.linspace(0.02, 0.98, 25)
    assert float((torch.quantile(ours, q) - torch.quantile(theirs, q)).abs().max()) < 0.015
    assert float(ours.median()) > 0.7  # shift 3 moves the median from 0.5 to 0.75
    seen = []
    real = m.velocity
    m.velocity = lambda z, t, *a, **k: (seen.append(t.clone()), real(z, t, *a, **k))[1]
    try:
        batch = random_batch(4, 32)
        m.training_step(batch, torch.Generator().manual_seed(5))
        m.config.shift = 1.0
        m.training_step(batch, torch.Generator().manual_seed(5))
        m.config.shift = 3.0
        m.predict({"lq": batch["lq"][:1], "semantic_prompt": [""]}, 4, torch.Generator().manual_seed(0))
    finally:
        m.config.shift = 3.0
        del m.velocity
    torch.testing.assert_close(seen[0], shifted(seen[1], 3.0))
    assert not torch.allclose(seen[0], seen[1])
    sampler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0)
    sampler.set_timesteps(4)
    torch.testing.assert_close(torch.cat(seen[2:]), sampler.sigmas[:-1].float())


def test_logit_normal_timesteps() -> None:
    s = logit_normal(20000, torch.Generator().manual_seed(0))
    assert 0 < float(s.min()) and float(s.max()) < 1
    logit = torch.log(s / (1 - s))
    assert abs(float(logit.mean())) < 0.03 and abs(float(logit.std()) - 1) < 0.03


# ------------------------------------------------------------------ issue 16.5: real sizes


def test_real_size_parameter_counts_on_the_meta_device() -> None:
    """SD3 medium (the paper's "2B" DiT, within 5%), an LQ branch far smaller than the DiT (phi_c << theta_d)."""
    from pirs.models.dpir import sd3_architecture

    with torch.device("meta"):
        m = Dpir(load_config("dpir", "sd3"), *sd3_architecture())

    def count(mod) -> float:
        return sum(p.numel() for p in mod.parameters()) / 1e6

    c = {k: v / 1e6 for k, v in m.parameter_counts().items()}
    assert abs(count(m.transformer) / 2000 - 1) < 0.05
    assert count(m.lq_branch) < 0.01 * count(m.transformer)
    assert c["trainable"] == pytest.approx(count(m.transformer) + count(m.lq_branch))
    assert round(c["trainable"]) == 2031 and round(c["frozen"]) == 7029  # the README's DPIR section
    assert (round(count(m.image_encoder)), round(count(m.image_encoder_2)), round(count(m.text_encoder))) == \
        (304, 1845, 4762)
    enc, enc2, tr = m.image_encoder.config, m.image_encoder_2.config, m.transformer.config
    assert enc.projection_dim + enc2.projection_dim == tr.pooled_projection_dim  # 768 + 1280 = 2048, as SD3's text


def test_every_sd3_default_names_its_source() -> None:
    """Each key of sd3.yaml carries a comment (a source, or "pirs" where DPIR is silent); the tile is the patch."""
    from pirs.models.method import configs_dir

    lines = [x for x in (configs_dir("dpir") / "sd3.yaml").read_text().splitlines() if x and not x.startswith("#")]
    bare = [x.split(":")[0] for x in lines if "#" not in x and x.split(":")[0] not in ("variant", "seed")]
    assert not bare
    c = load_config("dpir", "sd3")
    assert (c.steps, c.sampler, c.guidance_scale, c.t5_max_length) == (28, "flow-euler", 1.0, 256)  # SD3 pipeline's
    assert c.tile_size * 8 == c.resolution / c.global_scale == 512  # inference tiles are the training patch


# ------------------------------------------------------------------ training, prediction, weights


def test_train_resume_predict_and_score(tmp_path, shards, trained) -> None:
    from safetensors.torch import load_file

    from pirs.benchmark.evaluate import EvalConfig, evaluate

    a = tmp_path / "a"
    args = {"method": "dpir", "data": str(shards), "batch_size": 2, "checkpoint_every": 2, "progress": False,
            "learning_rate": 3e-3}
    train(TrainConfig(out=str(a), max_steps=2, **args))
    train(TrainConfig(out=str(a), max_steps=4, **args))
    x = load_file(trained / "checkpoint-0000004" / "model.safetensors")
    y = load_file(a / "checkpoint-0000004" / "model.safetensors")
    assert all(torch.equal(x[k], y[k]) for k in x)
    out = tmp_path / "pred"
    predict(PredictConfig(checkpoint=str(trained), input=str(shards), out=str(out), steps=3, progress=False))
    assert json.loads((out / "run.json").read_text())["sampler"] == "flow-euler"
    res = evaluate(EvalConfig(predictions=str(out), reference=str(shards), metrics="psnr", progress=False,
                              out=str(tmp_path / "r.json")))
    assert res["method"]["name"] == "dpir" and res["count"] == 6


def test_the_lq_branch_changes_the_output_after_training(shards, trained) -> None:
    model, _, _ = load_trained(str(trained))
    assert float(model.lq_branch.gate.detach()) != 0.0
    batch = collate([ShardPairs(str(shards), data_options(model, 0)).sample(0)])
    with_branch = model.predict(batch, 3, torch.Generator().manual_seed(0))
    without = model.predict(batch, 3, torch.Generator().manual_seed(0), lq_branch=False)
    assert not torch.equal(with_branch, without)


def test_loss_falls_and_the_robust_encoder_learns(shards) -> None:
    for stage in ("dit", "vae"):
        m = build_method("dpir", "tiny", [f"stage={stage}"], None)
        batch = ShardPairs(str(shards), data_options(m, 0)).batch(0, 2)
        batch["semantic_prompt"] = ["a photo"] * 2
        opt = torch.optim.AdamW(m.trainable_parameters(), lr=3e-3)
        m.train()
        losses = []
        for _ in range(12):
            opt.zero_grad()
            loss = m.training_step(batch, torch.Generator().manual_seed(0))["loss"]
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        assert losses[-1] < 0.85 * losses[0], (stage, losses)


def test_loads_a_local_sd3_folder_and_names_what_is_missing(tmp_path) -> None:
    cfg = load_config("dpir", "tiny")
    with pytest.raises(WeightsMissing, match=r"transformer/config.json.*stable-diffusion-3-medium"):
        Dpir.build(cfg, base=str(tmp_path / "sd3"))
    torch.manual_seed(0)
    parts = tiny_sd3()
    names = ("transformer", "vae", "text_encoder_3", "tokenizer_3", "image_encoder", "image_encoder_2")
    for name, part in zip(names[:-1], parts[:-1], strict=True):
        part.save_pretrained(tmp_path / "sd3" / name)
    with pytest.raises(WeightsMissing, match=r"missing image_encoder_2/config.json \(the OpenCLIP ViT-bigG/14") as e:
        Dpir.build(cfg, base=str(tmp_path / "sd3"))
    assert "image_encoder/" not in str(e.value).split(". On")[0]  # only what is missing is named
    parts[-1].save_pretrained(tmp_path / "sd3" / names[-1])
    m = Dpir.build(cfg, base=str(tmp_path / "sd3"))
    for got, want in ((m.transformer, parts[0]), (m.image_encoder_2, parts[-1])):
        assert all(torch.equal(p, q) for p, q in zip(got.parameters(), want.parameters(), strict=True))
    # a whole CLIPModel folder (as the CLIP repositories ship) gives its vision tower and projection
    from transformers import CLIPConfig, CLIPModel, CLIPTextConfig

    vision = parts[4].config.to_dict()
    text = CLIPTextConfig(hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2)
    full = CLIPModel(CLIPConfig(text_config=text.to_dict(), vision_config={**vision, "projection_dim": 512},
                                projection_dim=vision["projection_dim"]))
    full.vision_model.load_state_dict(parts[4].vision_model.state_dict())
    full.visual_projection.load_state_dict(parts[4].visual_projection.state_dict())
    full.save_pretrained(tmp_path / "sd3" / "image_encoder")
    m = Dpir.build(cfg, base=str(tmp_path / "sd3"))
    assert all(torch.equal(p, q) for p, q in zip(m.image_encoder.parameters(), parts[4].parameters(), strict=True))


# ------------------------------------------------------------------ issue 16.4: the robust encoder's loss


def test_robust_encoder_loss_is_l1_lpips_and_gan(tmp_path, shards) -> None:
    """L1 + lambda_lpips LPIPS (pyiqa's network, local random weights) + lambda_gan GAN, as Sec. 3.1 writes it."""
    import torch.hub
    import torchvision
    from pyiqa.archs.lpips_arch import LPIPS

    from pirs.models.dpir import LPIPS_FILES

    sd3 = load_config("dpir", "sd3")
    assert sd3.gan_weight == 0.1 and sd3.lpips_weight == 1.0  # the paper's three terms on (weights: Real-ESRGAN's)
    with pytest.raises(WeightsMissing, match="LPIPS_v0.1_alex"):
        build_method("dpir", "tiny", ["stage=vae", "lpips_weight=0.5", f"lpips_weights={tmp_path / 'w'}"], None)
    folder = tmp_path / "w"
    folder.mkdir()
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), folder / LPIPS_FILES[1])
    saved = torch.hub.get_dir()
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "hub" / "checkpoints" / LPIPS_FILES[1]).symlink_to(folder / LPIPS_FILES[1])
    torch.hub.set_dir(str(tmp_path / "hub"))
    try:
        torch.save(LPIPS(pretrained=False, net="alex").state_dict(), folder / LPIPS_FILES[0])
    finally:
        torch.hub.set_dir(saved)
    m = build_method("dpir", "tiny", ["stage=vae", "lpips_weight=0.5", f"lpips_weights={folder}", "gan_weight=0.1"],
                     None)
    assert m.lpips is not None and not any(p.requires_grad for p in m.lpips.parameters())
    assert m.discriminator is not None and all(p.requires_grad for p in m.discriminator.parameters())
    batch = ShardPairs(str(shards), data_options(m, 0)).batch(0, 2)
    out = m.training_step(batch, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out["loss"].detach(), out["l1"] + 0.5 * out["lpips"] + 0.1 * out["adv"] + out["disc"])
    rec = m.decode(m.encode(batch["lq"], robust=True))
    direct = m.lpips((rec + 1) / 2, (batch["hq"] + 1) / 2).mean()
    torch.testing.assert_close(out["lpips"], direct.detach())
