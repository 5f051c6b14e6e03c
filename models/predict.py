"""``restore predict``: restore every record of a shard folder, write ``KEY.png`` and ``run.json``.

Batch ``b`` draws its starting noise from a generator seeded by (seed, b), so the same
checkpoint, input, batch size and seed give the same images. The model runs at its
config's resolution (the one it was trained at); each output is then resized (bicubic,
antialiased when shrinking) to the record's HQ size, or for a real photo without HQ to its
LQ size times the scale, so ``bench evaluate`` pairs it with the test set whatever the
images' sizes; ``run.json`` says how many were resized. ``run.json`` records the
method, checkpoint (path, step, sha256 of its weights), sampler, steps, seed and every
key's prompts, and ``bench evaluate`` picks the method name up from it.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from . import checkpoint as ckpt
from .data import ShardPairs, collate
from .method import get_method, load_config
from .train import PIRS_VERSION, _to_device, data_options

BLIND = "Remove all degradation"


@dataclass
class PredictConfig:
    """Arguments of ``restore predict``."""

    checkpoint: str
    input: str
    out: str
    method: str | None = None
    steps: int = 50
    seed: int = 0
    batch_size: int = 4
    base: str | None = None
    restoration_prompt: str | None = None
    semantic_prompt: str | None = None
    blind: bool = False
    use_ema: bool = False
    progress: bool = True


def load_trained(path: str, method: str | None = None, base: str | None = None, use_ema: bool = False):
    """The method built from a run folder's (or a checkpoint's) trainer.json, with its trained weights."""
    folder = ckpt.latest(path)
    if folder is None:
        raise FileNotFoundError(f"{path}: no checkpoint (a folder with trainer.json, or a run folder with "
                                f"{ckpt.PREFIX}*/ inside); train one with `restore train`")
    meta = json.loads((folder / "trainer.json").read_text())
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


@torch.no_grad()
def predict(pc: PredictConfig) -> dict:
    """Restore every record of ``pc.input`` into ``pc.out``; returns the run.json content."""
    from PIL import Image
    from tqdm import tqdm

    model, folder, meta = load_trained(pc.checkpoint, pc.method, pc.base, pc.use_ema)
    data = ShardPairs(pc.input, data_options(model, pc.seed), need_hq=False)
    out = Path(pc.out)
    out.mkdir(parents=True, exist_ok=True)
    device = next(model.parameters()).device
    prompts: dict[str, dict[str, str]] = {}
    resized = 0
    n = len(data)
    bar = tqdm(total=n, desc=f"predict {meta['method']}", unit="img", disable=not pc.progress, file=sys.stderr)
    for b, lo in enumerate(range(0, n, pc.batch_size)):
        samples = [data.sample(i) for i in range(lo, min(lo + pc.batch_size, n))]
        for s in samples:
            if pc.blind:
                s["restoration_prompt"], s["semantic_prompt"] = BLIND, ""
            if pc.restoration_prompt is not None:
                s["restoration_prompt"] = pc.restoration_prompt
            if pc.semantic_prompt is not None:
                s["semantic_prompt"] = pc.semantic_prompt
            prompts[s["key"]] = {"restoration": s["restoration_prompt"], "semantic": s["semantic_prompt"]}
        batch = _to_device(collate(samples), device)
        images = model.predict(batch, pc.steps, torch.Generator().manual_seed(pc.seed * 1_000_003 + b))
        for i, (s, img) in enumerate(zip(samples, images, strict=True)):
            size = output_size(data.record(lo + i))
            resolution = tuple(img.shape[-2:])
            if resolution != size:
                img = F.interpolate(img[None].float(), size=size, mode="bicubic", align_corners=False,
                                    antialias=size[0] < resolution[0] or size[1] < resolution[1])[0]
                resized += 1
            a = ((img.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
            Image.fromarray(a).save(out / f"{s['key']}.png")
        bar.update(len(samples))
    bar.close()
    run = {"method": meta["method"], "checkpoint": str(folder), "step": meta["step"],
           "weights_sha256": ckpt.weights_sha256(folder), "ema": pc.use_ema, "config": meta["config"],
           "sampler": getattr(model, "sampler", "ddim"), "steps": pc.steps, "seed": pc.seed,
           "batch_size": pc.batch_size, "input": str(pc.input), "blind": pc.blind, "prompts": prompts,
           "model_resolution": data.options.resolution,
           "output_size": "each record's HQ size (real photos: LQ size x scale), bicubic from the model's output",
           "resized": resized, "pirs": PIRS_VERSION}
    (out / "run.json").write_text(json.dumps(run, indent=2, sort_keys=True))
    return run
