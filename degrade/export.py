"""``degrade export``: pirs shards as the files other tools read natively.

* ``parquet``: Hugging Face-native Parquet. One top-level typed column per record field
  (``key``, ``recipe``, ``crop_box`` as a list of int32, ...), the images as ``Image``
  features ``hq`` and ``lq`` (PNG bytes, unchanged), the features in each file's
  ``huggingface`` schema metadata (what ``datasets`` writes itself), and a dataset card
  (``README.md`` with ``configs`` and ``dataset_info``) beside ``data/``. Files are
  ``data/{split}-NNNNN-of-NNNNN.parquet``, one per non-empty shard, row groups of 100 rows
  (what ``datasets`` uses for images). The split is ``test`` for a test set (a manifest with
  a ``test_set``, as ``degrade testset`` writes), else ``train``; ``--split`` names another.
* ``basicsr``: BasicSR's paired layout: ``gt/KEY.png``, ``lq/KEY.png`` and ``meta_info.txt``
  (one ``KEY.png (H,W,3)`` line per pair, GT size, as BasicSR's own meta files), what
  ``PairedImageDataset`` reads with ``dataroot_gt``, ``dataroot_lq`` and ``meta_info_file``
  (or without the meta file, by scanning the folders). When pairs of several scales are
  mixed, ``meta_info_x{S}.txt`` lists each scale's pairs (one BasicSR dataset per scale).
* ``folders``: plain paired folders ``hq/KEY.png`` and ``lq/KEY.png``, with
  ``metadata.jsonl``: per pair its file names (``hq_file_name``, ``lq_file_name``, as the
  ``datasets`` image-folder loader reads them) and every record field.

Records without ground truth (ingested real photos: no ``hq.png``) have no column value
(``hq`` is null) in Parquet; in ``basicsr`` they go to ``lq_unpaired/`` and
``meta_info_unpaired.txt`` (BasicSR's ``SingleImageDataset``), never into ``lq/``, so
``gt/`` and ``lq/`` hold exactly the pairs; in ``folders`` they have an LQ and
``hq_file_name: null``.

Shards are read only through the shard reader (:func:`.shards.iter_records`: member
checks, the manifest's sha256 and counts, the record schema); each PNG's header is checked
against its record's size and the pixel limit. Image bytes are copied, never re-encoded.
``export.json``, written last, says what the folder holds; a re-run with the same
arguments redoes the export, anything else in ``--out`` needs ``--overwrite``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from . import schema
from .atomic import write_bytes, write_json, write_text

FORMATS = ("parquet", "basicsr", "folders")
ROW_GROUP = 100  # rows per Parquet row group: what `datasets` writes for image data sets
MARKER = "export.json"
# Everything an export may write at the top of --out (cleared before an export into the same folder).
OWNED = ("data", "gt", "lq", "hq", "lq_unpaired", "metadata.jsonl", "meta_info.txt", "meta_info_unpaired.txt",
         "README.md", MARKER)


class ExportError(ValueError):
    """An export that cannot start or finish; the message says why."""


@dataclass
class ExportResult:
    """What an export wrote."""

    out: Path
    format: str
    split: str
    records: int
    paired: int
    unpaired: int
    files: list[str] = field(default_factory=list)  # the data files (Parquet) or meta files (basicsr, folders)
    scales: list[int] = field(default_factory=list)


# ---------------------------------------------------------------- reading


def _records(paths: list, total: int | None, progress: bool):
    """``(shard, key, record, hq bytes or None, lq bytes)`` of every sample of the shards ``paths``, checked."""
    from tqdm import tqdm

    from .shards import iter_records
    from .sources import DEFAULT_MAX_PIXELS, png_size

    bar = tqdm(total=total, desc="degrade export", unit="sample", disable=not progress, dynamic_ncols=True,
               file=sys.stderr)
    seen: set[str] = set()
    try:
        for shard in paths:
            for key, rec, members in iter_records(shard):
                where = f"{shard}: sample {key!r}"
                if key in seen:
                    raise ExportError(f"{where}: key {key!r} is used again (it is in an earlier shard too); "
                                      "exported files are named by key")
                seen.add(key)
                if "lq.png" not in members:
                    raise ExportError(f"{where}: no lq.png member")
                hq = members.get("hq.png")
                if (hq is None) != (not rec["hq_size"]):
                    raise ExportError(f"{where}: " + ("no hq.png member, but its record has an hq_size" if hq is None
                                                      else "an hq.png member, but its record says there is no HQ"))
                for name, data, size in (("hq.png", hq, rec["hq_size"]), ("lq.png", members["lq.png"],
                                                                         rec["lq_size"])):
                    if data is None:
                        continue
                    wh = png_size(data)
                    if wh is None:
                        raise ExportError(f"{where}: {name} is not a PNG")
                    if wh[0] * wh[1] > DEFAULT_MAX_PIXELS:
                        raise ExportError(f"{where}: {name} is {wh[0]}x{wh[1]}, over the decompression-bomb limit of "
                                          f"{DEFAULT_MAX_PIXELS} pixels")
                    if [wh[1], wh[0]] != list(size):
                        raise ExportError(f"{where}: {name} is {wh[0]}x{wh[1]} but its record says "
                                          f"{size[1] if len(size) == 2 else '?'}x{size[0] if size else '?'}")
                yield shard, key, rec, hq, members["lq.png"]
                bar.update(1)
    finally:
        bar.close()


def default_split(shards: str) -> str:
    """``test`` for a test set (its manifest has a ``test_set``), else ``train``."""
    from .shards import ShardError, read_manifest

    try:
        m = read_manifest(shards) if not str(shards).endswith(".tar") else None
    except ShardError:
        m = None
    return "test" if m and m.get("test_set") else "train"


# ---------------------------------------------------------------- Parquet


def parquet_features():
    """The ``datasets.Features`` of an exported Parquet file: ``key``, ``hq``, ``lq``, then every other field."""
    import datasets

    def one(typ):
        return datasets.List(datasets.Value(typ[0])) if isinstance(typ, list) else datasets.Value(typ)

    cols = {"key": datasets.Value("string"), "hq": datasets.Image(), "lq": datasets.Image()}
    cols.update({n: one(t) for n, (t, _) in schema.FIELDS.items() if n != "key"})
    return datasets.Features(cols)


def parquet_features_yaml() -> list[dict]:
    """The same features for a dataset card's ``dataset_info``."""
    def one(name, typ) -> dict:
        return {"name": name, "list": typ[0]} if isinstance(typ, list) else {"name": name, "dtype": typ}

    return ([{"name": "key", "dtype": "string"}, {"name": "hq", "dtype": "image"}, {"name": "lq", "dtype": "image"}]
            + [one(n, t) for n, (t, _) in schema.FIELDS.items() if n != "key"])


