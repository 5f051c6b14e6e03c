"""The frozen SD UNet run step by step, so restoration features can be fused into its skip connections.

``UNet2DConditionModel.forward`` only lets a ControlNet *add* residuals to the skips.
SPIRE's modulation fusion multiplies them, ``(1 + gamma) * skip + beta``, so the down
path, the fusion, the middle and the up path are run here with the UNet's own modules
in the order ``forward`` runs them (time embedding, conv_in, down blocks, mid block,
up blocks, output head). A UNet of another structure (class embeddings, added
conditions) is refused rather than run differently.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def timestep_embedding(unet, t: torch.Tensor, batch: int, dtype: torch.dtype) -> torch.Tensor:
    """The UNet's time embedding for timesteps ``t`` (a scalar or ``(B,)``)."""
    t = torch.as_tensor(t, device=unet.conv_in.weight.device)
    if t.ndim == 0:
        t = t[None]
    t = t.expand(batch)
    return unet.time_embedding(unet.time_proj(t).to(dtype))


def check_plain(unet) -> None:
    """Refuse UNets whose forward has parts this step-by-step run does not reproduce."""
    cfg = unet.config
    if cfg.class_embed_type or cfg.addition_embed_type or cfg.time_cond_proj_dim or getattr(unet, "encoder_hid_proj",
                                                                                              None) is not None:
        raise ValueError("the frozen UNet has class, added or projected conditions; only SD 1.x/2.x-style "
                         "UNets are supported by the fusion path")


def run_down(unet, h: torch.Tensor, emb: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, tuple]:
    """conv_in (already applied to ``h``) -> down blocks: the last hidden state and every skip feature."""
    skips: tuple = (h,)
    for block in unet.down_blocks:
        if getattr(block, "has_cross_attention", False):
            h, res = block(hidden_states=h, temb=emb, encoder_hidden_states=context)
        else:
            h, res = block(hidden_states=h, temb=emb)
        skips += tuple(res)
    return h, skips


def run_mid(unet, h: torch.Tensor, emb: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """The mid block."""
    if unet.mid_block is None:
        return h
    if getattr(unet.mid_block, "has_cross_attention", False):
        return unet.mid_block(h, emb, encoder_hidden_states=context)
    return unet.mid_block(h, emb)


def unet_with_fusion(unet, sample: torch.Tensor, t: torch.Tensor, context: torch.Tensor,
                     fuse: Callable[[tuple, torch.Tensor], tuple[tuple, torch.Tensor]] | None = None) -> torch.Tensor:
    """The UNet's noise prediction, with ``fuse(skips, mid) -> (skips, mid)`` applied between its halves."""
    emb = timestep_embedding(unet, t, sample.shape[0], sample.dtype)
    h, skips = run_down(unet, unet.conv_in(sample), emb, context)
    h = run_mid(unet, h, emb, context)
    if fuse is not None:
        skips, h = fuse(skips, h)
    # like UNet2DConditionModel.forward: sides that are not a multiple of the UNet's downsampling get each
    # upsampler's output size from the matching skip, so any latent size runs
    odd = any(s % 2 ** unet.num_upsamplers for s in sample.shape[-2:])
    for i, block in enumerate(unet.up_blocks):
        n = len(block.resnets)
        res, skips = skips[-n:], skips[:-n]
        size = skips[-1].shape[2:] if odd and i < len(unet.up_blocks) - 1 else None
        if getattr(block, "has_cross_attention", False):
            h = block(hidden_states=h, temb=emb, res_hidden_states_tuple=res, encoder_hidden_states=context,
                      upsample_size=size)
        else:
            h = block(hidden_states=h, temb=emb, res_hidden_states_tuple=res, upsample_size=size)
    if unet.conv_norm_out is not None:
        h = unet.conv_act(unet.conv_norm_out(h))
    return unet.conv_out(h)
