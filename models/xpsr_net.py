"""XPSR's network on diffusers blocks: Semantic-Fusion Attention, pixel attention, Degradation-Free heads.

XPSR (Qu et al., ECCV 2024) keeps Stable Diffusion's UNet and a ControlNet made from it, and
adds modules *beside* diffusers' own, under the names of the official code
(github qyp2000/XPSR, ``models/xpsr/unet_2d_blocks.py``, ``controlnet.py``,
``unet_2d_condition.py``), so that a released checkpoint's parameters land on these modules
name for name:

- **Semantic-Fusion Attention** (Sec. 3.2). In every cross-attention layer ``j`` of a block
  that has it, the SD transformer ``attentions[j]`` is ``CA_h`` (high-level caption
  ``c_h``), ``attentions_lowlevel[j]`` is ``CA_l`` (low-level caption ``c_l``), run in
  parallel on the same input, and ``attentions_connect[j]`` is ``CA_f``, whose queries
  come from the ``CA_h`` result and whose keys/values are the ``CA_l`` result's pixels as
  tokens: ``x_{k+1} = CA_f(CA_h(x_k, c_h), CA_l(x_k, c_l))``. Each is a whole diffusers
  ``Transformer2DModel`` (self-attention, cross-attention, feed-forward, residual), as
  in the official blocks. The ControlNet's down and middle blocks have SFA
  (``controlnet.py`` ``use_lowlevel_prompt=True``); the UNet's only when its config says
  so (``unet_2d_condition.py`` ``down/mid/up_use_lowlevel_prompt``, all False by default,
  so the UNet sees ``c_h`` only, as Sec. 3.2 says).
- **pixel attention** (official code; the paper's "Conditional Attention"): every layer of
  every UNet up block ends with ``pixel_attentions[j]``, a ``Transformer2DModel`` whose
  cross-attention reads the ControlNet residual of the skip that layer consumes.
- **Degradation-Free Constraint heads** (Sec. 3.3): ``controlnet_cond_embedding.to_rgbs[i]``
  map the ControlNet image encoder's features after each stride-2 stage to RGB (pixel
  space); ``conv_degradation[k]`` map each ControlNet residual and ``conv_degradation_mid``
  the middle residual to the latent channels (latent space); all 3x3 convolutions.

:func:`controlnet_forward` and :func:`unet_forward` run the diffusers modules in the order
their ``forward`` methods do, with these additions where the official blocks put them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .unet_fusion import check_plain, timestep_embedding

TRAINABLE_UNET_MODULES = ("pixel_attentions", "attentions_lowlevel", "attentions_connect")  # xpsr.yaml


def tokens(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, H*W, C)``: a feature map as a sequence of pixel tokens."""
    return x.flatten(2).transpose(1, 2)


def _transformer(config: dict, **changes):
    from diffusers import Transformer2DModel

    return Transformer2DModel(**{**{k: v for k, v in config.items() if not k.startswith("_")}, **changes})


def _copy_matching(dst: nn.Module, src: nn.Module) -> None:
    """Copy ``src``'s tensors into ``dst`` where name and shape agree (the official ``from_unet`` rule)."""
    own = dst.state_dict()
    dst.load_state_dict({k: v for k, v in src.state_dict().items() if k in own and own[k].shape == v.shape},
                        strict=False)


def add_semantic_fusion(block: nn.Module) -> None:
    """Give a cross-attention block ``attentions_lowlevel`` (CA_l) and ``attentions_connect`` (CA_f).

    Both start from the block's own ``attentions`` wherever shapes agree (CA_f's keys and values
    read pixel tokens of the block's width instead of text, so those two start at random).
    """
    low, connect = nn.ModuleList(), nn.ModuleList()
    for attn in block.attentions:
        cfg = dict(attn.config)
        ca_l = _transformer(cfg)
        ca_f = _transformer(cfg, cross_attention_dim=cfg["in_channels"])
        _copy_matching(ca_l, attn)
        _copy_matching(ca_f, attn)
        low.append(ca_l)
        connect.append(ca_f)
    block.attentions_lowlevel = low
    block.attentions_connect = connect


