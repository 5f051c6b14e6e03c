"""``degrade mixture``: Diff-Restorer's training mixture (Sec. IV-A) from tiny stand-ins of its eight data sets."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import synthetic_photo, write_png
from pirs.degrade.build import decode_png
from pirs.degrade.mixture import (
    Augment,
    apply_geometry,
    augment_pair,
    load_plan,
    main,
    plans_dir,
    sample_augment,
    selection,
)
from pirs.degrade.shards import index_samples, iter_records, shard_paths

PER_TYPE = 3  # stands in for the paper's 10K


def img(seed: int, size: int = 24) -> np.ndarray:
    return synthetic_photo(size, size, seed)


def jpg(path: Path, im: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.ascontiguousarray(im[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 95])


def source_tree(root: Path) -> Path:
    """Every data set of the shipped plan in its authors' layout, a few pairs each, plus test splits to leave out."""
    for k, rel in enumerate(("DIV2K/DIV2K_train_HR/0001.png", "DIV2K/DIV2K_train_HR/0002.png",
                             "Flickr2K/Flickr2K_HR/000001.png")):
        write_png(root / rel, synthetic_photo(520, 530, k))
    for split, names in (("our485", ["1", "2"]), ("eval15", ["9"])):  # LOL: 2 training pairs, 1 test pair
        for n in names:
            write_png(root / "LOL" / split / "low" / f"{n}.png", img(int(n)) // 8)
            write_png(root / "LOL" / split / "high" / f"{n}.png", img(int(n)))
    for i in range(1, 6):  # RESIDE ITS: 5 pairs, more than PER_TYPE
        write_png(root / "RESIDE" / "ITS" / "hazy" / f"{i}_1_0.9.png", img(i) // 2 + 100)
        write_png(root / "RESIDE" / "ITS" / "clear" / f"{i}.png", img(i))
    for split, n in (("training", 1), ("testing", 9)):  # Rain1400: 2 training pairs of one clean image
        for k in (1, 2) if split == "training" else (1,):
            jpg(root / "Rain1400" / split / "rainy_image" / f"{n}_{k}.jpg", img(k + 20))
        jpg(root / "Rain1400" / split / "ground_truth" / f"{n}.jpg", img(n))
    for i in (0, 1):  # Raindrop: 2 training pairs
        write_png(root / "Raindrop" / "train" / "data" / f"{i}_rain.png", img(i + 30))
        write_png(root / "Raindrop" / "train" / "gt" / f"{i}_clean.png", img(i))
    for split, names in (("train/all", "abcd"), ("test/Snow100K-L", "z")):  # Snow100K: 4 training pairs
        for n in names:
            jpg(root / "Snow100K" / split / "synthetic" / f"{n}.jpg", img(ord(n)) // 2 + 120)
            jpg(root / "Snow100K" / split / "gt" / f"{n}.jpg", img(ord(n)))
    write_png(root / "GoPro" / "train" / "GOPR0372_07_00" / "blur" / "000047.png", img(40))  # 1 pair only
    write_png(root / "GoPro" / "train" / "GOPR0372_07_00" / "sharp" / "000047.png", img(41))
    write_png(root / "GoPro" / "test" / "GOPR0384_11_00" / "blur" / "000001.png", img(42))
    write_png(root / "GoPro" / "test" / "GOPR0384_11_00" / "sharp" / "000001.png", img(43))
    return root


@pytest.fixture(scope="module")
def mixture(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("mix")
    src = source_tree(base / "data")
    out = base / "out"
    assert main(["diffrestorer-train", "--source-root", str(src), "--out", str(out), "--per-type", str(PER_TYPE),
                 "--quiet"]) == 0
    return src, out


def records(folder: Path) -> list[tuple[str, dict, dict]]:
    return [r for s in shard_paths(folder) for r in iter_records(s)]


def test_the_plan_is_the_papers_eight_sets() -> None:
    plan = load_plan(plans_dir() / "diffrestorer-train.yaml")
    assert plan.per_type == 10_000
    how = {p.type: p.ingest or p.build for p in plan.parts}
    assert {t: h.get("layout") or h.get("pipeline") for t, h in how.items()} == {
        "noise": "noise", "jpeg": "jpeg", "low-light": "lol", "haze": "reside-its", "rain": "rain1400",
        "raindrop": "raindrop", "snow": "snow100k", "blur": "gopro"}
    assert how["noise"]["roots"] == how["jpeg"]["roots"] == ["DIV2K/DIV2K_train_HR", "Flickr2K/Flickr2K_HR"]
    assert {t: h.get("match") for t, h in how.items() if "layout" in h} == {
        "low-light": "our485/*", "haze": None, "rain": "training/*", "raindrop": "train/*", "snow": "train/*",
        "blur": "train/*"}  # the training splits: none of the test sets' files


def test_ten_thousand_becomes_n_per_type_sampled_or_repeated(mixture) -> None:
    src, out = mixture
    m = json.loads((out / "manifest.json").read_text())
    types = m["types"]
    assert m["samples"] == 8 * PER_TYPE and all(t["samples"] == PER_TYPE for t in types.values())
    assert {t: (v["available"], v["unique"], v["augmented"]) for t, v in types.items()} == {
        "noise": (3, 3, 0), "jpeg": (3, 3, 0),  # a build part makes exactly PER_TYPE crops of the photos
        "low-light": (2, 2, 1), "rain": (2, 2, 1), "raindrop": (2, 2, 1), "blur": (1, 1, 2),  # repeated
        "haze": (5, 3, 0), "snow": (4, 3, 0)}  # sampled without repetition
    recs = records(out)
    assert len(recs) == 8 * PER_TYPE and len({k for k, _, _ in recs}) == 8 * PER_TYPE
    by_type = {}
    rows = {json.loads(line)["key"]: json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()}
    for key, rec, members in recs:
        t = rows[key]["type"]
        by_type.setdefault(t, []).append(rec)
        assert rec["degradations"] == [t] and rec["index"] == int(key) and "hq.png" in members
    # only training splits were read: no LOL eval15, Rain1400 testing, Snow100K test or GoPro test file
    paths = [r["lq_source_path"] for rs in by_type.values() for r in rs if r["lq_source_path"]]
    assert not any(p.startswith(("eval15/", "testing/", "test/")) for p in paths)
    assert all(r["source_path"].startswith("root/") and r["crop_box"][2:] == [512, 512]
               for t in ("noise", "jpeg") for r in by_type[t])  # 512 crops; paths independent of --source-root
    card = (out / "README.md").read_text()
    assert "| blur | GoPro" in card and "shard-*.tar" in card


def test_copies_are_the_part_records_or_their_augmentation(mixture) -> None:
    _, out = mixture
    rows = [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]
    mix = {k: (rec, members) for k, rec, members in records(out)}
    parts: dict[tuple[str, str], tuple[dict, dict]] = {}
    for t in {r["type"] for r in rows}:
        for k, rec, members in records(out / "parts" / t):
            parts[(t, k)] = (rec, members)
    for row in rows:
        rec, members = mix[row["key"]]
        prec, pmembers = parts[(row["type"], row["part_key"])]
        if row["copy"] == 0:  # the part's pixels, byte for byte
            assert row["augment"] is None and members["hq.png"] == pmembers["hq.png"]
            assert members["lq.png"] == pmembers["lq.png"] and rec["ops"] == prec["ops"]
            continue
        params = row["augment"]
        hq, lq = augment_pair(decode_png(pmembers["hq.png"]), decode_png(pmembers["lq.png"]), params)
        assert np.array_equal(decode_png(members["hq.png"]), hq) and np.array_equal(decode_png(members["lq.png"]), lq)
        assert np.array_equal(hq, apply_geometry(decode_png(pmembers["hq.png"]), params))  # no noise on the HQ
        ops = json.loads(rec["ops"])
        assert ops[: len(json.loads(prec["ops"]))] == json.loads(prec["ops"])
        assert ops[len(json.loads(prec["ops"]))]["op"] == "mixture-augment"
        assert rec["degradations"] == prec["degradations"] and rec["hq_size"] == list(hq.shape[:2])


def test_rerun_resumes_and_loads(mixture, tmp_path) -> None:
    import datasets

    src, out = mixture
    before = {p.name: p.read_bytes() for p in shard_paths(out)}
    stamp = (out / "shard-000000.tar").stat().st_mtime_ns
    assert main(["diffrestorer-train", "--source-root", str(src), "--out", str(out), "--per-type", str(PER_TYPE),
                 "--quiet"]) == 0
    assert (out / "shard-000000.tar").stat().st_mtime_ns == stamp
    from pirs.degrade.lock import output_lock

    with output_lock(out, "another writer"):  # one writer per output
        assert main(["diffrestorer-train", "--source-root", str(src), "--out", str(out), "--quiet"]) == 2
    assert before == {p.name: p.read_bytes() for p in shard_paths(out)}
    datasets.disable_progress_bars()
    ds = datasets.load_dataset(str(out), split="train", cache_dir=str(tmp_path / "cache"))
    assert ds.num_rows == 8 * PER_TYPE  # the mixture only, not the parts beneath it
    assert sorted(index_samples(out / "shard-000000.tar")) == [f"{i:08d}" for i in range(8 * PER_TYPE)]
    # "all images are resized to 512x512 for training": the trainer resizes every pair, whatever its size
    from pirs.models.data import DataOptions, ShardPairs

    data = ShardPairs(str(out), DataOptions(resolution=32))
    assert len(data) == 8 * PER_TYPE
    assert {tuple(data.sample(i)[k].shape) for i in range(len(data)) for k in ("hq", "lq")} == {(3, 32, 32)}


def test_selection_and_augmentation_are_seeded_pure_functions() -> None:
    assert selection(10, 4, 0, 1) == selection(10, 4, 0, 1) != selection(10, 4, 1, 1)
    many = selection(10, 4, 0, 1)
    assert len({r for r, _ in many}) == 4 and all(c == 0 for _, c in many)
    few = selection(3, 10, 0, 2)  # 3 records for 10 samples: each 3 times, one of them a 4th time
    counts = np.bincount([r for r, _ in few], minlength=3)
    assert len(few) == 10 and sorted(counts.tolist()) == [3, 3, 4]
    assert sorted(c for r, c in few if r == 0) == list(range(counts[0]))
    a = Augment(affine_p=1.0, noise_p=1.0)
    p1 = sample_augment(np.random.default_rng(5), a, 40, 60)
    assert p1 == sample_augment(np.random.default_rng(5), a, 40, 60) and p1["affine"] and p1["noise"]
    t, left, h, w = p1["crop"]
    assert 0.6 * 40 - 1 <= h <= 40 and t + h <= 40 and left + w <= 60
    x = img(1, 40)[:, :40].repeat(2, axis=1)[:, :60]
    hq, lq = augment_pair(x, x, p1)
    assert hq.shape == lq.shape and not np.array_equal(hq, lq)  # the LQ got noise, the HQ did not
    still = sample_augment(np.random.default_rng(5), Augment(crop=(1.0, 1.0), quarter_turns=False, affine_p=0,
                                                             noise_p=0), 40, 60)
    assert np.array_equal(apply_geometry(x, still), x)


def test_clear_errors(tmp_path, capsys) -> None:
    assert main(["diffrestorer-train", "--source-root", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "missing folders" in err and "GoPro" in err and "seungjunnah" in err and "\n" not in err.strip()
    bad = tmp_path / "bad.yaml"
    bad.write_text((plans_dir() / "diffrestorer-train.yaml").read_text().replace("layout: gopro", "layout: gopr"))
    assert main([str(bad), "--source-root", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "did you mean 'gopro'" in capsys.readouterr().err.lower()
    bad.write_text((plans_dir() / "diffrestorer-train.yaml").read_text().replace("per_type:", "per_typo:"))
    assert main([str(bad), "--source-root", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "per_typo" in capsys.readouterr().err
    assert main(["no-such-plan", "--source-root", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "diffrestorer-train" in capsys.readouterr().err
