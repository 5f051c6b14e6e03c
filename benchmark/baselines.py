"""``bench baseline``: predictions of trivial restorers that need no weights, a floor row for every test set.

From each reference record's LQ, brought to the HQ size:

``identity``
    the LQ without any interpolation smarts: as-is when it already has the HQ size
    (``lq_upsampled`` or a scale-1 recipe), else nearest-neighbour pixel replication
    (each LQ pixel repeated ``scale x scale`` times; Pillow's nearest for a non-integer
    ratio). On a reference whose LQ equals its HQ this is the ground truth itself: pyiqa's
    PSNR then gives 80 dB, not infinity (its eps of 1e-8 under the MSE caps it), and SSIM 1.
``bicubic``
    Pillow's bicubic (Keys cubic, a = -0.5, as MATLAB's ``imresize``), in 8 bits.
``lanczos``
    Pillow's Lanczos (a = 3), in 8 bits.

When the LQ already has the HQ size all three are the LQ itself. The predictions are
PNGs named ``KEY.png`` beside a ``run.json`` that names the method and says it needs
no weights; ``bench evaluate`` copies that file into the results.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path

import numpy as np

from .images import is_image_name
from .pairing import RUN_FILE, Reference, ReferenceError, load_reference

BASELINES = {
    "identity": "the LQ at HQ size without interpolation: as-is, or nearest-neighbour pixel replication",
    "bicubic": "the LQ resized to HQ size with Pillow's bicubic (a = -0.5, as MATLAB imresize)",
    "lanczos": "the LQ resized to HQ size with Pillow's Lanczos (a = 3)",
}


def restore(method: str, lq: np.ndarray, hq_size: tuple[int, int]) -> np.ndarray:
    """The baseline ``method``'s prediction: uint8 RGB ``lq`` brought to ``hq_size`` = (h, w)."""
    from PIL import Image

    if method not in BASELINES:
        raise ValueError(f"unknown baseline {method!r}; choose one of {', '.join(BASELINES)}")
    h, w = int(hq_size[0]), int(hq_size[1])
    lh, lw = lq.shape[:2]
    if (lh, lw) == (h, w):
        return lq.copy()
    if method == "identity":
        if h % lh == 0 and w % lw == 0:
            return np.repeat(np.repeat(lq, h // lh, axis=0), w // lw, axis=1)
        resample = Image.Resampling.NEAREST
    else:
        resample = Image.Resampling.BICUBIC if method == "bicubic" else Image.Resampling.LANCZOS
    return np.asarray(Image.fromarray(lq).resize((w, h), resample=resample))


def predictions_folder(out: str | os.PathLike, overwrite: bool, clear: bool = True) -> Path:
    """``--out`` ready for predictions: a folder, refused when it holds predictions unless ``overwrite``
    (then they are removed, unless ``clear`` is False and the caller removes them once its model loaded)."""
    dest = Path(out)
    if dest.exists() and not dest.is_dir():
        raise FileExistsError(f"--out {dest}: exists and is not a folder")
    old = old_predictions(dest)
    if old and not overwrite:
        raise FileExistsError(f"--out {dest}: already holds {len(old)} prediction files; "
                              "use --overwrite to replace them, or choose an empty folder")
    if clear:
        for f in old:
            f.unlink()
        dest.mkdir(parents=True, exist_ok=True)
    return dest


def old_predictions(dest: Path) -> list[Path]:
    """The prediction images and run.json already in ``dest``."""
    return [f for f in dest.iterdir() if f.is_file() and (is_image_name(f.name) or f.name == RUN_FILE)] \
        if dest.is_dir() else []


def write_baseline(method: str, reference: str | os.PathLike | Reference, out: str | os.PathLike,
                   overwrite: bool = False, progress: bool = True) -> Path:
    """Write ``KEY.png`` for every reference record and a ``run.json`` into ``out``; return ``out``."""
    from pirs.degrade.build import PIRS_VERSION, encode_png

    if method not in BASELINES:
        raise ValueError(f"unknown baseline {method!r}; choose one of {', '.join(BASELINES)}")
    ref = reference if isinstance(reference, Reference) else load_reference(reference)
    if not ref.has_lq:
        raise ReferenceError(f"--reference {ref.path}: a baseline restores the LQ images, which only a pirs "
                             "shard folder carries (this is a folder of images)")
    dest = predictions_folder(out, overwrite)
    from tqdm import tqdm

    for item, lq in tqdm(ref.iter_lq(), total=len(ref.items), desc=f"bench baseline {method}", unit="img",
                         disable=not progress):
        k = 1 if item.lq_upsampled else item.scale
        size = item.hq_size or (lq.shape[0] * k, lq.shape[1] * k)  # unpaired: the LQ brought to the output scale
        pred = restore(method, lq, size)
        tmp = dest / f".{item.key}.png.tmp"
        tmp.write_bytes(encode_png(pred))
        os.replace(tmp, dest / f"{item.key}.png")
    run = {"method": method, "baseline": True, "needs_weights": False, "weights": None,
           "description": BASELINES[method], "reference": str(ref.path), "reference_fingerprint": ref.fingerprint,
           "pirs_version": PIRS_VERSION, "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")}
    (dest / RUN_FILE).write_text(json.dumps(run, indent=2) + "\n")
    return dest
