"""Diff-Restorer on tiny random models: visual prompts, degradation modulation, two stages, predict, score."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from pirs.degrade.build import BuildConfig, build
from pirs.degrade.labels import UNIVERSAL
from pirs.models.components import WeightsMissing, save_sd, tiny_sd
from pirs.models.data import ShardPairs
from pirs.models.diffrestorer import DegradationModulationBlock, DiffRestorer, label_targets, tiny_image_encoder
from pirs.models.method import load_config
from pirs.models.predict import PredictConfig, predict
from pirs.models.train import TrainConfig, build_method, data_options, train


@pytest.fixture(scope="module")
def shards(tmp_path_factory, photos_dir) -> Path:
    out = tmp_path_factory.mktemp("dr") / "shards"
    build(BuildConfig(pipeline="universal", out=str(out), input=str(photos_dir), num_samples=8, crop_size=32,
                      shard_size=4, progress=False))
    return out


@pytest.fixture(scope="module")
def stage1(tmp_path_factory, shards) -> Path:
    out = tmp_path_factory.mktemp("dr") / "stage1"
    train(TrainConfig(method="diffrestorer", data=str(shards), out=str(out), max_steps=4, batch_size=2,
                      checkpoint_every=2, progress=False, learning_rate=3e-3))
    return out


def test_trainable_parts_per_stage(stage1) -> None:
    m = build_method("diffrestorer", "tiny", [], None)
    c = m.parameter_counts()
    own = sum(p.numel() for mod in (m.prompt_processor, m.control_encoder, m.control_decoder, m.control_network)
              for p in mod.parameters())
    assert c["trainable"] == own
    assert not any(p.requires_grad for mod in (m.unet, m.vae, m.image_encoder, m.refinement) for p in mod.parameters())
    m2 = build_method("diffrestorer", "tiny", ["stage=2", f"stage1_checkpoint={stage1}"], None)
    own2 = sum(p.numel() for mod in (m2.vae.decoder, m2.refinement) for p in mod.parameters())
    assert m2.parameter_counts()["trainable"] == own2 > 0
    from safetensors.torch import load_file

    s1 = load_file(stage1 / "checkpoint-0000004" / "model.safetensors")
    mine = m2.state_dict()
    assert all(torch.equal(mine[k], v) for k, v in s1.items())  # stage two starts from stage one's weights


def test_degradation_modulation_block_and_labels() -> None:
    dmb = DegradationModulationBlock(4, 6)
    x, p_d = torch.randn(2, 4, 5, 5), torch.randn(2, 6)
    f = torch.sigmoid(dmb.modulation(p_d))[:, :, None, None]
    torch.testing.assert_close(dmb(x, p_d), dmb.res2(dmb.res1(x) * f))
    assert not torch.allclose(dmb(x, p_d), dmb(x, torch.randn(2, 6)))
    target, has = label_targets([["haze"], ["blur", "noise"], ["downsample"]])
    assert has.tolist() == [True, True, False]
    assert target[0, UNIVERSAL.index("haze")] == 1 and target[1, UNIVERSAL.index("blur")] == 0.5
    assert target[2].sum() == 0


def test_losses_are_eq_7(shards) -> None:
    m = build_method("diffrestorer", "tiny", [], None)
    batch = ShardPairs(str(shards), data_options(m, 0)).batch(0, 4)
    out = m.training_step(batch, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out["loss"], out["diff"] + out["deg"] + out["rec"], rtol=1e-5, atol=1e-6)
    _, p_d = m.visual_prompts(batch["lq"])
    target, has = label_targets(batch["labels"])
    want = F.cross_entropy(m.prompt_processor.classifier(p_d)[has], target[has])
    torch.testing.assert_close(out["deg"], want.detach())
    rec = F.mse_loss(m.control_decoder(m.control_encoder(batch["lq"], p_d)), batch["hq"])
    torch.testing.assert_close(out["rec"], rec.detach())


def test_the_degradation_label_reaches_the_control_path(shards) -> None:
    m = build_method("diffrestorer", "tiny", [], None)
    data = ShardPairs(str(shards), data_options(m, 0))
    batch = data.batch(0, 8)
    assert len({tuple(x) for x in batch["labels"]}) >= 3  # several degradation types in the batch
    opt = torch.optim.AdamW(list(m.prompt_processor.parameters()), lr=1e-2)
    target, has = label_targets(batch["labels"])
    losses = []
    for _ in range(25):
        opt.zero_grad()
        _, p_d = m.visual_prompts(batch["lq"])
        loss = F.cross_entropy(m.prompt_processor.classifier(p_d)[has], target[has])
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.7 * losses[0], losses
    # different degradation embeddings give different control features for the same image
    lq = batch["lq"][:1]
    _, p_d = m.visual_prompts(batch["lq"])
    c0 = m.control_encoder(lq, p_d[:1])
    others = [m.control_encoder(lq, p_d[i:i + 1]) for i in range(1, 8) if batch["labels"][i] != batch["labels"][0]]
    assert others and all((c0 - o).abs().max() > 1e-6 for o in others)


def test_stage_one_resume_predict_and_score(tmp_path, shards, stage1) -> None:
    from safetensors.torch import load_file

    from pirs.benchmark.evaluate import EvalConfig, evaluate

    a = tmp_path / "a"
    args = {"method": "diffrestorer", "data": str(shards), "batch_size": 2, "checkpoint_every": 2,
            "progress": False, "learning_rate": 3e-3}
    train(TrainConfig(out=str(a), max_steps=2, **args))
    train(TrainConfig(out=str(a), max_steps=4, **args))
    x = load_file(stage1 / "checkpoint-0000004" / "model.safetensors")
    y = load_file(a / "checkpoint-0000004" / "model.safetensors")
    assert all(torch.equal(x[k], y[k]) for k in x)
    out = tmp_path / "pred"
    predict(PredictConfig(checkpoint=str(stage1), input=str(shards), out=str(out), steps=3, progress=False))
    run = json.loads((out / "run.json").read_text())
    assert run["sampler"] == "unipc" and len(run["prompts"]) == 8
    res = evaluate(EvalConfig(predictions=str(out), reference=str(shards), metrics="psnr", progress=False,
                              out=str(tmp_path / "r.json")))
    assert res["method"]["name"] == "diffrestorer" and res["count"] == 8


def test_stage_two_trains_the_decoder_only(tmp_path, shards, stage1) -> None:
    from pirs.models.cli import main

    out = tmp_path / "stage2"
    assert main(["train", "--method", "diffrestorer", "--stage", "2", "--set", f"stage1_checkpoint={stage1}",
                 "--data", str(shards), "--out", str(out), "--max-steps", "3", "--batch-size", "2", "--quiet",
                 "--learning-rate", "0.003"]) == 0
    from safetensors.torch import load_file

    w = load_file(next(out.glob("checkpoint-*")) / "model.safetensors")
    assert w and all(k.startswith(("vae.decoder.", "refinement.")) for k in w)
    assert any(k.startswith("refinement.") and v.abs().sum() > 0 for k, v in w.items() if k.endswith("conv2.weight"))
    assert main(["predict", "--checkpoint", str(out), "--input", str(shards), "--out", str(tmp_path / "p"),
                 "--steps", "2", "--quiet"]) == 0
    assert len(list((tmp_path / "p").glob("*.png"))) == 8
    assert main(["train", "--method", "diffrestorer", "--stage", "2", "--data", str(shards), "--out",
                 str(tmp_path / "x"), "--max-steps", "1", "--quiet"]) == 2  # stage 2 without stage 1


def test_loads_local_weights_and_names_what_is_missing(tmp_path) -> None:
    parts = tiny_sd(seed=2)
    save_sd(parts, str(tmp_path / "sd"))
    cfg = load_config("diffrestorer", "tiny", ["variant=sd"])
    with pytest.raises(WeightsMissing, match=r"image_encoder/config.json.*clip-vit-large-patch14"):
        DiffRestorer.build(cfg, base=str(tmp_path / "sd"))
    tiny_image_encoder(cfg, parts).save_pretrained(tmp_path / "sd" / "image_encoder")
    m = DiffRestorer.build(cfg, base=str(tmp_path / "sd"))
    assert all(torch.equal(p, q) for p, q in zip(m.unet.parameters(), parts.unet.parameters(), strict=True))
