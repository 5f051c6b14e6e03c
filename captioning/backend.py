"""The caption backend interface: every backend (llava, template, source) implements it.

A backend turns a batch of records into captions for one named instruction. It sees
the decoded image (the LQ by default, or the HQ), the record (for parameters and source
captions) and the instruction text, and returns one caption per item, or raises
:class:`CaptionError` for an item it could not caption (the runner records and retries it).
An empty caption counts as a failure. A backend whose class sets ``may_skip = True`` may
return ``None`` for an item to mean "nothing to write here, by design" (the template
backend's high-level caption of a record without a source caption): the field is left as
it is and nothing is retried.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


class CaptionError(RuntimeError):
    """A record the backend could not caption; the message says why."""


@dataclass(frozen=True)
class Instruction:
    """A named captioning instruction: which caption field it fills and the prompt text."""

    name: str  # e.g. "high", "low"
    field: str  # record field it fills: "caption_high" or "caption_low"
    text: str  # the instruction given to the model (unused by template/source backends)


# XPSR (Qu et al., ECCV 2024): the two LLaVA-1.5 instructions for high- and low-level captions.
XPSR_INSTRUCTIONS = {
    "high": Instruction("high", "caption_high", "Please provide a descriptive summary of the content of this image"),
    "low": Instruction("low", "caption_low", "Please describe the quality of this image and evaluate it based on "
                       "factors such as clarity, color, noise, and lighting"),
}


@dataclass
class Item:
    """One record to caption."""

    key: str
    record: dict[str, Any]
    image: np.ndarray | None  # uint8 RGB (H, W, 3) of the chosen member; None when the backend needs no pixels


@dataclass
class Backend:
    """Base class: subclasses set ``name`` and implement :meth:`caption`."""

    name: str = "base"
    needs_pixels: bool = True
    settings: dict[str, Any] = field(default_factory=dict)
    may_skip = False  # class attribute, not a field: True lets caption() return None for "nothing to write"

    def caption(self, items: list[Item], instruction: Instruction) -> list[str]:
        """One caption per item, in order; raise CaptionError naming the item when one fails."""
        raise NotImplementedError

    def provenance(self, instruction: Instruction, image: str) -> dict[str, Any]:
        """What made a caption: backend, model path or id and revision, instruction, image, dtype, settings."""
        return {"backend": self.name, "instruction": instruction.name, "instruction_text": instruction.text,
                "image": image, **self.settings}
