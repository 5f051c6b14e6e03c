"""Metric weights read by pirs, never unpickled: what every metric is handed is a state dict.

pyiqa and torchvision load their checkpoints with ``torch.load`` (pyiqa with
``weights_only=False``, so a crafted file at a weights path runs its code the moment a
metric is built), and pyiqa's CLIP loader calls ``torch.jit.load`` on OpenAI's TorchScript
archives. While metrics are built, :class:`SafeLoads` stands in for both:

* every pickle-based weight file of the requested metrics (``.pth``, ``.pt``, ``.ckpt``, ``.bin``)
  is read first by :func:`read_weights`: a TorchScript archive through :func:`torchscript_state`
  (its ``data.pkl`` unpickled by a reader that knows tensors, storages, ordered dicts and the
  archive's module records and nothing else, so no code is loaded), anything else through
  ``torch.load(weights_only=True)``; a file that needs arbitrary unpickling is refused with a
  one-line reason (:class:`UnsafeWeights`) before any model is built. ``.safetensors`` (read
  by safetensors wherever ``torch.load`` would be asked), ``.mat`` (scipy) and ``.json`` files
  hold plain data their readers cannot turn into code; they are hashed and recorded like the
  rest;
* a file whose published name carries a hash (``alexnet-owt-7be5be79.pth``: torch.hub's
  convention, the first hex digits of the file's SHA-256) is checked against it
  (:func:`name_hash`);
* the libraries' own ``torch.load`` calls get the state dict read above (or, for a file pirs
  did not list, the same safe read), and ``torch.jit.load`` declines, which sends pyiqa's CLIP
  loader to its state-dict path;
* each file read is recorded with its SHA-256 for the results (:attr:`SafeLoads.files`).

``PIRS_UNVERIFIED_WEIGHTS=1`` accepts files whose content does not match the hash in their name
(tests with random weights under the published names); the results say so per file.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import sys
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

UNVERIFIED_ENV = "PIRS_UNVERIFIED_WEIGHTS"

#: torch.hub's file-name hash: ``NAME-<hex>.EXT``, the hex a prefix of the file's SHA-256.
_NAME_HASH = re.compile(r"-([0-9a-f]{8,64})\.[A-Za-z0-9]+$")


class UnsafeWeights(ValueError):
    """A weight file pirs will not hand to a metric; the message is one line naming the file and why."""


def name_hash(path: str | os.PathLike) -> str | None:
    """The SHA-256 prefix a published file name carries (``vgg16-397923af.pth`` -> ``397923af``), or None."""
    m = _NAME_HASH.search(Path(path).name)
    return m.group(1) if m else None


def unverified_allowed() -> bool:
    """Whether ``PIRS_UNVERIFIED_WEIGHTS`` lets a file whose content differs from its name's hash through."""
    return os.environ.get(UNVERIFIED_ENV, "").strip() not in ("", "0", "false", "no")


def _line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= 160 else text[:157] + "..."


# ---------------------------------------------------------------------------------------------- TorchScript


_DTYPES = {"FloatStorage": "float32", "DoubleStorage": "float64", "HalfStorage": "float16",
           "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32", "ShortStorage": "int16",
           "CharStorage": "int8", "ByteStorage": "uint8", "BoolStorage": "bool"}


class _Record:
    """A TorchScript module or object record (a subclass per ``__torch__`` type): only its attributes are kept."""

    kind = ""
    attrs: dict[str, Any] = {}

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, dict):
            self.attrs = state
        elif isinstance(state, tuple) and state and isinstance(state[0], dict):
            self.attrs = state[0]


class _StorageType:
    def __init__(self, name: str):
        self.dtype = _DTYPES[name]


