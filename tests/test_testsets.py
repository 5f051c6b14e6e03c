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
REQUIRED = {"mscoco-val3000-parameterized", "mscoco-val3000-realesrgan", "div2k-val", "realsr", "realphoto60",
            "diffrestorer-noise", "diffrestorer-jpeg", "diffrestorer-low-light", "diffrestorer-haze",
            "diffrestorer-rain", "diffrestorer-raindrop", "diffrestorer-snow", "diffrestorer-blur",
            "diffrestorer-mix2-blur-noise", "diffrestorer-mix2-snow-noise", "diffrestorer-mix3-blur-noise-raindrop",
            "diffrestorer-mix3-blur-noise-jpeg", "rtts", "realsnow", "drealsr"}
# the names the sets had before the paper tables' ids became their ids: still accepted
OLD_NAMES = {"coco-val-parameterized": "mscoco-val3000-parameterized",
             "coco-val-realesrgan": "mscoco-val3000-realesrgan", "dr-noise": "diffrestorer-noise",
             "dr-jpeg": "diffrestorer-jpeg", "dr-low-light": "diffrestorer-low-light", "dr-haze": "diffrestorer-haze",
             "dr-rain": "diffrestorer-rain", "dr-raindrop": "diffrestorer-raindrop", "dr-snow": "diffrestorer-snow",
             "dr-blur": "diffrestorer-blur", "dr-noise-blur": "diffrestorer-mix2-blur-noise",
             "dr-snow-noise": "diffrestorer-mix2-snow-noise",
             "dr-raindrop-noise-blur": "diffrestorer-mix3-blur-noise-raindrop",
             "dr-jpeg-noise-blur": "diffrestorer-mix3-blur-noise-jpeg"}


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
    (tmp_path / "diffrestorer-low-light.yaml").write_text(text)
    assert main(["testset", str(tmp_path / "diffrestorer-low-light.yaml"), "--source", str(tmp_path / "lol"), "--out",
                 str(tmp_path / "o0"), "--quiet"]) == 1
    assert "not the same test set" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- one vocabulary


def _paper_settings() -> set[tuple[str, str, str]]:
    """Every (paper CSV, setting, test-set id) of leaderboard/papers/: in the CSVs and in provenance.yaml."""
    import pandas as pd

    from pirs.leaderboard.papers import load_provenance, paper_table_files

    found = set()
    for p in paper_table_files():
        rows = pd.read_csv(p, dtype=str, keep_default_na=False)
        found |= {(p.name, s, t) for s, t in zip(rows["setting"], rows["test_set"], strict=True)}
    for table in load_provenance()["tables"]:
        found |= {(table["file"], s["setting"], s["test_set"]) for s in table["settings"]}
    return found


