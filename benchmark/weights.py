"""Offline weights: where every metric's files live, a check before any model is built, no downloads.

pirs never downloads weights. The weights directory (``--weights-dir``, else the environment
variable ``PIRS_WEIGHTS_DIR``, else ``~/.cache/pirs/weights``) mirrors the caches the
libraries read, so a folder filled once on a machine with internet access works anywhere::

    DIR/torch/hub/checkpoints/   torchvision backbones (torch.hub's own cache layout)
    DIR/torch/hub/pyiqa/         pyiqa's checkpoints (pyiqa's DEFAULT_CACHE_DIR)
    DIR/torch/hub/clip/          OpenAI CLIP checkpoints as pyiqa's CLIP loader reads them
    DIR/clip-models/<name>/      transformers CLIP folders for clip-i / clip-t

Because ``DIR/torch/hub`` is torch's hub layout, an existing ``~/.cache/torch/hub`` is used
by passing ``--weights-dir ~/.cache``.

:func:`check_weights` runs before anything is built and raises :class:`MissingWeights`
naming every missing file of every requested metric, the full path to place it at, and the
URL it is normally downloaded from; a file whose published name carries a hash
(``alexnet-owt-7be5be79.pth``: torch.hub's convention, a prefix of the file's SHA-256) and whose
content does not match it is reported the same way (``PIRS_UNVERIFIED_WEIGHTS=1`` lets it through,
recorded as such: tests use random weights under the published names). :func:`offline` points
torch, pyiqa and Hugging Face at the directory while models are built and turns any download
attempt into an immediate :class:`DownloadBlocked` error naming the file and where to put it,
instead of a hang. Nothing here imports torch at module level.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENV_VAR = "PIRS_WEIGHTS_DIR"
DEFAULT_WEIGHTS_DIR = "~/.cache/pirs/weights"

HUB = "torch/hub"  # torch.hub.set_dir(DIR/torch/hub)
TORCHVISION = f"{HUB}/checkpoints"  # torch.hub.load_state_dict_from_url's cache
PYIQA = f"{HUB}/pyiqa"  # pyiqa.utils.download_util.DEFAULT_CACHE_DIR = get_dir()/pyiqa
OPENAI_CLIP = f"{HUB}/clip"  # pyiqa.archs.clip_model.load(): get_dir()/clip
CLIP_MODELS = "clip-models"  # transformers CLIPModel folders

_PYIQA_URL = "https://huggingface.co/chaofengc/IQA-PyTorch-Weights/resolve/main/"
_TORCHVISION_URL = "https://download.pytorch.org/models/"
_OPENAI_URL = "https://openaipublic.azureedge.net/clip/models/"


@dataclass(frozen=True)
class WeightFile:
    """One file a metric needs: where it goes (relative to the weights dir) and where it comes from."""

    path: str
    url: str
    sha256: str | None = None  # checked when known: pyiqa's CLIP loader re-downloads a file whose hash differs
    alternatives: tuple[str, ...] = ()  # other relative paths that serve as well (e.g. pytorch_model.bin)


def _pyiqa(name: str) -> WeightFile:
    return WeightFile(f"{PYIQA}/{name}", _PYIQA_URL + name)


def _torchvision(name: str) -> WeightFile:
    return WeightFile(f"{TORCHVISION}/{name}", _TORCHVISION_URL + name)


def _openai(sha: str, name: str) -> WeightFile:
    return WeightFile(f"{OPENAI_CLIP}/{name}", f"{_OPENAI_URL}{sha}/{name}", sha256=sha)


# Every file pyiqa or torchvision reads for the registered metrics; the names are the ones in
# pyiqa 0.1.16's archs (default_model_urls, FID_WEIGHTS_URL, clip_model._MODELS) and
# torchvision's IMAGENET1K_V1 weights (tests check them against the installed packages).
CATALOG: dict[str, WeightFile] = {f.path: f for f in (
    _torchvision("alexnet-owt-7be5be79.pth"),
    _torchvision("vgg16-397923af.pth"),
    _pyiqa("LPIPS_v0.1_alex-df73285e.pth"),
    _pyiqa("LPIPS_v0.1_vgg-a78928a0.pth"),
    _pyiqa("DISTS_weights-f5e65c96.pth"),
    _pyiqa("pt_inception-2015-12-05-6726825d.pth"),
    _pyiqa("niqe_modelparameters.mat"),
    _pyiqa("musiq_koniq_ckpt-e95806b9.pth"),
    _pyiqa("ckpt_koniq10k.pt"),
    _pyiqa("liqe_koniq.pt"),
    _pyiqa("cfanet_fr_kadid_res50-2c4cc61d.pth"),
    _pyiqa("cfanet_nr_koniq_res50-9a73138b.pth"),
    _pyiqa("CLIP-IQA%2B_learned_prompts-603f3273.pth"),
    _pyiqa("brisque_svm_weights.pth"),
    _pyiqa("NRQM_model.mat"),
    _openai("afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762", "RN50.pt"),
    _openai("40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af", "ViT-B-32.pt"),
)}

# transformers CLIP checkpoints for clip-i / clip-t: short names as in OpenAI's CLIP and pyiqa.
CLIP_ALIASES = {
    "ViT-B/32": "openai/clip-vit-base-patch32",
    "ViT-B/16": "openai/clip-vit-base-patch16",
    "ViT-L/14": "openai/clip-vit-large-patch14",
    "ViT-L/14@336px": "openai/clip-vit-large-patch14-336",
}
CLIP_IMAGE_FILES = ("config.json", "model.safetensors", "preprocessor_config.json")
CLIP_TEXT_FILES = ("tokenizer.json", "tokenizer_config.json")


def clip_repo(clip_model: str) -> str:
    """The Hugging Face repository of a CLIP name (``ViT-L/14`` or ``org/name``)."""
    return CLIP_ALIASES.get(clip_model, clip_model)


def clip_dir_rel(clip_model: str) -> str:
    """Where a CLIP model lives, relative to the weights dir: ``clip-models/<repo name>``."""
    repo = clip_repo(clip_model)
    name = repo.rstrip("/").split("/")[-1]
    if repo.startswith(("/", "~", ".")) or not name or "\\" in repo:
        raise ValueError(f"clip_model is a name ({', '.join(CLIP_ALIASES)} or a Hugging Face id org/name), not a "
                         f"path: got {clip_model!r}; its folder goes under <weights dir>/{CLIP_MODELS}/<name>/")
    return f"{CLIP_MODELS}/{name}"


def clip_files(clip_model: str, text: bool) -> list[WeightFile]:
    """The files of a transformers CLIP folder that clip-i (image side) or clip-t (+ tokenizer) reads."""
    repo, rel = clip_repo(clip_model), clip_dir_rel(clip_model)
    names = CLIP_IMAGE_FILES + (CLIP_TEXT_FILES if text else ())
    out = []
    for n in names:
        alt = (f"{rel}/pytorch_model.bin",) if n == "model.safetensors" else ()
        out.append(WeightFile(f"{rel}/{n}", f"https://huggingface.co/{repo}/resolve/main/{n}", alternatives=alt))
    return out


def resolve_weights_dir(weights_dir: str | os.PathLike | None = None) -> Path:
    """``weights_dir`` if given, else ``$PIRS_WEIGHTS_DIR``, else ``~/.cache/pirs/weights`` (absolute)."""
    chosen = weights_dir if weights_dir not in (None, "") else os.environ.get(ENV_VAR) or DEFAULT_WEIGHTS_DIR
    return Path(chosen).expanduser().resolve()


def _weights_source(weights_dir: str | os.PathLike | None) -> str:
    if weights_dir not in (None, ""):
        return "--weights-dir"
    return ENV_VAR if os.environ.get(ENV_VAR) else "the default"


def required_files(specs: Iterable[Any], options: dict | None = None) -> list[tuple[WeightFile, list[str]]]:
    """Every file the given metrics need, once, in order, each with the names of the metrics needing it.

    A CLIP metric's files follow ``options["clip_model"]`` when given.
    """
    options = options or {}
    needed: dict[str, tuple[WeightFile, list[str]]] = {}
    for spec in specs:
        files: list[WeightFile]
        if spec.backend == "clip":
            files = clip_files(options.get("clip_model") or spec.convention["clip_model"], text=spec.kind == "text")
        else:
            files = [CATALOG[p] for p in spec.weights]
        for f in files:
            needed.setdefault(f.path, (f, []))[1].append(spec.name)
    return list(needed.values())


_SHA_OK: dict[tuple[str, int, int], str] = {}


def sha256_of(path: Path) -> str:
    """SHA-256 of a file (memoised per path, size and mtime within the process)."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _SHA_OK:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        _SHA_OK[key] = h.hexdigest()
    return _SHA_OK[key]


