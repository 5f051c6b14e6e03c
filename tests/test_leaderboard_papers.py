"""The published paper tables (leaderboard/papers/): shape, provenance, and every row against the seed text."""

from __future__ import annotations

import hashlib
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pirs.leaderboard.papers import (
    COLUMNS,
    KEY,
    METRICS,
    PAPERS_DIR,
    load_paper_tables,
    load_provenance,
    paper_table_files,
)

SEEDS = Path(__file__).resolve().parents[1].parent / "shared" / "seeds"
needs_seeds = pytest.mark.skipif(
    not SEEDS.is_dir(), reason=f"seed texts not found at {SEEDS} (../shared/seeds beside the repository)")

# A value cell of a seed table line: a decimal number, or a "-" standing alone.
CELL = re.compile(r"(?<!\S)-(?!\S)|\d+\.\d+")
MARKS = {"✓": "yes", "✗": "no"}
UP, DOWN = ("↑", "\\uparrow"), ("↓", "\\downarrow")


@pytest.fixture(scope="module")
def df():
    return load_paper_tables()


@pytest.fixture(scope="module")
def prov():
    return {t["file"]: t for t in load_provenance()["tables"]}


def _table(df, paper):
    return df[df["paper"] == paper]


def _seed_lines(name: str) -> list[str]:
    return (SEEDS / name).read_text(encoding="utf-8").replace("\xa0", " ").splitlines()


def _value(df, paper, test_set, method, metric, prompts=""):
    rows = df[(df["paper"] == paper) & (df["test_set"] == test_set) & (df["method"] == method)
              & (df["metric"] == metric) & (df["prompts"] == prompts)]
    assert len(rows) == 1, (paper, test_set, method, metric, prompts, len(rows))
    return rows.iloc[0]


# --------------------------------------------------------------------------- loader


def test_loader_columns_and_types(df):
    assert list(df.columns) == list(COLUMNS) + ["value_text"]
    assert df["value"].dtype == float
    assert df["source_line"].dtype.kind == "i" and df["source_cell"].dtype.kind == "i"
    assert sorted(df["paper"].unique()) == ["DPIR", "Diff-Restorer", "SPIRE", "XPSR"]
    assert {p.name for p in paper_table_files()} == {
        "spire_table1.csv", "xpsr_main.csv", "diffrestorer_table1.csv", "dpir_main.csv"}
    # value_text keeps the printed string, value is its float
    row = _value(df, "SPIRE", "mscoco-val3000-parameterized", "ControlNet-SR", "clip-t", "sem=no;res=no")
    assert row["value_text"] == "0.300" and row["value"] == pytest.approx(0.3)


def test_no_duplicate_keys(df):
    assert not df.duplicated(list(KEY)).any()
    assert set(KEY) - {"paper"} == {"table", "setting", "test_set", "method", "prompts", "metric"}


def test_directions_and_metric_names(df):
    assert set(df["direction"]) == {"lower", "higher"}
    assert set(df["metric"]) <= METRICS
    expected = {"fid": "lower", "lpips": "lower", "dists": "lower", "niqe": "lower", "psnr": "higher",
                "ssim": "higher", "clip-i": "higher", "clip-t": "higher", "clipiqa": "higher",
                "musiq": "higher", "maniqa": "higher", "liqe": "higher"}
    for metric, direction in df.groupby("metric")["direction"].agg(set).items():
        assert direction == {expected[metric]}, metric
    # SPIRE's Table 1 prints no arrows; the others do
    assert set(_table(df, "SPIRE")["direction_source"]) == {"known"}
    assert set(df[df["paper"] != "SPIRE"]["direction_source"]) == {"arrow"}


def test_conventions(df):
    assert df["conventions"].str.len().gt(0).all()
    assert set(_table(df, "Diff-Restorer")["conventions"]) == {"impl=pyiqa"}
    for paper in ("SPIRE", "DPIR"):
        psnr = _table(df, paper).query("metric == 'psnr'")
        assert set(psnr["conventions"]) == {"impl=unspecified;channel=unspecified;crop=unspecified"}


