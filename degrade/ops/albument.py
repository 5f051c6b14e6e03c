"""Any pixel-level albumentations transform as a replayable stage: ``op: albumentations``.

A recipe names the transform and its arguments (``transform: RandomRain``, ``args:
{rain_type: drizzle}``). Albumentations draws its randomness inside the transform, from
its own two generators (a numpy ``Generator`` and a ``random.Random``); here they are
seeded from one ``seed`` drawn from the generator the sampler is given, never from a
global RNG, and the parameters the transform drew (``get_params`` plus
``get_params_dependent_on_data``) are stored in the record. :func:`apply` runs the
transform's own ``apply_with_params`` on those stored parameters, so ``degrade replay``
rebuilds the LQ bit for bit.

Stored values keep their Python and numpy types (a tuple stays a tuple, an ``int32``
array an ``int32`` array: ``{"tuple": [...]}``, ``{"ndarray": [...], "dtype": "<i4",
"shape": [...]}``, ``{"scalar": 7, "dtype": "<i8"}``), because float32 and float64 give
different pixels. A drawn value too large for a record (a snow texture of the image's
size, thousands of fog particles on a large crop: over :data:`INLINE_CHARS` characters
of JSON) is stored as its sha256 and drawn again from ``seed`` on replay, which checks the
sha256, so a different albumentations that draws differently is an error, never a silently
different image. The record also names the albumentations version.

Only pixel-level transforms (``ImageOnlyTransform``) are allowed: a geometric transform
would move LQ pixels away from their HQ. The stage's ``p`` decides whether it runs (the
transform itself always applies), so ``p`` is not an argument.

Importing albumentations is deferred to the first recipe that uses it, with its update
check off (nothing is fetched at run time) and without its torch helpers (``ToTensorV2``),
so that degrading with it does not import torch.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import sys
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..labels import SENTENCES, sentence

NAME = "albumentations"
INLINE_CHARS = 2048  # JSON characters a drawn value may take in the record; larger ones: sha256 + drawn again
RESERVED_ARGS = ("p", "always_apply", "strict", "seed")

# Degradation label of the transforms whose effect is one of pirs' labels (labels.SENTENCES).
LABELS = {
    "RandomRain": "rain", "RandomSnow": "snow", "RandomFog": "haze", "RandomSunFlare": "flare",
    "ISONoise": "noise", "GaussNoise": "noise", "ShotNoise": "noise", "SaltAndPepper": "noise",
    "MultiplicativeNoise": "noise", "ImageCompression": "jpeg", "Blur": "blur", "GaussianBlur": "blur",
    "MotionBlur": "blur", "Defocus": "blur", "ZoomBlur": "blur", "GlassBlur": "blur", "MedianBlur": "blur",
    "AdvancedBlur": "blur", "Downscale": "downsample",
}

_A = None
_local = threading.local()


def albumentations():
    """The albumentations module, imported on first use: no update check, no torch."""
    global _A
    if _A is None:
        os.environ["NO_ALBUMENTATIONS_UPDATE"] = "1"  # its import would otherwise ask PyPI for a newer version
        block = "torch" not in sys.modules
        if block:  # albumentations imports torch only for ToTensorV2, inside `suppress(ImportError)`
            sys.modules["torch"] = None  # type: ignore[assignment]
        try:
            import albumentations as A
        except ImportError as e:
            raise ValueError("op albumentations needs the albumentations package (pip install albumentations)") \
                from e
        finally:
            if block and sys.modules.get("torch", 0) is None:
                del sys.modules["torch"]
        _A = A
    return _A


def version() -> str:
    """The installed albumentations version."""
    return str(albumentations().__version__)


def transform_class(name: str):
    """The albumentations transform class ``name``; ValueError with "did you mean" otherwise."""
    A = albumentations()
    cls = getattr(A, name, None) if isinstance(name, str) and name.isidentifier() else None
    if not isinstance(cls, type) or not issubclass(cls, A.BasicTransform) or cls.apply is A.BasicTransform.apply:
        import difflib

        known = sorted(n for n in dir(A) if isinstance(getattr(A, n), type) and
                       issubclass(getattr(A, n), A.ImageOnlyTransform) and getattr(A, n).apply is not
                       A.BasicTransform.apply)
        close = difflib.get_close_matches(str(name), known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"transform {name!r:.80} is not an albumentations transform{hint}")
    if not issubclass(cls, A.ImageOnlyTransform):
        raise ValueError(f"transform {name!r} is not pixel-level (albumentations ImageOnlyTransform): it would move "
                         "the LQ's pixels away from the HQ's")
    return cls


def _transform(name: str, args: dict):
    """A transform built once per process and thread for (name, args), always applied (p=1)."""
    cache = getattr(_local, "transforms", None)
    if cache is None:
        cache = _local.transforms = {}
    key = (name, json.dumps(args, sort_keys=True))
    t = cache.get(key)
    if t is None:
        t = transform_class(name)(**args, p=1.0, strict=True)
        cache[key] = t
    return t


@dataclass(frozen=True)
class Spec:
    """``transform``: an albumentations pixel-level transform's class name; ``args``: its arguments
    (as in Python; ranges as ``[low, high]``); ``degradation``: its degradation label (default: the
    transform's, see :data:`LABELS`; ``null`` for none); ``text``: its restoration prompt (default:
    the label's sentence, ``Dejpeg with quality Q`` for JPEG compression)."""

    transform: str = ""
    args: dict = field(default_factory=dict)
    degradation: str | None = "auto"
    text: str | None = None

    def validate(self) -> None:
        if not isinstance(self.transform, str) or not self.transform:
            raise ValueError("op albumentations needs 'transform', the name of an albumentations transform "
                             "(e.g. RandomRain)")
        if not isinstance(self.args, dict) or not all(isinstance(k, str) for k in self.args):
            raise ValueError(f"args must map argument names to values, got {self.args!r:.80}")
        bad = sorted(set(self.args) & set(RESERVED_ARGS))
        if bad:
            raise ValueError(f"args {bad} are not allowed: the stage's 'p' decides whether the transform runs, and "
                             "its randomness comes from the sample's generator")
        if self.degradation is not None and self.degradation != "auto" and self.degradation not in SENTENCES:
            raise ValueError(f"degradation {self.degradation!r:.80} is not a degradation label; known: "
                             f"{', '.join(SENTENCES)}")
        if self.text is not None and not isinstance(self.text, str):
            raise ValueError(f"text must be a string, got {self.text!r:.80}")
        transform_class(self.transform)
        try:
            _transform(self.transform, self.args)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{self.transform}: {' '.join(str(e).split())[:300]}") from None


# ---------------------------------------------------------------- drawing


def draw(t, img: np.ndarray, seed: int) -> dict:
    """The parameters transform ``t`` draws for ``img`` with its generators seeded from ``seed``
    (the steps of albumentations' ``BasicTransform.__call__`` before it applies them)."""
    t.set_random_state(np.random.default_rng(seed), random.Random(seed))
    data = {"image": img}
    params = t.get_params()
    params = t.update_transform_params(params=params, data=data)
    missing = set(getattr(t, "targets_as_params", None) or ()) - set(data)
    if missing:
        raise ValueError(f"{type(t).__name__} needs {sorted(missing)} besides the image; it cannot be a stage")
    params.update(t.get_params_dependent_on_data(params=params, data=data))
    return params


def sample(rng: np.random.Generator, spec: Spec, ctx: dict) -> dict:
    """Draw the transform's parameters from a seed drawn from ``rng``; returns them as stored."""
    seed = int(rng.integers(2**63))
    img = ctx.get("image")
    if img is None:  # called outside a pipeline: an image of the stage's size stands in
        img = np.zeros((*ctx["size"], 3), np.float32)
    t = _transform(spec.transform, spec.args)
    drawn = draw(t, img, seed)
    stored = {name: _store(name, v) for name, v in drawn.items()}
    _local.last = (spec.transform, json.dumps(spec.args, sort_keys=True), seed, img, drawn)
    return {"transform": spec.transform, "args": spec.args, "seed": seed, "drawn": stored,
            "albumentations": version(), "label": _label(spec), "text": spec.text}


def _label(spec: Spec) -> str | None:
    return LABELS.get(spec.transform) if spec.degradation == "auto" else spec.degradation


# ---------------------------------------------------------------- applying


def apply(img: np.ndarray, params: dict) -> np.ndarray:
    """Run the transform on ``img`` with the stored parameters (float32 RGB in [0, 1] in and out)."""
    t = _transform(params["transform"], params["args"])
    values = {}
    regen = {name: v["regenerate"] for name, v in params["drawn"].items() if isinstance(v, dict) and "regenerate" in v}
    for name, v in params["drawn"].items():
        if name not in regen:
            values[name] = decode(v)
    if regen:
        full = _drawn_again(t, img, params)
        for name, want in regen.items():
            got = digest(full.get(name))
            if got != want["sha256"]:
                raise ValueError(f"albumentations {params['transform']}: the {name!r} drawn again from the stored seed "
                                 f"differs from the record's (sha256 {got[:12]} vs {want['sha256'][:12]}); the record "
                                 f"was made with albumentations {params.get('albumentations')}, this is {version()}")
            values[name] = full[name]
    out = t.apply_with_params(values, image=np.ascontiguousarray(img))["image"]
    if out.dtype == np.uint8:
        return out.astype(np.float32) / np.float32(255.0)
    return np.ascontiguousarray(out, dtype=np.float32)


def _drawn_again(t, img: np.ndarray, params: dict) -> dict:
    last = getattr(_local, "last", None)  # the draw sample() just made for this image: no need to draw twice
    key = (params["transform"], json.dumps(params["args"], sort_keys=True), params["seed"])
    if last is not None and last[:3] == key and last[3] is img:
        return last[4]
    return draw(t, img, params["seed"])


def label(params: dict) -> str | None:
    """The degradation label the stage declared (or the transform's)."""
    return params.get("label")


def prompt(params: dict, bare: bool) -> str:
    """The stage's text, else ``Dejpeg with quality Q`` for JPEG compression, else the label's sentence."""
    if params.get("text"):
        return params["text"]
    lab = params.get("label")
    if lab == "jpeg" and not bare and params["transform"] == "ImageCompression":
        q = params["drawn"].get("quality")
        kind = params["drawn"].get("image_type")
        if isinstance(q, int) and kind == ".jpg":
            return f"Dejpeg with quality {q}"
    return sentence(lab) if lab else ""


# ---------------------------------------------------------------- storing values with their types


def _store(name: str, v: Any) -> Any:
    if isinstance(v, np.ndarray) and v.size > INLINE_CHARS // 2:
        return _regenerate(v)
    enc = encode(v)
    if len(json.dumps(enc, separators=(",", ":"))) > INLINE_CHARS:
        return _regenerate(v)
    return enc


def _regenerate(v: Any) -> dict:
    what = (f"ndarray {v.dtype.str} {list(v.shape)}" if isinstance(v, np.ndarray)
            else f"{type(v).__name__} of {len(v)}" if isinstance(v, list | tuple) else type(v).__name__)
    return {"regenerate": {"sha256": digest(v), "what": what}}


def encode(v: Any) -> Any:
    """``v`` as JSON that :func:`decode` turns back into the same types and values."""
    if v is None or isinstance(v, bool | str):
        return v
    if isinstance(v, int):
        return int(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"albumentations drew a non-finite number ({v}); it cannot be stored")
        return v
    if isinstance(v, np.ndarray):
        if v.dtype.kind not in "biuf":
            raise ValueError(f"albumentations drew an array of dtype {v.dtype}; it cannot be stored")
        if v.dtype.kind == "f" and not np.isfinite(v).all():
            raise ValueError("albumentations drew non-finite numbers; they cannot be stored")
        return {"ndarray": v.tolist(), "dtype": v.dtype.str, "shape": list(v.shape)}
    if isinstance(v, np.generic):
        if v.dtype.kind not in "biuf" or (v.dtype.kind == "f" and not np.isfinite(v)):
            raise ValueError(f"albumentations drew {v!r}; it cannot be stored")
        return {"scalar": v.item(), "dtype": v.dtype.str}
    if isinstance(v, tuple):
        return {"tuple": [encode(x) for x in v]}
    if isinstance(v, list):
        return [encode(x) for x in v]
    if isinstance(v, dict):
        if not all(isinstance(k, str) for k in v):
            raise ValueError("albumentations drew a mapping with non-string keys; it cannot be stored")
        return {"dict": {k: encode(x) for k, x in v.items()}}
    raise ValueError(f"albumentations drew a {type(v).__name__}; it cannot be stored in a record")


def decode(v: Any) -> Any:
    """The value :func:`encode` stored."""
    if isinstance(v, list):
        return [decode(x) for x in v]
    if not isinstance(v, dict):
        return v
    if "tuple" in v:
        return tuple(decode(x) for x in v["tuple"])
    if "ndarray" in v:
        return np.array(v["ndarray"], dtype=np.dtype(v["dtype"])).reshape(v["shape"])
    if "scalar" in v:
        return np.dtype(v["dtype"]).type(v["scalar"])
    if "dict" in v:
        return {k: decode(x) for k, x in v["dict"].items()}
    raise ValueError(f"unknown stored value {json.dumps(v)[:80]}")


def digest(v: Any) -> str:
    """sha256 of a drawn value, its types and dtypes included."""
    h = hashlib.sha256()
    _feed(h, v)
    return h.hexdigest()


def _feed(h, v: Any) -> None:
    if isinstance(v, np.ndarray):
        h.update(f"nd{v.dtype.str}{list(v.shape)}:".encode())
        h.update(np.ascontiguousarray(v).tobytes())
    elif isinstance(v, np.generic):
        h.update(f"sc{v.dtype.str}:".encode() + v.tobytes())
    elif isinstance(v, list | tuple):
        h.update(b"[" if isinstance(v, list) else b"(")
        for x in v:
            _feed(h, x)
            h.update(b",")
        h.update(b"]" if isinstance(v, list) else b")")
    elif isinstance(v, dict):
        h.update(b"{")
        for k in sorted(v):
            h.update(json.dumps(k).encode() + b":")
            _feed(h, v[k])
            h.update(b",")
        h.update(b"}")
    else:
        h.update(f"{type(v).__name__}:{json.dumps(v)};".encode())