def file_stamp(path: Path) -> str:
    """A cheap identity of a weights file (size, first and last MiB) for keying feature caches."""
    h = hashlib.sha1()
    size = path.stat().st_size
    h.update(str(size).encode())
    with open(path, "rb") as fh:
        h.update(fh.read(1 << 20))
        if size > 1 << 20:
            fh.seek(max(size - (1 << 20), 1 << 20))
            h.update(fh.read())
    return h.hexdigest()[:12]


@dataclass(frozen=True)
class Missing:
    """One unusable file: what it is, where it must go, why it is unusable, who needs it."""

    file: WeightFile
    where: Path
    reason: str
    metrics: tuple[str, ...]


class MissingWeights(RuntimeError):
    """Raised before any model is built when weight files are missing; lists every one of them."""

    def __init__(self, missing: list[Missing], weights_dir: Path, source: str):
        self.missing = missing
        self.weights_dir = weights_dir
        super().__init__(_missing_message(missing, weights_dir, source))


class DownloadBlocked(RuntimeError):
    """A library tried to download something while pirs was building metrics offline."""


def _missing_message(missing: list[Missing], weights_dir: Path, source: str) -> str:
    metrics = sorted({m for x in missing for m in x.metrics})
    lines = [
        f"{len(missing)} weight file(s) missing{'' if all(x.reason == 'missing' for x in missing) else ' or unusable'} "
        f"for metric(s) {', '.join(metrics)}.",
        f"Weights directory: {weights_dir} (from {source}; set it with --weights-dir or {ENV_VAR}).",
        "pirs never downloads weights. Fetch each file on a machine with internet access and place it at the "
        "path shown:",
        "",
    ]
    for x in missing:
        lines.append(f"  {x.where}")
        lines.append(f"      from {x.file.url}")
        extra = f"; {x.file.alternatives[0].rsplit('/', 1)[-1]} also works" if x.file.alternatives else ""
        lines.append(f"      needed by {', '.join(x.metrics)} ({x.reason}{extra})")
    lines += ["", "To fetch them elsewhere, run inside the weights directory, then copy it here:"]
    lines += [f"  curl -L --create-dirs -o {x.file.path} {x.file.url}" for x in missing]
    return "\n".join(lines)


