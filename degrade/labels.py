"""Degradation labels: the fixed vocabulary and each label's restoration sentence.

The eight universal types are Diff-Restorer's (Zhang et al., Sec. IV-A, Table I):
noise, JPEG, low-light, haze, rain, raindrop, snow and blur. Types whose op has a
parameter keep SPIRE's wording, written by the op's own ``prompt``: "Denoise with sigma
0.20" (the noise sigma on SPIRE's 0-1 scale with two decimals, here Diff-Restorer's 50/255),
"Dejpeg with quality 10"; this table holds the sentence used when no parameter is known
(a pair ingested from a data set, or a bare prompt). ``downsample``, ``resize`` and ``sinc``
are the Real-ESRGAN pipeline's labels; ``real`` marks real-world captured pairs
(RealSR, DRealSR) whose degradation is not synthesized; ``flare`` is albumentations'
RandomSunFlare's (``op: albumentations``).
"""

from __future__ import annotations

UNIVERSAL = ("noise", "jpeg", "low-light", "haze", "rain", "raindrop", "snow", "blur")

SENTENCES: dict[str, str] = {
    "noise": "Denoise",
    "jpeg": "Dejpeg",
    "low-light": "Brighten the low-light image",
    "haze": "Remove the haze",
    "rain": "Remove the rain",
    "raindrop": "Remove the raindrops",
    "snow": "Remove the snow",
    "blur": "Deblur",
    "downsample": "Upsample",
    "resize": "Upsample",
    "sinc": "Remove the ringing",
    "real": "Remove all degradation",
    "flare": "Remove the sun flare",
}


def sentence(label: str) -> str:
    """The restoration sentence for ``label`` (KeyError naming the known labels otherwise)."""
    try:
        return SENTENCES[label]
    except KeyError:
        raise KeyError(f"unknown degradation label {label!r}; known: {', '.join(SENTENCES)}") from None


def prompt_for(labels: list[str], separator: str = "; ") -> str:
    """A restoration prompt for an ordered list of labels without parameters."""
    seen: list[str] = []
    for lab in labels:
        s = sentence(lab)
        if s not in seen:
            seen.append(s)
    return separator.join(seen) if seen else "Remove all degradation"
