"""Degradation operations: each a pure ``apply(img, params)`` plus a ``sample(rng, spec, ctx)``.

Images are float32 ``(H, W, 3)`` RGB arrays in [0, 1]. ``sample`` takes the generator
it is given and returns the parameters it drew; ``apply`` is a pure function of the
image and those parameters, so a stored parameter set can be replayed exactly and
turned into text (``prompt``) and labels (``label``).
"""

from __future__ import annotations

from types import ModuleType

from . import albument, blur, defocus, haze, jpeg, lowlight, motion, noise, rain, raindrop, resize, sharpen, snow

OPS: dict[str, ModuleType] = {m.NAME: m for m in (blur, resize, noise, jpeg, sharpen, lowlight, haze, rain, raindrop,
                                                    snow, motion, defocus, albument)}


def get(name: str) -> ModuleType:
    """The op module called ``name``, with a "did you mean" on a typo."""
    try:
        return OPS[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name, OPS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise KeyError(f"unknown op {name!r}{hint} Known ops: {', '.join(sorted(OPS))}") from None


def apply(img, op: str, params: dict):
    """Apply the op ``op`` with stored ``params``."""
    return get(op).apply(img, params)


__all__ = ["OPS", "get", "apply", "albument", "blur", "defocus", "haze", "jpeg", "lowlight", "motion", "noise", "rain",
           "raindrop", "resize", "sharpen", "snow"]
