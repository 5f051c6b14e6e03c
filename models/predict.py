"""``restore predict``: restore every record of a shard folder at its own size, write ``KEY.png`` and ``run.json``.

Each record is restored at its output size (the HQ size; for a real photo without HQ,
the LQ size times the scale), whatever its aspect ratio:

1. the LQ is upsampled to the output size (PIL bicubic, as XPSR's and SeeSR's test scripts
   do); with a ``process_size``, an image whose short side is smaller is upsampled further
   (bilinear, XPSR's ``process_size``) and the result resized back at the end;
2. its sides are made a multiple of the model's latent grid: reflect padding cropped after
   the model (``fit: pad``, pirs' default) or a resize to the multiple below (``fit:
   resize``, XPSR's ``test.py``);
3. the method samples over overlapping latent tiles and decodes with a tiled VAE
   (:mod:`.sampling`, :mod:`.tiling`), so memory is bounded by the tile, not the image;
4. the colour fix (``adain``, ``wavelet`` or ``none``) pulls the output towards the LQ.

Image ``i`` draws its noise from a generator seeded by (seed, i), so the same checkpoint,
input, protocol and seed give the same images. ``run.json`` records the method,
checkpoint (path, step, sha256 of its weights), the whole protocol (steps, sampler,
guidance, added and negative prompts, tile size and overlap, VAE tiles, colour fix,
process size, fit), the seed and every key's prompts; ``bench evaluate`` reads it. A
rerun with the same settings skips the images already written, so an interrupted run
resumes; other settings in the same folder are refused unless ``overwrite``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from pirs.degrade.atomic import write_bytes, write_json

from . import checkpoint as ckpt
from .colorfix import color_fix
from .data import ShardPairs
from .method import get_method, load_config
from .sampling import InferenceProtocol
from .train import PIRS_VERSION, data_options

BLIND = "Remove all degradation"
PROGRESS_FILE = ".predict.json"


@dataclass
class PredictConfig:
    """Arguments of ``restore predict``; protocol keys left None take the method config's values."""

    checkpoint: str
    input: str
    out: str
    method: str | None = None
    seed: int = 0
    batch_size: int = 1  # tiles per forward pass
    base: str | None = None
    restoration_prompt: str | None = None
    semantic_prompt: str | None = None
    blind: bool = False
    use_ema: bool = False
    progress: bool = True
    overwrite: bool = False
    limit: int | None = None
    # the inference protocol (None: the config's)
    steps: int | None = None
    sampler: str | None = None
    guidance_scale: float | None = None
    added_prompt: str | None = None
    negative_prompt: str | None = None
    tile_size: int | None = None
    tile_overlap: int | None = None
    vae_encoder_tile: int | None = None
    vae_decoder_tile: int | None = None
    vae_tile_overlap: int | None = None
    color_fix: str | None = None
    process_size: int | None = None
    fit: str | None = None


def load_trained(path: str, method: str | None = None, base: str | None = None, use_ema: bool = False):
    """The method built from a run folder's (or a checkpoint's) trainer.json, with its trained weights."""
    folder = ckpt.latest(path)
    if folder is None:
        from .xpsr import is_official_checkpoint, load_official

        if is_official_checkpoint(path):  # XPSR's released unet/ + controlnet/ (README, XPSR section)
            return load_official(path, base, method)
        raise FileNotFoundError(f"{path}: no checkpoint (a folder with trainer.json, or a run folder with "
                                f"{ckpt.PREFIX}*/ inside); train one with `restore train`")
    meta = ckpt.read_meta(folder)
    if method and method != meta["method"]:
        raise ValueError(f"{folder} is a {meta['method']} checkpoint, not {method}")
    cls = get_method(meta["method"])
    cfg = load_config(meta["method"], meta["config_name"], meta.get("overrides"))
    model = cls.build(cfg, base if base is not None else meta.get("base"))
    ema = folder / "ema.safetensors"
    weights = ema if use_ema and ema.is_file() else folder / "model.safetensors"
    model.load_trainable_state_dict(load_file(weights))
    model.eval()
    return model, folder, meta


def output_size(rec: dict) -> tuple[int, int]:
    """(h, w) a prediction of record ``rec`` must have: its HQ size, or its LQ size x scale without HQ."""
    if rec["hq_size"]:
        return int(rec["hq_size"][0]), int(rec["hq_size"][1])
    k = 1 if rec["lq_upsampled"] else int(rec["scale"])
    return int(rec["lq_size"][0]) * k, int(rec["lq_size"][1]) * k


