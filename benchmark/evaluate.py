"""``bench evaluate``: pair predictions with a test set, score them with every metric, write the results.

Each image is decoded once (:func:`~pirs.benchmark.pairing.iter_decoded`), grouped with
images of the same size into batches, and each batch is fed to every metric; metric
models are built once (:func:`~pirs.benchmark.scorers.build_scorers`), on the GPU when
there is one (``device="auto"``). Pairing problems stop the run before any model is
built, unless ``allow_missing``; pixels that turn out to be corrupt while scoring stop
it at the end with the same report (no results are written).

``executor="ray"`` runs the scoring as one task on a Ray cluster (with ``gpus_per_worker``
GPUs, retried like a shard task) and writes the same files on the driver: the results
JSON is identical to a local run's except its timing fields ``date`` and ``seconds``.
The scoring is not split into chunks: set metrics (FID) need every image at once, and
one pass keeps the floating-point summation order, hence every value, identical.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .pairing import Pairing, PairingError, iter_decoded, load_reference, pair

CACHE_ENV = "PIRS_CACHE_DIR"
DEFAULT_CACHE_DIR = "~/.cache/pirs/features"


def default_cache_dir() -> str:
    """``$PIRS_CACHE_DIR``, else ``~/.cache/pirs/features``."""
    return os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR


@dataclass
class EvalConfig:
    """Arguments of one evaluation (the ``bench evaluate`` options)."""

    predictions: str
    reference: str
    metrics: str | list[str]
    out: str
    method: str | None = None
    batch_size: int = 8
    device: str = "auto"
    weights_dir: str | None = None
    cache_dir: str | None = field(default_factory=default_cache_dir)  # FID / CLIP-I reference features; None: off
    clip_model: str | None = None  # clip-i / clip-t checkpoint (default: the scorers' default)
    allow_missing: bool = False
    crop_border: int = 0
    per_image: str | None = None  # default: the summary's path with .csv
    progress: bool = True
    workers: int | None = None  # decoding threads (default: up to 4)
    executor: str = "local"  # local | ray: where the scoring runs; the results are the same
    ray_address: str | None = None
    gpus_per_worker: float = 0.0
    max_retries: int = 2
    storage_options: dict | None = None  # fsspec options for a URL --reference; never written out
    bootstrap: int = 1000  # resamples of the 95% interval of each mean (0: no interval)
    seed: int = 0  # the bootstrap's generator seed (recorded)


def check_device(device: str) -> str:
    """Refuse a device name other than ``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (without importing torch)."""
    if device not in ("cpu", "auto", "cuda") and not re.fullmatch(r"cuda:\d+", device):
        raise ValueError(f"--device {device}: expected cpu, cuda, cuda:N or auto")
    return device


def resolve_device(device: str) -> str:
    """``auto`` to ``cuda`` when available, else ``cpu``; refuse ``cuda`` without a GPU."""
    import torch

    check_device(device)
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: no CUDA device is available (use --device cpu or auto)")
    return device


def method_name(cfg_method: str | None, pairing: Pairing) -> str:
    """``--method``, else run.json's ``method`` (or ``name``), else the predictions folder's name."""
    if cfg_method:
        return cfg_method
    run = pairing.run or {}
    for k in ("method", "name"):
        if isinstance(run.get(k), str) and run[k]:
            return run[k]
    return pairing.predictions_path.resolve().name


def batches(items: Iterable[tuple[str, np.ndarray, np.ndarray]], batch_size: int,
            max_pending: int | None = None) -> Iterator[list[tuple[str, np.ndarray, np.ndarray]]]:
    """Group ``(key, pred, ref)`` items of equal size into batches of at most ``batch_size``.

    Holds at most ``max_pending`` (default 4 x batch_size) decoded images waiting for
    company; beyond that the fullest group goes out early, so a set of all-different
    sizes streams one image at a time instead of piling up in memory.
    """
    max_pending = max_pending or 4 * batch_size
    groups: dict[tuple, list] = {}
    pending = 0
    for item in items:
        g = groups.setdefault(item[1].shape, [])
        g.append(item)
        pending += 1
        if len(g) >= batch_size:
            pending -= len(g)
            yield groups.pop(item[1].shape)
        elif pending > max_pending:
            shape = max(groups, key=lambda s: len(groups[s]))
            pending -= len(groups[shape])
            yield groups.pop(shape)
    for shape in list(groups):
        yield groups.pop(shape)


def _captions(pairing: Pairing, keys: list[str]) -> list[str]:
    """Per key, the caption a text metric scores against: the high-level caption, else the source's."""
    out = []
    for k in keys:
        c = pairing.reference.items[k].captions
        out.append(c.get("caption_high") or c.get("caption_source") or "")
    return out


