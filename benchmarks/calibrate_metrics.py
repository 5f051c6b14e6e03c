"""Calibrate pirs' metrics against the reference implementations, and write the calibration fixture.

On the calibration pairs of ``tests/calibration_pairs.py`` (two ground truths x bicubic, JPEG,
blur and noise, 200x200) with 0 and 4 px borders, it computes:

* BasicSR 1.4.2's ``calculate_psnr`` / ``calculate_ssim`` (Y and RGB) and ``calculate_niqe(convert_to='y')``:
  stored in ``tests/fixtures/calibration/basicsr.json`` (with the pairs' hashes and the NIQE model
  parameters BasicSR ships, so that ``tests/test_bench_calibration.py`` checks pirs without BasicSR);
* pyiqa 0.1.16's own metrics, each image on its own, the way a paper's script calls them;
* pirs' scorers (``build_scorers``), in batches, as ``bench evaluate`` runs them;

and prints, per metric, the reference it equals and the largest absolute difference measured,
plus what pirs' metric is *not* equal to and by how much (a Markdown table: the README's). The
network metrics run with random weights saved under their published names (their values mean
nothing; the comparison is of the computation).

Install (a separate venv that sees the project's packages; basicsr is never a pirs dependency):

    python3.11 -m venv /tmp/basicsr-venv
    echo "import site; site.addsitedir('$PWD/.venv/lib/python3.11/site-packages')" \\
        > /tmp/basicsr-venv/lib/python3.11/site-packages/pirs_venv.pth
    /tmp/basicsr-venv/bin/pip install --no-build-isolation --no-deps basicsr==1.4.2 addict yapf future lmdb

(or ``pip install torch==2.14.1 torchvision==0.29.1 basicsr==1.4.2`` in a venv of its own, then
``pip install -e .``). basicsr 1.4.2 imports ``torchvision.transforms.functional_tensor``, which
torchvision removed in 0.17; this script aliases it to ``torchvision.transforms.functional``
before the import, changing nothing else. Run from the repository root (about 2 minutes):

    /tmp/basicsr-venv/bin/python benchmarks/calibrate_metrics.py            # print the table
    /tmp/basicsr-venv/bin/python benchmarks/calibrate_metrics.py --write    # and rewrite the fixture
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "calibration" / "basicsr.json"
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("PIRS_UNVERIFIED_WEIGHTS", "1")  # random weights under the published names

from calibration_pairs import BORDERS, digest, pairs  # noqa: E402


def basicsr_values(all_pairs, prior_out: dict) -> dict:
    """BasicSR's numbers for every pair and border (its functions take BGR uint8 HWC)."""
    import torchvision.transforms.functional as tvf

    sys.modules.setdefault("torchvision.transforms.functional_tensor", tvf)  # removed in torchvision 0.17
    import basicsr
    from basicsr.metrics import calculate_niqe, calculate_psnr, calculate_ssim
    from basicsr.metrics import niqe as basicsr_niqe

    params = np.load(Path(basicsr_niqe.__file__).with_name("niqe_pris_params.npz"))
    prior_out["mu"] = params["mu_pris_param"].ravel().tolist()
    prior_out["cov"] = params["cov_pris_param"].tolist()
    prior_out["source"] = f"basicsr {basicsr.__version__} basicsr/metrics/niqe_pris_params.npz"
    out = {}
    for name, pred, gt in all_pairs:
        p, g = pred[..., ::-1], gt[..., ::-1]
        for c in BORDERS:
            out[f"{name}@{c}"] = {
                "psnr_y": float(calculate_psnr(p, g, c, test_y_channel=True)),
                "ssim_y": float(calculate_ssim(p, g, c, test_y_channel=True)),
                "niqe_y": float(calculate_niqe(p, c, convert_to="y")),
                "psnr_rgb": float(calculate_psnr(p, g, c, test_y_channel=False)),
                "ssim_rgb": float(calculate_ssim(p, g, c, test_y_channel=False)),
            }
    return out


def write_prior(weights: Path, prior: dict) -> None:
    from scipy.io import savemat

    path = weights / "torch/hub/pyiqa/niqe_modelparameters.mat"
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(path, {"mu_prisparam": np.asarray(prior["mu"])[None, :], "cov_prisparam": np.asarray(prior["cov"])})


