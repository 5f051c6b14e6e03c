"""``degrade build``: sources -> degraded HQ/LQ pairs -> webdataset shards, resumably.

The shard is the unit of work. Shard ``s`` holds samples ``s*shard_size ..`` and is a
pure function of its index, the usable sources, the recipe and the seed, so shards can
be built in any order on any number of processes. A shard is written under a temporary
name, renamed when complete, then marked done by ``stats/shard-NNNNNN.json`` (count,
bytes, sha256, rejects, seconds, build fingerprint). A re-run skips exactly the shards
whose marker matches the fingerprint and whose tar is intact.

Where shard tasks run is the executor's business (:mod:`.executors`: local processes or
Ray); ``--out`` may be a local folder or an fsspec URL (:mod:`.fs`), written shard by
shard under temporary keys, then the markers, then the manifest last.
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing as mp
import sys
import time
from collections import OrderedDict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from . import schema
from .atomic import one_line
from .executors import (
    DEFAULT_MAX_RETRIES,
    EXECUTORS,
    Executor,
    LocalExecutor,
    TaskFailed,
    exit_with_parent,
    make_executor,
    warn_local_paths,
)
from .fs import Folder, absolute, set_storage_options
from .limits import InputError, load_json
from .lock import LockHeld, output_lock
from .ops import geometry
from .pipeline import degrade
from .recipe import Recipe, load_recipe
from .sources import DEFAULT_MAX_PIXELS, BadInput, SourceInfo, SourceRef, check, decode, discover

PIRS_VERSION = "0.1.0"
STATS_DIR = "stats"


@dataclass
class BuildConfig:
    """Arguments of one build; everything that changes the output goes into its fingerprint."""

    pipeline: str
    out: str
    input: str | None = None
    num_samples: int = 1000
    seed: int = 0
    crop_size: int = 512
    scale: int | None = None
    upsample_lq: bool | None = None
    shard_size: int = 1000
    workers: int = 1
    pad: bool = False
    flip_prob: float = 0.5
    max_pixels: int = DEFAULT_MAX_PIXELS
    strict: bool = False
    overwrite: bool = False
    progress: bool = True
    executor: str = "local"  # local | ray: where shard tasks run, never what they contain
    ray_address: str | None = None
    max_retries: int = DEFAULT_MAX_RETRIES
    storage_options: dict | None = None  # fsspec options for URL --out / --input; never written out
    test_set: dict | None = None  # set by `degrade testset`: the manifest's test_set field (id, version, ...)

# Arguments that do not change any output byte, left out of build.json / manifest args.
RUN_ONLY = ("progress", "overwrite", "executor", "ray_address", "max_retries", "storage_options")


@dataclass
class BuildResult:
    """What a build did."""

    out: Path
    samples: int
    shards: int
    shards_built: int
    shards_skipped: int
    inputs_seen: int
    inputs_usable: int
    inputs_rejected: int
    sample_rejects: int
    seconds: float
    manifest: dict = field(repr=False, default_factory=dict)
    failures: list[dict] = field(default_factory=list)  # failed attempts that were retried (stats/failures.jsonl)


class BuildError(RuntimeError):
    """A build that cannot start or finish; the message says why."""


def encode_png(img: np.ndarray) -> bytes:
    """Lossless PNG of a uint8 RGB image (libpng through OpenCV, compression level 1)."""
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(img[..., ::-1]), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def decode_png(data: bytes) -> np.ndarray:
    """uint8 RGB from PNG bytes, with the decompression-bomb limit (:func:`.sources.decode_png`)."""
    from .sources import decode_png as decode_checked

    return decode_checked(data)


def sample_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of sample ``index``: seeded from (seed, index) only."""
    return np.random.default_rng([int(seed), 0, int(index)])


def source_index(seed: int, index: int, n: int, _cache: dict | None = None) -> int:
    """Which usable source sample ``index`` uses: a seeded permutation per pass over the ``n`` sources."""
    p = index // n
    perm = None if _cache is None else _cache.get(p)
    if perm is None:
        perm = np.random.default_rng([int(seed), 1, p]).permutation(n)
        if _cache is not None:
            _cache.clear()
            _cache[p] = perm
    return int(perm[index % n])


