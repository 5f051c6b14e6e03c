"""Diff-Restorer on tiny random models: visual prompts, degradation modulation, two stages, predict, score;
the paper's numbers on a real-sized model on the meta device; a stage-2 run that carries its stage-1 weights."""

from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from pirs.degrade.build import BuildConfig, build
from pirs.degrade.labels import UNIVERSAL
from pirs.models.components import WeightsMissing, save_sd, tiny_sd
from pirs.models.data import ShardPairs
from pirs.models.diffrestorer import (
    DegradationModulationBlock,
    DiffRestorer,
    RefinementBlock,
    label_targets,
    refinement_scales,
    tiny_image_encoder,
)
from pirs.models.method import configs_dir, load_config
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
                      checkpoint_every=2, progress=False, learning_rate=3e-3, log_every=1))
    return out


@contextmanager
def working_folder(path: Path):
    """Run a block from another working folder (relative paths resolve there)."""
    before = Path.cwd()
    path.mkdir(parents=True, exist_ok=True)
    os.chdir(path)
    try:
        yield path
    finally:
        os.chdir(before)


@pytest.fixture(scope="module")
def stage2(tmp_path_factory, shards, stage1) -> Path:
    """A stage-2 run trained from ``work/`` with a RELATIVE stage1_checkpoint (``s1``, a copy of stage 1)."""
    from pirs.models.cli import main

    work = tmp_path_factory.mktemp("work")
    shutil.copytree(stage1, work / "s1")
    with working_folder(work):
        assert main(["train", "--method", "diffrestorer", "--stage", "2", "--set", "stage1_checkpoint=s1",
                     "--data", str(shards), "--out", "s2", "--max-steps", "2", "--batch-size", "2", "--quiet",
                     "--learning-rate", "0.003"]) == 0
    return work


def test_trainable_parts_per_stage(stage1, stage2) -> None:
    from safetensors.torch import load_file

    m = build_method("diffrestorer", "tiny", [], None)
    c = m.parameter_counts()
    own = sum(p.numel() for mod in (m.prompt_processor, m.control_encoder, m.control_decoder, m.control_network)
              for p in mod.parameters())
    assert c["trainable"] == own
    assert not any(p.requires_grad for mod in (m.unet, m.vae, m.image_encoder, m.refinement) for p in mod.parameters())
    m2 = build_method("diffrestorer", "tiny", ["stage=2", f"stage1_checkpoint={stage1}"], None)
    own2 = sum(p.numel() for mod in (m2.vae.decoder, m2.refinement) for p in mod.parameters())
    assert m2.parameter_counts()["trainable"] == own2 > 0
    s1 = load_file(stage1 / "checkpoint-0000004" / "model.safetensors")
    mine = m2.state_dict()
    assert all(torch.equal(mine[k], v) for k, v in s1.items())  # stage two starts from stage one's weights
    # the stage-2 checkpoint holds what it trained (decoder, DRBs) and the stage-1 weights it was built on
    w = load_file(stage2 / "s2" / "checkpoint-0000002" / "model.safetensors")
    trained = {k for k in w if k.startswith(("vae.decoder.", "refinement."))}
    assert set(w) - trained == set(s1) and all(torch.equal(w[k], v) for k, v in s1.items())
    assert any(k.startswith("refinement.") and v.abs().sum() > 0 for k, v in w.items() if k.endswith("conv2.weight"))