def test_loader_is_light_at_import():
    code = "import sys, pirs.leaderboard.papers; assert 'pandas' not in sys.modules and 'yaml' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("mutation, message", [
    (lambda t: t.replace(",lower,arrow,", ",down,arrow,", 1), "field 'direction'"),
    (lambda t: t.replace(",fid,FID,", ",fidd,FID,", 1), "field 'metric'"),
    (lambda t: t.replace(",56.07,", ",56.07x,", 1), "field 'value'"),
    (lambda t: t + t.splitlines()[1] + "\n", "rows share"),
    (lambda t: t.replace("source_cell", "cell", 1), "columns must be"),
])
def test_loader_rejects_bad_files(tmp_path, mutation, message):
    text = (PAPERS_DIR / "diffrestorer_table1.csv").read_text(encoding="utf-8")
    bad = tmp_path / "bad_table.csv"
    bad.write_text(mutation(text), encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape(message)) as err:
        load_paper_tables(tmp_path)
    assert "bad_table.csv" in str(err.value)


def test_loader_rejects_same_number_in_two_files(tmp_path):
    shutil.copy(PAPERS_DIR / "xpsr_main.csv", tmp_path / "a.csv")
    shutil.copy(PAPERS_DIR / "xpsr_main.csv", tmp_path / "b.csv")
    with pytest.raises(ValueError, match="two files"):
        load_paper_tables(tmp_path)


# --------------------------------------------------------------------------- shapes


def test_spire_table1_shape(df):
    t = _table(df, "SPIRE")
    assert len(t) == 108 and set(t["table"]) == {"Table 1"}
    assert set(t["setting"]) == {"parameterized", "realesrgan"}
    assert set(t["test_set"]) == {"mscoco-val3000-parameterized", "mscoco-val3000-realesrgan"}
    assert t["method"].nunique() == 9
    assert set(t["metric"]) == {"fid", "lpips", "psnr", "ssim", "clip-i", "clip-t"}
    assert (t.groupby("setting").size() == 54).all()
    prompts = t.drop_duplicates("method").set_index("method")["prompts"]
    assert prompts["SPIRE"] == "sem=yes;res=yes"
    assert prompts["SPIRE w/o text"] == "sem=no;res=no"
    assert sorted(prompts.value_counts().items()) == [("sem=no;res=no", 5), ("sem=yes;res=no", 3),
                                                      ("sem=yes;res=yes", 1)]
    assert not t["value"].isna().any()


def test_xpsr_main_shape(df):
    t = _table(df, "XPSR")
    assert len(t) == 20
    assert set(t["metric"]) == {"clipiqa", "musiq", "maniqa", "liqe"}
    methods = t.groupby("test_set")["method"].agg(lambda s: sorted(set(s))).to_dict()
    assert methods == {"div2k-val": ["SeeSR", "StableSR", "XPSR"], "realsr": ["StableSR", "XPSR"]}
    assert not t["value"].isna().any()


def test_diffrestorer_table1_shape(df):
    t = _table(df, "Diff-Restorer")
    assert len(t) == 14 * 8 * 6 == 672 and set(t["table"]) == {"Table I"}
    assert t["setting"].nunique() == 14 and t["test_set"].nunique() == 14
    assert set(t["method"]) == {"AirNet", "TransWeather", "NAFNet", "Restormer", "PromptIR", "DA-CLIP",
                                "Diff-Restorer (SD decoder)", "Diff-Restorer"}
    assert set(t["metric"]) == {"fid", "lpips", "dists", "niqe", "musiq", "clipiqa"}
    assert (t.groupby(["setting", "method"]).size() == 6).all()
    # "-" cells: FID, LPIPS and DISTS on RTTS (no ground truth), for every method
    empty = t[t["value"].isna()]
    assert len(empty) == 24 and (empty["value_text"] == "").all()
    assert set(empty["setting"]) == {"realworld-haze"} and set(empty["test_set"]) == {"rtts"}
    assert set(empty["metric"]) == {"fid", "lpips", "dists"}


