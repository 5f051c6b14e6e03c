"""``degrade ingest``: every listed layout on tiny fake trees, pairing problems, --then, resume, datasets."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

import datasets
from conftest import synthetic_photo, write_png
from pirs.degrade.build import decode_png
from pirs.degrade.cli import main
from pirs.degrade.ingest import IngestConfig, ingest
from pirs.degrade.layouts import LAYOUTS
from pirs.degrade.shards import iter_records, shard_paths


def img(seed: int, size: int = 24) -> np.ndarray:
    return synthetic_photo(size, size, seed)


def jpg(path: Path, im: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.ascontiguousarray(im[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 95])


def make_tree(layout: str, root: Path) -> int:
    """A fake tree in ``layout``; returns the number of pairs it holds."""
    if layout == "lol":
        for sub, names in (("our485", ["2", "10"]), ("eval15", ["1"])):
            for i, n in enumerate(names):
                write_png(root / sub / "low" / f"{n}.png", img(i) // 8)
                write_png(root / sub / "high" / f"{n}.png", img(i))
        return 3
    if layout in ("reside-sots-outdoor", "reside-sots-indoor", "reside-its"):
        clear = "clear" if layout == "reside-its" else "gt"
        hazy = {"reside-sots-outdoor": ["0001_0.8_0.2.jpg", "0002_0.9_0.16.jpg"],
                "reside-sots-indoor": ["1400_1.png", "1400_2.png", "1401_1.png"],
                "reside-its": ["1_1_0.90179.png", "2_3_0.7.png"]}[layout]
        for name in hazy:
            stem = name.split("_")[0]
            (jpg if name.endswith("jpg") else write_png)(root / "hazy" / name, img(int(stem)))
            write_png(root / clear / f"{stem}.png", img(int(stem)))
        return len(hazy)
    if layout == "rain1400":
        for k in (1, 2, 14):
            jpg(root / "rainy_image" / f"7_{k}.jpg", img(k))
        jpg(root / "ground_truth" / "7.jpg", img(0))
        return 3
    if layout == "raindrop":
        for i in (0, 1):
            write_png(root / "test_a" / "data" / f"{i}_rain.png", img(i))
            write_png(root / "test_a" / "gt" / f"{i}_clean.png", img(i + 5))
        return 2
    if layout == "snow100k":
        for sub in ("Snow100K-S", "Snow100K-L"):
            jpg(root / "test" / sub / "synthetic" / "beach_1.jpg", img(1))
            jpg(root / "test" / sub / "gt" / "beach_1.jpg", img(2))
            write_png(root / "test" / sub / "mask" / "beach_1.png", img(3))
        return 2
    if layout == "gopro":
        for seq in ("GOPR0384_11_00", "GOPR0385_11_01"):
            for n in ("000001", "000002"):
                write_png(root / "test" / seq / "blur" / f"{n}.png", img(1))
                write_png(root / "test" / seq / "sharp" / f"{n}.png", img(2))
                write_png(root / "test" / seq / "blur_gamma" / f"{n}.png", img(3))
        return 4
    if layout == "realsr":
        for cam in ("Canon", "Nikon"):
            for i in (1, 2):
                d = root / cam / "Test" / "4"
                write_png(d / f"{cam}_00{i}_HR.png", img(i))
                write_png(d / f"{cam}_00{i}_LR4.png", img(i + 1))
            write_png(root / cam / "Test" / "2" / f"{cam}_001_LR2.png", img(1))  # another scale: not picked
            write_png(root / cam / "Test" / "2" / f"{cam}_001_HR.png", img(1))
        return 4
    if layout == "drealsr":
        for name in ("DSC_1454", "DSC_1460"):
            write_png(root / "x4" / "Test_x4" / "test_LR" / f"{name}_x4.png", img(1, 8))
            write_png(root / "x4" / "Test_x4" / "test_HR" / f"{name}_x1.png", img(2, 32))
        return 2
    if layout == "rtts":
        for i in range(3):
            jpg(root / "JPEGImages" / f"AM_Bing_{i}.png", img(i))
        return 3
    if layout == "realsnow":  # the folders WGWS-Net's testing_model_Seting3.py reads, plus a training pair
        for split, names in (("testing", ["0001", "0002"]), ("training", ["0100"])):
            for i, n in enumerate(names):
                write_png(root / "RealSnow" / f"video2imgs_IN_{split}_re" / f"{n}.png", img(i + 3))
                write_png(root / "RealSnow" / f"video2imgs_GT_{split}_re" / f"{n}.png", img(i))
        return 3
    for i in range(2):  # folder, realphoto60
        write_png(root / f"photo_{i}.png", img(i))
    return 2


def records(folder: Path) -> list[tuple[str, dict, dict]]:
    return [r for s in shard_paths(folder) for r in iter_records(s)]


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_every_layout_ingests(tmp_path: Path, layout: str) -> None:
    root, out = tmp_path / "src", tmp_path / "out"
    n = make_tree(layout, root)
    lay = LAYOUTS[layout]
    r = ingest(IngestConfig(layout=layout, input=str(root), out=str(out), progress=False))
    assert r.samples == n and r.problems == 0, (out / "rejects.jsonl").read_text()
    recs = records(out)
    assert len(recs) == n
    for _key, rec, members in recs:
        assert rec["dataset"] == layout and rec["degradations"] == list(lay.labels)
        assert (root / rec["lq_source_path"]).is_file()
        lq = decode_png(members["lq.png"])
        assert list(lq.shape[:2]) == rec["lq_size"]
        if lay.paired:
            hq = decode_png(members["hq.png"])
            assert (root / rec["source_path"]).is_file() and rec["source_sha256"]
            assert list(hq.shape[:2]) == rec["hq_size"]
            assert hq.shape[0] in (lq.shape[0], lq.shape[0] * rec["scale"])
        else:
            assert "hq.png" not in members and rec["hq_size"] == [] and rec["source_path"] == ""
        if lay.labels:
            assert rec["restoration_prompt"]
    m = json.loads((out / "manifest.json").read_text())
    assert m["samples"] == n and m["layout"]["name"] == layout and len(m["content_sha256"]) == 64


def test_pairing_content_and_rules(tmp_path: Path) -> None:
    root = tmp_path / "sots"
    make_tree("reside-sots-indoor", root)
    ingest(IngestConfig(layout="reside-sots-indoor", input=str(root), out=str(tmp_path / "o"), progress=False))
    pairs = {rec["lq_source_path"]: rec["source_path"] for _, rec, _ in records(tmp_path / "o")}
    assert pairs == {"hazy/1400_1.png": "gt/1400.png", "hazy/1400_2.png": "gt/1400.png",
                     "hazy/1401_1.png": "gt/1401.png"}
    # the stored images are the files' pixels
    _, rec, members = records(tmp_path / "o")[0]
    assert np.array_equal(decode_png(members["hq.png"]), cv2.imread(str(root / rec["source_path"]))[..., ::-1])
    root = tmp_path / "realsr"
    make_tree("realsr", root)
    ingest(IngestConfig(layout="realsr", input=str(root), out=str(tmp_path / "r"), progress=False))
    recs = records(tmp_path / "r")
    assert all("/4/" in rec["lq_source_path"] and rec["lq_upsampled"] and rec["scale"] == 4 for _, rec, _ in recs)
    ingest(IngestConfig(layout="realsr", input=str(root), out=str(tmp_path / "r2"), scale=2, progress=False))
    assert [rec["lq_source_path"] for _, rec, _ in records(tmp_path / "r2")] == [
        "Canon/Test/2/Canon_001_LR2.png", "Nikon/Test/2/Nikon_001_LR2.png"]


def test_realsnow_is_paired_snowy_to_ground_truth_by_file_name(tmp_path: Path) -> None:
    """RealSnow has ground truth (Diff-Restorer prints FID/LPIPS/DISTS on it): IN frames pair with GT frames."""
    root = tmp_path / "rs"
    make_tree("realsnow", root)
    base = root / "RealSnow"
    write_png(base / "video2imgs_IN_testing_re" / "0009.png", img(1))  # snowy frame without its ground truth
    write_png(base / "video2imgs_IN_extra" / "0001.png", img(1))  # a snowy folder without a GT sibling
    ingest(IngestConfig(layout="realsnow", input=str(root), out=str(tmp_path / "o"), match=["*_IN_testing*"],
                        progress=False))
    pairs = {rec["lq_source_path"]: rec["source_path"] for _, rec, _ in records(tmp_path / "o")}
    assert pairs == {f"RealSnow/video2imgs_IN_testing_re/{n}.png": f"RealSnow/video2imgs_GT_testing_re/{n}.png"
                     for n in ("0001", "0002")}
    reasons = {json.loads(line)["path"]: json.loads(line)["reason"]
               for line in (tmp_path / "o" / "rejects.jsonl").read_text().splitlines()}
    assert "LQ without its HQ" in reasons["RealSnow/video2imgs_IN_testing_re/0009.png"]
    empty = tmp_path / "flat"  # a flat folder of photos is not RealSnow: nothing pairs, and it says what it wants
    make_tree("folder", empty)
    with pytest.raises(Exception, match="video2imgs_IN_testing_re"):
        ingest(IngestConfig(layout="realsnow", input=str(empty), out=str(tmp_path / "x"), progress=False))


def test_pairing_problems_are_reported_per_file_and_counted(tmp_path: Path) -> None:
    root = tmp_path / "gopro"
    make_tree("gopro", root)
    seq = root / "test" / "GOPR0384_11_00"
    write_png(seq / "blur" / "000009.png", img(1))  # LQ without HQ
    write_png(seq / "sharp" / "000010.png", img(1))  # HQ without LQ
    write_png(seq / "blur" / "000003.png", img(1, 24))  # size mismatch
    write_png(seq / "sharp" / "000003.png", img(1, 32))
    jpg(seq / "blur" / "000001.jpg", img(1))  # duplicate name (000001.png exists)
    (seq / "blur" / "000004.png").write_bytes(b"not a png")  # undecodable
    write_png(seq / "sharp" / "000004.png", img(1))
    out = tmp_path / "out"
    assert main(["ingest", "--layout", "gopro", "--input", str(root), "--out", str(out), "--quiet"]) == 0
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    by_path = {r["path"]: r["reason"] for r in rejects}
    base = "test/GOPR0384_11_00"
    assert "LQ without its HQ" in by_path[f"{base}/blur/000009.png"]
    assert "HQ without any LQ" in by_path[f"{base}/sharp/000010.png"]
    assert "size mismatch" in by_path[f"{base}/blur/000003.png"]
    assert "duplicate LQ name" in by_path[f"{base}/blur/000001.png"] or \
        "duplicate LQ name" in by_path[f"{base}/blur/000001.jpg"]
    assert f"{base}/blur/000004.png" in by_path
    m = json.loads((out / "manifest.json").read_text())
    assert m["inputs"]["rejected"] == 3 and m["sample_rejects"] == 2
    assert m["samples"] == 4  # 6 pairs found, 2 of them could not be made
    assert main(["ingest", "--layout", "gopro", "--input", str(root), "--out", str(out), "--quiet", "--strict"]) == 1


def test_then_applies_a_recipe_on_ingested_lq_and_replays(tmp_path: Path) -> None:
    root = tmp_path / "snow"
    make_tree("snow100k", root)
    out = tmp_path / "out"
    ingest(IngestConfig(layout="snow100k", input=str(root), out=str(out), then="noise", progress=False))
    for key, rec, members in records(out):
        assert rec["degradations"] == ["snow", "noise"]
        assert rec["restoration_prompt"] == "Remove the snow; Denoise with sigma 0.20"
        assert rec["recipe"] == "ingest-snow100k+noise" and json.loads(rec["ops"])[0]["op"] == "noise"
        orig = cv2.imread(str(root / rec["lq_source_path"]))[..., ::-1]
        assert not np.array_equal(decode_png(members["lq.png"]), orig)
        assert main(["replay", str(out), key, "--source", str(root)]) == 0
        assert main(["replay", str(out), key]) == 2  # needs the data set
    with pytest.raises(Exception, match="scale 1"):
        ingest(IngestConfig(layout="snow100k", input=str(root), out=str(tmp_path / "x"), then="realesrgan",
                            progress=False))


def test_crop_is_aligned_between_lq_and_hq(tmp_path: Path) -> None:
    root = tmp_path / "d"
    make_tree("drealsr", root)
    out = tmp_path / "out"
    ingest(IngestConfig(layout="drealsr", input=str(root), out=str(out), crop_size=16, seed=3, progress=False))
    for _, rec, members in records(out):
        hq, lq = decode_png(members["hq.png"]), decode_png(members["lq.png"])
        assert hq.shape == (16, 16, 3) and lq.shape == (4, 4, 3)
        t, left, _, _ = rec["crop_box"]
        full_lq = cv2.imread(str(root / rec["lq_source_path"]))[..., ::-1]
        full_hq = cv2.imread(str(root / rec["source_path"]))[..., ::-1]
        assert t % 4 == 0 and left % 4 == 0
        assert np.array_equal(lq, full_lq[t // 4: t // 4 + 4, left // 4: left // 4 + 4])
        assert np.array_equal(hq, full_hq[t: t + 16, left: left + 16])


def test_unpaired_loads_in_datasets_with_hq_none(tmp_path: Path) -> None:
    root = tmp_path / "rp"
    make_tree("realphoto60", root)
    out = tmp_path / "out"
    ingest(IngestConfig(layout="realphoto60", input=str(root), out=str(out), progress=False))
    datasets.disable_progress_bars()
    ds = datasets.load_dataset(str(out), split="train", cache_dir=str(tmp_path / "cache"))
    assert ds.num_rows == 2
    for row in ds:
        assert row["hq.png"] is None and row["lq.png"].size == (24, 24)
        assert row["json"]["dataset"] == "realphoto60" and row["json"]["degradations"] == ["real"]


def test_workers_and_resume_give_identical_shards(tmp_path: Path) -> None:
    root = tmp_path / "lol"
    make_tree("lol", root)
    for k in range(5):
        write_png(root / "eval15" / "low" / f"{20 + k}.png", img(k) // 8)
        write_png(root / "eval15" / "high" / f"{20 + k}.png", img(k))
    args = {"layout": "lol", "input": str(root), "then": "noise-range", "shard_size": 3, "progress": False}
    ingest(IngestConfig(out=str(tmp_path / "a"), **args))
    ingest(IngestConfig(out=str(tmp_path / "b"), workers=2, **args))
    a = {p.name: p.read_bytes() for p in shard_paths(tmp_path / "a")}
    assert len(a) == 3 and a == {p.name: p.read_bytes() for p in shard_paths(tmp_path / "b")}
    # interrupted after the first shard: its marker and tar stay, the rest is redone on resume
    b = tmp_path / "b"
    for p in list(b.glob("shard-00000[12].tar")) + list((b / "stats").glob("shard-00000[12].json")):
        p.unlink()
    (b / "manifest.json").unlink()
    stamp = (b / "shard-000000.tar").stat().st_mtime_ns
    r = ingest(IngestConfig(out=str(b), **args))
    assert r.shards_built == 2 and (b / "shard-000000.tar").stat().st_mtime_ns == stamp
    assert a == {p.name: p.read_bytes() for p in shard_paths(b)}
    assert json.loads((b / "manifest.json").read_text())["content_sha256"] == \
        json.loads((tmp_path / "a" / "manifest.json").read_text())["content_sha256"]


def test_clear_errors(tmp_path: Path, capsys) -> None:
    assert main(["ingest", "--layout", "gopr", "--input", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "did you mean 'gopro'" in capsys.readouterr().err.lower()
    assert main(["ingest", "--layout", "lol", "--input", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "no such folder" in err and "daooshee" in err
    (tmp_path / "empty").mkdir()
    assert main(["ingest", "--layout", "lol", "--input", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "no lol pairs found" in capsys.readouterr().err
