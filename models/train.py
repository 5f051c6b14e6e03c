"""The training loop every method shares, on ``accelerate``.

One optimizer step per step, with ``grad_accum`` micro-batches each; micro-batch ``m`` of
step ``s`` is data batch ``s*grad_accum + m`` and draws its noise and timesteps from a
generator seeded by (seed, s, m), so a run stopped after a checkpoint and resumed gives
the same weights as a run that never stopped. Checkpoints every ``checkpoint_every``
steps and at the end; optional EMA of the trainable weights; validation images every
``validate_every`` steps; one JSON line of log per ``log_every`` steps in ``out/log.jsonl`` (the
loss and each of the method's loss terms, e.g. ``diff``, ``deg``, ``rec``).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import checkpoint as ckpt
from .data import DataError, DataOptions, ShardPairs
from .method import Method, get_method, load_config

PIRS_VERSION = "0.1.0"


@dataclass
class TrainConfig:
    """Arguments of ``restore train``."""

    method: str
    data: str
    out: str
    config: str = "tiny"
    overrides: list[str] = field(default_factory=list)
    base: str | None = None
    max_steps: int = 1000
    batch_size: int = 4
    grad_accum: int = 1
    learning_rate: float | None = None
    mixed_precision: str = "no"
    checkpoint_every: int = 500
    validate_every: int = 0
    validation_steps: int = 20
    ema_decay: float = 0.0
    max_grad_norm: float | None = None  # None: the method config's max_grad_norm, if it has one
    allow_empty_text: bool = False  # train even when records leave a field the method reads empty
    log_every: int = 10
    seed: int = 0
    progress: bool = True


def step_generator(seed: int, step: int, micro: int) -> torch.Generator:
    """The generator of one micro-batch: a pure function of (seed, step, micro-batch)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 131 + micro)


def data_options(method: Method, seed: int) -> DataOptions:
    """Data options from a method's config (resolution, semantic field, prompt dropout); ``method`` may
    also be the config itself."""
    c = getattr(method, "config", method)
    return DataOptions(resolution=getattr(c, "resolution", None), semantic_field=getattr(c, "semantic_field",
                       "caption_source"), restoration_dropout=getattr(c, "restoration_dropout", 0.0),
                       semantic_dropout=getattr(c, "semantic_dropout", getattr(c, "caption_dropout", 0.0)),
                       seed=seed)


def build_method(name: str, config: str, overrides: list[str], base: str | None) -> Method:
    """Load a method's config and build it."""
    cfg = load_config(name, config, overrides)
    return get_method(name).build(cfg, base)


