"""Named captioning instructions: the papers' built in (:data:`BUILTIN_INSTRUCTIONS`), more from a small YAML.

Built in: ``high`` and ``low`` (XPSR's two LLaVA-1.5 instructions), ``qinstruct`` (the low-level
instruction XPSR's official code gives its Q-Instruct model), ``spire-long`` and ``spire-short``
(SPIRE's ~60-word and <20-word semantic descriptions) and ``supir`` (SUPIR's LLaVA instruction).
Each fills its own caption field; ``FIELD=NAME`` puts an instruction's caption into another field
(``caption_source=spire-short`` beside ``spire-long`` in ``caption_high``).

A user file maps a name to the caption field it fills and the instruction text::

    instructions:
      semantic:                 # SPIRE-style semantic caption
        field: caption_high
        text: Describe the content of this image in about 60 words.

Names are short identifiers; a file may not redefine a built-in name. Unknown keys,
unknown fields and empty texts are refused with the file and the name in the message.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import replace
from pathlib import Path

from .backend import BUILTIN_INSTRUCTIONS, Instruction

CAPTION_FIELDS = ("caption_high", "caption_low", "caption_source")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")


class InstructionError(ValueError):
    """An instruction file or name that cannot be used; the message says which and why."""


def load_instructions(path: str | Path | None = None) -> dict[str, Instruction]:
    """The built-in instructions plus those of ``path`` (a YAML file), by name."""
    out = dict(BUILTIN_INSTRUCTIONS)
    if path is None:
        return out
    p = Path(path)
    from pirs.degrade.limits import InputError, read_yaml_file

    try:
        data = read_yaml_file(p, max_bytes=1 << 20)
    except OSError as e:
        raise InstructionError(f"{p}: cannot read instruction file ({e.strerror or e})") from None
    except InputError as e:
        raise InstructionError(str(e)) from None
    if not isinstance(data, dict) or set(data) != {"instructions"} or not isinstance(data["instructions"], dict):
        raise InstructionError(f"{p}: expected one top-level key 'instructions' mapping names to "
                               "{field, text}")
    for name, spec in data["instructions"].items():
        where = f"{p}: instruction {name!r}"
        if not isinstance(name, str) or not _NAME.match(name):
            raise InstructionError(f"{where}: names are a letter then letters, digits, '_' or '-'")
        if name in BUILTIN_INSTRUCTIONS:
            raise InstructionError(f"{where}: redefines a built-in instruction; choose another name")
        if not isinstance(spec, dict):
            raise InstructionError(f"{where}: expected a mapping with 'field' and 'text'")
        unknown = set(spec) - {"field", "text"}
        if unknown:
            raise InstructionError(f"{where}: unknown keys {sorted(unknown)} (allowed: field, text)")
        field, text = spec.get("field"), spec.get("text")
        if field not in CAPTION_FIELDS:
            raise InstructionError(f"{where}: field must be one of {', '.join(CAPTION_FIELDS)}, got {field!r}")
        if not isinstance(text, str) or not text.strip():
            raise InstructionError(f"{where}: 'text' must be a non-empty string")
        out[name] = Instruction(name, field, " ".join(text.split()), str(p))
    return out


def select(names: list[str], available: dict[str, Instruction]) -> list[Instruction]:
    """The named instructions in order; unknown names get "did you mean"; two may not fill one field.

    ``FIELD=NAME`` gives instruction ``NAME`` with its caption written to ``FIELD`` instead of its own.
    """
    if not names:
        raise InstructionError("no instructions given")
    chosen: list[Instruction] = []
    for entry in names:
        target, _, n = entry.rpartition("=")
        target, n = target.strip(), n.strip()
        if target and target not in CAPTION_FIELDS:
            raise InstructionError(f"{entry!r}: {target!r} is not a caption field ({', '.join(CAPTION_FIELDS)})")
        if n not in available:
            close = difflib.get_close_matches(n, list(available), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise InstructionError(f"unknown instruction {n!r} (available: {', '.join(sorted(available))}){hint}")
        ins = available[n]
        if target and target != ins.field:
            ins = replace(ins, field=target)
        if any(c.name == ins.name and c != ins for c in chosen):
            raise InstructionError(f"instruction {n!r} is given twice, for two fields; one field per instruction")
        clash = [c.name for c in chosen if c.field == ins.field]
        if clash:
            raise InstructionError(f"instructions {clash[0]!r} and {n!r} both fill {ins.field}; pick one")
        if ins not in chosen:
            chosen.append(ins)
    return chosen