def key_width(num_samples: int) -> int:
    """Digits of a sample key."""
    return max(8, len(str(max(num_samples - 1, 0))))


def shard_name(s: int) -> str:
    """File name of shard ``s``."""
    return f"shard-{s:06d}.tar"


# ---------------------------------------------------------------- one sample


def make_sample(cfg: BuildConfig, recipe: Recipe, src: SourceInfo, image: np.ndarray, index: int,
                key: str) -> tuple[dict, dict]:
    """Degrade one sample: returns ``(record, members)``. Pure in (image, recipe, seed, index)."""
    rec, hq, lq = degrade_sample(cfg, recipe, src, image, index, key)
    members = {"hq.png": encode_png(hq), "lq.png": encode_png(lq),
               "json": json.dumps(rec, sort_keys=True, separators=(",", ":")).encode()}
    return rec, members


def degrade_sample(cfg: BuildConfig, recipe: Recipe, src: SourceInfo, image: np.ndarray, index: int,
                   key: str) -> tuple[dict, np.ndarray, np.ndarray]:
    """One sample before PNG encoding: ``(record, hq, lq)`` with uint8 RGB arrays (what :func:`make_sample`
    writes, and what the on-the-fly dataset :mod:`.onthefly` returns)."""
    rng = sample_rng(cfg.seed, index)
    img, pads = (geometry.pad_to(image, cfg.crop_size) if cfg.pad else (image, [0, 0, 0, 0]))
    box = geometry.sample_crop(rng, img.shape[0], img.shape[1], cfg.crop_size)
    hq = geometry.crop(img, box)
    flip = bool(cfg.flip_prob > 0 and rng.uniform() < cfg.flip_prob)
    if flip:
        hq = geometry.hflip(hq)
    hq = np.ascontiguousarray(hq)
    out = degrade(hq, recipe, rng, scale=cfg.scale, upsample=cfg.upsample_lq)
    rec = schema.empty_record()
    rec.update({
        "key": key, "source_path": src.ref.path, "source_sha256": src.sha256,
        "source_size": [int(image.shape[0]), int(image.shape[1])], "pad": [int(p) for p in pads],
        "crop_box": [int(b) for b in box], "flip": flip,
        "hq_size": [int(hq.shape[0]), int(hq.shape[1])], "lq_size": [int(out.lq.shape[0]), int(out.lq.shape[1])],
        "scale": int(out.scale), "lq_upsampled": bool(out.upsampled),
        "recipe": recipe.name, "recipe_version": recipe.version, "recipe_hash": recipe.hash, "branch": out.branch,
        "seed": int(cfg.seed), "index": int(index),
        "ops": json.dumps(out.ops, sort_keys=True, separators=(",", ":")),
        "restoration_prompt": out.prompt, "degradations": list(out.labels),
    })
    schema.validate(rec, key)
    return rec, hq, out.lq


# ---------------------------------------------------------------- one shard

_STATE: dict = {}
INPUTS_FILE = "inputs.json"  # in stats/: the build's config and usable sources, read by pool workers


def _init_process(counter, storage_options: dict | None = None) -> None:
    """Pool worker start-up: one OpenCV thread, a progress counter, storage options, and exit with the parent."""
    cv2.setNumThreads(1)
    _STATE["counter"] = counter
    set_storage_options(storage_options)
    exit_with_parent()


def _set_state(cfg: BuildConfig, sources: list[SourceInfo], fp: str) -> None:
    _STATE.update(cfg=cfg, recipe=load_recipe(cfg.pipeline), sources=sources, fingerprint=fp,
                  cache=_ImageCache(), perm={}, folder=Folder(cfg.out, cfg.storage_options))


