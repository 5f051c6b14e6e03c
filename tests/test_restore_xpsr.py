"""XPSR on tiny random models: the official structure (SFA, pixel attention, DFC heads), its training and
inference rules, the released checkpoint's names, train/resume/predict/score."""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from pirs.captioning.run import CaptionConfig, run
from pirs.degrade.build import BuildConfig, build
from pirs.degrade.shards import ShardWriter, file_digest, iter_records, shard_paths
from pirs.models.components import noised_latents, save_sd, tiny_sd
from pirs.models.data import ShardPairs, collate
from pirs.models.method import ConfigError, configs_dir, load_config
from pirs.models.predict import PredictConfig, load_trained, predict
from pirs.models.train import TrainConfig, build_method, data_options, train
from pirs.models.xpsr import NEGATIVE_LOW_PROMPT, Xpsr, official_weights_sha256, read_official_weights
from pirs.models.xpsr_net import TRAINABLE_UNET_MODULES, attend, controlnet_forward, tokens, unet_forward

FIXTURES = Path(__file__).parent / "fixtures" / "xpsr"
HIGH = ["a red house beside a green field", "a cat on a wooden table", "two people walking a dog"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: one thread is faster, and far faster on a shared, oversubscribed machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


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
    manifest = json.loads((out / "manifest.json").read_text())
    for entry in manifest["shards"]:  # the shards changed: so do their sizes and digests
        entry["bytes"], entry["sha256"] = file_digest(out / entry["name"])
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory, shards) -> Path:
    out = tmp_path_factory.mktemp("xpsr") / "run"
    train(TrainConfig(method="xpsr", data=str(shards), out=str(out), max_steps=4, batch_size=2, checkpoint_every=2,
                      progress=False, learning_rate=3e-3))
    return out


@pytest.fixture(scope="module")
def model() -> Xpsr:
    return build_method("xpsr", "tiny", [], None)


@pytest.fixture(scope="module")
def batch(shards, model) -> dict:
    return ShardPairs(str(shards), data_options(model, 0)).batch(0, 2)


def test_captions_come_from_the_shards(batch) -> None:
    assert all(c in HIGH for c in batch["caption_high"])
    assert all(c.startswith("The image") for c in batch["caption_low"])  # the template backend's low-level caption


# ---------------------------------------------------------------------------------------------- structure


def test_official_structure_and_trainable_set(model) -> None:
    """SFA in the ControlNet's cross-attention blocks only, pixel attention in every UNet up-block layer; the
    ControlNet and the UNet's trainable_modules train, the rest of SD is frozen (official train.py)."""
    cn, unet = model.controlnet, model.unet
    sfa_blocks = [b for b in [*cn.down_blocks, cn.mid_block] if hasattr(b, "attentions")]
    assert sfa_blocks and all(len(b.attentions_lowlevel) == len(b.attentions_connect) == len(b.attentions)
                              for b in sfa_blocks)
    assert not any(n.endswith(("attentions_lowlevel", "attentions_connect")) for n, _ in unet.named_modules())
    assert all(len(b.pixel_attentions) == len(b.resnets) for b in unet.up_blocks)
    assert len(cn.controlnet_cond_embedding.to_rgbs) == len(model.config.hint_channels) - 1
    assert len(cn.conv_degradation) == len(cn.controlnet_down_blocks)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    want = {f"controlnet.{n}" for n, _ in cn.named_parameters()} | {
        f"unet.{n}" for n, _ in unet.named_parameters() if any(f".{m}." in n for m in TRAINABLE_UNET_MODULES)}
    assert trainable == want and any(n.startswith("unet.") for n in trainable)
    assert not any(p.requires_grad for m in (model.vae, model.text_encoder) for p in m.parameters())
    # the UNet's SFA is a config switch (unet_2d_condition.py *_use_lowlevel_prompt); then it trains too
    m = build_method("xpsr", "tiny", ["unet_lowlevel_mid=true", "unet_lowlevel_up=[false, true]"], None)
    assert hasattr(m.unet.mid_block, "attentions_connect") and hasattr(m.unet.up_blocks[1], "attentions_lowlevel")
    assert all(p.requires_grad for p in m.unet.mid_block.attentions_connect.parameters())
    with pytest.raises(ConfigError, match="unet_lowlevel_up"):
        build_method("xpsr", "tiny", ["unet_lowlevel_up=[true]"], None)


