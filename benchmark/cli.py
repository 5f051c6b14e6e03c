"""``bench``: score restored images against a test set, list the metrics, compare results, write baselines."""

from __future__ import annotations

import argparse
import json
import sys

EPILOG = """examples:
  bench baseline bicubic --reference testsets/div2k-val/ --out predictions/bicubic/
  bench baseline --checkpoint weights/RealESRGAN_x4plus.pth --reference testsets/div2k-val/ \\
      --out predictions/real-esrgan/
  bench evaluate predictions/bicubic/ --reference testsets/div2k-val/ --metrics psnr,ssim,lpips \\
      --out results/bicubic.json
  bench compare results/bicubic.json results/mymethod.json
  bench metrics
"""


def _evaluate_parser(sub) -> None:
    p = sub.add_parser(
        "evaluate", help="score a folder of predictions against a test set",
        description="Pair predictions with a test set by key, score them with every metric (each image decoded "
                    "once, batches of equal size, models built once) and write a summary JSON and a per-image "
                    "table. Any pairing problem (missing, extra, wrongly sized, unreadable or duplicate files) "
                    "stops the run with a report, unless --allow-missing.")
    p.add_argument("predictions", help="folder of images named by key (KEY.png, .jpg, .webp, ...) or of .tar shards "
                                       "with a pred.png/png member per sample, a local path or URL (s3://..); "
                                       "a run.json there is copied into the results")
    p.add_argument("--reference", required=True,
                   help="the test set: a pirs shard folder (local or URL, e.g. s3://bucket/testset), or a folder of "
                        "images; records without hq.png (real photos) take no-reference metrics only")
    p.add_argument("--metrics", default=None,
                   help="comma-separated metric names (see `bench metrics`); default: the metrics of the reference's "
                        "standard test set (`degrade testset --show ID`)")
    p.add_argument("--out", default=None,
                   help="summary JSON to write, e.g. results/mymethod.json or s3://bucket/results/mymethod.json; "
                        "default: results/TEST_SET/METHOD.json")
    p.add_argument("--method", default=None,
                   help="method name (default: run.json's method, else the predictions folder's name)")
    p.add_argument("--per-image", default=None,
                   help="per-image table (.csv, or .parquet); default: --out with .csv")
    p.add_argument("--batch-size", type=int, default=8, help="images per batch (default 8)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: cuda when available)")
    p.add_argument("--weights-dir", default=None,
                   help="local folder of metric weights (default: $PIRS_WEIGHTS_DIR, else ~/.cache/pirs/weights); "
                        "nothing is ever downloaded")
    cache = p.add_mutually_exclusive_group()
    cache.add_argument("--cache-dir", default=None,
                       help="cache of reference-side FID and CLIP-I features, by test-set fingerprint "
                            "(default: $PIRS_CACHE_DIR, else ~/.cache/pirs/features)")
    cache.add_argument("--no-cache", action="store_true", help="do not read or write the feature cache")
    p.add_argument("--clip-model", default=None, help="CLIP checkpoint of clip-i / clip-t (default ViT-L/14)")
    p.add_argument("--crop-border", type=int, default=0,
                   help="pixels cropped from each border before PSNR/SSIM (default 0; SR papers often use the scale)")
    p.add_argument("--allow-missing", action="store_true",
                   help="score the usable pairs despite pairing problems; what was left out is recorded")
    p.add_argument("--workers", type=int, default=None, help="image decoding threads (default: up to 4)")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                   help="resamples of each mean's 95%% bootstrap interval (default 1000; 0: no intervals)")
    p.add_argument("--seed", type=int, default=0, help="the bootstrap's seed (default 0; recorded)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    from pirs.degrade.executors import add_executor_args
    from pirs.degrade.fs import add_storage_args

    add_executor_args(p, gpus=True)
    add_storage_args(p)


def _metrics_parser(sub) -> None:
    p = sub.add_parser("metrics", help="list every metric: direction, kind, convention, weight files",
                       description="List every metric of the registry: its direction, kind (full-reference, "
                                   "no-reference, distribution, text), convention and the weight files it needs "
                                   "(relative to the weights directory).")
    p.add_argument("--json", action="store_true", help="print the table as JSON")


def _compare_parser(sub) -> None:
    p = sub.add_parser("compare", help="compare two results files metric by metric, paired per image",
                       description="Print, per metric, the value in A and in B, the difference B - A and which is "
                                   "better given the metric's direction; with the per-image files the two results "
                                   "name, also the paired statistics over the images both scored: the 95%% "
                                   "paired-bootstrap interval of the mean difference, the two-sided Wilcoxon "
                                   "signed-rank p-value and the share of images where B is better. Refuses results "
                                   "of different test sets unless --force.")
    p.add_argument("a", help="results JSON A")
    p.add_argument("b", help="results JSON B")
    p.add_argument("--force", action="store_true", help="compare even if the test sets differ")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                   help="resamples of the paired bootstrap (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="the paired bootstrap's seed (default 0)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")


def _baseline_parser(sub) -> None:
    from .baselines import BASELINES

    p = sub.add_parser("baseline", help="write predictions of a trivial restorer (identity, bicubic, lanczos) or of "
                                        "a published model's checkpoint (--checkpoint, through spandrel)",
                       description="Write KEY.png predictions from each reference record's LQ brought to the HQ "
                                   "size, and a run.json, for a floor row computable anywhere (no weights). "
                                   + " ".join(f"{k}: {v}." for k, v in BASELINES.items())
                                   + " With --checkpoint instead of a method: restore the LQ with any architecture "
                                     "spandrel detects from a local weights file (Real-ESRGAN, BSRGAN, SwinIR, HAT, "
                                     "NAFNet, SCUNet, ...; Restormer with spandrel_extra_arches installed), read "
                                     "without unpickling code (.safetensors, or .pth/.pt/.ckpt/.bin through "
                                     "torch.load(weights_only=True)), in overlapping tiles when an image is larger "
                                     "than --tile-size.")
    p.add_argument("method", nargs="?", choices=sorted(BASELINES), help="which trivial baseline (or --checkpoint)")
    p.add_argument("--checkpoint", default=None, metavar="FILE",
                   help="a local .safetensors/.pth/.pt/.ckpt/.bin weights file of a model spandrel knows")
    p.add_argument("--name", default=None,
                   help="with --checkpoint: the method name for run.json (default: the papers' name for the "
                        "detected architecture, e.g. Real-ESRGAN, SwinIR, NAFNet)")
    p.add_argument("--reference", required=True,
                   help="the test set: a pirs shard folder, local or URL (it carries the LQ)")
    p.add_argument("--out", required=True, help="folder for the predictions")
    p.add_argument("--tile-size", type=int, default=512,
                   help="with --checkpoint: largest model input tile in px; larger images are cut into overlapping "
                        "tiles (default 512; 0 = always the whole image)")
    p.add_argument("--tile-overlap", type=int, default=32,
                   help="with --checkpoint: least overlap of neighbouring tiles in px (default 32)")
    p.add_argument("--device", default="auto", help="with --checkpoint: cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--dtype", default="fp32", choices=("fp32", "fp16", "bf16"),
                   help="with --checkpoint: inference precision (default fp32; fp16 only on CUDA)")
    p.add_argument("--overwrite", action="store_true", help="replace predictions already in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    from pirs.degrade.fs import add_storage_args

    add_storage_args(p)


def _validate_parser(sub) -> None:
    p = sub.add_parser("validate", help="check results files: schema, then everything re-derivable",
                       description="Check that results JSON files follow the results schema, then re-derive what "
                                   "their own files allow: the count, every per-image metric's count, mean, "
                                   "standard deviation and interval, and the breakdowns from the per-image file "
                                   "named; the test set's and the predictions' fingerprints and each weight file's "
                                   "SHA-256 from the paths named, where they exist here. Names the file and field "
                                   "of the first mismatch and exits 2.")
    p.add_argument("files", nargs="+", help="results JSON files")
    p.add_argument("--schema-only", action="store_true", help="check the schema only, re-derive nothing")
    p.add_argument("--no-files", action="store_true",
                   help="re-derive from the per-image file only (do not re-fingerprint the test set, predictions "
                        "and weights)")


def _fail(cmd: str, e: BaseException) -> int:
    msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    print(f"bench {cmd}: error: {msg}", file=sys.stderr)
    return 2


def _one_writer(out: str, command: str, file: bool = False):
    """The lock on ``--out`` (a folder, or with ``file`` a results file): one writer per output.

    An ``--out`` that exists as the wrong kind (a file given as a folder) is left to the command's own
    check, which says so."""
    from contextlib import nullcontext

    from pirs.degrade.fs import is_url, local_path
    from pirs.degrade.lock import output_lock

    if not is_url(out) and not file and local_path(out).exists() and not local_path(out).is_dir():
        return nullcontext()
    return output_lock(out, command, file=file)


def score_hint(predictions: str, reference: str, name: str) -> str:
    """A runnable `bench evaluate` line for fresh predictions; results go beside them (``X/predictions/NAME`` ->
    ``X/results/NAME.json``), never outside the folder the user works in."""
    from pathlib import PurePosixPath

    preds = predictions.rstrip("/") or predictions
    scheme, _, path = preds.rpartition("://")
    parent = PurePosixPath(path).parent
    base = parent.parent if parent.name == "predictions" else parent
    out = (base / "results" / f"{name}.json").as_posix()
    out = f"{scheme}://{out}" if scheme else out
    return f"bench evaluate {preds} --reference {reference} --metrics psnr,ssim --out {out}"


def _evaluate_defaults(a, storage_options: dict | None) -> tuple[str, str]:
    """``--metrics`` and ``--out`` left out: the metrics of the reference's standard test set, and
    ``results/TEST_SET/METHOD.json``."""
    from pathlib import Path

    from pirs.degrade.fs import set_storage_options
    from pirs.degrade.shards import ShardError, read_manifest
    from pirs.degrade.testsets import TestsetError, load_testset

    set_storage_options(storage_options)
    try:  # the manifest alone: evaluate reads the whole reference afterwards
        manifest = read_manifest(a.reference) if Path(a.reference).suffix != ".tar" else None
    except ShardError as e:
        raise ValueError(str(e)) from None
    entry = manifest.get("test_set") if isinstance(manifest, dict) else None
    test_set = entry.get("id") if isinstance(entry, dict) and isinstance(entry.get("id"), str) else None
    metrics = a.metrics
    if metrics is None:
        if not test_set:
            raise ValueError(f"--reference {a.reference} is not a standard test set (its manifest names none), so "
                             "its metrics are not known: give --metrics (see `bench metrics`)")
        try:
            metrics = ",".join(m["name"] for m in load_testset(test_set).metrics)
        except TestsetError as e:
            raise ValueError(f"--reference {a.reference}: {e}; give --metrics") from None
    out = a.out
    if out is None:
        method = a.method
        run = Path(a.predictions) / "run.json"
        if method is None and run.is_file():
            from pirs.degrade.limits import load_json

            try:  # a stranger's run.json: bounded, and only a string is a name
                data = load_json(run.read_bytes(), str(run))
            except (ValueError, OSError):
                data = None
            method = data.get("method") if isinstance(data, dict) and isinstance(data.get("method"), str) else None
        method = method or Path(a.predictions.rstrip("/")).name or "predictions"
        name = test_set or (Path(a.reference.rstrip("/")).name or "testset")
        out = f"results/{name}/{method}.json"
    return metrics, out


def cmd_evaluate(a) -> int:
    from pirs.degrade.executors import ExecutorError
    from pirs.degrade.fs import parse_storage_options

    from .evaluate import EvalConfig, default_cache_dir, evaluate
    from .pairing import PairingError, ReferenceError
    from .results import ResultsError
    from .weights import DownloadBlocked, MissingWeights

    try:
        opts = parse_storage_options(a.storage_options)
        if a.metrics is None or a.out is None:
            a.metrics, a.out = _evaluate_defaults(a, opts)
    except (ValueError, ReferenceError, OSError) as e:
        return _fail("evaluate", e)
    cfg = EvalConfig(predictions=a.predictions, reference=a.reference, metrics=a.metrics, out=a.out,
                     method=a.method, batch_size=a.batch_size, device=a.device, weights_dir=a.weights_dir,
                     cache_dir=None if a.no_cache else a.cache_dir or default_cache_dir(), clip_model=a.clip_model,
                     allow_missing=a.allow_missing, crop_border=a.crop_border, per_image=a.per_image,
                     progress=not a.quiet, workers=a.workers, executor=a.executor, ray_address=a.ray_address,
                     gpus_per_worker=a.gpus_per_worker, max_retries=a.max_retries, storage_options=opts or None,
                     bootstrap=a.bootstrap, seed=a.seed)
    try:
        with _one_writer(a.out, "bench evaluate", file=True):
            s = evaluate(cfg)
    except (PairingError, ReferenceError, ResultsError, MissingWeights, DownloadBlocked, KeyError, ValueError,
            OSError, ExecutorError, RuntimeError) as e:
        return _fail("evaluate", e)
    except KeyboardInterrupt:
        print("\nbench evaluate: interrupted; no results written", file=sys.stderr)
        return 130
    pr = s["pairing"]
    print(f"{s['method']['name']} on {s['test_set']['name']}: {s['count']} of {pr['expected']} images scored "
          f"in {s['seconds']:.1f} s on {s['settings']['device']}")
    if pr["problems"]:
        kinds = ("missing", "extra", "size_mismatch", "unreadable", "duplicates")
        counts = ", ".join(f"{pr[k]['count']} {k}" for k in kinds if pr[k]["count"])
        print(f"--allow-missing: {pr['problems']} pairing problems left out ({counts}); see the results' pairing")
    width = max(len(n) for n in s["metrics"])
    for name, m in s["metrics"].items():
        v = m["value"]
        shown = f"{v:.4f}" if isinstance(v, float | int) else v
        ci = m.get("ci95")
        interval = f"  95% CI [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else ""
        print(f"  {name:<{width}}  {shown:>12}{interval}  ({m['direction']} is better)")
    print(f"results   {a.out}")
    if s["per_image"]:
        print(f"per image {s['per_image']} (beside the results)")
    return 0


SUMMARY_KEYS = ("color_space", "data_range", "crop_border", "checkpoint", "clip_model", "mode", "network", "version")


def convention_summary(conv: dict, width: int = 36) -> str:
    """A short ``key=value`` summary of a convention (the first clause of each value)."""
    parts = []
    for k in SUMMARY_KEYS:
        if conv.get(k) is None:
            continue
        v = str(conv[k]).split(";")[0].strip()
        parts.append(f"{k}={v if len(v) <= width else v[: width - 3] + '...'}")
    return ", ".join(parts) or "-"


def cmd_metrics(a) -> int:
    from . import registry

    specs = [registry.REGISTRY[n] for n in sorted(registry.REGISTRY)]
    if a.json:
        print(json.dumps([{"name": s.name, "direction": s.direction, "lower_better": s.lower_better,
                           "kind": s.kind, "role": s.role, "backend": s.backend, "convention": s.convention,
                           "input_rules": s.input_rules, "options": list(s.options), "weights": list(s.weights),
                           "reference": s.reference, "tolerance": s.tolerance, "description": s.description}
                          for s in specs], indent=2, default=str))
        return 0
    if not specs:
        print("bench metrics: the registry is empty", file=sys.stderr)
        return 1
    head = ("metric", "better", "kind", "convention", "weight files")
    rows = [head] + [(s.name, s.direction, s.kind, convention_summary(s.convention),
                      ", ".join(s.weights) if s.weights else "none") for s in specs]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head) - 1)]
    for j, r in enumerate(rows):
        print("  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1])
        if j == 0:
            print("  ".join("-" * w for w in widths) + "  " + "-" * len(head[-1]))
    print("\nweight files are relative to the weights directory (--weights-dir, else $PIRS_WEIGHTS_DIR, else "
          "~/.cache/pirs/weights); nothing is downloaded. Full conventions, the reference each metric equals and "
          "its tolerance: bench metrics --json. Any other pyiqa metric: pyiqa:NAME (e.g. pyiqa:nima).")
    return 0


def _per_image(path: str, d: dict, notes: list[str]):
    """The per-image table a results file names, or None with a note saying why."""
    from .results import per_image_path, read_table

    p = per_image_path(path, d)
    if p is None:
        notes.append(f"{path} names no per-image file")
        return None
    try:
        return read_table(p)
    except (OSError, ValueError) as e:
        notes.append(f"the per-image file of {path} ({p}) cannot be read: {' '.join(str(e).split())[:200]}")
        return None


def cmd_compare(a) -> int:
    from .results import ResultsError, compare, format_compare, validate_results

    try:
        ra, rb = validate_results(a.a), validate_results(a.b)
    except ResultsError as e:
        return _fail("compare", e)
    if a.bootstrap < 1:
        return _fail("compare", ValueError(f"--bootstrap must be at least 1, got {a.bootstrap}"))
    if ra["test_set"]["fingerprint"] != rb["test_set"]["fingerprint"] and not a.force:
        print(f"bench compare: error: {a.a} scores test set {ra['test_set']['name']} "
              f"({ra['test_set']['fingerprint'][:12]}...) but {a.b} scores {rb['test_set']['name']} "
              f"({rb['test_set']['fingerprint'][:12]}...); the numbers are not comparable (--force to compare "
              "anyway)", file=sys.stderr)
        return 2
    notes: list[str] = []
    tables = (_per_image(a.a, ra, notes), _per_image(a.b, rb, notes))
    if a.json:
        print(json.dumps(compare(ra, rb, tables, a.bootstrap, a.seed), indent=2, allow_nan=True))
    else:
        print(format_compare(ra, rb, a.a, a.b, tables, a.bootstrap, a.seed, notes))
    return 0


def cmd_baseline(a) -> int:
    from .pairing import ReferenceError

    if (a.method is None) == (a.checkpoint is None):
        return _fail("baseline", ValueError("give either a method (identity, bicubic, lanczos) or --checkpoint FILE"))
    if a.checkpoint is None:
        if a.name is not None:
            return _fail("baseline", ValueError("--name names a --checkpoint's method; a trivial baseline is named "
                                                "by its method"))
        from .baselines import write_baseline

        try:
            with _one_writer(a.out, f"bench baseline {a.method}"):
                out = write_baseline(a.method, a.reference, a.out, overwrite=a.overwrite, progress=not a.quiet)
        except (ReferenceError, ValueError, OSError) as e:
            return _fail("baseline", e)
        print(f"wrote {a.method} predictions and run.json to {str(out).rstrip('/')}/")
        print(f"score     {score_hint(str(out), a.reference, a.method)}")
        return 0
    import re

    from .spandrel_baseline import write_spandrel_baseline

    try:
        with _one_writer(a.out, "bench baseline --checkpoint"):
            run = write_spandrel_baseline(a.checkpoint, a.reference, a.out, name=a.name, tile_size=a.tile_size,
                                          tile_overlap=a.tile_overlap, device=a.device, dtype=a.dtype,
                                          overwrite=a.overwrite, progress=not a.quiet)
    except (ReferenceError, ValueError, OSError, RuntimeError) as e:
        return _fail("baseline", e)
    c, arch = run["counts"], run["architecture"]
    print(f"{run['method']} ({arch['name']} x{run['scale']['model']}, {run['method_name_source']}): "
          f"{c['images']} images in {run['seconds']:.1f} s on {run['device']} ({run['dtype']}), {c['tiled']} tiled")
    if run["scale"]["mismatch"]:
        print(run["scale"]["note"])
    if c["output_resized"]:
        print(f"{c['output_resized']} outputs resized to the HQ size with bicubic (see run.json)")
    print(f"wrote predictions and run.json to {a.out.rstrip('/')}/")
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", run["method"]).strip("-").lower() or "model"
    print(f"score     {score_hint(a.out, a.reference, slug)}")
    return 0


def cmd_validate(a) -> int:
    from .results import ResultsError, rederive, validate_results

    bad = 0
    for f in a.files:
        try:
            d = validate_results(f)
            notes = [] if a.schema_only else rederive(f, d, check_files=not a.no_files)
            what = "schema" if a.schema_only else "schema and re-derived values"
            print(f"{f}: ok ({what})" + "".join(f"\n  not checked: {n}" for n in notes))
        except ResultsError as e:
            print(f"bench validate: error: {e}", file=sys.stderr)
            bad += 1
    return 2 if bad else 0


COMMANDS = {"evaluate": cmd_evaluate, "metrics": cmd_metrics, "compare": cmd_compare, "baseline": cmd_baseline,
            "validate": cmd_validate}


def build_parser() -> argparse.ArgumentParser:
    """The ``bench`` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="bench", description="pirs bench: one scoring harness for restored images.", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="traceback of an unexpected error (or PIRS_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in (_evaluate_parser, _metrics_parser, _compare_parser, _baseline_parser, _validate_parser):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``bench``; return the exit status (0 ok, 2 error, 130 interrupted)."""
    parser = build_parser()
    a = parser.parse_args(argv)
    if not a.command:
        parser.print_help(sys.stderr)
        return 2
    if getattr(a, "storage_options", None) is not None:  # for every URL this command opens
        from pirs.degrade.fs import parse_storage_options, set_storage_options

        try:
            set_storage_options(parse_storage_options(a.storage_options))
        except ValueError as e:
            return _fail(a.command, e)
    from pirs.degrade.fs import run_cli

    return run_cli(f"bench {a.command}", quiet_pipe(COMMANDS[a.command]), a)


def quiet_pipe(handler):
    """``handler`` ending quietly when the reader of its output goes away (``bench compare a b | head -1``).

    A closed pipe is not an error: the rest of the output is dropped (stdout is pointed at the null device, so
    that Python's final flush does not complain either) and the exit status is 0.
    """
    import os

    def run(a) -> int:
        try:
            code = handler(a)
            sys.stdout.flush()
            return code
        except BrokenPipeError:
            try:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
                os.close(devnull)
            except (OSError, ValueError):  # stdout without a descriptor (captured): nothing to flush later
                pass
            return 0

    return run


if __name__ == "__main__":
    sys.exit(main())
