"""The source backend: copy a caption that already exists into the chosen caption field.

Either a field of the record (``--source-field``, default ``caption_source``: for
example MS-COCO captions carried by the source), or a text file per image in a folder
(``--source-dir``): ``KEY.txt``, else the record's ``source_path`` with ``.txt`` for its
extension (relative to the folder), else ``STEM.txt`` where STEM is the source file's
name without extension. A record with no caption to copy is a :class:`CaptionError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from pirs.degrade.schema import FIELDS

from .backend import Backend, CaptionError, Instruction, Item

MAX_TEXT_BYTES = 1 << 20


def _candidates(root: Path, record: dict, key: str) -> list[Path]:
    out = [root / f"{key}.txt"]
    src = (record.get("source_path") or "").split("#")[-1]  # 'file.tar#member' -> the member
    if src:
        rel = PurePosixPath(src.replace("\\", "/"))
        if not rel.is_absolute() and ".." not in rel.parts:
            out.append(root / rel.with_suffix(".txt"))
        out.append(root / f"{rel.stem}.txt")
    return out


@dataclass
class SourceBackend(Backend):
    """Copy ``source_field`` of the record, or a text file from ``source_dir``."""

    name: str = "source"
    needs_pixels: bool = False
    source_field: str = "caption_source"
    source_dir: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.source_dir is not None:
            root = Path(self.source_dir)
            if not root.is_dir():
                raise ValueError(f"--source-dir {self.source_dir}: no such folder")
            self.settings = {"source_dir": str(root.resolve())}
        else:
            typ = FIELDS.get(self.source_field, (None,))[0]
            if typ != "string" or self.source_field in ("caption_meta", "ops"):
                text_fields = [n for n, (t, _) in FIELDS.items() if t == "string"]
                raise ValueError(f"--source-field {self.source_field!r} is not a text field of the record "
                                 f"(text fields: {', '.join(text_fields)})")
            self.settings = {"source_field": self.source_field}

    def caption(self, items: list[Item], instruction: Instruction) -> list[str]:
        """The existing caption of each item; CaptionError when there is none."""
        return [self._one(it) for it in items]

    def _one(self, it: Item) -> str:
        if self.source_dir is None:
            text = str(it.record.get(self.source_field) or "").strip()
            if not text:
                raise CaptionError(f"{it.key}: field {self.source_field} is empty")
            return text
        root = Path(self.source_dir)
        tried = _candidates(root, it.record, it.key)
        for p in tried:
            if p.is_file():
                if p.stat().st_size > MAX_TEXT_BYTES:
                    raise CaptionError(f"{it.key}: {p} is over {MAX_TEXT_BYTES} bytes")
                try:
                    text = p.read_text(encoding="utf-8").strip()
                except UnicodeDecodeError:
                    raise CaptionError(f"{it.key}: {p} is not UTF-8 text") from None
                if not text:
                    raise CaptionError(f"{it.key}: {p} is empty")
                return " ".join(text.split())
        raise CaptionError(f"{it.key}: no caption file in {root} (tried {', '.join(p.name for p in tried)})")
