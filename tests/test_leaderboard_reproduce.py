"""``leaderboard reproduce``: every table setting has a plan; tiny end-to-end runs fill the reproduction view."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import random_metric_weights, synthetic_photo, write_png
from pirs.degrade.build import BuildConfig, build
from pirs.leaderboard.cli import main
from pirs.leaderboard.reproduce import (
    PAPER_METHOD,
    ReproduceConfig,
    ReproduceError,
    find_setting,
    format_plan,
    plan,
    run,
    table_settings,
)
from pirs.models.train import TrainConfig, train

PAPER_TO_METHOD = {v: k for k, v in PAPER_METHOD.items()}


def sots_outdoor(root: Path, n: int = 3) -> Path:
    """A stand-in for RESIDE SOTS outdoor: ``hazy/NNNN_A_B.jpg`` beside ``gt/NNNN.png``, 40x56 px."""
    import cv2

    for i in range(1, n + 1):
        clear = synthetic_photo(40, 56, i)
        write_png(root / "gt" / f"{i:04d}.png", clear)
        hazy = (clear * 0.6 + 90).astype("uint8")
        (root / "hazy").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "hazy" / f"{i:04d}_0.8_0.2.jpg"), hazy[..., ::-1])
    return root


def test_settings_cover_every_paper_table_row() -> None:
    from pirs.leaderboard.papers import load_paper_tables

    df = load_paper_tables()
    keys = {(s.paper, s.table, s.test_set) for s in table_settings()}
    assert keys == set(zip(df["paper"], df["table"], df["test_set"], strict=True))
    rtts = find_setting("diff-restorer:table-i:rtts")
    assert [m for m, _ in rtts.metrics] == ["niqe", "musiq", "clipiqa"]  # FID/LPIPS/DISTS are "-" on RTTS


def test_settings_are_found_by_key_paper_and_test_set_or_refused_with_a_hint() -> None:
    assert find_setting("diffrestorer-haze").key == "diff-restorer:table-i:diffrestorer-haze"
    assert find_setting("SPIRE:mscoco-val3000-realesrgan").table == "Table 1"
    with pytest.raises(ReproduceError, match="several tables"):
        find_setting("div2k-val")  # XPSR and DPIR both print it
    with pytest.raises(ReproduceError, match="Did you mean"):
        find_setting("diff-restorer:table-i:diffrestorer-hazy")


def test_a_dry_run_plans_every_table_setting_without_loading_anything(tmp_path, capsys) -> None:
    """One plan per setting with the paper's own method: test set, counts, protocol, metrics, weights, estimate."""
    for s in table_settings():
        method = PAPER_TO_METHOD[s.paper]
        p = plan(ReproduceConfig(setting=s.key, method=method, work=str(tmp_path / s.test_set),
                                 weights_dir=str(tmp_path / "none")))
        text = format_plan(p)
        assert p["test_set"]["id"] == s.test_set and p["test_set"]["expected"] > 0
        assert [m["metric"] for m in p["metrics"]] == [m for m, _ in s.metrics]
        assert p["protocol"]["steps"] >= 1 and p["protocol"]["sampler"]
        assert p["estimate"]["gpu_seconds"] > 0 and p["estimate"]["memory_gb"] > p["estimate"]["weights_gb"] > 0
        for line in ("setting", "test set", "protocol", "metrics", "weights", "estimate", "outputs"):
            assert f"\n{line}" in "\n" + text, (s.key, line)
        assert not (tmp_path / s.test_set).exists()  # a plan writes nothing
    code = ("import sys; from pirs.leaderboard.cli import main; "
            f"rc = main(['reproduce', 'spire:table-1:mscoco-val3000-parameterized', '--method', 'spire', "
            f"'--work', {str(tmp_path / 'w')!r}, '--dry-run']); "
            "print('pyiqa loaded' if 'pyiqa' in sys.modules else 'no metric network', rc)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert "ddim 50 steps" in r.stdout and "fid (lower)" in r.stdout, r.stderr[-1000:]
    assert r.stdout.strip().endswith("no metric network 0")  # a plan builds no metric (nor any weights)
    assert main(["reproduce", "--list"]) == 0
    assert "diff-restorer:table-i:diffrestorer-haze" in capsys.readouterr().out


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return random_metric_weights(tmp_path_factory.mktemp("weights"))


def _train(method: str, root: Path, photos: Path) -> Path:
    shards = root / f"{method}-shards"
    build(BuildConfig(pipeline="universal", out=str(shards), input=str(photos), num_samples=2, crop_size=32,
                      shard_size=2, progress=False))
    out = root / f"{method}-run"
    train(TrainConfig(method=method, data=str(shards), out=str(out), max_steps=1, batch_size=1, progress=False))
    return out


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    for i in range(3):
        write_png(root / f"p{i}.png", synthetic_photo(40, 48, i))
    return root


def test_diffrestorer_table_i_haze_end_to_end_and_resumed(tmp_path, weights, photos) -> None:
    ckpt = _train("diffrestorer", tmp_path, photos)
    source = sots_outdoor(tmp_path / "SOTS")
    logs: list[str] = []
    cfg = ReproduceConfig(setting="diff-restorer:table-i:diffrestorer-haze", method="diffrestorer",
                          checkpoint=str(ckpt), source=str(source), work=str(tmp_path / "work"), limit=2,
                          weights_dir=str(weights), metrics=["fid", "lpips", "musiq"], device="cpu",
                          protocol={"steps": 2}, progress=False)
    out = run(cfg, log=logs.append)
    rows = out["rows"]
    assert {r["metric"] for r in rows} == {"fid", "lpips", "musiq"}
    assert {r["method"] for r in rows} == {"Diff-Restorer"}  # ours beside the paper's Diff-Restorer row
    for r in rows:  # better or worse by the metric's direction
        assert r["difference"] == pytest.approx(r["our_value"] - r["paper_value"])
        lower_is_better = r["direction"] == "lower"
        assert r["closer"] == ("better" if (r["difference"] < 0) == lower_is_better else "worse")
    results = json.loads((tmp_path / "work" / "results" / "diffrestorer.json").read_text())
    assert results["test_set"]["name"] == "diffrestorer-haze" and results["test_set"]["partial"]
    run_json = json.loads((tmp_path / "work" / "predictions" / "diffrestorer" / "run.json").read_text())
    assert run_json["steps"] == 2 and run_json["sampler"] == "unipc"
    view = (tmp_path / "work" / "reproduction.md").read_text()
    assert "| fid ↓ | Diff-Restorer |" in view and "| musiq ↑ |" in view
    assert (tmp_path / "work" / "leaderboard" / "index.html").is_file()
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "work").rglob("*") if p.is_file()
              and "leaderboard" not in p.parts and p.suffix != ".md" and p.name != "reproduction.json"}
    again: list[str] = []
    run(cfg, log=again.append)
    assert any(m.startswith("testset     reuse") for m in again)
    assert any(m.startswith("score       reuse") for m in again)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # test set, predictions and scores kept


