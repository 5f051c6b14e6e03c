"""XPSR on tiny random models: SFA, the degradation-free constraint, train, resume, predict, score."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from pirs.captioning.run import CaptionConfig, run
from pirs.degrade.build import BuildConfig, build
from pirs.degrade.shards import ShardWriter, iter_records, shard_paths
from pirs.models.components import save_sd, tiny_sd
from pirs.models.data import ShardPairs, collate
from pirs.models.method import load_config
from pirs.models.predict import PredictConfig, load_trained, predict
from pirs.models.train import TrainConfig, build_method, data_options, train
from pirs.models.xpsr import SemanticFusionAttention, Xpsr

HIGH = ["a red house beside a green field", "a cat on a wooden table", "two people walking a dog"]


@pytest.fixture(scope="module")
def shards(tmp_path_factory, photos_dir) -> Path:
    """Tiny shards with XPSR's two captions: low-level by `caption run` (template), high-level set per record."""
    root = tmp_path_factory.mktemp("xpsr")
    raw = root / "raw"
    build(BuildConfig(pipeline="parameterized", out=str(raw), input=str(photos_dir), num_samples=6, crop_size=32,
                      shard_size=3, progress=False))
    out = root / "shards"
    run(CaptionConfig(shards=str(raw), out=str(out), backend="template", progress=False))
    for shard in shard_paths(out):
        rows = list(iter_records(shard))
        with ShardWriter(shard) as w:
            for key, rec, members in rows:
                rec = dict(rec, caption_high=HIGH[int(key) % 3])
                w.write(key, {**members, "json": json.dumps(rec, sort_keys=True).encode()})
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory, shards) -> Path:
    out = tmp_path_factory.mktemp("xpsr") / "run"
    train(TrainConfig(method="xpsr", data=str(shards), out=str(out), max_steps=4, batch_size=2, checkpoint_every=2,
                      progress=False, learning_rate=3e-3))
    return out


def test_captions_come_from_the_shards(shards) -> None:
    m = build_method("xpsr", "tiny", [], None)
    b = ShardPairs(str(shards), data_options(m, 0)).batch(0, 2)
    assert all(c in HIGH for c in b["caption_high"])
    assert all(c.startswith("The image") for c in b["caption_low"])  # the template backend's low-level caption


def test_trainable_parts_and_sfa() -> None:
    m = build_method("xpsr", "tiny", [], None)
    counts = m.parameter_counts()
    own = sum(p.numel() for mod in (m.controlnet, m.pixel_heads, m.latent_heads) for p in mod.parameters())
    assert counts["trainable"] == own and counts["frozen"] == sum(
        p.numel() for mod in (m.unet, m.vae, m.text_encoder) for p in mod.parameters())
    sfa = [mod for mod in m.controlnet.modules() if isinstance(mod, SemanticFusionAttention)]
    assert len(sfa) == m.n_sfa > 0
    assert not any(isinstance(mod, SemanticFusionAttention) for mod in m.unet.modules())  # the UNet: high-level only


def test_sfa_fuses_low_into_high_and_starts_as_the_cross_attention() -> None:
    from diffusers.models.attention_processor import Attention

    base = Attention(query_dim=8, cross_attention_dim=6, heads=2, dim_head=4)
    sfa = SemanticFusionAttention(base, high_tokens=3)
    x, c_h, c_l = torch.randn(2, 5, 8), torch.randn(2, 3, 6), torch.randn(2, 4, 6)
    joined = torch.cat([c_h, c_l], dim=1)
    torch.testing.assert_close(sfa(x, encoder_hidden_states=joined), base(x, encoder_hidden_states=c_h))
    torch.nn.init.normal_(sfa.ca_fusion.to_out[0].weight)
    h, low = sfa.ca_high(x, encoder_hidden_states=c_h), sfa.ca_low(x, encoder_hidden_states=c_l)
    torch.testing.assert_close(sfa(x, encoder_hidden_states=joined), h + sfa.ca_fusion(h, encoder_hidden_states=low))
    other = torch.cat([c_h, torch.randn(2, 4, 6)], dim=1)
    assert not torch.allclose(sfa(x, encoder_hidden_states=joined), sfa(x, encoder_hidden_states=other))


