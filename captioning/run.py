"""``caption run``: read pirs shards, caption every record, write new shards, resumably.

The shard is the unit of work, as in ``degrade build``. Output shard ``NAME`` holds the
same samples as input shard ``NAME``, in the same order, with the image members
byte-for-byte unchanged and only the caption fields of the ``json`` member rewritten.
It is written under a temporary name, renamed when complete, then marked by
``stats/NAME.json`` carrying the input shard's sha256 and the caption fingerprint
(backend, model, instructions, image, generation settings). A re-run skips a shard whose
marker matches and is complete; a shard with failed records (listed with the reason in
``caption_failures.jsonl``, their caption fields left empty, never dropped) is marked
incomplete and the next run captions only those records again. A crash loses at most
the shard in flight.

``--executor ray`` captions the shards on a Ray actor pool: each actor loads the model
once (declaring ``--gpus-per-worker`` GPUs) and captions whole shards, written exactly as a
local run writes them; with ``--backend openai`` each actor sends its requests to the
endpoints of ``--endpoint`` (several, comma-separated: each request goes to the least busy).
The input may be an fsspec URL (``s3://bucket/shards``), streamed. A backend that cannot go on
(:class:`~.backend.BackendUnavailable`: its server stopped) stops the run; finished shards stay.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from pirs.degrade import schema
from pirs.degrade.atomic import one_line
from pirs.degrade.build import content_sha256
from pirs.degrade.executors import DEFAULT_MAX_RETRIES, EXECUTORS, TaskFailed, make_executor, warn_local_paths
from pirs.degrade.fs import Folder, absolute, basename, is_url, join, local_path, open_read, set_storage_options
from pirs.degrade.lock import LockHeld, output_lock
from pirs.degrade.shards import file_digest, iter_records, shard_paths

from .backend import Backend, BackendUnavailable, CaptionError, Instruction, Item
from .instructions import load_instructions, select

CAPTION_VERSION = "1.0"
PIRS_VERSION = "0.1.0"
STATS_DIR = "stats"
RUN_FILE = "caption.json"
FAILURES_FILE = "caption_failures.jsonl"
BACKENDS = ("transformers", "openai", "llava", "template", "source")  # llava: a name for transformers
DEFAULT_INSTRUCTIONS = {"transformers": ["high", "low"], "openai": ["high", "low"], "llava": ["high", "low"],
                        "template": ["low", "high"], "source": ["high"]}


class RunError(RuntimeError):
    """A caption run that cannot start or finish; the message says why."""


@dataclass
class CaptionConfig:
    """Arguments of one caption run."""

    shards: str
    out: str
    backend: str = "template"
    model: str | None = None
    instructions: list[str] | None = None  # default: DEFAULT_INSTRUCTIONS[backend]
    instructions_file: str | None = None
    image: str = "lq"
    batch_size: int = 8
    max_new_tokens: int = 128
    source_field: str = "caption_source"
    source_dir: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    overwrite: bool = False
    progress: bool = True
    executor: str = "local"  # local | ray (an actor pool, the model loaded once per actor)
    workers: int = 1  # processes or Ray actors, each loading the model once (1: this process)
    ray_address: str | None = None
    gpus_per_worker: float = 0.0
    max_retries: int = DEFAULT_MAX_RETRIES
    storage_options: dict | None = None  # fsspec options for a URL input; never written out
    endpoint: str | None = None  # openai: base URL(s), comma-separated
    served_model: str | None = None  # openai: the name the server serves the model under
    concurrency: int = 8  # openai: requests in flight (per worker)
    timeout: float = 120.0  # openai: seconds per request
    retries: int = 4  # openai: retries of a request that timed out or got a 5xx
    retry_backoff: float = 1.0  # openai: seconds before the first retry, doubled each time
    seed: int = 0  # openai: the sampling seed sent with every request (decoding is greedy)
    api_key_env: str = "OPENAI_API_KEY"  # openai: environment variable holding the API key (never written out)


@dataclass
class CaptionResult:
    """What a caption run did."""

    out: Path | str  # a URL string for object storage
    samples: int
    shards: int
    shards_done: int
    shards_skipped: int
    captions: int  # captions written in this run
    failures: list[dict]  # outstanding failures (also in caption_failures.jsonl)
    seconds: float
    manifest: dict = field(repr=False, default_factory=dict)


# ---------------------------------------------------------------- set-up


def make_backend(cfg: CaptionConfig, load: bool = True) -> Backend:
    """The backend named by ``cfg.backend`` (LLaVA imported only when asked for).

    ``load=False`` gives a backend that only describes itself (its provenance) without
    loading model weights: what a driver needs while workers do the captioning.
    """
    if cfg.backend == "template":
        from .template import TemplateBackend

        return TemplateBackend()
    if cfg.backend == "source":
        from .source import SourceBackend

        try:
            return SourceBackend(source_field=cfg.source_field, source_dir=cfg.source_dir)
        except ValueError as e:
            raise RunError(str(e)) from None
    if cfg.backend in ("transformers", "llava"):
        if not cfg.model:
            raise RunError(f"--backend {cfg.backend} needs --model DIR (a local checkpoint folder or a hub id)")
        try:
            from .vlm import TransformersBackend
        except ModuleNotFoundError as e:
            if e.name in ("pirs.captioning.vlm", "captioning.vlm"):
                raise RunError("the transformers backend is not part of this installation of pirs "
                               "(pirs/captioning/vlm.py is missing)") from None
            raise RunError(f"the transformers backend needs {e.name!r}, which is not installed "
                           "(pip install transformers accelerate)") from None
        args = {"model": cfg.model, "batch_size": cfg.batch_size, "max_new_tokens": cfg.max_new_tokens,
                "device": cfg.device, "dtype": cfg.dtype}
        try:
            if not load:
                return Backend(name="transformers", needs_pixels=True, settings=TransformersBackend.describe(**args))
            return TransformersBackend(**args)
        except ValueError as e:
            raise RunError(str(e)) from None
    if cfg.backend == "openai":
        from .openai_api import OpenAIBackend

        try:  # load=False too: the endpoints are asked for their models (cheap), so a bad one fails at once
            return OpenAIBackend(cfg.endpoint or [], cfg.served_model or "", concurrency=cfg.concurrency,
                                 timeout=cfg.timeout, max_new_tokens=cfg.max_new_tokens, seed=cfg.seed,
                                 retries=cfg.retries, backoff=cfg.retry_backoff, api_key_env=cfg.api_key_env)
        except ValueError as e:
            raise RunError(str(e)) from None
    raise RunError(f"unknown backend {cfg.backend!r} (choose from {', '.join(BACKENDS)})")


def validate_config(cfg: CaptionConfig) -> None:
    """Check the arguments before any work starts."""
    if cfg.backend not in BACKENDS:
        raise RunError(f"unknown backend {cfg.backend!r} (choose from {', '.join(BACKENDS)})")
    if cfg.image not in ("lq", "hq"):
        raise RunError(f"--image must be lq or hq, got {cfg.image!r}")
    if cfg.batch_size < 1:
        raise RunError(f"--batch-size must be at least 1, got {cfg.batch_size}")
    if cfg.max_new_tokens < 1:
        raise RunError(f"--max-new-tokens must be at least 1, got {cfg.max_new_tokens}")
    if cfg.backend == "template" and cfg.image == "hq":
        raise RunError("the template backend describes the degradations applied to the LQ image; --image hq "
                       "would caption a clean image with the LQ's degradations")
    if cfg.source_dir is not None and cfg.backend != "source":
        raise RunError("--source-dir is for --backend source")
    if cfg.backend in ("transformers", "llava") and not cfg.model:
        raise RunError(f"--backend {cfg.backend} needs --model DIR (a local checkpoint folder or a hub id)")
    if cfg.backend == "openai":
        if not cfg.endpoint or not cfg.served_model:
            raise RunError("--backend openai needs --endpoint URL[,URL...] and --served-model NAME")
        if cfg.model:
            raise RunError("--model is for the transformers backend; the openai backend names the served model "
                           "with --served-model")
        if cfg.concurrency < 1 or cfg.timeout <= 0 or cfg.retries < 0 or cfg.retry_backoff < 0:
            raise RunError("--concurrency must be at least 1, --timeout above 0, --retries and --retry-backoff "
                           "at least 0")
    elif cfg.endpoint or cfg.served_model:
        raise RunError("--endpoint and --served-model are for --backend openai")
    if cfg.executor not in EXECUTORS:
        raise RunError(f"--executor must be one of {', '.join(EXECUTORS)}, got {cfg.executor!r}")
    if cfg.workers < 1 or cfg.max_retries < 0 or cfg.gpus_per_worker < 0:
        raise RunError("--workers must be at least 1, --max-retries and --gpus-per-worker at least 0")
    if cfg.executor == "local" and cfg.gpus_per_worker:
        raise RunError("--gpus-per-worker is for --executor ray (local workers use --device)")


# Provenance keys that do not decide what a caption says: a run resumed with a smaller batch, on
# another device, or against other endpoints of the same served model goes on in the same folder
# (they are still recorded in each record's caption_meta).
_NOT_FINGERPRINTED = ("batch_size", "device", "endpoint", "concurrency", "timeout")


def _fingerprint(backend: Backend, provenance: dict[str, dict]) -> str:
    prov = {f: {k: v for k, v in p.items() if k not in _NOT_FINGERPRINTED} for f, p in provenance.items()}
    spec = {"caption_version": CAPTION_VERSION, "schema": schema.SCHEMA_VERSION, "backend": backend.name,
            "provenance": prov}
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()


def _marker(name: str) -> str:
    """The output folder's name of shard ``name``'s completion marker."""
    return f"{STATS_DIR}/{name[:-4]}.json"


# ---------------------------------------------------------------- one shard


@dataclass
class _Job:
    """One shard to caption: everything (``retry`` None) or only the failed (key, field) pairs."""

    name: str
    src: Path | str  # input shard (a URL string for object storage)
    in_bytes: int
    in_sha256: str
    retry: dict[str, set[str]] | None = None


def _decode(data: bytes) -> np.ndarray:
    from pirs.degrade.sources import decode_png

    return decode_png(data)


def _caption_items(backend: Backend, items: list[Item], ins: Instruction) -> list[tuple[str | None, str | None]]:
    """``(caption, failure reason)`` per item; a failing batch keeps the captions the backend says it
    made (a CaptionError with ``captions`` and ``failed``), else it is retried one item at a time."""
    failed: dict[str, str] = {}
    try:
        outs = backend.caption(items, ins)
    except BackendUnavailable:
        raise  # not the records' fault: stop the run
    except Exception as e:  # CaptionError or anything else
        partial = getattr(e, "captions", None)
        if isinstance(e, CaptionError) and isinstance(partial, list) and len(partial) == len(items) \
                and isinstance(getattr(e, "failed", None), dict):
            outs, failed = partial, e.failed  # keep the good ones
        elif len(items) > 1:  # isolate the item(s) that fail
            return [r for it in items for r in _caption_items(backend, [it], ins)]
        else:
            reason = one_line(e) if isinstance(e, CaptionError) else f"{type(e).__name__}: {one_line(e)}"
            return [(None, reason)]
    if len(outs) != len(items):
        raise RunError(f"backend {backend.name} returned {len(outs)} captions for {len(items)} records")
    res: list[tuple[str | None, str | None]] = []
    for it, o in zip(items, outs, strict=True):
        if it.key in failed:
            res.append((None, one_line(failed[it.key])))
        elif o is None and backend.may_skip:
            res.append((None, None))
        elif not isinstance(o, str):
            res.append((None, f"backend returned {type(o).__name__}, not text"))
        elif not o.strip():
            res.append((None, "empty output"))
        else:
            res.append((o.strip(), None))
    return res


def _batches(it: Iterator, n: int) -> Iterator[list]:
    batch = []
    for x in it:
        batch.append(x)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


def caption_shard(job: _Job, out: Folder, cfg: CaptionConfig, backend: Backend, instructions: list[Instruction],
                  provenance: dict[str, dict], fp: str, bar) -> dict:
    """Caption one shard into ``out/job.name`` and write its marker; returns the marker."""
    t0 = time.perf_counter()
    source = out.url_of(job.name) if job.retry is not None else job.src  # a retry starts from its own output
    failures: list[dict] = []
    count = written = 0
    member = f"{cfg.image}.png"
    with out.shard_writer(job.name) as w:
        for batch in _batches(iter_records(source), cfg.batch_size):
            todo = {}  # field -> indices of the batch to caption
            for ins in instructions:
                todo[ins.field] = [i for i, (key, _, _) in enumerate(batch)
                                   if job.retry is None or ins.field in job.retry.get(key, ())]
            images: dict[int, np.ndarray] = {}
            if backend.needs_pixels:
                for i in sorted({i for idx in todo.values() for i in idx}):
                    key, _, members = batch[i]
                    try:
                        if member not in members:
                            raise ValueError(f"no {member} member")
                        images[i] = _decode(members[member])
                    except Exception as e:  # an undecodable image fails its record, not the shard
                        for f, idx in todo.items():
                            if i in idx:
                                idx.remove(i)
                                failures.append({"shard": job.name, "key": key, "field": f,
                                                 "reason": f"cannot read {member}: {one_line(e)}"})
            results: dict[tuple[int, str], tuple[str | None, str | None]] = {}
            work = [(ins, idx, [Item(batch[i][0], batch[i][1], images.get(i), batch[i][2].get(member)) for i in idx])
                    for ins in instructions if (idx := todo[ins.field])]
            if backend.concurrent and len(work) > 1:  # a served model: every instruction's requests in flight
                from concurrent.futures import ThreadPoolExecutor

                with ThreadPoolExecutor(len(work)) as ex:
                    outs = list(ex.map(lambda wk: _caption_items(backend, wk[2], wk[0]), work))
            else:
                outs = [_caption_items(backend, items, ins) for ins, _, items in work]
            done_work = [(ins, idx, res) for (ins, idx, _), res in zip(work, outs, strict=True)]
            for ins, idx, res in done_work:
                for i, r in zip(idx, res, strict=True):
                    results[(i, ins.field)] = r
            for i, (key, rec, members) in enumerate(batch):
                if not any((i, f) in results for f in todo):
                    w.write(key, members)  # nothing to change: the json member too stays byte-identical
                    count += 1
                    continue
                rec = dict(rec)
                try:
                    meta = json.loads(rec["caption_meta"]) if rec["caption_meta"] else {}
                except json.JSONDecodeError:
                    meta = {}
                if not isinstance(meta, dict):
                    meta = {}
                for ins in instructions:
                    if (i, ins.field) not in results:
                        continue
                    text, reason = results[(i, ins.field)]
                    if reason is not None:
                        rec[ins.field] = ""
                        meta.pop(ins.field, None)
                        failures.append({"shard": job.name, "key": key, "field": ins.field,
                                         "instruction": ins.name, "reason": reason})
                    elif text is not None:
                        rec[ins.field] = text
                        meta[ins.field] = provenance[ins.field]
                        written += 1
                rec["caption_meta"] = json.dumps(meta, sort_keys=True) if meta else ""
                schema.validate(rec, f"{job.name}: sample {key!r}")
                w.write(key, {**members, "json": json.dumps(rec, sort_keys=True, separators=(",", ":")).encode()})
                count += 1
            bar.update(len(batch))
    nbytes, sha = out.digest(job.name)
    models = sorted({str(p.get("model") or p["backend"]) for p in provenance.values()})
    stats = {"shard": job.name, "samples": count, "bytes": nbytes, "sha256": sha, "input_bytes": job.in_bytes,
             "input_sha256": job.in_sha256, "fingerprint": fp, "complete": not failures, "failures": failures,
             "captions_written": written, "model": ", ".join(models), "seconds": round(time.perf_counter() - t0, 3),
             "caption_version": CAPTION_VERSION}
    out.write_json(_marker(job.name), stats)
    return stats


# ---------------------------------------------------------------- the run


def _plan(out: Folder, inputs: list, fp: str) -> tuple[list[_Job], dict[str, dict]]:
    """Which shards to caption (fully or only their failures) and which are complete."""
    jobs, done = [], {}
    for src in inputs:
        nbytes, sha = file_digest(src)
        name = basename(src)
        job = _Job(name, src, nbytes, sha)
        try:
            st = json.loads(out.read_text(_marker(name)))
        except (OSError, json.JSONDecodeError):
            st = None
        if (st and st.get("fingerprint") == fp and st.get("input_sha256") == sha
                and out.size(name) == st.get("bytes")):
            if st.get("complete"):
                done[name] = st
                continue
            job.retry = {}
            for f in st.get("failures", []):
                job.retry.setdefault(f["key"], set()).add(f["field"])
        jobs.append(job)
    return jobs, done


def _check_out(cfg: CaptionConfig, out: Folder, inputs: list, fp: str, settings: dict) -> None:
    names = [basename(p) for p in inputs]
    if out.exists(RUN_FILE):
        try:
            prev = json.loads(out.read_text(RUN_FILE))
        except (OSError, json.JSONDecodeError):
            prev = {}
        same = prev.get("fingerprint") == fp and prev.get("input_shards") == names
        if not same and not cfg.overwrite:
            raise RunError(f"{out} holds captions of other settings or other input shards; use a new --out "
                           "folder, or --overwrite to replace them")
        if not same:
            _clear(out)
    elif out.glob("*.tar"):
        if not cfg.overwrite:
            raise RunError(f"{out} already holds shards of an unknown run; use a new --out folder or --overwrite")
        _clear(out)
    for tmp in out.glob("*.tmp") + out.glob(f"{STATS_DIR}/*.tmp"):
        out.rm(tmp)
    out.rm("manifest.json")  # a manifest means complete: none while this run writes (a retry reads its own shards)
    out.write_json(RUN_FILE, {"fingerprint": fp, "input_shards": names, "settings": settings,
                            "input": cfg.shards if is_url(cfg.shards) else str(Path(cfg.shards).resolve())})


def _clear(out: Folder) -> None:
    for name in out.glob("*.tar") + out.glob(f"{STATS_DIR}/*.json") + [
            "manifest.json", FAILURES_FILE, "README.md", RUN_FILE, "rejects.jsonl"]:
        out.rm(name)


def _bar(total: int | None, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc="caption", unit="rec", disable=not enabled, dynamic_ncols=True, file=sys.stderr)


def run(cfg: CaptionConfig, backend: Backend | None = None) -> CaptionResult:
    """Caption (or resume captioning) ``cfg.shards`` into ``cfg.out``; ``backend`` overrides ``cfg.backend``.

    With ``--executor ray`` a given ``backend`` is pickled to every actor; otherwise each
    actor builds it from ``cfg`` (so ``--model`` must be readable on every node).
    """
    backend_given = backend
    t0 = time.perf_counter()
    validate_config(cfg)
    set_storage_options(cfg.storage_options)
    try:
        inputs = shard_paths(cfg.shards)
    except (FileNotFoundError, ValueError) as e:
        raise RunError(str(e)) from None
    if not inputs:
        raise RunError(f"{cfg.shards}: no *.tar shards")
    try:
        out = Folder(cfg.out, cfg.storage_options)
    except ValueError as e:
        raise RunError(str(e)) from None
    if is_url(cfg.shards):
        in_dir = cfg.shards.rstrip("/")
        if in_dir.endswith(".tar"):
            in_dir = in_dir.rsplit("/", 1)[0]
    else:
        src_root = local_path(cfg.shards)
        in_dir = (src_root if src_root.is_dir() else src_root.parent).resolve()
    if (str(out) if not out.local else out.path.resolve()) == in_dir:
        raise RunError(f"--out {cfg.out} is the input folder; write the captioned shards to a new folder")
    instructions = select(cfg.instructions or DEFAULT_INSTRUCTIONS[cfg.backend],
                          load_instructions(cfg.instructions_file))
    distributed = cfg.executor == "ray" or cfg.workers > 1
    if backend is None:  # workers load the model; the driver only needs its description, made where they run
        backend = _describe_on_workers(cfg) if distributed else make_backend(cfg)
    provenance = {ins.field: backend.provenance(ins, cfg.image) for ins in instructions}
    fp = _fingerprint(backend, provenance)
    settings = {"backend": backend.name, "image": cfg.image, "batch_size": cfg.batch_size,
                "instructions": {i.name: {"field": i.field, "text": i.text} for i in instructions},
                "provenance": provenance}
    try:
        out.mkdir()
    except ValueError as e:
        raise RunError(str(e)) from None
    try:
        with output_lock(out, "caption run", cfg.storage_options):
            return _run_locked(cfg, backend, backend_given, out, inputs, in_dir, instructions, provenance, fp, settings,
                               distributed, t0)
    except LockHeld as e:
        raise RunError(str(e)) from None


def _run_locked(cfg: CaptionConfig, backend: Backend, backend_given: Backend | None, out: Folder, inputs: list,
                in_dir, instructions: list[Instruction], provenance: dict, fp: str, settings: dict, distributed: bool,
                t0: float) -> CaptionResult:
    """The caption run once this process holds the lock on ``--out`` (one writer per output)."""
    _check_out(cfg, out, inputs, fp, settings)

    in_manifest = _read_manifest(in_dir)
    jobs, done = _plan(out, inputs, fp)
    counts = {s["name"]: s["samples"] for s in in_manifest.get("shards", [])}
    names = [basename(p) for p in inputs]
    total = sum(counts.get(n, 0) for n in names) if all(n in counts for n in names) else None
    bar = _bar(total, cfg.progress)
    bar.update(sum(st["samples"] for st in done.values()))
    written = 0
    try:
        if cfg.executor == "local" and (cfg.workers == 1 or len(jobs) < 2):
            if jobs and distributed and backend_given is None:  # one shard left: caption it here after all
                backend = make_backend(cfg)
            for job in jobs:
                try:
                    st = caption_shard(job, out, cfg, backend, instructions, provenance, fp, bar)
                except BackendUnavailable as e:
                    raise RunError(f"{e}; the shards finished so far are kept in {out}: run the same command "
                                   "again once the server answers") from None
                written += st["captions_written"]
        elif jobs:
            written = _run_on_executor(cfg, jobs, fp, backend_given, bar)
    finally:
        bar.close()

    stats = [json.loads(out.read_text(_marker(n))) for n in names]
    failures = [f for st in stats for f in st["failures"]]
    out.write_text(FAILURES_FILE, "".join(json.dumps(f, sort_keys=True) + "\n" for f in failures))
    manifest = write_outputs(out, in_dir, in_manifest, stats, settings, fp, failures)
    return CaptionResult(out=out.path if out.local else out.url, samples=manifest["samples"], shards=len(inputs),
                         shards_done=len(jobs),
                         shards_skipped=len(done), captions=written, failures=failures,
                         seconds=time.perf_counter() - t0, manifest=manifest)


# ---------------------------------------------------------------- manifest and card


class _NoBar:
    def update(self, n: int) -> None:
        pass


@dataclass
class _Context:
    """What every worker of a caption run holds: the backend (its model loaded once) and the jobs."""

    cfg: CaptionConfig
    jobs: list[_Job]
    fp: str
    backend: Backend
    instructions: list[Instruction]
    provenance: dict[str, dict]


def _setup_worker(state: tuple) -> _Context:
    """Once per worker (Ray actor): build the backend and check it captions as the driver planned."""
    cfg, jobs, fp, backend = state
    set_storage_options(cfg.storage_options)
    if backend is None:
        backend = make_backend(cfg)
    instructions = select(cfg.instructions or DEFAULT_INSTRUCTIONS[cfg.backend],
                          load_instructions(cfg.instructions_file))
    provenance = {ins.field: backend.provenance(ins, cfg.image) for ins in instructions}
    if _fingerprint(backend, provenance) != fp:
        raise RunError("a worker's backend differs from the driver's (other model files on this node?)")
    return _Context(cfg, jobs, fp, backend, instructions, provenance)


def _for_workers(cfg: CaptionConfig) -> CaptionConfig:
    """``cfg`` with absolute local paths: workers (other processes, Ray nodes) have other working folders."""
    from dataclasses import replace

    model = absolute(cfg.model) if cfg.model and Path(cfg.model).exists() else cfg.model  # else a hub id
    return replace(cfg, out=absolute(cfg.out), shards=absolute(cfg.shards), source_dir=absolute(cfg.source_dir),
                   instructions_file=absolute(cfg.instructions_file), model=model)


def _describe_task(cfg: CaptionConfig, _: int) -> dict:
    """On a worker: the backend's description (name, pixels, settings) without loading its weights."""
    set_storage_options(cfg.storage_options)
    b = make_backend(cfg, load=False)
    return {"name": b.name, "needs_pixels": b.needs_pixels, "settings": b.settings}


