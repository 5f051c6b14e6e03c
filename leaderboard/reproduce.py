"""``leaderboard reproduce``: one paper table setting, end to end, as a row beside the paper's number.

A setting is (paper, table, test set), e.g. ``diff-restorer:table-i:diffrestorer-haze``
(``leaderboard reproduce --list``). Given a method and its checkpoint and the raw data
source, the stages are the individual commands, writing the same files under ``--work``:

1. ``testset/``: the test set, built by ``degrade testset ID --source DIR`` or reused when
   its manifest names the same id (and, once a fingerprint is published, matches it);
2. ``predictions/NAME/``: ``restore predict`` under the method's inference protocol (the
   config the checkpoint was trained with, whose values cite the paper or official code),
   or ``bench baseline`` for ``identity|bicubic|lanczos`` and spandrel checkpoints;
3. ``results/NAME.json``: ``bench evaluate`` with exactly the metrics the table prints;
4. ``leaderboard/``: ``leaderboard render`` of that test set with the method matched to
   the paper's row, and ``reproduction.md``/``.json``: paper value, ours, difference, and
   whether ours is better or worse given the metric's direction.

Each stage is skipped when its output is already there and complete (predictions resume
image by image), so an interrupted run continues where it stopped. ``--dry-run`` prints the
plan (test set, counts, protocol, metrics, weight files, estimated GPU time and memory from
parameter counts built on the meta device) without loading any weights or images.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BASELINES = ("identity", "bicubic", "lanczos")
PIRS_METHODS = ("spire", "xpsr", "diffrestorer", "dpir")
#: The paper's name of each pirs method (the rows a reproduction is compared with).
PAPER_METHOD = {"spire": "SPIRE", "xpsr": "XPSR", "diffrestorer": "Diff-Restorer", "dpir": "DPIR",
                "bicubic": "Bicubic", "identity": "Identity", "lanczos": "Lanczos"}


class ReproduceError(ValueError):
    """A reproduction that cannot run as asked; the message says what is missing and how to fix it."""


def slug(text: str) -> str:
    """Lower-case letters and digits joined by single dashes: ``Table I`` -> ``table-i``."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


@dataclass
class TableSetting:
    """One (paper, table, test set) of ``leaderboard/papers/``: its metrics and methods."""

    paper: str
    table: str
    setting: str
    label: str
    test_set: str
    file: str
    metrics: list[tuple[str, str]] = field(default_factory=list)  # (metric, direction), table order
    methods: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        """``paper:table:test_set`` in lower-case slugs."""
        return f"{slug(self.paper)}:{slug(self.table)}:{self.test_set}"


def table_settings(papers_dir: str | Path | None = None) -> list[TableSetting]:
    """Every paper table setting, in the order of the tables' files and rows."""
    from .papers import load_paper_tables

    df = load_paper_tables(papers_dir)
    out: dict[tuple[str, str, str], TableSetting] = {}
    for r in df.itertuples(index=False):
        k = (r.paper, r.table, r.test_set)
        s = out.get(k)
        if s is None:
            s = out[k] = TableSetting(r.paper, r.table, r.setting, r.setting_label, r.test_set, r.source_file)
        if (r.metric, r.direction) not in s.metrics and r.value == r.value:  # NaN: a cell printed "-"
            s.metrics.append((r.metric, r.direction))
        if r.method not in s.methods:
            s.methods.append(r.method)
    return list(out.values())


