"""Throughput of ``degrade build`` on local processes and on Ray, on the same build.

Builds the same shards (default: 480 samples, 256 px crops, the ``realesrgan`` recipe,
shards of 16, the sample photos bundled with scikit-image) with

* ``--executor local --workers 1``
* ``--executor local --workers 2``
* ``--executor ray --workers 2`` on a local Ray cluster with 2 CPUs,

checks that all three wrote identical shards (same ``content_sha256``), and prints
samples/s and the ratios (goal: Ray within 15% of local processes, i.e. Ray / local-2
>= 0.85). Ray cluster start-up is timed separately and left out of Ray's samples/s
(a cluster is started once and serves many builds); the build itself, including input
scanning and worker start-up, is timed whole for every executor. Use an otherwise idle
machine: the load average is printed beside each run.

    python benchmarks/scale.py
    python benchmarks/scale.py --samples 192 --crop 256 --repeats 2
    python benchmarks/scale.py --ray-address auto --ray-workers 16   # an existing cluster
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--samples", type=int, default=480, help="samples per build (default 480)")
    p.add_argument("--crop", type=int, default=256, help="HQ crop size (default 256)")
    p.add_argument("--shard-size", type=int, default=16, help="samples per shard (default 16)")
    p.add_argument("--pipeline", default="realesrgan", help="recipe (default realesrgan)")
    p.add_argument("--repeats", type=int, default=1, help="builds per setting; the fastest counts (default 1)")
    p.add_argument("--ray-address", default=None, help="an existing Ray cluster (default: start a local one)")
    p.add_argument("--ray-workers", type=int, default=2, help="Ray tasks in flight (default 2)")
    p.add_argument("--ray-cpus", type=int, default=2, help="CPUs of the local Ray cluster (default 2)")
    return p.parse_args()


def timed_build(args, root: Path, name: str, **kw) -> tuple[float, str]:
    from pirs.degrade.build import BuildConfig, build

    best, sha = float("inf"), ""
    for r in range(args.repeats):
        out = root / f"{name}-{r}"
        cfg = BuildConfig(pipeline=args.pipeline, out=str(out), num_samples=args.samples, crop_size=args.crop,
                          shard_size=args.shard_size, progress=False, **kw)
        t0 = time.perf_counter()
        res = build(cfg)
        best = min(best, time.perf_counter() - t0)
        sha = res.manifest["content_sha256"]
    print(f"{name:<10} {args.samples / best:8.2f} samples/s  ({best:6.2f} s, load {os.getloadavg()[0]:.2f})",
          flush=True)
    return args.samples / best, sha


def main() -> int:
    args = parse_args()
    from pirs.degrade.executors import init_ray

    print(f"build: {args.samples} samples, {args.crop} px crops, recipe {args.pipeline}, shards of {args.shard_size}, "
          f"{os.cpu_count()} CPUs, best of {args.repeats}")
    with tempfile.TemporaryDirectory(prefix="pirs-scale-") as tmp:
        root = Path(tmp)
        local1, sha1 = timed_build(args, root, "local-1", workers=1)
        local2, sha2 = timed_build(args, root, "local-2", workers=2)
        t0 = time.perf_counter()
        init_ray(args.ray_address, args.ray_cpus)
        startup = time.perf_counter() - t0
        print(f"{'ray start':<10} {startup:8.2f} s (not counted)", flush=True)
        ray2, sha3 = timed_build(args, root, f"ray-{args.ray_workers}", workers=args.ray_workers, executor="ray",
                                 ray_address=args.ray_address)
        import ray

        ray.shutdown()
    same = sha1 == sha2 == sha3
    print(f"\nlocal-2 / local-1   {local2 / local1:.2f}x")
    print(f"ray / local-2       {ray2 / local2:.2f}  (goal >= 0.85: {'met' if ray2 / local2 >= 0.85 else 'NOT met'})")
    print(f"per core            local-2 {local2 / 2:.2f}, ray {ray2 / args.ray_workers:.2f} samples/s")
    print(f"identical shards    {'yes' if same else 'NO'} (content_sha256 {sha1[:12]})")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
