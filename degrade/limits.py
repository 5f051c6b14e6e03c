"""Limits on untrusted input, and the parsers that apply them (JSON, YAML, text fields).

pirs reads files written by strangers: released shards, recipes, results, predictions.
Every reader parses JSON and YAML through this module, so that no file can make a
command recurse past Python's stack, expand to gigabytes, or carry a megabyte of text
into a caption or a prompt. The limits are module constants; each can be raised for
one process with an environment variable (``PIRS_MAX_JSON_BYTES=8388608``):

=================== ========================= =====================================================
constant            environment variable      what it bounds (default)
=================== ========================= =====================================================
MAX_JSON_BYTES      PIRS_MAX_JSON_BYTES       a record's ``json`` member (1 MiB)
MAX_FILE_BYTES      PIRS_MAX_FILE_BYTES       a manifest, results, recipe or other metadata file (64 MiB)
MAX_DEPTH           PIRS_MAX_DEPTH            nesting of JSON/YAML arrays and objects (64)
MAX_TEXT_CHARS      PIRS_MAX_TEXT_CHARS       one text field of a record: captions, prompts (65536)
MAX_KEY_CHARS       PIRS_MAX_KEY_CHARS        a sample key (200)
=================== ========================= =====================================================

YAML aliases (``*name``) are refused outright: a 500-byte file of nested aliases
("billion laughs") would otherwise expand to gigabytes when a recipe is hashed or
printed. ``NaN`` and infinities are refused where a number is a parameter.
"""

from __future__ import annotations

import json
import math
import os
import unicodedata
from typing import Any


class InputError(ValueError):
    """Untrusted input over a limit or malformed; the message names the file and the reason."""


def _limit(name: str, default: int) -> int:
    text = os.environ.get(f"PIRS_{name}")
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        return default
    return value if value > 0 else default


def max_json_bytes() -> int:
    return _limit("MAX_JSON_BYTES", 1 << 20)


def max_file_bytes() -> int:
    return _limit("MAX_FILE_BYTES", 64 << 20)


def max_depth() -> int:
    return _limit("MAX_DEPTH", 64)


def max_text_chars() -> int:
    return _limit("MAX_TEXT_CHARS", 65536)


def max_key_chars() -> int:
    return _limit("MAX_KEY_CHARS", 200)


# The defaults, for documentation and tests (the functions above read the environment each time).
MAX_JSON_BYTES = 1 << 20
MAX_FILE_BYTES = 64 << 20
MAX_DEPTH = 64
MAX_TEXT_CHARS = 65536
MAX_KEY_CHARS = 200


def depth(obj: Any, limit: int) -> int:
    """Nesting depth of lists and dicts in ``obj``, counting at most to ``limit + 1`` (no deep recursion)."""
    deepest = 0
    stack = [(obj, 1)]
    while stack:
        o, d = stack.pop()
        if isinstance(o, dict):
            items = o.values()
        elif isinstance(o, list | tuple):
            items = o
        else:
            continue
        deepest = max(deepest, d)
        if deepest > limit:
            return deepest
        stack.extend((x, d + 1) for x in items if isinstance(x, dict | list | tuple))
    return deepest