def _check_captions(pairing: Pairing, specs: list) -> None:
    from .registry import TEXT

    text = [s.name for s in specs if s.kind == TEXT]
    if not text:
        return
    empty = [k for k, c in zip(pairing.keys, _captions(pairing, pairing.keys), strict=True) if not c]
    if empty:
        raise PairingError(f"{', '.join(text)} score an image against its caption, but {len(empty)} of the "
                           f"{len(pairing.keys)} reference records in {pairing.reference.path} have none "
                           f"(caption_high or caption_source), e.g. {', '.join(empty[:5])}. Caption the test set "
                           "first (`caption`), or leave these metrics out.")


def evaluate(cfg: EvalConfig) -> dict:
    """Run one evaluation; write the summary JSON and the per-image table; return the summary."""
    from pirs.degrade.fs import is_url, set_storage_options

    from . import results

    t0 = time.perf_counter()
    if cfg.executor not in ("local", "ray"):
        raise ValueError(f"--executor must be local or ray, got {cfg.executor!r}")
    set_storage_options(cfg.storage_options)
    if is_url(cfg.out) or (cfg.per_image and is_url(cfg.per_image)):
        return _evaluate_to_url(cfg)
    specs, options, out, table_path = _prepare(cfg)
    if cfg.executor == "ray":
        res = _score_on_ray(cfg)
    else:
        res = _score(cfg, specs, options, out, table_path, t0)
    results.write_table(res["table"], table_path)
    results.write_summary(res["summary"], out)
    return res["summary"]


def _check_unpaired(pairing: Pairing, specs: list) -> None:
    """Refuse metrics that need a reference image when some records have none (real photos)."""
    from . import registry

    without_hq = set(pairing.reference.unpaired)
    unpaired = [k for k in pairing.keys if k in without_hq]
    need = [s.name for s in specs if s.kind in (registry.FR, registry.SET)]
    if unpaired and need:
        no_ref = ", ".join(n for n, s in registry.REGISTRY.items() if s.kind in (registry.NR, registry.TEXT))
        raise PairingError(f"{pairing.reference.path}: {len(unpaired)} of {len(pairing.keys)} records have no HQ image "
                           f"(real photos without ground truth, e.g. {unpaired[0]}), so {', '.join(need)} cannot be "
                           f"computed; score them with no-reference or text metrics: {no_ref}")


def _evaluate_to_url(cfg: EvalConfig) -> dict:
    """``--out s3://..``: score into a temporary folder, then publish the table and the summary last."""
    import tempfile
    from dataclasses import replace

    from pirs.degrade.fs import Folder, basename, is_url

    parent, name = cfg.out.rstrip("/").rsplit("/", 1) if is_url(cfg.out) else (None, None)
    table = cfg.per_image or (f"{parent}/{Path(name).stem}.csv" if parent else None)
    if not (is_url(cfg.out) and is_url(table) and table.rsplit("/", 1)[0] == parent):
        raise ValueError(f"--out {cfg.out} and --per-image {cfg.per_image}: with object storage both must be "
                         "URLs in the same folder")
    if not name.endswith(".json"):
        raise ValueError(f"--out {cfg.out}: the summary must be a .json file")
    with tempfile.TemporaryDirectory(prefix="pirs-bench-") as tmp:
        local = replace(cfg, out=str(Path(tmp) / name), per_image=str(Path(tmp) / basename(table)))
        summary = evaluate(local)
        folder = Folder(parent)
        folder.write_bytes(basename(table), Path(local.per_image).read_bytes())
        folder.write_bytes(name, Path(local.out).read_bytes())  # last: a summary means the scores are complete
    return summary


