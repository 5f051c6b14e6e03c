"""Evaluation results: baselines, per-label breakdowns, the results schema, compare, --allow-missing."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import quick_config, synthetic_photo, write_png
from pirs.benchmark.baselines import restore, write_baseline
from pirs.benchmark.evaluate import EvalConfig, evaluate
from pirs.benchmark.pairing import PairingError, ReferenceError
from pirs.benchmark.results import (
    RESULTS_SCHEMA_VERSION,
    ResultsError,
    compare,
    decode_number,
    encode_number,
    format_compare,
    read_table,
    validate_results,
)
from pirs.degrade.build import build, decode_png
from pirs.degrade.shards import iter_records, shard_paths

# Area downsampling by 4 and nothing else: a test set where interpolation must beat pixel replication.
DOWN4 = """name: down4
version: "1.0.0"
description: area downsampling by 4, nothing else
source: pirs tests
scale: 4
stages:
  - {op: resize, id: final, target: true, modes: [area]}
"""
# No degradation at all: LQ == HQ.
NOOP = DOWN4.replace("down4", "noop").replace("scale: 4", "scale: 1").replace(
    "area downsampling by 4, nothing else", "no degradation")


def _recipe(folder: Path, text: str, name: str) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.yaml").write_text(text)
    return str(folder / f"{name}.yaml")


@pytest.fixture(scope="module")
def down4(tmp_path_factory) -> Path:
    """Six crops of the bundled photographs, LQ = area-downsampled by 4 (no upsampling)."""
    root = tmp_path_factory.mktemp("down4")
    out = root / "shards"
    build(quick_config(out, None, pipeline=_recipe(root, DOWN4, "down4"), num_samples=6, crop_size=32))
    return out


@pytest.fixture(scope="module")
def noop(tmp_path_factory, photos_dir) -> Path:
    root = tmp_path_factory.mktemp("noop")
    out = root / "shards"
    build(quick_config(out, photos_dir, pipeline=_recipe(root, NOOP, "noop"), num_samples=3, crop_size=32))
    return out


@pytest.fixture(scope="module")
def param(tmp_path_factory, photos_dir) -> Path:
    """SPIRE's parameterized recipe: each record has its own set of labels (blur, downsample, noise, jpeg)."""
    out = tmp_path_factory.mktemp("param") / "shards"
    build(quick_config(out, photos_dir, pipeline="parameterized", num_samples=12, crop_size=32))
    return out


def records(shards: Path) -> dict[str, tuple[dict, dict]]:
    return {k: (rec, m) for s in shard_paths(shards) for k, rec, m in iter_records(s)}


def run_eval(pred: Path, ref: Path, out: Path, metrics: str = "psnr,ssim", **kw) -> dict:
    return evaluate(EvalConfig(str(pred), str(ref), metrics, str(out), progress=False, cache_dir=None, **kw))


# ---------------------------------------------------------------------------------------------- baselines


def test_restore_definitions():
    lq = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    up = restore("identity", lq, (8, 12))
    assert up.shape == (8, 12, 3) and np.array_equal(up[::4, ::4], lq)
    assert np.array_equal(up[:4, :4], np.broadcast_to(lq[0, 0], (4, 4, 3)))  # each pixel repeated 4 x 4
    odd = restore("identity", lq, (5, 7))  # non-integer ratio: nearest neighbour, still only LQ values
    assert odd.shape == (5, 7, 3) and set(map(tuple, odd.reshape(-1, 3))) <= set(map(tuple, lq.reshape(-1, 3)))
    for m in ("identity", "bicubic", "lanczos"):  # LQ already at the HQ size: as-is
        assert np.array_equal(restore(m, lq, (2, 3)), lq)
    assert restore("bicubic", lq, (8, 12)).shape == restore("lanczos", lq, (8, 12)).shape == (8, 12, 3)
    with pytest.raises(ValueError, match="unknown baseline"):
        restore("nearest", lq, (8, 12))


