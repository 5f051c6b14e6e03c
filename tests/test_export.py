"""`degrade export`: Hugging Face-native Parquet (typed top-level columns, Image features, split from the set),
BasicSR's paired layout (gt/, lq/, meta_info.txt as PairedImageDataset reads it) and plain paired folders."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import datasets
from conftest import quick_config
from pirs.degrade.build import build, decode_png
from pirs.degrade.cli import main as degrade_main
from pirs.degrade.export import export, parquet_features
from pirs.degrade.schema import FIELDS
from pirs.degrade.shards import ShardWriter, iter_records, shard_paths

TEST_SET = {"id": "tiny-set", "version": "1.0.0", "aliases": [], "partial": False}


@pytest.fixture(autouse=True)
def _quiet():
    datasets.disable_progress_bars()


@pytest.fixture(scope="module")
def shards(tmp_path_factory, photos_dir) -> dict[str, Path]:
    """A training build (x4, 3 shards), a test set (x2) and a mixed folder (x4, x2 and LQ without HQ)."""
    root = tmp_path_factory.mktemp("export")
    build(quick_config(root / "train", photos_dir, num_samples=7, crop_size=32, shard_size=3))
    build(quick_config(root / "test", photos_dir, num_samples=4, crop_size=32, scale=2, shard_size=4,
                       test_set=TEST_SET))
    mixed = root / "mixed"
    mixed.mkdir()
    with ShardWriter(mixed / "shard-000000.tar") as w:
        for n, (folder, drop_hq) in enumerate([("train", False), ("test", False), ("train", True), ("test", True)]):
            _, rec, members = next(iter(iter_records(shard_paths(root / folder)[0])))
            key = f"{n:08d}"
            rec = dict(rec, key=key, hq_size=[] if drop_hq else rec["hq_size"])
            members = {k: v for k, v in members.items() if not (drop_hq and k == "hq.png")}
            w.write(key, {**members, "json": json.dumps(rec, sort_keys=True).encode()})
    return {"train": root / "train", "test": root / "test", "mixed": mixed}


def _built(folder: Path) -> dict[str, tuple[dict, dict]]:
    return {k: (rec, m) for shard in shard_paths(folder) for k, rec, m in iter_records(shard)}


def _rgb(img) -> np.ndarray:
    return np.asarray(img.convert("RGB"))


def test_parquet_loads_with_every_field_typed(shards, tmp_path):
    out = tmp_path / "pq"
    r = export(str(shards["train"]), out, "parquet", progress=False)
    assert (r.records, r.split) == (7, "train")
    assert r.files == [f"data/train-{j:05d}-of-00003.parquet" for j in range(3)]
    ds = datasets.load_dataset("parquet", data_files=str(out / "data" / "*.parquet"), split="train",
                               cache_dir=str(tmp_path / "cache"))
    assert ds.features == parquet_features()
    assert list(ds.features)[:3] == ["key", "hq", "lq"] and set(ds.features) == set(FIELDS) | {"hq", "lq"}
    assert ds.features["crop_box"] == datasets.List(datasets.Value("int32"))
    assert isinstance(ds.features["hq"], datasets.Image) and ds.features["seed"] == datasets.Value("int64")
    built = _built(shards["train"])
    assert [row["key"] for row in ds] == sorted(built)
    for row in ds:
        rec, members = built[row["key"]]
        assert {k: row[k] for k in FIELDS} == rec  # every field, same values and types
        assert np.array_equal(_rgb(row["hq"]), decode_png(members["hq.png"]))
        assert np.array_equal(_rgb(row["lq"]), decode_png(members["lq.png"]))


def test_parquet_card_names_the_test_split(shards, tmp_path):
    out = tmp_path / "pq-test"
    assert degrade_main(["export", str(shards["test"]), "--format", "parquet", "--out", str(out), "--quiet"]) == 0
    assert [p.name for p in (out / "data").iterdir()] == ["test-00000-of-00001.parquet"]
    dd = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "cache"))  # through the card's configs
    assert list(dd) == ["test"] and dd["test"].num_rows == 4
    assert dd["test"].features == parquet_features()
    assert dd["test"][0]["lq"].size == (16, 16) and dd["test"][0]["scale"] == 2
    card = (out / "README.md").read_text()
    assert "split: test" in card and "tiny-set" in card


def test_parquet_without_ground_truth_has_null_hq(shards, tmp_path):
    out = tmp_path / "pq-mixed"
    r = export(str(shards["mixed"]), out, "parquet", split="validation", progress=False)
    assert (r.paired, r.unpaired, r.split) == (2, 2, "validation")
    ds = datasets.load_dataset("parquet", data_files=str(out / "data" / "*.parquet"), split="train",
                               cache_dir=str(tmp_path / "cache"))
    assert [row["hq"] is None for row in ds] == [False, False, True, True]
    assert ds[3]["hq_size"] == [] and ds[3]["lq"] is not None


# A faithful reading of BasicSR 1.4.2 (basicsr/data/data_util.py, paired_image_dataset.py, transforms.py,
# utils/img_util.py): BasicSR cannot be installed beside torchvision 0.29 (see test_real_basicsr_reads_it).


def _basicsr_paths_from_meta_info(lq_folder, gt_folder, meta_info_file, tmpl="{}"):
    with open(meta_info_file) as fin:
        gt_names = [line.strip().split(" ")[0] for line in fin]
    paths = []
    for gt_name in gt_names:
        basename, ext = os.path.splitext(os.path.basename(gt_name))
        paths.append({"lq_path": os.path.join(lq_folder, f"{tmpl.format(basename)}{ext}"),
                      "gt_path": os.path.join(gt_folder, gt_name)})
    return paths


def _basicsr_paths_from_folder(lq_folder, gt_folder, tmpl="{}"):
    def scan(d):
        return [e.name for e in os.scandir(d) if not e.name.startswith(".") and e.is_file()]

    input_paths, gt_paths = scan(lq_folder), scan(gt_folder)
    assert len(input_paths) == len(gt_paths), "lq and gt datasets have different number of images"
    paths = []
    for gt_path in gt_paths:
        basename, ext = os.path.splitext(os.path.basename(gt_path))
        input_name = f"{tmpl.format(basename)}{ext}"
        assert input_name in input_paths, f"{input_name} is not in lq_paths"
        paths.append({"lq_path": os.path.join(lq_folder, input_name), "gt_path": os.path.join(gt_folder, gt_path)})
    return paths


def _basicsr_item(path: dict, scale: int, gt_size: int) -> tuple[np.ndarray, np.ndarray]:
    """PairedImageDataset.__getitem__ for phase 'train' up to the crop: imfrombytes (BGR float32) and
    paired_random_crop's checks, then the val-phase GT crop to LQ * scale."""
    def imfrombytes(b: bytes) -> np.ndarray:
        return cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR).astype(np.float32) / 255.0

    gt = imfrombytes(Path(path["gt_path"]).read_bytes())
    lq = imfrombytes(Path(path["lq_path"]).read_bytes())
    h_lq, w_lq = lq.shape[:2]
    h_gt, w_gt = gt.shape[:2]
    lq_patch = gt_size // scale
    assert (h_gt, w_gt) == (h_lq * scale, w_lq * scale), "scale mismatches"
    assert h_lq >= lq_patch and w_lq >= lq_patch, "LQ smaller than patch size"
    return gt[: h_lq * scale, : w_lq * scale], lq


