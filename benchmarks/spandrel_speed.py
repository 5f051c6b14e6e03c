"""Speed of ``bench baseline --checkpoint`` on CPU: images per second, whole images and tiled.

Random weights in a real published configuration (the timing does not depend on the
weights' values), saved as .safetensors and detected back by spandrel:

``compact``
    Real-ESRGAN's ``realesr-general-x4v3`` (SRVGGNetCompact: 64 features, 32 convs, x4,
    1.2 M parameters) on a x4 test set whose LQ is ``--size`` px (HQ 4 x ``--size``).
``nafnet``
    NAFNet width 16 (enc 1-1-1-28, middle 1, dec 1-1-1-1: the GoPro/REDS layout at half the
    width, 4.3 M parameters) on a set whose LQ has the HQ size (``--size`` px).

Each run restores the whole test set end to end (shard decoding, the model, PNG encoding,
run.json) whole (one tile per image) and cut into ``--tile`` px tiles overlapping by
``--overlap`` px, after one warm-up image; the two alternate ``--repeat`` times and the fastest
of each is kept (the machine may be shared). The ratio tiled / whole is the cost of tiling at
that tile size: the overlaps are computed twice, smaller convolutions are less efficient, plus
the blending.

Run from the repository root, in the project's venv (about a minute each on 2 cores):

    .venv/bin/python benchmarks/spandrel_speed.py
    .venv/bin/python benchmarks/spandrel_speed.py --arch nafnet --images 4 --size 256 --tile 128 --overlap 16
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def make_checkpoint(arch: str, path: Path) -> Path:
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    if arch == "compact":
        from spandrel.architectures.Compact import Compact

        model = Compact(num_feat=64, num_conv=32, upscale=4, act_type="prelu")
    else:
        from spandrel.architectures.NAFNet import NAFNet

        model = NAFNet(width=16, middle_blk_num=1, enc_blk_nums=[1, 1, 1, 28], dec_blk_nums=[1, 1, 1, 1])
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def make_test_set(root: Path, images: int, size: int, arch: str) -> Path:
    """A x4 set of LQ ``size`` px (compact), or one whose LQ is stored at the HQ size ``size`` (nafnet)."""
    from pirs.degrade.build import BuildConfig, build

    ref = root / "ref"
    build(BuildConfig(pipeline="realesrgan", out=str(ref), num_samples=images,
                      crop_size=size * 4 if arch == "compact" else size, shard_size=100, scale=4,
                      upsample_lq=arch == "nafnet", flip_prob=0.0, pad=True, progress=False))
    return ref


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", choices=("compact", "nafnet"), default="compact")
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--size", type=int, default=256, help="model input (LQ) side in px (default 256)")
    ap.add_argument("--tile", type=int, default=None, help="tile size in px (default: half of --size)")
    ap.add_argument("--overlap", type=int, default=16, help="tile overlap in px (default 16)")
    ap.add_argument("--repeat", type=int, default=3, help="alternating runs of each, fastest kept (default 3)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: torch's choice; 1 is steadier on a shared machine)")
    a = ap.parse_args(argv)

    import torch

    from pirs.benchmark.spandrel_baseline import load_model, write_spandrel_baseline

    if a.threads:
        torch.set_num_threads(a.threads)

    side = a.size
    out_side = a.size * 4 if a.arch == "compact" else a.size
    tile = a.tile or side // 2
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ckpt = make_checkpoint(a.arch, root / f"{a.arch}.safetensors")
        lm = load_model(ckpt)
        ref = make_test_set(root, a.images, a.size, a.arch)
        warm = make_test_set(root / "warm", 1, a.size, a.arch)
        write_spandrel_baseline(ckpt, warm, root / "warm-out", device="cpu", progress=False)
        best: dict[str, float] = {}
        for r in range(a.repeat):
            for label, t in (("whole", 0), ("tiled", tile)):
                t0 = time.perf_counter()
                run = write_spandrel_baseline(ckpt, ref, root / label, tile_size=t, tile_overlap=a.overlap,
                                              device="cpu", overwrite=True, progress=False)
                dt = time.perf_counter() - t0
                best[label] = min(dt, best.get(label, dt))
                print(f"run {r + 1} {label:5s} {run['counts']['images'] / dt:7.2f} images/s  "
                      f"({run['counts']['images']} images in {dt:.2f} s, {run['counts']['tiles']} tiles)")
        rates = {k: a.images / v for k, v in best.items()}
    print(f"\n{lm.arch_id} ({lm.parameters / 1e6:.2f} M parameters, x{lm.scale}), model input {side} x {side} px, "
          f"output {out_side} x {out_side}, fp32 on CPU, {torch.get_num_threads()} threads")
    print(f"fastest: whole {rates['whole']:.2f} images/s, tiled {rates['tiled']:.2f} images/s (tiles of {tile} px "
          f"overlapping by >= {a.overlap} px): tiled / whole time = {rates['whole'] / rates['tiled']:.2f}")


if __name__ == "__main__":
    main()
