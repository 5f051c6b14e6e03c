"""Native-size inference: the tiled path against a plain sampling loop, and peak memory against image size.

All on SPIRE's tiny random model (its UNet has a few thousand parameters), on the CPU,
one thread, in one run:

1. **Overhead at one tile**: ``restore`` through pirs' tiled path (latent tiles, tiled
   VAE decode) with tiles covering the whole latent, against the reference: the same
   DDIM loop written out plainly (eps on the whole latent, ``scheduler.step``, one VAE
   decode), on the same image, seed and steps. Outputs are checked equal. Goal: at most
   15% slower.
2. **Memory bounded by the tile**: peak tensor memory (``pirs.models.memory.TensorMemory``:
   the largest sum of live storages the computation allocated; scratch memory inside fused
   kernels such as attention is not seen, so the untiled figures are lower bounds) for
   images of 1x, 4x and 16x the tile's area, tiled and untiled.
3. **Spandrel baselines**: images/s of ``bench baseline --checkpoint`` on the CPU
   (``benchmarks/spandrel_speed.py``, Real-ESRGAN's compact x4 architecture), whole and tiled.

    .venv/bin/python benchmarks/predict_speed.py [--steps 5] [--repeat 5] [--no-spandrel]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import torch


def plain_loop(model, lq: torch.Tensor, steps: int, seed: int) -> torch.Tensor:
    """The reference: DDIM over the whole latent, one VAE decode (no tiles, no pirs sampling helpers)."""
    from diffusers import DDIMScheduler

    keys = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "prediction_type", "steps_offset",
            "clip_sample", "set_alpha_to_one")
    sched = DDIMScheduler(**{k: v for k, v in model.scheduler_config.items() if k in keys})
    sched.set_timesteps(steps)
    f = model.latent_factor
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn((1, model.unet.config.in_channels, lq.shape[2] // f, lq.shape[3] // f), generator=gen)
    z = z * sched.init_noise_sigma
    r, s = model.text(["Deblur with sigma 2.0"]), model.text([""])
    for t in sched.timesteps:
        z = sched.step(model.eps(z, t, lq, r, s), t, z).prev_sample
    return model.vae.decode(z / model.vae.config.scaling_factor).sample.clamp(-1, 1)


def tiled(model, lq: torch.Tensor, steps: int, seed: int, tile: int) -> torch.Tensor:
    batch = {"lq": lq, "restoration_prompt": ["Deblur with sigma 2.0"], "semantic_prompt": [""]}
    overlap = min(8, tile - 1)
    return model.predict(batch, steps, torch.Generator().manual_seed(seed), tile_size=tile, tile_overlap=overlap,
                         vae_decoder_tile=tile, vae_tile_overlap=overlap)


def best_of_alternating(fns: list, repeat: int) -> list[float]:
    """The fastest CPU time of each function, run in turn ``repeat`` times (one thread: CPU time is what the
    process itself spent, which other load on a shared machine disturbs far less than the wall clock)."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            t0 = time.process_time()
            fn()
            times[i].append(time.process_time() - t0)
    return [min(t) for t in times]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--side", type=int, default=128, help="image side in px for the overhead measurement")
    ap.add_argument("--tile", type=int, default=32, help="latent tile side for the memory measurement")
    ap.add_argument("--no-spandrel", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(1)
    from pirs.models.memory import TensorMemory
    from pirs.models.train import build_method

    model = build_method("spire", "tiny", [], None).eval()
    f = model.latent_factor
    g = torch.Generator().manual_seed(0)
    lq = torch.rand(1, 3, a.side, a.side, generator=g) * 2 - 1
    latent = a.side // f
    with torch.no_grad():
        ref = plain_loop(model, lq, a.steps, 1)
        ours = tiled(model, lq, a.steps, 1, latent)
        assert torch.equal(ref, ours), "one-tile output differs from the plain loop"
        t_ref, t_one = best_of_alternating([lambda: plain_loop(model, lq, a.steps, 1),
                                            lambda: tiled(model, lq, a.steps, 1, latent)], a.repeat)
    print(f"torch {torch.__version__}, one thread; SPIRE tiny ({sum(p.numel() for p in model.parameters())} "
          f"parameters), {a.side}x{a.side} px ({latent}x{latent} latent), DDIM {a.steps} steps, fastest CPU "
          f"time of {a.repeat} alternating runs")
    print(f"plain loop (reference)        {t_ref * 1000:8.1f} ms")
    print(f"pirs tiled path, one tile     {t_one * 1000:8.1f} ms   ratio {t_one / t_ref:.3f} (goal <= 1.15); "
          "outputs identical")

    print(f"\npeak tensor memory, latent tile {a.tile}x{a.tile} (overlap 8), one step:")
    print(f"{'image':>16s} {'tiles':>6s} {'tiled':>10s} {'untiled':>10s} {'tiled / 1x':>11s} {'untiled / 1x':>13s}")
    base = None
    for k in (1, 2, 4):  # 1x, 4x, 16x the tile's area
        side = a.tile * k * f
        x = torch.zeros(1, 3, side, side)
        with torch.no_grad():
            with TensorMemory() as m_t:
                tiled(model, x, 1, 0, a.tile)
            with TensorMemory() as m_u:
                tiled(model, x, 1, 0, a.tile * k)
        from pirs.models.tiling import tile_boxes

        n = len(tile_boxes(a.tile * k, a.tile * k, a.tile, 8))
        base = base or (m_t.peak, m_u.peak)
        print(f"{side:>7d}x{side:<8d} {n:>6d} {m_t.peak / 2**20:>8.1f}MB {m_u.peak / 2**20:>8.1f}MB "
              f"{m_t.peak / base[0]:>11.2f} {m_u.peak / base[1]:>13.2f}")
    if not a.no_spandrel:
        print("\nspandrel baseline (benchmarks/spandrel_speed.py):", flush=True)
        script = Path(__file__).with_name("spandrel_speed.py")
        subprocess.run([sys.executable, str(script)], check=True)


if __name__ == "__main__":
    main()
