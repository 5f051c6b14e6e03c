"""``bench baseline --checkpoint FILE``: a published restorer's predictions, any architecture spandrel knows.

The papers compare against Real-ESRGAN, BSRGAN, SwinIR, HAT, Restormer, NAFNet, SCUNet and
more. `spandrel <https://github.com/chaiNNer-org/spandrel>`_ recognises these networks (and
their hyper-parameters) from the weights alone; pirs restores a test set with them into the
same ``KEY.png`` + ``run.json`` folder as the trivial baselines, for ``bench evaluate``.

**Safe loading.** The checkpoint is read without running any of its code: ``.safetensors``
through safetensors; ``.pth``, ``.pt``, ``.ckpt`` and ``.bin`` through
``torch.load(weights_only=True)``, whose unpickler allows tensors and plain containers only.
A file whose pickle names anything else (a function, a class, TorchScript) is refused with
one line; re-save its state dict as ``.safetensors`` where you trust it. The state dict is
then given to spandrel's ``ModelLoader().load_from_state_dict`` (spandrel unwraps
``params_ema``, ``params``, ``state_dict``... and the ``module.`` prefix). Architectures of
``spandrel_extra_arches`` (Restormer, MPRNet, SRFormer, CodeFormer...; restrictive
licences, not a pirs dependency) are recognised too when that package is installed.

**Sizes.** Each record's output must have its HQ size (for a real photo without HQ: its LQ
size times the test set's scale, 1 for an LQ stored at HQ size). The model runs at its own
scale ``s``:

* ``s`` equal to the set's scale (a x4 model on a x4 set, a x1 Restormer/NAFNet on a set
  whose LQ has the HQ size): the model sees the LQ as stored, no resizing;
* otherwise the LQ is first resized with Pillow's bicubic to the output size / ``s``
  (a x1 model on a x4 set restores the bicubic-upsampled LQ, i.e. ``bench baseline
  bicubic``'s prediction; a x4 model on a set whose LQ has the HQ size gets that LQ
  downscaled by 4 with antialiasing), so the model always works at its trained scale;
* an output still off the HQ size (an HQ that is not exactly LQ x scale) is resized to it
  with Pillow's bicubic.

``run.json`` counts both kinds of resize and says why.

**Padding and tiles.** The image is padded (reflect; replicate past the image's own size)
to the architecture's size requirements (minimum, multiple of, square) and the output
cropped back to LQ size x ``s``. An image that fits one ``--tile-size`` tile (default 512 px
of model input) is restored whole. A larger one is cut into equal tiles (a multiple of the
size requirement) that overlap by at least ``--tile-overlap`` px; in each overlap the outer
quarter next to a tile's inner edge gets weight 0 and the middle half crossfades with a
raised cosine, so seams are smooth, a constant image stays constant, and a model whose
receptive field reaches less than a quarter of the overlap gives the untiled result to
float rounding. Architectures that tile internally (spandrel's ``ModelTiling.INTERNAL``)
always get the whole image.

**Names.** ``run.json``'s ``method`` is the name the papers' tables print (the
leaderboard's ``method`` column) where spandrel's architecture id determines it
(``SwinIR``, ``NAFNet``, ``HAT``, ``Restormer``...); RRDBNet checkpoints are ESRGAN,
Real-ESRGAN, BSRGAN and more with identical architecture, so the checkpoint's file name
decides (``RealESRGAN_x4plus.pth`` -> ``Real-ESRGAN``, ``BSRGAN.pth`` -> ``BSRGAN``), else
``ESRGAN``. ``--name`` overrides it. Never ``DPIR`` for spandrel's DRUNet: in pirs that name
is the diffusion method the leaderboard compares.

Nothing here is imported at ``bench`` start-up: torch and spandrel load inside the functions.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .baselines import old_predictions, predictions_folder
from .pairing import RUN_FILE, Reference, ReferenceError, load_reference

PICKLE_EXTS = (".pth", ".pt", ".ckpt", ".bin")
CHECKPOINT_EXTS = (".safetensors", *PICKLE_EXTS)
DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
DEFAULT_TILE = 512
DEFAULT_OVERLAP = 32

# spandrel architecture id -> the method name the papers' tables print (leaderboard `method` column).
ARCH_METHODS = {
    "ESRGAN": "ESRGAN", "Compact": "Real-ESRGAN Compact", "SwinIR": "SwinIR", "Swin2SR": "Swin2SR", "HAT": "HAT",
    "NAFNet": "NAFNet", "Restormer": "Restormer", "SCUNet": "SCUNet", "DRUNet": "DRUNet", "DnCNN": "DnCNN",
    "FBCNN": "FBCNN", "MMRealSR": "MM-RealSR", "RealCUGAN": "Real-CUGAN", "DAT": "DAT", "GRL": "GRL", "RGT": "RGT",
    "Uformer": "Uformer", "KBNet": "KBNet", "FFTformer": "FFTformer", "MPRNet": "MPRNet", "MIRNet2": "MIRNetv2",
    "SRFormer": "SRFormer", "GFPGAN": "GFPGAN", "CodeFormer": "CodeFormer", "RestoreFormer": "RestoreFormer",
    "SwiftSRGAN": "SwiftSRGAN", "OmniSR": "OmniSR", "SPAN": "SPAN", "SAFMN": "SAFMN", "DRCT": "DRCT", "ATD": "ATD",
    "RCAN": "RCAN", "IPT": "IPT", "CRAFT": "CRAFT", "DITN": "DITN", "DCTLSA": "DCTLSA", "PLKSR": "PLKSR",
    "RetinexFormer": "Retinexformer", "MixDehazeNet": "MixDehazeNet", "HVICIDNet": "HVI-CIDNet",
}
# Architectures shared by several published methods: the checkpoint's file name tells them apart
# (first match wins; matched against the lower-cased file name without separators).
FILE_HINTS = {
    "ESRGAN": (("realesrnet", "Real-ESRNet"), ("realesrgan", "Real-ESRGAN"), ("bsrnet", "BSRNet"),
               ("bsrgan", "BSRGAN"), ("esrgan", "ESRGAN")),
    "Compact": (("realesrgeneral", "Real-ESRGAN"), ("realesranimevideo", "Real-ESRGAN"),
                ("realesrgan", "Real-ESRGAN")),
}


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and the reason, on one line."""