def _write_parquet(rows, out: Path, split: str) -> tuple[list[str], int, int, int]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrow_schema = parquet_features().arrow_schema
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    parts: list[tuple[Path, int]] = []
    writer, current, buf = None, None, []
    paired = unpaired = 0
    nbytes = [0]  # Arrow bytes of the split, the card's num_bytes

    def flush():
        if buf:
            table = pa.Table.from_pylist(buf, schema=arrow_schema)
            nbytes[0] += table.nbytes
            writer.write_table(table, row_group_size=ROW_GROUP)
            buf.clear()

    try:
        for shard, key, rec, hq, lq in rows:
            if shard != current:
                if writer is not None:
                    flush()
                    writer.close()
                current = shard
                tmp = data / f".{split}-{len(parts):05d}.parquet.{os.getpid()}.tmp"
                writer = pq.ParquetWriter(tmp, arrow_schema)
                parts.append((tmp, 0))
            row = {"key": key, "hq": None if hq is None else {"bytes": hq, "path": None},
                   "lq": {"bytes": lq, "path": None}}
            row.update({k: v for k, v in rec.items() if k != "key"})
            buf.append(row)
            parts[-1] = (parts[-1][0], parts[-1][1] + 1)
            paired += hq is not None
            unpaired += hq is None
            if len(buf) >= ROW_GROUP:
                flush()
        if writer is not None:
            flush()
            writer.close()
            writer = None
    except BaseException:
        if writer is not None:
            writer.close()
        for tmp, _ in parts:
            tmp.unlink(missing_ok=True)
        raise
    names = []
    for j, (tmp, _) in enumerate(parts):
        name = f"data/{split}-{j:05d}-of-{len(parts):05d}.parquet"
        os.replace(tmp, out / name)
        names.append(name)
    return names, paired, unpaired, nbytes[0]


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def parquet_card(out: Path, split: str, digests: dict[str, str], n: int, nbytes: int, source: dict) -> str:
    """The dataset card (README.md) of an exported Parquet folder (``digests``: sha256 of each data file)."""
    import yaml

    from .card import _size_category, config_name

    digest = hashlib.sha256("\n".join(digests[f] for f in sorted(digests)).encode()).hexdigest()
    name = config_name(digest)
    header = {
        "configs": [{"config_name": name, "default": True,
                     "data_files": [{"split": split, "path": f"data/{split}-*.parquet"}]}],
        "dataset_info": {"config_name": name, "features": parquet_features_yaml(),
                         "splits": [{"name": split, "num_bytes": nbytes, "num_examples": n}]},
        "pretty_name": "pirs degradation pairs",
        "tags": ["image-restoration", "super-resolution", "pirs"],
        "size_categories": [_size_category(n)],
    }
    rows = "\n".join(f"| `{f}` | {_type_name(t)} | {d} |" for f, (t, d) in schema.FIELDS.items())
    what = (f"test set `{source['test_set']}`" if source.get("test_set") else
            f"recipe `{source['recipe']}`" if source.get("recipe") else "pirs shards")
    folder = out.as_posix()
    return f"""---
{yaml.safe_dump(header, sort_keys=False).strip()}
---

# pirs pairs: {source.get('test_set') or source.get('recipe') or out.name}

HQ/LQ image pairs exported by **pirs** `degrade export --format parquet` from
`{source['path']}` ({what}; {n} records, split `{split}`).
Source shards' content sha256: `{source.get('content_sha256') or 'unknown (no manifest)'}`.

## Load it

```python
import datasets
ds = datasets.load_dataset("{folder}")   # features and split from this card
ds = datasets.load_dataset("parquet", data_files={{"{split}": "{folder}/data/{split}-*.parquet"}})
row = ds["{split}"][0]
row["hq"], row["lq"], row["restoration_prompt"]   # PIL images (hq is None without ground truth)
```

## Columns

`hq` and `lq` are images (the shards' PNG bytes, unchanged); `hq` is null for records
without ground truth. Every other column is one field of the pirs record; `ops` is a
JSON-encoded list of the applied operations with all their parameters
(`json.loads(row["ops"])`), so `degrade replay` on the source shards rebuilds each LQ.

| column | type | meaning |
| --- | --- | --- |
| `hq` | image | HQ image (PNG) |
| `lq` | image | LQ image (PNG) |
{rows}
"""