def test_dpir_main_shape(df):
    t = _table(df, "DPIR")
    assert len(t) == 25 + 12
    div2k, realsr = t[t["test_set"] == "div2k-val"], t[t["test_set"] == "realsr"]
    assert div2k["method"].nunique() == 5 and set(div2k["metric"]) == {"psnr", "lpips", "dists", "clipiqa", "musiq"}
    assert set(realsr["method"]) == {"Real-ESRGAN", "SUPIR", "DPIR"}
    assert set(realsr["metric"]) == {"lpips", "dists", "clipiqa", "musiq"}  # the seed prints no PSNR for RealSR
    assert not t["value"].isna().any()


# --------------------------------------------------------------------------- spot values (typed by hand)


@pytest.mark.parametrize("paper, test_set, method, metric, prompts, text", [
    ("SPIRE", "mscoco-val3000-parameterized", "SPIRE", "fid", "sem=yes;res=yes", "11.34"),
    ("SPIRE", "mscoco-val3000-parameterized", "SwinIR", "psnr", "sem=no;res=no", "24.40"),
    ("SPIRE", "mscoco-val3000-realesrgan", "SPIRE", "clip-t", "sem=yes;res=yes", "0.308"),
    ("SPIRE", "mscoco-val3000-realesrgan", "DiffBIR + SDEdit", "ssim", "sem=yes;res=no", "0.521"),
    ("SPIRE", "mscoco-val3000-realesrgan", "SPIRE w/o text", "lpips", "sem=no;res=no", "0.262"),
    ("XPSR", "div2k-val", "SeeSR", "musiq", "", "66.43"),
    ("XPSR", "realsr", "XPSR", "liqe", "", "4.21"),
    ("Diff-Restorer", "diffrestorer-noise", "AirNet", "fid", "", "56.07"),
    ("Diff-Restorer", "diffrestorer-low-light", "Diff-Restorer (SD decoder)", "musiq", "", "73.80"),
    ("Diff-Restorer", "diffrestorer-rain", "Restormer", "clipiqa", "", "0.0638"),
    ("Diff-Restorer", "diffrestorer-raindrop", "TransWeather", "dists", "", "0.7957"),
    ("Diff-Restorer", "diffrestorer-jpeg", "Diff-Restorer", "clipiqa", "", "0.6825"),
    ("Diff-Restorer", "rtts", "Diff-Restorer", "musiq", "", "59.93"),
    ("Diff-Restorer", "rtts", "PromptIR", "fid", "", ""),
    ("Diff-Restorer", "diffrestorer-mix3-blur-noise-jpeg", "DA-CLIP", "fid", "", "102.72"),
    ("Diff-Restorer", "diffrestorer-mix3-blur-noise-raindrop", "AirNet", "niqe", "", "4.77"),
    ("DPIR", "div2k-val", "SUPIR", "psnr", "", "21.23"),
    ("DPIR", "div2k-val", "Real-ESRGAN", "musiq", "", "63.90"),
    ("DPIR", "realsr", "DPIR", "musiq", "", "69.28"),
])
def test_spot_values(df, paper, test_set, method, metric, prompts, text):
    row = _value(df, paper, test_set, method, metric, prompts)
    assert row["value_text"] == text
    if text:
        assert row["value"] == pytest.approx(float(text))
    else:
        assert math.isnan(row["value"])


# --------------------------------------------------------------------------- provenance