def test_spire_table_1_end_to_end(tmp_path, weights, photos) -> None:
    ckpt = _train("spire", tmp_path, photos)
    coco = tmp_path / "coco"
    for i in range(3):
        write_png(coco / f"{i:012d}.png", synthetic_photo(520, 530, i))
    rc = main(["reproduce", "spire:table-1:mscoco-val3000-parameterized", "--method", "spire", "--checkpoint",
               str(ckpt), "--source", str(coco), "--work", str(tmp_path / "w"), "--limit", "2", "--metrics",
               "psnr,ssim,lpips", "--weights-dir", str(weights), "--steps", "1", "--tile-size", "32", "--quiet"])
    assert rc == 0
    view = json.loads((tmp_path / "w" / "reproduction.json").read_text())
    metrics = {(r["metric"], r["method"], r["prompts"]) for r in view["rows"]}
    assert ("psnr", "SPIRE", "sem=yes;res=yes") in metrics and ("lpips", "SPIRE", "sem=yes;res=yes") in metrics
    preds = sorted((tmp_path / "w" / "predictions" / "spire").glob("*.png"))
    from PIL import Image

    assert len(preds) == 2 and {Image.open(p).size for p in preds} == {(512, 512)}  # native 512 px crops


def test_a_baseline_reproduction_and_the_errors(tmp_path, weights, capsys) -> None:
    source = sots_outdoor(tmp_path / "SOTS")
    rc = main(["reproduce", "diffrestorer-haze", "--method", "bicubic", "--source", str(source), "--work",
               str(tmp_path / "w"), "--metrics", "lpips", "--weights-dir", str(weights), "--limit", "2", "--quiet"])
    assert rc == 0
    assert "no paper row matched" in capsys.readouterr().out  # Table I has no bicubic row
    assert main(["reproduce", "diffrestorer-haze", "--method", "spire", "--work", str(tmp_path / "x")]) == 2
    assert "needs --checkpoint" in capsys.readouterr().err
    assert main(["reproduce", "diffrestorer-haze", "--method", "bicubic", "--work", str(tmp_path / "y")]) == 2
    assert "give --source" in capsys.readouterr().err
    assert main(["reproduce", "diffrestorer-haze", "--method", "bicubic", "--work", str(tmp_path / "w"),
                 "--metrics", "psnr"]) == 2
    assert "not in Diff-Restorer Table I" in capsys.readouterr().err