@dataclass
class LoadedModel:
    """A spandrel image model and where it came from."""

    descriptor: object  # spandrel.ImageModelDescriptor
    path: Path
    sha256: str
    file_format: str
    parameters: int

    @property
    def arch_id(self) -> str:
        return str(self.descriptor.architecture.id)

    @property
    def scale(self) -> int:
        return int(self.descriptor.scale)


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= 200 else text[:197] + "..."


def read_state_dict(path: str | os.PathLike) -> tuple[dict, str]:
    """The tensors of a checkpoint file, never unpickling anything but tensors and plain containers.

    Returns ``(state_dict, format)``; raises :class:`CheckpointError` naming the file.
    """
    p = Path(path)
    where = f"--checkpoint {path}"
    if not p.exists():
        raise CheckpointError(f"{where}: no such file")
    if not p.is_file():
        raise CheckpointError(f"{where}: not a file")
    ext = p.suffix.lower()
    if ext not in CHECKPOINT_EXTS:
        raise CheckpointError(f"{where}: unsupported extension {ext or '(none)'!r}; expected one of "
                              f"{', '.join(CHECKPOINT_EXTS)}")
    if ext == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(p), device="cpu"), "safetensors"
        except Exception as e:  # safetensors raises its own SafetensorError, OSError, ...
            raise CheckpointError(f"{where}: not a readable safetensors file ({_one_line(e)})") from None
    import pickle
    import warnings

    import torch

    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols; the outcome is reported below
            warnings.simplefilter("ignore")
            obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e)
        found = re.search(r"GLOBAL (\S+)", text)
        detail = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\n\n|$)", text, re.S)
        what = (f"unpickling it would load {found.group(1)}" if found else
                f"not a plain weights pickle ({' '.join(detail.group(1).split()) if detail else _one_line(e)})")
        raise CheckpointError(f"{where}: refused: {what}; pirs reads pickled checkpoints with "
                              "torch.load(weights_only=True), tensors and plain containers only (if you trust "
                              "the file, re-save its state dict as .safetensors)") from None
    except Exception as e:  # a truncated zip, a TorchScript archive, not a torch file at all...
        if "TorchScript" in str(e):
            raise CheckpointError(f"{where}: refused: a TorchScript archive (code, not only weights); save its "
                                  "state_dict() as .safetensors where you trust it") from None
        raise CheckpointError(f"{where}: not a readable PyTorch checkpoint, truncated or corrupt? "
                              f"({_one_line(e)})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{where}: holds a {type(obj).__name__}, not a state dict of tensors")
    return obj, "pickle, torch.load(weights_only=True)"