def _type_name(t) -> str:
    return f"list of {t[0]}" if isinstance(t, list) else t


# ---------------------------------------------------------------- BasicSR and plain folders


def _scale_of(rec: dict) -> int | None:
    """The LQ-to-GT scale BasicSR sees (1 for an LQ resized back to the HQ size); None if not an integer."""
    (hh, hw), (lh, lw) = rec["hq_size"], rec["lq_size"]
    if lh < 1 or lw < 1 or hh % lh or hw % lw or hh // lh != hw // lw:
        return None
    return hh // lh


def _write_basicsr(rows, out: Path) -> tuple[list[str], int, int, list[int]]:
    pairs: list[tuple[str, list[int], int | None]] = []
    single: list[tuple[str, list[int]]] = []
    for _, key, rec, hq, lq in rows:
        name = f"{key}.png"
        if hq is None:
            write_bytes(out / "lq_unpaired" / name, lq)
            single.append((name, rec["lq_size"]))
            continue
        write_bytes(out / "gt" / name, hq)
        write_bytes(out / "lq" / name, lq)
        pairs.append((name, rec["hq_size"], _scale_of(rec)))

    def lines(items) -> str:
        return "".join(f"{n} ({s[0]},{s[1]},3)\n" for n, s, *_ in items)

    files = []
    if pairs:
        write_text(out / "meta_info.txt", lines(pairs))
        files.append("meta_info.txt")
    scales = sorted({s for *_, s in pairs if s is not None})
    if len(scales) > 1 or any(s is None for *_, s in pairs):
        for s in scales:
            write_text(out / f"meta_info_x{s}.txt", lines(p for p in pairs if p[2] == s))
            files.append(f"meta_info_x{s}.txt")
    if single:
        write_text(out / "meta_info_unpaired.txt", lines(single))
        files.append("meta_info_unpaired.txt")
    write_text(out / "README.md", _basicsr_readme(out, len(pairs), len(single), scales, files))
    files.append("README.md")
    return files, len(pairs), len(single), scales