def _per_block(value, n: int) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value] * n


def add_pixel_attentions(unet) -> None:
    """Give every UNet up block ``pixel_attentions``: one per layer, reading the ControlNet residual of its skip.

    Widths as the official ``CrossAttnUpBlock2D``: query ``out_channels``, context the skip's width
    (``in_channels`` for a block's last layer, else ``out_channels``).
    """
    c = unet.config
    n = len(c.block_out_channels)
    heads = list(reversed(_per_block(c.num_attention_heads or c.attention_head_dim, n)))
    layers = list(reversed(_per_block(c.transformer_layers_per_block, n)))
    only_cross = list(reversed(_per_block(c.only_cross_attention, n)))
    widths = list(reversed(c.block_out_channels))
    for i, block in enumerate(unet.up_blocks):
        out_ch, in_ch = widths[i], widths[min(i + 1, n - 1)]
        n_layers = len(block.resnets)
        block.pixel_attentions = nn.ModuleList(
            _transformer({}, num_attention_heads=heads[i], attention_head_dim=out_ch // heads[i], in_channels=out_ch,
                         num_layers=layers[i], cross_attention_dim=in_ch if j == n_layers - 1 else out_ch,
                         norm_num_groups=c.norm_num_groups, use_linear_projection=c.use_linear_projection,
                         only_cross_attention=only_cross[i], upcast_attention=c.upcast_attention)
            for j in range(n_layers))


def add_degradation_heads(controlnet) -> None:
    """The DFC heads: ``to_rgbs`` on the image encoder, ``conv_degradation(_mid)`` on the residuals."""
    emb = controlnet.controlnet_cond_embedding
    latent = controlnet.config.in_channels
    emb.to_rgbs = nn.ModuleList(nn.Conv2d(b.out_channels, 3, 3, padding=1) for b in emb.blocks[1::2])
    controlnet.conv_degradation = nn.ModuleList(
        nn.Sequential(nn.Conv2d(b.in_channels, latent, 3, padding=1)) for b in controlnet.controlnet_down_blocks)
    mid = controlnet.controlnet_mid_block.in_channels
    controlnet.conv_degradation_mid = nn.Sequential(nn.Conv2d(mid, latent, 3, padding=1))


def has_semantic_fusion(block: nn.Module) -> bool:
    return getattr(block, "attentions_lowlevel", None) is not None


def attend(block, j: int, h: torch.Tensor, c_h: torch.Tensor, c_l: torch.Tensor | None) -> torch.Tensor:
    """Layer ``j``'s text attention: ``CA_h`` alone, or SFA ``CA_f(CA_h(h, c_h), CA_l(h, c_l))``."""
    high = block.attentions[j](h, encoder_hidden_states=c_h, return_dict=False)[0]
    if not has_semantic_fusion(block) or c_l is None:
        return high
    low = block.attentions_lowlevel[j](h, encoder_hidden_states=c_l, return_dict=False)[0]
    return block.attentions_connect[j](high, encoder_hidden_states=tokens(low), return_dict=False)[0]


def run_down_block(block, h, emb, c_h, c_l) -> tuple[torch.Tensor, tuple]:
    """A down block: (resnet, attention) per layer, then the downsampler; returns ``h`` and its skips."""
    skips: tuple = ()
    cross = getattr(block, "attentions", None)
    for j, resnet in enumerate(block.resnets):
        h = resnet(h, emb)
        if cross is not None:
            h = attend(block, j, h, c_h, c_l)
        skips += (h,)
    for down in block.downsamplers or []:
        h = down(h)
        skips += (h,)
    return h, skips


def run_mid_block(block, h, emb, c_h, c_l) -> torch.Tensor:
    """The middle block: resnet, then (attention, resnet) per layer."""
    h = block.resnets[0](h, emb)
    for j, resnet in enumerate(block.resnets[1:]):
        h = resnet(attend(block, j, h, c_h, c_l), emb)
    return h


