"""``degrade ingest``: a paired data set in its authors' layout -> pirs shards, resumably.

Pairs are found by the layout (:mod:`pirs.degrade.layouts`), sorted, and numbered; shard
``s`` holds pairs ``s*shard_size ..`` and is a pure function of its index, the pairs'
bytes and the arguments, so it is built in any order on any number of processes and a
stopped run resumes, exactly as ``degrade build`` does (same markers, manifest, card).
Every pairing problem (an LQ without its HQ, an HQ without its LQ, duplicate names,
sizes that do not match the layout's scale, files that do not decode) is recorded in
``rejects.jsonl`` with the file and the reason and counted in the manifest.

``then`` applies a further degradation recipe (scale 1) to the ingested LQ, seeded from
``(seed, index)``: Snow100K's snowy images plus Gaussian noise make Diff-Restorer's
Snow+Noise test set. Its ops are stored, and ``degrade replay --source DIR`` rebuilds
the LQ from the original LQ file.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np

from . import schema
from .atomic import one_line
from .build import (
    PIRS_VERSION,
    STATS_DIR,
    BuildError,
    _bar,
    _by_reason,
    _marker_name,
    _pending_shards,
    content_sha256,
    encode_png,
    key_width,
    sample_rng,
    shard_name,
)
from .fs import Folder, absolute, set_storage_options
from .labels import prompt_for
from .layouts import Layout, Pair, get_layout
from .limits import InputError, load_json
from .lock import LockHeld, output_lock
from .ops import geometry
from .pipeline import degrade
from .recipe import Recipe, load_recipe
from .sources import DEFAULT_MAX_PIXELS, BadInput, decode

INPUTS_FILE = "ingest.json"


@dataclass
class IngestConfig:
    """Arguments of one ingest; everything that changes the output goes into its fingerprint."""

    layout: str
    input: str
    out: str
    scale: int | None = None
    crop_size: int | None = None
    then: str | None = None
    labels: list[str] | None = None
    match: list[str] | None = None
    seed: int = 0
    limit: int | None = None
    shard_size: int = 1000
    workers: int = 1
    max_pixels: int = DEFAULT_MAX_PIXELS
    strict: bool = False
    overwrite: bool = False
    progress: bool = True
    executor: str = "local"  # local | ray (see pirs.degrade.executors); the shards are the same
    ray_address: str | None = None
    max_retries: int = 2
    storage_options: dict | None = None  # fsspec options for a URL --out; never written out
    test_set: dict | None = None  # set by `degrade testset`: the manifest's test_set field (id, version, ...)


@dataclass
class IngestResult:
    """What an ingest did."""

    out: Path | str  # a URL string for object storage
    pairs_found: int
    samples: int
    shards: int
    shards_built: int
    problems: int
    seconds: float
    manifest: dict = field(repr=False, default_factory=dict)


def validate_config(cfg: IngestConfig) -> tuple[Layout, Recipe | None]:
    """Check the arguments before any work starts; returns the layout and the ``then`` recipe."""
    try:
        layout = get_layout(cfg.layout)
    except KeyError as e:
        raise BuildError(e.args[0]) from None
    if not Path(cfg.input).is_dir():
        raise BuildError(f"{cfg.input}: no such folder (the root of the {layout.name} data set: {layout.description}; "
                         f"obtain it from {layout.source})")
    if cfg.shard_size < 1 or cfg.workers < 1:
        raise BuildError("--shard-size and --workers must be at least 1")
    scale = cfg.scale or layout.scale
    if scale < 1:
        raise BuildError(f"--scale must be a positive integer, got {scale}")
    if cfg.crop_size is not None and (cfg.crop_size < 8 or cfg.crop_size % scale):
        raise BuildError(f"--crop-size must be at least 8 and a multiple of the scale {scale}, got {cfg.crop_size}")
    if cfg.limit is not None and cfg.limit < 1:
        raise BuildError(f"--limit must be at least 1, got {cfg.limit}")
    recipe = None
    if cfg.then:
        recipe = load_recipe(cfg.then)
        if recipe.scales() != {1}:
            raise BuildError(f"--then {cfg.then}: a recipe applied on top of ingested LQ must keep the size "
                             f"(scale 1), this one has scales {sorted(recipe.scales())}")
    return layout, recipe


def find_pairs(cfg: IngestConfig, layout: Layout) -> tuple[list[Pair], list[dict]]:
    """The layout's pairs in a fixed order, and its pairing problems."""
    root = Path(cfg.input)
    pairs, problems = layout.find(root, cfg.scale or layout.scale)
    if cfg.match:  # only the part of the data set asked for (e.g. its test split)
        pairs = [p for p in pairs if any(fnmatch.fnmatchcase(p.lq, pat) for pat in cfg.match)]
        problems = [p for p in problems if p["path"] == "." or any(fnmatch.fnmatchcase(p["path"], pat)
                                                                  for pat in cfg.match)]
    pairs = sorted(pairs, key=lambda p: (p.lq, p.hq or ""))
    if cfg.limit is not None:
        pairs = pairs[: cfg.limit]
    for p in problems:
        p.setdefault("stage", "pair")
    return pairs, sorted(problems, key=lambda r: r["path"])


