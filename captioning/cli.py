"""``caption``: write captions into pirs shards (transformers, a served model, template, source); serve a model."""

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
    p.add_argument("--backend", choices=["template", "source", "transformers", "openai", "llava"],
                   default="template",
                   help="template: from the stored degradation parameters (no model); source: copy an existing "
                        "caption; transformers: any vision-language model transformers loads (LLaVA, Qwen2-VL, "
                        "Qwen2.5-VL, LLaVA-OneVision, Idefics3/SmolVLM, ...); openai: a model served by vLLM, "
                        "SGLang, LMDeploy, TGI or `caption serve`; llava: a name for transformers (default template)")
    p.add_argument("--model", default=None, help="transformers: local checkpoint folder or hub id")
    p.add_argument("--instructions", default=None,
                   help="comma-separated instruction names, or FIELD=NAME to write one into another caption field "
                        "(`caption instructions` lists them: high, low, qinstruct, spire-long, spire-short, supir); "
                        "default: high,low for a model, low,high for template, high for source")
    p.add_argument("--instructions-file", default=None,
                   help="YAML adding instructions: {instructions: {NAME: {field: caption_high, text: ...}}}")
    p.add_argument("--image", choices=["lq", "hq"], default="lq", help="image to caption (default lq)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="records per batch (default 8; openai: 4 x --concurrency, so the server stays busy)")
    p.add_argument("--max-new-tokens", type=int, default=128,
                   help="transformers, openai: generated tokens at most (default 128)")
    p.add_argument("--device", default="auto", help="transformers: cuda, cpu or auto (default auto)")
    p.add_argument("--dtype", default="auto",
                   help="transformers: float16, bfloat16, float32 or auto (default auto)")
    o = p.add_argument_group("openai backend (a served model)")
    o.add_argument("--endpoint", default=None,
                   help="base URL of the OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1; several "
                        "comma-separated: requests go to the least busy")
    o.add_argument("--served-model", default=None, help="the model's name on the server (GET ENDPOINT/models)")
    o.add_argument("--concurrency", type=int, default=8, help="requests in flight per worker (default 8)")
    o.add_argument("--timeout", type=float, default=120.0, help="seconds per request (default 120)")
    o.add_argument("--retries", type=int, default=4,
                   help="retries of a request that timed out, could not connect or got a 5xx/429 (default 4)")
    o.add_argument("--retry-backoff", type=float, default=1.0,
                   help="seconds before the first retry, doubled each time, at most 60 (default 1)")
    o.add_argument("--seed", type=int, default=0, help="seed sent with every request (decoding is greedy; default 0)")
    o.add_argument("--api-key-env", default="OPENAI_API_KEY",
                   help="environment variable holding the API key (default OPENAI_API_KEY; never written out)")
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
    batch = a.batch_size if a.batch_size is not None else 4 * a.concurrency if a.backend == "openai" else 8
    cfg = CaptionConfig(shards=a.shards, out=a.out, backend=a.backend, model=a.model, instructions=names,
                        instructions_file=a.instructions_file, image=a.image, batch_size=batch,
                        max_new_tokens=a.max_new_tokens, source_field=a.source_field, source_dir=a.source_dir,
                        device=a.device, dtype=a.dtype, overwrite=a.overwrite, progress=not a.quiet,
                        executor=a.executor, workers=a.workers, ray_address=a.ray_address,
                        gpus_per_worker=a.gpus_per_worker, max_retries=a.max_retries, storage_options=opts or None,
                        endpoint=a.endpoint, served_model=a.served_model, concurrency=a.concurrency,
                        timeout=a.timeout, retries=a.retries, retry_backoff=a.retry_backoff, seed=a.seed,
                        api_key_env=a.api_key_env)
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
    from pirs.degrade.preview import clip_lines

    template = {"caption_low": "written from each record's applied degradations (no model)",
                "caption_high": "copied from caption_source where a record has one, else left empty"}
    for name, ins in c["instructions"].items():
        prov = c["provenance"][ins["field"]]
        what = template.get(ins["field"], "") if c["backend"] == "template" else ""
        what = what or clip_lines(ins["text"], 70, 1)[0]  # the instruction, cut at a word with "..."
        print(f"  {name:<8} -> {ins['field']:<13} {prov.get('model') or prov['backend']}: {what}")
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


def _serve_parser(sub) -> None:
    p = sub.add_parser(
        "serve", help="serve a vision-language model over the OpenAI chat-completions protocol",
        description="Serve a local vision-language model (any the transformers backend loads) at "
                    "http://HOST:PORT/v1 with the OpenAI chat-completions protocol that vLLM, SGLang, LMDeploy "
                    "and TGI serve, for `caption run --backend openai` on machines without those engines. "
                    "Greedy only; concurrent requests are generated together in left-padded batches.")
    p.add_argument("--model", required=True, help="local checkpoint folder (or a hub id in the local cache)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free port)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--served-model-name", default=None, help="the name clients use (default: --model as given)")
    p.add_argument("--max-batch", type=int, default=16, help="requests generated together at most (default 16)")
    p.add_argument("--batch-wait", type=float, default=0.05,
                   help="seconds to wait for the expected requests once the model is free (default 0.05)")
    p.add_argument("--max-tokens-limit", type=int, default=4096, help="largest max_tokens accepted (default 4096)")
    p.add_argument("--device", default="auto", help="cuda, cpu or auto (default auto)")
    p.add_argument("--dtype", default="auto", help="float16, bfloat16, float32 or auto (default auto)")
    p.add_argument("--api-key-env", default=None,
                   help="answer only requests bearing the key in this environment variable (default: no key)")
    p.add_argument("--verbose", action="store_true", help="log every request")


def cmd_serve(a) -> int:
    from .serve import serve

    try:
        serve(a.model, a.port, a.host, a.served_model_name, a.device, a.dtype, a.max_batch, a.batch_wait,
              a.max_tokens_limit, a.verbose, a.api_key_env)
    except KeyboardInterrupt:
        print("\ncaption serve: stopped", file=sys.stderr)
    return 0


def cmd_instructions(a) -> int:
    from .instructions import load_instructions

    for name, ins in load_instructions(a.instructions_file).items():
        print(f"{name:<12} {ins.field:<14} {ins.text}")
        if ins.source:
            print(f"{'':<12} {'':<14} ({ins.source})")
    return 0


def make_parser() -> argparse.ArgumentParser:
    """The ``caption`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="caption", description="pirs caption: high- and low-level captions (XPSR, SPIRE) written into pirs "
                                    "shards, by a vision-language model (transformers, or served by vLLM, SGLang, "
                                    "LMDeploy, TGI), from the stored degradation parameters, or from existing "
                                    "captions; and a small OpenAI-compatible server for a local model.")
    parser.add_argument("--debug", action="store_true", help="traceback of an unexpected error (or PIRS_DEBUG=1)")
    sub = parser.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    _run_parser(sub)
    _serve_parser(sub)
    ins = sub.add_parser("instructions", help="list the named instructions (built in, and those of a file)")
    ins.add_argument("--instructions-file", default=None, help="YAML adding instructions")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``caption`` command."""
    parser = make_parser()
    a = parser.parse_args(argv)
    from pirs.degrade.fs import run_cli

    return run_cli(f"caption {a.cmd}", {"run": cmd_run, "serve": cmd_serve, "instructions": cmd_instructions}[a.cmd], a)


if __name__ == "__main__":
    sys.exit(main())