def test_identity_on_a_reference_whose_lq_is_its_hq_gives_80_db(tmp_path, noop):
    """pyiqa's PSNR is capped, not infinite: 10 log10(1 / (0 + 1e-8)) = 80 dB; BasicSR's (psnr-ycbcr) is inf, and
    so is its mean (written as "inf", without an interval); SSIM is 1."""
    write_baseline("identity", noop, tmp_path / "pred", progress=False)
    recs = records(noop)
    for k, (_, m) in recs.items():
        assert m["hq.png"] == m["lq.png"]
        assert np.array_equal(decode_png((tmp_path / "pred" / f"{k}.png").read_bytes()), decode_png(m["hq.png"]))
    s = run_eval(tmp_path / "pred", noop, tmp_path / "r.json", "psnr,psnr-ycbcr,ssim")
    assert s["metrics"]["psnr"]["value"] == pytest.approx(80.0)
    assert s["metrics"]["psnr-ycbcr"]["value"] == "inf" and s["metrics"]["psnr-ycbcr"]["ci95"] is None
    assert s["metrics"]["psnr"]["ci95"] == pytest.approx([80.0, 80.0])
    assert s["metrics"]["ssim"]["value"] == pytest.approx(1.0)
    table = read_table(tmp_path / "r.csv")
    assert np.allclose(table["psnr"], 80.0) and "80 dB" in s["conventions"]["psnr"]["identical_images"]
    assert s["method"]["name"] == "identity" and s["method"]["run"]["needs_weights"] is False
    assert s["breakdowns"] == {"by_label": {}, "by_combination": {}}  # no record carries a label


def test_bicubic_and_lanczos_beat_identity_without_upsampled_lq(tmp_path, down4):
    got = {}
    for m in ("identity", "bicubic", "lanczos"):
        write_baseline(m, down4, tmp_path / m, progress=False)
        run = json.loads((tmp_path / m / "run.json").read_text())
        assert run["method"] == m and run["needs_weights"] is False and run["baseline"] is True
        got[m] = run_eval(tmp_path / m, down4, tmp_path / f"{m}.json")
        assert got[m]["method"]["name"] == m and got[m]["count"] == 6
    for m in ("bicubic", "lanczos"):
        for metric in ("psnr", "ssim"):
            assert got[m]["metrics"][metric]["value"] > got["identity"]["metrics"][metric]["value"], (m, metric)
    ident = read_table(tmp_path / "identity.csv").set_index("key")
    bic = read_table(tmp_path / "bicubic.csv").set_index("key")
    assert (bic["psnr"] > ident["psnr"]).sum() >= 5


def test_baseline_refusals(tmp_path, down4):
    write_baseline("bicubic", down4, tmp_path / "pred", progress=False)
    with pytest.raises(FileExistsError, match="--overwrite"):
        write_baseline("lanczos", down4, tmp_path / "pred", progress=False)
    write_baseline("lanczos", down4, tmp_path / "pred", overwrite=True, progress=False)
    assert json.loads((tmp_path / "pred" / "run.json").read_text())["method"] == "lanczos"
    write_png(tmp_path / "imgs" / "a.png", synthetic_photo(16, 16, 1))
    with pytest.raises(ReferenceError, match="LQ"):
        write_baseline("identity", tmp_path / "imgs", tmp_path / "p2", progress=False)


# ---------------------------------------------------------------------------------------------- breakdowns


def test_breakdowns_by_label_and_combination(tmp_path, param):
    write_baseline("identity", param, tmp_path / "pred", progress=False)  # the LQ itself (scale 1)
    s = run_eval(tmp_path / "pred", param, tmp_path / "r.json", "psnr,ssimc")
    labels = {k: rec["degradations"] for k, (rec, _) in records(param).items()}
    assert len({tuple(v) for v in labels.values()}) >= 4, "the reference needs varied labels"
    table = read_table(tmp_path / "r.csv").set_index("key")
    assert list(table.columns) == ["prediction", "height", "width", "psnr", "ssimc", "labels"]
    assert all(table.loc[k, "labels"] == "+".join(v) or (not v and pd.isna(table.loc[k, "labels"]))
               for k, v in labels.items())
    by_label = s["breakdowns"]["by_label"]
    expected_labels = {lab for v in labels.values() for lab in v} | ({"none"} if any(not v for v in labels.values())
                                                                     else set())
    assert set(by_label) == expected_labels
    for lab, e in by_label.items():
        keys = [k for k, v in labels.items() if (lab in v) or (lab == "none" and not v)]
        assert e["count"] == len(keys)
        for metric in ("psnr", "ssimc"):
            assert decode_number(e["metrics"][metric]) == pytest.approx(table.loc[keys, metric].mean())
    combos = s["breakdowns"]["by_combination"]
    multi = {"+".join(v) for v in labels.values() if len(v) > 1}
    assert set(combos) == multi and multi
    for combo, e in combos.items():
        keys = [k for k, v in labels.items() if "+".join(v) == combo]
        assert e["count"] == len(keys)
        assert e["metrics"]["psnr"] == pytest.approx(table.loc[keys, "psnr"].mean())
    # the overall mean is the mean over images
    assert s["metrics"]["psnr"]["value"] == pytest.approx(table["psnr"].mean())
    validate_results(tmp_path / "r.json")