def _basicsr_readme(out: Path, paired: int, unpaired: int, scales: list[int], files: list[str]) -> str:
    root = out.resolve().as_posix()
    scale = scales[0] if len(scales) == 1 else "S"
    meta = "meta_info.txt" if len(scales) == 1 else "meta_info_xS.txt"
    text = [f"# BasicSR paired data ({paired} pairs" + (f", {unpaired} LQ without GT" if unpaired else "") + ")",
            "", "Exported by pirs `degrade export --format basicsr`. Options for BasicSR's `PairedImageDataset`:", "",
            "```yaml", "datasets:", "  train:", "    name: pirs", "    type: PairedImageDataset",
            f"    dataroot_gt: {root}/gt", f"    dataroot_lq: {root}/lq", f"    meta_info_file: {root}/{meta}",
            "    io_backend:", "      type: disk", f"    scale: {scale}", "```", ""]
    if len(scales) > 1:
        text += [f"The pairs have several scales ({', '.join(f'x{s}' for s in scales)}): use one dataset per "
                 "scale, each with its `meta_info_xS.txt`.", ""]
    if unpaired:
        text += ["LQ images without ground truth are in `lq_unpaired/`, listed in `meta_info_unpaired.txt`: "
                 f"BasicSR's `SingleImageDataset` reads them (`dataroot_lq: {root}/lq_unpaired`, "
                 f"`meta_info_file: {root}/meta_info_unpaired.txt`).", ""]
    return "\n".join(text)


def _write_folders(rows, out: Path) -> tuple[list[str], int, int]:
    paired = unpaired = 0
    final = out / "metadata.jsonl"
    tmp = out / f".metadata.jsonl.{os.getpid()}.tmp"
    try:
        with open(tmp, "w") as f:  # streamed: one line per record
            for _, key, rec, hq, lq in rows:
                name = f"{key}.png"
                write_bytes(out / "lq" / name, lq)
                if hq is not None:
                    write_bytes(out / "hq" / name, hq)
                paired += hq is not None
                unpaired += hq is None
                row = {"hq_file_name": f"hq/{name}" if hq is not None else None, "lq_file_name": f"lq/{name}", **rec}
                f.write(json.dumps(row, separators=(",", ":")) + "\n")
        if not paired:  # no pairs at all: no hq column (a column of nulls would be typed null, not image)
            with open(tmp) as src, open(final, "w") as dst:
                for line in src:
                    row = json.loads(line)
                    row.pop("hq_file_name")
                    dst.write(json.dumps(row, separators=(",", ":")) + "\n")
        else:
            os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return ["metadata.jsonl"], paired, unpaired


# ---------------------------------------------------------------- the export


def _prepare(out: Path, args: dict, overwrite: bool) -> None:
    """Make ``out`` ready: new or empty, or an earlier export (same arguments, or ``overwrite``)."""
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out} is a file, not a folder")
    out.mkdir(parents=True, exist_ok=True)
    names = sorted(p.name for p in out.iterdir() if p.name != ".pirs-lock")
    if not names:
        return
    marker = out / MARKER
    if not marker.is_file():
        raise ExportError(f"--out {out} holds other files ({', '.join(names[:5])}{', ...' if len(names) > 5 else ''}); "
                          "use a new or empty folder")
    from .limits import InputError, read_json_file

    try:
        prev = read_json_file(marker)
    except (InputError, OSError):
        prev = None
    same = isinstance(prev, dict) and prev.get("args") == args
    if not same and not overwrite:
        raise ExportError(f"--out {out} holds another export (other shards, format or split); use a new folder, "
                          "or --overwrite to replace it")
    for name in OWNED + tuple(p.name for p in out.glob("meta_info_x*.txt")):
        p = out / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()


