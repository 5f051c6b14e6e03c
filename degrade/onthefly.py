"""On-the-fly degradation: a ``torch.utils.data.Dataset`` that degrades source images in the data loader.

BasicSR and Real-ESRGAN train this way: the HQ crops are degraded inside the DataLoader
workers, so every epoch sees new degradations and nothing is written to disk.
:class:`OnTheFlyPairs` does it with any pirs recipe, and item ``i`` is exactly record ``i``
of ``degrade build`` with the same source, recipe, seed and options: the same usable
sources (scanned and checked as the build scans them), the same source for index ``i`` (a
seeded permutation per pass over the sources), the same crop, flip and degradation (the
generator seeded from ``(seed, i)``), the same uint8 HQ and LQ arrays that the build
encodes as ``hq.png`` and ``lq.png``, and the same record JSON. It is one code path:
both call :func:`pirs.degrade.build.degrade_sample`.

**Epochs.** Epoch ``e`` folds the epoch into the seed: it is the build with seed
``seed + e * 2**32`` (:func:`epoch_seed`; ``seed`` must be in ``[0, 2**32)``, so no two
(seed, epoch) pairs share a seed). Epoch 0 is the build with ``seed`` itself; the record of
every item names the seed it used, so ``degrade build --seed SEED`` rebuilds any epoch.
An item is a pure function of (sources, recipe, options, epoch, index): the number of
workers, their start method and the order items are asked for change nothing.

Say which epoch it is in one of two ways:

* ``dataset.set_epoch(e)`` before iterating, when the DataLoader starts its workers
  each epoch (the default, ``persistent_workers=False``);
* :class:`EpochSampler` (``sampler.set_epoch(e)``): it yields ``(epoch, i)`` indices from
  the main process, so it works with persistent workers too. ``dataset[(e, i)]`` is item
  ``i`` of epoch ``e`` whatever ``set_epoch`` said.

An item is ``{"key", "index", "epoch", "hq", "lq", "restoration_prompt", "json"}``: ``hq``
and ``lq`` are ``(3, H, W)`` tensors, uint8 by default (``dtype="float32"``: [0, 1]);
``json`` is the record as the build writes it (a string, so the default collate keeps it).
A recipe whose samples end at different LQ sizes (a mixture of scales) cannot be batched
by the default collate; build with ``upsample_lq=True`` or batch size 1.

This is the only module of ``pirs.degrade`` that imports torch.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from .build import (
    INPUTS_FILE,
    STATS_DIR,
    BuildConfig,
    BuildError,
    _ImageCache,
    degrade_sample,
    key_width,
    scan_inputs,
    source_index,
    validate_config,
)
from .limits import InputError, read_json_file
from .recipe import Recipe, load_recipe
from .sources import DEFAULT_MAX_PIXELS, SourceInfo, SourceRef

EPOCH_STRIDE = 2**32
MAX_EPOCH = 2**31 - 1  # seed + epoch * 2**32 stays an int64, as the record's seed field is


def epoch_seed(seed: int, epoch: int) -> int:
    """The build seed of epoch ``epoch``: ``seed + epoch * 2**32`` (``seed`` itself at epoch 0)."""
    if not isinstance(seed, int) or not 0 <= seed < EPOCH_STRIDE:
        raise ValueError(f"seed must be an integer in [0, 2**32) for on-the-fly epochs, got {seed!r}")
    if not isinstance(epoch, int) or not 0 <= epoch <= MAX_EPOCH:
        raise ValueError(f"epoch must be an integer in [0, 2**31), got {epoch!r}")
    return seed + epoch * EPOCH_STRIDE


class OnTheFlyPairs(torch.utils.data.Dataset):
    """Source images degraded with ``pipeline`` when an item is asked for; item ``i`` of epoch 0 is
    record ``i`` of ``degrade build`` with the same arguments (see the module docstring).

    Arguments are ``degrade build``'s: ``input`` (folder, ``.txt`` list, tar shards or URL; None:
    the bundled photos), ``num_samples`` (default: one pass over the usable sources), ``seed``,
    ``crop_size``, ``scale``, ``upsample_lq``, ``pad``, ``flip_prob``, ``max_pixels``; ``exclude``
    is the build's ``--out`` when it lies inside ``input`` (the build never reads its own output).
    The sources are listed and checked once, here. ``cache_bytes`` bounds each worker's decoded
    sources.
    """

    def __init__(self, pipeline: str, input: str | None = None, num_samples: int | None = None, seed: int = 0,
                 crop_size: int = 512, scale: int | None = None, upsample_lq: bool | None = None, pad: bool = False,
                 flip_prob: float = 0.5, max_pixels: int = DEFAULT_MAX_PIXELS, exclude: str | None = None,
                 epoch: int = 0, dtype: str = "uint8", cache_bytes: int = 256 * 1024 * 1024, progress: bool = False,
                 sources: list[SourceInfo] | None = None):
        if dtype not in ("uint8", "float32"):
            raise ValueError(f"dtype must be 'uint8' or 'float32', got {dtype!r}")
        epoch_seed(seed, epoch)
        if num_samples is not None and (not isinstance(num_samples, int) or num_samples < 1):
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
        self.recipe: Recipe = load_recipe(pipeline)
        # out: only what the scan leaves out (the build's own output folder), never written to
        cfg = BuildConfig(pipeline=pipeline, out=exclude, input=input, num_samples=num_samples or 1,  # type: ignore
                          seed=seed, crop_size=crop_size, scale=scale, upsample_lq=upsample_lq, pad=pad,
                          flip_prob=flip_prob, max_pixels=max_pixels, progress=progress)
        try:
            validate_config(cfg, self.recipe)
        except BuildError as e:
            raise ValueError(str(e).replace("--", "")) from None
        if sources is None:
            sources, _, seen = scan_inputs(cfg)
            if not sources:
                raise ValueError(f"no usable source images among {seen} seen in {input or 'the bundled photos'}")
        self.sources = list(sources)
        self.cfg = dataclasses.replace(cfg, num_samples=num_samples or len(self.sources))
        self.epoch = epoch
        self.dtype = dtype
        self.cache_bytes = cache_bytes
        self._state: dict | None = None

    @classmethod
    def from_build(cls, folder: str | Path, epoch: int = 0, dtype: str = "uint8",
                   cache_bytes: int = 256 * 1024 * 1024) -> OnTheFlyPairs:
        """The dataset of a finished or running ``degrade build --out FOLDER`` (a local folder): its arguments
        and usable sources from ``stats/inputs.json``, without scanning the sources again."""
        path = Path(folder) / STATS_DIR / INPUTS_FILE
        try:
            data = read_json_file(path)
            config, rows = data["config"], data["sources"]
            sources = [SourceInfo(SourceRef(p, loc, tuple(m) if m else None), sha, h, w)
                       for p, loc, m, sha, h, w in rows]
        except FileNotFoundError:
            raise ValueError(f"{folder}: no {STATS_DIR}/{INPUTS_FILE}; is it a degrade build --out folder?") from None
        except (InputError, KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path}: not a build's inputs file ({' '.join(str(e).split())[:200]})") from None
        ds = cls(config["pipeline"], input=config.get("input"), num_samples=config["num_samples"],
                 seed=config["seed"], crop_size=config["crop_size"], scale=config.get("scale"),
                 upsample_lq=config.get("upsample_lq"), pad=config.get("pad", False),
                 flip_prob=config.get("flip_prob", 0.5), max_pixels=config.get("max_pixels", DEFAULT_MAX_PIXELS),
                 epoch=epoch, dtype=dtype, cache_bytes=cache_bytes, sources=sources)
        if data.get("recipe_hash") and ds.recipe.hash != data["recipe_hash"]:
            raise ValueError(f"{folder}: recipe {config['pipeline']} changed since the build (hash "
                             f"{ds.recipe.hash[:12]}, the build's {data['recipe_hash'][:12]})")
        return ds

    def __len__(self) -> int:
        return self.cfg.num_samples

    def set_epoch(self, epoch: int) -> None:
        """Items from now on are epoch ``epoch``'s (for workers started after this call)."""
        epoch_seed(self.cfg.seed, epoch)
        self.epoch = epoch

    def seed_of(self, epoch: int | None = None) -> int:
        """The build seed of ``epoch`` (default: the current one)."""
        return epoch_seed(self.cfg.seed, self.epoch if epoch is None else epoch)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_state"] = None  # a worker decodes its own sources
        return state

    def _worker(self) -> dict:
        if self._state is None:
            if torch.utils.data.get_worker_info() is not None:
                import cv2

                cv2.setNumThreads(1)  # one core per worker, as build's pool workers
            self._state = {"cache": _ImageCache(self.cache_bytes), "perm": {}}
        return self._state

    def __getitem__(self, index) -> dict:
        epoch, i = index if isinstance(index, tuple) else (self.epoch, index)
        i = int(i)
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} is out of range for {len(self)} samples")
        seed = epoch_seed(self.cfg.seed, int(epoch))
        state = self._worker()
        perm = state["perm"].get(seed)
        if perm is None:
            if len(state["perm"]) > 4:
                state["perm"].clear()
            perm = state["perm"][seed] = {}
        src = self.sources[source_index(seed, i, len(self.sources), perm)]
        image = state["cache"].get(src, self.cfg.max_pixels)
        key = f"{i:0{key_width(len(self))}d}"
        cfg = dataclasses.replace(self.cfg, seed=seed)
        rec, hq, lq = degrade_sample(cfg, self.recipe, src, image, i, key)
        return {"key": key, "index": i, "epoch": int(epoch), "hq": self._tensor(hq), "lq": self._tensor(lq),
                "restoration_prompt": rec["restoration_prompt"],
                "json": json.dumps(rec, sort_keys=True, separators=(",", ":"))}

    def _tensor(self, img: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
        return t if self.dtype == "uint8" else t.to(torch.float32).div_(255.0)


class EpochSampler(torch.utils.data.Sampler):
    """``(epoch, i)`` indices of one epoch of :class:`OnTheFlyPairs`, for DataLoaders with persistent workers.

    In order, or with ``shuffle`` in a permutation seeded from ``(seed, epoch)``. Call
    ``set_epoch(e)`` before each epoch; the sampler runs in the main process, so workers
    see the new epoch in the indices themselves.
    """

    def __init__(self, dataset: OnTheFlyPairs, shuffle: bool = False, seed: int = 0):
        self.n, self.shuffle, self.seed, self.epoch = len(dataset), shuffle, int(seed), dataset.epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        order = np.random.default_rng([self.seed, 2, self.epoch]).permutation(self.n) if self.shuffle \
            else range(self.n)
        for i in order:
            yield (self.epoch, int(i))
