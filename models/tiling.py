"""Overlapping tiles blended with smooth weights: latent denoising and VAE coding at any image size.

The papers' code bases (StableSR, PASD, SeeSR, XPSR's ``pipelines/pipeline_xpsr.py``) restore
large images tile by tile: at every sampling step the model's prediction is computed on
overlapping latent tiles and blended with Gaussian weights, so memory is bounded by the
tile, not the image. :func:`tiled` does that for any function of a tile: the denoiser
(factor 1 on the latent grid), the VAE encoder (the grid is the latent, the input the
pixels under it) and the decoder (factor 8: a latent tile becomes a pixel tile).

Conventions (pirs, checked by ``tests/test_tiling.py``):

- tiles are squares of ``min(tile, side)`` grid cells; along each side they start every
  ``tile - overlap`` cells and the last one ends flush with the border (XPSR's rule), so
  every tile has the same size and no tile is padded;
- weights are XPSR's Gaussian (``var = 0.01`` of the squared tile size, centred at
  ``(n - 1) / 2`` on both axes; XPSR centres rows at ``n / 2``, a half-cell slip pirs
  does not copy), evaluated at the output resolution of each tile;
- one tile covering the whole grid returns ``fn``'s output untouched, so tiled and
  untiled inference are identical whenever the image fits one tile.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Box:
    """A tile on a grid: rows ``y0 .. y0 + h``, columns ``x0 .. x0 + w`` (grid cells)."""

    y0: int
    x0: int
    h: int
    w: int

    def scaled(self, factor: int) -> Box:
        """The same tile on a grid ``factor`` times finer (e.g. latent -> pixels)."""
        return Box(self.y0 * factor, self.x0 * factor, self.h * factor, self.w * factor)

    def crop(self, x: torch.Tensor, factor: int = 1) -> torch.Tensor:
        """The part of ``x`` (``(..., H, W)`` on a grid ``factor`` times finer) under this tile."""
        b = self.scaled(factor)
        return x[..., b.y0:b.y0 + b.h, b.x0:b.x0 + b.w]


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of ``min(tile, length)`` cells covering ``length``; the last ends at ``length``."""
    if length <= 0:
        raise ValueError(f"cannot tile an empty side ({length})")
    if tile <= 0:
        raise ValueError(f"tile size must be positive, got {tile}")
    if tile >= length:
        return [0]
    if not 0 <= overlap < tile:
        raise ValueError(f"tile overlap must be in [0, tile size), got {overlap} for tile {tile}")
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]


def tile_boxes(height: int, width: int, tile: int, overlap: int) -> list[Box]:
    """The tiles covering a ``height x width`` grid, row by row."""
    th, tw = min(tile, height), min(tile, width)
    return [Box(y, x, th, tw) for y in tile_starts(height, tile, overlap) for x in tile_starts(width, tile, overlap)]


def gaussian_weights(height: int, width: int, var: float = 0.01, dtype: torch.dtype = torch.float32,
                     device: torch.device | str = "cpu") -> torch.Tensor:
    """``(height, width)`` blending weights: a separable Gaussian over the tile (XPSR's ``_gaussian_weights``)."""
    def axis(n: int) -> torch.Tensor:
        mid = (n - 1) / 2
        x = torch.arange(n, dtype=torch.float64)
        return torch.exp(-((x - mid) ** 2) / (n * n) / (2 * var)) / math.sqrt(2 * math.pi * var)

    return torch.outer(axis(height), axis(width)).to(dtype=dtype, device=device)


def tiled(fn: Callable[[list[Box]], torch.Tensor], grid: tuple[int, int], tile: int, overlap: int,
          factor: int = 1, batch: int = 1) -> torch.Tensor:
    """Blend ``fn``'s outputs over overlapping tiles of a ``grid``.

    ``fn(boxes)`` returns the outputs of the given tiles stacked along the batch dimension,
    ``len(boxes) * B`` rows of ``(C, h * factor, w * factor)`` (tile-major); ``batch`` tiles
    go to ``fn`` at once. The result is ``(B, C, H * factor, W * factor)``.
    """
    height, width = grid
    boxes = tile_boxes(height, width, tile, overlap)
    if len(boxes) == 1:
        return fn(boxes)
    out = weight_sum = weights = None
    dtype = torch.float32
    for lo in range(0, len(boxes), max(1, batch)):
        chunk = boxes[lo:lo + max(1, batch)]
        y = fn(chunk)
        per = y.shape[0] // len(chunk)
        if out is None:
            out = y.new_zeros((per, y.shape[1], height * factor, width * factor), dtype=torch.float32)
            weight_sum = torch.zeros((height * factor, width * factor), dtype=torch.float32, device=y.device)
            b0 = chunk[0].scaled(factor)
            weights = gaussian_weights(b0.h, b0.w, device=y.device)
            dtype = y.dtype
        for i, box in enumerate(chunk):
            b = box.scaled(factor)
            out[..., b.y0:b.y0 + b.h, b.x0:b.x0 + b.w] += y[i * per:(i + 1) * per].float() * weights
            weight_sum[b.y0:b.y0 + b.h, b.x0:b.x0 + b.w] += weights
        del y
    return (out / weight_sum).to(dtype)


def tiled_encode(encode: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, factor: int, tile: int,
                 overlap: int, batch: int = 1) -> torch.Tensor:
    """Latents of ``image`` (``(B, 3, H, W)``, ``H`` and ``W`` multiples of ``factor``) encoded tile by tile.

    ``tile`` and ``overlap`` are in latent cells; each tile encodes the ``tile * factor``
    pixels above it.
    """
    h, w = image.shape[-2] // factor, image.shape[-1] // factor
    return tiled(lambda boxes: torch.cat([encode(b.crop(image, factor)) for b in boxes]), (h, w), tile, overlap,
                 1, batch)


def tiled_decode(decode: Callable[[torch.Tensor, Box], torch.Tensor], z: torch.Tensor, factor: int, tile: int,
                 overlap: int, batch: int = 1) -> torch.Tensor:
    """Images of latents ``z`` decoded tile by tile; ``decode(z_tile, box)`` gets each tile and its latent box."""
    return tiled(lambda boxes: torch.cat([decode(b.crop(z), b) for b in boxes]), tuple(z.shape[-2:]), tile,
                 overlap, factor, batch)
