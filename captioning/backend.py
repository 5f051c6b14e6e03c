"""The caption backend interface: every backend (transformers, openai, template, source) implements it.

A backend turns a batch of records into captions for one named instruction. It sees
the decoded image (the LQ by default, or the HQ), the record (for parameters and source
captions) and the instruction text, and returns one caption per item, or raises
:class:`CaptionError` for an item it could not caption (the runner records and retries it).
An empty caption counts as a failure. A backend whose class sets ``may_skip = True`` may
return ``None`` for an item to mean "nothing to write here, by design" (the template
backend's high-level caption of a record without a source caption): the field is left as
it is and nothing is retried. A backend that can no longer caption anything (its server is gone)
raises :class:`BackendUnavailable`, which stops the run instead of failing every record.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


class CaptionError(RuntimeError):
    """A record the backend could not caption; the message says why."""


class BackendUnavailable(RuntimeError):
    """The backend cannot caption anything any more (a server that stopped answering): not a record's failure.

    The runner does not record it per record: the run stops, keeping the shards already finished, and
    the same command resumes once the backend is back.
    """


@dataclass(frozen=True)
class Instruction:
    """A named captioning instruction: which caption field it fills and the prompt text."""

    name: str  # e.g. "high", "low"
    field: str  # record field it fills: "caption_high" or "caption_low"
    text: str  # the instruction given to the model (unused by template/source backends)
    source: str = field(default="", compare=False)  # where the text comes from (not part of the provenance)


# XPSR (Qu et al., ECCV 2024): the two LLaVA-1.5 instructions for high- and low-level captions.
XPSR_INSTRUCTIONS = {
    "high": Instruction("high", "caption_high", "Please provide a descriptive summary of the content of this image",
                        "XPSR (Qu et al., ECCV 2024) Sec. 3.2: LLaVA-1.5's high-level (content) instruction"),
    "low": Instruction("low", "caption_low", "Please describe the quality of this image and evaluate it based on "
                       "factors such as clarity, color, noise, and lighting",
                       "XPSR Sec. 3.2: LLaVA-1.5's low-level (quality) instruction"),
}

# The other instructions the papers' captioners were given. SPIRE (Qiu et al., ECCV 2024, Sec. 4.4) feeds
# the LQ image to LLaVA "following" SUPIR (Yu et al., CVPR 2024) and compares full descriptions of about
# 60 words with short ones under 20 words, without printing its instruction: spire-long and spire-short
# are SUPIR's LLaVA instruction with those lengths asked for; supir is SUPIR's own, verbatim.
BUILTIN_INSTRUCTIONS = {
    **XPSR_INSTRUCTIONS,
    "qinstruct": Instruction("qinstruct", "caption_low", "Describe and evaluate the quality of the image.",
                             "XPSR's official code (utils_data/lowlevel_prompt_train.py and _test.py): the "
                             "low-level prompt sent to internlm-xcomposer-vl-7b-qinstruct-full (Q-Instruct)"),
    "spire-long": Instruction("spire-long", "caption_high",
                              "Describe this image and its style in a very detailed manner, in about 60 words.",
                              "SPIRE Sec. 4.4: the full semantic description (about 60 words) from LLaVA; "
                              "SUPIR's instruction with the paper's length"),
    "spire-short": Instruction("spire-short", "caption_high",
                               "Describe this image and its style in fewer than 20 words.",
                               "SPIRE Sec. 4.4: the short semantic description (under 20 words); SUPIR's "
                               "instruction with the paper's length"),
    "supir": Instruction("supir", "caption_high", "Describe this image and its style in a very detailed manner.",
                         "SUPIR (Yu et al., CVPR 2024), official llava/llava_agent.py: the LLaVA instruction "
                         "whose captions SPIRE follows"),
}


@dataclass
class Item:
    """One record to caption."""

    key: str
    record: dict[str, Any]
    image: np.ndarray | None  # uint8 RGB (H, W, 3) of the chosen member; None when the backend needs no pixels
    data: bytes | None = None  # the member's encoded bytes (PNG), for backends that send the file as it is


@dataclass
class Backend:
    """Base class: subclasses set ``name`` and implement :meth:`caption`."""

    name: str = "base"
    needs_pixels: bool = True
    settings: dict[str, Any] = field(default_factory=dict)
    may_skip = False  # class attribute, not a field: True lets caption() return None for "nothing to write"
    concurrent = False  # class attribute: True when caption() may be called from several threads at once

    def caption(self, items: list[Item], instruction: Instruction) -> list[str]:
        """One caption per item, in order; raise CaptionError naming the item when one fails."""
        raise NotImplementedError

    def provenance(self, instruction: Instruction, image: str) -> dict[str, Any]:
        """What made a caption: backend, model path or id and revision, instruction, image, dtype, settings."""
        return {"backend": self.name, "instruction": instruction.name, "instruction_text": instruction.text,
                "image": image, **self.settings}