def test_old_names_are_aliases_that_resolve_to_the_paper_ids(capsys) -> None:
    from pirs.degrade.testsets import canonical_id, testset_aliases

    assert testset_aliases().items() >= OLD_NAMES.items()
    for old, new in OLD_NAMES.items():
        assert load_testset(old).name == new and canonical_id(old) == new and old in load_testset(new).aliases
    assert main(["testset", "dr-haze", "--show"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("diffrestorer-haze ") and "aliases: dr-haze" in captured.out
    assert "dr-haze is an alias of the test set diffrestorer-haze" in captured.err
    assert main(["testset", "--list"]) == 0
    listing = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert set(listing) == set(NAMES) and "(alias: dr-haze)" in listing["diffrestorer-haze"]
    with pytest.raises(TestsetError, match="Did you mean 'dr-haze'"):
        load_testset("dr-hazy")


def test_an_alias_must_name_one_test_set(tmp_path: Path, monkeypatch) -> None:
    import pirs.degrade.testsets as testsets

    good = Path(load_testset("realsr").path).read_text()
    (tmp_path / "realsr.yaml").write_text(good.replace("name: realsr\n", "name: realsr\naliases:\n- rsr\n"))
    (tmp_path / "other.yaml").write_text(good.replace("name: realsr\n", "name: other\naliases:\n- rsr\n"))
    monkeypatch.setattr(testsets, "testsets_dir", lambda: tmp_path)
    with pytest.raises(TestsetError, match="claimed by both"):
        load_testset("rsr")
    (tmp_path / "other.yaml").write_text(good.replace("name: realsr\n", "name: other\naliases:\n- realsr\n"))
    with pytest.raises(TestsetError, match="id of another test set"):
        testsets.testset_aliases()


def test_every_paper_test_set_has_a_test_set_file_that_names_the_table() -> None:
    """A paper table's test-set id that no datasets/*.yaml carries (or that carries it without naming the
    table) would put our scores on another page than the paper's."""
    settings = _paper_settings()
    assert settings
    for file, setting, test_set in sorted(settings):
        assert test_set in NAMES, f"{file} ({setting}) names test set {test_set!r}: no datasets/{test_set}.yaml"
        assert {"file": file, "setting": setting} in load_testset(test_set).paper_tables, (test_set, file, setting)


@pytest.mark.parametrize("name", NAMES)
def test_every_test_set_names_its_paper_tables_or_says_why_it_has_none(name: str) -> None:
    ts = load_testset(name)
    if not ts.paper_tables:
        assert len(ts.no_paper_table_reason) > 20, f"{name}: no paper_tables and no no_paper_table_reason"
    listed = {(t["file"], t["setting"]) for t in ts.paper_tables}
    in_papers = {(f, s) for f, s, t in _paper_settings() if t == name}
    assert listed == in_papers, f"{name}: paper_tables {sorted(listed)}, the papers' tables {sorted(in_papers)}"


PAPER_FILES = {"SPIRE": "spire_table1.csv", "XPSR": "xpsr_main.csv", "Diff-Restorer": "diffrestorer_table1.csv",
               "DPIR": "dpir_main.csv"}


@pytest.mark.parametrize("name", [n for n in NAMES if load_testset(n).paper_tables])
def test_metrics_are_those_the_paper_tables_print(name: str) -> None:
    """The metrics of a set are those its paper tables print a number for ("-" cells do not count: RTTS has no
    ground truth), each with the papers' direction, and reported_by names exactly the papers that print it."""
    from pirs.leaderboard.papers import load_paper_tables

    papers = load_paper_tables()
    rows = papers[(papers["test_set"] == name) & papers["value"].notna()]
    printed = {m: (set(g["paper"]), set(g["direction"])) for m, g in rows.groupby("metric")}
    ts = load_testset(name)
    assert [m["name"] for m in ts.metrics if m["name"] in printed] == [m["name"] for m in ts.metrics]
    assert {m["name"] for m in ts.metrics} == set(printed), name
    for m in ts.metrics:
        by, directions = printed[m["name"]]
        assert directions == {m["better"]}, (name, m["name"])
        named = {p for p in PAPER_FILES if p in m.get("reported_by", "")}
        assert named == by, f"{name} {m['name']}: reported_by {m.get('reported_by')!r}, printed by {sorted(by)}"


def test_a_built_test_set_lands_on_its_paper_page_without_an_alias(tmp_path: Path, capsys) -> None:
    """degrade testset (by its old name) -> manifest test_set.id -> bench evaluate -> results test_set.name ->
    leaderboard page of the paper's setting, with no --test-set-alias."""
    from pirs.benchmark.cli import main as bench
    from pirs.leaderboard.render import read_csv, render

    src = _stand_in("diffrestorer-haze", tmp_path / "sots")
    shards = tmp_path / "my-haze-folder"  # a folder name that matches nothing
    assert main(["testset", "dr-haze", "--source", str(src), "--out", str(shards), "--quiet", "--allow-partial"]) == 0
    assert "alias of the test set diffrestorer-haze" in capsys.readouterr().err
    manifest = json.loads((shards / "manifest.json").read_text())
    assert manifest["test_set"]["id"] == "diffrestorer-haze" and manifest["test_set"]["partial"] is True
    assert "test_set" not in manifest["args"]
    preds, results = tmp_path / "identity", tmp_path / "results" / "identity.json"
    assert bench(["baseline", "identity", "--reference", str(shards), "--out", str(preds), "--quiet"]) == 0
    assert bench(["evaluate", str(preds), "--reference", str(shards), "--metrics", "psnr,ssim", "--out",
                  str(results), "--device", "cpu", "--no-cache", "--quiet"]) == 0
    ts = json.loads(results.read_text())["test_set"]
    assert (ts["name"], ts["name_source"], ts["partial"]) == ("diffrestorer-haze", "manifest", True)
    summary = render(tmp_path / "site", [results.parent], plots=False)
    assert "my-haze-folder" not in summary["test_sets"] and not summary["notes"]
    page = read_csv(tmp_path / "site" / "diffrestorer-haze" / "leaderboard.csv")
    assert {"Diff-Restorer", "pirs"} <= set(page["source"])
    ours = page[page["source"] == "pirs"]
    assert set(ours["metric"]) == {"psnr", "ssim"} and set(ours["test_set_name"]) == {"diffrestorer-haze"}
