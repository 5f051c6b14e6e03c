"""Speed and fidelity of pirs' ``realesrgan`` degradation against BasicSR / Real-ESRGAN's own code.

On the same HQ crops in the same run, single process, one thread each (OpenCV, BLAS and torch all
set to one thread; stage and per-core times are the process's CPU time, so other load on the machine
hardly moves them, and wall time is printed too), it times:

* pirs end to end: ``pirs.degrade.build.make_sample`` (crop, draw, degrade, record, HQ + LQ PNG),
  plus a per-stage replay of the stored ops;
* the reference: RealESRGANDataset's kernel sampling (``random_mixed_kernels``,
  ``circular_lowpass_kernel``, x4plus options) and RealESRGANModel.feed_data's torch degradation
  (USMSharp, filter2D, F.interpolate, Gaussian/Poisson noise, DiffJPEG, second order, final sinc +
  JPEG in random order) on CPU, then HQ + LQ PNG with the same libpng settings as pirs;

and prints per-stage tables and the ratios against the goals (>= 10x BasicSR's samples/s end to
end, >= 3x on the degradation stages alone: kernels, blur1 .. jpeg2, no USM, no conversion or PNG).
It then compares the two implementations op by op on identical inputs and parameters, compares the
distributions of PSNR(bicubic-upsampled LQ, HQ) and LQ sharpness over ``--psnr-samples`` crops, and
times ``build(workers=2)`` against ``build(workers=1)`` in wall time (goal >= 1.9x; this one needs an
otherwise idle machine, and the load average is printed beside each run).

Install (a separate venv: torch and basicsr are only for this benchmark, never pirs dependencies):

    python3 -m venv /tmp/benchvenv
    /tmp/benchvenv/bin/pip install torch==2.14.1 torchvision==0.29.1
    /tmp/benchvenv/bin/pip install basicsr==1.4.2 realesrgan==0.3.0
    /tmp/benchvenv/bin/pip install -e .            # from the repository root

``--skip-basicsr`` also runs with pirs' own venv, without torch. Run from the repository root
(defaults: about 5 minutes on 2 cores):

    /tmp/benchvenv/bin/python benchmarks/degrade_speed.py
    /tmp/benchvenv/bin/python benchmarks/degrade_speed.py --samples 10 --psnr-samples 100 --skip-workers
    python benchmarks/degrade_speed.py --skip-basicsr      # pirs only; needs no torch
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # one core per process
    os.environ.setdefault(_var, "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from pirs.degrade import load_recipe  # noqa: E402
from pirs.degrade import ops as pirs_ops  # noqa: E402
from pirs.degrade.build import BuildConfig, decode_png, encode_png, make_sample  # noqa: E402
from pirs.degrade.pipeline import finish, hq_to_float  # noqa: E402
from pirs.degrade.sources import DEFAULT_MAX_PIXELS, BadInput, check, decode, discover  # noqa: E402

PNG_ARGS = [cv2.IMWRITE_PNG_COMPRESSION, 1]  # what pirs.degrade.build.encode_png uses
STAGES = ["input", "kernels", "usm", "blur1", "resize1", "noise1", "jpeg1", "blur2", "resize2", "noise2",
          "final_resize", "final_sinc", "jpeg2", "quantise", "png"]
DEGRADE_STAGES = ["kernels", "blur1", "resize1", "noise1", "jpeg1", "blur2", "resize2", "noise2",
                  "final_resize", "final_sinc", "jpeg2"]
SCALE = 4
# options/train_realesrgan_x4plus.yml of Real-ESRGAN (dataset and model sides)
X4PLUS: dict[str, Any] = {
    "kernel_list": ["iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso"],
    "kernel_prob": [0.45, 0.25, 0.12, 0.03, 0.12, 0.03],
    "sinc_prob": 0.1, "blur_sigma": [0.2, 3.0], "sinc_prob2": 0.1, "blur_sigma2": [0.2, 1.5],
    "betag_range": [0.5, 4.0], "betap_range": [1.0, 2.0], "final_sinc_prob": 0.8,
    "resize_prob": [0.2, 0.7, 0.1], "resize_range": [0.15, 1.5], "gaussian_noise_prob": 0.5,
    "noise_range": [1.0, 30.0], "poisson_scale_range": [0.05, 3.0], "gray_noise_prob": 0.4,
    "jpeg_range": [30.0, 95.0], "second_blur_prob": 0.8, "resize_prob2": [0.3, 0.4, 0.3],
    "resize_range2": [0.3, 1.2], "gaussian_noise_prob2": 0.5, "noise_range2": [1.0, 25.0],
    "poisson_scale_range2": [0.05, 2.5], "gray_noise_prob2": 0.4, "jpeg_range2": [30.0, 95.0],
}


class Laps:
    """Accumulates CPU time per stage name between successive :meth:`lap` calls."""

    def __init__(self, times: dict[str, float]) -> None:
        self.times = times
        self.t = time.process_time()

    def lap(self, name: str) -> None:
        now = time.process_time()
        self.times[name] = self.times.get(name, 0.0) + now - self.t
        self.t = now


# ---------------------------------------------------------------- inputs


def load_sources(crop: int) -> list[tuple[Any, np.ndarray]]:
    """The bundled sample photos usable at ``crop`` without padding, as ``(SourceInfo, uint8 RGB)``."""
    refs, _ = discover(None)
    usable = []
    for ref in refs:
        try:
            info = check(ref, crop, False, DEFAULT_MAX_PIXELS)
        except BadInput:
            continue
        usable.append((info, decode(ref.read())))
    if not usable:
        sys.exit(f"no bundled sample photo is at least {crop}x{crop}")
    return usable


# ---------------------------------------------------------------- pirs


def pirs_sample(cfg: BuildConfig, recipe: Any, sources: list, index: int) -> tuple[dict, dict, float, float]:
    """One end-to-end builder sample; returns ``(record, members, cpu seconds, wall seconds)``."""
    src, image = sources[index % len(sources)]
    c0, w0 = time.process_time(), time.perf_counter()
    rec, members = make_sample(cfg, recipe, src, image, index, f"{index:08d}")
    return rec, members, time.process_time() - c0, time.perf_counter() - w0


def stage_of(op_id: str) -> str:
    """Table row of a recipe op id (the final branch's ``_a``/``_b`` twins share a row)."""
    return re.sub(r"_[ab]$", "", op_id)


def pirs_stages(rec: dict, members: dict, times: dict[str, float]) -> None:
    """Replay a sample's stored ops stage by stage, adding each stage's time to ``times``."""
    hq = decode_png(members["hq.png"])
    laps = Laps(times)
    x = hq_to_float(hq)
    laps.lap("input")
    for op in json.loads(rec["ops"]):
        x = pirs_ops.apply(x, op["op"], op["params"])
        laps.lap(stage_of(op["id"]))
    lq = finish(x, hq.shape[:2], bool(rec["lq_upsampled"]))
    laps.lap("quantise")
    encode_png(hq)
    encode_png(lq)
    laps.lap("png")
    if not np.array_equal(lq, decode_png(members["lq.png"])):
        raise AssertionError(f"sample {rec['key']}: replaying the stored ops did not give the stored LQ")


# ---------------------------------------------------------------- BasicSR / Real-ESRGAN reference


class Reference:
    """Real-ESRGAN's degradation (dataset kernels + ``feed_data``) on CPU, one sample at a time."""

    def __init__(self) -> None:
        import torch
        import torchvision.transforms.functional as tvf

        # basicsr 1.4.2 imports a module that torchvision removed in 0.17
        sys.modules.setdefault("torchvision.transforms.functional_tensor", tvf)
        from basicsr.data import degradations
        from basicsr.utils import DiffJPEG, USMSharp, img2tensor, tensor2img
        from basicsr.utils.img_process_util import filter2D

        torch.set_num_threads(1)  # per-core fairness: pirs runs with cv2.setNumThreads(1)
        self.torch, self.F, self.deg = torch, torch.nn.functional, degradations
        self.filter2D, self.img2tensor, self.tensor2img = filter2D, img2tensor, tensor2img
        self.usm, self.jpeger = USMSharp(), DiffJPEG(differentiable=False)
        self.pulse = torch.zeros(21, 21)
        self.pulse[10, 10] = 1

    def _kernel(self, sinc_prob: float, sigma: list[float]) -> np.ndarray:
        size = random.choice(range(7, 22, 2))
        if np.random.uniform() < sinc_prob:
            omega = np.random.uniform(np.pi / 3 if size < 13 else np.pi / 5, np.pi)
            k = self.deg.circular_lowpass_kernel(omega, size, pad_to=False)
        else:
            k = self.deg.random_mixed_kernels(X4PLUS["kernel_list"], X4PLUS["kernel_prob"], size, sigma,
                                              sigma, [-math.pi, math.pi], X4PLUS["betag_range"],
                                              X4PLUS["betap_range"], noise_range=None)
        p = (21 - size) // 2
        return np.pad(k, ((p, p), (p, p)))

    def kernels(self) -> tuple[Any, Any, Any]:
        """RealESRGANDataset.__getitem__'s kernel1, kernel2 and final sinc kernel, as (1, 21, 21) tensors."""
        k1 = self._kernel(X4PLUS["sinc_prob"], X4PLUS["blur_sigma"])
        k2 = self._kernel(X4PLUS["sinc_prob2"], X4PLUS["blur_sigma2"])
        if np.random.uniform() < X4PLUS["final_sinc_prob"]:
            size = random.choice(range(7, 22, 2))
            sinc = self.torch.FloatTensor(
                self.deg.circular_lowpass_kernel(np.random.uniform(np.pi / 3, np.pi), size, pad_to=21))
        else:
            sinc = self.pulse
        return tuple(self.torch.FloatTensor(k)[None] if isinstance(k, np.ndarray) else k[None]
                     for k in (k1, k2, sinc))

    def _resize(self, out: Any, probs: list[float], rng: list[float], size: tuple[int, int] | None) -> Any:
        kind = random.choices(["up", "down", "keep"], probs)[0]
        s = 1.0
        if kind == "up":
            s = np.random.uniform(1, rng[1])
        elif kind == "down":
            s = np.random.uniform(rng[0], 1)
        mode = random.choice(["area", "bilinear", "bicubic"])
        if size is None:
            return self.F.interpolate(out, scale_factor=s, mode=mode)
        return self.F.interpolate(out, size=(int(size[0] / SCALE * s), int(size[1] / SCALE * s)), mode=mode)

    def _noise(self, out: Any, suffix: str) -> Any:
        gray = X4PLUS["gray_noise_prob" + suffix]
        if np.random.uniform() < X4PLUS["gaussian_noise_prob" + suffix]:
            return self.deg.random_add_gaussian_noise_pt(out, sigma_range=X4PLUS["noise_range" + suffix],
                                                         clip=True, rounds=False, gray_prob=gray)
        return self.deg.random_add_poisson_noise_pt(out, scale_range=X4PLUS["poisson_scale_range" + suffix],
                                                    gray_prob=gray, clip=True, rounds=False)

    def _jpeg(self, out: Any, rng: list[float]) -> Any:
        q = out.new_zeros(out.size(0)).uniform_(*rng)
        return self.jpeger(self.torch.clamp(out, 0, 1), quality=q)

    def _final(self, out: Any, hw: tuple[int, int], sinc: Any, laps: Laps) -> Any:
        mode = random.choice(["area", "bilinear", "bicubic"])
        out = self.F.interpolate(out, size=(hw[0] // SCALE, hw[1] // SCALE), mode=mode)
        laps.lap("final_resize")
        out = self.filter2D(out, sinc)
        laps.lap("final_sinc")
        return out

    def sample(self, hq: np.ndarray, seed: int, times: dict[str, float], encode: bool = True) -> np.ndarray:
        """Degrade a uint8 RGB HQ crop; adds stage times to ``times``; returns the uint8 RGB LQ."""
        torch = self.torch
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        laps = Laps(times)
        with torch.no_grad():
            bgr = np.ascontiguousarray(hq[..., ::-1])
            gt = self.img2tensor([bgr.astype(np.float32) / 255.0], bgr2rgb=True, float32=True)[0][None]
            laps.lap("input")
            k1, k2, sinc = self.kernels()
            laps.lap("kernels")
            out = self.usm(gt)
            laps.lap("usm")
            out = self.filter2D(out, k1)
            laps.lap("blur1")
            out = self._resize(out, X4PLUS["resize_prob"], X4PLUS["resize_range"], None)
            laps.lap("resize1")
            out = self._noise(out, "")
            laps.lap("noise1")
            out = self._jpeg(out, X4PLUS["jpeg_range"])
            laps.lap("jpeg1")
            if np.random.uniform() < X4PLUS["second_blur_prob"]:
                out = self.filter2D(out, k2)
            laps.lap("blur2")
            hw = (gt.shape[2], gt.shape[3])
            out = self._resize(out, X4PLUS["resize_prob2"], X4PLUS["resize_range2"], hw)
            laps.lap("resize2")
            out = self._noise(out, "2")
            laps.lap("noise2")
            if np.random.uniform() < 0.5:
                out = self._final(out, hw, sinc, laps)
                out = self._jpeg(out, X4PLUS["jpeg_range2"])
                laps.lap("jpeg2")
            else:
                out = self._jpeg(out, X4PLUS["jpeg_range2"])
                laps.lap("jpeg2")
                out = self._final(out, hw, sinc, laps)
            lq = self.tensor2img(torch.clamp((out * 255.0).round(), 0, 255) / 255.0)  # BGR uint8
            laps.lap("quantise")
            if encode:
                cv2.imencode(".png", bgr, PNG_ARGS)
                cv2.imencode(".png", lq, PNG_ARGS)
                laps.lap("png")
        return np.ascontiguousarray(lq[..., ::-1])


# ---------------------------------------------------------------- speed


def bench_crop(crop: int, n: int, seed: int, ref: Reference | None) -> dict[str, Any]:
    """Time both implementations on the same ``n`` HQ crops of size ``crop``."""
    recipe = load_recipe("realesrgan")
    sources = load_sources(crop)
    cfg = BuildConfig(pipeline="realesrgan", out="", crop_size=crop, seed=seed, num_samples=n)
    for i in range(2):  # warm-up: first-call costs of OpenCV, scipy and torch
        rec, members, _, _ = pirs_sample(cfg, recipe, sources, n + i)
        if ref is not None:
            ref.sample(decode_png(members["hq.png"]), seed + n + i, {})
    ours: dict[str, float] = {}
    cpu, wall, hqs = 0.0, 0.0, []
    for i in range(n):
        rec, members, c, w = pirs_sample(cfg, recipe, sources, i)
        cpu, wall = cpu + c, wall + w
        hqs.append(decode_png(members["hq.png"]))
        pirs_stages(rec, members, ours)
    res: dict[str, Any] = {"crop": crop, "n": n, "ours": ours, "e2e_ours": cpu, "wall_ours": wall}
    if ref is not None:
        theirs: dict[str, float] = {}
        cpu, wall = 0.0, 0.0
        for i, hq in enumerate(hqs):
            c0, w0 = time.process_time(), time.perf_counter()
            ref.sample(hq, seed * 1_000_003 + i, theirs)
            cpu, wall = cpu + time.process_time() - c0, wall + time.perf_counter() - w0
        res.update(theirs=theirs, e2e_theirs=cpu, wall_theirs=wall)
    return res


def print_speed(res: dict[str, Any]) -> None:
    """Per-stage table (ms per sample, averaged over all samples, skipped stages counting 0) and ratios."""
    n, ours, theirs = res["n"], res["ours"], res.get("theirs")
    e2e_o = res["e2e_ours"]
    ours = {**ours, "other": max(0.0, e2e_o - sum(ours.values()))}
    rows = STAGES + sorted(set(ours) - set(STAGES) - {"other"}) + ["other"]
    threads = "cv2.setNumThreads(1)" + ("" if theirs is None else ", torch.set_num_threads(1)")
    print(f"\n=== crop {res['crop']}: {n} samples, single process, 1 thread each ({threads}); "
          f"CPU ms per sample; load average {_load()} ===")
    head = f"{'stage':<14}{'pirs ms':>10}{'share':>8}"
    if theirs is not None:
        e2e_t = res["e2e_theirs"]
        theirs = {**theirs, "other": max(0.0, e2e_t - sum(theirs.values()))}
        head += f"{'BasicSR ms':>12}{'share':>8}{'BasicSR/pirs':>14}"
    print(head)
    for s in rows:
        o = ours.get(s, 0.0) / n * 1e3
        line = f"{s:<14}{o:>10.2f}{o / (e2e_o / n * 1e3):>8.1%}"
        if theirs is not None:
            t = theirs.get(s, 0.0) / n * 1e3
            ratio = f"{t / o:.1f}x" if o > 1e-3 else "-"
            line += f"{t:>12.2f}{t / (res['e2e_theirs'] / n * 1e3):>8.1%}{ratio:>14}"
        print(line)
    deg_o = sum(ours.get(s, 0.0) for s in DEGRADE_STAGES)
    print(f"{'end to end':<14}{e2e_o / n * 1e3:>10.2f}{'':>8}" + (
        f"{res['e2e_theirs'] / n * 1e3:>12.2f}" if theirs is not None else ""))
    print("pirs 'input' is uint8->float; 'kernels' are built inside its blur stages; 'other' is end-to-end "
          "time minus the stages (parameter drawing, crop, record; pirs stages are timed on a replay)")
    print(f"pirs     end to end: {n / e2e_o:8.2f} samples/s/core (wall {n / res['wall_ours']:.2f}); "
          f"degradation stages alone (kernels, blur1..jpeg2): {n / deg_o:8.2f} samples/s/core")
    if theirs is not None:
        deg_t = sum(theirs.get(s, 0.0) for s in DEGRADE_STAGES)
        e2e_t = res["e2e_theirs"]
        print(f"BasicSR  end to end: {n / e2e_t:8.2f} samples/s/core (wall {n / res['wall_theirs']:.2f}); "
              f"degradation stages alone (kernels, blur1..jpeg2): {n / deg_t:8.2f} samples/s/core")
        r_e2e, r_deg = e2e_t / e2e_o, deg_t / deg_o
        print(f"RATIO end to end       pirs/BasicSR = {r_e2e:6.1f}x  (goal >= 10x: {_ok(r_e2e >= 10)})")
        print(f"RATIO degradation only pirs/BasicSR = {r_deg:6.1f}x  (goal >= 3x:  {_ok(r_deg >= 3)})")


def _ok(flag: bool) -> str:
    return "met" if flag else "NOT MET"


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# ---------------------------------------------------------------- fidelity


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two images on the 0-255 scale."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return 99.0 if mse < 1e-12 else 10 * math.log10(255.0**2 / mse)


def op_agreement(hq: np.ndarray, ref: Reference) -> None:
    """Same input, same parameters: each pirs op against the reference's, as PSNR between the outputs."""
    from pirs.degrade.ops import blur, jpeg, kernels, noise, resize, sharpen

    torch, deg = ref.torch, ref.deg
    x = hq_to_float(hq)
    t = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]

    def back(y: Any) -> np.ndarray:
        return y[0].numpy().transpose(1, 2, 0)

    rows: list[tuple[str, np.ndarray, np.ndarray, str]] = []
    with torch.no_grad():
        rows.append(("usm r50 w0.5 t10", sharpen.usm(x, 50, 0.0, 0.5, 10.0), back(ref.usm(t)), ""))
        cases = [("iso s2.0", deg.bivariate_Gaussian(21, 2.0, 2.0, 0.0, isotropic=True),
                  {"kernel": "iso", "size": 21, "sigma_x": 2.0, "sigma_y": 2.0, "theta": 0.0}),
                 ("aniso 2.5/0.8 th0.6", deg.bivariate_Gaussian(21, 2.5, 0.8, 0.6, isotropic=False),
                  {"kernel": "aniso", "size": 21, "sigma_x": 2.5, "sigma_y": 0.8, "theta": 0.6}),
                 ("gen_aniso b2.5", deg.bivariate_generalized_Gaussian(15, 2.0, 1.0, -1.0, 2.5, None, False),
                  {"kernel": "generalized_aniso", "size": 15, "sigma_x": 2.0, "sigma_y": 1.0, "theta": -1.0,
                   "beta": 2.5}),
                 ("plateau_aniso b1.5", deg.bivariate_plateau(17, 1.5, 2.8, 2.0, 1.5, isotropic=False),
                  {"kernel": "plateau_aniso", "size": 17, "sigma_x": 1.5, "sigma_y": 2.8, "theta": 2.0,
                   "beta": 1.5}),
                 ("sinc w1.3 s13", deg.circular_lowpass_kernel(1.3, 13, pad_to=False),
                  {"kernel": "sinc", "size": 13, "omega_c": 1.3})]
        for name, k_ref, params in cases:
            kdiff = float(np.abs(kernels.make_kernel(params) - k_ref).max())
            theirs = back(ref.filter2D(t, torch.FloatTensor(k_ref)[None]))
            rows.append((f"blur {name}", blur.apply(x, params), theirs, f"kernel max|diff| {kdiff:.1e}"))
        h, w = x.shape[:2]
        for mode in ("area", "bilinear", "bicubic"):
            for f in (0.37, 1.3):
                size = (math.floor(h * f), math.floor(w * f))
                ours = resize.resize(x, size, mode)
                theirs = back(ref.F.interpolate(t, size=size, mode=mode))
                rows.append((f"resize {mode} x{f} size=", ours, theirs, ""))
                ours = resize.resize(x, size, mode, factor=f if mode != "area" else None)
                theirs = back(ref.F.interpolate(t, scale_factor=f, mode=mode))
                rows.append((f"resize {mode} x{f} scale_factor=", ours, theirs, "resize1 (grid: factor)"))
        for q in (30, 60, 95):
            ours, theirs = jpeg.compress(x, q), back(ref.jpeger(t.clone(), quality=float(q)))
            rows.append((f"jpeg q{q}", ours, theirs, f"PSNR to input: pirs {psnr(ours * 255, x * 255):.2f}, "
                                                     f"ref {psnr(theirs * 255, x * 255):.2f}"))
    print("\n=== op by op: same input (one crop), same parameters; PSNR between pirs and reference ===")
    print(f"{'op':<36}{'PSNR dB':>9}{'max|diff|':>11}  note (0-255 scale)")
    for name, a, b, note in rows:
        a8, b8 = np.clip(a, 0, 1) * 255, np.clip(b, 0, 1) * 255
        print(f"{name:<36}{psnr(a8, b8):>9.2f}{float(np.abs(a8 - b8).max()):>11.2f}  {note}")
    grey = np.full((256, 256, 3), 0.5, np.float32)
    tg = torch.full((1, 3, 256, 256), 0.5)
    with torch.no_grad():
        for label, o, r in [
            ("gaussian sigma 20", noise.gaussian(grey, 20.0, False, 1) - grey,
             deg.add_gaussian_noise_pt(tg, 20.0, 0, clip=True)[0] - tg[0]),
            ("gaussian sigma 20 grey", noise.gaussian(grey, 20.0, True, 1) - grey,
             deg.add_gaussian_noise_pt(tg, 20.0, 1, clip=True)[0] - tg[0]),
            ("poisson scale 2", noise.poisson(hq_to_float(hq), 2.0, False, 1) - x,
             deg.add_poisson_noise_pt(t, 2.0, clip=True)[0] - t[0]),
            ("poisson scale 2 grey", noise.poisson(hq_to_float(hq), 2.0, True, 1) - x,
             deg.add_poisson_noise_pt(t, 2.0, clip=True, gray_noise=1)[0] - t[0])]:
            o, r = np.asarray(o), r.numpy().transpose(1, 2, 0)
            print(f"{'noise ' + label:<36}  noise std (0-255): pirs {o.std() * 255:6.3f}, ref "
                  f"{r.std() * 255:6.3f}; channel corr: pirs {_chan_corr(o):.2f}, ref {_chan_corr(r):.2f}")


def _chan_corr(n: np.ndarray) -> float:
    return float(np.corrcoef(n[..., 0].ravel(), n[..., 1].ravel())[0, 1])


def sharpness(img: np.ndarray) -> float:
    """Mean absolute Laplacian of the grey image (noise and ringing raise it, blur lowers it)."""
    g = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return float(np.abs(cv2.Laplacian(g, cv2.CV_32F)).mean())


def upsampled_psnr(lq: np.ndarray, hq: np.ndarray) -> float:
    """PSNR of the bicubically upsampled LQ against the HQ."""
    up = cv2.resize(lq.astype(np.float32), (hq.shape[1], hq.shape[0]), interpolation=cv2.INTER_CUBIC)
    return psnr(np.clip(up, 0, 255), hq)


def fidelity(n: int, crop: int, seed: int, ref: Reference) -> None:
    """Distributions of PSNR(bicubic-upsampled LQ, HQ) and LQ sharpness, pirs vs reference, same crops."""
    from scipy.stats import ks_2samp

    recipe = load_recipe("realesrgan")
    sources = load_sources(crop)
    cfg = BuildConfig(pipeline="realesrgan", out="", crop_size=crop, seed=seed + 1, num_samples=n)
    stats: dict[str, dict[str, list[float]]] = {"pirs": {"psnr": [], "sharp": []},
                                                "BasicSR": {"psnr": [], "sharp": []}}
    hq_sharp = []
    t0 = time.perf_counter()
    for i in range(n):
        _, members, _, _ = pirs_sample(cfg, recipe, sources, i)
        hq, lq = decode_png(members["hq.png"]), decode_png(members["lq.png"])
        lq_ref = ref.sample(hq, (seed + 1) * 1_000_003 + i, {}, encode=False)
        for name, img in (("pirs", lq), ("BasicSR", lq_ref)):
            stats[name]["psnr"].append(upsampled_psnr(img, hq))
            stats[name]["sharp"].append(sharpness(img))
        small = cv2.resize(hq, (crop // SCALE, crop // SCALE), interpolation=cv2.INTER_AREA)
        hq_sharp.append(sharpness(small))
    print(f"\n=== output distributions: {n} crops of {crop} (same HQ crops, independent random draws), "
          f"{time.perf_counter() - t0:.0f} s ===")
    for metric, title in (("psnr", "PSNR(bicubic-up LQ, HQ) dB"), ("sharp", "LQ mean |Laplacian|")):
        print(f"{title:<28}{'mean':>8}{'std':>8}{'p5':>8}{'p25':>8}{'p50':>8}{'p75':>8}{'p95':>8}")
        for name in ("pirs", "BasicSR"):
            v = np.asarray(stats[name][metric])
            q = np.percentile(v, [5, 25, 50, 75, 95])
            print(f"  {name:<26}{v.mean():>8.2f}{v.std():>8.2f}" + "".join(f"{x:>8.2f}" for x in q))
        a, b = np.asarray(stats["pirs"][metric]), np.asarray(stats["BasicSR"][metric])
        se = math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b)) if n > 1 else float("nan")
        ks = ks_2samp(a, b)
        print(f"  difference of means pirs - BasicSR: {a.mean() - b.mean():+.3f} (+/- {se:.3f} s.e.); "
              f"median {np.median(a) - np.median(b):+.3f}; KS D = {ks.statistic:.3f}, p = {ks.pvalue:.3f}")
    print(f"  (HQ area-downscaled to LQ size, mean |Laplacian| for scale: {np.mean(hq_sharp):.2f})")


# ---------------------------------------------------------------- workers


def bench_workers(n: int, crop: int, seed: int, repeats: int, shard: int) -> None:
    """``build(workers=2)`` against ``build(workers=1)``, alternating, best of ``repeats`` (wall time).

    Besides the whole build it times the shard phase alone by wrapping the builder's ``_run_shards``
    from outside (pool start-up, degradation, tar writing; no input scan).
    """
    from pirs.degrade import build as build_mod

    run_shards = getattr(build_mod, "_run_shards", None)
    phase: list[float] = []

    def timed(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return run_shards(*args, **kwargs)
        finally:
            phase.append(time.perf_counter() - t0)

    print(f"\n=== build(): {n} samples at crop {crop}, shard size {shard}, bundled photos, wall time, "
          f"{os.cpu_count()} CPUs ===")
    print(f"{'run':<5}{'workers':<9}{'build s':>9}{'samples/s':>11}{'shards s':>10}{'samples/s':>11}"
          f"{'work s':>9}{'busy':>7}   load avg")
    best: dict[int, tuple[float, float, float]] = {}
    for rep in range(repeats):
        for workers in (1, 2):
            load = _load()
            with tempfile.TemporaryDirectory(prefix="pirs-bench-") as tmp:
                cfg = build_mod.BuildConfig(pipeline="realesrgan", out=tmp, num_samples=n, crop_size=crop,
                                            seed=seed, shard_size=shard, workers=workers, progress=False)
                if run_shards is not None:
                    build_mod._run_shards = timed
                try:
                    r = build_mod.build(cfg)
                finally:
                    if run_shards is not None:
                        build_mod._run_shards = run_shards
                markers = Path(tmp).glob("stats/*.json")
                work = sum(json.loads(f.read_text()).get("seconds", 0.0) for f in markers)
            sh = phase[-1] if run_shards is not None else float("nan")
            print(f"{rep + 1:<5}{workers:<9}{r.seconds:>9.2f}{r.samples / r.seconds:>11.2f}{sh:>10.2f}"
                  f"{r.samples / sh:>11.2f}{work:>9.2f}{work / (workers * sh):>7.0%}   {load}")
            b = best.get(workers, (math.inf, math.inf, math.inf))
            best[workers] = (min(b[0], r.seconds), min(b[1], sh), min(b[2], work))
    (s1, p1, w1), (s2, p2, w2) = best[1], best[2]
    print("'build s' includes scanning the inputs and starting the pools; 'shards s' is the shard phase; "
          "'work s' adds up the shards' own times (stats/*.json), 'busy' = work / (workers x shards s)")
    print(f"RATIO 2 workers / 1 worker (best of {repeats}): whole build {s1 / s2:.2f}x, shard phase "
          f"{p1 / p2:.2f}x (goal >= 1.9x: {_ok(p1 / p2 >= 1.9)}); while busy (2 x work1 / work2) "
          f"{2 * w1 / w2:.2f}x")


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    """Parse the flags and run the benchmark sections."""
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=20, help="timed samples per crop size (default 20)")
    p.add_argument("--crops", default="512,256", help="HQ crop sizes, comma-separated (default 512,256)")
    p.add_argument("--psnr-samples", type=int, default=300,
                   help="crops for the output-distribution comparison; 0 skips it (default 300)")
    p.add_argument("--psnr-crop", type=int, default=256, help="crop size of that comparison (default 256)")
    p.add_argument("--worker-samples", type=int, default=300, help="samples per build() run (default 300)")
    p.add_argument("--worker-crop", type=int, default=512, help="crop size of the build() runs (default 512)")
    p.add_argument("--worker-shard-size", type=int, default=10, help="shard size of the build() runs "
                   "(default 10: many small shards, so the last shard's tail stays short)")
    p.add_argument("--worker-repeats", type=int, default=2, help="build() runs per worker count, best kept "
                   "(default 2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the crops and draws (default 0)")
    p.add_argument("--skip-workers", action="store_true", help="skip the workers=2 vs workers=1 comparison")
    p.add_argument("--skip-basicsr", action="store_true", help="time pirs only (no torch/basicsr needed)")
    args = p.parse_args(argv)
    crops = [int(c) for c in args.crops.split(",") if c.strip()]
    cv2.setNumThreads(1)
    ref = None if args.skip_basicsr else Reference()
    torch_v = "" if ref is None else f", torch {ref.torch.__version__} ({ref.torch.get_num_threads()} thread)"
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, opencv {cv2.__version__}{torch_v}")
    for crop in crops:
        print_speed(bench_crop(crop, args.samples, args.seed, ref))
    if ref is not None:
        op_agreement(load_sources(256)[0][1][:256, :256].copy(), ref)
        if args.psnr_samples > 0:
            fidelity(args.psnr_samples, args.psnr_crop, args.seed, ref)
    if not args.skip_workers:
        bench_workers(args.worker_samples, args.worker_crop, args.seed, args.worker_repeats,
                      args.worker_shard_size)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