def test_dfc_term_and_its_weight(shards) -> None:
    m = build_method("xpsr", "tiny", [], None)
    batch = ShardPairs(str(shards), data_options(m, 0)).batch(0, 2)
    out = m.training_step(batch, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out["loss"], out["diffusion"] + 0.05 * out["dfc"])
    z0 = m.latents(batch["hq"])
    direct = sum(F.l1_loss(h(f), F.adaptive_avg_pool2d(batch["hq"], f.shape[-2:]))
                 for h, f in zip(m.pixel_heads.heads, m._feats["pixel"], strict=True))
    direct = direct + sum(F.l1_loss(h(f), F.adaptive_avg_pool2d(z0, f.shape[-2:]))
                          for h, f in zip(m.latent_heads.heads, m._feats["latent"], strict=True))
    torch.testing.assert_close(out["dfc"], direct.detach())
    sizes = sorted({f.shape[-1] for f in m._feats["pixel"]})
    assert len(sizes) == 2 and sizes[-1] == 32  # several scales, the finest at the image size


def test_train_resume_predict_and_score(tmp_path, shards, trained) -> None:
    from safetensors.torch import load_file

    from pirs.benchmark.evaluate import EvalConfig, evaluate

    a = tmp_path / "a"
    args = {"method": "xpsr", "data": str(shards), "batch_size": 2, "checkpoint_every": 2, "progress": False,
            "learning_rate": 3e-3}
    train(TrainConfig(out=str(a), max_steps=2, **args))
    train(TrainConfig(out=str(a), max_steps=4, **args))
    x = load_file(trained / "checkpoint-0000004" / "model.safetensors")
    y = load_file(a / "checkpoint-0000004" / "model.safetensors")
    assert all(torch.equal(x[k], y[k]) for k in x)
    out = tmp_path / "pred"
    predict(PredictConfig(checkpoint=str(trained), input=str(shards), out=str(out), steps=3, progress=False))
    assert sorted(p.stem for p in out.glob("*.png")) == [f"{i:08d}" for i in range(6)]
    res = evaluate(EvalConfig(predictions=str(out), reference=str(shards), metrics="psnr", progress=False,
                              out=str(tmp_path / "r.json")))
    assert res["method"]["name"] == "xpsr" and res["count"] == 6


def test_loss_falls_when_overfitting_one_batch(shards) -> None:
    m = build_method("xpsr", "tiny", [], None)
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


def test_the_low_level_caption_reaches_the_output(shards, trained) -> None:
    model, _, _ = load_trained(str(trained))
    s = ShardPairs(str(shards), data_options(model, 0)).sample(0)
    lows = ("The image is sharp and clean", "The image is blurry, dark and noisy")
    outs = [model.predict(collate([dict(s, caption_low=c)]), 3, torch.Generator().manual_seed(2)) for c in lows]
    assert not torch.equal(outs[0], outs[1])
    # through SFA: the ControlNet's residuals into the UNet change with the low-level caption
    torch.set_grad_enabled(False)
    z, t = torch.randn(1, 4, 16, 16), torch.tensor([500])
    c_h = model.text([s["caption_high"]])
    res = [model.controlnet(z, t, encoder_hidden_states=torch.cat([c_h, model.text([c])], dim=1),
                            controlnet_cond=s["lq"][None], return_dict=False) for c in lows]
    diff = max(float((a - b).abs().max()) for a, b in zip(res[0][0], res[1][0], strict=True))
    scale = max(float(a.abs().max()) for a in res[0][0])
    assert diff > 1e-6 and scale > 0  # small after 4 steps from zero-initialized fusion, but there
    fresh = build_method("xpsr", "tiny", [], None)  # untrained: zero-initialized fusion, the caption cannot matter
    res = [fresh.controlnet(z, t, encoder_hidden_states=torch.cat([c_h, fresh.text([c])], dim=1),
                            controlnet_cond=s["lq"][None], return_dict=False) for c in lows]
    assert all(torch.equal(a, b) for a, b in zip(res[0][0], res[1][0], strict=True))
    torch.set_grad_enabled(True)


def test_loads_a_local_stable_diffusion_folder(tmp_path) -> None:
    parts = tiny_sd(seed=5)
    save_sd(parts, str(tmp_path / "sd"))
    m = Xpsr.build(load_config("xpsr", "tiny", ["variant=sd"]), base=str(tmp_path / "sd"))
    assert all(torch.equal(p, q) for p, q in zip(m.unet.parameters(), parts.unet.parameters(), strict=True))
    assert not any(p.requires_grad for p in m.unet.parameters())