def _registry():
    """spandrel's registry, plus spandrel_extra_arches' architectures when that package is installed."""
    from spandrel import MAIN_REGISTRY

    try:
        import spandrel_extra_arches
    except ImportError:
        return MAIN_REGISTRY
    reg = MAIN_REGISTRY.copy()
    reg.add(*spandrel_extra_arches.EXTRA_REGISTRY, ignore_duplicates=True)
    return reg


def load_model(path: str | os.PathLike, device: str = "cpu", dtype: str = "fp32") -> LoadedModel:
    """Read a checkpoint safely, let spandrel detect its architecture, and put it on ``device`` in ``dtype``."""
    import spandrel
    import torch

    where = f"--checkpoint {path}"
    state, file_format = read_state_dict(path)
    tensors = sum(isinstance(v, torch.Tensor) for v in spandrel.canonicalize_state_dict(state).values())
    if not tensors:
        raise CheckpointError(f"{where}: holds no tensors (keys: {', '.join(list(map(str, state))[:5])})")
    loader = spandrel.ModelLoader(device="cpu", registry=_registry())
    try:
        desc = loader.load_from_state_dict(state)
    except spandrel.UnsupportedModelError:
        raise CheckpointError(f"{where}: unknown architecture: spandrel {spandrel.__version__} recognises none of "
                              f"its {tensors} tensors' layout (install spandrel_extra_arches for Restormer, MPRNet, "
                              "SRFormer...)") from None
    except Exception as e:  # detected, but the weights do not fit the deduced hyper-parameters
        raise CheckpointError(f"{where}: spandrel could not build its architecture ({_one_line(e)})") from None
    if not isinstance(desc, spandrel.ImageModelDescriptor):
        raise CheckpointError(f"{where}: a {desc.architecture.name} {desc.purpose} model (it needs a mask), "
                              "not an image restorer")
    if desc.input_channels != 3 or desc.output_channels != 3:
        raise CheckpointError(f"{where}: a {desc.architecture.name} model with {desc.input_channels} input and "
                              f"{desc.output_channels} output channels; pirs test sets are RGB")
    torch_dtype = getattr(torch, DTYPES[dtype])
    if dtype == "fp16" and not desc.supports_half:
        raise CheckpointError(f"{where}: {desc.architecture.name} does not support fp16 (use --dtype fp32)")
    if dtype == "bf16" and not desc.supports_bfloat16:
        raise CheckpointError(f"{where}: {desc.architecture.name} does not support bf16 (use --dtype fp32)")
    desc.to(device=device, dtype=torch_dtype).eval()
    return LoadedModel(descriptor=desc, path=Path(path), sha256=file_sha256(path), file_format=file_format,
                       parameters=sum(p.numel() for p in desc.model.parameters()))


def method_for(arch_id: str, arch_name: str, checkpoint: str | os.PathLike) -> tuple[str, str]:
    """The leaderboard's method name for a spandrel architecture and checkpoint file, and how it was chosen."""
    stem = re.sub(r"[^a-z0-9]", "", Path(checkpoint).name.lower())
    for needle, name in FILE_HINTS.get(arch_id, ()):
        if needle in stem:
            return name, f"architecture {arch_id}, file name {Path(checkpoint).name}"
    if arch_id in ARCH_METHODS:
        return ARCH_METHODS[arch_id], f"architecture {arch_id}"
    return arch_name, f"architecture {arch_id} (spandrel's name; not in pirs' table of method names)"


# --- tiling -------------------------------------------------------------------------------------------------------