# ---------------------------------------------------------------------------------------------- pairing in results


def test_allow_missing_is_recorded_and_otherwise_nothing_is_written(tmp_path, down4):
    write_baseline("bicubic", down4, tmp_path / "pred", progress=False)
    keys = sorted(records(down4))
    (tmp_path / "pred" / f"{keys[2]}.png").unlink()
    with pytest.raises(PairingError, match=f"1 missing predictions: {keys[2]}"):
        run_eval(tmp_path / "pred", down4, tmp_path / "r.json")
    assert not (tmp_path / "r.json").exists() and not (tmp_path / "r.csv").exists()
    s = run_eval(tmp_path / "pred", down4, tmp_path / "r.json", allow_missing=True)
    pr = s["pairing"]
    assert pr["allow_missing"] is True and pr["missing"] == {"count": 1, "items": [keys[2]]}
    assert pr["expected"] == 6 and pr["scored"] == 5 and pr["problems"] == 1 and s["count"] == 5
    assert s["metrics"]["psnr"]["count"] == 5
    assert keys[2] not in set(read_table(tmp_path / "r.csv")["key"])
    validate_results(tmp_path / "r.json")


def test_corrupt_pixels_stop_the_run_after_reporting_them_all(tmp_path, down4):
    write_baseline("bicubic", down4, tmp_path / "pred", progress=False)
    keys = sorted(records(down4))
    for k in keys[1:3]:
        data = (tmp_path / "pred" / f"{k}.png").read_bytes()
        (tmp_path / "pred" / f"{k}.png").write_bytes(data[: len(data) - 40])  # header intact, IEND gone
    with pytest.raises(PairingError) as e:
        run_eval(tmp_path / "pred", down4, tmp_path / "r.json", batch_size=2)
    assert f"2 unreadable files: {keys[1]}.png" in str(e.value) and f"{keys[2]}.png" in str(e.value)
    assert not (tmp_path / "r.json").exists()
    s = run_eval(tmp_path / "pred", down4, tmp_path / "r.json", allow_missing=True)
    assert s["pairing"]["unreadable"]["count"] == 2 and s["count"] == 4


def test_run_json_method_settings_and_provenance(tmp_path, down4):
    write_baseline("bicubic", down4, tmp_path / "pred", progress=False)
    run = json.loads((tmp_path / "pred" / "run.json").read_text())
    run.update(method="my-method", checkpoint="ckpt/last.pt", prompts="Remove all degradation")
    (tmp_path / "pred" / "run.json").write_text(json.dumps(run))
    s = run_eval(tmp_path / "pred", down4, tmp_path / "out" / "r.json", crop_border=4, batch_size=4,
                 per_image=str(tmp_path / "tables" / "r.parquet"))
    assert s["method"]["name"] == "my-method" and s["method"]["run"]["checkpoint"] == "ckpt/last.pt"
    assert s["settings"]["crop_border"] == 4 and s["conventions"]["psnr"]["crop_border"] == 4
    assert s["settings"]["options"]["crop_border"] == 4 and s["settings"]["batch_size"] == 4
    assert s["per_image"] == "../tables/r.parquet" and len(read_table(tmp_path / "tables" / "r.parquet")) == 6
    manifest = json.loads((down4 / "manifest.json").read_text())
    assert s["test_set"]["fingerprint"] == manifest["content_sha256"]
    assert s["test_set"]["recipe"]["name"] == "down4" and s["test_set"]["scales"] == [4]
    assert len(s["predictions"]["fingerprint"]) == 64 and s["predictions"]["kind"] == "images"
    v = s["environment"]["versions"]
    assert v["pirs"] and v["torch"] and v["pyiqa"] and v["numpy"]
    git = s["environment"]["git"]
    assert git is None or len(git["commit"]) == 40
    assert s["results_schema_version"] == RESULTS_SCHEMA_VERSION and s["date"].endswith("+00:00")
    s2 = run_eval(tmp_path / "pred", down4, tmp_path / "r2.json", method="renamed")
    assert s2["method"]["name"] == "renamed" and s2["predictions"]["fingerprint"] == s["predictions"]["fingerprint"]


# ---------------------------------------------------------------------------------------------- schema