def _prepare(cfg: EvalConfig):
    """Check the arguments: ``(metric specs, scorer options, summary path, table path)``."""
    from . import registry

    specs = registry.parse(cfg.metrics)
    if cfg.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {cfg.batch_size}")
    check_device(cfg.device)
    if cfg.crop_border < 0:
        raise ValueError(f"--crop-border must be 0 or more, got {cfg.crop_border}")
    if cfg.bootstrap < 0:
        raise ValueError(f"--bootstrap must be 0 (no intervals) or more resamples, got {cfg.bootstrap}")
    out = Path(cfg.out)
    if out.suffix != ".json":
        raise ValueError(f"--out {cfg.out}: the summary is a .json file")
    table_path = Path(cfg.per_image) if cfg.per_image else out.with_suffix(".csv")
    if table_path.resolve() == out.resolve():
        raise ValueError(f"--per-image {table_path}: must differ from --out")
    from .scorers import resolve_options  # light: torch loads when a model is built

    options = {"crop_border": cfg.crop_border}
    if cfg.clip_model:
        options["clip_model"] = cfg.clip_model
    options = resolve_options(options)
    return specs, options, out, table_path


def _eval_task(cfg: EvalConfig, _: int) -> dict:
    """The scoring as an executor task (on a Ray worker): ``{"summary", "table"}``."""
    from pirs.degrade.fs import set_storage_options

    from .pairing import ReferenceError
    from .weights import DownloadBlocked, MissingWeights

    t0 = time.perf_counter()
    set_storage_options(cfg.storage_options)
    try:
        specs, options, out, table_path = _prepare(cfg)
        return _score(cfg, specs, options, out, table_path, t0)
    except (PairingError, ReferenceError, ValueError, KeyError, OSError, MissingWeights, DownloadBlocked) as e:
        # the input's (or the node's weights') fault: not retried, raised on the driver
        return {"error": e}


def _score_on_ray(cfg: EvalConfig) -> dict:
    from dataclasses import replace

    from pirs.degrade.executors import TaskFailed, make_executor
    from pirs.degrade.fs import absolute

    # the task runs on any node, in another working folder: absolute paths
    task_cfg = replace(cfg, progress=False, predictions=absolute(cfg.predictions), reference=absolute(cfg.reference),
                       out=absolute(cfg.out), per_image=absolute(cfg.per_image),
                       weights_dir=absolute(cfg.weights_dir), cache_dir=absolute(cfg.cache_dir))
    ex = make_executor("ray", 1, cfg.max_retries, cfg.ray_address, cfg.gpus_per_worker)
    try:
        with ex:
            report = ex.map_shards(_eval_task, [0], task_cfg)
    except TaskFailed as e:
        raise RuntimeError(f"the evaluation failed on the Ray cluster: {e}") from None
    if "error" in report.results[0]:
        raise report.results[0]["error"]
    return report.results[0]


