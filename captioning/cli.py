"""``caption``: write high- and low-level captions into pirs shards (LLaVA, template, source)."""

from __future__ import annotations

import argparse
import sys
from collections import Counter


def _run_parser(sub) -> None:
    p = sub.add_parser(
        "run", help="caption every record of a shard folder into a new shard folder",
        description="Caption the LQ (or HQ) image of every record with one or more named instructions and write "
                    "new shards with the same keys, the images byte-for-byte unchanged and the caption fields "
                    "filled. Re-running the same command resumes an interrupted run and retries failed records.")
    p.add_argument("shards", help="input pirs shard folder (or one .tar shard), a local path or URL (s3://..)")
    p.add_argument("--out", required=True,
                   help="output folder or URL (s3://bucket/prefix; must not be the input folder)")
    p.add_argument("--backend", choices=["template", "source", "llava"], default="template",
                   help="template: from the stored degradation parameters (no model); source: copy an existing "
                        "caption; llava: LLaVA-1.5 through transformers (default template)")
    p.add_argument("--model", default=None, help="llava: local checkpoint folder or hub id")
    p.add_argument("--instructions", default=None,
                   help="comma-separated instruction names (built in: high, low); default: high,low for llava, "
                        "low,high for template, high for source")
    p.add_argument("--instructions-file", default=None,
                   help="YAML adding instructions: {instructions: {NAME: {field: caption_high, text: ...}}}")
    p.add_argument("--image", choices=["lq", "hq"], default="lq", help="image to caption (default lq)")
    p.add_argument("--batch-size", type=int, default=8, help="records per batch (default 8)")
    p.add_argument("--max-new-tokens", type=int, default=128, help="llava: generated tokens at most (default 128)")
    p.add_argument("--device", default="auto", help="llava: cuda, cpu or auto (default auto)")
    p.add_argument("--dtype", default="auto", help="llava: float16, bfloat16, float32 or auto (default auto)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--source-field", default="caption_source",
                     help="source: record field to copy (default caption_source)")
    src.add_argument("--source-dir", default=None,
                     help="source: folder of KEY.txt (or SOURCE_STEM.txt) caption files")
    p.add_argument("--overwrite", action="store_true", help="replace captions of other settings already in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    from pirs.degrade.executors import add_executor_args
    from pirs.degrade.fs import add_storage_args

    p.add_argument("--workers", type=int, default=1,
                   help="worker processes (or Ray actors), each loading the model once and captioning whole "
                        "shards (default 1: this process); the output is the same")
    add_executor_args(p, gpus=True)
    add_storage_args(p)


def cmd_run(a) -> int:
    from pirs.degrade.fs import load_hint, parse_storage_options
    from pirs.degrade.shards import ShardError

    from .instructions import InstructionError
    from .run import CaptionConfig, RunError, run

    names = [n.strip() for n in a.instructions.split(",") if n.strip()] if a.instructions else None
    try:
        opts = parse_storage_options(a.storage_options)
    except ValueError as e:
        print(f"caption run: error: {e}", file=sys.stderr)
        return 2
    cfg = CaptionConfig(shards=a.shards, out=a.out, backend=a.backend, model=a.model, instructions=names,
                        instructions_file=a.instructions_file, image=a.image, batch_size=a.batch_size,
                        max_new_tokens=a.max_new_tokens, source_field=a.source_field, source_dir=a.source_dir,
                        device=a.device, dtype=a.dtype, overwrite=a.overwrite, progress=not a.quiet,
                        executor=a.executor, workers=a.workers, ray_address=a.ray_address,
                        gpus_per_worker=a.gpus_per_worker, max_retries=a.max_retries, storage_options=opts or None)
    try:
        r = run(cfg)
    except ShardError as e:
        print(f"caption run: error: unsafe or unreadable shard: {e}", file=sys.stderr)
        return 2
    except (RunError, InstructionError, FileNotFoundError) as e:
        print(f"caption run: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ncaption run: interrupted; complete shards in {a.out} are kept, the one in flight is dropped. "
              "Run the same command again to finish.", file=sys.stderr)
        return 130
    m = r.manifest
    c = m["captions"]
    rate = r.samples / r.seconds if r.seconds else 0.0
    print(f"\ncaptioned {r.samples} records in {r.shards} shard(s) ({r.shards_done} written, "
          f"{r.shards_skipped} already complete) in {r.seconds:.1f} s, {rate:.1f} records/s")
    print(f"backend   {c['backend']}  image {c['image']}  fingerprint {c['fingerprint'][:12]}")
    for name, ins in c["instructions"].items():
        prov = c["provenance"][ins["field"]]
        print(f"  {name:<8} -> {ins['field']:<13} {prov.get('model') or prov['backend']}: {ins['text'][:60]}")
    print(f"written   {r.captions} caption(s) in this run")
    print(f"output    {r.out}/  (shard-*.tar, manifest.json, README.md, caption_failures.jsonl)")
    print("load      " + load_hint(r.out, "['train'][0]['json']"))
    if r.failures:
        by = Counter(f["reason"].split(" (")[0] for f in r.failures)
        print(f"failures  {len(r.failures)} caption(s) could not be written (fields left empty; see "
              f"{r.out}/caption_failures.jsonl):", file=sys.stderr)
        for reason, n in by.most_common(5):
            print(f"  {n:>6}  {reason[:100]}", file=sys.stderr)
        print("run the same command again to retry them", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``caption`` command."""
    parser = argparse.ArgumentParser(
        prog="caption", description="pirs caption: high- and low-level captions (XPSR) written into pirs shards, "
                                    "with LLaVA, from the stored degradation parameters, or from existing captions.")
    parser.add_argument("--debug", action="store_true", help="traceback of an unexpected error (or PIRS_DEBUG=1)")
    sub = parser.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    _run_parser(sub)
    a = parser.parse_args(argv)
    from pirs.degrade.fs import run_cli

    return run_cli(f"caption {a.cmd}", {"run": cmd_run}[a.cmd], a)


if __name__ == "__main__":
    sys.exit(main())