def test_semantic_fusion_is_ca_f_of_ca_h_and_ca_l(model) -> None:
    """x_{k+1} = CA_f(CA_h(x, c_h), CA_l(x, c_l)): CA_f queries the high-level result, keys/values are the
    low-level result's pixels; CA_l starts as a copy of CA_h (official from_unet)."""
    block = model.controlnet.down_blocks[0]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, block.attentions[0].config.in_channels, 6, 5, generator=g)
    c_h, c_l = torch.randn(2, 7, 16, generator=g), torch.randn(2, 9, 16, generator=g)
    with torch.no_grad():
        high = block.attentions[0](x, encoder_hidden_states=c_h).sample
        low = block.attentions_lowlevel[0](x, encoder_hidden_states=c_l).sample
        want = block.attentions_connect[0](high, encoder_hidden_states=tokens(low)).sample
        torch.testing.assert_close(attend(block, 0, x, c_h, c_l), want)
        torch.testing.assert_close(attend(block, 0, x, c_h, None), high)
        assert not torch.allclose(attend(block, 0, x, c_h, c_l), attend(block, 0, x, c_h, 2 * c_l))
    fresh = build_method("xpsr", "tiny", [], None).controlnet.down_blocks[0]
    ca_h = fresh.attentions[0].state_dict()
    for k, v in fresh.attentions_lowlevel[0].state_dict().items():
        assert torch.equal(v, ca_h[k])
    ca_f = fresh.attentions_connect[0].state_dict()  # CA_f: a copy where shapes agree, keys/values read pixels
    assert [k for k, v in ca_f.items() if v.shape != ca_h[k].shape] == [
        "transformer_blocks.0.attn2.to_k.weight", "transformer_blocks.0.attn2.to_v.weight"]
    assert all(torch.equal(v, ca_h[k]) for k, v in ca_f.items() if v.shape == ca_h[k].shape)


def test_step_by_step_forwards_equal_diffusers_without_the_additions() -> None:
    """With CA_f and the pixel attentions made identities, pirs' ControlNet and UNet passes are diffusers'."""
    m = build_method("xpsr", "tiny", [], None)
    torch.set_grad_enabled(False)
    try:
        for name, mod in [*m.controlnet.named_modules(), *m.unet.named_modules()]:
            if name.endswith(("attentions_connect", "pixel_attentions")):
                for a in mod:
                    a.proj_out.weight.zero_()
                    a.proj_out.bias.zero_()
        for conv in [*m.controlnet.controlnet_down_blocks, m.controlnet.controlnet_mid_block,
                     m.controlnet.controlnet_cond_embedding.conv_out]:
            torch.nn.init.normal_(conv.weight, std=0.3)
        g = torch.Generator().manual_seed(1)
        for h, w in ((16, 16), (10, 14)):
            z, t = torch.randn(2, 4, h, w, generator=g), torch.tensor([10, 700])
            c_h, c_l, img = torch.randn(2, 16, 16, generator=g), torch.randn(2, 16, 16, generator=g), \
                torch.rand(2, 3, 2 * h, 2 * w, generator=g)
            out = controlnet_forward(m.controlnet, z, t, c_h, c_l, img)
            down, mid = m.controlnet(z, t, encoder_hidden_states=c_h, controlnet_cond=img, return_dict=False)
            assert all(torch.equal(a, b) for a, b in zip(out.down, down, strict=True)) and torch.equal(out.mid, mid)
            ref = m.unet(z, t, encoder_hidden_states=c_h, down_block_additional_residuals=down,
                         mid_block_additional_residual=mid).sample
            torch.testing.assert_close(unet_forward(m.unet, z, t, c_h, c_l, out), ref, rtol=1e-5, atol=1e-6)
    finally:
        torch.set_grad_enabled(True)


# ---------------------------------------------------------------------------------------------- training


