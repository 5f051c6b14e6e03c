"""Stage-two image losses: VGG-19 perceptual (local weights) and the PatchGAN hinge terms, and their use."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from pirs.degrade.build import BuildConfig, build
from pirs.models.losses import VGG_LAYERS, PatchDiscriminator, VGGPerceptual, adversarial_losses
from pirs.models.train import TrainConfig, build_method, data_options, train


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory) -> Path:
    """torchvision's VGG-19 feature tensors, random, under the real file name (what the loss reads)."""
    import torchvision

    torch.manual_seed(0)
    features = torchvision.models.vgg19().features
    path = tmp_path_factory.mktemp("vgg") / "vgg19-dcbb9e9d.pth"
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, path)
    return path


def test_perceptual_loss_is_weighted_l1_of_pre_relu_vgg19_features(vgg_file):
    import torchvision

    loss = VGGPerceptual(vgg_file)
    x, y = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    net = torchvision.models.vgg19().features
    net.load_state_dict({k[9:]: v for k, v in torch.load(vgg_file, weights_only=True).items()})
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    def feats(img):
        h, out = ((img + 1) / 2 - mean) / std, {}
        for i, layer in enumerate(net):
            h = layer(h)
            if i in VGG_LAYERS:
                out[i] = h.clone()  # the next ReLU works in place
        return out

    fx, fy = feats(x), feats(y)
    direct = sum(w * (fx[i] - fy[i]).abs().mean() for i, w in VGG_LAYERS.items())
    assert [type(net[i]).__name__ for i in VGG_LAYERS] == ["Conv2d"] * 5  # conv1_2 .. conv5_4, before ReLU
    with torch.no_grad():
        assert float(loss(x, y)) == pytest.approx(float(direct), rel=1e-5)
        assert float(loss(x, x)) == 0.0
    assert all(not p.requires_grad for p in loss.parameters())


def test_missing_vgg_weights_name_the_file_and_where_it_is_published(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"vgg19-dcbb9e9d\.pth.*download\.pytorch\.org.*" + str(tmp_path)):
        VGGPerceptual(tmp_path)


def test_hinge_terms_reach_only_their_own_side():
    torch.manual_seed(0)
    disc = PatchDiscriminator(width=8)
    gen = torch.nn.Conv2d(3, 3, 3, padding=1)
    real, src = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    fake = gen(src)
    g, d = adversarial_losses(disc, fake, real)
    g.backward(retain_graph=True)
    assert gen.weight.grad.abs().sum() > 0 and all(p.grad is None for p in disc.parameters())
    gen.zero_grad()
    d.backward()
    assert gen.weight.grad is None and all(p.grad is not None for p in disc.parameters())  # fake was detached
    with torch.no_grad():
        assert float(g) == pytest.approx(float(-disc(fake).mean()), rel=1e-6)
        direct = F.relu(1 - disc(real)).mean() + F.relu(1 + disc(fake)).mean()
        assert float(d) == pytest.approx(float(direct), rel=1e-6)


@pytest.fixture(scope="module")
def shards_and_stage1(tmp_path_factory, photos_dir) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("dr2")
    build(BuildConfig(pipeline="universal", out=str(root / "shards"), input=str(photos_dir), num_samples=4,
                      crop_size=32, shard_size=4, progress=False))
    train(TrainConfig(method="diffrestorer", data=str(root / "shards"), out=str(root / "stage1"), max_steps=1,
                      batch_size=2, progress=False))
    return root / "shards", root / "stage1"


def test_diffrestorer_stage_two_is_eq_8_with_perceptual_and_adversarial_terms(tmp_path, shards_and_stage1, vgg_file):
    from safetensors.torch import load_file

    from pirs.models.data import ShardPairs

    shards, stage1 = shards_and_stage1
    sets = ["stage=2", f"stage1_checkpoint={stage1}", "lambda_per=0.1", "lambda_adv=0.001",
            f"vgg19_weights={vgg_file}"]
    m = build_method("diffrestorer", "tiny", sets, None)
    assert any(n.startswith("discriminator.") for n, p in m.named_parameters() if p.requires_grad)
    batch = ShardPairs(str(shards), data_options(m, 0)).batch(0, 2)
    with torch.no_grad():
        out = m.training_step(batch, torch.Generator().manual_seed(0))
    expected = out["gen"] + 0.1 * out["per"] + 0.001 * out["adv"] + out["disc"]
    assert float(out["loss"]) == pytest.approx(float(expected), rel=1e-6)
    assert float(out["per"]) > 0 and float(out["disc"]) > 0

    run = tmp_path / "run"
    train(TrainConfig(method="diffrestorer", data=str(shards), out=str(run), max_steps=2, batch_size=2,
                      progress=False, overrides=sets))
    w = load_file(run / "checkpoint-0000002" / "model.safetensors")
    assert any(k.startswith("discriminator.") for k in w)  # saved, so a resumed run restores it
    from pirs.models.diffrestorer import STAGE1_MODULES

    # stage 2 trains the decoder, refinement blocks and discriminator, and carries the stage-1 weights it started from
    assert all(k.startswith(("vae.decoder.", "refinement.", "discriminator.", *STAGE1_MODULES)) for k in w)
    log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines() if '"per"' in x]
    assert log and {"gen", "per", "adv", "disc"} <= set(log[-1])
    with pytest.raises(Exception, match="VGG-19 weights"):  # lambda_per without weights: one clear message
        m2 = build_method("diffrestorer", "tiny", sets[:4], None)
        m2.training_step(batch, torch.Generator().manual_seed(0))


def test_dpir_robust_encoder_stage_takes_the_optional_gan_term(shards_and_stage1):
    from pirs.models.data import ShardPairs

    shards, _ = shards_and_stage1
    m = build_method("dpir", "tiny", ["stage=vae", "gan_weight=0.1"], None)
    trainable = {n.split(".")[0] for n, p in m.named_parameters() if p.requires_grad}
    assert "discriminator" in trainable and "robust_encoder" in trainable and "transformer" not in trainable
    batch = ShardPairs(str(shards), data_options(m, 0)).batch(0, 2)
    with torch.no_grad():
        out = m.training_step(batch, torch.Generator().manual_seed(0))
    assert float(out["loss"]) == pytest.approx(float(out["l1"] + 0.1 * out["adv"] + out["disc"]), rel=1e-6)
    plain = build_method("dpir", "tiny", ["stage=vae"], None)
    assert plain.discriminator is None  # off in the tiny config for speed; sd3.yaml turns on the paper's GAN term (0.1)
