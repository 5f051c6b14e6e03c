"""Speed of the caption backends: ``transformers`` batched against one image at a time, and ``openai``
(a served model) with concurrent requests against one at a time.

``--backend transformers`` (default): on the same images, the same model and the same instruction in one
run, it times

* naive: the loop a user would write first, one image at a time: processor on one image and its prompt,
  ``model.generate`` (greedy), decode the new tokens;
* pirs: ``TransformersBackend.caption`` at batch sizes 1, 4 and 16 (left padding, greedy, one batch per
  ``generate`` call);

and prints images/s, generated tokens/s (new tokens up to and including EOS, padding not counted),
the share of captions identical to the naive loop's, and the speed-up of batch 16 over batch 1 and over
the naive loop (goal >= 3x).

``--backend openai``: starts ``caption serve`` (pirs' OpenAI-compatible server, dynamic batching up to
16) on the same model in another process on loopback, unless ``--endpoint`` names a running server
(vLLM, SGLang, ...), and times ``OpenAIBackend.caption`` over the images at concurrency 1, 2, 4 and 8:
images/s, the server's batch sizes (``caption serve`` only), captions identical to concurrency 1's, and
the speed-up of concurrency 8 over 1 (goal >= 4x).

Each configuration runs once to warm up, then ``--repeats`` interleaved rounds; the median is reported.
Without ``--model`` it builds a tiny random model of ``pirs.captioning.tiny`` (``--family``) in a temporary
directory (CPU, seconds). With a real checkpoint, on a GPU:

    python benchmarks/caption_speed.py                                   # tiny LLaVA, CPU, transformers
    python benchmarks/caption_speed.py --backend openai --family qwen2-vl   # tiny Qwen2-VL behind caption serve
    python benchmarks/caption_speed.py --model /data/llava-1.5-7b-hf --images 64 --max-new-tokens 128
    python benchmarks/caption_speed.py --backend openai --endpoint http://127.0.0.1:8000/v1 \\
        --served-model Qwen/Qwen2.5-VL-7B-Instruct --concurrency 1,8,64 --images 512
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from pirs.captioning.backend import XPSR_INSTRUCTIONS, Item
from pirs.captioning.tiny import FAMILIES, make_tiny
from pirs.captioning.vlm import TransformersBackend


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", choices=["transformers", "openai"], default="transformers")
    p.add_argument("--model", help="local checkpoint directory (default: a tiny random model built here)")
    p.add_argument("--family", choices=sorted(FAMILIES), default="llava", help="the tiny model's family")
    p.add_argument("--endpoint", help="openai: a running server's base URL (default: start caption serve)")
    p.add_argument("--served-model", default="tiny", help="openai: the model's name on --endpoint")
    p.add_argument("--concurrency", default="1,2,4,8", help="openai: comma-separated concurrencies")
    p.add_argument("--server-threads", type=int, default=1,
                   help="openai: torch threads of the caption serve started here (default 1: it shares the CPU "
                        "with this client; more threads spin against each other)")
    p.add_argument("--images", type=int, default=48, help="images per timed pass (default 48)")
    p.add_argument("--batch-sizes", default="1,4,16", help="comma-separated batch sizes (default 1,4,16)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--instruction", choices=sorted(XPSR_INSTRUCTIONS), default="low")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--repeats", type=int, default=3, help="timed passes per configuration; the median is kept")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def photos(n: int, seed: int) -> list[np.ndarray]:
    """Synthetic uint8 RGB images of a few sizes (gradients, stripes, noise)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        h, w = [(224, 224), (256, 192), (180, 320), (336, 336)][i % 4]
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        img = np.stack([128 + 100 * np.sin(xx / (4 + i % 9)), 255 * yy / h, 255 * ((xx // 16 + yy // 16) % 2)], -1)
        out.append(np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8))
    return out


def png(img: np.ndarray) -> bytes:
    """The image as the PNG a shard would hold (a caption run sends the shard's bytes as they are)."""
    import cv2

    ok, buf = cv2.imencode(".png", np.ascontiguousarray(img[..., ::-1]))
    assert ok
    return buf.tobytes()


class TokenCounter:
    """Wraps ``model.generate`` and counts the new tokens of every row: up to and including the first EOS."""

    def __init__(self, model, eos_ids: set[int]):
        self.model, self.generate, self.eos, self.tokens = model, model.generate, eos_ids, 0

    def __call__(self, *args, **kwargs):
        ids = self.generate(*args, **kwargs)
        for row in ids[:, kwargs["input_ids"].shape[1]:].tolist():
            ends = [i for i, t in enumerate(row) if t in self.eos]
            self.tokens += ends[0] + 1 if ends else len(row)
        return ids


def naive_loop(backend: TransformersBackend, images: list[np.ndarray], text: str) -> list[str]:
    """One image at a time, the way a first script would do it (same model, prompt and settings)."""
    import torch
    from PIL import Image

    processor, model, out = backend.processor, backend.model, []
    for img in images:
        inputs = processor(images=Image.fromarray(img), text=backend.prompt(text), return_tensors="pt")
        inputs = inputs.to(backend.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
        with torch.inference_mode():
            ids = model.generate(**inputs, max_new_tokens=backend.max_new_tokens, do_sample=False, num_beams=1,
                                 pad_token_id=processor.tokenizer.pad_token_id)
        out.append(processor.tokenizer.decode(ids[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip())
    return out


def timed(configs: dict, repeats: int, counter: TokenCounter, sync) -> dict:
    """For each named pass: median seconds, generated tokens per pass and its captions.

    Every pass runs once to warm up; then the timed passes are interleaved (round robin over the
    configurations, ``repeats`` rounds), so a change of load on the machine hits all of them alike.
    """
    captions = {name: fn() for name, fn in configs.items()}
    times: dict[str, list[float]] = {name: [] for name in configs}
    tokens = dict.fromkeys(configs, 0)
    for _ in range(repeats):
        for name, fn in configs.items():
            counter.tokens = 0
            sync()
            t0 = time.perf_counter()
            captions[name] = fn()
            sync()
            times[name].append(time.perf_counter() - t0)
            tokens[name] = counter.tokens
    return {name: (statistics.median(times[name]), tokens[name], captions[name]) for name in configs}


def with_batch(backend: TransformersBackend, bs: int, items: list[Item], instruction):
    """A pass of the backend over all items at batch size ``bs``."""
    def run() -> list[str]:
        backend.batch_size = bs
        backend.settings["batch_size"] = bs
        return backend.caption(items, instruction)
    return run


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.backend == "openai":
        return main_openai(args)
    import torch
    import transformers

    transformers.utils.logging.disable_progress_bar()
    torch.manual_seed(args.seed)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    instruction = XPSR_INSTRUCTIONS[args.instruction]

    # -- model ----------------------------------------------------------------------------------------------------
    tmp = tempfile.TemporaryDirectory(prefix="pirs-caption-speed-")
    model_dir = args.model or str(make_tiny(args.family, Path(tmp.name) / f"tiny-{args.family}", seed=args.seed))
    t0 = time.perf_counter()
    backend = TransformersBackend(model_dir, batch_size=batch_sizes[0], max_new_tokens=args.max_new_tokens,
                           device=args.device, dtype=args.dtype)
    load_s = time.perf_counter() - t0
    n_params = sum(p.numel() for p in backend.model.parameters())
    eos = backend.model.generation_config.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    counter = TokenCounter(backend.model, eos_ids)
    backend.model.generate = counter
    sync = torch.cuda.synchronize if backend.device.startswith("cuda") else (lambda: None)
    images = photos(args.images, args.seed)
    items = [Item(f"img{i:04d}", {}, img) for i, img in enumerate(images)]

    print(f"model {'(tiny, built here) ' if not args.model else ''}{model_dir}: {n_params:,} parameters, "
          f"loaded in {load_s:.1f} s; device {backend.device}, dtype {backend.dtype}, torch threads "
          f"{torch.get_num_threads()}; torch {torch.__version__}, transformers {transformers.__version__}")
    print(f"{args.images} images, instruction {instruction.name!r}, greedy, max_new_tokens {args.max_new_tokens}, "
          f"median of {args.repeats} interleaved "
          f"rounds after one warm-up; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores\n")

    # -- the naive loop and the pirs backend at each batch size, interleaved ---------------------------------------
    naive = "naive loop (1 at a time)"
    configs = {naive: lambda: naive_loop(backend, images, instruction.text)}
    configs.update({f"transformers, batch {bs}": with_batch(backend, bs, items, instruction) for bs in batch_sizes})
    results = timed(configs, args.repeats, counter, sync)
    naive_ips = args.images / results[naive][0]
    rows = []
    for label, (secs, toks, captions) in results.items():
        same = sum(x == y for x, y in zip(captions, results[naive][2], strict=True)) / args.images
        rows.append((label, secs, toks, same))
    ips = {bs: args.images / results[f"transformers, batch {bs}"][0] for bs in batch_sizes}

    print(f"{'configuration':<28} {'seconds':>8} {'images/s':>9} {'tokens/s':>9} {'x naive':>8} {'same as naive':>14}")
    for label, secs, toks, same in rows:
        print(f"{label:<28} {secs:8.3f} {args.images / secs:9.2f} {toks / secs:9.1f} "
              f"{args.images / secs / naive_ips:8.2f} {same:14.0%}")
    if 16 in ips:
        ratio = ips[16] / naive_ips
        print(f"\nbatch 16 vs naive loop: {ratio:.2f}x images/s (goal >= 3x: {'met' if ratio >= 3 else 'NOT met'})")
        if 1 in ips:
            ratio = ips[16] / ips[1]
            print(f"batch 16 vs batch 1: {ratio:.2f}x images/s (goal >= 3x: {'met' if ratio >= 3 else 'NOT met'})")
    tmp.cleanup()
    return 0



def main_openai(args: argparse.Namespace) -> int:
    """Concurrency 1..N against an OpenAI-compatible server (``caption serve`` started here unless --endpoint)."""
    import json
    import re
    import subprocess
    import threading
    import urllib.request

    from pirs.captioning.openai_api import OpenAIBackend

    levels = [int(c) for c in args.concurrency.split(",")]
    instruction = XPSR_INSTRUCTIONS[args.instruction]
    tmp = tempfile.TemporaryDirectory(prefix="pirs-caption-speed-")
    server = None
    endpoint = args.endpoint
    if endpoint is None:
        model_dir = args.model or str(make_tiny(args.family, Path(tmp.name) / f"tiny-{args.family}", seed=args.seed))
        cmd = [sys.executable, "-m", "pirs.captioning.cli", "serve", "--model", model_dir, "--port", "0",
               "--served-model-name", args.served_model, "--device", args.device, "--dtype", args.dtype,
               "--max-batch", "16"]
        server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                  env=dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS=str(args.server_threads)))
        seen = []
        for line in server.stderr:  # progress bars and warnings first, then "caption serve: ... at URL"
            seen.append(line)
            m = re.search(r"caption serve: .* at (http://\S+/v1)", line)
            if m:
                endpoint = m.group(1)
                print(line.strip())
                threading.Thread(target=server.stderr.read, daemon=True).start()  # a full pipe must not block it
                break
        else:
            print("caption serve did not start:\n" + "".join(seen), file=sys.stderr)
            return 1
    images = photos(args.images, args.seed)
    items = [Item(f"img{i:04d}", {}, img, png(img)) for i, img in enumerate(images)]  # as a run sends them
    backend = OpenAIBackend(endpoint, args.served_model, concurrency=max(levels), max_new_tokens=args.max_new_tokens,
                            timeout=600)

    def stats() -> dict:
        if server is None:
            return {}
        with urllib.request.urlopen(endpoint.rsplit("/v1", 1)[0] + "/stats", timeout=30) as r:
            return json.loads(r.read())

    def at(c: int):
        def go() -> list[str]:
            backend.concurrency = c
            if backend._pool is not None:
                backend._pool.shutdown()
                backend._pool = None
            return backend.caption(items, instruction)
        return go

    try:
        print(f"endpoint {endpoint}, served model {args.served_model!r}, {args.images} images, instruction "
              f"{instruction.name!r}, greedy, max_tokens {args.max_new_tokens}, median of {args.repeats} "
              f"interleaved rounds after one warm-up; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} "
              "cores\n")
        configs = {c: at(c) for c in levels}
        captions = {c: fn() for c, fn in configs.items()}  # warm-up
        times: dict[int, list[float]] = {c: [] for c in levels}
        sizes: dict[int, dict] = {}
        for _ in range(args.repeats):
            for c, fn in configs.items():
                before = stats().get("batch_sizes", {})
                t0 = time.perf_counter()
                captions[c] = fn()
                times[c].append(time.perf_counter() - t0)
                after = stats().get("batch_sizes", {})
                sizes[c] = {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) - before.get(k, 0)}
        base = args.images / statistics.median(times[levels[0]])
        print(f"{'concurrency':<12} {'seconds':>8} {'images/s':>9} {'x c=' + str(levels[0]):>7} "
              f"{'same captions':>14}  server batch sizes (size: count, last round)")
        for c in levels:
            secs = statistics.median(times[c])
            same = sum(x == y for x, y in zip(captions[c], captions[levels[0]], strict=True)) / args.images
            print(f"{c:<12} {secs:8.3f} {args.images / secs:9.2f} {args.images / secs / base:7.2f} {same:14.0%}  "
                  f"{sizes.get(c) or ''}")
        if 1 in levels and 8 in levels:
            ratio = statistics.median(times[1]) / statistics.median(times[8])
            print(f"\nconcurrency 8 vs 1: {ratio:.2f}x images/s (goal >= 4x: {'met' if ratio >= 4 else 'NOT met'})")
    finally:
        backend.close()
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