def test_dfc_terms_targets_and_weight(model, batch) -> None:
    """L = L_D + 0.05 * L_DFC; L_DFC sums L1 of every to_rgbs output to the bilinearly resized HQ and of every
    conv_degradation output (each residual, then the middle one) to the resized HQ latent (train.py)."""
    out = model.training_step(batch, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out["loss"], out["diffusion"] + 0.05 * out["dfc"])
    assert not torch.equal(model.latents(batch["hq"], torch.Generator().manual_seed(1)),
                           model.latents(batch["hq"], torch.Generator().manual_seed(2)))  # a posterior sample
    g = torch.Generator().manual_seed(0)
    z0 = model.latents(batch["hq"], g)
    _, t, z_t = noised_latents(model.scheduler("ddpm"), z0, g)
    with torch.no_grad():
        ctrl = model.denoiser(z_t, t, batch["lq"], model.text([""] * 2), model.text(batch["caption_low"]))[1]
    assert len(ctrl.rgbs) == 1 and ctrl.rgbs[0].shape[-1] == 16  # one stride-2 stage of the tiny image encoder
    assert len(ctrl.latents) == len(model.controlnet.controlnet_down_blocks) + 1
    direct = sum(F.l1_loss(r, F.interpolate(batch["hq"], size=r.shape[-2:], mode="bilinear")) for r in ctrl.rgbs)
    direct += sum(F.l1_loss(z, F.interpolate(z0, size=z.shape[-2:], mode="bilinear")) for z in ctrl.latents)
    torch.testing.assert_close(out["dfc"], direct)


def test_training_conditions_c_h_on_the_empty_prompt_like_the_official_code(model, batch) -> None:
    """localdataset.py gives train.py input_ids of "": the high-level caption does not reach training (unless
    train_caption_high); the low-level caption does."""
    other = dict(batch, caption_high=["a completely different caption"] * 2)
    lows = dict(batch, caption_low=["The image is sharp and clean"] * 2)
    m = build_method("xpsr", "tiny", [], None)
    for conv in [*m.controlnet.controlnet_down_blocks, m.controlnet.controlnet_mid_block]:
        torch.nn.init.normal_(conv.weight, std=0.3)  # past the zero convolutions' start: the ControlNet matters

    def loss(b, m=m):
        with torch.no_grad():
            return m.training_step(b, torch.Generator().manual_seed(3))["loss"]

    assert torch.equal(loss(batch), loss(other)) and not torch.equal(loss(batch), loss(lows))
    m = build_method("xpsr", "tiny", ["train_caption_high=true"], None)
    assert not torch.equal(loss(batch, m), loss(other, m))


def test_the_controlnet_reads_the_lq_in_unit_range(model, batch) -> None:
    seen = []
    hook = model.controlnet.controlnet_cond_embedding.conv_in.register_forward_hook(
        lambda _m, inputs, _o: seen.append(inputs[0]))
    try:
        model.training_step(batch, torch.Generator().manual_seed(0))
    finally:
        hook.remove()
    torch.testing.assert_close(seen[0], (batch["lq"] + 1) / 2)


def test_loss_falls_when_overfitting_one_batch(batch) -> None:
    m = build_method("xpsr", "tiny", [], None)
    opt = torch.optim.AdamW(m.trainable_parameters(), lr=3e-3)
    m.train()
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = m.training_step(batch, torch.Generator().manual_seed(0))["loss"]
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.85 * losses[0], losses


# ---------------------------------------------------------------------------------------------- inference


def test_sampling_starts_from_the_noised_lq_latent(model, monkeypatch) -> None:
    """pipeline_xpsr.py prepare_latents: a posterior sample of the LQ latent, add_noise to the first timestep,
    add_noise again to added_noise_level (three draws in that order); Gaussian noise when switched off."""
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    from pirs.models.sampling import make_sampler

    lq = torch.rand(1, 3, 32, 48, generator=torch.Generator().manual_seed(0)) * 2 - 1
    proto = model.protocol(sampler="ddpm", steps=20)
    sched = make_sampler("ddpm", model.scheduler_config, 20)
    got = model.start_latents(lq, sched, torch.Generator().manual_seed(7), proto)
    g, train = torch.Generator().manual_seed(7), model.scheduler("ddpm")
    with torch.no_grad():
        post = DiagonalGaussianDistribution(model.vae.encode(lq).latent_dist.parameters)
        z = post.sample(g) * model.vae.config.scaling_factor
    z = train.add_noise(z, torch.randn(z.shape, generator=g), torch.tensor([int(sched.timesteps[0])]))
    z = train.add_noise(z, torch.randn(z.shape, generator=g), torch.tensor([800]))
    torch.testing.assert_close(got, z)
    assert int(sched.timesteps[0]) == 951  # DDPM, 20 steps, SD's steps_offset 1
    other = lq.flip(-1)
    assert not torch.allclose(got, model.start_latents(other, sched, torch.Generator().manual_seed(7), proto))
    monkeypatch.setattr(model.config, "start_from_lq", False)
    want = torch.randn((1, 4, 16, 24), generator=torch.Generator().manual_seed(7)) * sched.init_noise_sigma
    torch.testing.assert_close(model.start_latents(lq, sched, torch.Generator().manual_seed(7), proto), want)
    monkeypatch.undo()
    with pytest.raises(ConfigError, match="start_from_lq"):
        model.start_latents(lq, sched, torch.Generator(), model.protocol(sampler="flow-euler"))


