"""Shared fixtures: tiny photos made on the fly, and a quick build helper."""

from __future__ import annotations

import os

# One thread per math library in every test process (and in the subprocesses they start): the suite runs on
# 2 cores in 2 pytest-xdist workers, and the models under test are tiny, so more threads only spin.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


def synthetic_photo(h: int, w: int, seed: int) -> np.ndarray:
    """A uint8 RGB image with edges, gradients and texture (so blur, noise and JPEG all show)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([
        128 + 100 * np.sin(xx / (5 + seed % 7)) * np.cos(yy / 9.0),
        255 * xx / max(w - 1, 1),
        255 * ((xx // 8 + yy // 8) % 2),
    ], axis=-1)
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_png(path: Path, img: np.ndarray) -> Path:
    """Write an RGB uint8 image as PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.ascontiguousarray(img[..., ::-1]))
    return path


def lol_tree(root: Path, n: int) -> Path:
    """A tiny LOL-layout data set: ``eval15/{low,high}/K.png``, the low image 1/8 of the high."""
    for k in range(n):
        hq = synthetic_photo(24, 24, k)
        write_png(root / "eval15" / "low" / f"{k}.png", hq // 8)
        write_png(root / "eval15" / "high" / f"{k}.png", hq)
    return root


def random_metric_weights(root: Path) -> Path:
    """A weights dir with random LPIPS (alex), MUSIQ and FID-Inception checkpoints under their real names."""
    import torch
    import torchvision
    from pyiqa.archs import inception
    from pyiqa.archs.lpips_arch import NetLinLayer
    from pyiqa.archs.musiq_arch import MUSIQ

    def save(obj, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(obj, path)

    torch.manual_seed(0)
    save(torchvision.models.alexnet().state_dict(), root / "torch/hub/checkpoints/alexnet-owt-7be5be79.pth")
    lins = {}
    for k, ch in enumerate([64, 192, 384, 256, 256]):  # LPIPS' AlexNet channels; weights >= 0 as in LPIPS
        lins[f"lin{k}.model.1.weight"] = NetLinLayer(ch, use_dropout=True).state_dict()["model.1.weight"].abs()
    save(lins, root / "torch/hub/pyiqa/LPIPS_v0.1_alex-df73285e.pth")
    save(MUSIQ(pretrained=False).state_dict(), root / "torch/hub/pyiqa/musiq_koniq_ckpt-e95806b9.pth")
    real_loader = inception.load_pretrained_network
    inception.load_pretrained_network = lambda *a, **k: None  # build the FID Inception without its checkpoint
    try:
        net = inception.fid_inception_v3()
    finally:
        inception.load_pretrained_network = real_loader
    for m in net.modules():  # keep activations alive through 17 random layers
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    save(net.state_dict(), root / "torch/hub/pyiqa/pt_inception-2015-12-05-6726825d.pth")
    return root


@pytest.fixture(autouse=True, scope="session")
def _random_weights_under_published_names():
    """Tests save random weights under the published file names, whose hash they cannot match: let them through
    (``tests/test_bench_safeload.py`` turns the check back on where it tests it)."""
    import os

    from pirs.benchmark.safeload import UNVERIFIED_ENV

    old = os.environ.get(UNVERIFIED_ENV)
    os.environ[UNVERIFIED_ENV] = "1"
    yield
    if old is None:
        os.environ.pop(UNVERIFIED_ENV, None)
    else:
        os.environ[UNVERIFIED_ENV] = old


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """A folder of five small photos (PNG and JPEG, one in a subfolder)."""
    root = tmp_path / "photos"
    for i in range(4):
        write_png(root / f"p{i}.png", synthetic_photo(72 + 8 * i, 96, i))
    img = synthetic_photo(80, 80, 9)
    (root / "sub").mkdir(parents=True)
    cv2.imwrite(str(root / "sub" / "q.jpg"), img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
    return root


@pytest.fixture(scope="module")
def photos_dir(tmp_path_factory) -> Path:
    """Four small photos shared by the tests of one module."""
    root = tmp_path_factory.mktemp("photos")
    for i in range(4):
        write_png(root / f"p{i}.png", synthetic_photo(72 + 8 * i, 96, i))
    return root


def quick_config(out: Path, input_dir: Path | None, **kw):
    """A small, fast BuildConfig (crop 32, no progress bars)."""
    from pirs.degrade.build import BuildConfig

    args = {"pipeline": "realesrgan", "out": str(out), "input": str(input_dir) if input_dir else None,
            "num_samples": 12, "crop_size": 32, "shard_size": 5, "progress": False}
    args.update(kw)
    return BuildConfig(**args)
