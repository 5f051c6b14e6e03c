"""SPIRE: Semantic and restoration Prompt-driven Image Restoration (Qi et al., ECCV 2024).

Sections 3.3-3.4 and Eq. 2 of the paper, on diffusers parts:

- the frozen latent-diffusion UNet and CLIP text encoder (the text-to-image prior), which
  takes the *semantic prompt* (a caption; dropped to ``""`` with ``semantic_dropout``);
- a ControlNet-style **restoration encoder** initialized from the UNet's encoder half
  (conv_in, time embedding, down blocks, mid block), trainable; it takes the noisy latent
  **concatenated** with a trainable **downsampled embedding of the degraded image**
  (``LQEmbedding``: strided convolutions to the latent's size, Sec. 3.4 "Conditioning on
  the Degraded Image") and cross-attends to the CLIP embedding of the **restoration
  prompt** ("Deblur with sigma 2.1; Denoise with sigma 0.06", Sec. 3.4 and 4.4);
- the **modulation fusion layer** (Sec. 3.4): every encoder feature ``c`` is turned by a
  zero-initialized convolution into ``gamma, beta`` and fuses into the frozen UNet's skip
  connection as ``(1 + gamma) * skip + beta`` (the mid feature the same way); at
  initialization the model is exactly the frozen UNet;
- training: the epsilon-prediction loss of Eq. 2 on latents of the HQ image, with two
  prompt dropouts: the semantic prompt alone becomes ``""`` (Sec. 4.1, ``semantic_dropout``,
  drawn by the data loader), and the whole text condition, both prompts, becomes ``""``
  (Sec. 3.1 "the condition is randomly dropped out ... to make the model unconditional",
  ``condition_dropout``, drawn here), so the null condition of classifier-free guidance is
  a trained one;
- inference: deterministic DDIM (Sec. 3.1) with the restoration and semantic prompts set by
  the user, or blind ("Remove all degradation" with an empty semantic prompt, Sec. 1), and
  optionally classifier-free guidance ``eps_null + g * (eps - eps_null)`` against that null
  condition (Sec. 3.1).

Documented choices where the paper is silent (the README's SPIRE section): the LQ embedding's
width and depth, the VAE latent is the posterior mean, the mid-block feature is modulated
like the skips, the dropout rates, and classifier-free guidance is off by default.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .components import (
    SDComponents,
    diffusion_target,
    encode_text,
    freeze,
    initial_latents,
    make_scheduler,
    noised_latents,
    sd_parts,
    vae_latents,
)
from .method import Method, register
from .sampling import InferenceProtocol, cfg, crops, decode_sd, denoise, make_sampler, per_tile, with_added_prompt
from .unet_fusion import check_plain, run_down, run_mid, timestep_embedding, unet_with_fusion

BLIND_PROMPT = "Remove all degradation"


class LQEmbedding(nn.Module):
    """Downsample layers on the degraded image to the latent's size (trainable; Sec. 3.4)."""

    def __init__(self, factor: int, width: int, out_channels: int):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, width, 3, padding=1), nn.SiLU()]
        for _ in range(int(round(math.log2(factor)))):
            layers += [nn.Conv2d(width, width, 3, padding=1, stride=2), nn.SiLU()]
        layers.append(nn.Conv2d(width, out_channels, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, lq: torch.Tensor) -> torch.Tensor:
        return self.net(lq)


class RestorationEncoder(nn.Module):
    """The ControlNet-style encoder: a trainable copy of the UNet's encoder half, fed ``[z_t, e(x_lq)]``."""

    def __init__(self, unet, lq_channels: int):
        super().__init__()
        conv = unet.conv_in
        self.conv_in = nn.Conv2d(conv.in_channels + lq_channels, conv.out_channels, conv.kernel_size,
                                 padding=conv.padding)
        with torch.no_grad():  # the latent channels start as the UNet's; the LQ channels start at zero
            self.conv_in.weight.zero_()
            self.conv_in.weight[:, : conv.in_channels] = conv.weight
            self.conv_in.bias.copy_(conv.bias)
        self.time_proj = copy.deepcopy(unet.time_proj)
        self.time_embedding = copy.deepcopy(unet.time_embedding)
        self.down_blocks = copy.deepcopy(unet.down_blocks)
        self.mid_block = copy.deepcopy(unet.mid_block)

    def forward(self, z_t: torch.Tensor, t: torch.Tensor, lq_feat: torch.Tensor,
                restoration_emb: torch.Tensor) -> tuple[tuple, torch.Tensor]:
        emb = timestep_embedding(self, t, z_t.shape[0], z_t.dtype)
        h, skips = run_down(self, self.conv_in(torch.cat([z_t, lq_feat], dim=1)), emb, restoration_emb)
        return skips, run_mid(self, h, emb, restoration_emb)


def skip_channels(unet) -> list[int]:
    """Channels of the UNet's skip features in order: conv_in, then each down block's resnets and downsampler."""
    cfg = unet.config
    out = [cfg.block_out_channels[0]]
    for i, block in enumerate(unet.down_blocks):
        out += [cfg.block_out_channels[i]] * len(block.resnets)
        if block.downsamplers is not None:
            out.append(cfg.block_out_channels[i])
    return out


class ModulationFusion(nn.Module):
    """``(1 + gamma) * skip + beta`` with ``gamma, beta`` from a zero-initialized 1x1 convolution of the feature."""

    def __init__(self, channels: int):
        super().__init__()
        self.to_gamma_beta = nn.Conv2d(channels, 2 * channels, 1)
        nn.init.zeros_(self.to_gamma_beta.weight)
        nn.init.zeros_(self.to_gamma_beta.bias)

    def forward(self, skip: torch.Tensor, feature: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.to_gamma_beta(feature).chunk(2, dim=1)
        return (1 + gamma) * skip + beta


@register("spire")
class Spire(Method):
    """SPIRE on a frozen SD UNet with a restoration encoder and modulation fusion (Sec. 3.3-3.4)."""

    @dataclass
    class Config(InferenceProtocol):
        """``tiny``: random parts of a few thousand parameters; ``sd15``: Stable Diffusion 1.5 from ``--base``.

        The inference protocol keys (steps, sampler, guidance, tiles, colour fix, ...) come from
        :class:`~.sampling.InferenceProtocol`; the YAML configs set and cite them.
        """

        variant: str = "tiny"  # tiny | sd
        lq_embedding_width: int = 16
        lq_embedding_channels: int = 4
        semantic_field: str = "caption_source"  # record field of the semantic prompt; falls back to caption_high
        restoration_dropout: float = 0.0  # the restoration prompt alone to "" (data loader; SPIRE never does)
        semantic_dropout: float = 0.1  # the semantic prompt alone to "" (data loader; Sec. 4.1)
        condition_dropout: float = 0.1  # both prompts to "" together (training step; Sec. 3.1)
        resolution: int = 32
        learning_rate: float = 1e-4
        seed: int = 0

    def __init__(self, config: Config, parts: SDComponents):
        super().__init__()
        self.config = config
        self.unet, self.vae, self.text_encoder = parts.unet, parts.vae, parts.text_encoder
        self.tokenizer = parts.tokenizer
        self.scheduler_config = parts.scheduler_config
        freeze(self.unet, self.vae, self.text_encoder)
        check_plain(self.unet)
        factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.latent_factor = factor
        self.lq_embedding = LQEmbedding(factor, config.lq_embedding_width, config.lq_embedding_channels)
        self.encoder = RestorationEncoder(self.unet, config.lq_embedding_channels)
        self.encoder.requires_grad_(True)  # copied from the frozen UNet, trained from there
        self.skip_fusion = nn.ModuleList([ModulationFusion(c) for c in skip_channels(self.unet)])
        self.mid_fusion = ModulationFusion(self.unet.config.block_out_channels[-1])

    @classmethod
    def build(cls, config: Config, base: str | None = None) -> Spire:
        return cls(config, sd_parts(config, base))

    # ------------------------------------------------------------------ pieces

    def scheduler(self, kind: str = "ddpm"):
        return make_scheduler(self.scheduler_config, kind)

    def text(self, prompts: list[str]) -> torch.Tensor:
        return encode_text(self, prompts, self.unet.conv_in.weight.device)

    def latents(self, images: torch.Tensor) -> torch.Tensor:
        """VAE posterior mean times the scaling factor."""
        return vae_latents(self.vae, images)

    def eps(self, z_t: torch.Tensor, t: torch.Tensor, lq: torch.Tensor, restoration_emb: torch.Tensor,
            semantic_emb: torch.Tensor) -> torch.Tensor:
        """The frozen UNet's prediction with the restoration encoder's features fused into its skips."""
        feats, mid_feat = self.encoder(z_t, t, self.lq_embedding(lq), restoration_emb)

        def fuse(skips: tuple, mid: torch.Tensor) -> tuple[tuple, torch.Tensor]:
            fused = tuple(f(s, c) for f, s, c in zip(self.skip_fusion, skips, feats, strict=True))
            return fused, self.mid_fusion(mid, mid_feat)

        return unet_with_fusion(self.unet, z_t, t, semantic_emb, fuse)

    def prompts(self, batch: dict) -> tuple[list[str], list[str]]:
        """The restoration and semantic prompts of a batch (after the data loader's dropout)."""
        return list(batch["restoration_prompt"]), list(batch["semantic_prompt"])

    def drop_condition(self, r_prompts: list[str], s_prompts: list[str], generator: torch.Generator
                       ) -> tuple[list[str], list[str]]:
        """Sec. 3.1: each sample's text condition is dropped, both prompts to ``""``, with chance
        ``condition_dropout`` (one draw per sample from ``generator``; none when the rate is 0)."""
        if self.config.condition_dropout <= 0:
            return r_prompts, s_prompts
        drop = (torch.rand(len(r_prompts), generator=generator) < self.config.condition_dropout).tolist()
        return ([("" if d else r) for d, r in zip(drop, r_prompts, strict=True)],
                [("" if d else s) for d, s in zip(drop, s_prompts, strict=True)])

    # ------------------------------------------------------------------ train / predict

    def training_step(self, batch: dict, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Eq. 2: || eps - eps_theta(z_t, t, x_lq, c_restoration, c_semantic) ||^2, the condition dropped
        as Sec. 3.1 says (drawn after the noise and timesteps, which stay those of ``generator``)."""
        sched = self.scheduler("ddpm")
        z0 = self.latents(batch["hq"])
        noise, t, z_t = noised_latents(sched, z0, generator)
        r_prompts, s_prompts = self.drop_condition(*self.prompts(batch), generator)
        pred = self.eps(z_t, t, batch["lq"], self.text(r_prompts), self.text(s_prompts))
        target = diffusion_target(sched, z0, noise, t)
        loss = F.mse_loss(pred.float(), target.float())
        return {"loss": loss}

    @torch.no_grad()
    def restore(self, batch: dict, generator: torch.Generator, protocol: InferenceProtocol,
                tile_batch: int = 1, **_: object) -> torch.Tensor:
        """DDIM from noise with the batch's restoration and semantic prompts (Sec. 3.1), over latent tiles.

        With guidance ``g != 1`` the unconditional pass (both prompts the protocol's
        ``negative_prompt``, ``""``: the condition that ``condition_dropout`` trains, Sec. 3.1) is
        computed once per step and tile: ``eps_null + g * (eps - eps_null)``.
        """
        p = protocol
        sched = make_sampler(p.sampler, self.scheduler_config, p.steps)
        lq = batch["lq"]
        f = self.latent_factor
        z = initial_latents(self.unet, lq, f, generator, sched)
        r_prompts, s_prompts = self.prompts(batch)
        r_emb, s_emb = self.text(r_prompts), self.text(with_added_prompt(s_prompts, p.added_prompt))
        g = p.guidance_scale
        null = self.text([p.negative_prompt] * len(r_prompts)) if g != 1.0 else None

        def model_output(z_t: torch.Tensor, t: torch.Tensor, boxes: list) -> torch.Tensor:
            n, lq_t = len(boxes), crops(lq, boxes, f)
            eps = self.eps(z_t, t, lq_t, per_tile(r_emb, n), per_tile(s_emb, n))
            if null is None:
                return eps
            return cfg(eps, self.eps(z_t, t, lq_t, per_tile(null, n), per_tile(null, n)), g)

        z = denoise(sched, z, model_output, p, generator, tile_batch=tile_batch)
        return decode_sd(self.vae, z, f, p, tile_batch)
