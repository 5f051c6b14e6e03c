"""Diff-Restorer: visual prompts for diffusion-based universal image restoration (Zhang et al., 2024).

Section III of the paper, on diffusers and transformers parts:

- **Visual Prompt Processor** (Sec. III-B): a frozen CLIP image encoder embeds the LQ image
  (``P_CLIP``); a *semantic branch* ``B_s`` (three MLP layers with layer norm and LeakyReLU,
  none after the last) gives the semantic embedding ``P_S`` that replaces the text condition
  of the frozen SD UNet; a *degradation branch* ``B_d`` (two such layers) gives the
  degradation embedding ``P_D``, trained through a one-layer classifier ``C`` with the
  cross-entropy ``L_deg`` over the shards' degradation labels (the eight universal types);
- **Image-guided Control Module** (Sec. III-C): a *Degradation-aware Control Encoder* of four
  residual blocks with Degradation Modulation Blocks (``F~ = ResBlock(F)``,
  ``f = Sigmoid(Linear(P_D))``, ``F^ = ResBlock(F~ * f)``), a *Control Decoder* of four
  residual blocks reconstructing the clean image (``L_rec``, L2), and an image control
  network (a ControlNet from the UNet) taking the encoder's features as its condition;
- stage one: ``L = L_diff + L_deg + L_rec`` (Eq. 7, lambda_1 = lambda_2 = 1);
- **Degradation-aware Decoder** (Sec. III-D), stage two: the VAE decoder fine-tuned with three
  Degradation-aware Refinement Blocks fusing the VAE encoder's intermediate features of the LQ
  image ``z_1^lq, z_2^lq, z_3^lq`` (``z~_i = Conv(Concat(z_i, z_i^lq))``,
  ``z^_i = ResBlock(z~_i * f_i) + z_i``), trained on ``z_0`` of the HQ image with
  ``L_gen + 0.1 L_per + 0.001 L_adv`` (Eq. 8). ``z_i^lq`` is the output of the encoder's i-th
  downsampling stage (1/2, 1/4, 1/8 of the image in SD's VAE) and ``z_i`` the decoder's feature
  of the same size (:func:`refinement_scales`);
- UniPC sampling with 20 steps and AdamW at 1e-5 for both stages (Sec. IV-A), in the configs.

A stage-2 run is self-contained: it starts from the stage-1 checkpoint ``stage1_checkpoint``
names (a run folder's newest checkpoint, when training starts) and every stage-2 checkpoint
stores those stage-1 weights beside the decoder's, so prediction never reads the stage-1
folder again: a relative path, a moved folder or a newer stage-1 checkpoint cannot change it.

Documented choices and deviations (the README table, its Diff-Restorer section):
``P_S`` is one token; mixtures' labels are a uniform soft target over their universal
types, and records without a universal label do not enter ``L_deg``; the control encoder
downsamples with stride-2 convolutions between its blocks to the latent size; a refinement
block's ResBlock adds no inner skip, so a new block adds exactly zero and stage two starts
from the pretrained decoder. Stage two's ``L_per`` and ``L_adv`` are :mod:`.losses`' VGG-19
feature loss (local torchvision weights, ``vgg19_weights``, default ``BASE/vgg19/``) and a
PatchGAN discriminator with the hinge loss (the paper follows Asymmetric VQGAN [51] and names
only the VGG-19 backbone; the layers, their weights and the discriminator are pirs' choices);
the tiny config turns both off, the ``sd15`` config uses the paper's 0.1 and 0.001.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pirs.degrade.labels import UNIVERSAL

from .components import (
    SDComponents,
    freeze,
    initial_latents,
    make_scheduler,
    noised_latents,
    sd_parts,
    vae_latents,
)
from .losses import PatchDiscriminator, VGGPerceptual, adversarial_losses
from .method import ConfigError, Method, register
from .sampling import InferenceProtocol, crops, denoise, make_sampler, per_tile
from .tiling import tiled_decode


def mlp(sizes: list[int]) -> nn.Sequential:
    """Linear layers with layer norm and LeakyReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers += [nn.LayerNorm(b), nn.LeakyReLU(0.2)]
    return nn.Sequential(*layers)


