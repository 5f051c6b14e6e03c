"""Standard test sets: every file validates, names real metrics, and builds from a tiny stand-in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_ingest import make_tree

from conftest import synthetic_photo, write_png
from pirs.benchmark.registry import REGISTRY as METRICS
from pirs.degrade.cli import main
from pirs.degrade.layouts import LAYOUTS
from pirs.degrade.recipe import load_recipe
from pirs.degrade.shards import iter_records, shard_paths
from pirs.degrade.testsets import TestsetError, build_testset, list_testsets, load_testset

NAMES = list_testsets()
REQUIRED = {"coco-val-parameterized", "coco-val-realesrgan", "div2k-val", "realsr", "realphoto60", "dr-noise",
            "dr-jpeg", "dr-low-light", "dr-haze", "dr-rain", "dr-raindrop", "dr-snow", "dr-blur", "dr-noise-blur",
            "dr-snow-noise", "dr-raindrop-noise-blur", "dr-jpeg-noise-blur"}


def test_every_standard_test_set_is_there() -> None:
    assert REQUIRED <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_file_validates_and_names_real_things(name: str) -> None:
    ts = load_testset(name)
    assert ts.source.obtain.startswith("http") or "http" in ts.source.obtain
    assert ts.source.expected >= 1 and ts.citation and ts.description
    for m in ts.metrics:
        assert m["name"] in METRICS, m["name"]
        assert m["better"] == ("lower" if METRICS[m["name"]].lower_better else "higher"), m["name"]
    if ts.kind == "build":
        recipe = load_recipe(ts.params["recipe"])
        assert ts.params["crop_size"] % (ts.params.get("scale") or recipe.scale) == 0
    else:
        assert ts.params["layout"] in LAYOUTS
        if ts.params.get("then"):
            assert load_recipe(ts.params["then"]).scales() == {1}
    assert "seed" in ts.params and "scale" in ts.params


def test_bad_files_are_rejected(tmp_path: Path) -> None:
    good = Path(load_testset("realsr").path).read_text()
    bad = tmp_path / "realsr.yaml"
    bad.write_text(good.replace("kind: ingest", "kind: ingest\ncolour: red"))
    with pytest.raises(TestsetError, match="unknown keys"):
        load_testset(str(bad))
    bad.write_text(good.replace("better: lower", "better: down", 1))
    with pytest.raises(TestsetError, match="higher' or 'lower"):
        load_testset(str(bad))
    with pytest.raises(TestsetError, match="Did you mean 'realsr'"):
        load_testset("realsrr")


def _stand_in(name: str, root: Path) -> Path:
    """A tiny source in the test set's layout (a few photos for a build, a fake tree for an ingest)."""
    ts = load_testset(name)
    if ts.kind == "build":
        for i in range(3):
            write_png(root / f"img_{i}.png", synthetic_photo(80, 72, i))
    else:
        make_tree(ts.params["layout"], root)
    return root


@pytest.mark.parametrize("name", NAMES)
def test_builds_from_a_stand_in(tmp_path: Path, name: str) -> None:
    ts = load_testset(name)
    src = _stand_in(name, tmp_path / "src")
    if ts.kind == "build":  # the stand-in's photos are smaller than the real crops
        text = Path(ts.path).read_text().replace(f"crop_size: {ts.params['crop_size']}", "crop_size: 64")
        local = tmp_path / f"{name}.yaml"
        local.write_text(text)
        ts = load_testset(str(local))
    m = build_testset(ts, str(src), str(tmp_path / "out"), progress=False, allow_partial=True, limit=4)
    assert m["samples"] >= 1, (tmp_path / "out" / "rejects.jsonl").read_text()
    recs = [rec for s in shard_paths(tmp_path / "out") for _, rec, _ in iter_records(s)]
    assert recs and all(rec["degradations"] or ts.params.get("layout") == "folder" for rec in recs)
    if ts.kind == "ingest" and ts.params.get("then"):
        then_labels = load_recipe(ts.params["then"])
        assert all(len(rec["degradations"]) >= 2 for rec in recs), then_labels.name


def test_counts_are_checked_and_missing_sources_explained(tmp_path: Path, capsys) -> None:
    out = str(tmp_path / "out")
    assert main(["testset", "dr-low-light", "--source", str(tmp_path / "nope"), "--out", out]) == 2
    err = capsys.readouterr().err
    assert "source folder" in err and "LOL (eval15): 15 pairs" in err and "daooshee" in err
    src = tmp_path / "lol"
    make_tree("lol", src)  # one eval15 pair, 15 expected
    assert main(["testset", "dr-low-light", "--source", str(src), "--out", out, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "found 1 of the 15 expected pairs" in err and "eval15/low" in err
    assert main(["testset", "dr-low-light", "--source", str(src), "--out", out, "--quiet", "--allow-partial"]) == 0
    assert "not the published test set" in capsys.readouterr().out


def test_full_count_build_prints_a_stable_fingerprint(tmp_path: Path, capsys) -> None:
    src = tmp_path / "lol" / "eval15"
    for i in range(15):
        write_png(src / "low" / f"{i}.png", synthetic_photo(16, 16, i) // 8)
        write_png(src / "high" / f"{i}.png", synthetic_photo(16, 16, i))
    fps = []
    for k in range(2):
        assert main(["testset", "dr-low-light", "--source", str(tmp_path / "lol"), "--out",
                     str(tmp_path / f"o{k}"), "--quiet"]) == 0
        out = capsys.readouterr().out
        fps.append(next(line.split()[1] for line in out.splitlines() if line.startswith("fingerprint")))
        assert "none yet" in out
    assert fps[0] == fps[1] == json.loads((tmp_path / "o0" / "manifest.json").read_text())["content_sha256"]
    # a published fingerprint that differs is a non-zero exit
    text = Path(load_testset("dr-low-light").path).read_text().replace("fingerprint: null", f"fingerprint: {'ab' * 32}")
    (tmp_path / "dr-low-light.yaml").write_text(text)
    assert main(["testset", str(tmp_path / "dr-low-light.yaml"), "--source", str(tmp_path / "lol"), "--out",
                 str(tmp_path / "o0"), "--quiet"]) == 1
    assert "not the same test set" in capsys.readouterr().err
