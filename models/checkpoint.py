"""Checkpoints: safetensors for every tensor, JSON for everything else, never pickle.

``out/checkpoint-NNNNNNN/`` holds ``model.safetensors`` (the trainable tensors),
``optimizer.safetensors`` + ``optimizer.json`` (AdamW moments and step counts; groups'
hyper-parameters), ``ema.safetensors`` when EMA is on, and ``trainer.json`` (method,
config, step, base, data, seed). It is written to a temporary folder and renamed when
complete, so a killed run never leaves a half checkpoint under a final name.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

PREFIX = "checkpoint-"


def checkpoint_dir(out: Path, step: int) -> Path:
    """The folder of the checkpoint at ``step``."""
    return out / f"{PREFIX}{step:07d}"


def latest(path: str | Path) -> Path | None:
    """``path`` itself if it is a checkpoint, else its newest complete checkpoint, else None."""
    p = Path(path)
    if (p / "trainer.json").is_file():
        return p
    done = sorted(d for d in p.glob(f"{PREFIX}*") if d.is_dir() and (d / "trainer.json").is_file())
    return done[-1] if done else None


def read_json(path: Path) -> object:
    """A JSON file of a run folder (possibly a stranger's): bounded in size and depth, one-line errors."""
    from pirs.degrade.limits import load_json

    try:
        return load_json(path.read_bytes(), str(path))
    except OSError as e:
        raise ValueError(f"{path}: not readable ({e.strerror or e})") from None


def read_meta(folder: Path) -> dict:
    """A checkpoint's ``trainer.json``, checked to be one (method, config name, step)."""
    meta = read_json(folder / "trainer.json")
    if not isinstance(meta, dict) or not isinstance(meta.get("method"), str) or \
            not isinstance(meta.get("config_name"), str) or not isinstance(meta.get("step"), int):
        raise ValueError(f"{folder / 'trainer.json'}: not a pirs checkpoint's trainer.json (method, config_name "
                         "and step expected)")
    return meta


def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimizer's state as named tensors plus a JSON-able rest."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"{idx}.{k}"] = v.detach().contiguous().cpu()
            else:
                scalars[f"{idx}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def load_optimizer(opt: torch.optim.Optimizer, folder: Path) -> None:
    """Restore an optimizer saved by :func:`save`."""
    tensors = load_file(folder / "optimizer.safetensors")
    meta = read_json(folder / "optimizer.json")
    if not isinstance(meta, dict) or not isinstance(meta.get("scalars"), dict):
        raise ValueError(f"{folder / 'optimizer.json'}: not a pirs optimizer state")
    state: dict[int, dict] = {}
    for name, t in tensors.items():
        idx, k = name.split(".", 1)
        state.setdefault(int(idx), {})[k] = t
    for name, v in meta["scalars"].items():
        idx, k = name.split(".", 1)
        state.setdefault(int(idx), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save(out: Path, step: int, model_state: dict[str, torch.Tensor], opt: torch.optim.Optimizer,
         trainer: dict, ema: dict[str, torch.Tensor] | None = None, keep: int = 2) -> Path:
    """Write checkpoint ``step`` atomically and keep only the ``keep`` newest."""
    final = checkpoint_dir(out, step)
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.cpu() for k, v in model_state.items()}, tmp / "model.safetensors")
    tensors, meta = optimizer_tensors(opt)
    save_file(tensors, tmp / "optimizer.safetensors")
    (tmp / "optimizer.json").write_text(json.dumps(meta))
    if ema is not None:
        save_file({k: v.cpu() for k, v in ema.items()}, tmp / "ema.safetensors")
    (tmp / "trainer.json").write_text(json.dumps(dict(trainer, step=step), indent=2, sort_keys=True))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in sorted(d for d in out.glob(f"{PREFIX}*") if d.is_dir() and not d.name.endswith(".tmp"))[:-keep]:
        shutil.rmtree(old)
    return final


def weights_sha256(folder: Path) -> str:
    """sha256 of a checkpoint's model.safetensors (named in run.json)."""
    return hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