def train(tc: TrainConfig) -> dict:
    """Run (or resume) training; returns a summary. One writer per run folder (a lock on ``--out``)."""
    from pirs.degrade.lock import output_lock

    out = Path(tc.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    with output_lock(out, "restore train"):
        return _train(tc, out)


def _train(tc: TrainConfig, out: Path) -> dict:
    from accelerate import Accelerator
    from tqdm import tqdm

    cfg = load_config(tc.method, tc.config, tc.overrides)
    data = ShardPairs(tc.data, data_options(cfg, tc.seed))  # first: bad shards fail before any model is built
    model = get_method(tc.method).build(cfg, tc.base)
    empty = {f: data.empty_fields.get(f, 0) for f in model.required_text() if data.empty_fields.get(f, 0)}
    if empty and not tc.allow_empty_text:
        what = ", ".join(f"{n} of {len(data)} records have an empty {f}" for f, n in empty.items())
        raise DataError(f"{tc.data}: {what}; {tc.method} reads them (caption the shards first, e.g. `caption run "
                        f"{tc.data} --out CAPTIONED --backend llava --model DIR`), or pass --allow-empty-text")
    data_fp = data.fingerprint()
    lr = tc.learning_rate if tc.learning_rate is not None else getattr(model.config, "learning_rate", 1e-4)
    params = model.trainable_parameters()
    if not params:
        raise ValueError(f"{tc.method}: nothing to train")
    opt = torch.optim.AdamW(params, lr=lr)
    clip = tc.max_grad_norm if tc.max_grad_norm is not None else getattr(model.config, "max_grad_norm", None)
    acc = Accelerator(mixed_precision=tc.mixed_precision, cpu=not torch.cuda.is_available())
    model, opt = acc.prepare(model, opt)
    core: Method = acc.unwrap_model(model)
    trainer_meta = {"method": tc.method, "config": dataclasses.asdict(core.config), "config_name": tc.config,
                    "overrides": tc.overrides, "base": tc.base, "data": str(tc.data), "seed": tc.seed,
                    "batch_size": tc.batch_size, "grad_accum": tc.grad_accum, "learning_rate": lr,
                    "max_grad_norm": clip, "data_fingerprint": data_fp,
                    "pirs": PIRS_VERSION}
    start = 0
    ema: dict[str, torch.Tensor] | None = None
    resume = ckpt.latest(out)
    if resume is not None:
        meta = ckpt.read_meta(resume)
        if meta["method"] != tc.method or meta["config"] != dataclasses.asdict(core.config):
            raise ValueError(f"{out} holds a run of another method or config ({meta['method']}, config "
                             f"{meta.get('config_name')}); use a new --out to train this one")
        if meta.get("data_fingerprint") not in (None, data_fp):
            raise ValueError(f"{out} holds a run trained on other data ({meta.get('data')}); resuming it on "
                             f"{tc.data} would mix the two: use a new --out")
        from safetensors.torch import load_file

        core.load_trainable_state_dict(load_file(resume / "model.safetensors"))
        ckpt.load_optimizer(opt, resume)
        if (resume / "ema.safetensors").is_file():
            ema = load_file(resume / "ema.safetensors")
        start = int(meta["step"])
    if tc.ema_decay and ema is None:
        ema = {k: v.detach().clone() for k, v in core.trainable_state_dict().items()}
    model.train()
    log = open(out / "log.jsonl", "a")
    bar = tqdm(total=tc.max_steps, initial=start, desc=f"train {tc.method}", unit="step", disable=not tc.progress,
               file=sys.stderr, dynamic_ncols=True)
    t0, last = time.perf_counter(), {}
    try:
        for step in range(start, tc.max_steps):
            opt.zero_grad(set_to_none=True)
            total = 0.0
            terms: dict[str, float] = {}  # the method's loss terms (L_diff, L_deg, ...), averaged like the loss
            for micro in range(tc.grad_accum):
                batch = _to_device(data.batch(step * tc.grad_accum + micro, tc.batch_size), acc.device)
                with acc.autocast():
                    res = core.training_step(batch, step_generator(tc.seed, step, micro))
                acc.backward(res["loss"] / tc.grad_accum)
                total += float(res["loss"].detach()) / tc.grad_accum
                for k, v in res.items():
                    if k != "loss" and isinstance(v, torch.Tensor) and v.numel() == 1:
                        terms[k] = terms.get(k, 0.0) + float(v.detach()) / tc.grad_accum
            if clip:
                acc.clip_grad_norm_(params, clip)
            opt.step()
            if ema is not None:
                with torch.no_grad():
                    for k, v in core.trainable_state_dict().items():
                        ema[k].mul_(tc.ema_decay).add_(v, alpha=1 - tc.ema_decay)
            done = step + 1
            last = {"step": done, "loss": total, **{k: v for k, v in sorted(terms.items()) if k not in _LOG_KEYS},
                    "lr": opt.param_groups[0]["lr"], "seconds": round(time.perf_counter() - t0, 3)}
            if done % tc.log_every == 0 or done == tc.max_steps:
                log.write(json.dumps(last) + "\n")
                log.flush()
            bar.update(1)
            bar.set_postfix(loss=f"{total:.4f}")
            if tc.validate_every and done % tc.validate_every == 0:
                validate(core, data, out / "validation" / f"step-{done:07d}.png", tc)
            if done % tc.checkpoint_every == 0 or done == tc.max_steps:
                ckpt.save(out, done, core.trainable_state_dict(), opt, trainer_meta, ema)
    finally:
        bar.close()
        log.close()
    return {"out": str(out), "start": start, "steps": tc.max_steps, **last, "parameters": core.parameter_counts()}


_LOG_KEYS = ("step", "loss", "lr", "seconds")


def _to_device(batch: dict, device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


@torch.no_grad()
def validate(model: Method, data: ShardPairs, path: Path, tc: TrainConfig) -> Path:
    """Restore the first samples and save LQ | prediction | HQ rows as one PNG."""
    from PIL import Image

    model.eval()
    n = min(4, len(data))
    batch = _to_device(_first(data, n), next(model.parameters()).device)
    pred = model.predict(batch, tc.validation_steps, torch.Generator().manual_seed(tc.seed))
    model.train()
    rows = [torch.cat([batch["lq"][i], pred[i], batch["hq"][i]], dim=2) for i in range(n)]
    grid = ((torch.cat(rows, dim=1).clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(path)
    return path


def _first(data: ShardPairs, n: int) -> dict:
    from .data import collate

    return collate([data.sample(i) for i in range(n)])