def test_restore_uses_the_start_point_and_both_negative_prompts(model, monkeypatch) -> None:
    """Guidance > 1: the unconditional branch gets the negative prompt as c_h and the negative low-level prompt
    as c_l (pipeline_xpsr.py); the conditional one the caption plus the added prompt, and the low-level caption."""
    b = {"lq": torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1,
         "caption_high": [HIGH[0]], "caption_low": ["The image is blurry"]}
    base = model.predict(b, 2, torch.Generator().manual_seed(0), sampler="ddpm")
    monkeypatch.setattr(model.config, "added_noise_level", 300)
    assert not torch.allclose(base, model.predict(b, 2, torch.Generator().manual_seed(0), sampler="ddpm"))
    monkeypatch.undo()
    calls = []
    real = model.eps
    monkeypatch.setattr(model, "eps", lambda z, t, lq, c_h, c_l: calls.append((c_h, c_l)) or real(z, t, lq, c_h, c_l))
    model.predict(b, 2, torch.Generator().manual_seed(0), guidance_scale=4.5, added_prompt="clean, 8k",
                  negative_prompt="blurry")
    assert len(calls) == 4  # 2 steps x (conditional, unconditional), one tile
    want = [model.text([f"{HIGH[0]} clean, 8k"]), model.text(["The image is blurry"]), model.text(["blurry"]),
            model.text([NEGATIVE_LOW_PROMPT])]
    for got, w in zip([*calls[0], *calls[1]], want, strict=True):
        torch.testing.assert_close(got, w)
    calls.clear()
    model.predict(b, 2, torch.Generator().manual_seed(0), guidance_scale=1.0)
    assert len(calls) == 2


def test_the_low_level_caption_reaches_the_output(shards, trained) -> None:
    model, _, _ = load_trained(str(trained))
    s = ShardPairs(str(shards), data_options(model, 0)).sample(0)
    lows = ("The image is sharp and clean", "The image is blurry, dark and noisy")
    outs = [model.predict(collate([dict(s, caption_low=c)]), 3, torch.Generator().manual_seed(2)) for c in lows]
    assert not torch.equal(outs[0], outs[1])


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
    assert any(".pixel_attentions." in k for k in x)  # the UNet's trained modules are in the checkpoint
    out = tmp_path / "pred"
    predict(PredictConfig(checkpoint=str(trained), input=str(shards), out=str(out), steps=3, progress=False))
    assert sorted(p.stem for p in out.glob("*.png")) == [f"{i:08d}" for i in range(6)]
    res = evaluate(EvalConfig(predictions=str(out), reference=str(shards), metrics="psnr", progress=False,
                              out=str(tmp_path / "r.json")))
    assert res["method"]["name"] == "xpsr" and res["count"] == 6


def test_loads_a_local_stable_diffusion_folder(tmp_path) -> None:
    parts = tiny_sd(seed=5)
    save_sd(parts, str(tmp_path / "sd"))
    m = Xpsr.build(load_config("xpsr", "tiny", ["variant=sd"]), base=str(tmp_path / "sd"))
    own = dict(m.unet.named_parameters())
    assert all(torch.equal(own[n], p) for n, p in parts.unet.named_parameters())
    assert not any(p.requires_grad for n, p in own.items() if ".pixel_attentions." not in n)


# ---------------------------------------------------------------------------------------------- official checkpoint


def _official_folder(root: Path, fixture: dict, seed: int = 0, bin_controlnet: bool = False) -> dict:
    """An official-layout checkpoint (unet/, controlnet/: config.json + weights) with random tensors."""
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)
    ucfg = {"_class_name": "UNet2DConditionModel", "_diffusers_version": "0.21.4", **fixture["unet_config"],
            "up_use_lowlevel_prompt": [False] * 4, "mid_use_lowlevel_prompt": False,
            "down_use_lowlevel_prompt": False}
    ccfg = {"_class_name": "ControlNetModel", "_diffusers_version": "0.21.4",
            **{k: v for k, v in fixture["unet_config"].items() if k not in ("out_channels", "sample_size",
                                                                              "up_block_types")},
            "conditioning_embedding_out_channels": fixture["hint_channels"], "return_rgbs": True, "use_rrdb": False,
            "use_lowlevel_prompt": True, "use_latent_pred": True}
    states = {}
    for part, cfg in (("unet", ucfg), ("controlnet", ccfg)):
        (root / part).mkdir(parents=True)
        (root / part / "config.json").write_text(json.dumps(cfg))
        states[part] = {k: torch.randn(shape, generator=g) * 0.2 for k, shape in fixture[part].items()}
        if part == "controlnet" and bin_controlnet:
            torch.save(states[part], root / part / "diffusion_pytorch_model.bin")
        else:
            save_file(states[part], root / part / "diffusion_pytorch_model.safetensors")
    return states