def test_basicsr_layout_reads_as_paired_image_dataset(shards, tmp_path):
    out = tmp_path / "bsr"
    r = export(str(shards["train"]), out, "basicsr", progress=False)
    assert (r.paired, r.scales) == (7, [4])
    built = _built(shards["train"])
    lines = (out / "meta_info.txt").read_text().splitlines()
    assert lines == [f"{k}.png (32,32,3)" for k in sorted(built)]
    by_meta = _basicsr_paths_from_meta_info(str(out / "lq"), str(out / "gt"), str(out / "meta_info.txt"))
    by_folder = _basicsr_paths_from_folder(str(out / "lq"), str(out / "gt"))
    assert sorted(map(str, by_folder), key=str) == sorted(map(str, by_meta), key=str)
    for p in by_meta:
        gt, lq = _basicsr_item(p, scale=4, gt_size=32)
        rec, members = built[Path(p["gt_path"]).stem]
        assert np.array_equal(np.rint(gt[..., ::-1] * 255).astype(np.uint8), decode_png(members["hq.png"]))
        assert np.array_equal(np.rint(lq[..., ::-1] * 255).astype(np.uint8), decode_png(members["lq.png"]))
        assert Path(p["gt_path"]).read_bytes() == members["hq.png"]  # bytes copied, not re-encoded
    assert "type: PairedImageDataset" in (out / "README.md").read_text()


def test_basicsr_unpaired_and_mixed_scales(shards, tmp_path):
    out = tmp_path / "bsr-mixed"
    r = export(str(shards["mixed"]), out, "basicsr", progress=False)
    assert (r.paired, r.unpaired, r.scales) == (2, 2, [2, 4])
    assert sorted(p.name for p in (out / "gt").iterdir()) == sorted(p.name for p in (out / "lq").iterdir()) \
        == ["00000000.png", "00000001.png"]
    assert (out / "meta_info_x4.txt").read_text() == "00000000.png (32,32,3)\n"
    assert (out / "meta_info_x2.txt").read_text() == "00000001.png (32,32,3)\n"
    assert (out / "meta_info_unpaired.txt").read_text() == "00000002.png (8,8,3)\n00000003.png (16,16,3)\n"
    for scale in (2, 4):
        for p in _basicsr_paths_from_meta_info(str(out / "lq"), str(out / "gt"), str(out / f"meta_info_x{scale}.txt")):
            _basicsr_item(p, scale=scale, gt_size=16)
    _basicsr_paths_from_folder(str(out / "lq"), str(out / "gt"))  # lq/ holds only the pairs
    assert sorted(p.name for p in (out / "lq_unpaired").iterdir()) == ["00000002.png", "00000003.png"]


