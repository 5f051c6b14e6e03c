"""``restore predict``: restore every record of a shard folder, write ``KEY.png`` and ``run.json``.

Batch ``b`` draws its starting noise from a generator seeded by (seed, b), so the same
checkpoint, input, batch size and seed give the same images. ``run.json`` records the
method, checkpoint (path, step, sha256 of its weights), sampler, steps, seed and every
key's prompts, and ``bench evaluate`` picks the method name up from it.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
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
        arr = ((images.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        for s, a in zip(samples, arr, strict=True):
            Image.fromarray(a).save(out / f"{s['key']}.png")
        bar.update(len(samples))
    bar.close()
    run = {"method": meta["method"], "checkpoint": str(folder), "step": meta["step"],
           "weights_sha256": ckpt.weights_sha256(folder), "ema": pc.use_ema, "config": meta["config"],
           "sampler": getattr(model, "sampler", "ddim"), "steps": pc.steps, "seed": pc.seed,
           "batch_size": pc.batch_size, "input": str(pc.input), "blind": pc.blind, "prompts": prompts,
           "pirs": PIRS_VERSION}
    (out / "run.json").write_text(json.dumps(run, indent=2, sort_keys=True))
    return run
