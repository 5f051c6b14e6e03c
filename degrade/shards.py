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

from . import limits, schema
from .atomic import one_line

MAX_MEMBER_BYTES = 512 * 1024 * 1024


class ShardError(ValueError):
    """A shard that cannot be read safely; the message names the shard and member."""


def check_key(key: str) -> str:
    """Reject keys that would regroup or escape: empty, dots, separators, control characters (see
    :func:`pirs.degrade.limits.bad_key_reason`)."""
    why = limits.bad_key_reason(key)
    if why:
        raise ValueError(f"invalid sample key {key!r:.80}: {why}; keys are non-empty with no dots, slashes or "
                         "control characters")
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
        self._keys: set[str] = set()

    def write(self, key: str, members: dict[str, bytes]) -> None:
        """Add one sample; ``members`` maps extension (``hq.png``) to bytes. A key is written once."""
        check_key(key)
        if key in self._keys:
            raise ValueError(f"sample key {key!r} is already in {self.path}: a key is written once per shard")
        self._keys.add(key)
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


class _Hashing:
    """A read-only file wrapper that hashes and counts what is read through it (for streamed shards)."""

    def __init__(self, f):
        self.f, self.h, self.n = f, hashlib.sha256(), 0

    def read(self, size=-1):
        b = self.f.read(size)
        self.h.update(b)
        self.n += len(b)
        return b

    def drain(self) -> None:
        """Read to the end (the zero blocks after a tar's last member)."""
        while self.read(1 << 20):
            pass


def check_member(name: str, m: tarfile.TarInfo, max_member_bytes: int = MAX_MEMBER_BYTES,
                 folders: bool = False) -> tuple[str, str]:
    """``(key, ext)`` of a tar member that passes every check of the shard reader, else
    :class:`ShardError` naming the tar (``name``) and the member.

    ``folders``: keys may have folder parts (``train/0001.jpg`` has key ``train/0001``), as
    plain webdataset tars of source images do; each part is checked like a key, and ``..``,
    absolute names and hidden parts are still refused. The caller skips directory entries.
    """
    if not m.isfile():
        raise ShardError(f"{name}: member {m.name!r} is not a regular file (links are refused)")
    parts = m.name.split("/") if folders else [m.name]
    if "\\" in m.name or any(not p or p.startswith(".") for p in parts) or (not folders and "/" in m.name):
        raise ShardError(f"{name}: member {m.name!r} has a path separator or '..', or a hidden part")
    base = parts[-1]
    if "." not in base:
        raise ShardError(f"{name}: member {m.name!r} has no extension")
    k, ext = base.split(".", 1)
    for part in parts[:-1] + [k]:
        why = limits.bad_key_reason(part)
        if why:
            raise ShardError(f"{name}: member {m.name!r}: its key {why}")
    k = "/".join(parts[:-1] + [k])
    if not ext or any(ord(c) < 32 or ord(c) == 127 for c in ext):
        raise ShardError(f"{name}: member {m.name!r} has an empty extension or control characters in it")
    cap = limits.max_json_bytes() if ext == "json" else max_member_bytes
    if m.size > cap:
        raise ShardError(f"{name}: member {m.name!r} is {m.size} bytes, over the {cap} limit"
                         + (" (PIRS_MAX_JSON_BYTES)" if ext == "json" else ""))
    return k, ext


def iter_samples(path: str | os.PathLike, max_member_bytes: int = MAX_MEMBER_BYTES) -> Iterator[tuple[str, dict]]:
    """Yield ``(key, {ext: bytes})`` for each sample of a shard, safely.

    Raises :class:`ShardError` naming the shard and member for anything unsafe: links
    or other non-regular members, names with separators, ``..`` or no extension, keys
    that are not keys (:func:`pirs.degrade.limits.bad_key_reason`), members over
    ``max_member_bytes`` (a ``json`` member over :func:`~pirs.degrade.limits.max_json_bytes`),
    a member repeated within a sample, a key that comes back after another key, a
    corrupt tar, or a shard whose size, sha256 or sample count differs from its folder's
    ``manifest.json`` (checked when the manifest lists it; the sha256 and count once the
    whole shard has been read).
    """
    name = str(path)
    expect = manifest_entry(path)
    if expect is not None:
        _check_size(path, expect)
    key, group = None, {}
    seen: set[str] = set()
    count = 0
    try:
        with _open(path) as raw_file:
            raw = _Hashing(raw_file)
            with tarfile.open(fileobj=raw, mode="r|") as tf:
                for m in tf:
                    k, ext = check_member(name, m, max_member_bytes)
                    f = tf.extractfile(m)
                    data = f.read() if f is not None else b""
                    if k != key:
                        if key is not None:
                            yield key, group
                            count += 1
                        if k in seen:
                            raise ShardError(f"{name}: key {k!r} appears again after other keys (member {m.name!r}); "
                                             "a key's members must be together and a key used once")
                        seen.add(k)
                        key, group = k, {}
                    if ext in group:
                        raise ShardError(f"{name}: member {m.name!r} appears twice in sample {k!r}")
                    group[ext] = data
            if key is not None:
                yield key, group
                count += 1
            raw.drain()
    except tarfile.TarError as e:
        raise ShardError(f"{name}: not a readable tar ({e})") from None
    if expect is not None:
        if raw.h.hexdigest() != expect["sha256"]:
            raise ShardError(f"{name}: sha256 {raw.h.hexdigest()[:16]}... differs from manifest.json's "
                             f"{expect['sha256'][:16]}... (the shard changed after its manifest was written)")
        if count != expect["samples"]:
            raise ShardError(f"{name}: holds {count} samples, manifest.json says {expect['samples']}")