def test_real_basicsr_reads_it(shards, tmp_path):
    """BasicSR's own PairedImageDataset, where it is installed (it is not in the test extra: basicsr 1.4.2
    imports torchvision.transforms.functional_tensor, which torchvision 0.17+ removed)."""
    import importlib.util

    if importlib.util.find_spec("basicsr") is None:
        pytest.skip("basicsr is not installed")
    try:
        import torchvision.transforms.functional as tvf

        sys.modules.setdefault("torchvision.transforms.functional_tensor", tvf)
        from basicsr.data.paired_image_dataset import PairedImageDataset
    except ImportError:
        pytest.skip("basicsr is not installed")
    out = tmp_path / "bsr"
    export(str(shards["train"]), out, "basicsr", progress=False)
    for meta in (str(out / "meta_info.txt"), None):
        ds = PairedImageDataset({"dataroot_gt": str(out / "gt"), "dataroot_lq": str(out / "lq"),
                                 "meta_info_file": meta, "io_backend": {"type": "disk"}, "scale": 4,
                                 "phase": "train", "gt_size": 32, "use_hflip": False, "use_rot": False})
        assert len(ds) == 7 and tuple(ds[0]["gt"].shape) == (3, 32, 32) and tuple(ds[0]["lq"].shape) == (3, 8, 8)


def test_folders_load_as_an_image_folder(shards, tmp_path):
    out = tmp_path / "folders"
    r = export(str(shards["mixed"]), out, "folders", progress=False)
    assert (r.paired, r.unpaired) == (2, 2)
    assert sorted(p.name for p in (out / "hq").iterdir()) == ["00000000.png", "00000001.png"]
    assert len(list((out / "lq").iterdir())) == 4
    ds = datasets.load_dataset("imagefolder", data_dir=str(out), split="train", cache_dir=str(tmp_path / "cache"))
    built = _built(shards["mixed"])
    assert set(ds.features) == set(FIELDS) | {"hq", "lq"}
    for row in ds:
        rec, members = built[row["key"]]
        assert row["restoration_prompt"] == rec["restoration_prompt"] and row["crop_box"] == rec["crop_box"]
        assert np.array_equal(_rgb(row["lq"]), decode_png(members["lq.png"]))
        assert (row["hq"] is None) == ("hq.png" not in members)


def test_export_folder_rules(shards, tmp_path, capsys):
    out = tmp_path / "ex"
    args = ["export", str(shards["test"]), "--format", "folders", "--out", str(out), "--quiet"]
    assert degrade_main(args) == 0
    assert "hq/" in capsys.readouterr().out
    assert degrade_main(args) == 0  # the same export again: redone
    other = ["export", str(shards["train"]), "--format", "basicsr", "--out", str(out), "--quiet"]
    assert degrade_main(other) == 2
    assert "holds another export" in capsys.readouterr().err
    assert degrade_main(other + ["--overwrite"]) == 0
    assert not (out / "hq").exists() and not (out / "metadata.jsonl").exists() and (out / "gt").is_dir()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert degrade_main(["export", str(shards["test"]), "--format", "parquet", "--out", str(foreign)]) == 2
    err = capsys.readouterr().err
    assert "holds other files (notes.txt)" in err and len(err.strip().splitlines()) == 1
    assert (foreign / "notes.txt").read_text() == "mine"
    a_file = str(foreign / "notes.txt")
    assert degrade_main(["export", str(shards["test"]), "--format", "folders", "--out", a_file]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def test_a_changed_shard_is_refused(shards, tmp_path, capsys):
    import shutil

    src = tmp_path / "copy"
    shutil.copytree(shards["test"], src)
    tar = shard_paths(src)[0]
    data = bytearray(tar.read_bytes())
    data[-2000] ^= 0xFF
    tar.write_bytes(bytes(data))
    assert degrade_main(["export", str(src), "--format", "parquet", "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "manifest" in capsys.readouterr().err


def test_folders_without_any_ground_truth(shards, tmp_path):
    only_lq = tmp_path / "only-lq"
    only_lq.mkdir()
    with ShardWriter(only_lq / "shard-000000.tar") as w:
        for key, (_, members) in _built(shards["mixed"]).items():
            if "hq.png" not in members:
                w.write(key, members)
    out = tmp_path / "folders"
    r = export(str(only_lq), out, "folders", progress=False)
    assert (r.paired, r.unpaired) == (0, 2) and not (out / "hq").exists()
    rows = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert [row["lq_file_name"] for row in rows] == ["lq/00000002.png", "lq/00000003.png"]
    assert all("hq_file_name" not in row for row in rows)
    ds = datasets.load_dataset("imagefolder", data_dir=str(out), split="train", cache_dir=str(tmp_path / "cache"))
    assert "hq" not in ds.features and ds[1]["lq"].size == (16, 16)