@pytest.fixture(scope="module")
def official(tmp_path_factory) -> tuple[Path, Path, dict, dict]:
    """(official folder, SD base folder, fixture, the folder's tensors): a tiny SD-1.5-structured release."""
    from diffusers import AutoencoderKL

    root = tmp_path_factory.mktemp("official")
    fixture = json.loads((FIXTURES / "official_tiny.json").read_text())
    parts = tiny_sd(seed=1)
    parts.vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 3,
                              up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(4, 8, 8),
                              latent_channels=4, layers_per_block=1, norm_num_groups=4, sample_size=16)
    save_sd(parts, str(root / "sd"))
    states = _official_folder(root / "official", fixture, bin_controlnet=True)
    return root / "official", root / "sd", fixture, states


def test_the_official_checkpoint_loads_name_for_name(official) -> None:
    """Official names and shapes (written down from the official module definitions, tests/fixtures/xpsr)
    map one to one onto pirs' UNet and ControlNet parameters, and the prediction uses them."""
    folder, sd, fixture, states = official
    tiny = load_config("xpsr", "tiny", ["steps=2", "guidance_scale=2.0"])
    m = Xpsr.from_official(str(folder), str(sd), tiny)
    names = m.official_names()
    official = {f"{part}/{k}" for part in ("unet", "controlnet") for k in fixture[part]}
    assert set(names) == official and len(set(names.values())) == len(names)
    pirs = dict(m.named_parameters())
    assert set(names.values()) == {n for n in pirs if n.startswith(("unet.", "controlnet."))}
    for key, name in names.items():
        part, k = key.split("/", 1)
        assert list(pirs[name].shape) == fixture[part][k]
        assert torch.equal(pirs[name], states[part][k])
    lq = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    b = {"lq": lq, "caption_high": ["a house"], "caption_low": ["The image is noisy"]}
    before = m.predict(b, generator=torch.Generator().manual_seed(0))
    for part, key in (("unet", "up_blocks.2.pixel_attentions.1.proj_out.weight"),
                      ("controlnet", "down_blocks.1.attentions_connect.0.transformer_blocks.0.attn2.to_v.weight"),
                      ("controlnet", "mid_block.attentions_lowlevel.0.transformer_blocks.0.attn2.to_k.weight")):
        changed = {p: dict(s) for p, s in states.items()}
        changed[part][key] = changed[part][key] + 0.5
        m.load_official_state(changed["unet"], changed["controlnet"])
        assert not torch.allclose(before, m.predict(b, generator=torch.Generator().manual_seed(0))), key
    m.load_official_state(states["unet"], states["controlnet"])
    assert torch.equal(before, m.predict(b, generator=torch.Generator().manual_seed(0)))
    wrong = dict(states["controlnet"])
    wrong.pop("conv_degradation_mid.0.bias")
    with pytest.raises(ValueError, match="1 missing"):
        m.load_official_state(states["unet"], wrong)
    assert set(read_official_weights(folder / "controlnet")) == set(fixture["controlnet"])


def test_restore_predict_reads_an_official_checkpoint_folder(tmp_path, official, shards) -> None:
    """A folder with unet/ and controlnet/ and no trainer.json: predict builds XPSR from it and --base."""
    folder, sd, _, _ = official
    with pytest.raises(ConfigError, match="--base"):
        load_trained(str(folder))
    run_json = predict(PredictConfig(checkpoint=str(folder), input=str(shards), out=str(tmp_path / "p"), base=str(sd),
                                     method="xpsr", steps=1, process_size=0, limit=2, progress=False))
    assert run_json["method"] == "xpsr" and run_json["count"] == 2 and run_json["guidance_scale"] == 4.5
    assert run_json["weights_sha256"] == official_weights_sha256(str(folder))
    assert len(list((tmp_path / "p").glob("*.png"))) == 2