def _ceil_to(x: int, m: int) -> int:
    return -(-x // m) * m


def padded_size(h: int, w: int, minimum: int = 0, multiple_of: int = 1, square: bool = False) -> tuple[int, int]:
    """(h, w) grown to a model's size requirements."""
    ph, pw = _ceil_to(max(h, minimum), multiple_of), _ceil_to(max(w, minimum), multiple_of)
    if square:
        ph = pw = max(ph, pw)
    return ph, pw


def pad_image(x, size: tuple[int, int]):
    """Pad an (N, C, h, w) tensor at the bottom and right to ``size``: reflect, then replicate past the image."""
    import torch.nn.functional as F

    h, w = x.shape[-2:]
    dh, dw = size[0] - h, size[1] - w
    rh, rw = min(dh, h - 1), min(dw, w - 1)
    if rh or rw:
        x = F.pad(x, (0, rw, 0, rh), mode="reflect")
    if dh - rh or dw - rw:
        x = F.pad(x, (0, dw - rw, 0, dh - rh), mode="replicate")
    return x


def tile_spans(length: int, tile: int | None, overlap: int, multiple_of: int = 1,
               minimum: int = 0) -> list[tuple[int, int]]:
    """Equal, evenly spread ``[start, end)`` tiles covering ``length``, adjacent ones overlapping >= ``overlap``.

    The tile length is a multiple of ``multiple_of`` (``length`` must be one) and at least ``minimum``;
    one span when ``tile`` is None or ``length`` fits one tile.
    """
    if tile is None or length <= tile:
        return [(0, length)]
    n = math.ceil((length - overlap) / (tile - overlap))
    size = min(length, max(_ceil_to(math.ceil((length + (n - 1) * overlap) / n), multiple_of),
                           _ceil_to(minimum, multiple_of)))
    if size >= length:
        return [(0, length)]
    n = max(n, math.ceil((length - overlap) / max(size - overlap, 1)))
    starts = sorted({round(i * (length - size) / (n - 1)) for i in range(n)})
    return [(s, s + size) for s in starts]


def _ramp(n: int):
    """Raised-cosine ramp of ``n`` samples rising from 0 to 1 (exclusive); ramp[j] + ramp[n-1-j] = 1."""
    j = np.arange(n, dtype=np.float64)
    return 0.5 - 0.5 * np.cos(np.pi * (j + 0.5) / n)


def span_weights(spans: list[tuple[int, int]], i: int, scale: int) -> np.ndarray:
    """Blending weights along one axis of tile ``i`` of ``spans``, at output scale."""
    a, b = spans[i]
    w = np.ones((b - a) * scale, dtype=np.float64)
    for j, side in ((i - 1, "left"), (i + 1, "right")):
        if not 0 <= j < len(spans):
            continue
        ov = ((spans[j][1] - a) if side == "left" else (b - spans[j][0])) * scale
        if ov <= 0:
            continue
        q = ov // 4
        zone = np.concatenate([np.zeros(q), _ramp(ov - 2 * q), np.ones(q)])
        if side == "left":
            w[:ov] *= zone
        else:
            w[len(w) - ov:] *= zone[::-1]
    return w


def run_tiled(model, x, tile: int | None = None, overlap: int = DEFAULT_OVERLAP):
    """Restore an (1, 3, h, w) tensor in [0, 1] with a spandrel image model: (1, 3, h*s, w*s), float32 on CPU.

    Pads to the model's size requirements, tiles as described in the module docstring, crops back.
    """
    import torch

    req = model.size_requirements
    s = int(model.scale)
    h, w = x.shape[-2:]
    ph, pw = padded_size(h, w, req.minimum, req.multiple_of, req.square)
    xp = pad_image(x, (ph, pw)) if (ph, pw) != (h, w) else x
    if req.square or getattr(model.tiling, "name", "") == "INTERNAL":
        tile = None
    ys = tile_spans(ph, tile, overlap, req.multiple_of, req.minimum)
    xs = tile_spans(pw, tile, overlap, req.multiple_of, req.minimum)
    with torch.inference_mode():
        if len(ys) == 1 and len(xs) == 1:
            out = model(xp).float().cpu()
        else:
            out = torch.zeros((1, 3, ph * s, pw * s), dtype=torch.float32)
            wsum = torch.zeros((ph * s, pw * s), dtype=torch.float32)
            for i, (y0, y1) in enumerate(ys):
                wy = span_weights(ys, i, s)
                for j, (x0, x1) in enumerate(xs):
                    wt = torch.from_numpy(np.outer(wy, span_weights(xs, j, s)).astype(np.float32))
                    pred = model(xp[..., y0:y1, x0:x1]).float().cpu()
                    out[..., y0 * s:y1 * s, x0 * s:x1 * s] += pred * wt
                    wsum[y0 * s:y1 * s, x0 * s:x1 * s] += wt
            if float(wsum.min()) <= 0:  # cannot happen with tile_spans' spacing; never divide by zero silently
                raise RuntimeError("tile weights leave pixels uncovered")
            out = (out / wsum).clamp_(0, 1)
    return out[..., : h * s, : w * s], len(ys) * len(xs)


# --- the baseline -------------------------------------------------------------------------------------------------


def _resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(img).resize((size[1], size[0]), resample=Image.Resampling.BICUBIC))


