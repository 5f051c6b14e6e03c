"""On-the-fly degradation: item i of OnTheFlyPairs is record i of `degrade build` (same arrays before PNG
encoding, same record), whatever the number of DataLoader workers; epoch e is the build with seed + e * 2**32."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import quick_config
from pirs.degrade.build import build, decode_png
from pirs.degrade.onthefly import EPOCH_STRIDE, EpochSampler, OnTheFlyPairs, epoch_seed
from pirs.degrade.shards import iter_records, shard_paths

N, CROP = 10, 32


def _records(folder) -> dict[int, tuple[dict, bytes, np.ndarray, np.ndarray]]:
    out = {}
    for shard in shard_paths(folder):
        for _, rec, m in iter_records(shard):
            out[rec["index"]] = (rec, m["json"], decode_png(m["hq.png"]), decode_png(m["lq.png"]))
    return out


def _same(item: dict, built) -> None:
    rec, js, hq, lq = built
    assert item["key"] == rec["key"] and item["json"].encode() == js
    assert np.array_equal(item["hq"].permute(1, 2, 0).numpy(), hq)
    assert np.array_equal(item["lq"].permute(1, 2, 0).numpy(), lq)


@pytest.fixture(scope="module")
def builds(tmp_path_factory, photos_dir):
    """Two builds of the same sources: seed 0 and the seed of epoch 1."""
    root = tmp_path_factory.mktemp("otf")
    for name, seed in (("e0", 0), ("e1", epoch_seed(0, 1))):
        build(quick_config(root / name, photos_dir, num_samples=N, crop_size=CROP, shard_size=4, seed=seed))
    return root, photos_dir


def test_items_are_the_build_records(builds):
    root, photos = builds
    built = _records(root / "e0")
    assert len(built) == N
    for ds in (OnTheFlyPairs("realesrgan", input=str(photos), num_samples=N, crop_size=CROP),
               OnTheFlyPairs.from_build(root / "e0")):
        assert len(ds) == N
        for i in reversed(range(N)):  # any order
            _same(ds[i], built[i])
    ds = OnTheFlyPairs("realesrgan", input=str(photos), num_samples=N, crop_size=CROP, dtype="float32")
    assert ds[0]["hq"].dtype == torch.float32 and torch.equal(ds[0]["hq"], _float(built[0][2]))


def _float(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a).permute(2, 0, 1).float() / 255.0


def test_epoch_is_folded_into_the_seed(builds):
    root, photos = builds
    assert epoch_seed(0, 1) == EPOCH_STRIDE and epoch_seed(7, 0) == 7
    ds = OnTheFlyPairs("realesrgan", input=str(photos), num_samples=N, crop_size=CROP)
    e1 = _records(root / "e1")
    ds.set_epoch(1)
    for i in range(N):
        _same(ds[i], e1[i])
        _same(ds[(1, i)], e1[i])
    e0 = _records(root / "e0")
    _same(ds[(0, 3)], e0[3])  # an explicit epoch wins over set_epoch
    with pytest.raises(ValueError, match="seed must be an integer in"):
        OnTheFlyPairs("realesrgan", input=str(photos), seed=EPOCH_STRIDE)
    with pytest.raises(IndexError):
        ds[N]


def _keys_and_pixels(loader) -> list[tuple[list[str], torch.Tensor, list[int]]]:
    return [(b["key"], b["lq"], b["epoch"].tolist()) for b in loader]


def test_any_number_of_workers_and_persistent_epochs(builds):
    _, photos = builds
    ds = OnTheFlyPairs("realesrgan", input=str(photos), num_samples=N, crop_size=CROP)
    want = {e: [ds[(e, i)] for i in range(N)] for e in (0, 1)}
    runs = []
    for workers in (0, 2):
        sampler = EpochSampler(ds, shuffle=True, seed=3)
        loader = torch.utils.data.DataLoader(ds, batch_size=3, sampler=sampler, num_workers=workers,
                                             persistent_workers=workers > 0)
        epochs = []
        for e in (0, 1):
            sampler.set_epoch(e)
            epochs.append(_keys_and_pixels(loader))
        runs.append(epochs)
    for a, b in zip(runs[0], runs[1], strict=True):  # 0 and 2 workers: the same batches
        assert [k for k, _, _ in a] == [k for k, _, _ in b]
        assert all(torch.equal(x, y) for (_, x, _), (_, y, _) in zip(a, b, strict=True))
    for e, batches in enumerate(runs[1]):
        for keys, lq, epochs in batches:
            assert set(epochs) == {e}
            for k, img in zip(keys, lq, strict=True):
                assert torch.equal(img, want[e][int(k)]["lq"])
    # without a sampler: set_epoch before each epoch (workers start again each epoch)
    loader = torch.utils.data.DataLoader(ds, batch_size=5, num_workers=2)
    ds.set_epoch(1)
    first = next(iter(loader))
    assert torch.equal(first["lq"][2], want[1][2]["lq"]) and first["epoch"].tolist() == [1] * 5


def test_only_the_dataset_module_imports_torch():
    code = ("import sys, numpy as np\n"
            "import pirs.degrade, pirs.degrade.build, pirs.degrade.export, pirs.degrade.cli\n"
            "before = 'torch' in sys.modules\n"
            "import pirs.degrade.onthefly\n"
            "print(before, 'torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "True"]


def test_albumentations_recipe_on_the_fly_in_workers(tmp_path, photos_dir):
    out = tmp_path / "alb"
    build(quick_config(out, photos_dir, pipeline="albumentations-weather", num_samples=6, crop_size=CROP, shard_size=6))
    built = _records(out)
    ds = OnTheFlyPairs.from_build(out)
    for batch in torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2):
        for k, js, lq in zip(batch["key"], batch["json"], batch["lq"], strict=True):
            assert js.encode() == built[int(k)][1]
            assert np.array_equal(lq.permute(1, 2, 0).numpy(), built[int(k)][3])


def test_the_readme_section_runs_as_printed(tmp_path, monkeypatch, capsys):
    """README 'Export, on-the-fly degradation, training from shards': every command and Python block, in order
    (run in this process to stay fast: `degrade ...` through its main, `python -c CODE` and blocks through exec)."""
    import re
    import shlex
    from pathlib import Path

    import datasets
    from pirs.degrade.cli import main as degrade_main

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text.split("### Export, on-the-fly degradation, training from shards", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```(bash|python)\n(.*?)```", section, re.S)
    assert [lang for lang, _ in blocks] == ["bash", "python", "python"]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    datasets.disable_progress_bars()
    for lang, body in blocks:
        if lang == "python":
            exec(compile(body, "README.md", "exec"), {"__name__": "readme"})
            continue
        for line in body.splitlines():
            argv = shlex.split(line, comments=True)
            if argv[0] == "degrade":
                assert degrade_main(argv[1:]) == 0, line
            else:
                assert argv[:2] == ["python", "-c"], line
                exec(argv[2], {"__name__": "readme"})
    out = capsys.readouterr().out
    assert "List(Value('int32'))" in out and "00000003" in out and "torch.Size([4, 3, 128, 128])" in out