def index_samples(path: str | os.PathLike, max_member_bytes: int = MAX_MEMBER_BYTES) -> dict[str, dict[str, tuple]]:
    """``{key: {ext: (offset, size)}}`` of a shard's members, with :func:`iter_samples`' checks, for random access.

    Read a member with ``f.seek(offset); f.read(size)``. Raises :class:`ShardError` like
    :func:`iter_samples` does; against a manifest it checks the size, the sample count and
    the sha256 (one streamed pass over the file).
    """
    name = str(path)
    expect = manifest_entry(path)
    if expect is not None:
        _check_size(path, expect)
    out: dict[str, dict[str, tuple]] = {}
    last = None
    try:
        with _open(path) as raw, tarfile.open(fileobj=raw, mode="r:") as tf:
            for m in tf:
                k, ext = check_member(name, m, max_member_bytes)
                if k != last and k in out:
                    raise ShardError(f"{name}: key {k!r} appears again after other keys (member {m.name!r}); "
                                     "a key's members must be together and a key used once")
                last = k
                group = out.setdefault(k, {})
                if ext in group:
                    raise ShardError(f"{name}: member {m.name!r} appears twice in sample {k!r}")
                group[ext] = (m.offset_data, m.size)
    except tarfile.TarError as e:
        raise ShardError(f"{name}: not a readable tar ({e})") from None
    if expect is not None:
        if len(out) != expect["samples"]:
            raise ShardError(f"{name}: holds {len(out)} samples, manifest.json says {expect['samples']}")
        _, sha = file_digest(path)
        if sha != expect["sha256"]:
            raise ShardError(f"{name}: sha256 {sha[:16]}... differs from manifest.json's {expect['sha256'][:16]}... "
                             "(the shard changed after its manifest was written)")
    return out


def parse_record(data: bytes, where: str, key: str | None = None, validate: bool = True) -> dict:
    """A record from a ``json`` member, strictly: bounded size and depth, the schema (``validate``),
    its ``key`` equal to the tar key, text fields under :func:`~pirs.degrade.limits.max_text_chars`,
    ``ops`` and ``caption_meta`` JSON. Raises :class:`ShardError` naming ``where``."""
    try:
        rec = limits.load_json(data, f"{where}: json member", limits.max_json_bytes())
    except limits.InputError as e:
        raise ShardError(str(e)) from None
    if not isinstance(rec, dict):
        raise ShardError(f"{where}: json member is not a JSON object (got {type(rec).__name__})")
    if not validate:
        return rec
    try:
        rec = schema.upgrade(rec)
        schema.validate(rec, where)
    except schema.SchemaError as e:
        raise ShardError(str(e)) from None
    if key is not None and rec["key"] != key:
        raise ShardError(f"{where}: the record's key {rec['key'][:80]!r} differs from its tar key {key!r}")
    why = limits.bad_key_reason(rec["key"])
    if why:
        raise ShardError(f"{where}: the record's key {why}")
    cap = limits.max_text_chars()
    for field_name, value in rec.items():
        texts = value if isinstance(value, list) else [value]
        for t in texts:
            if isinstance(t, str) and len(t) > cap:
                raise ShardError(f"{where}: field {field_name!r} holds {len(t)} characters, over the {cap} limit "
                                 "(PIRS_MAX_TEXT_CHARS)")
    for field_name, typ in (("ops", list), ("caption_meta", dict)):
        if rec[field_name]:
            try:
                v = limits.load_json(rec[field_name], f"{where}: field {field_name!r}")
            except limits.InputError as e:
                raise ShardError(str(e)) from None
            if not isinstance(v, typ):
                raise ShardError(f"{where}: field {field_name!r} must be a JSON {typ.__name__}, "
                                 f"got {type(v).__name__}")
    return rec


