"""``degrade``: build degraded HQ/LQ shards, preview them, list recipes, replay a record."""

from __future__ import annotations

import argparse
import json
import sys


def _build_parser(sub) -> None:
    p = sub.add_parser("build", help="degrade source photos into webdataset shards of HQ/LQ pairs",
                       description="Degrade source photos into webdataset shards of HQ/LQ pairs with the exact "
                                   "parameters applied and a restoration prompt. Re-running the same command "
                                   "resumes an interrupted build.")
    p.add_argument("--pipeline", required=True, help="recipe name (see `degrade recipes`) or path to a recipe YAML")
    p.add_argument("--input", default=None,
                   help="folder (recursive), .txt list of paths, or webdataset .tar shards, a local path or URL "
                        "(s3://bucket/photos/, streamed); default: the sample photos bundled with scikit-image")
    p.add_argument("--out", required=True,
                   help="output folder or URL (s3://bucket/prefix, gs://..) for shards, manifest, rejects and card")
    p.add_argument("--num-samples", type=int, default=1000, help="number of HQ/LQ pairs (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="global seed (default 0)")
    p.add_argument("--crop-size", type=int, default=512, help="HQ crop size in pixels (default 512)")
    p.add_argument("--scale", type=int, default=None, help="degradation scale (default: the recipe's)")
    up = p.add_mutually_exclusive_group()
    up.add_argument("--upsample-lq", dest="upsample_lq", action="store_true", default=None,
                    help="bicubically resize the LQ back to the HQ size (as SeeSR/XPSR train)")
    up.add_argument("--no-upsample-lq", dest="upsample_lq", action="store_false",
                    help="keep the LQ at HQ size / scale even if the recipe upsamples")
    p.add_argument("--shard-size", type=int, default=1000, help="samples per shard (default 1000)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1); output is identical")
    p.add_argument("--pad", action="store_true", help="reflect-pad images smaller than the crop instead of rejecting")
    p.add_argument("--flip-prob", type=float, default=0.5, help="chance of a left-right flip (default 0.5)")
    p.add_argument("--max-pixels", type=int, default=None,
                   help="decompression-bomb limit in pixels (default 150 million)")
    p.add_argument("--strict", action="store_true", help="exit non-zero if any input or sample was rejected")
    p.add_argument("--overwrite", action="store_true", help="replace a different build already in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _run_args(p)


def _run_args(p) -> None:
    """Executor and storage flags (shared by the commands that write shards)."""
    from .executors import add_executor_args
    from .fs import add_storage_args

    add_executor_args(p)
    add_storage_args(p)


def cmd_build(a) -> int:
    from .build import BuildConfig, BuildError, build
    from .fs import is_url, load_hint, parse_storage_options
    from .recipe import RecipeError
    from .sources import DEFAULT_MAX_PIXELS

    try:
        opts = parse_storage_options(a.storage_options)
    except ValueError as e:
        print(f"degrade build: error: {e}", file=sys.stderr)
        return 2

    cfg = BuildConfig(pipeline=a.pipeline, input=a.input, out=a.out, num_samples=a.num_samples, seed=a.seed,
                      crop_size=a.crop_size, scale=a.scale, upsample_lq=a.upsample_lq, shard_size=a.shard_size,
                      workers=a.workers, pad=a.pad, flip_prob=a.flip_prob,
                      max_pixels=a.max_pixels or DEFAULT_MAX_PIXELS, strict=a.strict, overwrite=a.overwrite,
                      progress=not a.quiet, executor=a.executor, ray_address=a.ray_address, max_retries=a.max_retries,
                      storage_options=opts or None)
    try:
        r = build(cfg)
    except (BuildError, RecipeError, FileNotFoundError) as e:
        print(f"degrade build: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ndegrade build: interrupted; complete shards in {a.out} are kept, partial ones dropped. "
              "Run the same command again to finish the build.", file=sys.stderr)
        return 130
    m = r.manifest
    rate = r.samples / r.seconds if r.seconds else 0.0
    print(f"\nbuilt {r.samples} samples in {r.shards} shard(s) ({r.shards_built} built, "
          f"{r.shards_skipped} already complete) in {r.seconds:.1f} s, {rate:.1f} samples/s")
    print(f"recipe    {m['recipe']['name']} {m['recipe']['version']} (hash {m['recipe']['hash'][:12]})")
    print(f"inputs    {r.inputs_seen} seen = {r.inputs_usable} usable + {r.inputs_rejected} rejected"
          + (f"  {m['inputs']['rejects_by_reason']}" if r.inputs_rejected else ""))
    if r.sample_rejects:
        print(f"samples   {r.sample_rejects} could not be made (see rejects.jsonl)")
    if r.failures:
        print(f"retried   {len(r.failures)} failed shard attempt(s), all recovered (see stats/failures.jsonl): "
              + "; ".join(f"shard {f['shard']} attempt {f['attempt']}: {f['error']}" for f in r.failures[:3]))
    print(f"output    {r.out}/  (shard-*.tar, manifest.json, rejects.jsonl, README.md)")
    print(f"look      degrade preview {r.out} --out "
          + ("preview.png" if is_url(r.out) else f"{r.out}/preview.png"))
    print(f"load      {load_hint(r.out)}")
    if r.samples == 0:
        return 1
    if a.strict and (r.inputs_rejected or r.sample_rejects):
        print("degrade build: --strict and some inputs or samples were rejected", file=sys.stderr)
        return 1
    return 0


def _ingest_parser(sub) -> None:
    from .layouts import LAYOUTS

    p = sub.add_parser("ingest", help="turn a paired data set (LOL, RESIDE, GoPro, RealSR, ...) into shards",
                       description="Turn a data set that already has LQ/HQ pairs, in its authors' layout, into pirs "
                                   "shards with the same schema, labels and manifest; unpaired real-photo layouts "
                                   "get no hq.png. Re-running the same command resumes. Layouts: "
                                   + ", ".join(f"{n} ({lay.description})" for n, lay in LAYOUTS.items()))
    p.add_argument("--layout", required=True, help="data set layout: " + ", ".join(LAYOUTS))
    p.add_argument("--input", required=True,
                   help="root folder of the data set as distributed (a local or mounted copy)")
    p.add_argument("--out", required=True,
                   help="output folder or URL (s3://bucket/prefix) for shards, manifest, rejects and dataset card")
    p.add_argument("--scale", type=int, default=None, help="LQ-to-HQ scale (default: the layout's; RealSR: 2, 3, 4)")
    p.add_argument("--crop-size", type=int, default=None, help="seeded aligned crop of this HQ size (default: whole)")
    p.add_argument("--then", default=None, help="a further recipe (scale 1) applied to the ingested LQ, e.g. noise")
    p.add_argument("--labels", default=None, help="comma-separated labels instead of the layout's (e.g. for 'folder')")
    p.add_argument("--match", action="append", default=None,
                   help="only LQ files whose path (relative to --input) matches this glob, e.g. 'test/*'; repeatable")
    p.add_argument("--limit", type=int, default=None, help="ingest only the first N pairs (in sorted order)")
    p.add_argument("--seed", type=int, default=0, help="seed for crops and --then (default 0)")
    p.add_argument("--shard-size", type=int, default=1000, help="pairs per shard (default 1000)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1); output is identical")
    p.add_argument("--strict", action="store_true", help="exit non-zero if any pairing problem was found")
    p.add_argument("--overwrite", action="store_true", help="replace a different build already in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _run_args(p)


def cmd_ingest(a) -> int:
    from .build import BuildError
    from .fs import parse_storage_options
    from .ingest import IngestConfig, ingest
    from .recipe import RecipeError

    try:
        opts = parse_storage_options(a.storage_options)
    except ValueError as e:
        print(f"degrade ingest: error: {e}", file=sys.stderr)
        return 2
    labels = [x.strip() for x in a.labels.split(",") if x.strip()] if a.labels is not None else None
    cfg = IngestConfig(layout=a.layout, input=a.input, out=a.out, scale=a.scale, crop_size=a.crop_size, then=a.then,
                       labels=labels, match=a.match, seed=a.seed, limit=a.limit, shard_size=a.shard_size,
                       workers=a.workers, strict=a.strict, overwrite=a.overwrite, progress=not a.quiet,
                       executor=a.executor, ray_address=a.ray_address, max_retries=a.max_retries,
                       storage_options=opts or None)
    try:
        r = ingest(cfg)
    except (BuildError, RecipeError, FileNotFoundError) as e:
        print(f"degrade ingest: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ndegrade ingest: interrupted; complete shards in {a.out} are kept. Run the same command again "
              "to finish.", file=sys.stderr)
        return 130
    m = r.manifest
    print(f"\ningested {r.samples} of {r.pairs_found} pairs ({m['layout']['name']}) in {r.shards} shard(s) "
          f"({r.shards_built} built) in {r.seconds:.1f} s")
    if r.problems:
        print(f"problems  {r.problems} (see {r.out}/rejects.jsonl): {m['inputs']['rejects_by_reason']}"
              + (f", {m['sample_rejects']} pairs could not be made" if m["sample_rejects"] else ""))
    print(f"output    {r.out}/  content sha256 {m['content_sha256'][:16]}")
    if r.samples == 0:
        return 1
    if a.strict and r.problems:
        print("degrade ingest: --strict and some files had pairing problems", file=sys.stderr)
        return 1
    return 0


def _testset_parser(sub) -> None:
    p = sub.add_parser("testset", help="build a standard test set (datasets/*.yaml) from a local copy of its source",
                       description="Build a standard test set from a local copy of its source, check the expected "
                                   "file counts, and print its fingerprint (compared with the published one when "
                                   "the test-set file has it). With --list, list the test sets; with --show, "
                                   "describe one.")
    p.add_argument("name", nargs="?", help="test set id or one of its aliases (see --list), or path to a test-set "
                                          "YAML")
    p.add_argument("--source", help="root folder of the local copy of the source data set")
    p.add_argument("--out", help="output folder for the test set's shards")
    p.add_argument("--list", action="store_true", help="list the standard test sets: their ids (the papers' test-set "
                                                       "ids) and aliases")
    p.add_argument("--show", action="store_true", help="describe the test set without building it")
    p.add_argument("--allow-partial", action="store_true",
                   help="build even if the source holds another number of files than expected (a stand-in)")
    p.add_argument("--limit", type=int, default=None,
                   help="build only the first N samples: a quick look, not the test set (no fingerprint check)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1); output is identical")
    p.add_argument("--overwrite", action="store_true", help="replace a different build already in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def cmd_testset(a) -> int:
    from .build import BuildError
    from .recipe import RecipeError
    from .testsets import TestsetError, build_testset, describe, list_testsets, load_testset

    if a.list:
        try:
            sets = [load_testset(name) for name in list_testsets()]
        except TestsetError as e:
            print(f"degrade testset: error: {e}", file=sys.stderr)
            return 2
        width = max(len(ts.name) for ts in sets)
        for ts in sets:
            aka = f" (alias: {', '.join(ts.aliases)})" if ts.aliases else ""
            print(f"{ts.name:{width}s} {ts.kind:6s} {ts.source.dataset} ({ts.source.split}): {ts.description}{aka}")
        return 0
    if not a.name:
        print("degrade testset: error: give a test set NAME (see degrade testset --list)", file=sys.stderr)
        return 2
    try:
        ts = load_testset(a.name)
    except TestsetError as e:
        print(f"degrade testset: error: {e}", file=sys.stderr)
        return 2
    if a.name != ts.name and a.name in ts.aliases:
        print(f"degrade testset: {a.name} is an alias of the test set {ts.name} (the id the manifest, results and "
              "leaderboard use)", file=sys.stderr)
    if a.show:
        print("\n".join(describe(ts)))
        return 0
    if not a.source or not a.out:
        print("degrade testset: error: --source and --out are required to build a test set\n"
              + "\n".join(describe(ts)), file=sys.stderr)
        return 2
    try:
        m = build_testset(ts, a.source, a.out, workers=a.workers, progress=not a.quiet,
                          allow_partial=a.allow_partial, overwrite=a.overwrite, limit=a.limit)
    except (TestsetError, BuildError, RecipeError) as e:
        print(f"degrade testset: error: {e}", file=sys.stderr)
        return 2
    fp = m["content_sha256"]
    print(f"\ntest set {ts.name} {ts.version}: {m['samples']} samples in {a.out}")
    print(f"fingerprint {fp}")
    print("metrics    " + ", ".join(x["name"] for x in ts.metrics))
    if m.get("sample_rejects") or m["inputs"]["rejected"]:
        print(f"problems   {m['inputs']['rejected']} source files and {m['sample_rejects']} samples rejected "
              f"(see {a.out}/rejects.jsonl)")
    if a.limit or a.allow_partial:
        print("partial    built with --limit/--allow-partial: not the published test set, fingerprint not checked")
    elif ts.fingerprint:
        if fp != ts.fingerprint:
            print(f"degrade testset: the fingerprint differs from the published {ts.fingerprint}: this is not the "
                  "same test set (another source copy or pirs version)", file=sys.stderr)
            return 1
        print("matches    the published fingerprint")
    else:
        print("published  none yet: compare fingerprints with whoever you share results with")
    return 0


def cmd_preview(a) -> int:
    from .preview import contact_sheet
    from .shards import ShardError

    try:
        path = contact_sheet(a.shards, a.out, count=a.count, tile=a.tile)
    except (ShardError, ValueError, FileNotFoundError) as e:
        print(f"degrade preview: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


def cmd_gallery(a) -> int:
    from .gallery import gallery
    from .recipe import RecipeError

    try:
        path = gallery(a.out, tile=a.tile, seed=a.seed)
    except (RecipeError, ValueError, OSError) as e:
        print(f"degrade gallery: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


def cmd_recipes(a) -> int:
    from .recipe import RecipeError, describe, list_recipes, load_recipe

    names = [a.name] if a.name else list_recipes()
    for name in names:
        try:
            r = load_recipe(name)
        except RecipeError as e:
            print(f"degrade recipes: error: {e}", file=sys.stderr)
            return 2
        print(f"{r.name}  (version {r.version}, scale {r.scale}, hash {r.hash[:12]})")
        print(f"  {r.description}")
        if r.source:
            print(f"  source: {r.source}")
        if len(r.scales()) > 1:
            print("  prompt: per branch (each branch recipe writes its own)")
        else:
            print(f"  prompt: {r.prompt.mode}" + (f" '{r.prompt.text}'" if r.prompt.mode == "fixed" else ""))
        if not a.brief:
            print("\n".join(describe(r)))
        print()
    return 0


def _find_record(shards: str, key: str, command: str):
    """``(shard, record, members)`` of ``key``, or an exit code after printing why not.

    The shard holding ``key`` is read to its end, so that its checks (a key used twice, the
    manifest's sha256 and count) hold for what is shown.
    """
    from .shards import ShardError, iter_records, shard_paths

    number = int(key) if key.isdigit() else None  # `12` finds key 00000012
    keys: list[str] = []
    try:
        for shard in shard_paths(shards):
            found = None
            for k, rec, members in iter_records(shard):
                keys.append(k)
                if k == key or (number is not None and k.isdigit() and int(k) == number):
                    found = shard, rec, members
            if found is not None:
                return found
    except (ShardError, FileNotFoundError) as e:
        print(f"degrade {command}: error: {e}", file=sys.stderr)
        return 2
    have = (f"it holds {len(keys)} keys, {keys[0]} .. {keys[-1]}" if len(keys) > 3 else
            f"it holds {', '.join(keys) or 'no keys'}")
    print(f"degrade {command}: error: key {key!r} not found in {shards} ({have})", file=sys.stderr)
    return 2


def cmd_mixture(a) -> int:
    from .mixture import cmd_mixture as run

    return run(a)


def cmd_export(a) -> int:
    from .export import cmd_export as run

    return run(a)


def cmd_replay(a) -> int:
    import numpy as np

    from .build import decode_png
    from .pipeline import replay
    from .schema import decode_ops

    found = _find_record(a.shards, a.key, "replay")
    if isinstance(found, int):
        return found
    shard, rec, members = found
    missing = [m for m in ("lq.png",) + (() if rec["dataset"] else ("hq.png",)) if m not in members]
    if missing:
        print(f"degrade replay: error: {shard}: sample {a.key!r} has no {' or '.join(missing)} member",
              file=sys.stderr)
        return 2
    lq = decode_png(members["lq.png"])
    ops = decode_ops(rec)
    from .ops import OPS

    unknown = sorted({o["op"] for o in ops} - set(OPS))
    if unknown:
        print(f"degrade replay: error: {a.key} carries pair-level ops ({', '.join(unknown)}: a mixture's "
              "augmentation); replay its part record named in index.jsonl beside the shards", file=sys.stderr)
        return 2
    if rec["dataset"]:  # an ingested pair: its ops (from --then) ran on the data set's own LQ
        if not a.source:
            print(f"degrade replay: error: {a.key} was ingested from a {rec['dataset']} data set; give its root "
                  "folder with --source to replay its ops", file=sys.stderr)
            return 2
        from .ingest import ingested_lq
        from .ops.jpeg import to_uint8
        from .pipeline import apply_ops, hq_to_float
        from .sources import BadInput

        try:
            base = ingested_lq(rec, a.source)
        except (OSError, BadInput) as e:
            print(f"degrade replay: error: {e}", file=sys.stderr)
            return 2
        again = to_uint8(apply_ops(hq_to_float(base), ops)) if ops else base
    else:
        again = replay(decode_png(members["hq.png"]), ops, rec["lq_upsampled"])
    if again.shape == lq.shape and bool(np.array_equal(again, lq)):
        print(f"{a.key} ({shard.name}): identical: the replayed LQ equals lq.png bit for bit ({len(ops)} ops)")
        return 0
    diff = (np.abs(again.astype(int) - lq.astype(int)).max() if again.shape == lq.shape
            else f"shape {again.shape} vs {lq.shape}")
    print(f"{a.key} ({shard.name}): DIFFERENT: max abs difference {diff}")
    return 1


def cmd_show(a) -> int:
    found = _find_record(a.shards, a.key, "show")
    if isinstance(found, int):
        return found
    _, rec, _ = found
    print(json.dumps(dict(rec, ops=json.loads(rec["ops"])), indent=2))
    return 0


def make_parser() -> argparse.ArgumentParser:
    """The ``degrade`` argument parser."""
    parser = argparse.ArgumentParser(prog="degrade", description="pirs degradation engine: recipes -> HQ/LQ shards")
    parser.add_argument("--debug", action="store_true", help="traceback of an unexpected error (or PIRS_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _build_parser(sub)
    from .fs import add_storage_args

    _ingest_parser(sub)
    from .mixture import add_parser as _mixture_parser

    _mixture_parser(sub)
    _testset_parser(sub)
    from .export import add_parser as _export_parser

    _export_parser(sub)
    p = sub.add_parser("preview", help="draw a contact sheet (HQ, LQ upscaled, prompt) as PNG",
                       description="Draw a contact sheet of the first records: HQ, LQ upscaled, prompt text.")
    p.add_argument("shards", help="shard folder or .tar file (a local path or URL)")
    p.add_argument("--out", default="preview.png", help="PNG path (default preview.png)")
    p.add_argument("--count", type=int, default=8, help="records to draw (default 8)")
    p.add_argument("--tile", type=int, default=256, help="tile size in pixels (default 256)")
    add_storage_args(p)
    p = sub.add_parser("gallery", help="draw one example per universal degradation type as PNG",
                       description="Draw one page with one example per universal degradation type and each "
                                   "Diff-Restorer test mixture, from the bundled photos.")
    p.add_argument("--out", default="gallery.png", help="PNG path (default gallery.png)")
    p.add_argument("--tile", type=int, default=256, help="tile size in pixels (default 256)")
    p.add_argument("--seed", type=int, default=0, help="seed of the degradations (default 0)")
    p = sub.add_parser("recipes", help="list the pipelines and their stages",
                       description="List the shipped recipes with their stages; with a NAME, only that one.")
    p.add_argument("name", nargs="?", help="one recipe name or YAML path")
    p.add_argument("--brief", action="store_true", help="names and descriptions only, without the stages")
    p = sub.add_parser("replay", help="rebuild one record's LQ from its stored parameters and compare",
                       description="Rebuild one record's LQ from its hq.png and stored ops; exit 0 if identical. "
                                   "An ingested record is rebuilt from the data set's own LQ (--source).")
    p.add_argument("shards", help="shard folder or .tar file (a local path or URL)")
    p.add_argument("key", help="sample key")
    p.add_argument("--source", default=None, help="root folder of the data set an ingested record came from")
    add_storage_args(p)
    p = sub.add_parser("show", help="print one record's JSON with its ops decoded",
                       description="Print one record's JSON with its ops decoded.")
    p.add_argument("shards", help="shard folder or .tar file (a local path or URL)")
    p.add_argument("key", help="sample key")
    add_storage_args(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``degrade`` command."""
    a = make_parser().parse_args(argv)
    if a.command in ("preview", "replay", "show"):  # readers of shards that may be URLs
        from .fs import parse_storage_options, set_storage_options

        try:
            set_storage_options(parse_storage_options(a.storage_options))
        except ValueError as e:
            print(f"degrade {a.command}: error: {e}", file=sys.stderr)
            return 2
    handler = {"build": cmd_build, "preview": cmd_preview, "recipes": cmd_recipes, "replay": cmd_replay,
               "show": cmd_show, "gallery": cmd_gallery, "ingest": cmd_ingest,
               "testset": cmd_testset, "mixture": cmd_mixture, "export": cmd_export}[a.command]
    from .fs import run_cli

    try:
        return run_cli(f"degrade {a.command}", handler, a)
    except BrokenPipeError:  # output piped into `head` and the like
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