def run_up_block(block, h, emb, skips: tuple, pixels: tuple | None, c_h, c_l, size=None) -> torch.Tensor:
    """An up block: per layer, concatenate the last skip, resnet, attention, pixel attention; then upsample."""
    cross = getattr(block, "attentions", None)
    pix_attn = getattr(block, "pixel_attentions", None)
    for j, resnet in enumerate(block.resnets):
        h = resnet(torch.cat([h, skips[-1]], dim=1), emb)
        skips = skips[:-1]
        if cross is not None:
            h = attend(block, j, h, c_h, c_l)
        if pixels:  # the ControlNet residual of the skip just consumed
            pixel, pixels = pixels[-1], pixels[:-1]
            if pix_attn is not None:
                h = pix_attn[j](h, encoder_hidden_states=tokens(pixel), return_dict=False)[0]
    for up in block.upsamplers or []:
        h = up(h, size)
    return h


@dataclass
class ControlOutput:
    """What the ControlNet gives: residuals for the UNet and the DFC predictions."""

    down: list[torch.Tensor]  # one residual per UNet skip
    mid: torch.Tensor
    rgbs: list[torch.Tensor]  # pixel space: RGB at 1/2, 1/4, ... of the image
    latents: list[torch.Tensor]  # latent space: one per residual, then the middle one


def controlnet_forward(controlnet, z: torch.Tensor, t: torch.Tensor, c_h: torch.Tensor, c_l: torch.Tensor | None,
                       image: torch.Tensor) -> ControlOutput:
    """The ControlNet on latents ``z`` and the LQ ``image`` (the official range: [0, 1])."""
    emb = timestep_embedding(controlnet, t, z.shape[0], z.dtype)
    h = controlnet.conv_in(z)
    enc = controlnet.controlnet_cond_embedding
    x = F.silu(enc.conv_in(image))
    rgbs = []
    for i, conv in enumerate(enc.blocks):
        x = F.silu(conv(x))
        if i % 2:
            rgbs.append(enc.to_rgbs[i // 2](x))
    h = h + enc.conv_out(x)
    skips: tuple = (h,)
    for block in controlnet.down_blocks:
        h, res = run_down_block(block, h, emb, c_h, c_l)
        skips += res
    h = run_mid_block(controlnet.mid_block, h, emb, c_h, c_l)
    down = [zero(s) for zero, s in zip(controlnet.controlnet_down_blocks, skips, strict=True)]
    mid = controlnet.controlnet_mid_block(h)
    latents = [head(d) for head, d in zip(controlnet.conv_degradation, down, strict=True)]
    return ControlOutput(down, mid, rgbs, latents + [controlnet.conv_degradation_mid(mid)])


def unet_forward(unet, z: torch.Tensor, t: torch.Tensor, c_h: torch.Tensor, c_l: torch.Tensor | None,
                 control: ControlOutput) -> torch.Tensor:
    """The UNet's noise prediction with the ControlNet's residuals added to its skips and middle, and read
    by its pixel attentions."""
    check_plain(unet)
    emb = timestep_embedding(unet, t, z.shape[0], z.dtype)
    h = unet.conv_in(z)
    skips: tuple = (h,)
    for block in unet.down_blocks:
        h, res = run_down_block(block, h, emb, c_h, c_l)
        skips += res
    skips = tuple(s + d for s, d in zip(skips, control.down, strict=True))
    h = run_mid_block(unet.mid_block, h, emb, c_h, c_l) + control.mid
    pixels = tuple(control.down)
    odd = any(s % 2 ** unet.num_upsamplers for s in z.shape[-2:])
    for i, block in enumerate(unet.up_blocks):
        n = len(block.resnets)
        res, skips = skips[-n:], skips[:-n]
        pix, pixels = pixels[-n:], pixels[:-n]
        size = skips[-1].shape[2:] if odd and i < len(unet.up_blocks) - 1 else None
        h = run_up_block(block, h, emb, res, pix, c_h, c_l, size)
    if unet.conv_norm_out is not None:
        h = unet.conv_act(unet.conv_norm_out(h))
    return unet.conv_out(h)