def missing_files(specs: Iterable[Any], weights_dir: str | os.PathLike | None = None,
                  options: dict | None = None) -> list[Missing]:
    """The files of ``specs`` that are absent (or fail their published SHA-256) under the weights dir."""
    root = resolve_weights_dir(weights_dir)
    from .safeload import name_hash, unverified_allowed

    out = []
    for f, metrics in required_files(specs, options):
        where = root / f.path
        present = [p for p in (where, *(root / a for a in f.alternatives)) if p.is_file()]
        prefix = name_hash(f.path)
        if not present:
            out.append(Missing(f, where, "missing", tuple(metrics)))
        elif f.sha256 and sha256_of(present[0]) != f.sha256:
            out.append(Missing(f, where, "present but its SHA-256 differs from the published file, which makes "
                                         "pyiqa try to download it again", tuple(metrics)))
        elif prefix and not sha256_of(present[0]).startswith(prefix) and not unverified_allowed():
            out.append(Missing(f, where, f"present but its SHA-256 ({sha256_of(present[0])[:12]}...) does not start "
                                         f"with {prefix}, the hash in its published name: not the published file "
                                         "(replace it; PIRS_UNVERIFIED_WEIGHTS=1 to use it anyway, recorded in the "
                                         "results)", tuple(metrics)))
    return out


def weight_records(specs: Iterable[Any], weights_dir: str | os.PathLike | None = None,
                   options: dict | None = None) -> list[dict]:
    """For the results: each file the metrics read, relative to the weights dir, with its SHA-256, the metrics
    using it and how it was checked (``sha256`` published, ``name hash``, ``none``, or ``unverified``)."""
    from .safeload import name_hash

    root = resolve_weights_dir(weights_dir)
    out = []
    for f, metrics in required_files(specs, options):
        present = [p for p in (root / f.path, *(root / a for a in f.alternatives)) if p.is_file()]
        if not present:
            continue
        sha = sha256_of(present[0])
        prefix = name_hash(f.path)
        if f.sha256:
            check = "sha256" if sha == f.sha256 else "unverified"
        elif prefix:
            check = "name hash" if sha.startswith(prefix) else "unverified"
        else:
            check = "none"
        out.append({"path": str(present[0].relative_to(root)), "sha256": sha, "metrics": list(metrics),
                    "check": check})
    return out


def check_weights(specs: Iterable[Any], weights_dir: str | os.PathLike | None = None,
                  options: dict | None = None) -> Path:
    """Return the resolved weights dir, or raise :class:`MissingWeights` naming every missing file at once."""
    specs = list(specs)
    root = resolve_weights_dir(weights_dir)
    missing = missing_files(specs, root, options)
    if missing:
        raise MissingWeights(missing, root, _weights_source(weights_dir))
    return root