def test_a_stage_two_run_is_self_contained(tmp_path, shards, stage2) -> None:
    """Predict from another folder (the relative stage-1 path is gone there) and after a newer stage-1
    checkpoint appeared in the stage-1 folder: the same images, from the stage-1 weights stage 2 trained on."""
    from safetensors.torch import load_file, save_file

    from pirs.models.cli import main

    args = ["--input", str(shards), "--steps", "2", "--limit", "1", "--quiet"]
    with working_folder(stage2):
        assert main(["predict", "--checkpoint", "s2", "--out", str(tmp_path / "a"), *args]) == 0
    newer = stage2 / "s1" / "checkpoint-0000009"  # written after stage 2 trained, with other weights
    shutil.copytree(stage2 / "s1" / "checkpoint-0000004", newer)
    w = load_file(newer / "model.safetensors")
    save_file({k: v + 0.5 for k, v in w.items()}, newer / "model.safetensors")
    (newer / "trainer.json").write_text(json.dumps(dict(json.loads((newer / "trainer.json").read_text()), step=9)))
    try:
        with working_folder(stage2):
            assert main(["predict", "--checkpoint", "s2", "--out", str(tmp_path / "b"), *args]) == 0
        with working_folder(tmp_path / "elsewhere"):
            assert not Path("s1").exists()
            assert main(["predict", "--checkpoint", str(stage2 / "s2"), "--out", "c", *args]) == 0
        # a new stage-2 run would start from the newest stage-1 checkpoint: the copy above does change weights
        m = build_method("diffrestorer", "tiny", ["stage=2", f"stage1_checkpoint={stage2 / 's1'}"], None)
        assert m.stage1_from == str(newer.resolve())
    finally:
        shutil.rmtree(newer)
    a = {p.name: p.read_bytes() for p in (tmp_path / "a").glob("*.png")}
    assert len(a) == 1
    assert a == {p.name: p.read_bytes() for p in (tmp_path / "b").glob("*.png")}
    assert a == {p.name: p.read_bytes() for p in (tmp_path / "elsewhere" / "c").glob("*.png")}


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
    p_s, p_d = m.visual_prompts(batch["lq"])
    assert p_s.shape == (4, 1, m.unet.config.cross_attention_dim)  # P_S: one token in place of the text
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


def test_stage_two_needs_a_stage_one_run(tmp_path, shards, capsys) -> None:
    from pirs.models.cli import main

    base = ["train", "--method", "diffrestorer", "--stage", "2", "--data", str(shards), "--max-steps", "1", "--quiet"]
    assert main([*base, "--out", str(tmp_path / "x")]) == 2  # no stage1_checkpoint at all
    assert "stage1_checkpoint" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "y"), "--set", f"stage1_checkpoint={tmp_path / 'nope'}"]) == 2
    assert "nope" in capsys.readouterr().err
    assert not list((tmp_path / "y").glob("checkpoint-*"))


def test_a_new_decoder_starts_as_the_pretrained_one() -> None:
    """Each DRB adds exactly zero before training (the ResBlock's inner skip left out), so stage two starts
    from the SD decoder; a block with the inner skip would add Conv(Concat(z, z_lq)) * f from the first step."""
    m = build_method("diffrestorer", "tiny", ["stage=2", "stage1_checkpoint=unused"], None)
    g = torch.Generator().manual_seed(1)
    lq, z = torch.rand(1, 3, 32, 32, generator=g) * 2 - 1, torch.randn(1, 4, 16, 16, generator=g)
    p_d = torch.randn(1, m.config.degradation_dim, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(m.decode(z, lq, p_d), m.decode(z))
        block = m.refinement[0]
        h, h_lq = torch.randn(1, 8, 16, 16, generator=g), torch.randn(1, 4, 16, 16, generator=g)
        assert torch.equal(block(h, h_lq, p_d), h)


def test_loads_local_weights_and_names_what_is_missing(tmp_path) -> None:
    parts = tiny_sd(seed=2)
    save_sd(parts, str(tmp_path / "sd"))
    cfg = load_config("diffrestorer", "tiny", ["variant=sd"])
    with pytest.raises(WeightsMissing, match=r"image_encoder/config.json.*clip-vit-large-patch14"):
        DiffRestorer.build(cfg, base=str(tmp_path / "sd"))
    tiny_image_encoder(cfg, parts).save_pretrained(tmp_path / "sd" / "image_encoder")
    m = DiffRestorer.build(cfg, base=str(tmp_path / "sd"))
    assert all(torch.equal(p, q) for p, q in zip(m.unet.parameters(), parts.unet.parameters(), strict=True))


def test_the_image_encoder_loads_from_a_whole_clip_model_folder(tmp_path) -> None:
    """`huggingface-cli download openai/clip-vit-large-patch14` writes a CLIPModel (text and vision towers) whose
    projection width sits at the top of its config; the vision tower and its projection are taken from it."""
    from transformers import CLIPConfig, CLIPModel

    parts = tiny_sd(seed=2)
    save_sd(parts, str(tmp_path / "sd"))
    cfg = load_config("diffrestorer", "tiny", ["variant=sd"])
    text = {"vocab_size": 64, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
            "num_attention_heads": 2, "max_position_embeddings": 16}
    vision = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
              "image_size": cfg.clip_image_size, "patch_size": 8}
    torch.manual_seed(0)
    clip = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16))
    clip.save_pretrained(tmp_path / "sd" / "image_encoder")
    m = DiffRestorer.build(cfg, base=str(tmp_path / "sd"))
    assert torch.equal(m.image_encoder.visual_projection.weight, clip.visual_projection.weight)
    assert torch.equal(m.image_encoder.vision_model.embeddings.patch_embedding.weight,
                       clip.vision_model.embeddings.patch_embedding.weight)