def random_network_weights(weights: Path) -> None:
    """LPIPS (alex), MUSIQ, FID Inception and TOPIQ (FR, NR) with random weights under their published names."""
    sys.path.insert(0, str(ROOT / "tests"))
    import torch
    from pyiqa.archs.topiq_arch import CFANet

    from conftest import random_metric_weights

    random_metric_weights(weights)
    for use_ref, name in ((True, "cfanet_fr_kadid_res50-2c4cc61d.pth"), (False, "cfanet_nr_koniq_res50-9a73138b.pth")):
        torch.manual_seed(1)
        net = CFANet(use_ref=use_ref, pretrained=False, backbone_pretrain=False)
        torch.save({"params": net.state_dict()}, weights / "torch/hub/pyiqa" / name)


def to_tensor(img: np.ndarray):
    import torch

    return torch.from_numpy(img).permute(2, 0, 1)[None].float().div_(255.0)


def pyiqa_single(name: str, kwargs: dict, all_pairs, border_kw: str | None, weights: Path) -> dict:
    """pyiqa's metric on each pair on its own: ``{pair@border: value}``."""
    import pyiqa
    import torch

    from pirs.benchmark.compat import timm_without_pretrained
    from pirs.benchmark.weights import offline

    out = {}
    for c in BORDERS:
        kw = dict(kwargs)
        if border_kw:
            kw[border_kw] = c
        elif c:
            continue
        with offline(weights), timm_without_pretrained("resnet50"):
            metric = pyiqa.create_metric(name, device=torch.device("cpu"), **kw)
        for pname, pred, gt in all_pairs:
            with torch.no_grad():
                v = metric(to_tensor(pred), to_tensor(gt)) if metric.metric_mode == "FR" else metric(to_tensor(pred))
            out[f"{pname}@{c}"] = float(v)
    return out


def pirs_batched(names: list[str], all_pairs, weights: Path) -> dict:
    """pirs' scorers on all pairs as one batch per border: ``{metric: {pair@border: value}}``."""
    import torch

    from pirs.benchmark.registry import FR, NR, SET, get
    from pirs.benchmark.scorers import build_scorers

    preds = torch.cat([to_tensor(p) for _, p, _ in all_pairs])
    gts = torch.cat([to_tensor(g) for _, _, g in all_pairs])
    out: dict[str, dict] = {n: {} for n in names}
    for c in BORDERS:
        wanted = [n for n in names if c == 0 or "crop_border" in get(n).options]
        for spec_name, scorer in zip(wanted, build_scorers(wanted, weights_dir=str(weights),
                                                           options={"crop_border": c}), strict=True):
            kind = get(spec_name).kind
            if kind == SET:
                scorer.update(preds, gts)
                out[spec_name][f"set@{c}"] = float(scorer.compute())
                continue
            v = scorer.score(preds, gts if kind == FR else None) if kind in (FR, NR) else None
            for (pname, _, _), x in zip(all_pairs, v.tolist(), strict=True):
                out[spec_name][f"{pname}@{c}"] = float(x)
    return out