_BLOCKED_ROOT: list[Path] = []


def _blocked(*args: Any, **kwargs: Any) -> None:
    strings = [a for a in args if isinstance(a, str | os.PathLike)]
    target = str(strings[0]) if strings else str(kwargs.get("url", "?"))
    dest = str(strings[1]) if len(strings) > 1 else ""
    where = f" at {dest}" if dest else ""
    rel = ""
    if dest and _BLOCKED_ROOT:
        try:
            rel = str(Path(dest).resolve().relative_to(_BLOCKED_ROOT[-1]))
        except ValueError:
            rel = ""
    fetch = f" (on a machine with internet access: curl -L --create-dirs -o {rel} {target}, inside the weights " \
            "directory)" if rel else ""
    raise DownloadBlocked(
        f"a weight file is missing: a library tried to download {target} while pirs builds metrics offline; "
        f"pirs never downloads. Place the file{where}{fetch}; `bench metrics` lists the layout.")


@contextlib.contextmanager
def offline(weights_dir: str | os.PathLike | None = None) -> Iterator[Path]:
    """While inside: torch hub and pyiqa read from the weights dir, Hugging Face is offline, downloads raise.

    Everything changed is restored on exit (torch's hub dir, pyiqa's cache dir, environment, patched functions).
    """
    import urllib.request

    import pyiqa.utils.download_util as pyiqa_download  # no metric is built by this import
    import torch.hub

    root = resolve_weights_dir(weights_dir)
    env_keys = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    old_env = {k: os.environ.get(k) for k in env_keys}
    old_hub = getattr(torch.hub, "_hub_dir", None)  # None: derived from $TORCH_HOME on each call
    originals = {"download_url_to_file": torch.hub.download_url_to_file, "urlopen": urllib.request.urlopen,
                 "DEFAULT_CACHE_DIR": pyiqa_download.DEFAULT_CACHE_DIR}
    replacements = {"download_url_to_file": _blocked, "urlopen": _blocked, "DEFAULT_CACHE_DIR": str(root / PYIQA)}
    hf_constants = sys.modules.get("huggingface_hub.constants")
    old_hf = getattr(hf_constants, "HF_HUB_OFFLINE", None)

    restore: list[tuple[dict, str, Any]] = []

    def held(mod: Any) -> dict | None:
        d = getattr(mod, "__dict__", None)
        return d if isinstance(d, dict) else None

    _BLOCKED_ROOT.append(root)
    try:
        for k in env_keys:
            os.environ[k] = "1"
        torch.hub.set_dir(str(root / HUB))
        for mod in list(sys.modules.values()):  # every copy made by `from x import name`, too
            d = held(mod)
            if d is None:
                continue
            for name in ("download_url_to_file", "urlopen"):
                if d.get(name) is originals[name]:
                    restore.append((d, name, d[name]))
                    d[name] = replacements[name]
            if "DEFAULT_CACHE_DIR" in d and str(d.get("__name__", "")).startswith("pyiqa"):
                restore.append((d, "DEFAULT_CACHE_DIR", d["DEFAULT_CACHE_DIR"]))
                d["DEFAULT_CACHE_DIR"] = replacements["DEFAULT_CACHE_DIR"]
        if hf_constants is not None:
            hf_constants.HF_HUB_OFFLINE = True
        yield root
    finally:
        _BLOCKED_ROOT.pop()
        for d, name, value in reversed(restore):
            d[name] = value
        for mod in list(sys.modules.values()):  # modules first imported while inside (pyiqa's lazy archs)
            d = held(mod)
            if d is None:
                continue
            for name in ("download_url_to_file", "urlopen"):
                if d.get(name) is _blocked:
                    d[name] = originals[name]
            if d.get("DEFAULT_CACHE_DIR") == replacements["DEFAULT_CACHE_DIR"] and str(
                    d.get("__name__", "")).startswith("pyiqa"):
                d["DEFAULT_CACHE_DIR"] = originals["DEFAULT_CACHE_DIR"]
        if hf_constants is not None:
            hf_constants.HF_HUB_OFFLINE = old_hf
        torch.hub._hub_dir = old_hub
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def layout_rows(specs: Iterable[Any], options: dict | None = None) -> list[tuple[str, str, str]]:
    """(metric, relative path, URL) for every file of every metric: the table `bench metrics` can print."""
    rows = []
    for spec in specs:
        for f, _ in required_files([spec], options):
            rows.append((spec.name, f.path, f.url))
    return rows
