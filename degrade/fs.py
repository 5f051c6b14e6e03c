"""Folders that may be local paths or fsspec URLs (``s3://bucket/shards``, ``gs://..``, ``memory://..``).

A local path (or ``file://`` URL) keeps today's behaviour exactly: ``pathlib`` and the
atomic helpers of :mod:`.atomic`. A URL goes through fsspec, streamed (never staged on
local disk); a file is written under a temporary key ``NAME.PID.tmp`` and published
under its name when complete (a rename, or copy + delete on object stores), so a
reader never sees a part.

Endpoint and credentials: ``--storage-options JSON`` (fsspec keyword arguments for the
URL's filesystem, e.g. ``{"client_kwargs": {"endpoint_url": "http://127.0.0.1:9000"}}``)
or the filesystem's own conventions (for S3: ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``). Storage options are never written to outputs.
"""

from __future__ import annotations

import fnmatch
import json
import os
from pathlib import Path
from typing import Any

_DEFAULT_OPTIONS: dict[str, Any] = {}
OBJECT_STORES = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss", "r2"}


def is_url(path: str | os.PathLike | None) -> bool:
    """True for an fsspec URL other than ``file://`` (those are read through fsspec)."""
    if path is None or isinstance(path, Path):
        return False
    s = str(path)
    return "://" in s and not s.startswith("file://")


def local_path(path: str | os.PathLike) -> Path:
    """A local path from a path or ``file://`` URL."""
    s = str(path)
    return Path(s[len("file://"):]) if s.startswith("file://") else Path(s)


def parse_storage_options(text: str | None) -> dict:
    """``--storage-options`` JSON as a dict; a clear error if it is not a JSON object."""
    if not text:
        return {}
    try:
        opts = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"--storage-options is not valid JSON ({e})") from None
    if not isinstance(opts, dict):
        raise ValueError("--storage-options must be a JSON object of fsspec keyword arguments")
    return opts


def set_storage_options(opts: dict | None) -> None:
    """Storage options used for every URL opened in this process (workers get them from their task state)."""
    _DEFAULT_OPTIONS.clear()
    _DEFAULT_OPTIONS.update(opts or {})


def storage_options() -> dict:
    """The storage options set by :func:`set_storage_options`."""
    return dict(_DEFAULT_OPTIONS)


def url_to_fs(url: str, opts: dict | None = None):
    """``(filesystem, path)`` of a URL; a clear error if its protocol's package is missing."""
    import fsspec

    try:
        return fsspec.core.url_to_fs(url, **(storage_options() if opts is None else opts))
    except ImportError as e:
        raise ValueError(f"{url}: this URL needs a package that is not installed ({e}); "
                         'for s3:// install "pirs[s3]" (s3fs), for gs:// "pirs[gcs]" (gcsfs)') from None


def open_read(path: str | os.PathLike, opts: dict | None = None):
    """A binary file object for reading a local path or URL (streamed)."""
    if not is_url(path):
        return open(local_path(path), "rb")
    fs, p = url_to_fs(str(path), opts)
    return fs.open(p, "rb")


def read_range(path: str | os.PathLike, offset: int, size: int) -> bytes:
    """``size`` bytes at ``offset`` of a local file or URL (on object stores one ranged request)."""
    if not is_url(path):
        with open(local_path(path), "rb") as f:
            f.seek(offset)
            return f.read(size)
    fs, key = url_to_fs(str(path))
    return fs.cat_file(key, start=offset, end=offset + size)


def absolute(path: str | os.PathLike | None) -> str | None:
    """A URL unchanged, a local path made absolute (tasks on other processes or nodes have other cwds)."""
    if path is None or is_url(path):
        return None if path is None else str(path)
    return str(local_path(path).expanduser().resolve())


def join(base: str | os.PathLike, name: str) -> str | Path:
    """``base/name`` for a local path or URL."""
    if is_url(base):
        return str(base).rstrip("/") + "/" + name
    return local_path(base) / name


def basename(path: str | os.PathLike) -> str:
    """The last component of a path or URL."""
    return str(path).rstrip("/").rsplit("/", 1)[-1]