class _ArchiveReader(pickle.Unpickler):
    """Unpickles a TorchScript ``data.pkl``: tensors, storages, ordered dicts, module records; nothing else."""

    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str, where: str):
        super().__init__(io.BytesIO(data))
        self.archive, self.prefix, self.where = archive, prefix, where
        self.storages: dict[str, Any] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module.startswith("__torch__"):
            return type("_Record", (_Record,), {"kind": f"{module}.{name}"})
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return lambda data, requires_grad, hooks: data
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        if module == "torch" and name in _DTYPES:
            return _StorageType(name)
        raise pickle.UnpicklingError(f"it names {module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        import torch

        if not (isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise pickle.UnpicklingError(f"unknown persistent id {str(pid)[:60]}")
        key = str(pid[2])
        if key not in self.storages:
            if not re.fullmatch(r"[0-9]+", key):
                raise pickle.UnpicklingError(f"bad storage key {key[:20]!r}")
            raw = bytearray(self.archive.read(f"{self.prefix}data/{key}"))
            dtype = getattr(torch, pid[1].dtype)
            self.storages[key] = torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
        return self.storages[key]


def _rebuild_tensor(storage: Any, offset: int, size: tuple, stride: tuple, *rest: Any) -> Any:
    import torch

    return torch.as_strided(storage, tuple(size), tuple(stride), int(offset)).clone()


def torchscript_state(path: str | os.PathLike) -> dict[str, Any]:
    """The tensors of a TorchScript archive as a flat state dict (``visual.conv1.weight``...), without loading
    its code: equal to ``torch.jit.load(path).state_dict()`` for modules whose tensors are parameters and buffers.
    """
    import torch

    where = str(path)
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        pkl = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
        if not pkl:
            raise UnsafeWeights(f"{where}: a zip archive without data.pkl: not a TorchScript archive")
        prefix = pkl[0][: -len("data.pkl")]
        try:
            root = _ArchiveReader(z.read(pkl[0]), z, prefix, where).load()
        except (pickle.UnpicklingError, KeyError, ValueError, TypeError, EOFError, RuntimeError) as e:
            raise UnsafeWeights(f"{where}: refused: the TorchScript archive's data.pkl is not plain module "
                                f"weights ({_line(e)})") from None
    out: dict[str, Any] = {}

    def walk(node: Any, name: str) -> None:
        if isinstance(node, torch.Tensor):
            out[name] = node
        elif isinstance(node, _Record):
            for k, v in node.attrs.items():
                walk(v, f"{name}.{k}" if name else str(k))

    walk(root, "")
    if not out:
        raise UnsafeWeights(f"{where}: the TorchScript archive holds no tensors")
    return out


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.endswith("/constants.pkl") or "/code/" in n for n in z.namelist())


# ---------------------------------------------------------------------------------------------- reading


def read_weights(path: str | os.PathLike) -> Any:
    """A weight file's contents without unpickling code: a state dict (or the tensors and plain containers the
    file holds). Raises :class:`UnsafeWeights` with one line naming the file and the reason."""
    p = Path(path)
    where = str(p)
    if p.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(where, device="cpu")
        except Exception as e:  # safetensors' own errors, OSError
            raise UnsafeWeights(f"{where}: not a readable safetensors file ({_line(e)})") from None
    if _is_torchscript(p):
        return torchscript_state(p)
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _real_load()(where, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only" not in str(e).lower() or "Unsupported operand" in str(e):
            raise UnsafeWeights(f"{where}: not a readable weights file, truncated or corrupt? ({_line(e)})") from None
        found = re.search(r"GLOBAL (\S+)", str(e))
        what = f"unpickling it would load {found.group(1)}" if found else "it is not a plain weights pickle"
        raise UnsafeWeights(f"{where}: refused: {what}; pirs reads metric weights only as safetensors or with "
                            "torch.load(weights_only=True) (tensors and plain containers)") from None
    except Exception as e:  # truncated, not a torch file
        raise UnsafeWeights(f"{where}: not a readable weights file, truncated or corrupt? ({_line(e)})") from None


_REAL: dict[str, Any] = {}


def _real_load():
    import torch

    return _REAL.get("load", torch.load)


def _path_of(f: Any) -> Path | None:
    if isinstance(f, str | os.PathLike):
        return Path(f).expanduser().resolve()
    name = getattr(f, "name", None)
    return Path(name).resolve() if isinstance(name, str) and name else None


class SafeLoads:
    """While active (a context manager): ``torch.load`` serves pirs' safe reads, ``torch.jit.load`` declines.

    ``preload(path)`` reads a file up front (refusals happen there, before any model is built);
    :attr:`files` maps each file read to its SHA-256.
    """

    def __init__(self) -> None:
        self.cache: dict[Path, Any] = {}
        self.files: dict[str, str] = {}
        self._restore: list[tuple[dict, str, Any]] = []

    def preload(self, path: str | os.PathLike) -> None:
        """Read ``path`` now (safetensors, TorchScript tensors or weights-only pickle) and record its SHA-256."""
        from .weights import sha256_of

        p = Path(path).resolve()
        if p not in self.cache:
            self.cache[p] = read_weights(p)
            self.files[str(p)] = sha256_of(p)

    def load(self, f: Any, map_location: Any = None, *args: Any, **kwargs: Any) -> Any:
        """The stand-in for ``torch.load``: the preloaded object, else a safe read of the file."""
        p = _path_of(f)
        if p is None:  # a buffer without a name: read it as a weights-only pickle
            try:
                return _real_load()(f, map_location="cpu", weights_only=True)
            except pickle.UnpicklingError as e:
                raise UnsafeWeights(f"refused an in-memory checkpoint that needs arbitrary unpickling ({_line(e)})") \
                    from None
        if p not in self.cache:
            self.preload(p)
        obj = self.cache[p]
        return obj.copy() if isinstance(obj, dict) else obj

    @staticmethod
    def jit_load(f: Any, *args: Any, **kwargs: Any) -> Any:
        """The stand-in for ``torch.jit.load``: declines (pyiqa's CLIP loader then asks ``torch.load``)."""
        raise RuntimeError("pirs does not load TorchScript code; the archive's tensors are read as a state dict")

    def __enter__(self) -> SafeLoads:
        import torch
        import torch.jit

        _REAL.setdefault("load", torch.load)
        originals = {"load": (torch.load, self.load), "jit_load": (torch.jit.load, self.jit_load)}
        for mod in list(sys.modules.values()):
            d = getattr(mod, "__dict__", None)
            if not isinstance(d, dict):
                continue
            for name, value in list(d.items()):
                for real, stand_in in originals.values():
                    if value is real:
                        self._restore.append((d, name, value))
                        d[name] = stand_in
        return self

    def __exit__(self, *exc: Any) -> None:
        for d, name, value in reversed(self._restore):
            d[name] = value
        self._restore.clear()
        self.cache.clear()  # the models hold their own copies now