class VisualPromptProcessor(nn.Module):
    """``P_S = B_s(P_CLIP)``, ``P_D = B_d(P_CLIP)`` and the classifier ``C`` over degradation types (Eq. 2)."""

    def __init__(self, clip_dim: int, semantic_dim: int, degradation_dim: int, n_types: int):
        super().__init__()
        self.semantic_branch = mlp([clip_dim, semantic_dim, semantic_dim, semantic_dim])
        self.degradation_branch = mlp([clip_dim, degradation_dim, degradation_dim])
        self.classifier = nn.Linear(degradation_dim, n_types)

    def forward(self, p_clip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.semantic_branch(p_clip), self.degradation_branch(p_clip)


class ResBlock(nn.Module):
    """Two 3x3 convolutions with SiLU and a skip connection."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.silu(self.conv1(F.silu(x))))


class DegradationModulationBlock(nn.Module):
    """DMB (Eq. 3): ``ResBlock(ResBlock(F) * Sigmoid(Linear(P_D)))``."""

    def __init__(self, channels: int, degradation_dim: int):
        super().__init__()
        self.res1, self.res2 = ResBlock(channels), ResBlock(channels)
        self.modulation = nn.Linear(degradation_dim, channels)

    def forward(self, x: torch.Tensor, p_d: torch.Tensor) -> torch.Tensor:
        f = torch.sigmoid(self.modulation(p_d))[:, :, None, None]
        return self.res2(self.res1(x) * f)


class ControlEncoder(nn.Module):
    """Degradation-aware Control Encoder: four DMBs, stride-2 convolutions down to the latent size."""

    def __init__(self, width: int, degradation_dim: int, factor: int, blocks: int = 4):
        super().__init__()
        self.conv_in = nn.Conv2d(3, width, 3, padding=1)
        self.blocks = nn.ModuleList(DegradationModulationBlock(width, degradation_dim) for _ in range(blocks))
        n_down = factor.bit_length() - 1
        self.down = nn.ModuleList(nn.Conv2d(width, width, 3, stride=2, padding=1) if i < n_down else nn.Identity()
                                  for i in range(blocks))

    def forward(self, lq: torch.Tensor, p_d: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(lq)
        for block, down in zip(self.blocks, self.down, strict=True):
            h = down(block(h, p_d))
        return h


class ControlDecoder(nn.Module):
    """Control Decoder: four residual blocks (with upsampling back to the image size) to an RGB image."""

    def __init__(self, width: int, factor: int, blocks: int = 4):
        super().__init__()
        self.blocks = nn.ModuleList(ResBlock(width) for _ in range(blocks))
        self.n_up = factor.bit_length() - 1
        self.conv_out = nn.Conv2d(width, 3, 3, padding=1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.blocks):
            h = block(h)
            if i < self.n_up:
                h = F.interpolate(h, scale_factor=2, mode="nearest")
        return self.conv_out(h)


class RefinementBlock(nn.Module):
    """DRB (Eq. 5): ``ResBlock(Conv(Concat(z, z_lq)) * Sigmoid(Linear(P_D))) + z``."""

    def __init__(self, channels: int, lq_channels: int, degradation_dim: int):
        super().__init__()
        self.fuse = nn.Conv2d(channels + lq_channels, channels, 3, padding=1)
        self.modulation = nn.Linear(degradation_dim, channels)
        self.res = ResBlock(channels)
        nn.init.zeros_(self.res.conv2.weight)
        nn.init.zeros_(self.res.conv2.bias)

    def forward(self, z: torch.Tensor, z_lq: torch.Tensor, p_d: torch.Tensor) -> torch.Tensor:
        f = torch.sigmoid(self.modulation(p_d))[:, :, None, None]
        fused = self.fuse(torch.cat([z, z_lq], dim=1)) * f
        # Eq. 5's ResBlock(.) + z with the ResBlock's inner skip left out, so a new block adds exactly zero
        # and stage two starts from the pretrained decoder.
        return self.res(fused) - fused + z


STAGE1_MODULES = ("prompt_processor", "control_encoder", "control_decoder", "control_network")


def refinement_scales(vae_config) -> list[tuple[int, int, int]]:
    """``(factor, decoder channels, LQ channels)`` of ``z_1 .. z_n`` (Sec. III-D), smallest factor first.

    ``z_i^lq`` is the output of the VAE encoder's i-th downsampling stage, at 1/2^i of the image
    (SD's four-level VAE has three: 1/2, 1/4, 1/8 with 128, 256, 512 channels); ``z_i`` is the
    decoder's feature of the same size: the mid block's output at the latent size, else the
    output of the up block that reached 1/2^i. Read from the config alone (no forward pass), so
    it also counts parameters of a model on the meta device.
    """
    ch = list(vae_config.block_out_channels)
    n = len(ch)
    return [(2 ** i, ch[min(i + 1, n - 1)], ch[i - 1]) for i in range(1, n)]


def label_targets(labels: list[list[str]], vocab: tuple[str, ...] = UNIVERSAL) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft targets over ``vocab`` (uniform over a record's known types) and a mask of records that have one."""
    target = torch.zeros(len(labels), len(vocab))
    for i, labs in enumerate(labels):
        idx = [vocab.index(x) for x in labs if x in vocab]
        if idx:
            target[i, idx] = 1.0 / len(idx)
    return target, target.sum(dim=1) > 0


@register("diffrestorer")
class DiffRestorer(Method):
    """Diff-Restorer: visual prompt processor, image-guided control module, degradation-aware decoder (Sec. III)."""

    sampler = "unipc"

    @dataclass
    class Config(InferenceProtocol):
        """``stage`` 1 trains the prompt processor and control module; 2 the decoder, from ``stage1_checkpoint``.

        Protocol keys (steps, sampler, tiles, ...) as :class:`~.sampling.InferenceProtocol`'s.
        """

        variant: str = "tiny"
        stage: int = 1
        stage1_checkpoint: str | None = None
        clip_image_size: int = 32
        semantic_tokens: int = 1
        degradation_dim: int = 16
        control_width: int = 8
        lambda_deg: float = 1.0
        lambda_rec: float = 1.0
        lambda_per: float = 0.0
        lambda_adv: float = 0.0
        vgg19_weights: str | None = None  # file or folder with vgg19-dcbb9e9d.pth (default: BASE/vgg19/)
        disc_width: int = 64  # channels of the PatchGAN discriminator's first layer (stage 2, lambda_adv > 0)
        resolution: int = 32
        learning_rate: float = 1e-4
        seed: int = 0

    def __init__(self, config: Config, parts: SDComponents, image_encoder: nn.Module):
        super().__init__()
        from diffusers import ControlNetModel

        if config.stage not in (1, 2):
            raise ConfigError(f"stage must be 1 or 2, got {config.stage}")
        self.config = config
        self.unet, self.vae, self.image_encoder = parts.unet, parts.vae, image_encoder
        self.scheduler_config = parts.scheduler_config
        freeze(self.unet, self.vae, self.image_encoder)
        factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.latent_factor = factor
        clip_dim = image_encoder.config.projection_dim
        cross = self.unet.config.cross_attention_dim
        self.prompt_processor = VisualPromptProcessor(clip_dim, cross * config.semantic_tokens,
                                                      config.degradation_dim, len(UNIVERSAL))
        self.control_encoder = ControlEncoder(config.control_width, config.degradation_dim, factor)
        self.control_decoder = ControlDecoder(config.control_width, factor)
        self.control_network = ControlNetModel.from_unet(self.unet, conditioning_channels=config.control_width,
                                                         conditioning_embedding_out_channels=(config.control_width,))
        self.control_network.requires_grad_(True)
        # DRBs on z_1, z_2, z_3 (Sec. III-D): refinement[i - 1] refines the decoder feature at 1/2^i
        self.refinement = nn.ModuleList(RefinementBlock(c, c_lq, config.degradation_dim)
                                        for _, c, c_lq in refinement_scales(self.vae.config))
        self.refinement.requires_grad_(False)
        self.stage1_from: str | None = None  # where the stage-1 weights came from (stage two)
        self._stage1_error = ""
        self.discriminator = PatchDiscriminator(width=config.disc_width) \
            if config.stage == 2 and config.lambda_adv else None
        if config.stage == 2:  # stage two: only the decoder and its refinement blocks (and a discriminator) learn
            self.requires_grad_(False)
            self.vae.decoder.requires_grad_(True)
            self.refinement.requires_grad_(True)
            if self.discriminator is not None:
                self.discriminator.requires_grad_(True)
        self._vgg: VGGPerceptual | None = None  # built at the first stage-2 step (prediction does not need it)

    @property
    def frozen_modules(self) -> tuple[str, ...]:  # type: ignore[override]
        if self.config.stage == 2:
            return ("unet", "image_encoder", "prompt_processor", "control_encoder", "control_decoder",
                    "control_network")
        return ("unet", "vae", "image_encoder")

    @classmethod
    def build(cls, config: Config, base: str | None = None) -> DiffRestorer:
        if base is None and config.variant != "tiny":
            raise ConfigError(f"config variant {config.variant!r} needs --base: a local folder with SD 1.5 and "
                              "image_encoder/ (CLIP ViT-L/14 vision tower with projection)")
        parts = sd_parts(config, base)
        image_encoder = load_image_encoder(base) if base else tiny_image_encoder(config, parts)
        if config.stage == 2 and config.lambda_per and not config.vgg19_weights and base:
            from dataclasses import replace

            config = replace(config, vgg19_weights=str(Path(base) / "vgg19"))
        if config.stage == 2 and not config.stage1_checkpoint:
            raise ConfigError("stage 2 needs stage1_checkpoint: a stage-1 run folder (got None); "
                              "train with --stage 1 first, then --stage 2 --set stage1_checkpoint=RUN")
        model = cls(config, parts, image_encoder)
        if config.stage == 2:
            # Training starts from these weights. A stage-2 checkpoint carries its own copy, so when the
            # folder is not there (prediction elsewhere) the error waits for a step that would need it.
            try:
                model.load_stage1(config.stage1_checkpoint)
            except ConfigError as e:
                model._stage1_error = str(e)
        return model

    def load_stage1(self, path: str | None) -> None:
        """Load a stage-one run's trained prompt processor and control module (stage two starts from it)."""
        from safetensors.torch import load_file

        from . import checkpoint as ckpt

        folder = ckpt.latest(path) if path and Path(path).is_dir() else None
        if folder is None:
            raise ConfigError(f"stage 2 needs stage1_checkpoint: a stage-1 run folder (got {path!r}, not a folder "
                              f"with a checkpoint from {Path.cwd()}); train with --stage 1 first, then --stage 2 "
                              "--set stage1_checkpoint=RUN")
        state = load_file(folder / "model.safetensors")
        names = self._stage1_names()
        if set(state) != names:
            odd = sorted(set(state) ^ names)[:3]
            raise ConfigError(f"{folder}: not a Diff-Restorer stage-1 checkpoint of this config (differs in {odd})")
        self.load_state_dict(state, strict=False)
        self.stage1_from = str(folder.resolve())
        self._stage1_error = ""

    def _stage1_names(self) -> set[str]:
        """Names of the tensors stage one trains (what its checkpoint holds)."""
        return {n for n, _ in self.named_parameters() if n.split(".", 1)[0] in STAGE1_MODULES}

    def _require_stage1(self) -> None:
        if self.config.stage == 2 and self.stage1_from is None:
            raise ConfigError(self._stage1_error or "stage 2 without stage-1 weights: load a stage-2 checkpoint")

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The trained tensors; in stage two also the stage-1 weights it was built on (a self-contained run)."""
        state = super().trainable_state_dict()
        if self.config.stage == 2:
            own = self.state_dict()
            state.update({n: own[n].detach().contiguous() for n in sorted(self._stage1_names())})
        return state

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load a checkpoint; a stage-2 one brings its stage-1 weights and the stage-1 folder is not read."""
        if self.config.stage == 2 and not self._stage1_names() <= set(state):
            raise ValueError("this stage-2 checkpoint lacks the stage-1 weights it was built on (written before "
                             "pirs stored them there): train stage 2 again")
        super().load_trainable_state_dict(state)
        if self.config.stage == 2:
            self.stage1_from = "stage-2 checkpoint"
            self._stage1_error = ""

    # ------------------------------------------------------------------ pieces

    def visual_prompts(self, lq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(P_S as tokens (B, n, dim), P_D)`` from the frozen CLIP image encoder on the LQ image."""
        size = self.config.clip_image_size
        x = F.interpolate((lq + 1) / 2, size=(size, size), mode="bicubic", align_corners=False)
        mean = torch.tensor([0.48145466, 0.4578275, 0.40821073], device=lq.device)[None, :, None, None]
        std = torch.tensor([0.26862954, 0.26130258, 0.27577711], device=lq.device)[None, :, None, None]
        with torch.no_grad():
            p_clip = self.image_encoder(pixel_values=(x - mean) / std).image_embeds
        p_s, p_d = self.prompt_processor(p_clip)
        return p_s.view(lq.shape[0], self.config.semantic_tokens, -1), p_d

    def eps(self, z_t: torch.Tensor, t: torch.Tensor, control: torch.Tensor, p_s: torch.Tensor) -> torch.Tensor:
        down, mid = self.control_network(z_t, t, encoder_hidden_states=p_s, controlnet_cond=control,
                                         return_dict=False)
        return self.unet(z_t, t, encoder_hidden_states=p_s, down_block_additional_residuals=down,
                         mid_block_additional_residual=mid).sample

    def lq_features(self, lq: torch.Tensor) -> list[torch.Tensor]:
        """``z_1^lq .. z_n^lq``: the VAE encoder's features of the LQ after each downsampling stage (Sec. III-D)."""
        enc = self.vae.encoder
        h = enc.conv_in(lq)
        feats = []
        for block in enc.down_blocks[:-1]:  # the last down block keeps the latent size: no z^lq there
            h = block(h)
            feats.append(h)
        return feats

    def decode(self, z: torch.Tensor, lq: torch.Tensor | None = None, p_d: torch.Tensor | None = None) -> torch.Tensor:
        """The VAE decoder; with ``lq`` and ``p_d``, the Degradation-aware Decoder (Fig. 6).

        ``z_i`` at 1/2^i is refined before the up block that leaves that size: ``z_3`` (1/8) after
        the mid block, then ``z_2`` (1/4) and ``z_1`` (1/2) after the up blocks that reach them.
        """
        dec = self.vae.decoder
        z = z / self.vae.config.scaling_factor
        if lq is None:
            return self.vae.decode(z).sample
        z = self.vae.post_quant_conv(z) if self.vae.post_quant_conv is not None else z
        h = dec.mid_block(dec.conv_in(z), None)
        z_lq = self.lq_features(lq)
        levels = len(dec.up_blocks)
        for j, block in enumerate(dec.up_blocks):
            i = levels - 1 - j  # h is at 1/2^i of the image here
            if i >= 1:
                h = self.refinement[i - 1](h, z_lq[i - 1], p_d)
            h = block(h, None)
        return dec.conv_out(dec.conv_act(dec.conv_norm_out(h)))

    # ------------------------------------------------------------------ train / predict

    def perceptual(self) -> VGGPerceptual:
        """The frozen VGG-19 of ``L_per``, loaded once from ``vgg19_weights``."""
        if self._vgg is None:
            if not self.config.vgg19_weights:
                raise ConfigError("lambda_per > 0 needs VGG-19 weights: --set vgg19_weights=FILE (torchvision's "
                                  "vgg19-dcbb9e9d.pth), or put it in BASE/vgg19/")
            dev = self.vae.decoder.conv_in.weight.device
            self._vgg = VGGPerceptual(self.config.vgg19_weights).to(dev)
        return self._vgg

    def training_step(self, batch: dict, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Stage 1: ``L_diff + L_deg + L_rec`` (Eq. 7); stage 2: ``L_gen (+ L_per, L_adv)`` (Eq. 8)."""
        self._require_stage1()
        hq, lq = batch["hq"], batch["lq"]
        z0 = vae_latents(self.vae, hq)
        p_s, p_d = self.visual_prompts(lq)
        if self.config.stage == 2:
            restored = self.decode(z0, lq, p_d.detach())
            gen = F.mse_loss(restored.float(), hq.float())
            out = {"gen": gen.detach()}
            loss = gen
            if self.config.lambda_per:
                per = self.perceptual()(restored, hq)
                loss = loss + self.config.lambda_per * per
                out["per"] = per.detach()
            if self.discriminator is not None:
                adv, disc = adversarial_losses(self.discriminator, restored, hq)
                loss = loss + self.config.lambda_adv * adv + disc  # the discriminator's own hinge term
                out["adv"], out["disc"] = adv.detach(), disc.detach()
            return {"loss": loss, **out}
        sched = make_scheduler(self.scheduler_config, "ddpm")
        noise, t, z_t = noised_latents(sched, z0, generator)
        control = self.control_encoder(lq, p_d)
        diff = F.mse_loss(self.eps(z_t, t, control, p_s).float(), noise.float())
        rec = F.mse_loss(self.control_decoder(control).float(), hq.float())
        target, has = label_targets(batch["labels"])
        logits = self.prompt_processor.classifier(p_d)
        deg = F.cross_entropy(logits[has], target[has].to(logits.device)) if has.any() else logits.sum() * 0
        loss = diff + self.config.lambda_deg * deg + self.config.lambda_rec * rec
        return {"loss": loss, "diff": diff.detach(), "deg": deg.detach(), "rec": rec.detach()}

    @torch.no_grad()
    def restore(self, batch: dict, generator: torch.Generator, protocol: InferenceProtocol,
                tile_batch: int = 1, **_: object) -> torch.Tensor:
        """Sampling over latent tiles; decoded by the Degradation-aware Decoder once stage two has trained it.

        The visual prompts come from the whole LQ image (CLIP sees it resized, Sec. III-B);
        the control encoder runs on the LQ pixels under each tile, once per tile.
        """
        self._require_stage1()
        p = protocol
        sched = make_sampler(p.sampler, self.scheduler_config, p.steps)
        lq = batch["lq"]
        f = self.latent_factor
        z = initial_latents(self.unet, lq, f, generator, sched)
        p_s, p_d = self.visual_prompts(lq)
        controls: dict = {}

        def model_output(z_t: torch.Tensor, t: torch.Tensor, boxes: list) -> torch.Tensor:
            key = tuple(boxes)
            if key not in controls:  # the same tiles at every step: encode each tile's control once
                controls[key] = self.control_encoder(crops(lq, boxes, f), per_tile(p_d, len(boxes)))
            return self.eps(z_t, t, controls[key], per_tile(p_s, len(boxes)))

        z = denoise(sched, z, model_output, p, generator, tile_batch=tile_batch)
        if self.config.stage == 2:
            def decode(zt: torch.Tensor, box) -> torch.Tensor:
                return self.decode(zt, box.crop(lq, f), p_d)
        else:
            def decode(zt: torch.Tensor, box) -> torch.Tensor:
                return self.decode(zt)
        return tiled_decode(decode, z, f, p.vae_decoder_tile, p.vae_tile_overlap, tile_batch).clamp(-1, 1)


def tiny_image_encoder(config, parts: SDComponents) -> nn.Module:
    """A random CLIP vision tower with projection of a few thousand parameters."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    return CLIPVisionModelWithProjection(CLIPVisionConfig(
        image_size=config.clip_image_size, patch_size=8, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, projection_dim=16))


def load_image_encoder(base: str) -> nn.Module:
    """CLIP ViT-L/14's vision tower with projection from ``base/image_encoder`` (local files only).

    The folder may hold the vision tower alone or the whole ``CLIPModel`` that
    ``huggingface-cli download openai/clip-vit-large-patch14`` writes.
    """
    from .components import check_local, load_clip_vision

    root = check_local(base, {"image_encoder": ["config.json", "model.safetensors"]},
                       "on a machine with internet: huggingface-cli download openai/clip-vit-large-patch14 "
                       "--local-dir DIR/image_encoder")
    return load_clip_vision(root / "image_encoder")
