"""CPU speed of on-the-fly degradation (``pirs.degrade.onthefly.OnTheFlyPairs``) against ``degrade build``.

Both make the same samples (item i is record i): the build also encodes HQ and LQ as PNG and
writes the shards; the on-the-fly dataset hands the arrays to the data loader. Timed, with
one thread per process (OpenCV, BLAS, torch) on the bundled photos:

* ``degrade build --workers 1`` (in this process): CPU seconds of the whole build (listing
  and checking the sources, degrading, PNG encoding, writing the shards and the manifest);
* ``OnTheFlyPairs``: CPU seconds to list and check the sources (once, when it is made) and
  to make every item in this process (``dataset[i]`` for all i);
* a ``DataLoader`` with ``--loader-workers`` workers over the same items: wall time only,
  which the load of a shared machine disturbs (the load average is printed beside it).

and checks on the way that every item equals its record. Run from the repository root:

    python benchmarks/onthefly_speed.py                       # realesrgan, 64 samples of 256 px
    python benchmarks/onthefly_speed.py --pipeline albumentations-weather --num-samples 32
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # one core per process
    os.environ.setdefault(_var, "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402


def cpu() -> float:
    """CPU seconds of this process (user + system)."""
    t = os.times()
    return t.user + t.system


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pipeline", default="realesrgan")
    ap.add_argument("--num-samples", type=int, default=64)
    ap.add_argument("--crop-size", type=int, default=256)
    ap.add_argument("--loader-workers", type=int, default=2)
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    a = ap.parse_args()

    import torch

    from pirs.degrade.build import BuildConfig, build, decode_png
    from pirs.degrade.onthefly import OnTheFlyPairs
    from pirs.degrade.shards import iter_records, shard_paths

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    n = a.num_samples
    from pirs.degrade import degrade, load_recipe

    # warm up: imports and caches a recipe's first use pays for (albumentations) are in neither figure
    degrade(np.zeros((a.crop_size, a.crop_size, 3), np.uint8), load_recipe(a.pipeline), np.random.default_rng(0))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "shards"
        c0, w0 = cpu(), time.perf_counter()
        build(BuildConfig(pipeline=a.pipeline, out=str(out), num_samples=n, crop_size=a.crop_size,
                          shard_size=max(1, n // 4), progress=False))
        build_cpu, build_wall = cpu() - c0, time.perf_counter() - w0
        records = {rec["index"]: (m["json"], m["lq.png"]) for s in shard_paths(out) for _, rec, m in iter_records(s)}

        c0 = cpu()
        ds = OnTheFlyPairs(a.pipeline, num_samples=n, crop_size=a.crop_size)
        scan_cpu = cpu() - c0
        c0, w0 = cpu(), time.perf_counter()
        items = [ds[i] for i in range(n)]
        item_cpu, item_wall = cpu() - c0, time.perf_counter() - w0
        for it in items:  # the figures are of the same samples
            js, lq = records[it["index"]]
            assert it["json"].encode() == js and np.array_equal(it["lq"].permute(1, 2, 0).numpy(), decode_png(lq))

        loader = torch.utils.data.DataLoader(ds, batch_size=8, num_workers=a.loader_workers,
                                             worker_init_fn=lambda _: torch.set_num_threads(1))
        load = os.getloadavg()[0]
        w0 = time.perf_counter()
        got = sum(len(b["key"]) for b in loader)
        loader_wall = time.perf_counter() - w0
        assert got == n

    fig = {
        "pipeline": a.pipeline, "num_samples": n, "crop_size": a.crop_size, "cores": os.cpu_count(),
        "build_cpu_s": round(build_cpu, 3), "build_wall_s": round(build_wall, 3),
        "onthefly_scan_cpu_s": round(scan_cpu, 3), "onthefly_items_cpu_s": round(item_cpu, 3),
        "onthefly_items_wall_s": round(item_wall, 3),
        "loader_workers": a.loader_workers, "loader_wall_s": round(loader_wall, 3), "load_average": round(load, 2),
    }
    per = {"degrade build (CPU)": build_cpu, "on the fly: scan + items (CPU)": scan_cpu + item_cpu,
           "on the fly: items (CPU)": item_cpu,
           f"on the fly: DataLoader, {a.loader_workers} workers (wall)": loader_wall}
    print(f"{a.pipeline}, {n} samples of {a.crop_size} px, one thread per process, {os.cpu_count()} cores "
          f"(load average {load:.1f})")
    print(f"{'':46s} {'seconds':>8s} {'samples/s':>10s} {'ms/sample':>10s}")
    for name, s in per.items():
        print(f"{name:46s} {s:8.2f} {n / s:10.1f} {1000 * s / n:10.1f}")
    print(f"on the fly vs degrade build, CPU per sample: {build_cpu / (scan_cpu + item_cpu):.2f}x as fast "
          f"(scan included in both)")
    if a.json:
        Path(a.json).write_text(json.dumps(fig, indent=2) + "\n")
    print(json.dumps(fig))


if __name__ == "__main__":
    sys.exit(main())
