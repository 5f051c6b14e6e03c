"""DPIR on a tiny SD3 transformer: LQ branch with cross-normalization, dual prompting, flow matching, robust VAE."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pirs.degrade.build import BuildConfig, build
from pirs.models.components import WeightsMissing
from pirs.models.data import ShardPairs, collate
from pirs.models.dpir import Dpir, cross_normalize, logit_normal, tiny_sd3
from pirs.models.method import load_config
from pirs.models.predict import PredictConfig, load_trained, predict
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


def test_trainable_parts_per_stage() -> None:
    m = build_method("dpir", "tiny", [], None)
    own = sum(p.numel() for mod in (m.transformer, m.lq_branch) for p in mod.parameters())
    assert m.parameter_counts()["trainable"] == own
    assert not any(p.requires_grad for mod in (m.vae, m.text_encoder, m.image_encoder, m.robust_encoder)
                   for p in mod.parameters())
    v = build_method("dpir", "tiny", ["stage=vae"], None)
    assert v.parameter_counts()["trainable"] == sum(p.numel() for p in v.robust_encoder.parameters()) > 0


def test_transformer_path_and_cross_normalization() -> None:
    m = build_method("dpir", "tiny", [], None)
    z, zl = torch.randn(2, 16, 16, 16), torch.randn(2, 16, 16, 16)
    c, pooled = m.dual_prompt(torch.rand(2, 3, 32, 32) * 2 - 1, ["a photo", ""])
    assert c.shape[1] == 5 * 17 + 16  # global view + 2x2 patches of CLIP tokens (16 patches + class), then T5
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


def test_logit_normal_timesteps() -> None:
    s = logit_normal(20000, torch.Generator().manual_seed(0))
    assert 0 < float(s.min()) and float(s.max()) < 1
    logit = torch.log(s / (1 - s))
    assert abs(float(logit.mean())) < 0.03 and abs(float(logit.std()) - 1) < 0.03
    assert abs(float(s.mean()) - 0.5) < 0.01 and float(((s > 0.25) & (s < 0.75)).float().mean()) > 0.6


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
        for _ in range(15):
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
    transformer, vae, t5, tok, clip = tiny_sd3(cfg)
    for name, part in (("transformer", transformer), ("vae", vae), ("text_encoder_3", t5), ("tokenizer_3", tok),
                       ("image_encoder", clip)):
        part.save_pretrained(tmp_path / "sd3" / name)
    m = Dpir.build(cfg, base=str(tmp_path / "sd3"))
    assert all(torch.equal(p, q) for p, q in zip(m.transformer.parameters(), transformer.parameters(), strict=True))


def test_robust_encoder_lpips_term_with_local_weights(tmp_path, shards) -> None:
    """The LPIPS term runs pyiqa's real network from a local folder (random weights here, nothing downloaded)."""
    import torch.hub
    import torchvision
    from pyiqa.archs.lpips_arch import LPIPS

    from pirs.models.dpir import LPIPS_FILES

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
    m = build_method("dpir", "tiny", ["stage=vae", "lpips_weight=0.5", f"lpips_weights={folder}"], None)
    assert m.lpips is not None and not any(p.requires_grad for p in m.lpips.parameters())
    batch = ShardPairs(str(shards), data_options(m, 0)).batch(0, 2)
    out = m.training_step(batch, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out["loss"].detach(), out["l1"] + 0.5 * out["lpips"])
    rec = m.decode(m.encode(batch["lq"], robust=True))
    direct = m.lpips((rec + 1) / 2, (batch["hq"] + 1) / 2).mean()
    torch.testing.assert_close(out["lpips"], direct.detach())