def _load_state(out: str, fp: str, storage_options: dict | None = None) -> None:
    """Load the build's config and sources in a pool worker (once per build)."""
    if _STATE.get("fingerprint") == fp and _STATE.get("out_key") == out:  # workers are reused across builds
        return
    set_storage_options(storage_options)
    data = json.loads(Folder(out, storage_options).read_text(f"{STATS_DIR}/{INPUTS_FILE}"))
    if data["fingerprint"] != fp:
        raise BuildError(f"{out}: {INPUTS_FILE} belongs to another build")
    sources = [SourceInfo(SourceRef(p, loc, tuple(m) if m else None), sha, h, w)
               for p, loc, m, sha, h, w in data["sources"]]
    _set_state(BuildConfig(**{**data["config"], "out": out}, storage_options=storage_options), sources, fp)
    if data.get("recipe_hash") and _STATE["recipe"].hash != data["recipe_hash"]:
        raise BuildError(f"recipe {data['config']['pipeline']} on this worker is not the driver's (hash "
                         f"{_STATE['recipe'].hash[:12]}, want {data['recipe_hash'][:12]}): install the same pirs "
                         "and put recipe files where every node sees them")
    _STATE["out_key"] = out


def _write_inputs(out: Folder, cfg: BuildConfig, sources: list[SourceInfo], fp: str, recipe: Recipe) -> None:
    """What a worker needs to build any shard: the config, the sources, the recipe's hash to check."""
    rows = [[s.ref.path, s.ref.location, list(s.ref.member) if s.ref.member else None, s.sha256, s.height, s.width]
            for s in sources]
    config = {k: v for k, v in asdict(cfg).items() if k != "storage_options"}
    if Path(cfg.pipeline).is_file():  # a recipe file: workers elsewhere must find it from any folder
        config["pipeline"] = absolute(cfg.pipeline)
    out.write_json(f"{STATS_DIR}/{INPUTS_FILE}", {"fingerprint": fp, "config": config, "sources": rows,
                                                  "recipe_hash": recipe.hash})


class _ImageCache:
    """Decoded sources, least recently used first out, bounded by total bytes."""

    def __init__(self, max_bytes: int = 512 * 1024 * 1024):
        self.max_bytes, self.items, self.size = max_bytes, OrderedDict(), 0

    def get(self, src: SourceInfo, max_pixels: int) -> np.ndarray:
        key = src.sha256 + src.ref.path
        if key in self.items:
            self.items.move_to_end(key)
            return self.items[key]
        data = src.ref.read()
        if hashlib.sha256(data).hexdigest() != src.sha256:
            raise BadInput("source changed since the build scanned it (sha256 differs)")
        img = decode(data, max_pixels)
        self.items[key] = img
        self.size += img.nbytes
        while self.size > self.max_bytes and len(self.items) > 1:
            _, old = self.items.popitem(last=False)
            self.size -= old.nbytes
        return img


def shard_task(state: tuple, s: int) -> dict:
    """The executor's task: shard ``s`` of the build ``state = (out, fingerprint, storage_options)``."""
    _load_state(*state)
    return build_shard(s)


def build_shard(s: int) -> dict:
    """Build shard ``s`` in this process (state from :func:`_set_state`); returns its stats."""
    cfg: BuildConfig = _STATE["cfg"]
    recipe: Recipe = _STATE["recipe"]
    sources: list[SourceInfo] = _STATE["sources"]
    out: Folder = _STATE["folder"]
    t0 = time.perf_counter()
    lo, hi = s * cfg.shard_size, min((s + 1) * cfg.shard_size, cfg.num_samples)
    width = key_width(cfg.num_samples)
    rejects, count = [], 0
    with out.shard_writer(shard_name(s)) as w:
        for i in range(lo, hi):
            src = sources[source_index(cfg.seed, i, len(sources), _STATE["perm"])]
            key = f"{i:0{width}d}"
            try:
                image = _STATE["cache"].get(src, cfg.max_pixels)
                _, members = make_sample(cfg, recipe, src, image, i, key)
            except Exception as e:  # one bad sample is recorded and skipped, never fatal to the shard
                reason = one_line(e) if isinstance(e, BadInput | OSError | ValueError) else \
                    f"{type(e).__name__}: {one_line(e)}"
                rejects.append({"key": key, "path": src.ref.path, "stage": "build", "reason": reason})
            else:
                w.write(key, members)
                count += 1
            counter = _STATE.get("counter")
            if counter is not None:
                with counter.get_lock():
                    counter.value += 1
            tick = _STATE.get("tick")
            if tick is not None:
                tick()
    nbytes, sha = out.digest(shard_name(s))
    stats = {"shard": shard_name(s), "index": s, "samples": count, "bytes": nbytes, "sha256": sha,
             "first": lo, "last": hi - 1, "rejects": rejects, "rejects_by_reason": _by_reason(rejects),
             "seconds": round(time.perf_counter() - t0, 3), "fingerprint": _STATE["fingerprint"],
             "recipe_hash": recipe.hash}
    out.write_json(f"{STATS_DIR}/{shard_name(s)[:-4]}.json", stats)
    return stats