def export(shards: str, out: str | os.PathLike, fmt: str, split: str | None = None, overwrite: bool = False,
           progress: bool = True) -> ExportResult:
    """Export the shards in ``shards`` (a folder, a ``.tar`` or a URL) to ``out`` (a local folder) as ``fmt``."""
    from .fs import is_url
    from .lock import LockHeld, output_lock
    from .shards import ShardError, read_manifest, shard_paths

    if fmt not in FORMATS:
        raise ExportError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if is_url(out):
        raise ExportError(f"--out {out}: exports are written to a local folder (copy it to object storage after)")
    if split is not None and not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", split):
        raise ExportError(f"--split must be a name of letters, digits and '_' (e.g. train, validation, test), "
                          f"got {split!r}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out} is a file, not a folder")
    paths = shard_paths(shards)  # before anything is written: a missing folder is one line, --out untouched
    if not paths:
        raise ExportError(f"{shards}: no shard-*.tar files")
    try:
        manifest = read_manifest(shards) if not str(shards).endswith(".tar") else None
    except (ShardError, NotADirectoryError):
        manifest = None
    split = split or default_split(shards)
    source = {"path": str(shards), "content_sha256": (manifest or {}).get("content_sha256"),
              "recipe": ((manifest or {}).get("recipe") or {}).get("name"),
              "test_set": ((manifest or {}).get("test_set") or {}).get("id")}
    args = {"format": fmt, "split": split, "source": source}
    if Path(str(shards)).resolve() == out.resolve() or out.resolve() in Path(str(shards)).resolve().parents:
        raise ExportError(f"--out {out} is the shard folder or holds it; export to another folder")
    try:
        with output_lock(out, "degrade export"):
            _prepare(out, args, overwrite)
            write_json(out / MARKER, {"complete": False, "args": args})
            rows = _records(paths, (manifest or {}).get("samples"), progress)
            scales: list[int] = []
            digests: dict[str, str] = {}
            if fmt == "parquet":
                files, paired, unpaired, nbytes = _write_parquet(rows, out, split)
                if not files:
                    raise ExportError(f"{shards}: the shards hold no samples")
                digests = {f: _digest(out / f) for f in files}
                write_text(out / "README.md", parquet_card(out, split, digests, paired + unpaired, nbytes, source))
                digests["README.md"] = _digest(out / "README.md")
            elif fmt == "basicsr":
                files, paired, unpaired, scales = _write_basicsr(rows, out)
            else:
                files, paired, unpaired = _write_folders(rows, out)
            digests.update({f: _digest(out / f) for f in files if f not in digests})
            write_json(out / MARKER, {"complete": True, "args": args, "records": paired + unpaired,
                                      "paired": paired, "unpaired": unpaired, "scales": scales,
                                      "files": digests})
    except LockHeld as e:
        raise ExportError(str(e)) from None
    return ExportResult(out=out, format=fmt, split=split, records=paired + unpaired, paired=paired,
                        unpaired=unpaired, files=files, scales=scales)


# ---------------------------------------------------------------- CLI


def add_parser(sub) -> None:
    """The ``degrade export`` sub-command."""
    from .fs import add_storage_args

    p = sub.add_parser("export", help="write shards as Hugging Face Parquet, BasicSR folders or plain paired folders",
                       description="Write a shard folder as Hugging Face-native Parquet (typed columns, Image "
                                   "features, a dataset card; split 'test' for a test set, else 'train'), as "
                                   "BasicSR's paired layout (gt/, lq/, meta_info.txt), or as plain paired folders "
                                   "(hq/, lq/, metadata.jsonl). Image bytes are copied, never re-encoded.")
    p.add_argument("shards", help="shard folder or .tar file (a local path or URL)")
    p.add_argument("--format", required=True, choices=FORMATS, help="parquet, basicsr or folders")
    p.add_argument("--out", required=True, help="output folder (local; new, empty, or an earlier export)")
    p.add_argument("--split", default=None,
                   help="split name of the Parquet files (default: test for a test set, else train)")
    p.add_argument("--overwrite", action="store_true", help="replace another export already in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_storage_args(p)


def cmd_export(a) -> int:
    """Run ``degrade export``."""
    from .fs import parse_storage_options, set_storage_options

    set_storage_options(parse_storage_options(a.storage_options))
    r = export(a.shards, a.out, a.format, split=a.split, overwrite=a.overwrite, progress=not a.quiet)
    out = r.out.as_posix().rstrip("/")
    what = f"{r.records} records ({r.paired} pairs" + (f", {r.unpaired} without HQ" if r.unpaired else "") + ")"
    if r.format == "parquet":
        print(f"wrote {what} to {len(r.files)} Parquet file(s) in {out}/data/ (split {r.split}) with a dataset card")
        print(f"load      python -c \"import datasets; print(datasets.load_dataset('{out}'))\"")
    elif r.format == "basicsr":
        print(f"wrote {what} to {out}/gt/, {out}/lq/ and {out}/meta_info.txt"
              + (f" ({len(r.scales)} scales: one meta_info_xS.txt each)" if len(r.scales) > 1 else "")
              + (f"; LQ without HQ in {out}/lq_unpaired/" if r.unpaired else ""))
        print(f"basicsr   dataroot_gt: {out}/gt  dataroot_lq: {out}/lq  meta_info_file: {out}/meta_info.txt"
              f"  (options in {out}/README.md)")
    else:
        print(f"wrote {what} to {out}/hq/, {out}/lq/ and {out}/metadata.jsonl")
        print(f"load      python -c \"import datasets; print(datasets.load_dataset('imagefolder', data_dir='{out}'))\"")
    return 0 if r.records else 1