def fingerprint(cfg: IngestConfig, recipe: Recipe | None, pairs: list[Pair]) -> str:
    """sha256 over everything that decides the shards' bytes (file sizes stand in for contents here;
    each record carries the files' sha256)."""
    root = Path(cfg.input)

    def size(rel: str | None) -> int:
        return (root / rel).stat().st_size if rel else -1

    spec = {"pirs": PIRS_VERSION, "schema": schema.SCHEMA_VERSION, "layout": cfg.layout, "scale": cfg.scale,
            "crop_size": cfg.crop_size, "then": recipe.hash if recipe else None, "labels": cfg.labels,
            "match": cfg.match,
            "seed": cfg.seed, "shard_size": cfg.shard_size, "max_pixels": cfg.max_pixels,
            "pairs": [[p.lq, size(p.lq), p.hq, size(p.hq)] for p in pairs]}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


# ---------------------------------------------------------------- one sample


def _read(root: Path, rel: str, max_pixels: int) -> tuple[np.ndarray, str]:
    data = (root / rel).read_bytes()
    return decode(data, max_pixels), hashlib.sha256(data).hexdigest()


def align(lq: np.ndarray, hq: np.ndarray | None, scale: int, where: str) -> tuple[np.ndarray | None, bool, int]:
    """Check an ingested pair's sizes against the scale: returns ``(hq, lq_upsampled, scale)``.

    Same size: registered pair (``lq_upsampled`` when ``scale`` > 1, as RealSR V3). HQ =
    scale x LQ, or up to ``scale - 1`` pixels more (an HQ not cut to a multiple): the HQ
    is cut to exactly scale x LQ at its top left. Anything else is a size mismatch.
    """
    if hq is None:  # unpaired: outputs are expected at LQ size x scale (--scale, else the layout's)
        return None, False, scale
    (lh, lw), (hh, hw) = lq.shape[:2], hq.shape[:2]
    if (lh, lw) == (hh, hw):
        return hq, scale > 1, scale
    if scale > 1 and 0 <= hh - lh * scale < scale and 0 <= hw - lw * scale < scale:
        return np.ascontiguousarray(hq[: lh * scale, : lw * scale]), False, scale
    raise BadInput(f"size mismatch: LQ {lw}x{lh}, HQ {hw}x{hh}; expected the same size or HQ = {scale} x LQ "
                   f"({where})")


