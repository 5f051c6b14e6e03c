"""Unpaired test sets (real photos without ground truth): no-reference metrics only, clear refusals otherwise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import synthetic_photo, write_png
from pirs.benchmark.baselines import write_baseline
from pirs.benchmark.evaluate import EvalConfig, evaluate
from pirs.benchmark.images import decode_image, to_batch
from pirs.benchmark.pairing import PairingError, load_reference, pair
from pirs.benchmark.scorers import build_scorers
from pirs.degrade.ingest import IngestConfig, ingest


@pytest.fixture(scope="module")
def real_photos(tmp_path_factory) -> Path:
    """Three 'real photos' of two sizes ingested as an unpaired set (no hq.png)."""
    root = tmp_path_factory.mktemp("real")
    for i, (h, w) in enumerate([(64, 80), (64, 80), (72, 64)]):
        write_png(root / "photos" / f"photo_{i}.png", synthetic_photo(h, w, i))
    out = root / "set"
    ingest(IngestConfig(layout="realphoto60", input=str(root / "photos"), out=str(out), progress=False))
    return out


@pytest.fixture(scope="module")
def musiq_weights(tmp_path_factory) -> Path:
    """MUSIQ with random weights under its real checkpoint name (nothing is downloaded)."""
    from pyiqa.archs.musiq_arch import MUSIQ

    root = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    path = root / "torch/hub/pyiqa/musiq_koniq_ckpt-e95806b9.pth"
    path.parent.mkdir(parents=True)
    torch.save(MUSIQ(pretrained=False).state_dict(), path)
    return root


def test_an_unpaired_reference_loads_without_hq(real_photos):
    ref = load_reference(real_photos)
    assert len(ref.items) == 3 and sorted(ref.unpaired) == sorted(ref.items)
    assert all(it.hq_size is None and it.lq_size for it in ref.items.values())


def test_identity_baseline_has_the_lq_sizes_and_pairs_with_any_size(real_photos, tmp_path):
    preds = write_baseline("identity", real_photos, tmp_path / "identity", progress=False)
    ref = load_reference(real_photos)
    sizes = {k: decode_image((preds / f"{k}.png").read_bytes()).shape[:2] for k in ref.items}
    assert sizes == {k: it.lq_size for k, it in ref.items.items()}
    # a method may output any size for a photo without ground truth: no size problem is reported
    key = sorted(ref.items)[0]
    write_png(preds / f"{key}.png", synthetic_photo(40, 48, 7))
    p = pair(preds, ref)
    assert p.report.problems == 0 and len(p.preds) == 3


def test_no_reference_metric_on_an_unpaired_set_equals_direct_scoring(real_photos, musiq_weights, tmp_path):
    preds = write_baseline("identity", real_photos, tmp_path / "identity", progress=False)
    out = tmp_path / "r.json"
    summary = evaluate(EvalConfig(str(preds), str(real_photos), "musiq", str(out), device="cpu", progress=False,
                                  cache_dir=None, weights_dir=str(musiq_weights), batch_size=2))
    assert summary["metrics"]["musiq"]["count"] == 3 and json.loads(out.read_text())["metrics"] == summary["metrics"]
    (musiq,) = build_scorers(["musiq"], weights_dir=str(musiq_weights))
    rows = {r["key"]: r["musiq"] for r in _csv(out.with_suffix(".csv"))}
    for key, value in rows.items():
        img = decode_image((preds / f"{key}.png").read_bytes())
        assert float(musiq.score(to_batch([img], "cpu"), None)[0]) == pytest.approx(value, abs=1e-5)


def _csv(path: Path) -> list[dict]:
    import pandas as pd

    return pd.read_csv(path, dtype={"key": str}).to_dict("records")


@pytest.mark.parametrize("metrics", ["psnr", "musiq,lpips", "fid"])
def test_metrics_that_need_a_reference_are_refused_naming_the_alternatives(real_photos, tmp_path, metrics):
    preds = write_baseline("identity", real_photos, tmp_path / "identity", progress=False)
    with pytest.raises(PairingError, match=r"3 of 3 records have no HQ image.*cannot be computed.*musiq"):
        evaluate(EvalConfig(str(preds), str(real_photos), metrics, str(tmp_path / "r.json"), device="cpu",
                            progress=False, cache_dir=None))
    assert not (tmp_path / "r.json").exists()


def test_every_unpaired_test_set_lists_only_metrics_that_need_no_reference():
    from pirs.benchmark import registry
    from pirs.degrade.layouts import LAYOUTS
    from pirs.degrade.testsets import list_testsets, load_testset

    unpaired = [t for t in map(load_testset, list_testsets())
                if t.kind == "ingest" and not LAYOUTS[t.params["layout"]].paired]
    assert {t.name for t in unpaired} >= {"realphoto60", "rtts"}
    assert "realsnow" not in {t.name for t in unpaired}  # RealSnow has ground truth (Diff-Restorer Table I)
    for t in unpaired:
        kinds = {m["name"]: registry.get(m["name"]).kind for m in t.metrics}
        assert set(kinds.values()) <= {registry.NR, registry.TEXT}, (t.name, kinds)