def _describe_on_workers(cfg: CaptionConfig) -> Backend:
    """The backend as the workers will build it (device and dtype resolved where they run)."""
    if cfg.executor != "ray":
        return make_backend(cfg, load=False)
    try:
        with make_executor("ray", 1, cfg.max_retries, cfg.ray_address, cfg.gpus_per_worker) as ex:
            got = ex.map_shards(_describe_task, [0], _for_workers(cfg)).results[0]
    except TaskFailed as e:
        raise RunError(f"cannot describe the {cfg.backend} backend on a Ray worker: {e}") from None
    except Exception as e:
        raise RunError(str(e)) from None
    return Backend(name=got["name"], needs_pixels=got["needs_pixels"], settings=got["settings"])


def caption_task(ctx: _Context, i: int) -> dict:
    """The executor's task: caption job ``i`` of the run."""
    return caption_shard(ctx.jobs[i], Folder(ctx.cfg.out), ctx.cfg, ctx.backend, ctx.instructions, ctx.provenance,
                         ctx.fp, _NoBar())


def _run_on_executor(cfg: CaptionConfig, jobs: list[_Job], fp: str, backend: Backend | None, bar) -> int:
    from dataclasses import replace

    cfg = _for_workers(cfg)
    jobs = [replace(j, src=absolute(j.src)) for j in jobs]
    try:
        ex = make_executor(cfg.executor, min(cfg.workers, len(jobs)), cfg.max_retries, cfg.ray_address,
                           cfg.gpus_per_worker)
    except Exception as e:
        raise RunError(str(e)) from None
    written = 0

    def done(_: int, st: dict) -> None:
        nonlocal written
        written += st["captions_written"]
        bar.update(st["samples"])

    warn_local_paths(ex, cfg.out, cfg.shards, cfg.model if cfg.model and Path(cfg.model).exists() else None)
    try:
        with ex:
            ex.map_shards(caption_task, range(len(jobs)), (cfg, jobs, fp, backend), done, setup=_setup_worker)
    except TaskFailed as e:
        names = ", ".join(jobs[i].name for i in e.failed)
        raise RunError(f"captioning {names} failed: {e}; run the same command again to resume") from None
    return written


