"""Spread and intervals in the summary, paired statistics in compare, re-derivation in validate, quiet pipes."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import quick_config, synthetic_photo, write_png
from pirs.benchmark.baselines import write_baseline
from pirs.benchmark.evaluate import EvalConfig, evaluate
from pirs.benchmark.results import ResultsError, bootstrap_ci, compare, paired, rederive, validate_results
from pirs.degrade.build import build


def bench(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pirs.benchmark.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=300, **kw)


@pytest.fixture(scope="module")
def two(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A test set of 8 records and the results of its identity and bicubic baselines."""
    root = tmp_path_factory.mktemp("stats")
    photos = root / "photos"
    for i in range(4):
        write_png(photos / f"p{i}.png", synthetic_photo(64, 64, i))
    ref = root / "ref"
    build(quick_config(ref, photos, num_samples=8, crop_size=32))
    out = []
    for m in ("identity", "bicubic"):
        write_baseline(m, ref, root / m, progress=False)
        evaluate(EvalConfig(str(root / m), str(ref), "psnr,ssim,psnr-ycbcr", str(root / "results" / f"{m}.json"),
                            progress=False, cache_dir=None))
        out.append(root / "results" / f"{m}.json")
    return ref, out[0], out[1]


def test_bootstrap_interval_is_the_seeded_percentile_of_resampled_means():
    v = np.random.default_rng(3).normal(10, 2, 50)
    ci = bootstrap_ci(v, 500, seed=7)
    rng = np.random.default_rng(7)
    means = v[rng.integers(0, 50, size=(500, 50))].mean(axis=1)
    assert ci == pytest.approx(list(np.percentile(means, [2.5, 97.5])), abs=1e-12)
    assert ci[0] < v.mean() < ci[1] and bootstrap_ci(v, 500, seed=7) == ci and bootstrap_ci(v, 500, seed=8) != ci
    assert bootstrap_ci([1.0], 100) is None and bootstrap_ci([1.0, math.inf], 100) is None
    assert bootstrap_ci(v, 0) is None


def test_summary_has_std_and_a_seeded_interval(two):
    _, a, _ = two
    d = json.loads(a.read_text())
    assert d["statistics"]["seed"] == 0 and d["statistics"]["resamples"] == 1000
    table = pd.read_csv(a.with_suffix(".csv"))
    for name in ("psnr", "ssim", "psnr-ycbcr"):
        e = d["metrics"][name]
        assert e["std"] == pytest.approx(table[name].std(ddof=1), rel=1e-12)
        low, high = e["ci95"]
        assert low <= e["value"] <= high and high - low < 4 * e["std"]
        assert e["ci95"] == bootstrap_ci(table[name].to_numpy(), 1000, 0)


def test_compare_pairs_images_and_reports_interval_test_and_win_rate(two):
    _, a, b = two
    da, db = json.loads(a.read_text()), json.loads(b.read_text())
    ta, tb = pd.read_csv(a.with_suffix(".csv"), dtype={"key": str}), pd.read_csv(b.with_suffix(".csv"),
                                                                                  dtype={"key": str})
    rows = {r["metric"]: r for r in compare(da, db, (ta, tb))}
    st = rows["psnr"]["paired"]
    d = tb["psnr"].to_numpy() - ta["psnr"].to_numpy()
    assert st["n"] == 8 and st["diff"] == pytest.approx(d.mean()) == pytest.approx(rows["psnr"]["diff"])
    assert st["ci95"][0] <= st["diff"] <= st["ci95"][1]
    assert st["b_wins"] == pytest.approx((d > 0).mean()) and st["a_wins"] == pytest.approx((d < 0).mean())
    from scipy.stats import wilcoxon

    assert st["p"] == pytest.approx(wilcoxon(d).pvalue)
    same = paired(ta, ta, "psnr", False)
    assert same["p"] == 1.0 and same["ties"] == 1.0 and same["ci95"] == [0.0, 0.0]
    r = bench("compare", a, b)
    assert r.returncode == 0, r.stderr
    assert "95% CI of b - a" in r.stdout and "Wilcoxon" in r.stdout and "b wins" in r.stdout
    out = json.loads(bench("compare", a, b, "--json").stdout)
    assert {x["metric"]: x for x in out}["ssim"]["paired"]["n"] == 8