def _score(cfg: EvalConfig, specs, options: dict, out: Path, table_path: Path, t0: float) -> dict:
    """Pair, build the metrics, score every image: ``{"summary", "table"}`` (nothing written)."""
    from . import registry, results
    from .scorers import build_scorers, conventions

    # -- pairing: every problem at once, before any model is built
    reference = load_reference(cfg.reference)
    pairing = pair(cfg.predictions, reference)
    pairing.check(cfg.allow_missing)
    _check_captions(pairing, specs)
    _check_unpaired(pairing, specs)
    method = method_name(cfg.method, pairing)

    # -- metrics: built once
    device = resolve_device(cfg.device)
    cache_dir = str(Path(cfg.cache_dir).expanduser()) if cfg.cache_dir else None
    scorers = build_scorers(specs, device=device, weights_dir=cfg.weights_dir, options=options,
                            cache_dir=cache_dir, fingerprint=reference.fingerprint)
    convs = conventions(specs, options)

    # -- scoring: each image decoded once, batches of equal size fed to every metric
    per_image = [s for s in specs if s.kind != registry.SET]
    values: dict[str, dict[str, float]] = {s.name: {} for s in per_image}
    sizes: dict[str, tuple[int, int]] = {}
    problems_before = pairing.report.problems
    bar = _bar(len(pairing.keys), cfg.progress)
    import torch

    from .images import to_batch

    try:
        with torch.inference_mode():
            for batch in batches(iter_decoded(pairing, workers=cfg.workers), cfg.batch_size):
                bar.update(len(batch))
                if pairing.report.problems > problems_before and not cfg.allow_missing:
                    continue  # keep decoding to report every bad file, but stop scoring
                keys = [k for k, _, _ in batch]
                pred = to_batch([p for _, p, _ in batch], device)
                refs = [r for _, _, r in batch]
                ref = None if any(r is None for r in refs) else to_batch(refs, device)  # None: unpaired records
                captions = _captions(pairing, keys) if any(s.kind == registry.TEXT for s in specs) else None
                for spec, scorer in zip(specs, scorers, strict=True):
                    if spec.kind == registry.SET:
                        scorer.update(pred, ref)
                        continue
                    v = scorer.score(pred, ref, captions=captions) if spec.kind == registry.TEXT \
                        else scorer.score(pred, ref)
                    v = v.detach().to("cpu", torch.float64).reshape(-1).tolist()
                    if len(v) != len(keys):
                        raise RuntimeError(f"metric {spec.name} returned {len(v)} scores for a batch of {len(keys)}")
                    values[spec.name].update(zip(keys, v, strict=True))
                for k, p, _ in batch:
                    sizes[k] = p.shape[:2]
    finally:
        bar.close()
    if pairing.report.problems > problems_before and not cfg.allow_missing:
        raise PairingError(pairing.message())
    scored = [k for k in pairing.keys if k in sizes]
    if not scored:
        raise PairingError(f"{cfg.predictions}: no prediction could be scored\n{pairing.report.text()}")
    set_values = {s.name: float(sc.compute()) for s, sc in zip(specs, scorers, strict=True) if s.kind == registry.SET}

    # -- results
    ref_items = reference.items
    rows = [{"key": k, "prediction": pairing.preds[k].name, "height": sizes[k][0], "width": sizes[k][1],
             **{s.name: values[s.name][k] for s in per_image}, "labels": "+".join(ref_items[k].labels)}
            for k in scored]
    table = results.per_image_table(rows, [s.name for s in per_image])
    settings = {"metrics": [s.name for s in specs], "batch_size": cfg.batch_size, "device": device,
                "crop_border": cfg.crop_border, "options": options, "weights_dir": _weights_dir(cfg.weights_dir),
                "cache_dir": str(Path(cfg.cache_dir).expanduser().resolve()) if cfg.cache_dir else None}
    summary = results.summarize(method=method, pairing=pairing, specs=specs, table=table, set_values=set_values,
                                conventions=convs, settings=settings, allow_missing=cfg.allow_missing,
                                seconds=time.perf_counter() - t0, per_image_file=_relative(table_path, out.parent),
                                statistics=results.statistics_settings(cfg.bootstrap, cfg.seed),
                                weights=getattr(scorers, "weights", []))
    return {"summary": summary, "table": table}


def _weights_dir(given: str | None) -> str:
    from .weights import resolve_weights_dir

    return str(resolve_weights_dir(given))


def _relative(path: Path, start: Path) -> str:
    try:
        return os.path.relpath(path.resolve(), start.resolve())
    except ValueError:  # another drive
        return str(path.resolve())


def _bar(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc="bench evaluate", unit="img", disable=not enabled, dynamic_ncols=True)
