"""The template backend: captions written from what is known, with no model.

The low-level caption (any instruction filling ``caption_low``) describes the
degradations actually applied to the LQ image, read from the record's ``ops``::

    The image is blurred (sigma 2.1), downscaled by 3.2, with Gaussian noise (sigma 15)
    and JPEG blocking (quality 45).

The high-level caption (``caption_high``) is the record's ``caption_source`` when the
source came with one; otherwise there is nothing to write and the field stays empty
(``None`` from :meth:`TemplateBackend.caption`, which the runner does not count as a failure).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .backend import Backend, CaptionError, Instruction, Item

TEMPLATE_VERSION = "1.0"

_NOT_DEGRADATIONS = {"usm_sharpen", "crop", "pad", "flip"}  # applied to the ground truth, not the LQ


def _join(parts: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _blur_phrase(p: dict) -> str:
    kind = p.get("kernel", "iso")
    sx, sy = p.get("sigma_x"), p.get("sigma_y")
    if kind.endswith("aniso"):
        text = f"anisotropic, sigma {sx:.1f} x {sy:.1f}"
    else:
        text = f"sigma {sx:.1f}"
    if kind.startswith("generalized"):
        text += ", generalized Gaussian"
    elif kind.startswith("plateau"):
        text += ", plateau"
    return text


def describe_ops(ops: list[dict], hq_size: list[int] | None = None) -> str:
    """One sentence describing the applied degradations (``ops`` as stored in a record)."""
    blurs: list[str] = []
    noises: dict[str, list[tuple[str, bool]]] = {}
    jpegs: list[str] = []
    others: list[str] = []
    ringing = False
    h = hq_size[0] if hq_size else None
    min_h = h
    for o in ops:
        op, p = o.get("op"), o.get("params") or {}
        if op == "blur":
            if p.get("kernel") == "sinc":
                ringing = True
            else:
                blurs.append(_blur_phrase(p))
        elif op == "resize":
            size = p.get("size")
            if size and h is not None:
                min_h = min(min_h, int(size[0]))
            elif p.get("direction") == "down" and h is None:  # no sizes known: multiply factors
                min_h = (min_h or 1.0) * float(p["factor"])
        elif op == "noise":
            if p.get("kind") == "gaussian":
                noises.setdefault("Gaussian", []).append((f"sigma {p['sigma']:.0f}", bool(p.get("gray"))))
            else:
                noises.setdefault("Poisson", []).append((f"scale {p['scale']:.1f}", bool(p.get("gray"))))
        elif op == "jpeg":
            jpegs.append(f"{int(p['quality'])}")
        elif op not in _NOT_DEGRADATIONS:
            others.append(str(op).replace("_", " "))
    states, withs = [], []
    if blurs:
        states.append(f"blurred ({', then '.join(blurs)})")
    if h is not None and min_h is not None and min_h < h:
        states.append(f"downscaled by {h / min_h:.1f}")
    elif h is None and min_h is not None and min_h < 1.0:
        states.append(f"downscaled by {1.0 / min_h:.1f}")
    for kind, vals in noises.items():  # "grey Poisson noise (scale 2.2, then 0.8)"
        grey = "grey " if all(g for _, g in vals) else ""
        first, rest = vals[0][0], [v.split(" ", 1)[1] for v, _ in vals[1:]]
        withs.append(f"{grey}{kind} noise ({', then '.join([first, *rest])})")
    if ringing:
        withs.append("ringing artifacts")
    if jpegs:
        withs.append(f"JPEG blocking (quality {', then '.join(jpegs)})")
    withs += others
    if not states and not withs:
        return "The image shows no visible degradation."
    if states:
        text = "The image is " + _join(states)
        if withs:
            text += ", with " + _join(withs)
    else:
        text = "The image has " + _join(withs)
    return text + "."


def low_level_caption(record: dict) -> str:
    """The low-level caption of a pirs record, from its ``ops`` and ``hq_size``."""
    try:
        ops = json.loads(record["ops"]) if record.get("ops") else []
    except json.JSONDecodeError as e:
        raise CaptionError(f"record {record.get('key')!r}: ops is not valid JSON ({e})") from None
    if not isinstance(ops, list):
        raise CaptionError(f"record {record.get('key')!r}: ops is not a list")
    try:
        return describe_ops(ops, record.get("hq_size") or None)
    except (KeyError, TypeError, ValueError) as e:
        raise CaptionError(f"record {record.get('key')!r}: cannot read op parameters ({type(e).__name__}: {e})") \
            from None


@dataclass
class TemplateBackend(Backend):
    """Captions from the stored degradation parameters and the source caption; no pixels, no model."""

    name: str = "template"
    needs_pixels: bool = False
    settings: dict[str, Any] = field(default_factory=lambda: {"template_version": TEMPLATE_VERSION})
    may_skip = True

    def caption(self, items: list[Item], instruction: Instruction) -> list[str | None]:
        """``caption_low``: the degradation sentence; ``caption_high``: ``caption_source`` or None."""
        if instruction.field == "caption_low":
            return [low_level_caption(it.record) for it in items]
        if instruction.field == "caption_high":
            return [(it.record.get("caption_source") or "").strip() or None for it in items]
        raise CaptionError(f"the template backend cannot fill {instruction.field} (instruction {instruction.name!r})")