def plan(lq_size: tuple[int, int], out_size: tuple[int, int], model_scale: int,
         set_scale: int) -> tuple[tuple[int, int] | None, bool]:
    """``(input size or None, output resize needed)`` for an LQ of ``lq_size`` whose prediction must be ``out_size``.

    ``set_scale`` is the test set's own factor (1 when the LQ is stored at HQ size). With equal
    scales the model sees the LQ as is; otherwise the LQ is resized to ``out_size / model_scale``.
    """
    h, w = lq_size
    s = model_scale
    if (h * s, w * s) == tuple(out_size):
        return None, False
    if s == set_scale:
        return None, True
    ih, iw = max(1, round(out_size[0] / s)), max(1, round(out_size[1] / s))
    return ((ih, iw) if (ih, iw) != (h, w) else None), (ih * s, iw * s) != tuple(out_size)


def restore_image(lm: LoadedModel, lq: np.ndarray, out_size: tuple[int, int], set_scale: int,
                  tile: int | None, overlap: int) -> tuple[np.ndarray, dict]:
    """uint8 RGB prediction of size ``out_size`` from uint8 RGB ``lq``, and what was done to get it."""
    import torch

    desc = lm.descriptor
    in_size, resize_out = plan(lq.shape[:2], out_size, lm.scale, set_scale)
    src = _resize(lq, in_size) if in_size else lq
    x = torch.from_numpy(np.array(src)).permute(2, 0, 1)[None].to(desc.device, desc.dtype) / 255.0
    y, tiles = run_tiled(desc, x, tile, overlap)
    pred = (y[0].permute(1, 2, 0).numpy() * 255.0).round().clip(0, 255).astype(np.uint8)
    if pred.shape[:2] != tuple(out_size):
        pred = _resize(pred, out_size)
        resize_out = True
    return pred, {"input_resized": in_size is not None, "output_resized": resize_out, "tiles": tiles}


def output_size(item) -> tuple[tuple[int, int], int]:
    """(the prediction's required size, the test set's scale factor for this record)."""
    k = 1 if item.lq_upsampled else int(item.scale)
    if item.hq_size:
        return (int(item.hq_size[0]), int(item.hq_size[1])), k
    return (int(item.lq_size[0]) * k, int(item.lq_size[1]) * k), k


def check_tiling(tile_size: int | None, tile_overlap: int) -> int | None:
    """Validate ``--tile-size`` / ``--tile-overlap``; 0 or None means never tile."""
    if tile_overlap < 0:
        raise ValueError(f"--tile-overlap {tile_overlap}: must be >= 0")
    if not tile_size:
        return None
    if tile_size < 0:
        raise ValueError(f"--tile-size {tile_size}: must be > 0 (0 restores every image whole)")
    if 2 * tile_overlap >= tile_size:
        raise ValueError(f"--tile-overlap {tile_overlap}: must be less than half of --tile-size {tile_size}")
    return tile_size