def test_provenance_matches_csvs(df, prov):
    assert set(prov) == {p.name for p in paper_table_files()}
    for name, entry in prov.items():
        t = df[df["paper"] == entry["paper"]]
        assert set(t["source_file"]) == {entry["seed"]}, name
        assert set(t["table"]) == {entry["table"]}, name
        metrics = {(m["metric"], m["label"], m["direction"], m["direction_source"], m["conventions"])
                   for m in entry["metrics"]}
        assert set(map(tuple, t[["metric", "metric_label", "direction", "direction_source",
                                 "conventions"]].drop_duplicates().values)) == metrics, name
        settings = {(s["setting"], s["label"], s["test_set"]) for s in entry["settings"]}
        assert set(map(tuple, t[["setting", "setting_label", "test_set"]].drop_duplicates().values)) == settings
        assert set(t["method"]) == set(entry["methods"]), name
        lo, hi = entry["row_lines"]
        assert t["source_line"].between(lo, hi).all(), name
        for field in ("title", "seed_kind", "seed_sha256", "present", "not_in_seed", "anomalies", "caption"):
            assert field in entry, (name, field)


# --------------------------------------------------------------------------- every row against the seed


@needs_seeds
def test_seed_files_unchanged(prov):
    for entry in prov.values():
        digest = hashlib.sha256((SEEDS / entry["seed"]).read_bytes()).hexdigest()
        assert digest == entry["seed_sha256"], (
            f"{entry['seed']} changed since it was transcribed: check the line numbers, then update seed_sha256")


def _header_labels(line: str, labels: list[str]) -> list[tuple[str, str]]:
    """The metric labels of a header line in printed order, each with the arrow that follows it ('' if none)."""
    alternation = "|".join(re.escape(x) for x in sorted(labels, key=len, reverse=True))
    pattern = re.compile(rf"(?<![A-Za-z-])({alternation})(?![A-Za-z-])(↑|↓|\\uparrow|\\downarrow)?")
    return [(m.group(1), m.group(2) or "") for m in pattern.finditer(line)]


@needs_seeds
def test_every_row_is_on_its_seed_line(df, prov):
    """Every value is the recorded cell of the recorded line, under the right header, label and setting."""
    for name, entry in prov.items():
        lines = _seed_lines(entry["seed"])
        t = df[df["paper"] == entry["paper"]]
        labels = [m["label"] for m in entry["metrics"]]
        width = len(entry["metrics"])
        label_lines = sorted({s["label_line"] for s in entry["settings"]})
        for s in entry["settings"]:
            label_line = lines[s["label_line"] - 1]
            assert s["label"] in label_line, (name, s["label"], s["label_line"])
            # which half of the line the setting's values sit in: order of the labels on their line
            peers = sorted((x for x in entry["settings"] if x["label_line"] == s["label_line"]),
                           key=lambda x: label_line.index(x["label"]))
            half = [x["label"] for x in peers].index(s["label"])
            later = [n for n in label_lines if n > s["label_line"]]
            last = later[0] - 1 if later else entry["row_lines"][1]
            header = _header_labels(lines[s.get("header_line", entry["header_line"]) - 1], labels)
            rows = t[(t["setting"] == s["setting"]) & (t["setting_label"] == s["label"])]
            assert len(rows), (name, s["label"])
            for r in rows.itertuples(index=False):
                where = f"{name}: {r.method_label} / {r.metric_label} / {r.setting_label} (line {r.source_line})"
                assert s["label_line"] <= r.source_line <= last, where
                line = lines[r.source_line - 1]
                cells = CELL.findall(line)
                assert r.source_cell // width == half, where
                assert cells[r.source_cell] == (r.value_text or "-"), where
                if r.value_text:
                    assert r.value_text in line, where
                # the metric column: the header's label at that position, with the recorded direction
                label, arrow = header[r.source_cell]
                assert label == r.metric_label, where
                if r.direction_source == "arrow":
                    assert arrow in (UP if r.direction == "higher" else DOWN), where
                else:
                    assert arrow == "", where
                # the row label (and SPIRE's prompt marks)
                if "|" in line:
                    parts = [c.strip() for c in line.strip().strip("|").split("|")]
                    assert r.method_label in parts[:2], where
                    if r.prompts:
                        assert r.prompts == f"sem={MARKS[parts[1]]};res={MARKS[parts[2]]}", where
                else:
                    start = list(CELL.finditer(line))[half * width].start()
                    assert line[:start].rstrip().endswith(r.method_label), where
