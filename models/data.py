"""The shard data loader shared by every method: HQ, LQ, prompts, captions and labels from pirs shards.

Samples are read by random access (an index of member offsets built once per shard with
the shard reader's checks). The order is a seeded permutation per epoch and batch ``b``
holds positions ``b*B .. (b+1)*B - 1`` of the concatenated epochs, so a batch is a pure
function of (shards, seed, batch index): a resumed run sees exactly the batches it would
have seen. Prompt dropout is a data option, drawn from (seed, position) as well.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pirs.degrade.fs import read_range
from pirs.degrade.shards import ShardError, index_samples, parse_record, shard_paths


class DataError(ValueError):
    """Shards that cannot be used for training or prediction; names the file and the reason."""


@dataclass
class DataOptions:
    """How records become model inputs."""

    resolution: int | None = None  # resize HQ and LQ to this square size; None keeps the HQ size
    semantic_field: str = "caption_source"  # falls back to caption_high when empty
    restoration_dropout: float = 0.0  # chance the restoration prompt becomes ""
    semantic_dropout: float = 0.0  # chance the semantic prompt becomes ""
    seed: int = 0


def _to_tensor(data: bytes) -> torch.Tensor:
    from pirs.degrade.sources import decode_png

    img = decode_png(data).astype(np.float32) / 127.5 - 1.0  # the shard reader's decoder, with its pixel limit
    return torch.from_numpy(img).permute(2, 0, 1).contiguous()


TEXT_FIELDS = ("restoration_prompt", "caption_high", "caption_low", "caption_source")


def _check_records(shard, index: dict[str, dict[str, tuple]]) -> dict[str, int]:
    """Every record of a shard through the shard reader's checks, and every image's PNG header against
    the pixel limit, before training starts (a bad sample found at step 10,000 would cost the run); one
    batched ranged read per shard on object storage. Returns how many records leave each text field empty."""
    from pirs.degrade.fs import is_url, local_path, url_to_fs
    from pirs.degrade.sources import DEFAULT_MAX_PIXELS, png_size

    keys = sorted(index)
    images = [(k, m) for k in keys for m in ("hq.png", "lq.png") if m in index[k]]
    spans = [index[k]["json"] for k in keys] + [(index[k][m][0], min(index[k][m][1], 24)) for k, m in images]
    if is_url(shard):
        fs, path = url_to_fs(str(shard))
        datas = fs.cat_ranges([path] * len(spans), [o for o, _ in spans], [o + n for o, n in spans])
    else:
        with open(local_path(shard), "rb") as f:
            datas = []
            for o, n in spans:
                f.seek(o)
                datas.append(f.read(n))
    empty = dict.fromkeys(TEXT_FIELDS, 0)
    for key, data in zip(keys, datas[: len(keys)], strict=True):
        try:
            rec = parse_record(data, f"{shard}: sample {key!r}", key)
        except ShardError as e:
            raise DataError(str(e)) from None
        for f in TEXT_FIELDS:
            empty[f] += not (rec.get(f) or "").strip()
    for (key, m), head in zip(images, datas[len(keys):], strict=True):
        size = png_size(head)
        if size is None:
            raise DataError(f"{shard}: sample {key!r}: {m} is not a PNG")
        if size[0] * size[1] > DEFAULT_MAX_PIXELS:
            raise DataError(f"{shard}: sample {key!r}: {m} is {size[0]}x{size[1]} = {size[0] * size[1]} pixels, "
                            f"over the decompression-bomb limit of {DEFAULT_MAX_PIXELS}")
    return empty


class ShardPairs(torch.utils.data.Dataset):
    """The samples of a pirs shard folder, each ``{"key", "hq", "lq", prompts, captions, labels}``."""

    def __init__(self, folder: str, options: DataOptions | None = None, need_hq: bool = True):
        self.options = options or DataOptions()
        try:
            shards = shard_paths(folder)
        except FileNotFoundError as e:
            raise DataError(str(e)) from None
        if not shards:
            raise DataError(f"{folder}: no shard-*.tar files")
        self.items: list[tuple[Path, str, dict]] = []
        self.folder = str(folder)
        self.shards = list(shards)
        #: records whose text field is empty, per field (restoration prompt and captions)
        self.empty_fields: dict[str, int] = dict.fromkeys(TEXT_FIELDS, 0)
        for shard in shards:
            try:
                index = index_samples(shard)
            except ShardError as e:
                raise DataError(str(e)) from None
            for key in sorted(index):
                members = index[key]
                if "json" not in members or "lq.png" not in members or (need_hq and "hq.png" not in members):
                    raise DataError(f"{shard}: sample {key!r} lacks json, lq.png" + (" or hq.png" if need_hq else ""))
                self.items.append((shard, key, members))
            for f, n in _check_records(shard, index).items():
                self.empty_fields[f] += n
        if not self.items:
            raise DataError(f"{folder}: the shards hold no samples")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        """Sample ``i`` (so a ``torch.utils.data.DataLoader`` takes the dataset itself, with :func:`collate`)."""
        return self.sample(i)

    def fingerprint(self) -> str:
        """What identifies the data: sha256 over every shard's name, size and keys, in order."""
        import hashlib

        from pirs.degrade.fs import is_url, url_to_fs

        h = hashlib.sha256()
        for shard in self.shards:
            if is_url(shard):
                fs, path = url_to_fs(str(shard))
                size = fs.size(path)
            else:
                size = Path(shard).stat().st_size
            h.update(f"{Path(str(shard)).name}\0{size}\0".encode())
        for _, key, _ in self.items:
            h.update(key.encode() + b"\0")
        return h.hexdigest()

    def read(self, shard: Path, span: tuple[int, int]) -> bytes:
        """The bytes of one member (``span``: offset, size) of ``shard``."""
        return read_range(shard, *span)  # a local file, or one ranged request on object storage

    _read = read

    def record(self, i: int) -> dict:
        shard, key, members = self.items[i]
        try:  # the shard reader's record checks: size, depth, schema, key, text caps
            return parse_record(self._read(shard, members["json"]), f"{shard}: sample {key!r}", key)
        except ShardError as e:
            raise DataError(str(e)) from None

    def sample(self, i: int, position: int | None = None) -> dict:
        """Sample ``i``; ``position`` (in the run's order) seeds its prompt dropout."""
        shard, key, members = self.items[i]
        rec = self.record(i)
        opt = self.options
        lq = _to_tensor(self._read(shard, members["lq.png"]))
        hq = _to_tensor(self._read(shard, members["hq.png"])) if "hq.png" in members else None
        size = (opt.resolution, opt.resolution) if opt.resolution else (hq.shape[1:] if hq is not None else None)
        if size is not None:
            if hq is not None and tuple(hq.shape[1:]) != tuple(size):
                hq = F.interpolate(hq[None], size=size, mode="bicubic", align_corners=False)[0].clamp(-1, 1)
            if tuple(lq.shape[1:]) != tuple(size):  # LQ at the HQ size, as the methods take it
                lq = F.interpolate(lq[None], size=size, mode="bicubic", align_corners=False)[0].clamp(-1, 1)
        semantic = rec.get(opt.semantic_field) or rec["caption_high"]
        restoration = rec["restoration_prompt"]
        if position is not None and (opt.restoration_dropout or opt.semantic_dropout):
            rng = random.Random(f"{opt.seed}:{position}")
            if rng.random() < opt.restoration_dropout:
                restoration = ""
            if rng.random() < opt.semantic_dropout:
                semantic = ""
        out = {"key": key, "lq": lq, "restoration_prompt": restoration, "semantic_prompt": semantic,
               "caption_high": rec["caption_high"], "caption_low": rec["caption_low"],
               "labels": list(rec["degradations"])}
        if hq is not None:
            out["hq"] = hq
        return out

    def order(self, epoch: int) -> list[int]:
        """The seeded permutation of epoch ``epoch``."""
        cache = self.__dict__.setdefault("_orders", {})
        if epoch not in cache:
            g = torch.Generator().manual_seed(self.options.seed * 1_000_003 + epoch)
            cache.clear()
            cache[epoch] = torch.randperm(len(self), generator=g).tolist()
        return cache[epoch]

    def batch(self, index: int, batch_size: int) -> dict:
        """Training batch ``index``: positions ``index*B ..`` of the concatenated seeded epochs."""
        samples = []
        for pos in range(index * batch_size, (index + 1) * batch_size):
            epoch, j = divmod(pos, len(self))
            samples.append(self.sample(self.order(epoch)[j], position=pos))
        return collate(samples)


def collate(samples: list[dict]) -> dict:
    """Stack tensors, keep strings and label lists as lists."""
    out: dict = {}
    for k in samples[0]:
        vals = [s[k] for s in samples]
        out[k] = torch.stack(vals) if isinstance(vals[0], torch.Tensor) else vals
    return out