def _by_reason(rejects: list[dict]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in rejects:
        reason = r["reason"].split(" (")[0]
        out[reason] = out.get(reason, 0) + 1
    return dict(sorted(out.items()))


# ---------------------------------------------------------------- scanning inputs


def _check_one(args) -> tuple[int, SourceInfo | None, str | None]:
    i, ref, crop, pad, max_pixels = args
    try:
        return i, check(ref, crop, pad, max_pixels), None
    except BadInput as e:
        return i, None, one_line(e)
    except Exception as e:  # a decoder crash on one file must not stop the build
        return i, None, f"could not decode ({type(e).__name__}: {one_line(e)})"


def scan_inputs(cfg: BuildConfig, pool: ProcessPoolExecutor | None = None) -> tuple[list[SourceInfo], list[dict], int]:
    """Decode every candidate once: returns usable sources (in path order), rejects, and inputs seen."""
    refs, rejects = discover(cfg.input, exclude=cfg.out)
    seen = len(refs) + len(rejects)
    args = [(i, r, cfg.crop_size, cfg.pad, cfg.max_pixels) for i, r in enumerate(refs)]
    results: list = [None] * len(refs)
    bar = _bar(len(refs), "scan inputs", "img", cfg.progress)
    if pool is not None and len(refs) > 1:  # scanning runs on local processes whatever the executor
        for i, info, reason in pool.map(_check_one, args, chunksize=max(1, min(16, len(args) // (4 * cfg.workers)))):
            results[i] = (info, reason)
            bar.update(1)
    else:
        for a in args:
            i, info, reason = _check_one(a)
            results[i] = (info, reason)
            bar.update(1)
    bar.close()
    usable = []
    for ref, (info, reason) in zip(refs, results, strict=True):
        if info is None:
            rejects.append({"path": ref.path, "stage": "scan", "reason": reason})
        else:
            usable.append(info)
    for r in rejects:
        r.setdefault("stage", "scan")
    rejects.sort(key=lambda r: r["path"])
    return usable, rejects, seen


def _bar(total: int, desc: str, unit: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, dynamic_ncols=True, file=sys.stderr)


# ---------------------------------------------------------------- the build


def fingerprint(cfg: BuildConfig, recipe: Recipe, sources: list[SourceInfo]) -> str:
    """sha256 over everything that decides the shards' bytes."""
    spec = {
        "pirs": PIRS_VERSION, "schema": schema.SCHEMA_VERSION, "recipe_hash": recipe.hash, "seed": cfg.seed,
        "crop_size": cfg.crop_size, "scale": cfg.scale, "upsample_lq": cfg.upsample_lq, "pad": cfg.pad,
        "flip_prob": cfg.flip_prob, "num_samples": cfg.num_samples, "shard_size": cfg.shard_size,
        "max_pixels": cfg.max_pixels, "sources": [[s.ref.path, s.sha256] for s in sources],
    }
    if _uses_op(recipe.resolved, "albumentations"):  # its draws and pixels are the installed version's
        from .ops.albument import version

        spec["albumentations"] = version()
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def _uses_op(obj, name: str) -> bool:
    """Whether a resolved recipe (nested recipes included) has a stage ``op: name``."""
    if isinstance(obj, dict):
        return obj.get("op") == name or any(_uses_op(v, name) for v in obj.values())
    if isinstance(obj, list):
        return any(_uses_op(v, name) for v in obj)
    return False


def validate_config(cfg: BuildConfig, recipe: Recipe) -> None:
    """Check the arguments before any work starts."""
    if cfg.num_samples < 1:
        raise BuildError(f"--num-samples must be at least 1, got {cfg.num_samples}")
    if cfg.shard_size < 1:
        raise BuildError(f"--shard-size must be at least 1, got {cfg.shard_size}")
    if cfg.workers < 1:
        raise BuildError(f"--workers must be at least 1, got {cfg.workers}")
    if cfg.executor not in EXECUTORS:
        raise BuildError(f"--executor must be one of {', '.join(EXECUTORS)}, got {cfg.executor!r}")
    if cfg.max_retries < 0:
        raise BuildError(f"--max-retries must be 0 or more, got {cfg.max_retries}")
    if cfg.crop_size < 8:
        raise BuildError(f"--crop-size must be at least 8, got {cfg.crop_size}")
    if not 0.0 <= cfg.flip_prob <= 1.0:
        raise BuildError(f"--flip-prob must be in [0, 1], got {cfg.flip_prob}")
    if cfg.scale is not None and cfg.scale < 1:
        raise BuildError(f"--scale must be a positive integer, got {cfg.scale}")
    scales = recipe.scales() | ({cfg.scale} if cfg.scale else set())
    for sc in sorted(scales):
        if cfg.crop_size % sc:
            raise BuildError(f"--crop-size {cfg.crop_size} is not a multiple of the scale {sc} "
                             f"(recipe {recipe.name}); the HQ crop must be a multiple of every scale")


def _pending_shards(out: Folder | Path, n_shards: int, fp: str) -> list[int]:
    """Shards without a marker of this build whose tar has the marked size (markers read in one batch)."""
    out = out if isinstance(out, Folder) else Folder(out)
    markers = out.read_texts([_marker_name(s) for s in range(n_shards)])
    sizes = out.sizes("shard-*.tar")
    todo = []
    for s in range(n_shards):
        try:
            st = load_json(markers[_marker_name(s)], _marker_name(s))
            if st.get("fingerprint") == fp and sizes.get(shard_name(s)) == st.get("bytes"):
                continue
        except (KeyError, InputError, AttributeError):  # missing, unreadable or not ours: build it again
            pass
        todo.append(s)
    return todo


def _marker_name(s: int) -> str:
    return f"{STATS_DIR}/{shard_name(s)[:-4]}.json"


def build(cfg: BuildConfig) -> BuildResult:
    """Run (or resume) a build; returns what it did. Raises :class:`BuildError` if it cannot start."""
    t0 = time.perf_counter()
    recipe = load_recipe(cfg.pipeline)
    validate_config(cfg, recipe)
    set_storage_options(cfg.storage_options)
    try:
        out = Folder(cfg.out, cfg.storage_options)
    except ValueError as e:
        raise BuildError(str(e)) from None
    pool = counter = None
    if cfg.workers > 1:
        ctx = mp.get_context("spawn")
        counter = ctx.Value("q", 0)  # samples done in the pool's workers: the progress bar between shards
        pool = ProcessPoolExecutor(cfg.workers, mp_context=ctx, initializer=_init_process,
                                   initargs=(counter, cfg.storage_options))
    try:
        return _build(cfg, recipe, out, pool, t0, counter)
    except BaseException:
        if pool is not None:  # interrupted or failed: drop what has not started
            pool.shutdown(wait=True, cancel_futures=True)
            pool = None
        raise
    finally:
        if pool is not None:
            pool.shutdown(wait=True)


def _build(cfg: BuildConfig, recipe: Recipe, out: Folder, pool, t0: float, counter=None) -> BuildResult:
    sources, rejects, seen = scan_inputs(cfg, pool)
    if not sources:
        raise BuildError(f"no usable input images among {seen} seen in {cfg.input or 'the bundled sample photos'}"
                         + (f"; first reject: {rejects[0]['path']}: {rejects[0]['reason']}" if rejects else ""))
    fp = fingerprint(cfg, recipe, sources)
    try:
        out.mkdir()
    except ValueError as e:
        raise BuildError(str(e)) from None
    try:
        with output_lock(out, "degrade build", cfg.storage_options):
            return _build_locked(cfg, recipe, out, pool, t0, counter, sources, rejects, seen, fp)
    except LockHeld as e:
        raise BuildError(str(e)) from None


def _build_locked(cfg: BuildConfig, recipe: Recipe, out: Folder, pool, t0: float, counter, sources: list[SourceInfo],
                  rejects: list[dict], seen: int, fp: str) -> BuildResult:
    """The build once this process holds the lock on ``--out`` (one writer per output)."""
    if out.exists("build.json"):
        try:
            prev = load_json(out.read_text("build.json"), "build.json").get("fingerprint")
        except (OSError, UnicodeDecodeError, InputError, AttributeError):
            prev = None
        if prev != fp and not cfg.overwrite:
            raise BuildError(f"{out} holds a different build (other recipe, arguments or inputs); "
                             "use a new --out folder, or --overwrite to replace it")
        if prev != fp:
            _clear(out)
    elif out.glob("shard-*.tar") and not cfg.overwrite:
        raise BuildError(f"{out} already holds shards of an unknown build; use a new --out folder or --overwrite")
    elif cfg.overwrite:
        _clear(out)
    for tmp in out.glob("*.tmp") + out.glob(f"{STATS_DIR}/*.tmp"):
        out.rm(tmp)
    out.rm("manifest.json")  # a manifest means complete: none while this build writes (written again last)
    out.write_json("build.json", {"fingerprint": fp, "args": _args(cfg), "pirs": PIRS_VERSION})
    _write_inputs(out, cfg, sources, fp, recipe)

    n_shards = math.ceil(cfg.num_samples / cfg.shard_size)
    todo = _pending_shards(out, n_shards, fp)
    done_samples = sum(min((s + 1) * cfg.shard_size, cfg.num_samples) - s * cfg.shard_size
                       for s in sorted(set(range(n_shards)) - set(todo)))
    reuse = LocalExecutor(cfg.workers, cfg.max_retries, pool=pool) if pool and cfg.executor == "local" else None
    failures = _run_shards(cfg, sources, fp, todo, done_samples, reuse, counter if reuse else None)

    manifest = write_outputs(cfg, recipe, out, fp, n_shards, sources, rejects, seen)
    return BuildResult(out=out.path if out.local else out.url, samples=manifest["samples"], shards=n_shards,
                       shards_built=len(todo),
                       shards_skipped=n_shards - len(todo), inputs_seen=seen, inputs_usable=len(sources),
                       inputs_rejected=len(rejects), sample_rejects=manifest["sample_rejects"],
                       seconds=time.perf_counter() - t0, manifest=manifest, failures=failures)


def _clear(out: Folder) -> None:
    for p in out.glob("shard-*.tar") + out.glob(f"{STATS_DIR}/*.json") + out.glob(f"{STATS_DIR}/*.jsonl"):
        out.rm(p)
    for name in ("manifest.json", "rejects.jsonl", "README.md", "build.json"):
        out.rm(name)


def _args(cfg: BuildConfig) -> dict:
    d = asdict(cfg)
    for k in (*RUN_ONLY, "test_set"):  # test_set is a manifest field of its own
        d.pop(k)
    return d


def _run_shards(cfg: BuildConfig, sources: list[SourceInfo], fp: str, todo: list[int], done: int,
                executor: Executor | None = None, counter=None) -> list[dict]:
    """Build the pending shards on the configured executor; returns the failed (then retried) attempts.

    Every failed attempt goes to ``stats/failures.jsonl``; shards still failing after
    ``max_retries`` end the build with :class:`BuildError` naming them. The progress bar
    moves per sample on local processes (``counter``: samples done in pool workers) and
    per finished shard on Ray.
    """
    bar = _bar(cfg.num_samples, f"degrade {cfg.pipeline}", "sample", cfg.progress)
    bar.update(done)
    if not todo:
        bar.close()
        return []
    _set_state(cfg, sources, fp)  # used in this process when the executor runs tasks here
    out_key = absolute(cfg.out)  # what tasks open: absolute, as workers (Ray nodes) have other working folders
    _STATE["out_key"] = out_key
    progress = {"finished": done, "here": 0}
    start = counter.value if counter is not None else 0

    def show() -> None:
        live = done + progress["here"] + (counter.value - start if counter is not None else 0)
        n = min(cfg.num_samples, max(progress["finished"], live))
        if n > bar.n:
            bar.update(n - bar.n)

    def tick() -> None:  # a sample finished in this process
        progress["here"] += 1
        show()

    def finished(_: int, st: dict) -> None:
        progress["finished"] += st["last"] - st["first"] + 1
        show()

    own = executor is None
    if executor is not None and len(todo) < executor.workers:
        executor.workers = len(todo)
    if own:
        try:
            executor = make_executor(cfg.executor, min(cfg.workers, len(todo)), cfg.max_retries, cfg.ray_address)
        except Exception as e:
            bar.close()
            raise BuildError(str(e)) from None
    warn_local_paths(executor, cfg.out, cfg.input)
    failures: list[dict] = []
    _STATE["tick"] = tick
    try:
        report = executor.map_shards(shard_task, todo, (out_key, fp, cfg.storage_options), finished, poll=show)
        failures = report.failures
    except TaskFailed as e:
        failures = e.failures
        raise BuildError(f"{cfg.out}: {e} (every attempt in {STATS_DIR}/failures.jsonl; "
                         "run the same command again to resume)") from None
    finally:
        _STATE.pop("tick", None)
        bar.close()
        if own:
            executor.close()
        write_failures(_STATE["folder"], failures)
    return failures


def write_failures(out: Folder, failures: list[dict]) -> None:
    """``stats/failures.jsonl``: one line per failed attempt of a shard task in the last run."""
    if failures or out.exists(f"{STATS_DIR}/failures.jsonl"):
        out.write_text(f"{STATS_DIR}/failures.jsonl", "".join(json.dumps(f, sort_keys=True) + "\n" for f in failures))


def content_sha256(shard_digests: list[str]) -> str:
    """sha256 over the shards' sha256s in order: changes whenever any shard's bytes change."""
    return hashlib.sha256("\n".join(shard_digests).encode()).hexdigest()


def write_outputs(cfg: BuildConfig, recipe: Recipe, out: Folder | Path, fp: str, n_shards: int,
                  sources: list[SourceInfo], rejects: list[dict], seen: int) -> dict:
    """Write rejects.jsonl, the dataset card, and manifest.json last, from the shard markers."""
    out = out if isinstance(out, Folder) else Folder(out)
    markers = out.read_texts([_marker_name(s) for s in range(n_shards)])
    stats = [json.loads(markers[_marker_name(s)]) for s in range(n_shards)]
    sample_rejects = [r for st in stats for r in st["rejects"]]
    import PIL

    manifest = {
        "pirs_version": PIRS_VERSION,
        "schema_version": schema.SCHEMA_VERSION,
        "fingerprint": fp,
        "args": _args(cfg),
        "test_set": cfg.test_set,  # {id, version, aliases, partial} when built by `degrade testset`, else null
        "recipe": {"name": recipe.name, "version": recipe.version, "hash": recipe.hash,
                   "source": recipe.source, "resolved": recipe.resolved},
        "inputs": {"seen": seen, "usable": len(sources), "rejected": len(rejects),
                   "used": min(cfg.num_samples, len(sources)), "rejects_by_reason": _by_reason(rejects)},
        "samples": sum(st["samples"] for st in stats),
        "sample_rejects": len(sample_rejects),
        "shards": [{"name": st["shard"], "samples": st["samples"], "bytes": st["bytes"], "sha256": st["sha256"]}
                   for st in stats],
        "content_sha256": content_sha256([st["sha256"] for st in stats]),
        "versions": {"python": sys.version.split()[0], "numpy": np.__version__, "opencv": cv2.__version__,
                     "pillow": PIL.__version__},
    }
    out.write_text("rejects.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n" for r in rejects + sample_rejects))
    out.write_card(manifest, recipe)
    out.write_json("manifest.json", manifest)  # last: a manifest means the build is complete
    return manifest