def make_sample(cfg: IngestConfig, layout: Layout, recipe: Recipe | None, pair: Pair, index: int,
                key: str) -> dict:
    """Ingest one pair: returns its tar members. Pure in (the two files, arguments, seed, index)."""
    root = Path(cfg.input)
    scale = cfg.scale or layout.scale
    lq, lq_sha = _read(root, pair.lq, cfg.max_pixels)
    hq, hq_sha = _read(root, pair.hq, cfg.max_pixels) if pair.hq else (None, "")
    hq, upsampled, eff_scale = align(lq, hq, scale, pair.lq)
    source_size = list(hq.shape[:2] if hq is not None else lq.shape[:2])
    rng = sample_rng(cfg.seed, index)
    box = [0, 0, int(source_size[0]), int(source_size[1])]
    if cfg.crop_size is not None:
        f = 1 if (hq is None or upsampled) else eff_scale
        big = hq if hq is not None else lq
        if min(big.shape[:2]) < cfg.crop_size:
            raise BadInput(f"image {big.shape[1]}x{big.shape[0]} is smaller than the crop {cfg.crop_size}")
        grid = (big.shape[0] // f, big.shape[1] // f)
        t, left, _, _ = geometry.sample_crop(rng, grid[0], grid[1], cfg.crop_size // f)
        box = [t * f, left * f, cfg.crop_size, cfg.crop_size]
        if hq is not None:
            hq = np.ascontiguousarray(hq[box[0]: box[0] + box[2], box[1]: box[1] + box[3]])
        lq = np.ascontiguousarray(lq[t: t + cfg.crop_size // f, left: left + cfg.crop_size // f])
    labels = list(cfg.labels if cfg.labels is not None else layout.labels)
    prompt = prompt_for(labels) if labels else ""
    ops: list[dict] = []
    branch = layout.name
    if recipe is not None:
        out = degrade(lq, recipe, rng, scale=1, upsample=False)
        lq, ops, branch = out.lq, out.ops, out.branch
        labels += [lab for lab in out.labels if lab not in labels]
        prompt = "; ".join(t for t in (prompt, out.prompt) if t)
    rec = schema.empty_record()
    rec.update({
        "key": key, "source_path": pair.hq or "", "source_sha256": hq_sha, "dataset": layout.name,
        "lq_source_path": pair.lq, "lq_source_sha256": lq_sha, "source_size": [int(v) for v in source_size],
        "pad": [0, 0, 0, 0], "crop_box": [int(b) for b in box], "flip": False,
        "hq_size": [int(v) for v in hq.shape[:2]] if hq is not None else [],
        "lq_size": [int(lq.shape[0]), int(lq.shape[1])], "scale": int(eff_scale), "lq_upsampled": bool(upsampled),
        "recipe": f"ingest-{layout.name}" + (f"+{recipe.name}" if recipe else ""),
        "recipe_version": recipe.version if recipe else "", "recipe_hash": recipe.hash if recipe else "",
        "branch": branch, "seed": int(cfg.seed), "index": int(index),
        "ops": json.dumps(ops, sort_keys=True, separators=(",", ":")),
        "restoration_prompt": prompt or "Remove all degradation", "degradations": labels,
    })
    schema.validate(rec, key)
    members = {"lq.png": encode_png(lq), "json": json.dumps(rec, sort_keys=True, separators=(",", ":")).encode()}
    if hq is not None:
        members["hq.png"] = encode_png(hq)
    return members


def ingested_lq(rec: dict, source: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """The ingested LQ of a record before any ``then`` ops, re-read from the data set at ``source``."""
    path = Path(source) / rec["lq_source_path"]
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != rec["lq_source_sha256"]:
        raise BadInput(f"{path}: not the file this record was made from (sha256 differs)")
    lq = decode(data, max_pixels)
    t, left, h, w = rec["crop_box"]
    f = 1 if (not rec["hq_size"] or rec["lq_upsampled"]) else rec["scale"]
    return np.ascontiguousarray(lq[t // f: (t + h) // f, left // f: (left + w) // f])


# ---------------------------------------------------------------- one shard

_STATE: dict = {}


def _set_state(cfg: IngestConfig, pairs: list[Pair], fp: str) -> None:
    layout, recipe = validate_config(cfg)
    _STATE.update(cfg=cfg, layout=layout, recipe=recipe, pairs=pairs, fingerprint=fp)


def _load_state(out: str, fp: str, storage_options: dict | None = None) -> None:
    if _STATE.get("fingerprint") == fp and _STATE.get("out_key") == out:  # Ray workers serve many runs
        return
    set_storage_options(storage_options)
    data = json.loads(Folder(out).read_text(f"{STATS_DIR}/{INPUTS_FILE}"))
    if data["fingerprint"] != fp:
        raise BuildError(f"{out}: {INPUTS_FILE} belongs to another run")
    cfg = IngestConfig(**{**data["config"], "out": out}, storage_options=storage_options)
    _set_state(cfg, [Pair(lq, hq) for lq, hq in data["pairs"]], fp)
    _STATE["out_key"] = out


def shard_task(state: tuple, s: int) -> dict:
    """The executor's task: shard ``s`` of the ingest ``state = (out, fingerprint, storage_options)``."""
    _load_state(*state)
    return ingest_shard(s)


def ingest_shard(s: int) -> dict:
    """Write shard ``s`` (state from :func:`_set_state`); returns its stats."""
    cfg: IngestConfig = _STATE["cfg"]
    pairs: list[Pair] = _STATE["pairs"]
    out = Folder(cfg.out)
    t0 = time.perf_counter()
    lo, hi = s * cfg.shard_size, min((s + 1) * cfg.shard_size, len(pairs))
    width = key_width(len(pairs))
    rejects, count = [], 0
    with out.shard_writer(shard_name(s)) as w:
        for i in range(lo, hi):
            key = f"{i:0{width}d}"
            try:
                members = make_sample(cfg, _STATE["layout"], _STATE["recipe"], pairs[i], i, key)
            except Exception as e:  # a bad pair is recorded and skipped, never fatal to the shard
                reason = one_line(e) if isinstance(e, BadInput | OSError | ValueError) else \
                    f"{type(e).__name__}: {one_line(e)}"
                rejects.append({"key": key, "path": pairs[i].lq, "hq": pairs[i].hq, "stage": "ingest",
                                "reason": reason})
            else:
                w.write(key, members)
                count += 1
            tick = _STATE.get("tick")  # the progress bar, when this process runs the ingest itself
            if tick is not None:
                tick()
    nbytes, sha = out.digest(shard_name(s))
    stats = {"shard": shard_name(s), "index": s, "samples": count, "bytes": nbytes, "sha256": sha,
             "first": lo, "last": hi - 1, "rejects": rejects, "rejects_by_reason": _by_reason(rejects),
             "seconds": round(time.perf_counter() - t0, 3), "fingerprint": _STATE["fingerprint"]}
    out.write_json(f"{STATS_DIR}/{shard_name(s)[:-4]}.json", stats)
    return stats


# ---------------------------------------------------------------- the run


def ingest(cfg: IngestConfig) -> IngestResult:
    """Run (or resume) an ingest. Raises :class:`BuildError` if it cannot start."""
    t0 = time.perf_counter()
    layout, recipe = validate_config(cfg)
    pairs, problems = find_pairs(cfg, layout)
    if not pairs:
        first = f"; first problem: {problems[0]['path']}: {problems[0]['reason']}" if problems else ""
        raise BuildError(f"{cfg.input}: no {layout.name} pairs found ({layout.description}; obtain it from "
                         f"{layout.source}){first}")
    fp = fingerprint(cfg, recipe, pairs)
    set_storage_options(cfg.storage_options)
    try:
        out = Folder(cfg.out, cfg.storage_options)
    except ValueError as e:
        raise BuildError(str(e)) from None
    try:
        out.mkdir()
    except ValueError as e:
        raise BuildError(str(e)) from None
    try:
        with output_lock(out, "degrade ingest", cfg.storage_options):
            return _ingest_locked(cfg, layout, recipe, pairs, problems, fp, out, t0)
    except LockHeld as e:
        raise BuildError(str(e)) from None


def _ingest_locked(cfg: IngestConfig, layout: Layout, recipe, pairs: list, problems: list, fp: str, out: Folder,
                   t0: float) -> IngestResult:
    """The ingest once this process holds the lock on ``--out`` (one writer per output)."""
    prev = None
    if out.exists("build.json"):
        try:
            prev = load_json(out.read_text("build.json"), "build.json").get("fingerprint")
        except (OSError, UnicodeDecodeError, InputError, AttributeError):
            prev = None
    if (prev is not None and prev != fp) or (prev is None and out.glob("shard-*.tar")):
        if not cfg.overwrite:
            raise BuildError(f"{out} holds another build or ingest; use a new --out folder, or --overwrite")
        _clear(out)
    for tmp in out.glob("*.tmp") + out.glob(f"{STATS_DIR}/*.tmp"):
        out.rm(tmp)
    out.rm("manifest.json")  # a manifest means complete: none while this ingest writes (written again last)
    out.write_json("build.json", {"fingerprint": fp, "args": _args(cfg), "pirs": PIRS_VERSION})
    config = {k: v for k, v in asdict(cfg).items() if k != "storage_options"}
    config["input"] = absolute(cfg.input)  # workers (other processes, Ray nodes) have other working folders
    if cfg.then and Path(cfg.then).is_file():
        config["then"] = absolute(cfg.then)
    out.write_json(f"{STATS_DIR}/{INPUTS_FILE}", {"fingerprint": fp, "config": config,
                                                  "pairs": [[p.lq, p.hq] for p in pairs]})
    n_shards = math.ceil(len(pairs) / cfg.shard_size)
    todo = _pending_shards(out, n_shards, fp)
    _run(cfg, pairs, fp, todo, n_shards)
    manifest = write_outputs(cfg, layout, recipe, out, fp, n_shards, len(pairs), problems)
    return IngestResult(out=out.path if out.local else out.url, pairs_found=len(pairs), samples=manifest["samples"],
                        shards=n_shards,
                        shards_built=len(todo), problems=len(problems) + manifest["sample_rejects"],
                        seconds=time.perf_counter() - t0, manifest=manifest)


def _clear(out: Folder) -> None:
    for name in out.glob("shard-*.tar") + out.glob(f"{STATS_DIR}/*.json") + out.glob(f"{STATS_DIR}/*.jsonl") + [
            "manifest.json", "rejects.jsonl", "README.md", "build.json"]:
        out.rm(name)


def _args(cfg: IngestConfig) -> dict:
    d = asdict(cfg)
    for k in ("progress", "overwrite", "workers", "strict", "executor", "ray_address", "max_retries",
              "storage_options", "test_set"):  # test_set is a manifest field of its own
        d.pop(k)
    return d


def _run(cfg: IngestConfig, pairs: list[Pair], fp: str, todo: list[int], n_shards: int) -> None:
    done = sum(min((s + 1) * cfg.shard_size, len(pairs)) - s * cfg.shard_size
               for s in sorted(set(range(n_shards)) - set(todo)))
    bar = _bar(len(pairs), f"ingest {cfg.layout}", "pair", cfg.progress)
    bar.update(done)
    if not todo:
        bar.close()
        return
    if cfg.executor == "local" and (cfg.workers == 1 or len(todo) == 1):
        threads = cv2.getNumThreads()
        cv2.setNumThreads(1)
        _set_state(cfg, pairs, fp)
        _STATE["tick"] = lambda: bar.update(1)
        try:
            for s in todo:
                ingest_shard(s)
        finally:
            _STATE.pop("tick", None)
            cv2.setNumThreads(threads)
        bar.close()
        return
    from .build import write_failures
    from .executors import TaskFailed, make_executor, warn_local_paths

    failures: list[dict] = []
    try:
        with make_executor(cfg.executor, min(cfg.workers, len(todo)), cfg.max_retries, cfg.ray_address) as ex:
            warn_local_paths(ex, cfg.out, cfg.input)
            failures = ex.map_shards(shard_task, todo, (absolute(cfg.out), fp, cfg.storage_options),
                                     lambda i, st: bar.update(st["last"] - st["first"] + 1)).failures
    except TaskFailed as e:
        failures = e.failures
        raise BuildError(f"{cfg.out}: {e} (every attempt in {STATS_DIR}/failures.jsonl; "
                         "run the same command again to resume)") from None
    finally:
        bar.close()
        write_failures(Folder(cfg.out), failures)


def write_outputs(cfg: IngestConfig, layout: Layout, recipe: Recipe | None, out: Folder, fp: str, n_shards: int,
                  n_pairs: int, problems: list[dict]) -> dict:
    """Write rejects.jsonl, the dataset card, and manifest.json last, from the shard markers."""
    markers = out.read_texts([_marker_name(s) for s in range(n_shards)])
    stats = [json.loads(markers[_marker_name(s)]) for s in range(n_shards)]
    sample_rejects = [r for st in stats for r in st["rejects"]]
    name = f"ingest-{layout.name}" + (f"+{recipe.name}" if recipe else "")
    manifest = {
        "pirs_version": PIRS_VERSION,
        "schema_version": schema.SCHEMA_VERSION,
        "fingerprint": fp,
        "args": _args(cfg),
        "test_set": cfg.test_set,  # {id, version, aliases, partial} when built by `degrade testset`, else null
        "layout": {"name": layout.name, "description": layout.description, "source": layout.source,
                   "labels": list(layout.labels), "scale": cfg.scale or layout.scale, "paired": layout.paired},
        "recipe": ({"name": recipe.name, "version": recipe.version, "hash": recipe.hash, "source": recipe.source,
                    "resolved": recipe.resolved} if recipe else None),
        "inputs": {"seen": n_pairs + len(problems), "usable": n_pairs, "rejected": len(problems), "used": n_pairs,
                   "rejects_by_reason": _by_reason(problems)},
        "samples": sum(st["samples"] for st in stats),
        "sample_rejects": len(sample_rejects),
        "shards": [{"name": st["shard"], "samples": st["samples"], "bytes": st["bytes"], "sha256": st["sha256"]}
                   for st in stats],
        "content_sha256": content_sha256([st["sha256"] for st in stats]),
    }
    out.write_text("rejects.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n" for r in problems + sample_rejects))
    card_args = dict(manifest["args"], crop_size=cfg.crop_size or "whole images", scale=cfg.scale or layout.scale)
    like_recipe = SimpleNamespace(name=name, version=recipe.version if recipe else PIRS_VERSION,
                                  hash=recipe.hash if recipe else fp, description=layout.description,
                                  source=layout.source, scales=lambda: {cfg.scale or layout.scale})
    out.write_card(dict(manifest, args=card_args), like_recipe)
    out.write_json("manifest.json", manifest)  # last: a manifest means the ingest is complete
    return manifest
