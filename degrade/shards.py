"""The one shard writer and the one safe shard reader.

A shard is a webdataset tar: members ``{key}.{ext}`` grouped by key, split at the first
dot. The writer is deterministic (sorted members, mtime 0, fixed owner and mode) and
atomic (written under ``.tmp``, renamed when complete). The reader never extracts to
disk and refuses links, paths with separators or ``..``, and members beyond a size limit.
Both take local paths or fsspec URLs (:mod:`.fs`); a URL is streamed, never copied to disk.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

from . import schema

MAX_MEMBER_BYTES = 512 * 1024 * 1024


class ShardError(ValueError):
    """A shard that cannot be read safely; the message names the shard and member."""


def check_key(key: str) -> str:
    """Reject keys that would regroup or escape: empty, dots, slashes, control characters."""
    if not key or "." in key or "/" in key or "\\" in key or any(ord(c) < 32 for c in key):
        raise ValueError(f"invalid sample key {key!r}: keys are non-empty with no dots, slashes or control chars")
    return key


class ShardWriter:
    """Write one shard atomically: ``with ShardWriter(path) as w: w.write(key, members)``.

    Plain ``tarfile`` (USTAR), members of a sample in sorted order, mtime 0, owner
    ``pirs``, mode 0644: the same bytes for the same samples on any machine. (Not
    webdataset's TarWriter: importing webdataset imports torch when it is installed,
    which costs every worker process seconds of start-up.)
    """

    def __init__(self, path: str | os.PathLike, fs=None):
        # One temporary name per process: a worker orphaned by a killed build may still be
        # finishing this shard while a resumed build writes it again.
        self.fs = fs  # an fsspec filesystem: ``path`` is a key in it, streamed to ``KEY.PID.tmp``
        if fs is None:
            self.path = Path(path)
            self.tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
            self._f = open(self.tmp, "wb")
        else:
            self.path = str(path)
            self.tmp = f"{self.path}.{os.getpid()}.tmp"
            self._f = fs.open(self.tmp, "wb")
        self._w = tarfile.open(fileobj=self._f, mode="w", format=tarfile.USTAR_FORMAT)
        self.count = 0

    def write(self, key: str, members: dict[str, bytes]) -> None:
        """Add one sample; ``members`` maps extension (``hq.png``) to bytes."""
        check_key(key)
        for ext in members:
            if not ext or "/" in ext or ext.startswith("."):
                raise ValueError(f"invalid member extension {ext!r} for key {key}")
        for ext in sorted(members):
            data = members[ext]
            if not isinstance(data, bytes | bytearray | memoryview):
                raise TypeError(f"member {key}.{ext} must be bytes, got {type(data).__name__}")
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = "pirs"
            self._w.addfile(info, io.BytesIO(data))
        self.count += 1

    def close(self) -> None:
        """Finish the tar, flush it to disk and publish it under its final name."""
        self._w.close()
        if not self._f.closed:
            self._f.close()
        if self.fs is not None:  # complete on the store: publish under the final key
            self.fs.mv(self.tmp, self.path)
            self.fs.invalidate_cache()
            return
        with open(self.tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        """Drop the partial shard."""
        try:
            self._w.close()
        except Exception:
            pass
        if not self._f.closed:
            try:
                self._f.close()
            except Exception:
                pass
        if self.fs is not None:
            try:
                self.fs.rm_file(self.tmp)
            except (FileNotFoundError, OSError):
                pass
            return
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _open(path, fs=None):
    from .fs import open_read

    return fs.open(path, "rb") if fs is not None else open_read(path)


def file_digest(path: str | os.PathLike, fs=None) -> tuple[int, str]:
    """``(bytes, sha256)`` of a file: a local path or URL, or a key of the fsspec filesystem ``fs``."""
    h = hashlib.sha256()
    n = 0
    with _open(path, fs) as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
            n += len(block)
    return n, h.hexdigest()


def iter_samples(path: str | os.PathLike, max_member_bytes: int = MAX_MEMBER_BYTES) -> Iterator[tuple[str, dict]]:
    """Yield ``(key, {ext: bytes})`` for each sample of a shard, safely.

    Raises :class:`ShardError` naming the shard and member for anything unsafe: links
    or other non-regular members, names with separators, ``..`` or no extension, members
    over ``max_member_bytes``, a member repeated within a sample, or a corrupt tar.
    """
    name = str(path)
    key, group = None, {}
    try:
        with _open(path) as raw, tarfile.open(fileobj=raw, mode="r|") as tf:
            for m in tf:
                if not m.isfile():
                    raise ShardError(f"{name}: member {m.name!r} is not a regular file (links are refused)")
                if "/" in m.name or "\\" in m.name or m.name.startswith(".") or ".." in m.name:
                    raise ShardError(f"{name}: member {m.name!r} has a path separator or '..'")
                if "." not in m.name:
                    raise ShardError(f"{name}: member {m.name!r} has no extension")
                if m.size > max_member_bytes:
                    raise ShardError(f"{name}: member {m.name!r} is {m.size} bytes, over the {max_member_bytes} limit")
                k, ext = m.name.split(".", 1)
                f = tf.extractfile(m)
                data = f.read() if f is not None else b""
                if k != key:
                    if key is not None:
                        yield key, group
                    key, group = k, {}
                if ext in group:
                    raise ShardError(f"{name}: member {m.name!r} appears twice in sample {k!r}")
                group[ext] = data
    except tarfile.TarError as e:
        raise ShardError(f"{name}: not a readable tar ({e})") from None
    if key is not None:
        yield key, group


def index_samples(path: str | os.PathLike, max_member_bytes: int = MAX_MEMBER_BYTES) -> dict[str, dict[str, tuple]]:
    """``{key: {ext: (offset, size)}}`` of a shard's members, with :func:`iter_samples`' checks, for random access.

    Read a member with ``f.seek(offset); f.read(size)``. Raises :class:`ShardError` like
    :func:`iter_samples` does.
    """
    name = str(path)
    out: dict[str, dict[str, tuple]] = {}
    try:
        with _open(path) as raw, tarfile.open(fileobj=raw, mode="r:") as tf:
            for m in tf:
                if not m.isfile():
                    raise ShardError(f"{name}: member {m.name!r} is not a regular file (links are refused)")
                if "/" in m.name or "\\" in m.name or m.name.startswith(".") or ".." in m.name or "." not in m.name:
                    raise ShardError(f"{name}: member {m.name!r} has a path separator, '..' or no extension")
                if m.size > max_member_bytes:
                    raise ShardError(f"{name}: member {m.name!r} is {m.size} bytes, over the {max_member_bytes} limit")
                k, ext = m.name.split(".", 1)
                group = out.setdefault(k, {})
                if ext in group:
                    raise ShardError(f"{name}: member {m.name!r} appears twice in sample {k!r}")
                group[ext] = (m.offset_data, m.size)
    except tarfile.TarError as e:
        raise ShardError(f"{name}: not a readable tar ({e})") from None
    return out


def iter_records(path: str | os.PathLike, validate: bool = True) -> Iterator[tuple[str, dict, dict]]:
    """Yield ``(key, record, members)`` for each sample of a pirs shard."""
    for key, members in iter_samples(path):
        if "json" not in members:
            raise ShardError(f"{path}: sample {key!r} has no json member")
        try:
            rec = json.loads(members["json"])
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ShardError(f"{path}: sample {key!r}: json member is not valid JSON ({e})") from None
        if validate:
            try:
                rec = schema.upgrade(rec)
                schema.validate(rec, f"{path}: sample {key!r}")
            except schema.SchemaError as e:
                raise ShardError(str(e)) from None
        yield key, rec, members


def shard_paths(folder: str | os.PathLike) -> list:
    """The shards of a folder (or a single shard path), in name order.

    Local: ``Path`` objects. A URL (``s3://bucket/shards``): its ``*.tar`` keys as
    :class:`~.fs.RemotePath` (URL strings with ``.name``, ``.read_bytes()``, ...).
    """
    from .fs import RemotePath, is_url, local_path, url_to_fs

    if is_url(folder):
        url = str(folder).rstrip("/")
        fs, root = url_to_fs(url)
        proto = url.split("://", 1)[0]
        if url.endswith(".tar") and fs.isfile(root):
            return [RemotePath(url)]
        try:
            names = fs.ls(root, detail=False, refresh=True)
        except FileNotFoundError:
            raise FileNotFoundError(f"{folder}: no such shard folder or file") from None
        return sorted(RemotePath(f"{proto}://{n}") for n in names if n.endswith(".tar"))
    p = local_path(folder)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise FileNotFoundError(f"{folder}: no such shard folder or file")
    return sorted(p.glob("*.tar"))