def pyiqa_fid(all_pairs, weights: Path, tmp: Path) -> float:
    """pyiqa's own FID path: PNG folders, clean mode, its Inception and frechet_distance."""
    import cv2
    import torch
    from pyiqa.archs.fid_arch import frechet_distance, get_folder_features
    from pyiqa.archs.inception import InceptionV3

    from pirs.benchmark.weights import offline

    for sub, idx in (("pred", 1), ("gt", 2)):
        (tmp / sub).mkdir(parents=True, exist_ok=True)
        for i, item in enumerate(all_pairs):
            cv2.imwrite(str(tmp / sub / f"{i}.png"), item[idx][..., ::-1])
    with offline(weights):
        model = InceptionV3(output_blocks=[InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
    feats = [get_folder_features(str(tmp / s), model, num_workers=0, batch_size=8, device=torch.device("cpu"),
                                 mode="clean", verbose=False) for s in ("pred", "gt")]
    mu = [f.mean(0) for f in feats]
    cov = [np.cov(f, rowvar=False) for f in feats]
    return float(frechet_distance(mu[0], cov[0], mu[1], cov[1]))


def max_diff(a: dict, b: dict) -> tuple[float, int]:
    keys = [k for k in a if k in b]
    diffs = [0.0 if a[k] == b[k] else abs(a[k] - b[k]) for k in keys]
    return max(diffs), len(keys)


def fmt(x: float) -> str:
    if x == 0:
        return "0 (identical)"
    if math.isinf(x) or math.isnan(x):
        return str(x)
    return f"{x:.1e}" if x < 1e-3 else f"{x:.4f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--write", action="store_true", help=f"rewrite {FIXTURE.relative_to(ROOT)}")
    a = ap.parse_args()

    all_pairs = pairs()
    prior: dict = {}
    ref = basicsr_values(all_pairs, prior)
    pick = lambda key: {k: v[key] for k, v in ref.items()}  # noqa: E731

    with tempfile.TemporaryDirectory(prefix="pirs-calibrate-") as tmp:
        weights = Path(tmp) / "weights"
        write_prior(weights, prior)
        random_network_weights(weights)
        ours = pirs_batched(["psnr", "psnry", "psnr-ycbcr", "psnr-rgb", "ssim", "ssimc", "ssim-ycbcr", "ssim-rgb",
                             "ms-ssim", "niqe",
                             "niqe-ycbcr", "lpips", "musiq", "topiq_fr", "topiq_nr", "fid"], all_pairs, weights)
        theirs = {
            "psnr": pyiqa_single("psnr", {}, all_pairs, "crop_border", weights),
            "psnry": pyiqa_single("psnry", {}, all_pairs, "crop_border", weights),
            "psnry-ycbcr": pyiqa_single("psnry", {"color_space": "ycbcr"}, all_pairs, "crop_border", weights),
            "ssim": pyiqa_single("ssim", {}, all_pairs, "crop_border", weights),
            "ssimc": pyiqa_single("ssimc", {}, all_pairs, "crop_border", weights),
            "ms_ssim": pyiqa_single("ms_ssim", {}, all_pairs, None, weights),
            "niqe": pyiqa_single("niqe", {}, all_pairs, "crop_border", weights),
            "niqe-ycbcr": pyiqa_single("niqe", {"color_space": "ycbcr"}, all_pairs, "crop_border", weights),
            "lpips": pyiqa_single("lpips", {}, all_pairs, None, weights),
            "musiq": pyiqa_single("musiq", {}, all_pairs, None, weights),
            "topiq_fr": pyiqa_single("topiq_fr", {}, all_pairs, None, weights),
            "topiq_nr": pyiqa_single("topiq_nr", {}, all_pairs, None, weights),
        }
        fid_theirs = {"set@0": pyiqa_fid(all_pairs, weights, Path(tmp) / "fid")}

    # pyiqa's ssim formula (clamped contrast term) on the unrounded YCbCr Y: what ssim-ycbcr computed before
    import torch
    from pyiqa.archs.ssim_arch import ssim as pyiqa_ssim
    from pyiqa.utils.color_util import rgb2ycbcr

    old_ssim = {}
    for c in BORDERS:
        for pname, pred, gt in all_pairs:
            x, y = to_tensor(pred).double(), to_tensor(gt).double()
            if c:
                x, y = x[..., c:-c, c:-c], y[..., c:-c, c:-c]
            old_ssim[f"{pname}@{c}"] = float(pyiqa_ssim(rgb2ycbcr(x)[:, :1] * 255, rgb2ycbcr(y)[:, :1] * 255,
                                                        data_range=255.0))
    gap = {k: ours["psnr-ycbcr"][k] - ours["psnry"][k] - 20 * math.log10(255 / 219) for k in ours["psnry"]}

    db = {"psnr", "psnry", "psnr-ycbcr", "psnr-rgb"}
    rows = [  # metric, equals, (ours, theirs), note on the difference, not equal to, (ours, theirs)
        ("psnr", "pyiqa `psnr`", (ours["psnr"], theirs["psnr"]), "pyiqa's float32, batch against single",
         "BasicSR `calculate_psnr` (RGB)", (ours["psnr"], pick("psnr_rgb"))),
        ("psnry", "pyiqa `psnry`", (ours["psnry"], theirs["psnry"]), "",
         "`psnr-ycbcr` - 1.3219 dB", ({k: -v for k, v in gap.items()}, dict.fromkeys(gap, 0.0))),
        ("psnr-ycbcr", "BasicSR `calculate_psnr(test_y_channel=True)`", (ours["psnr-ycbcr"], pick("psnr_y")), "",
         "pyiqa `psnry(color_space='ycbcr')`", (ours["psnr-ycbcr"], theirs["psnry-ycbcr"])),
        ("psnr-rgb", "BasicSR `calculate_psnr` (RGB)", (ours["psnr-rgb"], pick("psnr_rgb")), "",
         "pyiqa `psnr`", (ours["psnr-rgb"], theirs["psnr"])),
        ("ssim", "pyiqa `ssim`", (ours["ssim"], theirs["ssim"]), "", "", None),
        ("ssimc", "pyiqa `ssimc`", (ours["ssimc"], theirs["ssimc"]), "",
         "BasicSR `calculate_ssim` (RGB)", (ours["ssimc"], pick("ssim_rgb"))),
        ("ssim-rgb", "BasicSR `calculate_ssim` (RGB)", (ours["ssim-rgb"], pick("ssim_rgb")), "",
         "pyiqa `ssimc`", (ours["ssim-rgb"], theirs["ssimc"])),
        ("ssim-ycbcr", "BasicSR `calculate_ssim(test_y_channel=True)`", (ours["ssim-ycbcr"], pick("ssim_y")), "",
         "pyiqa's clamped SSIM on the same Y", (ours["ssim-ycbcr"], old_ssim)),
        ("ms-ssim", "pyiqa `ms_ssim`", (ours["ms-ssim"], theirs["ms_ssim"]), "", "", None),
        ("niqe", "pyiqa `niqe`", (ours["niqe"], theirs["niqe"]), "",
         "BasicSR `calculate_niqe(convert_to='y')`", (ours["niqe"], pick("niqe_y"))),
        ("niqe-ycbcr", "BasicSR `calculate_niqe(convert_to='y')`", (ours["niqe-ycbcr"], pick("niqe_y")), "",
         "pyiqa `niqe(color_space='ycbcr')`", (ours["niqe-ycbcr"], theirs["niqe-ycbcr"])),
        ("lpips", "pyiqa `lpips`", (ours["lpips"], theirs["lpips"]), "", "", None),
        ("musiq", "pyiqa `musiq`", (ours["musiq"], theirs["musiq"]), "", "", None),
        ("topiq_fr", "pyiqa `topiq_fr`", (ours["topiq_fr"], theirs["topiq_fr"]), "", "", None),
        ("topiq_nr", "pyiqa `topiq_nr`", (ours["topiq_nr"], theirs["topiq_nr"]), "", "", None),
        ("fid", "pyiqa's clean-mode folder FID", (ours["fid"], fid_theirs),
         f"pyiqa's `sqrtm` on {len(all_pairs)} images' singular covariances; pirs' exact SVD form", "", None),
    ]
    from pirs.benchmark.registry import get

    print("| metric | equals | largest difference | tolerance asserted | differs from | by up to |")
    print("| --- | --- | --- | --- | --- | --- |")
    measured = {}
    for name, equals, (o, t), note, other, pair in rows:
        d, _ = max_diff(o, t)
        measured[name] = d
        tol = get(name).tolerance
        unit = " dB" if name in db and d else ""
        shown = fmt(d) + unit + (f" ({note})" if note else "")
        if tol is not None and d > tol:
            shown += " **over the registry's tolerance**"
        od = (fmt(max_diff(*pair)[0]) + (" dB" if name in db else "")) if pair else ""
        cells = [f"`{name}`", equals, shown, "" if tol is None else f"{tol:g}", other, od]
        print("| " + " | ".join(cells) + " |")
    print(f"\n({len(all_pairs)} pairs x borders {', '.join(map(str, BORDERS))} px where the metric takes a border; "
          f"psnr-ycbcr - psnry ranges {min(gap.values()) + 20 * math.log10(255 / 219):.4f} .. "
          f"{max(gap.values()) + 20 * math.log10(255 / 219):.4f} dB)")

    if a.write:
        import basicsr
        import torch  # noqa: F811

        FIXTURE.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "about": "BasicSR's values on the calibration pairs of tests/calibration_pairs.py; written by "
                     "benchmarks/calibrate_metrics.py --write; read by tests/test_bench_calibration.py",
            "basicsr": basicsr.__version__, "torch": torch.__version__.split("+")[0], "numpy": np.__version__,
            "digests": {name: {"pred": digest(p), "gt": digest(g)} for name, p, g in all_pairs},
            "niqe_prior": prior,
            "values": ref,
            "measured_max_difference": measured,
        }
        FIXTURE.write_text(json.dumps(data, indent=1) + "\n")
        print(f"wrote {FIXTURE.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
