"""pirs.captioning: high- and low-level captions written into pirs shards.

Backends (``transformers``: any vision-language model; ``openai``: a served model; ``template``,
``source``) implement :class:`Backend`; :func:`run` rewrites a shard folder with the caption fields
filled, resumably; :mod:`.serve` serves a local model over the OpenAI protocol. Light to import:
nothing heavy (torch, transformers, openai) is loaded until a model backend is asked for.
"""

import logging as _logging

from .backend import (
           BUILTIN_INSTRUCTIONS,
           XPSR_INSTRUCTIONS,
           Backend,
           BackendUnavailable,
           CaptionError,
           Instruction,
           Item,
)
from .instructions import InstructionError, load_instructions
from .run import CaptionConfig, CaptionResult, RunError, run
from .source import SourceBackend
from .template import TemplateBackend, describe_ops, low_level_caption

__all__ = ["BUILTIN_INSTRUCTIONS", "XPSR_INSTRUCTIONS", "Backend", "BackendUnavailable", "CaptionConfig",
           "CaptionError", "CaptionResult", "Instruction", "InstructionError", "Item", "RunError", "SourceBackend",
           "TemplateBackend", "describe_ops", "load_instructions", "low_level_caption", "run"]

_logging.getLogger("bitsandbytes").setLevel(_logging.ERROR)  # its CPU backend warns at import