@pytest.fixture(scope="module")
def good(tmp_path_factory, down4) -> Path:
    root = tmp_path_factory.mktemp("good")
    write_baseline("bicubic", down4, root / "pred", progress=False)
    run_eval(root / "pred", down4, root / "good.json")
    return root / "good.json"


def _broken(tmp_path: Path, good: Path, change) -> Path:
    d = json.loads(good.read_text())
    change(d)
    p = tmp_path / "broken.json"
    p.write_text(json.dumps(d))
    return p


@pytest.mark.parametrize("change, field", [
    (lambda d: d["metrics"]["psnr"].pop("direction"), "metrics.psnr.direction"),
    (lambda d: d["metrics"]["psnr"].update(direction="lower"), "metrics.psnr.direction"),
    (lambda d: d["metrics"]["ssim"].update(value="high"), "metrics.ssim.value"),
    (lambda d: d.update(count="six"), "count"),
    (lambda d: d["test_set"].pop("fingerprint"), "test_set.fingerprint"),
    (lambda d: d["conventions"].pop("ssim"), "conventions.ssim"),
    (lambda d: d.update(results_schema_version="2.0"), "results_schema_version"),
    (lambda d: d["pairing"].update(problems=3), "pairing.problems"),
    (lambda d: d["pairing"]["missing"].update(count=None), "pairing.missing.count"),
    (lambda d: d["environment"]["versions"].update(torch=2), "environment.versions.torch"),
    (lambda d: d.update(date="yesterday"), "date"),
    (lambda d: d.pop("breakdowns"), "breakdowns"),
    (lambda d: d["metrics"].clear(), "metrics"),
])
def test_validate_results_names_the_file_and_field(tmp_path, good, change, field):
    validate_results(good)
    p = _broken(tmp_path, good, change)
    with pytest.raises(ResultsError) as e:
        validate_results(p)
    assert str(p) in str(e.value) and f"'{field}'" in str(e.value)


def test_validate_results_unreadable_files(tmp_path):
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(ResultsError, match=r"x\.json: not valid JSON"):
        validate_results(tmp_path / "x.json")
    with pytest.raises(ResultsError, match="cannot read"):
        validate_results(tmp_path / "missing.json")
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(ResultsError, match="JSON object"):
        validate_results(tmp_path / "list.json")


def test_non_finite_values_round_trip(tmp_path, good):
    assert [encode_number(x) for x in (math.inf, -math.inf, math.nan, 1.5)] == ["inf", "-inf", "nan", 1.5]
    assert decode_number("inf") == math.inf and math.isnan(decode_number("nan")) and decode_number(2) == 2.0
    p = _broken(tmp_path, good, lambda d: d["metrics"]["psnr"].update(value="inf"))
    assert validate_results(p)["metrics"]["psnr"]["value"] == "inf"


# ---------------------------------------------------------------------------------------------- compare


def test_compare_uses_each_metrics_direction(good):
    a = json.loads(good.read_text())
    b = copy.deepcopy(a)
    b["metrics"]["psnr"]["value"] = a["metrics"]["psnr"]["value"] + 1.0
    b["metrics"]["ssim"]["value"] = a["metrics"]["ssim"]["value"] - 0.1
    lower = {"value": 0.30, "kind": "full-reference", "direction": "lower", "lower_better": True, "count": 6,
             "per_image": True}
    a["metrics"]["lpips"], b["metrics"]["lpips"] = dict(lower), dict(lower, value=0.25)
    a["conventions"]["lpips"], b["conventions"]["lpips"] = {"checkpoint": "alex"}, {"checkpoint": "vgg"}
    rows = {r["metric"]: r for r in compare(a, b)}
    assert rows["psnr"]["better"] == "b" and rows["psnr"]["diff"] == pytest.approx(1.0)
    assert rows["ssim"]["better"] == "a" and rows["ssim"]["diff"] == pytest.approx(-0.1)
    assert rows["lpips"]["better"] == "b" and rows["lpips"]["diff"] == pytest.approx(-0.05)
    assert not rows["lpips"]["same_convention"] and rows["psnr"]["same_convention"]
    b["metrics"]["psnr"]["value"] = "inf"
    assert {r["metric"]: r for r in compare(a, b)}["psnr"]["better"] == "b"
    assert {r["metric"]: r for r in compare(b, b)}["psnr"]["better"] == "="
    text = format_compare(a, b, "x.json", "y.json")
    assert "a = x.json: bicubic on shards" in text and "b - a" in text
    assert "lpips *" in text and "conventions differ" in text