def process_shape(size: tuple[int, int], process_size: int) -> tuple[int, int]:
    """(h, w) the model works at: ``size``, or scaled so its short side is ``process_size`` when shorter.

    torchvision's ``Resize(int)`` rule (XPSR's ``resize_preproc``): the short side becomes
    ``process_size`` and the long side ``int(process_size * long / short)``.
    """
    h, w = size
    if not process_size or min(h, w) >= process_size:
        return h, w
    if h <= w:
        return process_size, int(process_size * w / h)
    return int(process_size * h / w), process_size


def fit_shape(size: tuple[int, int], multiple: int, fit: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """``((h, w) given to the model, (pad_h, pad_w))`` for sides that must be multiples of ``multiple``."""
    h, w = size
    if fit == "resize":  # XPSR's test.py: size // 8 * 8
        return (max(multiple, h // multiple * multiple), max(multiple, w // multiple * multiple)), (0, 0)
    ph, pw = -h % multiple, -w % multiple
    return (h + ph, w + pw), (ph, pw)


def _pil(data: bytes):
    """A shard's PNG member as a PIL image, through the one decoder with the pixel limit."""
    from PIL import Image

    from pirs.degrade.sources import decode_png

    return Image.fromarray(decode_png(data))


def _tensor(img) -> torch.Tensor:
    a = np.asarray(img, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(a).permute(2, 0, 1).contiguous()[None]


def _image(x: torch.Tensor):
    from PIL import Image

    a = ((x[0].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(a)


def _pad(x: torch.Tensor, ph: int, pw: int) -> torch.Tensor:
    """Reflect padding at the bottom and right (replicate where the image is too small to reflect)."""
    if not ph and not pw:
        return x
    mode = "reflect" if ph < x.shape[-2] and pw < x.shape[-1] else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def restore_image(model, lq_bytes: bytes, target: tuple[int, int], texts: dict[str, str],
                  generator: torch.Generator, protocol: InferenceProtocol, tile_batch: int = 1):
    """One record restored at ``target`` (h, w): returns ``(PIL image, resized)``, steps 1-4 of the module doc."""
    from PIL import Image

    th, tw = target
    lq = _pil(lq_bytes)
    if lq.size != (tw, th):
        lq = lq.resize((tw, th), Image.BICUBIC)
    ph_, pw_ = process_shape((th, tw), protocol.process_size)
    if (ph_, pw_) != (th, tw):
        lq = lq.resize((pw_, ph_), Image.BILINEAR)
    (mh, mw), (pad_h, pad_w) = fit_shape((ph_, pw_), model.size_multiple, protocol.fit)
    if protocol.fit == "resize" and (mh, mw) != (ph_, pw_):
        lq = lq.resize((mw, mh), Image.BICUBIC)
    x = _tensor(lq).to(next(model.parameters()).device)
    batch = {"lq": _pad(x, pad_h, pad_w), **{k: [v] for k, v in texts.items()}}
    y = model.restore(batch, generator, protocol, tile_batch=tile_batch)[..., : x.shape[-2], : x.shape[-1]]
    y = color_fix(y.float(), x.float(), protocol.color_fix).clamp(-1, 1)
    img = _image(y)
    resized = img.size != (tw, th)
    if resized:  # process_size or fit: resize, back to the output size (PIL bicubic, as XPSR's test.py)
        img = img.resize((tw, th), Image.BICUBIC)
    return img, resized


def _settings_hash(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


@torch.no_grad()
def predict(pc: PredictConfig) -> dict:
    """Restore every record of ``pc.input`` into ``pc.out``; returns the run.json content."""
    model, folder, meta = load_trained(pc.checkpoint, pc.method, pc.base, pc.use_ema)
    protocol = model.protocol(**{k: getattr(pc, k) for k in (f.name for f in dataclasses.fields(InferenceProtocol))})
    if pc.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {pc.batch_size}")
    data = ShardPairs(pc.input, data_options(model, pc.seed), need_hq=False)
    n = len(data) if pc.limit is None else min(pc.limit, len(data))
    out = Path(pc.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    from pirs.degrade.lock import output_lock

    with output_lock(out, "restore predict"):  # one writer per predictions folder
        return _predict_into(pc, model, folder, meta, protocol, data, n, out)


def _predict_into(pc: PredictConfig, model, folder: Path, meta: dict, protocol: InferenceProtocol,
                  data: ShardPairs, n: int, out: Path) -> dict:
    from tqdm import tqdm

    sha = meta.get("weights_sha256") or ckpt.weights_sha256(folder)  # an official XPSR folder brings its own
    settings = {"checkpoint": str(folder.resolve()), "weights_sha256": sha,
                "ema": pc.use_ema, "protocol": dataclasses.asdict(protocol), "seed": pc.seed,
                "input": str(pc.input), "blind": pc.blind, "restoration_prompt": pc.restoration_prompt,
                "semantic_prompt": pc.semantic_prompt}
    digest = _settings_hash(settings)
    progress = out / PROGRESS_FILE
    existing = sorted(p.name for p in out.glob("*.png"))
    if progress.is_file() and not pc.overwrite:
        try:
            marker = ckpt.read_json(progress)
        except ValueError:
            marker = None
        before = marker.get("settings_sha256") if isinstance(marker, dict) else None
        if before != digest:
            raise ValueError(f"--out {out} holds predictions made with other settings ({PROGRESS_FILE}); "
                             "use a new --out or --overwrite")
    elif existing and not pc.overwrite and not progress.is_file():
        raise ValueError(f"--out {out} already holds {len(existing)} PNG files from another run; "
                         "use a new --out or --overwrite")
    if pc.overwrite:
        for name in existing:
            (out / name).unlink()
        (out / "run.json").unlink(missing_ok=True)
    done = _complete_run(out, digest, n, data)
    if done is not None and not pc.overwrite:
        return done  # every image of these settings is there: nothing to do, nothing rewritten
    write_json(progress, {"settings_sha256": digest, "settings": settings})
    prompts: dict[str, dict[str, str]] = {}
    resized = skipped = 0
    bar = tqdm(total=n, desc=f"predict {meta['method']}", unit="img", disable=not pc.progress, file=sys.stderr)
    for i in range(n):
        rec = data.record(i)
        shard, key, members = data.items[i]
        texts = _texts(rec, data, pc)
        prompts[key] = {"restoration": texts["restoration_prompt"], "semantic": texts["semantic_prompt"],
                        "caption_high": texts["caption_high"], "caption_low": texts["caption_low"]}
        if protocol.added_prompt:
            prompts[key]["added"] = protocol.added_prompt
        if protocol.guidance_scale != 1.0:
            prompts[key]["negative"] = protocol.negative_prompt
        path = out / f"{key}.png"
        if path.is_file():
            skipped += 1
            bar.update(1)
            continue
        gen = torch.Generator().manual_seed(pc.seed * 1_000_003 + i)
        img, was_resized = restore_image(model, data.read(shard, members["lq.png"]), output_size(rec), texts, gen,
                                         protocol, pc.batch_size)
        resized += was_resized
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        write_bytes(path, buf.getvalue())
        bar.update(1)
    bar.close()
    run = {"method": meta["method"], "checkpoint": str(folder), "step": meta["step"],
           "weights_sha256": settings["weights_sha256"], "ema": pc.use_ema, "config": meta["config"],
           "protocol": dataclasses.asdict(protocol), "sampler": protocol.sampler, "steps": protocol.steps,
           "guidance_scale": protocol.guidance_scale, "tile_size": protocol.tile_size,
           "tile_overlap": protocol.tile_overlap, "color_fix": protocol.color_fix, "seed": pc.seed,
           "tiles_per_pass": pc.batch_size, "input": str(pc.input), "blind": pc.blind, "prompts": prompts,
           "output_size": "each record's HQ size (real photos: LQ size x scale), restored at that size in tiles",
           "resized": resized, "resumed": skipped, "count": n, "settings_sha256": digest, "pirs": PIRS_VERSION}
    write_json(out / "run.json", run)
    return run


def _complete_run(out: Path, digest: str, n: int, data: ShardPairs) -> dict | None:
    """The run.json of a finished run with the same settings and every image present, else None."""
    try:
        run = ckpt.read_json(out / "run.json")
    except ValueError:
        return None
    if not isinstance(run, dict) or run.get("settings_sha256") != digest or run.get("count") != n:
        return None
    if all((out / f"{data.items[i][1]}.png").is_file() for i in range(n)):
        return run
    return None


def _texts(rec: dict, data: ShardPairs, pc: PredictConfig) -> dict:
    """The prompts and captions a record is restored with (user overrides, blind mode, the added prompt)."""
    semantic = rec.get(data.options.semantic_field) or rec["caption_high"]
    restoration = rec["restoration_prompt"]
    if pc.blind:
        restoration, semantic = BLIND, ""
    if pc.restoration_prompt is not None:
        restoration = pc.restoration_prompt
    if pc.semantic_prompt is not None:
        semantic = pc.semantic_prompt
    return {"restoration_prompt": restoration, "semantic_prompt": semantic, "caption_high": rec["caption_high"],
            "caption_low": rec["caption_low"], "labels": list(rec["degradations"])}