@pytest.mark.parametrize("args", [("compare", "A", "B"), ("metrics", "--json"), ("compare", "A", "B", "--json")])
def test_a_closed_pipe_ends_quietly(two, args):
    _, a, b = two
    argv = [str(a) if x == "A" else str(b) if x == "B" else x for x in args]
    proc = subprocess.Popen([sys.executable, "-m", "pirs.benchmark.cli", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before anything is written: every write meets a closed pipe
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 0 and err == "", err
    shell = subprocess.run(f"{sys.executable} -m pirs.benchmark.cli {' '.join(argv)} | head -1", shell=True,
                           capture_output=True, text=True, timeout=300)
    assert shell.stderr == "" and len(shell.stdout.splitlines()) == 1


def validate(*args, capsys) -> subprocess.CompletedProcess:
    """``bench validate`` in this process (it is run many times here)."""
    from pirs.benchmark.cli import main

    capsys.readouterr()
    code = main(["validate", *map(str, args)])
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out.out, out.err)


def test_validate_re_derives_and_names_the_first_mismatch(two, tmp_path, capsys):
    ref, a, _ = two

    def bench(*args):  # noqa: F811  (in-process here)
        assert args[0] == "validate"
        return validate(*args[1:], capsys=capsys)

    r = bench("validate", a)
    assert r.returncode == 0 and "ok (schema and re-derived values)" in r.stdout, r.stderr
    assert rederive(a, validate_results(a)) == []  # test set and predictions are here: nothing left unchecked

    def copy(change_json=None, change_csv=None) -> Path:
        folder = tmp_path / f"c{len(list(tmp_path.iterdir()))}"
        folder.mkdir()
        d = json.loads(a.read_text())
        if change_json:
            change_json(d)
        (folder / a.name).write_text(json.dumps(d))
        table = pd.read_csv(a.with_suffix(".csv"), dtype={"key": str})
        if change_csv:
            change_csv(table)
        table.to_csv(folder / a.with_suffix(".csv").name, index=False)
        return folder / a.name

    cases = [
        (lambda d: d["metrics"]["psnr"].update(value=d["metrics"]["psnr"]["value"] + 0.01), None,
         "'metrics.psnr.value'"),
        (lambda d: d.update(count=7), None, "'count'"),
        (None, lambda t: t.__setitem__("ssim", t["ssim"] * 1.001), "'metrics.ssim.value'"),
        (lambda d: d["metrics"]["psnr"].update(ci95=[1.0, 2.0]), None, "'metrics.psnr.ci95'"),
        (lambda d: d["metrics"]["ssim"].update(std=0.5), None, "'metrics.ssim.std'"),
        (lambda d: d["test_set"].update(fingerprint="0" * 64), None, "'test_set.fingerprint'"),
        (lambda d: d["predictions"].update(fingerprint="f" * 64), None, "'predictions.fingerprint'"),
    ]
    for change_json, change_csv, field in cases:
        p = copy(change_json, change_csv)
        r = bench("validate", p)
        err = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(err) == 1 and field in err[0] and str(p) in err[0], (field, r.stderr)
        assert bench("validate", "--schema-only", p).returncode == 0  # the schema alone cannot see it
    p = copy()
    p.with_suffix(".csv").unlink()
    r = bench("validate", p)
    assert r.returncode == 2 and "does not exist" in r.stderr
    moved = tmp_path / "moved"
    shutil.copytree(ref, moved / "ref")
    d = json.loads(a.read_text())
    d["test_set"]["path"] = str(tmp_path / "gone")
    (moved / a.name).write_text(json.dumps(d))
    shutil.copy(a.with_suffix(".csv"), moved / a.with_suffix(".csv").name)
    r = bench("validate", moved / a.name)
    assert r.returncode == 0 and "not checked: test set" in r.stdout
    with pytest.raises(ResultsError, match="per_image"):
        rederive(p, validate_results(p))
