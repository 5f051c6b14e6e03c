"""XPSR: Cross-modal Priors for Diffusion-based Image Super-Resolution (Qu et al., ECCV 2024).

The method section of the paper, on diffusers parts:

- **semantic priors** (Sec. 3.1): LLaVA's high-level caption (content, layout) and
  low-level caption (quality, noise, blur, lighting), read from the shards'
  ``caption_high`` and ``caption_low`` (``caption run`` writes them with XPSR's two
  instructions), each encoded by the frozen CLIP text encoder into ``c_h`` and ``c_l``;
- the frozen SD UNet, conditioned on ``c_h`` only ("its input is noise and does not
  need low-level degradation understanding"), and a trainable **ControlNet** on the LQ
  image (``ControlNetModel.from_unet``) whose cross-attentions are **Semantic-Fusion
  Attention** (Sec. 3.2): parallel cross-attentions ``CA_h(x, c_h)`` and ``CA_l(x, c_l)``
  combined by a fusion attention ``CA_f`` with the high-level result as query and the
  low-level result as key/value, ``x_{k+1} = CA_f(CA_h(x_k, c_h), CA_l(x_k, c_l))``;
- the **Degradation-Free Constraint** (Sec. 3.3): heads map the ControlNet image
  encoder's features at three scales to RGB, aligned with the downsampled HR image, and
  the ControlNet UNet-encoder features at three scales to the latent space, aligned with
  the downsampled HR latent; ``L = L_diffusion + 0.05 * L_DFC`` with L1 terms;
- trainable: the ControlNet (with its SFA) and the DFC heads; all of SD is frozen.
  Inference: DDIM with classifier-free guidance whose negative prompt is
  "blurry, dotted, noise, unclear, low-res, over-smoothed" (the paper's).

Documented choices where the paper is silent or this port differs: ``CA_h`` and ``CA_l``
start as copies of the ControlNet's cross-attention and ``CA_f`` is added residually
with a zero-initialized output (so training starts from a plain ControlNet); the DFC
heads are 1x1 convolutions; the VAE latent is the posterior mean; the sampler is DDIM.
"""

from __future__ import annotations

import copy
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
from .method import ConfigError, Method, register
from .sampling import InferenceProtocol, cfg, crops, denoise, make_sampler, per_tile, with_added_prompt
from .tiling import tiled_decode

NEGATIVE_PROMPT = "blurry, dotted, noise, unclear, low-res, over-smoothed"


