"""pirs.captioning: high- and low-level captions written into pirs shards.

Backends (``llava``, ``template``, ``source``) implement :class:`Backend`; :func:`run`
rewrites a shard folder with the caption fields filled, resumably. Light to import:
nothing heavy (torch, transformers) is loaded until the LLaVA backend is asked for.
"""

import logging as _logging

from .backend import XPSR_INSTRUCTIONS, Backend, CaptionError, Instruction, Item
from .instructions import InstructionError, load_instructions
from .run import CaptionConfig, CaptionResult, RunError, run
from .source import SourceBackend
from .template import TemplateBackend, describe_ops, low_level_caption

__all__ = ["XPSR_INSTRUCTIONS", "Backend", "CaptionConfig", "CaptionError", "CaptionResult", "Instruction",
           "InstructionError", "Item", "RunError", "SourceBackend", "TemplateBackend", "describe_ops",
           "load_instructions", "low_level_caption", "run"]

_logging.getLogger("bitsandbytes").setLevel(_logging.ERROR)  # its CPU backend warns at import