def iter_records(path: str | os.PathLike, validate: bool = True) -> Iterator[tuple[str, dict, dict]]:
    """Yield ``(key, record, members)`` for each sample of a pirs shard (records as :func:`parse_record`)."""
    for key, members in iter_samples(path):
        if "json" not in members:
            raise ShardError(f"{path}: sample {key!r} has no json member")
        yield key, parse_record(members["json"], f"{path}: sample {key!r}", key, validate), members


# ---------------------------------------------------------------- manifests

MANIFEST = "manifest.json"
_MANIFESTS: dict[str, tuple] = {}


def _folder_of(path) -> str:
    s = str(path).rstrip("/")
    return s.rsplit("/", 1)[0] if "/" in s else "."


def read_manifest(folder: str | os.PathLike) -> dict | None:
    """The ``manifest.json`` of a shard folder (local path or URL), checked, or None when there is none.

    Raises :class:`ShardError` with a clear message when it is not a JSON object, is over the
    size or depth limits, or lists shards that are not ``{name, samples, bytes, sha256}``
    entries with unique, safe names and a sample total that adds up.
    """
    from .fs import is_url, join, local_path, open_read

    where = f"{str(folder).rstrip('/')}/{MANIFEST}"
    sig = None
    if not is_url(folder):
        p = local_path(folder) / MANIFEST
        try:
            st = p.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        sig = (st.st_size, st.st_mtime_ns, st.st_ino)
        hit = _MANIFESTS.get(str(p))
        if hit is not None and hit[0] == sig:
            return hit[1]
    limit = limits.max_file_bytes()
    try:
        with open_read(join(folder, MANIFEST)) as f:
            data = f.read(limit + 1)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ShardError(f"{where}: not readable ({one_line(e)})") from None
    try:
        m = limits.load_json(data, where, limit)
    except limits.InputError as e:
        raise ShardError(str(e)) from None
    m = _check_manifest(m, where)
    if sig is not None:
        _MANIFESTS[str(local_path(folder) / MANIFEST)] = (sig, m)
    return m


def _check_manifest(m, where: str) -> dict:
    if not isinstance(m, dict):
        raise ShardError(f"{where}: must be a JSON object, got {type(m).__name__}")
    shards = m.get("shards")
    if shards is None:
        return m
    if not isinstance(shards, list):
        raise ShardError(f"{where}: 'shards' must be a list of {{name, samples, bytes, sha256}}")
    names = set()
    for i, e in enumerate(shards):
        ok = (isinstance(e, dict) and isinstance(e.get("name"), str) and e["name"].endswith(".tar")
              and "/" not in e["name"] and "\\" not in e["name"] and not e["name"].startswith(".")
              and all(isinstance(e.get(k), int) and not isinstance(e.get(k), bool) and e[k] >= 0
                      for k in ("samples", "bytes"))
              and isinstance(e.get("sha256"), str) and len(e["sha256"]) == 64)
        if not ok:
            raise ShardError(f"{where}: shards[{i}] must be {{name: NAME.tar, samples, bytes, sha256}}, "
                             f"got {json.dumps(e)[:120]}")
        if e["name"] in names:
            raise ShardError(f"{where}: shard {e['name']!r} is listed twice")
        names.add(e["name"])
    total = m.get("samples")
    if total is not None and total != sum(e["samples"] for e in shards):
        raise ShardError(f"{where}: 'samples' is {total!r} but its shards add up to "
                         f"{sum(e['samples'] for e in shards)}")
    return m


def manifest_entry(path: str | os.PathLike) -> dict | None:
    """The manifest entry of shard ``path`` from its folder's ``manifest.json``; None without a manifest.

    A manifest that lists shards but not this one raises :class:`ShardError`.
    """
    from .fs import basename

    m = read_manifest(_folder_of(path))
    if m is None or not isinstance(m.get("shards"), list):
        return None
    name = basename(path)
    for e in m["shards"]:
        if e["name"] == name:
            return e
    raise ShardError(f"{path}: not listed in its folder's {MANIFEST} (a shard added after the manifest was "
                     "written, or a stale manifest)")


def _check_size(path, expect: dict) -> None:
    from .fs import is_url, local_path, url_to_fs

    try:
        if is_url(path):
            fs, key = url_to_fs(str(path))
            size = int(fs.info(key)["size"])
        else:
            size = local_path(path).stat().st_size
    except FileNotFoundError:
        raise ShardError(f"{path}: listed in {MANIFEST} but missing") from None
    if size != expect["bytes"]:
        raise ShardError(f"{path}: {size} bytes, {MANIFEST} says {expect['bytes']} (the shard changed after "
                         "its manifest was written)")


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