class SemanticFusionAttention(nn.Module):
    """SFA: ``CA_f(CA_h(x, c_h), CA_l(x, c_l))``; ``c_h`` and ``c_l`` arrive joined along the tokens."""

    def __init__(self, cross_attention, high_tokens: int):
        super().__init__()
        from diffusers.models.attention_processor import Attention

        self.high_tokens = high_tokens
        self.ca_high = copy.deepcopy(cross_attention)
        self.ca_low = copy.deepcopy(cross_attention)
        dim = cross_attention.to_q.in_features
        heads = cross_attention.heads
        self.ca_fusion = Attention(query_dim=dim, cross_attention_dim=dim, heads=heads, dim_head=dim // heads)
        nn.init.zeros_(self.ca_fusion.to_out[0].weight)
        nn.init.zeros_(self.ca_fusion.to_out[0].bias)

    def forward(self, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        c_h = encoder_hidden_states[:, : self.high_tokens]
        c_l = encoder_hidden_states[:, self.high_tokens:]
        h = self.ca_high(hidden_states, encoder_hidden_states=c_h)
        low = self.ca_low(hidden_states, encoder_hidden_states=c_l)
        return h + self.ca_fusion(h, encoder_hidden_states=low)


def install_sfa(controlnet, high_tokens: int) -> int:
    """Replace every cross-attention of the ControlNet by SFA; returns how many were replaced."""
    from diffusers.models.attention import BasicTransformerBlock

    n = 0
    for module in controlnet.modules():
        if isinstance(module, BasicTransformerBlock) and module.attn2 is not None:
            module.attn2 = SemanticFusionAttention(module.attn2, high_tokens)
            n += 1
    return n


class DegradationFreeHeads(nn.Module):
    """1x1 convolutions from features to RGB (pixel space) or to the latent channels (latent space)."""

    def __init__(self, channels: list[int], out_channels: int):
        super().__init__()
        self.heads = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in channels)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        return [head(f) for head, f in zip(self.heads, feats, strict=True)]


def l1_to_target(preds: list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    """Sum over scales of the mean L1 between each prediction and the target area-resized to its size."""
    total = target.new_zeros(())
    for p in preds:
        total = total + F.l1_loss(p.float(), F.adaptive_avg_pool2d(target, p.shape[-2:]).float())
    return total


@register("xpsr")
class Xpsr(Method):
    """XPSR: SD UNet + ControlNet with Semantic-Fusion Attention and the Degradation-Free Constraint (Sec. 3)."""

    sampler = "ddim"

    @dataclass
    class Config(InferenceProtocol):
        """``tiny``: random parts; ``sd15``: Stable Diffusion 1.5 from ``--base``; protocol keys as the mixin's."""

        variant: str = "tiny"
        hint_channels: list[int] | None = None  # ControlNet image-encoder widths (None: ControlNet's defaults)
        dfc_weight: float = 0.05
        dfc_scales: int = 3
        negative_prompt: str = NEGATIVE_PROMPT
        resolution: int = 32
        learning_rate: float = 1e-4
        seed: int = 0

    def __init__(self, config: Config, parts: SDComponents):
        super().__init__()
        from diffusers import ControlNetModel

        self.config = config
        self.unet, self.vae, self.text_encoder = parts.unet, parts.vae, parts.text_encoder
        self.tokenizer = parts.tokenizer
        self.scheduler_config = parts.scheduler_config
        freeze(self.unet, self.vae, self.text_encoder)
        factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.latent_factor = factor
        hint = config.hint_channels or [16, 32, 96, 256][: int(factor).bit_length()]
        if len(hint) - 1 != int(factor).bit_length() - 1:
            raise ConfigError(f"hint_channels {hint} must have {int(factor).bit_length()} entries: the image encoder "
                              f"must downsample by the VAE's factor {factor}")
        self.controlnet = ControlNetModel.from_unet(self.unet, conditioning_embedding_out_channels=tuple(hint))
        self.controlnet.requires_grad_(True)
        self.n_sfa = install_sfa(self.controlnet, self.tokenizer.model_max_length)
        self.controlnet.requires_grad_(True)
        # DFC: pixel-space heads on the image encoder (after conv_in and each stride-2 stage), latent-space
        # heads on the ControlNet's down blocks; the last/first `dfc_scales` of each.
        pixel_channels = [hint[0]] + list(hint[1:])
        self.pixel_scales = pixel_channels[-config.dfc_scales:]
        latent_channels = list(self.unet.config.block_out_channels)[: config.dfc_scales]
        self.pixel_heads = DegradationFreeHeads(self.pixel_scales, 3)
        self.latent_heads = DegradationFreeHeads(latent_channels, self.unet.config.in_channels)
        self._feats: dict[str, list[torch.Tensor]] = {"pixel": [], "latent": []}
        emb = self.controlnet.controlnet_cond_embedding
        stages = [emb.conv_in] + [b for b in emb.blocks if b.stride == (2, 2)]
        for m in stages[-config.dfc_scales:]:
            m.register_forward_hook(lambda _m, _i, out: self._feats["pixel"].append(F.silu(out)))
        for blk in list(self.controlnet.down_blocks)[: config.dfc_scales]:
            blk.register_forward_hook(lambda _m, _i, out: self._feats["latent"].append(out[0]))

    frozen_modules = ("unet", "vae", "text_encoder")

    @classmethod
    def build(cls, config: Config, base: str | None = None) -> Xpsr:
        return cls(config, sd_parts(config, base))

    def scheduler(self, kind: str):
        return make_scheduler(self.scheduler_config, kind)

    def text(self, prompts: list[str]) -> torch.Tensor:
        return encode_text(self, prompts, self.unet.conv_in.weight.device)

    def latents(self, images: torch.Tensor) -> torch.Tensor:
        return vae_latents(self.vae, images)

    def eps(self, z_t: torch.Tensor, t: torch.Tensor, lq: torch.Tensor, c_h: torch.Tensor,
            c_l: torch.Tensor) -> torch.Tensor:
        """The UNet's noise prediction (on ``c_h``) with the ControlNet's residuals (SFA over ``c_h``, ``c_l``)."""
        self._feats = {"pixel": [], "latent": []}
        down, mid = self.controlnet(z_t, t, encoder_hidden_states=torch.cat([c_h, c_l], dim=1), controlnet_cond=lq,
                                    return_dict=False)
        return self.unet(z_t, t, encoder_hidden_states=c_h, down_block_additional_residuals=down,
                         mid_block_additional_residual=mid).sample

    def dfc_loss(self, hq: torch.Tensor, z_hq: torch.Tensor) -> torch.Tensor:
        """L_DFC of the last ControlNet pass: pixel-space and latent-space L1 terms over the scales."""
        pixel = l1_to_target(self.pixel_heads(self._feats["pixel"]), hq)
        latent = l1_to_target(self.latent_heads(self._feats["latent"]), z_hq)
        return pixel + latent

    def training_step(self, batch: dict, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """``L_diffusion + dfc_weight * L_DFC`` (Sec. 3.3)."""
        sched = self.scheduler("ddpm")
        z0 = self.latents(batch["hq"])
        noise, t, z_t = noised_latents(sched, z0, generator)
        pred = self.eps(z_t, t, batch["lq"], self.text(batch["caption_high"]), self.text(batch["caption_low"]))
        target = diffusion_target(sched, z0, noise, t)
        diffusion = F.mse_loss(pred.float(), target.float())
        dfc = self.dfc_loss(batch["hq"], z0)
        return {"loss": diffusion + self.config.dfc_weight * dfc, "diffusion": diffusion.detach(), "dfc": dfc.detach()}

    @torch.no_grad()
    def restore(self, batch: dict, generator: torch.Generator, protocol: InferenceProtocol,
                tile_batch: int = 1, **_: object) -> torch.Tensor:
        """Sampling with classifier-free guidance against the negative prompt (Sec. 3, inference), over tiles."""
        p = protocol
        sched = make_sampler(p.sampler, self.scheduler_config, p.steps)
        lq = batch["lq"]
        f = self.latent_factor
        z = initial_latents(self.unet, lq, f, generator, sched)
        c_h = self.text(with_added_prompt(batch["caption_high"], p.added_prompt))
        c_l = self.text(batch["caption_low"])
        g = p.guidance_scale
        neg = self.text([p.negative_prompt] * lq.shape[0]) if g != 1.0 else None

        def model_output(z_t: torch.Tensor, t: torch.Tensor, boxes: list) -> torch.Tensor:
            n, lq_t = len(boxes), crops(lq, boxes, f)
            low = per_tile(c_l, n)
            eps = self.eps(z_t, t, lq_t, per_tile(c_h, n), low)
            if neg is None:
                return eps
            return cfg(eps, self.eps(z_t, t, lq_t, per_tile(neg, n), low), g)

        z = denoise(sched, z, model_output, p, generator, tile_batch=tile_batch)
        sf = self.vae.config.scaling_factor
        out = tiled_decode(lambda zt, _box: self.vae.decode(zt / sf).sample, z, f, p.vae_decoder_tile,
                           p.vae_tile_overlap, tile_batch)
        return out.clamp(-1, 1)