# ------------------------------------------------------------------ the paper's numbers


def test_protocol_and_optimiser_are_the_papers(stage1, shards, tmp_path) -> None:
    """Sec. IV-A: UniPC with 20 steps; AdamW at 1e-5 for both stages (batch 16 and 4, recorded in the config);
    `restore predict` without --steps uses the config's protocol."""
    from pirs.models.cli import main

    for stage in (1, 2):
        cfg = load_config("diffrestorer", "sd15", [f"stage={stage}"])
        assert (cfg.steps, cfg.sampler, cfg.learning_rate) == (20, "unipc", 1e-5)
    # where the paper is silent: no guidance and no colour fix; tiles of the 512-px training size
    assert (cfg.guidance_scale, cfg.color_fix, cfg.tile_size * 8, cfg.resolution) == (1.0, "none", 512, 512)
    # AdamW with torch's default weight decay and a constant learning rate (the paper names neither)
    opt = json.loads((stage1 / "checkpoint-0000004" / "optimizer.json").read_text())
    assert opt["param_groups"][0]["weight_decay"] == 0.01
    lrs = [json.loads(line)["lr"] for line in (stage1 / "log.jsonl").read_text().splitlines()]
    assert lrs == [3e-3] * 4
    text = (configs_dir("diffrestorer") / "sd15.yaml").read_text()
    lr_line = next(line for line in text.splitlines() if line.startswith("learning_rate:"))
    assert "batch size 16" in lr_line and "batch size is 4" in lr_line and "IV-A" in lr_line
    tiny = load_config("diffrestorer", "tiny")
    assert (tiny.steps, tiny.sampler) == (20, "unipc")  # the tiny run below predicts with the same protocol
    assert main(["predict", "--checkpoint", str(stage1), "--input", str(shards), "--out", str(tmp_path / "p"),
                 "--limit", "1", "--quiet"]) == 0
    run = json.loads((tmp_path / "p" / "run.json").read_text())
    assert (run["steps"], run["sampler"], run["protocol"]["steps"]) == (20, "unipc", 20)