def test_real_size_parameter_counts_match_the_official_modules() -> None:
    """SD 1.5 size on the meta device: pirs' UNet, ControlNet and trainable set have exactly the names, shapes
    and counts written down from the official modules (868,451,469 trainable parameters)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from pirs.models.components import SDComponents, tiny_tokenizer

    sys.path.insert(0, str(FIXTURES))
    try:
        from official_names import SD15_HINT, SD15_UNET, counts, official_controlnet, official_unet
    finally:
        sys.path.remove(str(FIXTURES))
    with torch.device("meta"):
        parts = SDComponents(
            unet=UNet2DConditionModel(**SD15_UNET), tokenizer=tiny_tokenizer(), text_encoder=torch.nn.Linear(1, 1),
            vae=AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                              block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4),
            scheduler_config={"num_train_timesteps": 1000})
        m = Xpsr(load_config("xpsr", "sd15"), parts)
    assert {n: list(p.shape) for n, p in m.unet.named_parameters()} == official_unet(SD15_UNET)
    assert {n: list(p.shape) for n, p in m.controlnet.named_parameters()} == official_controlnet(SD15_UNET, SD15_HINT)
    c = counts(SD15_UNET, SD15_HINT)
    assert sum(p.numel() for p in m.trainable_parameters()) == c["trainable"] == 868_451_469
    assert c["unet"] - c["unet_trainable"] == 859_520_964  # SD 1.5's UNet, frozen


def test_sd15_config_cites_a_source_for_every_value() -> None:
    lines = [ln for ln in (configs_dir("xpsr") / "sd15.yaml").read_text().splitlines()
             if ln.strip() and not ln.lstrip().startswith("#")]
    keys = [re.match(r"^(\w+):", ln).group(1) for ln in lines]
    assert all("  # " in ln for ln in lines), [ln for ln in lines if "  # " not in ln]
    assert set(keys) == {f.name for f in dataclasses.fields(Xpsr.Config)}


def test_sd15_protocol_is_the_official_test_config() -> None:
    """configs/xpsr_test.yaml, test.py and pipeline_xpsr.py, as read (the README's XPSR section)."""
    c = load_config("xpsr", "sd15")
    assert (c.steps, c.sampler, c.guidance_scale, c.process_size, c.color_fix, c.fit) == (20, "ddpm", 4.5, 512,
                                                                                         "adain", "resize")
    assert c.added_prompt == "clean, high-resolution, 8k, high quality, clear text."
    assert c.negative_prompt == "blurry, dotted, noise, raster lines, unclear, lowres, over-smoothed."
    assert (c.negative_low_prompt, c.start_from_lq, c.added_noise_level) == (NEGATIVE_LOW_PROMPT, True, 800)
    assert (c.tile_size, c.tile_overlap, c.vae_decoder_tile, c.vae_encoder_tile * 8) == (320, 8, 224, 1024)
    assert (c.hint_channels, c.controlnet_lowlevel, c.unet_lowlevel_mid, c.unet_lowlevel_up) == (
        [16, 32, 96, 256], True, False, None)
    assert (c.dfc_weight, c.learning_rate, c.resolution, c.train_caption_high) == (0.05, 5e-5, 512, False)


def test_gradient_clipping_follows_the_official_config(tmp_path, shards) -> None:
    """configs/xpsr.yaml max_grad_norm 1.0; the trainer clips: at a tiny norm AdamW barely moves the weights."""
    from safetensors.torch import load_file

    assert load_config("xpsr", "sd15").max_grad_norm == 1.0
    start = build_method("xpsr", "tiny", [], None).trainable_state_dict()

    def moved(max_grad_norm: float | None) -> float:
        out = tmp_path / f"run-{max_grad_norm}"
        train(TrainConfig(method="xpsr", data=str(shards), out=str(out), max_steps=1, batch_size=1, progress=False,
                          learning_rate=1e-2, max_grad_norm=max_grad_norm))
        meta = json.loads((out / "checkpoint-0000001" / "trainer.json").read_text())
        assert meta["max_grad_norm"] == max_grad_norm
        w = load_file(out / "checkpoint-0000001" / "model.safetensors")
        return max(float((w[k] - start[k]).abs().max()) for k in start)

    assert moved(None) > 5e-3  # AdamW's first step moves each weight by about the learning rate (1e-2)
    assert moved(1e-12) < 1e-3  # clipped to a norm of 1e-12: eps-bound, only weight decay (lr x 0.01) remains
