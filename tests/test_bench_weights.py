"""Offline weights: one message for every missing file, no download ever, library caches pointed at one folder."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import pytest

from pirs.benchmark import registry, weights
from pirs.benchmark.weights import CATALOG, DownloadBlocked, MissingWeights, check_weights, offline

NETWORK = ["lpips", "lpips-vgg", "dists", "fid", "niqe", "musiq", "maniqa", "clipiqa", "liqe", "clip-i", "clip-t"]


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=300)


def test_importing_the_benchmark_modules_loads_no_heavy_packages():
    r = run_python("""
        import sys
        import pirs.benchmark.registry, pirs.benchmark.weights, pirs.benchmark.scorers, pirs.benchmark.compat
        print([m for m in ('torch', 'pyiqa', 'transformers', 'timm', 'clip') if m in sys.modules])
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


@pytest.fixture
def no_network(monkeypatch):
    """Every way the libraries download, recorded and refused."""
    import requests
    import torch.hub

    calls: list[str] = []

    def refuse(*args, **kwargs):
        calls.append(repr(args[:2]))
        raise AssertionError(f"download attempted: {args[:2]}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(requests.Session, "request", refuse)
    return calls


def test_empty_weights_dir_gives_one_message_listing_every_missing_file(tmp_path, no_network):
    from pirs.benchmark.scorers import build_scorers

    empty = tmp_path / "weights"
    with pytest.raises(MissingWeights) as info:
        build_scorers(["psnr", *NETWORK], weights_dir=str(empty))
    err = info.value
    message = str(err)
    expected = {f.path for f, _ in weights.required_files(registry.parse(NETWORK))}
    assert len(expected) == 17  # 12 pyiqa/torchvision/OpenAI files + 5 of the CLIP folder, each once
    assert {m.file.path for m in err.missing} == expected
    for m in err.missing:
        assert str(empty / m.file.path) in message  # the full path to place it at
        assert m.file.url in message and m.file.url.startswith("https://")
    for name in NETWORK:
        assert name in message
    assert message.count("vgg16-397923af.pth") == 4  # path, URL, curl path and URL: once for two metrics
    assert "needed by lpips-vgg, dists" in message
    assert f"{len(expected)} weight file(s) missing" in message.splitlines()[0]
    assert "curl -L --create-dirs -o torch/hub/pyiqa/LPIPS_v0.1_alex-df73285e.pth" in message
    assert no_network == []
    assert not empty.exists()  # nothing was created either


def test_the_check_runs_before_torch_is_even_imported(tmp_path):
    r = run_python(f"""
        import sys
        from pirs.benchmark.scorers import build_scorers
        from pirs.benchmark.weights import MissingWeights
        try:
            build_scorers(["lpips", "musiq"], weights_dir={str(tmp_path)!r})
        except MissingWeights as err:
            print(len(err.missing), 'torch' in sys.modules)
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["3", "False"]


def test_partly_filled_dir_lists_only_what_is_missing_and_accepts_alternatives(tmp_path):
    specs = registry.parse("lpips,clip-i")
    for rel in ("torch/hub/checkpoints/alexnet-owt-7be5be79.pth", "clip-models/clip-vit-large-patch14/config.json",
                "clip-models/clip-vit-large-patch14/pytorch_model.bin"):  # .bin stands in for .safetensors
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    with pytest.raises(MissingWeights) as info:
        check_weights(specs, tmp_path)
    assert [m.file.path.rsplit("/", 1)[-1] for m in info.value.missing] == [
        "LPIPS_v0.1_alex-df73285e.pth", "preprocessor_config.json"]


def test_clip_files_follow_the_clip_model_option(tmp_path):
    with pytest.raises(MissingWeights) as info:
        check_weights(registry.parse("clip-t"), tmp_path, {"clip_model": "ViT-B/32"})
    paths = [m.file.path for m in info.value.missing]
    assert paths[0] == "clip-models/clip-vit-base-patch32/config.json" and len(paths) == 5
    assert "https://huggingface.co/openai/clip-vit-base-patch32/resolve/main/tokenizer.json" in str(info.value)


def test_a_corrupt_openai_clip_file_is_reported_not_redownloaded(tmp_path):
    rn50 = tmp_path / "torch/hub/clip/RN50.pt"
    rn50.parent.mkdir(parents=True)
    rn50.write_bytes(b"not the checkpoint")
    with pytest.raises(MissingWeights, match="SHA-256 differs") as info:
        check_weights(registry.parse("clipiqa"), tmp_path)
    assert [m.where for m in info.value.missing] == [rn50]


def test_weights_dir_comes_from_the_flag_then_the_environment_then_the_default(tmp_path, monkeypatch):
    monkeypatch.setenv(weights.ENV_VAR, str(tmp_path / "env"))
    assert weights.resolve_weights_dir(tmp_path / "flag") == tmp_path / "flag"
    assert weights.resolve_weights_dir(None) == tmp_path / "env"
    with pytest.raises(MissingWeights, match=f"from {weights.ENV_VAR}"):
        check_weights(registry.parse("niqe"))
    monkeypatch.delenv(weights.ENV_VAR)
    assert weights.resolve_weights_dir(None) == Path(weights.DEFAULT_WEIGHTS_DIR).expanduser().resolve()
    assert check_weights(registry.parse("psnr,ssim"), tmp_path / "none") == tmp_path / "none"  # nothing needed


def test_catalog_matches_the_urls_in_pyiqa_and_torchvision():
    import torchvision
    from pyiqa.archs import (
        brisque_arch,
        dists_arch,
        inception,
        lpips_arch,
        maniqa_arch,
        musiq_arch,
        niqe_arch,
        nrqm_arch,
        topiq_arch,
    )

    from pirs.benchmark.compat import import_openai_clip

    import_openai_clip()  # clipiqa_arch and liqe_arch import openai-clip
    from pyiqa.archs import clip_model, clipiqa_arch, liqe_arch

    theirs = [lpips_arch.default_model_urls["0.1_alex"], lpips_arch.default_model_urls["0.1_vgg"],
              dists_arch.default_model_urls["url"], inception.FID_WEIGHTS_URL, niqe_arch.default_model_urls["url"],
              musiq_arch.default_model_urls["koniq10k"], maniqa_arch.default_model_urls["koniq"],
              liqe_arch.default_model_urls["koniq"], clip_model._MODELS["RN50"], clip_model._MODELS["ViT-B/32"],
              topiq_arch.default_model_urls["cfanet_fr_kadid_res50"],
              topiq_arch.default_model_urls["cfanet_nr_koniq_res50"], clipiqa_arch.default_model_urls["clipiqa+"],
              brisque_arch.default_model_urls["url"], nrqm_arch.default_model_urls["url"],
              torchvision.models.AlexNet_Weights.IMAGENET1K_V1.url, torchvision.models.VGG16_Weights.IMAGENET1K_V1.url]
    assert sorted(f.url for f in CATALOG.values()) == sorted(theirs)
    for f in CATALOG.values():  # the file name each library caches it under
        assert f.path.rsplit("/", 1)[-1] == f.url.rsplit("/", 1)[-1]


def test_offline_points_the_libraries_at_the_weights_dir_and_blocks_downloads(tmp_path, monkeypatch):
    import huggingface_hub.constants
    import pyiqa.utils.download_util as du
    import torch.hub
    import torchvision

    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "late_import_mod.py").write_text("from torch.hub import download_url_to_file\n")
    before = (torch.hub.get_dir(), du.DEFAULT_CACHE_DIR, torch.hub.download_url_to_file, urllib.request.urlopen,
              os.environ.get("HF_HUB_OFFLINE"), huggingface_hub.constants.HF_HUB_OFFLINE)
    root = tmp_path / "w"
    with offline(root) as resolved:
        assert resolved == root
        assert torch.hub.get_dir() == str(root / "torch/hub")
        assert du.DEFAULT_CACHE_DIR == str(root / "torch/hub/pyiqa")
        assert os.environ["HF_HUB_OFFLINE"] == "1" and huggingface_hub.constants.HF_HUB_OFFLINE is True
        with pytest.raises(DownloadBlocked, match="alexnet-owt-7be5be79.pth"):
            torchvision.models.alexnet(weights="IMAGENET1K_V1")
        with pytest.raises(DownloadBlocked, match="niqe_modelparameters.mat"):
            du.load_file_from_url(CATALOG["torch/hub/pyiqa/niqe_modelparameters.mat"].url)
        with pytest.raises(DownloadBlocked):
            urllib.request.urlopen("https://example.com/x")
        import late_import_mod  # imported while inside: gets the blocked function ...
        assert late_import_mod.download_url_to_file is not before[2]
    assert late_import_mod.download_url_to_file is before[2]  # ... and the real one back afterwards
    after = (torch.hub.get_dir(), du.DEFAULT_CACHE_DIR, torch.hub.download_url_to_file, urllib.request.urlopen,
             os.environ.get("HF_HUB_OFFLINE"), huggingface_hub.constants.HF_HUB_OFFLINE)
    assert after == before


def test_maniqa_backbone_is_built_without_a_hub_download(tmp_path):
    import timm

    from pirs.benchmark.compat import timm_without_pretrained

    original = timm.create_model
    with offline(tmp_path), timm_without_pretrained("vit_base_patch8_224"):
        vit = timm.create_model("vit_base_patch8_224", pretrained=True)  # as pyiqa's MANIQA calls it
    assert vit.patch_embed.proj.kernel_size == (8, 8)
    assert timm.create_model is original


def test_pkg_resources_shim_makes_openai_clip_import():
    r = run_python("""
        import importlib.util, sys
        missing = importlib.util.find_spec("pkg_resources") is None
        if missing:
            try:
                import clip
                print("plain import worked")
            except ModuleNotFoundError as err:
                assert err.name == "pkg_resources", err
        from pirs.benchmark.compat import import_openai_clip
        clip = import_openai_clip()
        tokens = clip.tokenize(["a photo of a cat"])
        import pyiqa.archs.clipiqa_arch  # pyiqa's CLIP-IQA module imports clip too
        shim_left = getattr(sys.modules.get("pkg_resources"), "__pirs_shim__", False)
        print(missing, tuple(tokens.shape), shim_left)
    """)
    assert r.returncode == 0, r.stderr[-2000:]
    missing, *rest = r.stdout.strip().split(maxsplit=1)
    assert "plain import worked" not in r.stdout
    assert rest == ["(1, 77) False"]
    if missing != "True":
        pytest.skip("pkg_resources is installed here: the shim is not needed (the import was still checked)")


def test_shim_provides_what_openai_clip_uses():
    from pirs.benchmark.compat import SHIM_MARK, pkg_resources_shim

    shim = pkg_resources_shim()
    assert getattr(shim, SHIM_MARK)
    assert shim.packaging.version.parse("2.14.1") > shim.packaging.version.parse("1.7.1")
    assert "pkg_resources" not in sys.modules or not getattr(sys.modules["pkg_resources"], SHIM_MARK, False)
