"""The inference protocol every method shares: samplers, tiled denoising, tiled VAE coding.

A method's protocol (steps, sampler, guidance, added and negative prompts, latent tile
size and overlap, VAE tile size, colour fix, process size) is data in its config, each
value citing the paper or official code it comes from (``models/configs/<method>/*.yaml``);
``restore predict`` can override each one and writes the values used into ``run.json``.

:func:`denoise` runs a diffusers scheduler with the model's prediction computed on
overlapping latent tiles (:mod:`.tiling`); the method supplies ``model_output(z_tiles, t,
boxes)``, which crops its own conditioning (the LQ pixels under each tile, the tile's
context view) for the boxes it is given.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .colorfix import COLOR_FIXES
from .tiling import Box, tiled

SAMPLERS = ("ddim", "ddpm", "unipc", "dpmsolver", "flow-euler")
FITS = ("pad", "resize")


@dataclass
class InferenceProtocol:
    """How a method restores one image; every method's config carries these keys (a mixin)."""

    steps: int = 50
    sampler: str = "ddim"
    guidance_scale: float = 1.0
    added_prompt: str = ""  # appended to the semantic prompt (XPSR's "clean, high-resolution, 8k, ...")
    negative_prompt: str = ""  # the unconditional branch's prompt when guidance_scale != 1
    tile_size: int = 64  # latent cells per tile side (x 8 pixels for SD's VAE)
    tile_overlap: int = 8  # latent cells shared by neighbouring tiles
    vae_encoder_tile: int = 128  # latent cells per tile of the VAE encoder (x 8 pixels for SD's VAE)
    vae_decoder_tile: int = 64  # latent cells per tile of the VAE decoder
    vae_tile_overlap: int = 8
    color_fix: str = "none"  # adain | wavelet | none
    process_size: int = 0  # upscale the LQ so its short side is at least this, restore, resize back (0: never)
    fit: str = "pad"  # make sizes a multiple of the latent grid by reflect padding (cropped after) or by resizing


PROTOCOL_KEYS = tuple(f.name for f in dataclasses.fields(InferenceProtocol))


def check_protocol(p: InferenceProtocol) -> InferenceProtocol:
    """Refuse values that cannot run, naming the key."""
    from .method import ConfigError

    if p.steps < 1:
        raise ConfigError(f"steps must be >= 1, got {p.steps}")
    if p.sampler not in SAMPLERS:
        raise ConfigError(f"unknown sampler {p.sampler!r}; choose from {', '.join(SAMPLERS)}")
    if p.color_fix not in COLOR_FIXES:
        raise ConfigError(f"unknown color_fix {p.color_fix!r}; choose from {', '.join(COLOR_FIXES)}")
    if p.fit not in FITS:
        raise ConfigError(f"unknown fit {p.fit!r}; choose from {', '.join(FITS)}")
    for name in ("tile_size", "vae_encoder_tile", "vae_decoder_tile"):
        if getattr(p, name) < 1:
            raise ConfigError(f"{name} must be >= 1 latent cell, got {getattr(p, name)}")
    for name, tile in (("tile_overlap", p.tile_size),
                       ("vae_tile_overlap", min(p.vae_encoder_tile, p.vae_decoder_tile))):
        if not 0 <= getattr(p, name) < tile:
            raise ConfigError(f"{name} must be in [0, {tile}), got {getattr(p, name)}")
    if p.process_size < 0:
        raise ConfigError(f"process_size must be >= 0, got {p.process_size}")
    return p


def protocol_of(config, **overrides) -> InferenceProtocol:
    """The protocol in a method's config, with ``overrides`` (None values ignored) applied and checked."""
    values = {k: getattr(config, k) for k in PROTOCOL_KEYS if hasattr(config, k)}
    values.update({k: v for k, v in overrides.items() if v is not None and k in PROTOCOL_KEYS})
    return check_protocol(InferenceProtocol(**values))


def make_sampler(name: str, scheduler_config: dict, steps: int, shift: float = 1.0):
    """A diffusers scheduler ``name`` from an SD ``scheduler_config.json`` (flow-euler: SD3's), set to ``steps``."""
    from diffusers import (
        DDIMScheduler,
        DDPMScheduler,
        DPMSolverMultistepScheduler,
        FlowMatchEulerDiscreteScheduler,
        UniPCMultistepScheduler,
    )

    if name == "flow-euler":
        sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)
    else:
        common = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "prediction_type")
        extra = {"ddim": ("steps_offset", "clip_sample", "set_alpha_to_one", "timestep_spacing"),
                 "ddpm": ("steps_offset", "clip_sample", "timestep_spacing", "variance_type"),
                 "unipc": ("steps_offset", "timestep_spacing"), "dpmsolver": ("steps_offset", "timestep_spacing")}
        cls = {"ddim": DDIMScheduler, "ddpm": DDPMScheduler, "unipc": UniPCMultistepScheduler,
               "dpmsolver": DPMSolverMultistepScheduler}[name]
        keys = common + extra[name]
        sched = cls(**{k: v for k, v in scheduler_config.items() if k in keys})
    sched.set_timesteps(steps)
    return sched


def crops(x: torch.Tensor, boxes: list[Box], factor: int = 1) -> torch.Tensor:
    """The parts of ``x`` under ``boxes`` (a grid ``factor`` times finer), stacked tile-major."""
    return torch.cat([b.crop(x, factor) for b in boxes])


def per_tile(x: torch.Tensor, n: int) -> torch.Tensor:
    """A per-image tensor repeated for ``n`` tiles, tile-major (matching :func:`crops`)."""
    return x.repeat(n, *([1] * (x.ndim - 1)))


def denoise(sched, z: torch.Tensor, model_output: Callable[[torch.Tensor, torch.Tensor, list[Box]], torch.Tensor],
            protocol: InferenceProtocol, generator: torch.Generator | None = None,
            timesteps: torch.Tensor | None = None, tile_batch: int = 1) -> torch.Tensor:
    """Run ``sched`` from ``z``; at each step the prediction is blended over latent tiles."""
    takes_generator = "generator" in inspect.signature(sched.step).parameters
    for t in sched.timesteps if timesteps is None else timesteps:
        zin = sched.scale_model_input(z, t) if hasattr(sched, "scale_model_input") else z
        out = tiled(lambda boxes, zin=zin, t=t: model_output(crops(zin, boxes), t, boxes), tuple(z.shape[-2:]),
                    protocol.tile_size, protocol.tile_overlap, 1, tile_batch)
        kw = {"generator": generator} if takes_generator and generator is not None else {}
        z = sched.step(out, t, z, **kw).prev_sample
    return z


def decode_sd(vae, z: torch.Tensor, factor: int, protocol: InferenceProtocol, tile_batch: int = 1) -> torch.Tensor:
    """Images in [-1, 1] of SD latents ``z``, decoded in the protocol's VAE tiles."""
    from .tiling import tiled_decode

    sf = vae.config.scaling_factor
    out = tiled_decode(lambda zt, _box: vae.decode(zt / sf).sample, z, factor, protocol.vae_decoder_tile,
                       protocol.vae_tile_overlap, tile_batch)
    return out.clamp(-1, 1)


def cfg(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance ``uncond + scale * (cond - uncond)``."""
    return uncond + scale * (cond - uncond)


def with_added_prompt(prompts: list[str], added: str) -> list[str]:
    """Each prompt with the protocol's added prompt appended (XPSR: ``prompt + " " + added_prompt``)."""
    if not added:
        return list(prompts)
    return [f"{p} {added}" if p else added for p in prompts]
