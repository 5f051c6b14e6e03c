"""One writer per output: a lock on ``--out`` held for the whole run of a writing command.

Local folders: ``OUT/.pirs-lock``, locked with ``flock`` (the kernel drops it when its
process dies, so a killed writer never blocks the next run) and holding the holder's
host, pid, command and start time, so that a second writer can say who holds it. A lock
file left by a writer that is gone is *stale*: the next writer takes it over and says
whose it was. Where ``flock`` is not available, the lock file is created exclusively and
a lock of a dead process on the same host counts as stale.

Object stores (``s3://``, ``gs://``...): a lease object ``OUT/.pirs-lock`` written with a
conditional put (``If-None-Match: *``, fsspec's ``"xb"`` mode), renewed every
:data:`RENEW_SECONDS` while the run goes on. A lease not renewed for
:data:`LEASE_SECONDS` (or held by a dead process on this host) is stale and taken over.
A store without conditional puts gets the closest it allows: check, then write.

A file output (``bench evaluate --out results.json``) is locked by ``.NAME.pirs-lock``
beside it. The lock file is removed when the run ends.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from contextlib import contextmanager
from datetime import UTC, datetime

LOCK_NAME = ".pirs-lock"
LEASE_SECONDS = 600
RENEW_SECONDS = 60


class LockHeld(RuntimeError):
    """Another writer holds the output; the message names it."""


def _me(command: str) -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "command": command,
            "started": datetime.now(UTC).isoformat(timespec="seconds"), "renewed": time.time()}


def _describe(info: dict | None) -> str:
    if not info:
        return "another process (its lock file names no holder yet)"
    return (f"{info.get('command', '?')} (pid {info.get('pid', '?')} on host {info.get('host', '?')}, "
            f"started {info.get('started', '?')})")


def _parse(data: bytes) -> dict | None:
    try:
        info = json.loads(data.decode("utf-8", "replace")[:4096])
    except ValueError:
        return None
    return info if isinstance(info, dict) else None


def _alive_here(info: dict) -> bool | None:
    """Whether the holder process is alive, when it ran on this host; None when it ran elsewhere."""
    if info.get("host") != socket.gethostname() or not isinstance(info.get("pid"), int):
        return None
    if info["pid"] == os.getpid():
        return True
    try:
        os.kill(info["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _note(msg: str) -> None:
    print(f"note: {msg}", file=sys.stderr)


@contextmanager
def output_lock(out, command: str, storage_options: dict | None = None, file: bool = False, note=_note):
    """Hold the lock on output ``out`` (a folder, or with ``file`` a file) for the ``with`` block.

    ``out`` is a local path, a URL or a :class:`~pirs.degrade.fs.Folder`. Raises :class:`LockHeld`
    naming the holder when another writer has it.
    """
    from .fs import Folder, is_url, local_path

    target = out.url if isinstance(out, Folder) else str(out)
    if is_url(target):
        opts = storage_options if storage_options is not None else None
        folder = out if isinstance(out, Folder) else Folder(_parent(target) if file else target, opts)
        name = f".{target.rstrip('/').rsplit('/', 1)[-1]}{LOCK_NAME}" if file else LOCK_NAME
        with _lease(folder, name, target, command, note):
            yield
        return
    p = local_path(target)
    path = p.parent / f".{p.name}{LOCK_NAME}" if file else p / LOCK_NAME
    with _local(path, target, command, note):
        yield


def _parent(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[0]


@contextmanager
def _local(path, out: str, command: str, note):
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            info = _parse(_read_fd(fd))
            os.close(fd)
            raise LockHeld(f"{out} is being written by {_describe(info)}; wait for it to finish or use another "
                           f"--out (lock: {path})") from None
        except OSError:  # no flock on this filesystem
            os.close(fd)
            fd = None
            break
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the previous holder removed the file between our open and our lock: again
    if fd is None:
        with _exclusive(path, out, command, note):
            yield
        return
    try:
        prev = _parse(_read_fd(fd))
        if prev:
            note(f"{out}: took over a stale lock of {_describe(prev)}: that writer ended without releasing it")
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(_me(command)).encode(), 0)
        yield
    finally:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        os.close(fd)


def _read_fd(fd: int) -> bytes:
    try:
        return os.pread(fd, 4096, 0)
    except OSError:
        return b""


@contextmanager
def _exclusive(path, out: str, command: str, note):
    for _ in range(2):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            break
        except FileExistsError:
            try:
                info = _parse(path.read_bytes())
            except OSError:
                info = None
            if info is not None and _alive_here(info) is False:
                note(f"{out}: took over a stale lock of {_describe(info)}: that process is gone")
                path.unlink(missing_ok=True)
                continue
            raise LockHeld(f"{out} is being written by {_describe(info)}; wait for it to finish or use another "
                           f"--out (if that writer is gone, delete {path})") from None
    else:
        raise LockHeld(f"{out}: could not take the lock {path}")
    try:
        os.write(fd, json.dumps(_me(command)).encode())
        os.close(fd)
        yield
    finally:
        path.unlink(missing_ok=True)


@contextmanager
def _lease(folder, name: str, out: str, command: str, note):
    fs, key = folder.fs, folder.key(name)
    me = _me(command)
    for attempt in range(2):
        try:
            _put(fs, key, me, exclusive=True)
            break
        except FileExistsError:
            try:
                fs.invalidate_cache()
                info = _parse(fs.cat_file(key))
            except FileNotFoundError:
                continue  # released meanwhile: try again
            alive = _alive_here(info) if info else None
            renewed = info.get("renewed") if info else None
            expired = not isinstance(renewed, int | float) or time.time() - renewed > LEASE_SECONDS
            if attempt == 0 and (alive is False or (alive is None and expired)):
                why = "that process is gone" if alive is False else f"not renewed for over {LEASE_SECONDS} s"
                note(f"{out}: took over a stale lease of {_describe(info)}: {why}")
                try:
                    fs.rm_file(key)
                except FileNotFoundError:
                    pass
                continue
            raise LockHeld(f"{out} is being written by {_describe(info)}; wait for it to finish or use another "
                           f"--out (lease: {folder.url_of(name)})") from None
    else:
        raise LockHeld(f"{out}: could not take the lease {folder.url_of(name)}")
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(RENEW_SECONDS):
            try:
                _put(fs, key, dict(me, renewed=time.time()), exclusive=False)
            except Exception:  # a missed renewal is retried at the next tick
                pass

    t = threading.Thread(target=renew, name="pirs-lease", daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        try:
            fs.rm_file(key)
        except (FileNotFoundError, OSError):
            pass


def _put(fs, key: str, info: dict, exclusive: bool) -> None:
    data = json.dumps(info).encode()
    if not exclusive:
        fs.pipe_file(key, data)
        return
    try:
        with fs.open(key, "xb") as f:
            f.write(data)
        return
    except (ValueError, NotImplementedError, TypeError):  # no conditional put here: the closest the store allows
        pass
    fs.invalidate_cache()
    if fs.exists(key):
        raise FileExistsError(key)
    fs.pipe_file(key, data)
