"""Weights without unpickling: pirs reads every metric's weight file itself, refuses code, checks name hashes."""

from __future__ import annotations

import hashlib
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import quick_config, random_metric_weights, synthetic_photo, write_png
from pirs.benchmark import registry, safeload
from pirs.benchmark.safeload import SafeLoads, UnsafeWeights, name_hash, read_weights, torchscript_state
from pirs.benchmark.weights import MissingWeights, check_weights

LPIPS = "torch/hub/pyiqa/LPIPS_v0.1_alex-df73285e.pth"
ALEXNET = "torch/hub/checkpoints/alexnet-owt-7be5be79.pth"


class Payload:
    """Unpickling this object creates the file ``marker``: what a crafted checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return random_metric_weights(tmp_path_factory.mktemp("weights"))


@pytest.fixture
def crafted(weights, tmp_path) -> tuple[Path, Path]:
    """A copy of the weights dir whose LPIPS file is a pickle that runs code, and the marker it would create."""
    import shutil

    root = tmp_path / "weights"
    shutil.copytree(weights, root)
    marker = tmp_path / "pwned"
    torch.save({"lin0.model.1.weight": Payload(marker)}, root / LPIPS)
    return root, marker


def test_a_crafted_pickle_at_the_lpips_path_runs_nothing(crafted):
    from pirs.benchmark.scorers import build_scorers

    root, marker = crafted
    with pytest.raises(UnsafeWeights) as info:
        build_scorers(["lpips"], weights_dir=str(root))
    message = str(info.value)
    assert "\n" not in message and LPIPS.rsplit("/", 1)[-1] in message and "refused" in message
    assert "Payload" in message or "unpickl" in message
    assert not marker.exists()
    with pytest.raises(UnsafeWeights):  # the libraries' own torch.load gets the same treatment
        with SafeLoads():
            torch.load(root / LPIPS, weights_only=False)
    assert not marker.exists()


def test_bench_evaluate_exits_non_zero_on_a_crafted_pickle(crafted, tmp_path):
    from pirs.degrade.build import build

    root, marker = crafted
    photos = tmp_path / "photos"
    for i in range(2):
        write_png(photos / f"p{i}.png", synthetic_photo(64, 64, i))
    ref = tmp_path / "ref"
    build(quick_config(ref, photos, num_samples=2, crop_size=32))
    from pirs.benchmark.baselines import write_baseline

    write_baseline("bicubic", ref, tmp_path / "pred", progress=False)
    r = subprocess.run([sys.executable, "-m", "pirs.benchmark.cli", "evaluate", str(tmp_path / "pred"), "--reference",
                        str(ref), "--metrics", "psnr,lpips", "--out", str(tmp_path / "res.json"), "--weights-dir",
                        str(root), "--quiet", "--no-cache"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    err = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("bench evaluate: error:") and "refused" in err[0], r.stderr
    assert "Traceback" not in r.stderr and not marker.exists() and not (tmp_path / "res.json").exists()


def test_a_file_whose_content_differs_from_the_hash_in_its_name_is_refused(weights, monkeypatch):
    monkeypatch.delenv(safeload.UNVERIFIED_ENV)
    with pytest.raises(MissingWeights) as info:
        check_weights(registry.parse("lpips"), weights)
    reasons = {m.file.path: m.reason for m in info.value.missing}
    assert "does not start with 7be5be79" in reasons[ALEXNET] and "df73285e" in reasons[LPIPS]
    monkeypatch.setenv(safeload.UNVERIFIED_ENV, "1")
    assert check_weights(registry.parse("lpips"), weights) == weights.resolve()


def test_name_hash_follows_torch_hub():
    assert name_hash("x/alexnet-owt-7be5be79.pth") == "7be5be79"
    assert name_hash("CLIP-IQA%2B_learned_prompts-603f3273.pth") == "603f3273"
    assert name_hash("pt_inception-2015-12-05-6726825d.pth") == "6726825d"
    assert name_hash("niqe_modelparameters.mat") is None and name_hash("ckpt_koniq10k.pt") is None


def test_weights_only_pickles_and_safetensors_are_read(tmp_path):
    from safetensors.torch import save_file

    sd = {"a": torch.arange(6.0).reshape(2, 3), "b": torch.ones(2, dtype=torch.int64)}
    torch.save(sd, tmp_path / "w.pth")
    save_file(sd, str(tmp_path / "w.safetensors"))
    torch.save((sd["a"], sd["b"]), tmp_path / "pair.pth")  # BRISQUE's (sv_coef, sv)
    for name in ("w.pth", "w.safetensors"):
        got = read_weights(tmp_path / name)
        assert set(got) == {"a", "b"} and torch.equal(got["a"], sd["a"])
    assert torch.equal(read_weights(tmp_path / "pair.pth")[1], sd["b"])
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(UnsafeWeights, match="not a readable weights file"):
        read_weights(tmp_path / "junk.pth")


def test_torchscript_tensors_are_read_without_loading_its_code(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4),
                              torch.nn.Sequential(torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 1)))
    net.eval()(torch.rand(1, 3, 8, 8))
    path = tmp_path / "RN50.pt"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(net, torch.rand(1, 3, 8, 8)), str(path))
        want = torch.jit.load(str(path)).state_dict()
    got = torchscript_state(path)
    assert set(got) == set(want)
    assert all(torch.equal(got[k], want[k]) for k in want)
    with SafeLoads():  # pyiqa's CLIP loader: jit.load declines, torch.load on the open file gets the tensors
        with open(path, "rb") as f:
            with pytest.raises(RuntimeError):
                torch.jit.load(f)
            assert set(torch.load(f, map_location="cpu")) == set(want)
    assert torch.load is safeload._real_load() and torch.jit.load is not SafeLoads.jit_load


def test_an_archive_that_names_a_function_is_refused(tmp_path):
    import zipfile

    class Evil:  # os.system, not print: Ray replaces builtins.print in a process where it ran
        def __reduce__(self):
            return (os.system, ("true",))

    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("evil/data.pkl", pickle.dumps(Evil(), protocol=2))
        z.writestr("evil/constants.pkl", pickle.dumps((), protocol=2))
    with pytest.raises(UnsafeWeights, match=r"names posix\.system"):
        read_weights(path)


def test_results_record_every_weight_file_and_its_sha256(weights, tmp_path):
    from pirs.benchmark.scorers import build_scorers

    scorers = build_scorers(["lpips", "psnr"], weights_dir=str(weights))
    recorded = {r["path"]: r for r in scorers.weights}
    assert set(recorded) == {ALEXNET, LPIPS}
    for rel, r in recorded.items():
        assert r["sha256"] == hashlib.sha256((weights / rel).read_bytes()).hexdigest()
        assert r["metrics"] == ["lpips"] and r["check"] == "unverified"  # random weights under published names
