"""Real-size parameter counts and rough GPU cost estimates, without loading any weights.

Each method is built at its paper's size on PyTorch's ``meta`` device (shapes only, no
memory, no files) from the published component configs below; ``leaderboard reproduce
--dry-run`` and ``benchmarks/train_speed.py`` use the counts. The cost estimate is
arithmetic on those counts, not a measurement (no GPU here):

- a UNet step costs about ``911 FLOPs x parameters`` per 64x64 latent (SPIRE's supplement:
  1130 GFLOPs per step for its 1240 M-parameter UNet at 512 px, seed 002 line 266),
  scaled by the latent area;
- a transformer step about ``2 x parameters x tokens`` (tokens = latent pixels / patch^2);
- throughput assumed ``EFFECTIVE_TFLOPS``: SD 1.5 runs about 20 UNet steps/s at 512 px on an
  A100 in half precision, i.e. about 22 TFLOP/s delivered, far below the 312 TFLOP/s peak;
- memory: weights in bf16 plus the activations of one tile, taken as ``ACT_GB_PER_TILE``
  for a 64x64-latent tile and scaled by the tile's area.
"""

from __future__ import annotations

import math
from functools import cache
from typing import Any

import torch

EFFECTIVE_TFLOPS = 22.0
ACT_GB_PER_TILE = 3.0
UNET_FLOPS_PER_PARAM_64 = 1130e9 / 1240e6  # SPIRE supp. (seed 002 line 266)

SD15_UNET = dict(sample_size=64, in_channels=4, out_channels=4, block_out_channels=(320, 640, 1280, 1280),
                 layers_per_block=2, down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                 up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, cross_attention_dim=768,
                 attention_head_dim=8, norm_num_groups=32)  # stable-diffusion-v1-5 unet/config.json
SD15_VAE = dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512),
                layers_per_block=2, latent_channels=4, norm_num_groups=32, sample_size=512)  # vae/config.json
SD15_TEXT = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                 num_attention_heads=12, max_position_embeddings=77)  # CLIP ViT-L/14 text tower
CLIP_L_VISION = dict(image_size=224, patch_size=14, hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                     num_attention_heads=16, projection_dim=768)  # openai/clip-vit-large-patch14 vision tower
REAL_CONFIG = {"spire": "sd15", "xpsr": "sd15", "diffrestorer": "sd15", "dpir": "sd3"}


def build_real_size(name: str, config: Any | None = None):
    """The method ``name`` at its paper's size on the meta device (no weights, no memory)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPVisionConfig, CLIPVisionModelWithProjection

    from .components import SDComponents, tiny_tokenizer
    from .method import get_method, load_config

    cls = get_method(name)
    cfg = config if config is not None else load_config(name, REAL_CONFIG[name])
    with torch.device("meta"):
        if name == "dpir":  # SD3 medium, T5-XXL and the two CLIP vision towers at their published sizes
            from .dpir import sd3_architecture

            return cls(cfg, *sd3_architecture())
        parts = SDComponents(unet=UNet2DConditionModel(**SD15_UNET), vae=AutoencoderKL(**SD15_VAE),
                             text_encoder=CLIPTextModel(CLIPTextConfig(**SD15_TEXT)), tokenizer=tiny_tokenizer(77),
                             scheduler_config={})
        extra = (CLIPVisionModelWithProjection(CLIPVisionConfig(**CLIP_L_VISION)),) if name == "diffrestorer" else ()
        return cls(cfg, parts, *extra)


def real_size_counts(name: str, config: Any | None = None) -> dict[str, float]:
    """Trainable, frozen and total parameters (millions) at the paper's size, and the denoiser's."""
    if config is None:
        return dict(_shipped_counts(name))
    return _counts(build_real_size(name, config), name)


@cache
def _shipped_counts(name: str) -> tuple:
    """The counts of the shipped real config, built once per process (a plan asks for them per table)."""
    return tuple(_counts(build_real_size(name), name).items())


def _counts(m, name: str) -> dict[str, float]:
    c = m.parameter_counts()
    prefix = "transformer." if name == "dpir" else "unet."
    c["backbone_and_trainable"] = sum(p.numel() for n, p in m.named_parameters()
                                      if n.startswith(prefix) or p.requires_grad)
    return {k: round(v / 1e6, 1) for k, v in c.items()}


def cost_estimate(name: str, counts: dict[str, float], protocol: Any, image_hw: tuple[int, int],
                  latent_factor: int = 8, patch: int = 2, passes: int = 1) -> dict[str, float]:
    """Rough GPU seconds and memory (GB) to restore one image of ``image_hw`` under ``protocol``."""
    lat_h, lat_w = math.ceil(image_hw[0] / latent_factor), math.ceil(image_hw[1] / latent_factor)
    tile = protocol.tile_size
    stride = max(1, tile - protocol.tile_overlap)
    tiles = (1 if lat_h <= tile else math.ceil((lat_h - tile) / stride) + 1) * \
        (1 if lat_w <= tile else math.ceil((lat_w - tile) / stride) + 1)
    th, tw = min(tile, lat_h), min(tile, lat_w)
    params = counts["backbone_and_trainable"] * 1e6
    if name == "dpir":
        flops_tile = 2 * params * (th * tw) / (patch * patch)
    else:
        flops_tile = UNET_FLOPS_PER_PARAM_64 * params * (th * tw) / 4096
    flops = flops_tile * tiles * protocol.steps * passes
    seconds = flops / (EFFECTIVE_TFLOPS * 1e12)
    weights_gb = counts["total"] * 1e6 * 2 / 1e9
    act_gb = ACT_GB_PER_TILE * (th * tw) / 4096 * passes
    return {"tiles": tiles, "tflops": round(flops / 1e12, 1), "gpu_seconds": round(seconds, 2),
            "memory_gb": round(weights_gb + act_gb, 1), "weights_gb": round(weights_gb, 1)}