def sd15_on_meta(stage: int = 1) -> DiffRestorer:
    """Diff-Restorer at its real size (SD 1.5 UNet and VAE, CLIP ViT-L/14 vision tower) on the meta device."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from pirs.models.components import SDComponents

    with torch.device("meta"):
        unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8)  # SD 1.5 unet/
        vae = AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                            block_out_channels=(128, 256, 512, 512), layers_per_block=2, sample_size=512)
        clip = CLIPVisionModelWithProjection(CLIPVisionConfig(
            hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, image_size=224,
            patch_size=14, projection_dim=768))  # openai/clip-vit-large-patch14
        parts = SDComponents(unet=unet, vae=vae, text_encoder=None, tokenizer=None, scheduler_config={})
        cfg = load_config("diffrestorer", "sd15", [f"stage={stage}", "stage1_checkpoint=unused"])
        return DiffRestorer(cfg, parts, clip)


def count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_real_size_model_has_the_papers_shapes_and_counts() -> None:
    m = sd15_on_meta(stage=1)
    assert (count(m.unet), count(m.vae), count(m.image_encoder)) == (859_520_964, 83_653_863, 303_966_208)
    pp = m.prompt_processor  # Sec. III-B: P_S in R^768 (three MLP layers), P_D in R^256 (two), C over 8 types
    s_lin = [x for x in pp.semantic_branch if isinstance(x, torch.nn.Linear)]
    d_lin = [x for x in pp.degradation_branch if isinstance(x, torch.nn.Linear)]
    assert [x.out_features for x in s_lin] == [768, 768, 768] and s_lin[0].in_features == 768
    assert [x.out_features for x in d_lin] == [256, 256] and pp.classifier.out_features == 8
    assert len(m.control_encoder.blocks) == 4 and len(m.control_decoder.blocks) == 4  # Sec. III-C
    # pirs: 64 channels, down to the latent size by stride-2 convolutions between the first blocks
    strides = [d.stride for d in m.control_encoder.down if isinstance(d, torch.nn.Conv2d)]
    assert m.control_encoder.conv_in.out_channels == 64 and strides == [(2, 2)] * 3
    assert m.control_encoder.blocks[0].modulation.in_features == 256
    assert count(m.prompt_processor) == 2_040_072
    assert m.parameter_counts() == {"trainable": 363_520_651, "frozen": 1_272_902_827, "total": 1_636_423_478}
    m2 = sd15_on_meta(stage=2)
    assert (count(m2.vae.decoder), count(m2.refinement), count(m2.discriminator)) == (49_490_179, 25_761_792,
                                                                                      2_765_633)
    assert m2.parameter_counts()["trainable"] == 78_017_604


def test_three_refinement_blocks_on_z1_z2_z3() -> None:
    """Sec. III-D: one DRB per LQ encoder feature z_1^lq, z_2^lq, z_3^lq (SD's VAE: 1/2, 1/4, 1/8 of the image),
    each fusing the decoder feature of the same size: checked on SD's VAE shape and by running a small VAE."""
    m = sd15_on_meta()
    assert refinement_scales(m.vae.config) == [(2, 512, 128), (4, 512, 256), (8, 512, 512)]
    assert [tuple(b.fuse.weight.shape[:2]) for b in m.refinement] == [(512, 640), (512, 768), (512, 1024)]
    from diffusers import AutoencoderKL

    from pirs.models.components import tiny_sd

    parts = tiny_sd(seed=3)
    parts.vae = AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                              block_out_channels=(4, 8, 8, 16), layers_per_block=1, norm_num_groups=4)
    cfg = load_config("diffrestorer", "tiny", ["stage=2", "stage1_checkpoint=unused"])
    model = DiffRestorer(cfg, parts, tiny_image_encoder(cfg, parts))
    assert len(model.refinement) == 3 and all(isinstance(b, RefinementBlock) for b in model.refinement)
    seen = []
    for b in model.refinement:
        b.register_forward_hook(lambda mod, args, out: seen.append((args[0].shape[1:], args[1].shape[1:])))
    lq = torch.zeros(1, 3, 64, 64)
    with torch.no_grad():
        out = model.decode(torch.zeros(1, 4, 8, 8), lq, torch.zeros(1, cfg.degradation_dim))
    assert out.shape == (1, 3, 64, 64)
    # z_3 (1/8) first, then z_2 (1/4), z_1 (1/2); decoder and LQ features of the same size each time
    assert [(tuple(a), tuple(b)) for a, b in seen] == [((16, 8, 8), (8, 8, 8)), ((16, 16, 16), (8, 16, 16)),
                                                     ((8, 32, 32), (4, 32, 32))]
