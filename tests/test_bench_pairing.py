"""Pairing predictions with a test set: every problem reported together, fingerprints, shards, decoding once."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import quick_config, synthetic_photo, write_png
from pirs.benchmark.evaluate import batches
from pirs.benchmark.pairing import (
    PairingError,
    ReferenceError,
    iter_decoded,
    load_reference,
    pair,
)
from pirs.degrade.build import build, decode_png, encode_png
from pirs.degrade.shards import ShardWriter, iter_records, shard_paths


@pytest.fixture(scope="module")
def ref(tmp_path_factory, photos_dir) -> Path:
    """Six x4 Real-ESRGAN pairs: HQ 32x32, LQ 8x8, in two shards."""
    out = tmp_path_factory.mktemp("ref") / "shards"
    build(quick_config(out, photos_dir, num_samples=6, shard_size=4))
    return out


def hq_images(shards: Path) -> dict[str, np.ndarray]:
    return {k: decode_png(m["hq.png"]) for s in shard_paths(shards) for k, _, m in iter_records(s)}


def write_oracle(folder: Path, shards: Path, ext: str = ".png") -> dict[str, np.ndarray]:
    """The HQ images as predictions (a perfect restorer)."""
    folder.mkdir(parents=True, exist_ok=True)
    hq = hq_images(shards)
    for k, img in hq.items():
        assert cv2.imwrite(str(folder / f"{k}{ext}"), img[..., ::-1])
    return hq


def test_oracle_pairs_cleanly_and_fingerprints(tmp_path, ref):
    hq = write_oracle(tmp_path / "pred", ref)
    p = pair(tmp_path / "pred", ref)
    assert p.report.problems == 0 and p.keys == sorted(hq)
    p.check()
    manifest = json.loads((ref / "manifest.json").read_text())
    assert p.reference.fingerprint == manifest["content_sha256"]
    assert "verified" in p.reference.fingerprint_source
    assert p.reference.items["00000000"].scale == 4 and p.reference.items["00000000"].lq_size == (8, 8)
    got = {k: (a, b) for k, a, b in iter_decoded(p)}
    assert sorted(got) == sorted(hq)
    for k, (pred, gt) in got.items():
        assert np.array_equal(pred, hq[k]) and np.array_equal(gt, hq[k])
    # the predictions' fingerprint follows their bytes and nothing else
    assert pair(tmp_path / "pred", ref).fingerprint == p.fingerprint
    img = hq["00000003"].copy()
    img[0, 0] ^= 1
    write_png(tmp_path / "pred" / "00000003.png", img)
    assert pair(tmp_path / "pred", ref).fingerprint != p.fingerprint


def test_every_problem_is_reported_together(tmp_path, ref):
    pred = tmp_path / "pred"
    hq = write_oracle(pred, ref)
    (pred / "00000000.png").unlink()  # missing
    write_png(pred / "zzz_extra.png", hq["00000001"])  # extra
    write_png(pred / "00000001.png", hq["00000001"][:8, :8])  # LQ-sized: size mismatch
    write_png(pred / "00000002.png", hq["00000002"][:, :30])  # another size mismatch
    (pred / "00000003.png").write_bytes(b"this is not an image")  # unreadable
    cv2.imwrite(str(pred / "00000004.jpg"), hq["00000004"][..., ::-1])  # duplicate key with 00000004.png
    (pred / "notes.txt").write_text("hello")  # ignored
    (pred / "run.json").write_text(json.dumps({"method": "oracle"}))
    p = pair(pred, ref)
    r = p.report
    assert r.missing == ["00000000"]
    assert r.extra == ["zzz_extra.png"]
    assert len(r.size_mismatch) == 2 and "00000001.png is 8x8" in r.size_mismatch[0]
    assert "LQ size" in r.size_mismatch[0] and "scale 4" in r.size_mismatch[0]
    assert len(r.unreadable) == 1 and r.unreadable[0].startswith("00000003.png: not an image")
    assert r.duplicates == ["00000004: 00000004.jpg, 00000004.png"]
    assert r.ignored == ["notes.txt"] and p.run == {"method": "oracle"}
    assert r.problems == 6 and p.keys == ["00000005"]
    with pytest.raises(PairingError) as e:
        p.check()
    msg = str(e.value)
    for line in ("1 missing predictions: 00000000", "1 extra predictions", "2 size mismatches",
                 "1 unreadable files: 00000003.png", "1 duplicate keys: 00000004", "--allow-missing", str(pred)):
        assert line in msg, line
    p.check(allow_missing=True)  # scores what is usable
    d = r.to_dict()
    assert d["missing"] == {"count": 1, "items": ["00000000"]} and d["size_mismatch"]["count"] == 2


def test_report_shows_the_first_few_names_and_a_count(tmp_path, ref):
    (tmp_path / "pred").mkdir()
    write_png(tmp_path / "pred" / "00000005.png", hq_images(ref)["00000005"])
    p = pair(tmp_path / "pred", ref)
    text = p.report.text(show=3)
    assert "5 missing predictions: 00000000; 00000001; 00000002 ... and 2 more" in text


def test_nothing_to_score_is_an_error_even_with_allow_missing(tmp_path, ref):
    (tmp_path / "empty").mkdir()
    p = pair(tmp_path / "empty", ref)
    assert len(p.report.missing) == 6
    with pytest.raises(PairingError, match="nothing to score"):
        p.check(allow_missing=True)
    with pytest.raises(PairingError, match="no such folder"):
        pair(tmp_path / "nope", ref)


def test_corrupt_pixels_behind_a_good_header_are_found_while_decoding(tmp_path, ref):
    pred = tmp_path / "pred"
    write_oracle(pred, ref)
    data = (pred / "00000002.png").read_bytes()
    (pred / "00000002.png").write_bytes(data[: len(data) // 2])  # the header survives
    p = pair(pred, ref)
    assert p.report.problems == 0  # headers look fine
    seen = []
    keys = [k for k, _, _ in iter_decoded(p, on_problem=lambda kind, text: seen.append((kind, text)))]
    assert "00000002" not in keys and len(keys) == 5
    assert seen[0][0] == "unreadable" and "00000002.png" in seen[0][1] and "truncated" in seen[0][1].lower()
    assert p.report.unreadable == [seen[0][1]]


@pytest.mark.parametrize("ext", [".png", ".bmp", ".tif", ".tiff", ".webp", ".jpg", ".jpeg"])
def test_common_image_formats_are_read(tmp_path, ref, ext):
    pred = tmp_path / "pred"
    params = {".webp": [cv2.IMWRITE_WEBP_QUALITY, 101],  # quality > 100: lossless WebP
              ".jpg": [cv2.IMWRITE_JPEG_QUALITY, 100], ".jpeg": [cv2.IMWRITE_JPEG_QUALITY, 100]}.get(ext, [])
    pred.mkdir()
    hq = hq_images(ref)
    for k, img in hq.items():
        assert cv2.imwrite(str(pred / f"{k}{ext.upper() if ext == '.jpg' else ext}"), img[..., ::-1], params)
    p = pair(pred, ref)
    assert p.report.problems == 0, p.report.text()
    for k, a, _ in iter_decoded(p):
        if ext in (".jpg", ".jpeg"):  # lossy (chroma subsampled): as OpenCV decodes the same file
            other = cv2.imread(str(p.preds[k].path))[..., ::-1]
            assert a.shape == hq[k].shape and np.abs(a.astype(int) - other).mean() < 2
        else:
            assert np.array_equal(a, hq[k])


def write_pred_shards(folder: Path, samples: list[tuple[str, dict[str, bytes]]], per_shard: int = 3) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for s in range(0, len(samples), per_shard):
        with ShardWriter(folder / f"pred-{s // per_shard:06d}.tar") as w:
            for key, members in samples[s: s + per_shard]:
                w.write(key, members)


def test_prediction_shards(tmp_path, ref):
    hq = hq_images(ref)
    keys = sorted(hq)
    # reverse order, so the two shard streams disagree and the merge has to hold one side
    samples = [(k, {"pred.png": encode_png(hq[k]), "json": b"{}"}) for k in reversed(keys[1:])]
    samples[0][1]["png"] = encode_png(hq[samples[0][0]][::-1])  # pred.png is preferred over png
    write_pred_shards(tmp_path / "pred", samples)
    p = pair(tmp_path / "pred", ref)
    assert p.predictions_kind == "shards" and p.report.missing == [keys[0]] and p.report.problems == 1
    got = {k: a for k, a, _ in iter_decoded(p)}
    assert sorted(got) == keys[1:] and all(np.array_equal(got[k], hq[k]) for k in got)
    assert p.preds[keys[-1]].name == f"pred-000000.tar:{keys[-1]}.pred.png"


def test_prediction_shards_problems(tmp_path, ref):
    hq = hq_images(ref)
    k = sorted(hq)
    samples = [(k[0], {"png": encode_png(hq[k[0]])}),
               (k[1], {"hq.png": encode_png(hq[k[1]]), "lq.png": encode_png(hq[k[1]][:8, :8])}),  # no prediction
               (k[2], {"png": encode_png(hq[k[2]])}),
               (k[2], {"png": encode_png(hq[k[2]])}),  # the same key in the next shard
               (k[3], {"pred.png": encode_png(hq[k[3]][:16])}),
               (k[4], {"pred.png": encode_png(hq[k[4]])}),
               (k[5], {"pred.png": encode_png(hq[k[5]])})]
    write_pred_shards(tmp_path / "pred", samples)
    r = pair(tmp_path / "pred", ref).report
    assert len(r.unreadable) == 1 and "no prediction member (has hq.png, lq.png" in r.unreadable[0]
    assert r.duplicates == [f"{k[2]}: pred-000000.tar:{k[2]}.png, pred-000001.tar:{k[2]}.png"]
    assert len(r.size_mismatch) == 1 and r.missing == [] and r.problems == 3


def test_reference_folder_of_images(tmp_path, ref):
    hq = hq_images(ref)
    for k, img in hq.items():
        write_png(tmp_path / "gt" / f"img_{k}.png", img)
    reference = load_reference(tmp_path / "gt")
    assert reference.kind == "images" and not reference.has_lq and not reference.has_labels
    assert len(reference.items) == 6 and reference.items["img_00000000"].scale == 1
    assert "name and sha256" in reference.fingerprint_source
    assert load_reference(tmp_path / "gt").fingerprint == reference.fingerprint
    for k, img in hq.items():
        write_png(tmp_path / "pred" / f"img_{k}.png", img)
    p = pair(tmp_path / "pred", reference)
    assert p.report.problems == 0
    assert all(np.array_equal(a, b) for _, a, b in iter_decoded(p))
    # shard predictions against an image-folder reference
    write_pred_shards(tmp_path / "spred", [(f"img_{k}", {"png": encode_png(hq[k])}) for k in sorted(hq)])
    p = pair(tmp_path / "spred", reference)
    assert p.report.problems == 0 and len(list(iter_decoded(p))) == 6
    with pytest.raises(ReferenceError, match="LQ"):
        next(reference.iter_lq())


def test_broken_references_always_stop(tmp_path, ref):
    with pytest.raises(ReferenceError, match="no such folder"):
        load_reference(tmp_path / "missing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "shard-000000.tar").write_bytes(b"garbage" * 100)
    with pytest.raises(ReferenceError, match=r"shard-000000\.tar"):
        load_reference(tmp_path / "bad")
    (tmp_path / "imgs").mkdir()
    write_png(tmp_path / "imgs" / "a.png", synthetic_photo(16, 16, 0))
    cv2.imwrite(str(tmp_path / "imgs" / "a.jpg"), synthetic_photo(16, 16, 0))
    with pytest.raises(ReferenceError, match="duplicate keys.*a: a.jpg, a.png"):
        load_reference(tmp_path / "imgs")
    (tmp_path / "imgs" / "a.jpg").unlink()
    (tmp_path / "imgs" / "b.png").write_bytes(b"nope")
    with pytest.raises(ReferenceError, match="b.png: not an image"):
        load_reference(tmp_path / "imgs")


def test_a_stale_manifest_is_not_trusted(tmp_path, ref):
    import shutil

    copy = tmp_path / "ref"
    shutil.copytree(ref, copy)
    m = json.loads((copy / "manifest.json").read_text())
    m["content_sha256"] = "0" * 64
    (copy / "manifest.json").write_text(json.dumps(m))
    r = load_reference(copy)
    assert r.fingerprint == load_reference(ref).fingerprint and "does not match" in r.fingerprint_source


def test_batches_group_equal_sizes_and_bound_memory():
    def item(k, h, w):
        return k, np.zeros((h, w, 3), np.uint8), np.zeros((h, w, 3), np.uint8)

    items = [item(f"{i}", 8 + 8 * (i % 2), 8) for i in range(7)]
    out = list(batches(items, 2))
    assert sorted(k for b in out for k, _, _ in b) == sorted(k for k, _, _ in items)
    assert all(len({x[1].shape for x in b}) == 1 and len(b) <= 2 for b in out)
    # all different sizes: never more than max_pending images held
    items = [item(f"{i}", 8 + i, 8) for i in range(10)]
    out = list(batches(items, 4, max_pending=3))
    assert all(len(b) == 1 for b in out) and len(out) == 10
