"""Speed of ``bench evaluate`` against a naive pyiqa loop, in the same run.

The naive loop is what a paper's evaluation script usually does: for each metric, build
the pyiqa metric once, then call it on every (prediction, reference) file pair, one
pair at a time, decoding both files on every call. ``bench evaluate`` decodes each image
once, batches images of equal size, and feeds every batch to all metrics.

Both sides score the same bicubic predictions of a test set built from the bundled
photos, with psnr, ssim and lpips; LPIPS uses random weights saved in the layout the
harness expects (the timing does not depend on the weights' values; ``PIRS_UNVERIFIED_WEIGHTS``
lets them through the check of the hash in their published names). ``bench evaluate`` runs
as it does by default: weights read by pirs first (no unpickling), and each mean's 95%
bootstrap interval (1000 resamples) and standard deviation in the summary. The means of the
two sides are printed so one can see they compute the same thing.

Run from the repository root, in the project's venv (about a minute on 2 cores):

    .venv/bin/python benchmarks/bench_speed.py
    .venv/bin/python benchmarks/bench_speed.py --images 500 --size 256 --batch-size 32
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("PIRS_UNVERIFIED_WEIGHTS", "1")  # random LPIPS weights under the published file names


def _save(obj, path: Path) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path)


def random_lpips_weights(root: Path) -> None:
    """Random AlexNet and LPIPS linear layers under ``root``, where the harness looks for them."""
    import torch
    import torchvision
    from pyiqa.archs.lpips_arch import NetLinLayer

    torch.manual_seed(0)
    _save(torchvision.models.alexnet().state_dict(), root / "torch/hub/checkpoints/alexnet-owt-7be5be79.pth")
    lins = {f"lin{k}.model.1.weight": NetLinLayer(ch, use_dropout=True).state_dict()["model.1.weight"].abs()
            for k, ch in enumerate([64, 192, 384, 256, 256])}
    _save(lins, root / "torch/hub/pyiqa/LPIPS_v0.1_alex-df73285e.pth")


def make_test_set(tmp: Path, images: int, size: int) -> tuple[Path, Path, Path]:
    """Shards of ``images`` pairs, their HQ as PNG files, and bicubic predictions."""
    from pirs.benchmark.baselines import write_baseline
    from pirs.degrade.build import BuildConfig, build
    from pirs.degrade.shards import iter_records, shard_paths

    ref = tmp / "ref"
    build(BuildConfig(pipeline="realesrgan", out=str(ref), num_samples=images, crop_size=size, shard_size=100,
                      workers=min(2, os.cpu_count() or 1), flip_prob=0.0, progress=False))
    hq_dir = tmp / "hq"
    hq_dir.mkdir()
    for shard in shard_paths(ref):
        for key, _, members in iter_records(shard):
            (hq_dir / f"{key}.png").write_bytes(members["hq.png"])
    preds = tmp / "pred"
    write_baseline("bicubic", str(ref), str(preds))
    return ref, hq_dir, preds


def naive(metrics: list[str], preds: Path, hq_dir: Path, weights: Path) -> tuple[float, dict[str, float]]:
    """For each metric, pyiqa on every file pair, one at a time."""
    import pyiqa
    import torch

    from pirs.benchmark.weights import offline

    keys = sorted(p.stem for p in hq_dir.glob("*.png"))
    means = {}
    t0 = time.perf_counter()
    for name in metrics:
        with offline(str(weights)):
            metric = pyiqa.create_metric(name, device=torch.device("cpu"))
        values = []
        with torch.no_grad():
            for k in keys:
                values.append(float(metric(str(preds / f"{k}.png"), str(hq_dir / f"{k}.png"))))
        means[name] = float(np.mean(values))
    return time.perf_counter() - t0, means


def ours(metrics: list[str], preds: Path, ref: Path, weights: Path, out: Path, batch: int) -> tuple[float, dict]:
    """``bench evaluate`` on the same predictions."""
    from pirs.benchmark.evaluate import EvalConfig, evaluate

    t0 = time.perf_counter()
    summary = evaluate(EvalConfig(predictions=str(preds), reference=str(ref), metrics=metrics, out=str(out),
                                  batch_size=batch, device="cpu", weights_dir=str(weights), cache_dir=None,
                                  progress=False))
    assert all(summary["metrics"][m]["ci95"] for m in metrics)  # intervals on, as by default
    return time.perf_counter() - t0, {m: summary["metrics"][m]["value"] for m in metrics}


def main() -> None:
    """Parse arguments, build the test set, time both sides, print the ratio."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=300, help="test-set size (default 300)")
    ap.add_argument("--size", type=int, default=256, help="HQ crop size (default 256)")
    ap.add_argument("--metrics", default="psnr,ssim,lpips", help="metrics (default psnr,ssim,lpips)")
    ap.add_argument("--batch-size", type=int, default=16, help="bench evaluate batch size (default 16)")
    a = ap.parse_args()
    metrics = [m.strip() for m in a.metrics.split(",") if m.strip()]

    import pyiqa  # noqa: F401  (imported before timing, for both sides)
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; "
          f"{a.images} images of {a.size}x{a.size}; metrics {', '.join(metrics)}")
    with tempfile.TemporaryDirectory(prefix="pirs-bench-speed-") as tmp:
        tmp = Path(tmp)
        weights = tmp / "weights"
        random_lpips_weights(weights)
        t = time.perf_counter()
        ref, hq_dir, preds = make_test_set(tmp, a.images, a.size)
        print(f"test set and bicubic predictions built in {time.perf_counter() - t:.1f} s")
        t_ours, m_ours = ours(metrics, preds, ref, weights, tmp / "results" / "bicubic.json", a.batch_size)
        t_naive, m_naive = naive(metrics, preds, hq_dir, weights)
    print(f"\n{'':<28}{'seconds':>9}{'images/s':>10}   " + "  ".join(f"{m:>10}" for m in metrics))
    for name, sec, means in (("bench evaluate", t_ours, m_ours), ("naive pyiqa loop", t_naive, m_naive)):
        print(f"{name:<28}{sec:>9.2f}{a.images / sec:>10.1f}   " + "  ".join(f"{means[m]:>10.4f}" for m in metrics))
    diff = max(abs(m_ours[m] - m_naive[m]) for m in metrics)
    print(f"largest difference between the two sides' means: {diff:.2e}")
    ratio = t_naive / t_ours
    print(f"RATIO naive / bench evaluate = {ratio:.2f}x (goal >= 3x: {'met' if ratio >= 3 else 'NOT MET'})")


if __name__ == "__main__":
    main()