def check_depth(obj: Any, where: str, limit: int | None = None) -> Any:
    limit = max_depth() if limit is None else limit
    if depth(obj, limit) > limit:
        raise InputError(f"{where}: nested more than {limit} levels deep (PIRS_MAX_DEPTH)")
    return obj


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def load_json(data: bytes | str, where: str, max_bytes: int | None = None, finite: bool = True) -> Any:
    """Parse untrusted JSON: at most ``max_bytes`` (default :func:`max_file_bytes`), nested at most
    :func:`max_depth` levels, UTF-8, and (``finite``) without ``NaN``/``Infinity``. Raises :class:`InputError`."""
    limit = max_file_bytes() if max_bytes is None else max_bytes
    if len(data) > limit:
        raise InputError(f"{where}: {len(data)} bytes of JSON, over the {limit}-byte limit")
    try:
        text = data.decode("utf-8") if isinstance(data, bytes | bytearray | memoryview) else data
    except UnicodeDecodeError as e:
        raise InputError(f"{where}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    try:
        obj = json.loads(text, parse_constant=_no_constant if finite else None)
    except RecursionError:
        raise InputError(f"{where}: JSON nested too deeply (limit {max_depth()} levels)") from None
    except ValueError as e:  # JSONDecodeError, and NaN/Infinity
        raise InputError(f"{where}: not valid JSON ({' '.join(str(e).split())[:200]})") from None
    return check_depth(obj, where)


def read_json_file(path, where: str | None = None, max_bytes: int | None = None, finite: bool = True) -> Any:
    """:func:`load_json` of a local path or URL, reading at most the limit plus one byte."""
    from .fs import open_read

    limit = max_file_bytes() if max_bytes is None else max_bytes
    where = str(path) if where is None else where
    with open_read(path) as f:
        data = f.read(limit + 1)
    return load_json(data, where, limit, finite)


class _NoAliasLoader:
    """Built lazily: a ``yaml.SafeLoader`` that refuses aliases and deep nesting while composing."""

    cls = None

    @classmethod
    def get(cls):
        if cls.cls is not None:
            return cls.cls
        import yaml

        class Loader(yaml.SafeLoader):
            def compose_node(self, parent, index):
                if self.check_event(yaml.AliasEvent):
                    event = self.peek_event()
                    raise yaml.composer.ComposerError(
                        None, None, f"YAML aliases (*{event.anchor}) are not allowed", event.start_mark)
                self._pirs_depth = getattr(self, "_pirs_depth", 0) + 1
                try:
                    if self._pirs_depth > max_depth():
                        event = self.peek_event()
                        raise yaml.composer.ComposerError(
                            None, None, f"nested more than {max_depth()} levels deep", event.start_mark)
                    return super().compose_node(parent, index)
                finally:
                    self._pirs_depth -= 1

        cls.cls = Loader
        return Loader


def load_yaml(data: bytes | str, where: str, max_bytes: int | None = None) -> Any:
    """Parse untrusted YAML safely: UTF-8 text, at most ``max_bytes``, no aliases, bounded nesting.

    Raises :class:`InputError` naming ``where``. Tags such as ``!!python/object`` are refused
    (safe loading), as in ``yaml.safe_load``.
    """
    import yaml

    limit = max_file_bytes() if max_bytes is None else max_bytes
    if len(data) > limit:
        raise InputError(f"{where}: {len(data)} bytes, over the {limit}-byte limit for a YAML file")
    if isinstance(data, bytes | bytearray | memoryview):
        data = bytes(data)
        if b"\0" in data:
            raise InputError(f"{where}: a binary file, not YAML text")
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise InputError(f"{where}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    try:
        return yaml.load(data, Loader=_NoAliasLoader.get())  # noqa: S506 - a SafeLoader subclass
    except RecursionError:
        raise InputError(f"{where}: YAML nested too deeply") from None
    except yaml.YAMLError as e:
        raise InputError(f"{where}: not valid YAML: {' '.join(str(e).split())[:300]}") from None


def read_yaml_file(path, where: str | None = None, max_bytes: int | None = None) -> Any:
    """:func:`load_yaml` of a local file, reading at most the limit plus one byte."""
    limit = max_file_bytes() if max_bytes is None else max_bytes
    where = str(path) if where is None else where
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    return load_yaml(data, where, limit)


def non_finite(obj: Any, path: str = "") -> str | None:
    """The path (``stages[2].sigma[1]``) of the first NaN or infinity in ``obj``, else None."""
    stack = [(obj, path)]
    while stack:
        o, p = stack.pop()
        if isinstance(o, float) and not math.isfinite(o):
            return p or "(top level)"
        if isinstance(o, dict):
            stack.extend((v, f"{p}.{k}" if p else str(k)) for k, v in reversed(list(o.items())))
        elif isinstance(o, list | tuple):
            stack.extend((v, f"{p}[{i}]") for i, v in reversed(list(enumerate(o))))
    return None


def bad_key_reason(key: str) -> str | None:
    """Why ``key`` cannot be a sample key (empty, too long, a dot, a separator, a control or format
    character, surrounding spaces), else None."""
    if not isinstance(key, str) or not key:
        return "empty"
    if len(key) > max_key_chars():
        return f"longer than {max_key_chars()} characters"
    if "." in key:
        return "contains a dot"
    for c in key:
        if c in "/\\":
            return "contains a path separator"
        cat = unicodedata.category(c)
        if cat in ("Cc", "Cf", "Zl", "Zp", "Cs"):
            return f"contains the control character U+{ord(c):04X}"
    if key != key.strip():
        return "begins or ends with white space"
    return None