def _read_manifest(folder: Path | str) -> dict:
    """The input folder's manifest as the shard reader checks it ({} when there is none)."""
    from pirs.degrade.shards import ShardError, read_manifest

    try:
        return read_manifest(folder) or {}
    except ShardError as e:
        raise RunError(str(e)) from None


def write_outputs(out: Folder, in_dir: Path | str, in_manifest: dict, stats: list[dict], settings: dict, fp: str,
                  failures: list[dict]) -> dict:
    """Write rejects.jsonl, the card, and manifest.json last (the input's, with new shards, checksums and the
    caption settings)."""
    in_shas = [st["input_sha256"] for st in stats]
    manifest: dict[str, Any] = {
        "pirs_version": PIRS_VERSION, "schema_version": schema.SCHEMA_VERSION, "fingerprint": "",
        "args": {"crop_size": "unknown", "scale": None, "seed": "unknown"},
        "recipe": {"name": "unknown", "version": "", "hash": "", "source": "", "resolved": None},
        "inputs": {"seen": 0, "usable": 0, "rejected": 0}, "sample_rejects": 0,
    }
    manifest.update(in_manifest)
    manifest.update({
        "samples": sum(st["samples"] for st in stats),
        "shards": [{"name": st["shard"], "samples": st["samples"], "bytes": st["bytes"], "sha256": st["sha256"],
                    "model": st["model"], "complete": st["complete"], "failures": len(st["failures"]),
                    "input_sha256": st["input_sha256"]} for st in stats],
        "content_sha256": content_sha256([st["sha256"] for st in stats]),
        "captions": {**settings, "fingerprint": fp, "caption_version": CAPTION_VERSION,
                     "complete": not failures, "failures": len(failures),
                     "input": {"folder": str(in_dir), "content_sha256": content_sha256(in_shas)}},
    })
    from pirs.degrade.limits import max_file_bytes

    try:
        with open_read(join(in_dir, "rejects.jsonl")) as f:
            data = f.read(max_file_bytes() + 1)
    except OSError:
        data = b""
    if len(data) > max_file_bytes():
        raise RunError(f"{join(in_dir, 'rejects.jsonl')}: over {max_file_bytes()} bytes (PIRS_MAX_FILE_BYTES)")
    rejects = data.decode("utf-8", "replace")
    out.write_text("rejects.jsonl", rejects)
    r = manifest["recipe"]
    recipe = SimpleNamespace(name=r.get("name") or "unknown", version=r.get("version") or "",
                             hash=r.get("hash") or "", description=r.get("description") or r.get("name") or "",
                             source=r.get("source") or "", scales=lambda: set())
    out.write_card(manifest, recipe, extra=_captions_section(manifest, failures))
    out.write_json("manifest.json", manifest)  # last: a manifest means the run is complete
    return manifest


def _captions_section(manifest: dict, failures: list[dict]) -> str:
    c = manifest["captions"]
    lines = ["", "## Captions", "",
             f"Written by pirs `caption run` with the `{c['backend']}` backend from the `{c['image']}` image "
             f"(caption fingerprint `{c['fingerprint'][:12]}`).", "",
             "| instruction | field | text | model |", "| --- | --- | --- | --- |"]
    for name, ins in c["instructions"].items():
        prov = c["provenance"][ins["field"]]
        text = ins["text"].replace("|", "\\|")
        lines.append(f"| `{name}` | `{ins['field']}` | {text} | {prov.get('model') or prov['backend']} |")
    lines += ["", "Each record's `caption_meta` is a JSON object giving, per caption field, what wrote it.",
              f"Records whose captioning failed: {len(failures)}"
              + (" (listed in `caption_failures.jsonl`; the same `caption run` command retries them)."
                 if failures else "."), ""]
    return "\n".join(lines)