def find_setting(text: str, papers_dir: str | Path | None = None) -> TableSetting:
    """The setting named ``text``: its full key, ``paper:test_set``, or a test-set id that one table holds."""
    settings = table_settings(papers_dir)
    want = text.strip().lower()
    exact = [s for s in settings if s.key == want]
    if exact:
        return exact[0]
    parts = want.split(":")
    cand = [s for s in settings if (len(parts) == 2 and slug(s.paper) == slug(parts[0]) and s.test_set == parts[1])
            or (len(parts) == 1 and s.test_set == want)]
    if len(cand) == 1:
        return cand[0]
    if len(cand) > 1:
        raise ReproduceError(f"setting {text!r} is in several tables; name one: "
                             + ", ".join(s.key for s in cand))
    close = difflib.get_close_matches(want, [s.key for s in settings], n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ReproduceError(f"unknown table setting {text!r}.{hint} See `leaderboard reproduce --list`.")


@dataclass
class ReproduceConfig:
    """Arguments of ``leaderboard reproduce``."""

    setting: str
    method: str
    work: str
    checkpoint: str | None = None  # a run folder (pirs methods) or a weights file (spandrel baselines)
    source: str | None = None  # the test set's raw data (not needed once work/testset is built)
    testset: str | None = None  # an already built test set folder to use instead of work/testset
    name: str | None = None  # our row's method name (default: the method, or spandrel's architecture)
    paper_method: str | None = None  # the paper row to compare with (default: the method's paper name)
    base: str | None = None
    weights_dir: str | None = None
    device: str = "auto"
    workers: int = 1
    limit: int | None = None  # only the first N test images (a quick look; the result is marked partial)
    seed: int = 0
    protocol: dict[str, Any] = field(default_factory=dict)  # restore predict overrides (steps, tile_size, ...)
    metrics: list[str] | None = None  # a subset of the table's metrics (e.g. while some weights are missing)
    papers_dir: str | None = None
    progress: bool = True


def table_metrics(setting: TableSetting, only: list[str] | None = None) -> list[tuple[str, str]]:
    """The table's metrics, or the subset ``only`` of them (anything else is refused)."""
    if not only:
        return list(setting.metrics)
    known = [m for m, _ in setting.metrics]
    extra = [m for m in only if m not in known]
    if extra:
        raise ReproduceError(f"--metrics {','.join(extra)}: not in {setting.paper} {setting.table} on "
                             f"{setting.test_set} (it prints {', '.join(known)})")
    return [(m, d) for m, d in setting.metrics if m in only]


def _kind(method: str) -> str:
    if method in PIRS_METHODS:
        return "pirs"
    if method in BASELINES:
        return "baseline"
    if method == "spandrel":
        return "spandrel"
    close = difflib.get_close_matches(method, [*PIRS_METHODS, *BASELINES, "spandrel"], n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ReproduceError(f"unknown method {method!r}.{hint} Choose one of {', '.join(PIRS_METHODS)}, "
                         f"{', '.join(BASELINES)} or spandrel (with --checkpoint FILE)")


def _paths(cfg: ReproduceConfig, name: str) -> dict[str, Path]:
    work = Path(cfg.work)
    return {"testset": Path(cfg.testset) if cfg.testset else work / "testset",
            "predictions": work / "predictions" / name, "results": work / "results" / f"{name}.json",
            "leaderboard": work / "leaderboard", "view_md": work / "reproduction.md",
            "view_json": work / "reproduction.json"}


def _our_name(cfg: ReproduceConfig) -> str:
    if cfg.name:
        return cfg.name
    if cfg.method == "spandrel":
        return "spandrel-" + slug(Path(cfg.checkpoint or "model").stem)
    return cfg.method


def _trained_protocol(cfg: ReproduceConfig) -> tuple[Any, dict, str]:
    """(protocol, description of the checkpoint, config name) from the checkpoint's trainer.json, no weights."""
    from pirs.models import checkpoint as ckpt
    from pirs.models.method import load_config
    from pirs.models.sampling import protocol_of
    from pirs.models.sizes import REAL_CONFIG

    folder = ckpt.latest(cfg.checkpoint) if cfg.checkpoint else None
    if folder is not None:
        meta = ckpt.read_meta(folder)
        if meta["method"] != cfg.method:
            raise ReproduceError(f"--checkpoint {folder} is a {meta['method']} checkpoint, not {cfg.method}")
        config = load_config(cfg.method, meta["config_name"], meta.get("overrides"))
        desc = {"checkpoint": str(folder), "step": meta["step"], "config": meta["config_name"]}
        name = meta["config_name"]
    else:
        name = REAL_CONFIG[cfg.method]
        config = load_config(cfg.method, name)
        where = f"no checkpoint in {cfg.checkpoint}" if cfg.checkpoint else "no --checkpoint given"
        desc = {"checkpoint": None, "note": f"{where}: the plan shows the shipped {name} config"}
    return protocol_of(config, **cfg.protocol), desc, name


def plan(cfg: ReproduceConfig) -> dict:
    """What a run would do, without loading any weights or images (``--dry-run``)."""
    from pirs.benchmark import registry
    from pirs.benchmark.weights import missing_files, required_files, resolve_weights_dir
    from pirs.degrade.testsets import TestsetError, count_source, load_testset

    setting = find_setting(cfg.setting, cfg.papers_dir)
    kind = _kind(cfg.method)
    name = _our_name(cfg)
    paths = _paths(cfg, name)
    try:
        ts = load_testset(setting.test_set)
    except TestsetError as e:
        raise ReproduceError(f"table setting {setting.key}: {e}") from None
    out: dict[str, Any] = {"setting": dataclasses.asdict(setting) | {"key": setting.key}, "method": cfg.method,
                           "name": name, "paper_method": cfg.paper_method or PAPER_METHOD.get(cfg.method),
                           "paths": {k: str(v) for k, v in paths.items()}}
    built = _built_manifest(paths["testset"])
    tsinfo: dict[str, Any] = {"id": ts.name, "dataset": ts.source.dataset, "split": ts.source.split,
                              "expected": ts.source.expected, "kind": ts.kind, "build": dict(ts.params),
                              "obtain": ts.source.obtain, "published_fingerprint": ts.fingerprint,
                              "built": bool(built), "limit": cfg.limit}
    if built:
        tsinfo["built_samples"] = built.get("samples")
        tsinfo["built_fingerprint"] = built.get("content_sha256")
    elif cfg.source:
        found, note = count_source(ts, cfg.source) if Path(cfg.source).is_dir() else (None, "")
        tsinfo["source"] = cfg.source
        tsinfo["source_found"] = found
        tsinfo["source_note"] = note
    out["test_set"] = tsinfo
    chosen = table_metrics(setting, cfg.metrics)
    specs = registry.parse([m for m, _ in chosen])
    root = resolve_weights_dir(cfg.weights_dir)
    missing = {str(x.where) for x in missing_files(specs, root)}
    out["metrics"] = [{"metric": m, "direction": d, "convention": registry.get(m).convention} for m, d in chosen]
    out["skipped_metrics"] = [m for m, _ in setting.metrics if (m, _) not in chosen]
    out["weights"] = {"dir": str(root), "files": [{"path": str(root / f.path), "metrics": list(ms),
                                                   "present": str(root / f.path) not in missing}
                                                  for f, ms in required_files(specs)]}
    n = cfg.limit or tsinfo.get("built_samples") or \
        (int(ts.params["num_samples"]) if ts.kind == "build" else ts.source.expected)
    size, size_note = _typical_size(ts, cfg.source if not built else None)
    tsinfo["typical_size"], tsinfo["size_note"] = list(size), size_note
    if kind == "pirs":
        from pirs.models.sizes import cost_estimate, real_size_counts

        protocol, desc, config_name = _trained_protocol(cfg)
        out["checkpoint"] = desc
        out["protocol"] = dataclasses.asdict(protocol)
        try:
            counts = real_size_counts(cfg.method)
        except Exception as e:  # noqa: BLE001 - an estimate must never stop a plan
            counts, est = None, {"error": f"parameter counts unavailable: {e}"}
        else:
            passes = 2 if protocol.guidance_scale != 1.0 else 1
            est = cost_estimate(cfg.method, counts, protocol, size, passes=passes)
            est |= {"images": n, "image_size": list(size), "total_gpu_hours": round(est["gpu_seconds"] * n / 3600, 2),
                    "assumes": "A100 at ~22 TFLOP/s delivered (about 20 SD-1.5 steps/s at 512 px), ~3 GB of "
                               "activations per 512 px tile; arithmetic on parameter counts, see pirs.models.sizes"}
        out["parameters_millions"] = counts
        out["estimate"] = est
    elif kind == "spandrel":
        out["checkpoint"] = {"file": cfg.checkpoint, "present": bool(cfg.checkpoint and Path(cfg.checkpoint).is_file())}
    return out


def _typical_size(ts, source: str | None) -> tuple[tuple[int, int], str]:
    """The output size an estimate uses: the crop, the median of the source's first LQ images x scale, or 512."""
    crop = ts.params.get("crop_size")
    if crop:
        return (int(crop), int(crop)), "the test set's crop"
    if source and Path(source).is_dir() and ts.kind == "ingest":
        from PIL import Image

        from pirs.degrade.ingest import find_pairs
        from pirs.degrade.layouts import get_layout
        from pirs.degrade.testsets import _ingest_config

        icfg = _ingest_config(ts, source, out="", workers=1, progress=False)
        sizes = []
        for pair in find_pairs(icfg, get_layout(icfg.layout))[0][:25]:
            try:
                with Image.open(Path(source) / pair.lq) as im:  # the header only
                    sizes.append((im.height, im.width))
            except OSError:
                continue
        if sizes:
            k = int(ts.params.get("scale") or 1)
            hs, ws = sorted(h for h, _ in sizes), sorted(w for _, w in sizes)
            return (hs[len(hs) // 2] * k, ws[len(ws) // 2] * k), f"median of {len(sizes)} source images"
    return (512, 512), "nominal (image sizes unknown until the source is given)"


def _built_manifest(folder: Path) -> dict | None:
    p = folder / "manifest.json"
    if not p.is_file():
        return None
    m = _read(p)
    return m if isinstance(m, dict) else None


def _read(path: Path):
    """A JSON file under --work (possibly left by someone else): bounded, one-line errors."""
    from pirs.degrade.limits import load_json

    try:
        return load_json(path.read_bytes(), str(path))
    except (OSError, ValueError) as e:
        raise ReproduceError(f"{path}: {e}") from None


def format_plan(p: dict) -> str:
    """The plan as the lines ``--dry-run`` prints."""
    s, ts = p["setting"], p["test_set"]
    lines = [f"setting     {s['paper']} {s['table']}, \"{s['label']}\" -> test set {ts['id']}  ({s['key']})",
             f"compare     our {p['name']!r} with the paper's {p['paper_method']!r} rows "
             f"(the table has: {', '.join(s['methods'])})"]
    how = ", ".join(f"{k}={v}" for k, v in sorted(ts["build"].items()))
    if ts["built"]:
        lines.append(f"test set    built: {p['paths']['testset']} ({ts['built_samples']} samples, fingerprint "
                     f"{str(ts['built_fingerprint'])[:16]}...); reused")
    else:
        src = ts.get("source")
        found = ts.get("source_found")
        if src is None:
            state = "no --source given"
        elif found is None:
            state = f"--source {src}: no such folder"
        else:
            state = f"--source {src}: {found} of {ts['expected']} found" + \
                (f" ({ts['source_note']})" if ts.get("source_note") else "")
        lines.append(f"test set    {ts['dataset']} ({ts['split']}), {ts['expected']} "
                     f"{'images' if ts['kind'] == 'build' else 'pairs'}, {ts['kind']}: {how}; {state}")
        lines.append(f"            obtain: {ts['obtain']}; will build into {p['paths']['testset']}"
                     + (f" (first {ts['limit']} only: partial)" if ts["limit"] else ""))
    if "protocol" in p:
        pr = p["protocol"]
        ck = p["checkpoint"]
        lines.append(f"checkpoint  {ck.get('checkpoint') or ck.get('note')}"
                     + (f" (step {ck['step']}, config {ck['config']})" if ck.get("checkpoint") else ""))
        lines.append(f"protocol    {pr['sampler']} {pr['steps']} steps, guidance {pr['guidance_scale']}, latent tiles "
                     f"{pr['tile_size']}/{pr['tile_overlap']}, VAE tiles {pr['vae_encoder_tile']}/"
                     f"{pr['vae_decoder_tile']}/{pr['vae_tile_overlap']}, colour fix {pr['color_fix']}, process size "
                     f"{pr['process_size']}, fit {pr['fit']}")
        if pr["added_prompt"] or pr["negative_prompt"]:
            lines.append(f"            added prompt {pr['added_prompt']!r}; negative prompt {pr['negative_prompt']!r}")
    elif "checkpoint" in p:
        state = "present" if p["checkpoint"]["present"] else "MISSING"
        lines.append(f"checkpoint  {p['checkpoint']['file']} ({state})")
    lines.append("metrics     " + ", ".join(f"{m['metric']} ({m['direction']})" for m in p["metrics"])
                 + (f"; left out (--metrics): {', '.join(p['skipped_metrics'])}" if p["skipped_metrics"] else ""))
    files = p["weights"]["files"]
    if files:
        missing = [f for f in files if not f["present"]]
        lines.append(f"weights     {len(files) - len(missing)} of {len(files)} metric weight files present under "
                     f"{p['weights']['dir']}")
        lines += [f"            missing: {f['path']} (for {', '.join(f['metrics'])})" for f in missing]
    else:
        lines.append("weights     the metrics need no weight files")
    est = p.get("estimate")
    if est and "error" in est:
        lines.append(f"estimate    {est['error']}")
    elif est:
        c = p["parameters_millions"]
        lines.append(f"parameters  {c['total']:.0f} M in all, {c['trainable']:.0f} M trainable, denoiser "
                     f"{c['backbone_and_trainable']:.0f} M (built on the meta device)")
        lines.append(f"estimate    per {est['image_size'][0]}x{est['image_size'][1]} image ({ts['size_note']}): "
                     f"{est['tiles']} tile(s), "
                     f"{est['tflops']} TFLOP, ~{est['gpu_seconds']} GPU s, ~{est['memory_gb']} GB "
                     f"(weights {est['weights_gb']} GB bf16); {est['images']} images: ~{est['total_gpu_hours']} GPU h "
                     f"({est['assumes']})")
    lines.append(f"outputs     {p['paths']['testset']}, {p['paths']['predictions']}, {p['paths']['results']}, "
                 f"{p['paths']['leaderboard']}, {p['paths']['view_md']}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- run


def _stage_testset(cfg: ReproduceConfig, setting: TableSetting, folder: Path, log) -> dict:
    from pirs.degrade.testsets import build_testset, load_testset

    ts = load_testset(setting.test_set)
    built = _built_manifest(folder)
    if built:
        entry = built.get("test_set") or {}
        if entry.get("id") != ts.name:
            raise ReproduceError(f"{folder} holds {entry.get('id') or 'shards that are not a standard test set'}, "
                                 f"not the test set {ts.name}; give another --work or --testset")
        partial = bool(entry.get("partial"))
        if ts.fingerprint and not partial and built.get("content_sha256") != ts.fingerprint:
            raise ReproduceError(f"{folder}: fingerprint {built.get('content_sha256')} differs from the published "
                                 f"{ts.fingerprint}: not the same test set (another source copy or pirs version)")
        if cfg.limit and built.get("samples") != cfg.limit and partial:
            log(f"testset     note: {folder} was built with another --limit ({built.get('samples')} samples)")
        log(f"testset     reuse {folder} ({built.get('samples')} samples{', partial' if partial else ''})")
        return built
    if not cfg.source:
        raise ReproduceError(f"the test set {ts.name} is not built in {folder}: give --source DIR with "
                             f"{ts.source.dataset} ({ts.source.split}); obtain it from {ts.source.obtain}")
    log(f"testset     build {ts.name} from {cfg.source} into {folder}")
    return build_testset(ts, cfg.source, str(folder), workers=cfg.workers, progress=cfg.progress,
                         allow_partial=cfg.limit is not None, limit=cfg.limit)


def _stage_predict(cfg: ReproduceConfig, kind: str, name: str, testset: Path, out: Path, log) -> dict:
    run_file = out / "run.json"
    if kind == "pirs":
        from pirs.models.predict import PredictConfig, predict

        keys = {f.name for f in dataclasses.fields(PredictConfig)}
        unknown = set(cfg.protocol) - keys
        if unknown:
            raise ReproduceError(f"unknown protocol keys {sorted(unknown)}")
        log(f"predict     {cfg.method} from {cfg.checkpoint} into {out} (resumes image by image)")
        return predict(PredictConfig(checkpoint=str(cfg.checkpoint), input=str(testset), out=str(out),
                                     method=cfg.method, seed=cfg.seed, base=cfg.base, progress=cfg.progress,
                                     **cfg.protocol))
    if run_file.is_file():
        log(f"predict     reuse {out}")
        return _read(run_file)
    if kind == "baseline":
        from pirs.benchmark.baselines import write_baseline

        log(f"predict     bench baseline {cfg.method} into {out}")
        write_baseline(cfg.method, str(testset), str(out), overwrite=True, progress=cfg.progress)
        return _read(run_file)
    from pirs.benchmark.spandrel_baseline import write_spandrel_baseline

    if not cfg.checkpoint:
        raise ReproduceError("--method spandrel needs --checkpoint FILE (a local weights file)")
    log(f"predict     spandrel {cfg.checkpoint} into {out}")
    return write_spandrel_baseline(cfg.checkpoint, str(testset), str(out), name=name, device=cfg.device,
                                   overwrite=True, progress=cfg.progress)


def _stage_score(cfg: ReproduceConfig, setting: TableSetting, name: str, testset: Path, preds: Path, out: Path,
                 log) -> dict:
    from pirs.benchmark.evaluate import EvalConfig, evaluate
    from pirs.benchmark.pairing import pair

    metrics = [m for m, _ in table_metrics(setting, cfg.metrics)]
    if out.is_file():
        old = _read(out)
        if isinstance(old, dict) and isinstance(old.get("metrics"), dict) and \
                isinstance(old.get("predictions"), dict) and sorted(old["metrics"]) == sorted(metrics) and \
                old.get("predictions", {}).get("fingerprint") == pair(str(preds), str(testset)).fingerprint:
            log(f"score       reuse {out}")
            return old
    log(f"score       bench evaluate {', '.join(metrics)} into {out}")
    return evaluate(EvalConfig(predictions=str(preds), reference=str(testset), metrics=metrics, out=str(out),
                               method=name, weights_dir=cfg.weights_dir, device=cfg.device, progress=cfg.progress))


def reproduction_rows(leaderboard: Path, setting: TableSetting, name: str) -> list[dict]:
    """The reproduction lines of our method on the setting's table (from ``reproduction.csv``)."""
    import pandas as pd

    p = leaderboard / "reproduction.csv"
    if not p.is_file():
        return []
    df = pd.read_csv(p, dtype={"prompts": str}, keep_default_na=False)
    df = df[(df["test_set"] == setting.test_set) & (df["paper"] == setting.paper) & (df["table"] == setting.table)
            & (df["our_method"] == name)]
    return df.to_dict("records")


def format_view(setting: TableSetting, rows: list[dict], results: dict) -> str:
    """The reproduction view as Markdown: paper value, ours, difference, better or worse."""
    ts = results.get("test_set", {})
    head = [f"# {setting.paper} {setting.table}, {setting.label}: reproduction",
            "",
            f"Test set `{setting.test_set}` ({ts.get('count', '?')} images, fingerprint "
            f"`{str(ts.get('fingerprint', ''))[:16]}`{', partial build' if ts.get('partial') else ''}); "
            f"ours: `{results.get('method', {}).get('name', '?')}`.",
            "",
            "| metric | paper method | prompts | paper | ours | difference | ours is |",
            "| --- | --- | --- | ---: | ---: | ---: | --- |"]
    body = []
    for r in rows:
        arrow = "↓" if r["direction"] == "lower" else "↑"
        metric = r["metric"] if r["our_metric"] == r["metric"] else f"{r['metric']} (ours: {r['our_metric']})"
        body.append(f"| {metric} {arrow} | {r['method']} | {r['prompts'] or ''} | {r['paper_value_text']} | "
                    f"{r['our_value']:.4g} | {r['difference']:+.4g} | {r['closer']} |")
    if not body:
        body = ["| (no paper row matched: check --paper-method) | | | | | | |"]
    return "\n".join(head + body) + "\n"


def run(cfg: ReproduceConfig, log=print) -> dict:
    """Run (or resume) the four stages; returns the reproduction view's rows and the paths."""
    from pirs.degrade.atomic import write_json, write_text

    from .merge import Aliases
    from .render import render

    setting = find_setting(cfg.setting, cfg.papers_dir)
    kind = _kind(cfg.method)
    if kind == "pirs" and not cfg.checkpoint:
        raise ReproduceError(f"--method {cfg.method} needs --checkpoint RUN (a run folder of `restore train`)")
    name = _our_name(cfg)
    paper_method = cfg.paper_method or PAPER_METHOD.get(cfg.method) or name
    if paper_method not in setting.methods and cfg.paper_method is None and kind != "spandrel":
        log(f"note        {setting.paper} {setting.table} has no {paper_method!r} row "
            f"({', '.join(setting.methods)}); name one with --paper-method")
    paths = _paths(cfg, name)
    Path(cfg.work).mkdir(parents=True, exist_ok=True)
    _stage_testset(cfg, setting, paths["testset"], log)
    run_info = _stage_predict(cfg, kind, name, paths["testset"], paths["predictions"], log)
    if kind == "spandrel" and not cfg.name:
        name = run_info.get("method", name)
    results = _stage_score(cfg, setting, name, paths["testset"], paths["predictions"], paths["results"], log)
    log(f"render      leaderboard render --results {paths['results']} --test-set {setting.test_set} "
        f"--method-alias {name}={paper_method} --out {paths['leaderboard']}")
    render(paths["leaderboard"], [paths["results"]], aliases=Aliases(methods={name: paper_method}),
           papers_dir=cfg.papers_dir, test_sets=[setting.test_set], log=None)
    rows = reproduction_rows(paths["leaderboard"], setting, name)
    view = format_view(setting, rows, results)
    write_text(paths["view_md"], view)
    write_json(paths["view_json"], {"setting": setting.key, "method": name, "paper_method": paper_method,
                                    "rows": rows, "results": str(paths["results"])})
    return {"setting": setting.key, "rows": rows, "view": view, "paths": {k: str(v) for k, v in paths.items()}}
