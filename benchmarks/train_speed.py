"""Training speed and memory of each restore method on its tiny config, and real-size parameter counts.

For every registered method, in separate processes so peak memory (max RSS) is each
one's own: (a) a plain diffusers ControlNet training step on the same tiny SD parts
(ControlNetModel.from_unet, frozen UNet, AdamW, MSE on the noise), the reference;
(b) the method's own step outside the trainer (training_step + backward + AdamW);
(c) the same method through pirs' trainer (`restore train`: shard loader, accelerate,
logging). The wrapper's overhead is (c) / (b) - 1 (goal: under 10%); (b) / (a) is the
method's cost beside a plain ControlNet. Then the real-size parameter counts of each
method on Stable Diffusion 1.5, built on the `meta` device (no weights needed), beside
the papers' numbers (SPIRE, Sec. 5: 1240 M total, 275 M trainable).

    python benchmarks/train_speed.py [--steps 30] [--warmup 5]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

PAPERS = {"spire": "UNet model 1240 M, 275 M trainable (SPIRE, Sec. 5 / appendix)",
          "xpsr": "not stated (official modules: 868 M trainable)", "diffrestorer": "not stated",
          "dpir": "not stated (SD3 medium's 2 B transformer; LQ branch 'far smaller than the DiT')"}

def shard_folder(tmp: Path) -> Path:
    from pirs.degrade.build import BuildConfig, build

    out = tmp / "shards"
    if not out.exists():
        build(BuildConfig(pipeline="parameterized", out=str(out), num_samples=8, crop_size=32, shard_size=8,
                          progress=False))
    return out


def timed(step, steps: int, warmup: int) -> float:
    for _ in range(warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t0) / steps


def plain_controlnet(tmp: Path, steps: int, warmup: int) -> dict:
    """(a) the reference: one diffusers ControlNet training step on the tiny SD parts."""
    import torch.nn.functional as F
    from diffusers import ControlNetModel, DDPMScheduler

    from pirs.models.components import encode_text, freeze, tiny_sd
    from pirs.models.data import DataOptions, ShardPairs

    parts = tiny_sd(0)
    freeze(parts.unet, parts.vae, parts.text_encoder)
    cn = ControlNetModel.from_unet(parts.unet, conditioning_embedding_out_channels=(8, 16))
    cn.train()
    opt = torch.optim.AdamW(cn.parameters(), lr=1e-4)
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    data = ShardPairs(str(shard_folder(tmp)), DataOptions(resolution=32))
    batch = data.batch(0, 2)

    def step():
        opt.zero_grad()
        with torch.no_grad():
            z0 = parts.vae.encode(batch["hq"]).latent_dist.mean * parts.vae.config.scaling_factor
        noise = torch.randn_like(z0)
        t = torch.randint(0, 1000, (z0.shape[0],))
        z_t = sched.add_noise(z0, noise, t)
        ctx = encode_text(parts, batch["restoration_prompt"])
        down, mid = cn(z_t, t, encoder_hidden_states=ctx, controlnet_cond=batch["lq"], return_dict=False)
        pred = parts.unet(z_t, t, encoder_hidden_states=ctx, down_block_additional_residuals=down,
                          mid_block_additional_residual=mid).sample
        F.mse_loss(pred, noise).backward()
        opt.step()

    return {"seconds_per_step": timed(step, steps, warmup)}


def method_step(name: str, tmp: Path, steps: int, warmup: int) -> dict:
    """(b) the method's own step, outside the trainer."""
    from pirs.models.data import ShardPairs
    from pirs.models.train import build_method, data_options

    m = build_method(name, "tiny", [], None)
    m.train()
    opt = torch.optim.AdamW(m.trainable_parameters(), lr=1e-4)
    batch = ShardPairs(str(shard_folder(tmp)), data_options(m, 0)).batch(0, 2)
    g = torch.Generator().manual_seed(0)

    def step():
        opt.zero_grad()
        m.training_step(batch, g)["loss"].backward()
        opt.step()

    return {"seconds_per_step": timed(step, steps, warmup), "parameters": m.parameter_counts()}


def method_trainer(name: str, tmp: Path, steps: int, warmup: int) -> dict:
    """(c) the method through pirs' trainer, timed from its per-step log (set-up and warm-up excluded)."""
    from pirs.models.train import TrainConfig, train

    out = tmp / f"run-{name}"
    train(TrainConfig(method=name, data=str(shard_folder(tmp)), out=str(out), batch_size=2, progress=False,
                      checkpoint_every=10**9, log_every=1, max_steps=warmup + steps,
                      allow_empty_text=True))  # the benchmark shards carry no captions
    secs = [json.loads(line)["seconds"] for line in (out / "log.jsonl").read_text().splitlines()]
    return {"seconds_per_step": (secs[warmup + steps - 1] - secs[warmup - 1]) / steps}


def one(kind: str, name: str, steps: int, warmup: int) -> None:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        shard_folder(tmp)
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        fn = {"plain": lambda: plain_controlnet(tmp, steps, warmup), "step": lambda: method_step(name, tmp, steps,
              warmup), "trainer": lambda: method_trainer(name, tmp, steps, warmup)}[kind]
        res = fn()
        res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        res["rss_before_mb"] = rss0 / 1024
    print(json.dumps(res))


def run_child(kind: str, name: str, steps: int, warmup: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--one", kind, "--method", name, "--steps", str(steps),
                          "--warmup", str(warmup)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def real_size_counts(name: str) -> dict:
    """Trainable and frozen parameters (millions) at the paper's size, on the meta device (pirs.models.sizes)."""
    from pirs.models.sizes import real_size_counts as counts

    return counts(name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--one", choices=["plain", "step", "trainer"], help=argparse.SUPPRESS)
    ap.add_argument("--method", default="spire", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        one(a.one, a.method, a.steps, a.warmup)
        return
    from pirs.models.method import method_names

    print(f"torch {torch.__version__}, one thread, tiny configs, batch 2 at 32 px, {a.steps} timed steps")
    plain = run_child("plain", "-", a.steps, a.warmup)
    print(f"plain diffusers ControlNet step: {plain['seconds_per_step'] * 1000:.1f} ms/step "
          f"({1 / plain['seconds_per_step']:.2f} steps/s), peak RSS {plain['peak_rss_mb']:.0f} MB")
    for name in method_names():
        s = run_child("step", name, a.steps, a.warmup)
        t = run_child("trainer", name, a.steps, a.warmup)
        over = t["seconds_per_step"] / s["seconds_per_step"] - 1
        print(f"{name:12s} own step {s['seconds_per_step'] * 1000:.1f} ms ({1 / s['seconds_per_step']:.2f} steps/s, "
              f"{s['seconds_per_step'] / plain['seconds_per_step']:.2f}x the plain ControlNet step), "
              f"through pirs' trainer {t['seconds_per_step'] * 1000:.1f} ms: wrapper overhead {over * 100:+.1f}% "
              f"(goal < 10%); peak RSS {s['peak_rss_mb']:.0f} / {t['peak_rss_mb']:.0f} MB")
    print("\nreal-size parameter counts (SD 1.5; DPIR on SD3 medium with T5-XXL), millions:")
    for name in method_names():
        c = real_size_counts(name)
        print(f"{name:12s} total {c['total']:.0f} M (backbone + trainable parts {c['backbone_and_trainable']:.0f} M), "
              f"trainable {c['trainable']:.0f} M, frozen {c['frozen']:.0f} M; paper: {PAPERS.get(name, 'not stated')}")


if __name__ == "__main__":
    main()