def write_spandrel_baseline(checkpoint: str | os.PathLike, reference: str | os.PathLike | Reference,
                            out: str | os.PathLike, name: str | None = None, tile_size: int | None = DEFAULT_TILE,
                            tile_overlap: int = DEFAULT_OVERLAP, device: str = "auto", dtype: str = "fp32",
                            overwrite: bool = False, progress: bool = True) -> dict:
    """Restore every record of ``reference`` with a spandrel-detected checkpoint into ``out``; return run.json."""
    from pirs.degrade.build import PIRS_VERSION, encode_png

    from .evaluate import resolve_device

    tile = check_tiling(tile_size, tile_overlap)
    if dtype not in DTYPES:
        raise ValueError(f"--dtype {dtype}: expected one of {', '.join(DTYPES)}")
    dev = resolve_device(device)
    if dtype == "fp16" and not dev.startswith("cuda"):
        raise ValueError("--dtype fp16: only on a CUDA device (CPU inference runs in fp32)")
    ref = reference if isinstance(reference, Reference) else load_reference(reference)
    if not ref.has_lq:
        raise ReferenceError(f"--reference {ref.path}: a baseline restores the LQ images, which only a pirs "
                             "shard folder carries (this is a folder of images)")
    dest = predictions_folder(out, overwrite, clear=False)  # cleared once the model has loaded
    old = old_predictions(dest)
    lm = load_model(checkpoint, dev, dtype)
    desc = lm.descriptor
    method, name_source = (name, "--name") if name else method_for(lm.arch_id, desc.architecture.name, checkpoint)
    for f in old:
        f.unlink()
    dest.mkdir(parents=True, exist_ok=True)
    from tqdm import tqdm

    counts = {"images": 0, "tiled": 0, "tiles": 0, "input_resized": 0, "output_resized": 0}
    set_scales: set[int] = set()
    t0 = time.perf_counter()
    for item, lq in tqdm(ref.iter_lq(), total=len(ref.items), desc=f"bench baseline {method}", unit="img",
                         disable=not progress):
        size, k = output_size(item)
        set_scales.add(k)
        pred, info = restore_image(lm, lq, size, k, tile, tile_overlap)
        counts["images"] += 1
        counts["tiles"] += info["tiles"]
        counts["tiled"] += info["tiles"] > 1
        counts["input_resized"] += info["input_resized"]
        counts["output_resized"] += info["output_resized"]
        tmp = dest / f".{item.key}.png.tmp"
        tmp.write_bytes(encode_png(pred))
        os.replace(tmp, dest / f"{item.key}.png")
    seconds = time.perf_counter() - t0
    import spandrel

    req = desc.size_requirements
    mismatch = sorted(k for k in set_scales if k != lm.scale)
    note = "model and test set scales agree: the model sees the LQ as stored"
    if mismatch:
        how = ("upsampled to the HQ size with Pillow's bicubic (the bicubic baseline's image), then restored"
               if lm.scale == 1 else f"resized with Pillow's bicubic to the HQ size / {lm.scale}, then restored")
        note = (f"scale mismatch: a x{lm.scale} model on a test set of scale "
                f"{', '.join(f'x{k}' for k in mismatch)} (x1: LQ stored at HQ size): each LQ is {how}")
    run = {
        "method": method, "method_name_source": name_source, "baseline": True, "needs_weights": True,
        "weights": {"path": str(Path(checkpoint).resolve()), "sha256": lm.sha256, "format": lm.file_format},
        "checkpoint": str(Path(checkpoint).resolve()), "checkpoint_sha256": lm.sha256,
        "architecture": {"id": lm.arch_id, "name": desc.architecture.name, "purpose": desc.purpose,
                         "tags": list(desc.tags), "parameters": lm.parameters,
                         "size_requirements": {"minimum": req.minimum, "multiple_of": req.multiple_of,
                                               "square": req.square},
                         "tiling": desc.tiling.name.lower()},
        "spandrel_version": spandrel.__version__,
        "scale": {"model": lm.scale, "test_set": sorted(set_scales), "mismatch": bool(mismatch), "note": note},
        "tile": {"size": tile, "overlap": tile_overlap,
                 "rule": "images larger than one tile are cut into equal overlapping tiles; overlaps crossfade "
                         "with a raised cosine over their middle half"},
        "padding": "reflect (replicate past the image size) to the size requirements, cropped after",
        "output_size": "each record's HQ size (real photos: LQ size x the set's scale); outputs off it are resized "
                       "with Pillow's bicubic (counted in output_resized)",
        "dtype": DTYPES[dtype], "device": dev, "counts": counts, "seconds": round(seconds, 3),
        "description": f"{method}: {desc.architecture.name} x{lm.scale} through spandrel from {Path(checkpoint).name}",
        "reference": str(ref.path), "reference_fingerprint": ref.fingerprint, "pirs_version": PIRS_VERSION,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    (dest / RUN_FILE).write_text(json.dumps(run, indent=2) + "\n")
    return run