class Folder:
    """A folder of outputs at a local path or URL, with atomic writes."""

    def __init__(self, url: str | os.PathLike, opts: dict | None = None):
        self.url = str(url).rstrip("/") if is_url(url) else str(url)
        self.local = not is_url(url)
        if self.local:
            self.path = local_path(url)
            self.fs, self.root = None, str(self.path)
        else:
            self.path = None
            self.fs, self.root = url_to_fs(self.url, opts)
            self.root = self.root.rstrip("/")

    def __str__(self) -> str:
        return self.url

    def key(self, name: str) -> str:
        """Filesystem path of ``name`` (for local folders the OS path)."""
        return str(self.path / name) if self.local else f"{self.root}/{name}"

    def url_of(self, name: str) -> str | Path:
        return self.path / name if self.local else f"{self.url}/{name}"

    def mkdir(self) -> None:
        """Create the folder; on object stores nothing (no folders there, and never a bucket)."""
        if self.local:
            if self.path.exists() and not self.path.is_dir():
                raise ValueError(f"{self.path}: exists and is not a folder; give --out a folder (new or one of ours)")
            try:
                self.path.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise ValueError(f"{self.path}: cannot create the folder ({e.strerror or e})") from None
            return
        protocols = {self.fs.protocol} if isinstance(self.fs.protocol, str) else set(self.fs.protocol)
        if protocols & OBJECT_STORES:
            bucket = self.root.split("/", 1)[0]
            try:
                self.fs.info(bucket)
            except FileNotFoundError:
                raise ValueError(f"{self.url}: bucket {bucket!r} does not exist (or these credentials cannot see "
                                 "it); create it first") from None
            except PermissionError:  # reading the bucket may be forbidden where writing is allowed
                pass
            except Exception as e:
                raise ValueError(f"{self.url}: cannot reach the object store ({type(e).__name__}: "
                                 f"{' '.join(str(e).split())[:300]}); check the endpoint and credentials "
                                 "(--storage-options or the environment)") from None
            return
        self.fs.makedirs(self.root, exist_ok=True)

    def exists(self, name: str) -> bool:
        return (self.path / name).exists() if self.local else self.fs.exists(self.key(name))

    def size(self, name: str) -> int | None:
        """Size in bytes of file ``name``, None when it does not exist."""
        if self.local:
            p = self.path / name
            return p.stat().st_size if p.is_file() else None
        try:
            info = self.fs.info(self.key(name))
        except FileNotFoundError:
            return None
        return int(info["size"]) if info.get("type") == "file" else None

    def read_texts(self, names: list[str]) -> dict[str, str]:
        """``{name: text}`` of the files among ``names`` that exist (one batched request on object stores)."""
        if self.local:
            out = {}
            for n in names:
                try:
                    out[n] = (self.path / n).read_text()
                except (OSError, UnicodeDecodeError):
                    pass
            return out
        if not names:
            return {}
        self.fs.invalidate_cache()
        got = self.fs.cat([self.key(n) for n in names], on_error="omit")
        by_key = {k.rstrip("/"): v for k, v in got.items()}
        out = {}
        for n in names:
            data = by_key.get(self.key(n))
            if isinstance(data, bytes):
                try:
                    out[n] = data.decode()
                except UnicodeDecodeError:
                    pass
        return out

    def sizes(self, pattern: str = "*") -> dict[str, int]:
        """``{name: bytes}`` of the top-level files matching ``pattern`` (one listing on object stores)."""
        if self.local:
            return {p.name: p.stat().st_size for p in self.path.glob(pattern) if p.is_file()}
        self.fs.invalidate_cache()
        try:
            entries = self.fs.ls(self.root, detail=True)
        except FileNotFoundError:
            return {}
        out = {}
        for e in entries:
            name = e["name"].rstrip("/").rsplit("/", 1)[-1]
            if e.get("type") == "file" and fnmatch.fnmatchcase(name, pattern):
                out[name] = int(e["size"])
        return out

    def read_text(self, name: str) -> str:
        if self.local:
            return (self.path / name).read_text()
        with self.fs.open(self.key(name), "rb") as f:
            return f.read().decode()

    def write_text(self, name: str, text: str) -> None:
        """Write ``name`` whole or not at all."""
        from .atomic import write_text

        if self.local:
            write_text(self.path / name, text)
            return
        self.write_bytes(name, text.encode())

    def write_bytes(self, name: str, data: bytes) -> None:
        """Write ``name`` whole or not at all (a temporary key, then published)."""
        if self.local:
            from .atomic import write_bytes

            write_bytes(self.path / name, data)
            return
        tmp = f"{self.key(name)}.{os.getpid()}.tmp"
        self.fs.pipe_file(tmp, data)
        self.publish(tmp, self.key(name))

    def write_json(self, name: str, obj: Any) -> None:
        self.write_text(name, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")

    def publish(self, tmp: str, final: str) -> None:
        """Move a completed temporary file to its name (copy + delete on object stores)."""
        self.fs.mv(tmp, final)
        self.fs.invalidate_cache()

    def glob(self, pattern: str) -> list[str]:
        """Names (relative to the folder, ``/``-separated) matching ``pattern`` (``stats/*.json``), sorted."""
        if self.local:
            return sorted(p.relative_to(self.path).as_posix() for p in self.path.glob(pattern))
        self.fs.invalidate_cache()
        sub, _, pat = pattern.rpartition("/")
        base = f"{self.root}/{sub}" if sub else self.root
        try:
            names = self.fs.ls(base, detail=False)
        except FileNotFoundError:
            return []
        out = [n.rstrip("/").rsplit("/", 1)[-1] for n in names]
        return sorted(f"{sub}/{n}" if sub else n for n in out if fnmatch.fnmatchcase(n, pat))

    def rm(self, name: str) -> None:
        if self.local:
            (self.path / name).unlink(missing_ok=True)
        else:
            try:
                self.fs.rm_file(self.key(name))
            except FileNotFoundError:
                pass

    def shard_writer(self, name: str):
        """A :class:`~.shards.ShardWriter` for shard ``name`` in this folder."""
        from .shards import ShardWriter

        return ShardWriter(self.path / name) if self.local else ShardWriter(self.key(name), fs=self.fs)

    def digest(self, name: str) -> tuple[int, str]:
        """``(bytes, sha256)`` of file ``name``."""
        from .shards import file_digest

        return file_digest(self.path / name) if self.local else file_digest(self.key(name), fs=self.fs)

    def write_card(self, manifest: dict, recipe, extra: str = "") -> None:
        """The dataset card (README.md) of the shards here, with ``extra`` Markdown appended."""
        from .card import render_card

        where = self.path.as_posix() if self.local else self.url
        self.write_text("README.md", render_card(where, manifest, recipe) + extra)


_STORE_MODULES = ("botocore", "aiobotocore", "s3fs", "gcsfs", "google", "aiohttp", "adlfs", "azure", "fsspec")


def _from_store(e: BaseException) -> bool:
    """Whether an exception comes from an object-store client (its class, or the code that raised it)."""
    mods = {c.__module__.split(".", 1)[0] for c in type(e).__mro__}
    if mods & set(_STORE_MODULES):
        return True
    tb = e.__traceback__
    while tb is not None:  # a builtin error (PermissionError) raised inside s3fs, botocore...
        name = tb.tb_frame.f_globals.get("__name__", "")
        if name.split(".", 1)[0] in _STORE_MODULES and name != "fsspec.implementations.local":
            return True
        tb = tb.tb_next
    return False


def store_error(e: BaseException) -> str | None:
    """A one-line message for an object-store client's error (unreachable endpoint, credentials), else None.

    A local file's permission error is not a store error: :func:`run_cli` reports it as what it is.
    """
    if not _from_store(e):
        return None
    text = " ".join(str(e).split())[:300]
    return (f"object storage: {type(e).__name__}: {text}; check the endpoint, bucket and credentials "
            "(--storage-options or the environment, e.g. AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID)")


DEBUG_ENV = "PIRS_DEBUG"


def _known(e: BaseException) -> bool:
    """Errors that mean bad input or a busy output, not a bug: reported in one line, exit 2.

    Every reader's and validator's error is a ``ValueError`` (``ShardError``, ``RecipeError``,
    ``InputError``, ...) with a one-line message; pirs' own ``RuntimeError`` subclasses
    (``BuildError``, ``RunError``, ``LockHeld``) say why a run cannot start or finish.
    """
    if isinstance(e, ValueError):
        return True
    return isinstance(e, RuntimeError) and type(e).__module__.startswith("pirs.")


def _os_message(e: OSError) -> str:
    where = f"{e.filename}: " if getattr(e, "filename", None) else ""
    what = e.strerror or " ".join(str(e).split()) or type(e).__name__
    if isinstance(e, PermissionError):
        return f"{where}permission denied ({what}); check who owns it and its mode"
    return f"{where}{what}"


def run_cli(prog: str, handler, a) -> int:
    """Run a command's handler so that it fails in one line with a non-zero exit, never a traceback.

    An object-store error, bad input (a reader's or validator's error), a busy output
    (:class:`~.lock.LockHeld`) or a local file error ends it with one line and exit status 2;
    anything else is a bug: one line naming it and how to see the traceback (``--debug``
    or ``PIRS_DEBUG=1``), exit status 3.
    """
    import sys

    from .atomic import one_line

    debug = bool(os.environ.get(DEBUG_ENV)) or bool(getattr(a, "debug", False))
    try:
        code = handler(a)
        sys.stdout.flush()  # here, not at exit: a reader that went away (`| head`) is handled below
        return code
    except BrokenPipeError:  # the reader of our output closed it: stop quietly, as Unix tools do
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except OSError:
            pass
        return 0
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"\n{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if debug:
            raise
        msg = store_error(e)
        if msg is not None:
            print(f"{prog}: error: {msg[:2000]}", file=sys.stderr)
            return 2
        if isinstance(e, OSError) and not type(e).__module__.startswith("pirs."):
            print(f"{prog}: error: {_os_message(e)[:2000]}", file=sys.stderr)
            return 2
        if _known(e):
            print(f"{prog}: error: {one_line(e)[:2000]}", file=sys.stderr)
            return 2
        if isinstance(e, MemoryError):
            text = "out of memory"
        elif isinstance(e, RecursionError):
            text = "input nested too deeply (RecursionError)"
        else:
            text = f"{type(e).__name__}: {one_line(e)[:1000]}"
        print(f"{prog}: internal error: {text}; this is a bug in pirs: please report it with the traceback "
              f"(run again with --debug or {DEBUG_ENV}=1 to see it)", file=sys.stderr)
        return 3


def load_hint(out: str | os.PathLike, suffix: str = "['train'][0]") -> str:
    """A shell line that loads the shards in ``out`` with Hugging Face ``datasets``."""
    if is_url(out):
        url = str(out).rstrip("/")
        return (f"python -c \"import datasets; print(datasets.load_dataset('webdataset', "
                f"data_files='{url}/shard-*.tar', split='train')[0])\"  "
                "(endpoint and keys from the environment, or storage_options={...})")
    return f"python -c \"import datasets; print(datasets.load_dataset('{out}'){suffix})\""


def add_storage_args(p) -> None:
    """The ``--storage-options`` flag of commands that take URLs."""
    p.add_argument("--storage-options", default=None, metavar="JSON",
                   help="fsspec options for s3:// / gs:// paths as a JSON object, e.g. "
                        '\'{"client_kwargs": {"endpoint_url": "http://127.0.0.1:9000"}}\' '
                        "(default: the filesystem's environment, e.g. AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID)")


class RemotePath(str):
    """A URL with the read-only part of ``pathlib.Path`` that readers use (listing, reading, names).

    It is a ``str``, so functions that take a path or URL (:func:`open_read`, the shard
    reader) stream it; the filesystem comes from the storage options of this process.
    """

    def __new__(cls, url: str) -> RemotePath:
        return super().__new__(cls, str(url).rstrip("/"))

    @property
    def _fs(self):
        return url_to_fs(str(self))

    @property
    def name(self) -> str:
        return basename(self)

    @property
    def suffix(self) -> str:
        n = self.name
        return n[n.rfind("."):] if "." in n.lstrip(".") else ""

    @property
    def stem(self) -> str:
        n, suf = self.name, self.suffix
        return n[: len(n) - len(suf)] if suf else n

    @property
    def parent(self) -> RemotePath:
        return RemotePath(self.rsplit("/", 1)[0])

    def __truediv__(self, name: str) -> RemotePath:
        return RemotePath(f"{self}/{name}")

    def resolve(self) -> RemotePath:
        return self

    def as_posix(self) -> str:
        return str(self)

    def exists(self) -> bool:
        fs, key = self._fs
        return fs.exists(key)

    def is_file(self) -> bool:
        fs, key = self._fs
        return fs.isfile(key)

    def is_dir(self) -> bool:
        fs, key = self._fs
        return fs.isdir(key)

    def iterdir(self) -> list[RemotePath]:
        fs, key = self._fs
        fs.invalidate_cache()
        proto = str(self).split("://", 1)[0]
        return sorted(RemotePath(f"{proto}://{n.rstrip('/')}") for n in fs.ls(key, detail=False))

    def glob(self, pattern: str) -> list[RemotePath]:
        """Children whose name matches ``pattern`` (one level, no ``**``)."""
        return [c for c in self.iterdir() if fnmatch.fnmatchcase(c.name, pattern)]

    def read_bytes(self) -> bytes:
        with open_read(self) as f:
            return f.read()

    def read_text(self) -> str:
        return self.read_bytes().decode()


def as_path(path: str | os.PathLike) -> Path | RemotePath:
    """A ``Path`` for a local path, a :class:`RemotePath` for a URL."""
    return RemotePath(str(path)) if is_url(path) else local_path(path)
