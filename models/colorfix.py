"""Colour correction of a restored image towards its degraded input (StableSR, PASD, SeeSR, XPSR).

Diffusion restorers drift in colour; their code bases pull the output's colours back to
the (upsampled) LQ image at the end:

- ``adain``: per channel, the output standardized and given the LQ's mean and standard
  deviation, ``(x - mean(x)) / std(x) * std(lq) + mean(lq)``, with the unbiased variance
  plus ``1e-5`` under the square root (StableSR's ``calc_mean_std``; XPSR's
  ``test.py`` applies it to every output);
- ``wavelet``: the output's high frequencies plus the LQ's low frequencies, each split by
  five levels of a dilated 3x3 binomial blur (dilations 1, 2, 4, 8, 16; replicate
  padding): ``x - blur5(x) + blur5(lq)`` (StableSR's ``wavelet_reconstruction``, PASD's
  default);
- ``none``.

Images are ``(B, 3, H, W)`` in [-1, 1] here; :func:`color_fix` works in [0, 1] as the
reference code does (the ``1e-5`` makes AdaIN not quite scale-free) and maps back; the
caller clamps afterwards, as the reference code clamps after the fix.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

COLOR_FIXES = ("adain", "wavelet", "none")


def _mean_std(x: torch.Tensor, eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    b, c = x.shape[:2]
    flat = x.reshape(b, c, -1)
    return flat.mean(dim=2).reshape(b, c, 1, 1), (flat.var(dim=2) + eps).sqrt().reshape(b, c, 1, 1)


def adain(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """``x`` with the per-channel mean and standard deviation of ``ref``."""
    m_x, s_x = _mean_std(x)
    m_r, s_r = _mean_std(ref)
    return (x - m_x) / s_x * s_r + m_r


def wavelet_blur(x: torch.Tensor, radius: int) -> torch.Tensor:
    """The 3x3 binomial kernel [1 2 1]^T [1 2 1] / 16 at dilation ``radius``, replicate padding."""
    k = torch.tensor([1.0, 2.0, 1.0], dtype=x.dtype, device=x.device)
    kernel = (torch.outer(k, k) / 16)[None, None].repeat(x.shape[1], 1, 1, 1)
    return F.conv2d(F.pad(x, (radius,) * 4, mode="replicate"), kernel, groups=x.shape[1], dilation=radius)


def wavelet_split(x: torch.Tensor, levels: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """``(high, low)`` with ``high + low == x``: ``levels`` blurs at dilations 1, 2, 4, ..."""
    high = torch.zeros_like(x)
    for i in range(levels):
        low = wavelet_blur(x, 2 ** i)
        high = high + (x - low)
        x = low
    return high, x


def wavelet(x: torch.Tensor, ref: torch.Tensor, levels: int = 5) -> torch.Tensor:
    """``x``'s high frequencies on ``ref``'s low frequencies."""
    return wavelet_split(x, levels)[0] + wavelet_split(ref, levels)[1]


def color_fix(x: torch.Tensor, ref: torch.Tensor, kind: str) -> torch.Tensor:
    """Apply the colour fix ``kind`` (``adain``, ``wavelet``, ``none``) to ``x`` towards ``ref`` (same size)."""
    if kind == "none":
        return x
    if kind not in COLOR_FIXES:
        raise ValueError(f"unknown colour fix {kind!r}; choose from {', '.join(COLOR_FIXES)}")
    if x.shape != ref.shape:
        raise ValueError(f"colour fix needs equal sizes, got {tuple(x.shape)} and {tuple(ref.shape)}")
    x01, ref01 = (x.float() + 1) / 2, (ref.float() + 1) / 2
    out = adain(x01, ref01) if kind == "adain" else wavelet(x01, ref01)
    return (out * 2 - 1).to(x.dtype)
