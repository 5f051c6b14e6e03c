"""`bench` from the command line: --help everywhere, baseline -> evaluate -> compare end to end, clear failures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import quick_config, synthetic_photo, write_png
from pirs.benchmark.baselines import write_baseline
from pirs.benchmark.evaluate import EvalConfig, evaluate
from pirs.degrade.build import build


def bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pirs.benchmark.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def ref(tmp_path_factory) -> Path:
    photos = tmp_path_factory.mktemp("photos")
    for i in range(3):
        write_png(photos / f"p{i}.png", synthetic_photo(64, 80, i))
    out = tmp_path_factory.mktemp("ref") / "testset"
    build(quick_config(out, photos, num_samples=4, crop_size=32))
    return out


@pytest.mark.parametrize("sub", ["evaluate", "metrics", "compare", "baseline", "validate"])
def test_subcommand_help(sub):
    r = bench(sub, "--help")
    assert r.returncode == 0 and f"usage: bench {sub}" in r.stdout


def test_no_subcommand_prints_usage_and_fails():
    r = bench()
    assert r.returncode == 2 and "usage: bench" in r.stderr and "evaluate" in r.stderr


def test_metrics_table():
    r = bench("metrics")
    assert r.returncode == 0, r.stderr
    lines = {line.split()[0]: line for line in r.stdout.splitlines() if line.strip()}
    assert "higher" in lines["psnr"] and "full-reference" in lines["psnr"] and "RGB" in lines["psnr"]
    assert "YCbCr Y (BT.601)" in lines["psnr-ycbcr"] and "YIQ" in lines["ssim"]
    assert "lower" in lines["lpips"] and "alexnet-owt-7be5be79.pth" in lines["lpips"]
    assert "distribution" in lines["fid"] and "no-reference" in lines["musiq"] and "none" in lines["psnr"]
    data = json.loads(bench("metrics", "--json").stdout)
    psnr = next(m for m in data if m["name"] == "psnr")
    assert psnr["direction"] == "higher" and psnr["weights"] == [] and psnr["convention"]["color_space"] == "RGB"


def test_baseline_evaluate_compare_end_to_end(tmp_path, ref):
    for m in ("identity", "bicubic"):
        r = bench("baseline", m, "--reference", ref, "--out", tmp_path / m, "--quiet")
        assert r.returncode == 0, r.stderr
        assert (tmp_path / m / "run.json").is_file() and len(list((tmp_path / m).glob("*.png"))) == 4
    r = bench("evaluate", tmp_path / "bicubic", "--reference", ref, "--metrics", "psnr,ssim", "--out",
              tmp_path / "results" / "bicubic.json", "--device", "cpu", "--quiet", "--no-cache")
    assert r.returncode == 0, r.stderr
    assert "bicubic on testset: 4 of 4 images scored" in r.stdout and "psnr" in r.stdout
    assert (tmp_path / "results" / "bicubic.csv").is_file()
    # the other one in-process (each `bench evaluate` process spends seconds importing torch and pyiqa)
    evaluate(EvalConfig(str(tmp_path / "identity"), str(ref), "psnr,ssim", str(tmp_path / "results" / "identity.json"),
                        progress=False, cache_dir=None))
    r = bench("validate", tmp_path / "results" / "identity.json", tmp_path / "results" / "bicubic.json")
    assert r.returncode == 0 and r.stdout.count(": ok") == 2
    r = bench("compare", tmp_path / "results" / "identity.json", tmp_path / "results" / "bicubic.json")
    assert r.returncode == 0, r.stderr
    rows = {line.split()[0]: line.split() for line in r.stdout.splitlines() if line.startswith(("psnr", "ssim"))}
    assert set(rows) == {"psnr", "ssim"}
    for cells in rows.values():  # metric, direction, a, b, b - a, [CI low, high], p, b wins, better
        a, b, diff = map(float, cells[2:5])
        assert diff == pytest.approx(b - a, abs=2e-4) and cells[1] == "higher"
        assert cells[-1] == ("b" if b > a else "a" if a > b else "=")
    r = bench("compare", tmp_path / "results" / "identity.json", tmp_path / "results" / "bicubic.json", "--json")
    assert {row["metric"] for row in json.loads(r.stdout)} == {"psnr", "ssim"}


def test_evaluate_failures_are_clear(tmp_path, ref):
    r = bench("baseline", "bicubic", "--reference", ref, "--out", tmp_path / "pred", "--quiet")
    assert r.returncode == 0, r.stderr
    first = sorted((tmp_path / "pred").glob("*.png"))[0]
    first.unlink()
    out = tmp_path / "r.json"
    args = ("--reference", ref, "--metrics", "psnr,ssim", "--out", out, "--quiet", "--no-cache")
    r = bench("evaluate", tmp_path / "pred", *args)
    assert r.returncode == 2 and f"1 missing predictions: {first.stem}" in r.stderr
    assert "--allow-missing" in r.stderr and str(tmp_path / "pred") in r.stderr and not out.exists()
    r = bench("evaluate", tmp_path / "pred", *args, "--allow-missing")
    assert r.returncode == 0 and "3 of 4 images scored" in r.stdout and "1 missing" in r.stdout
    s = json.loads(out.read_text())
    assert s["pairing"]["allow_missing"] and s["pairing"]["missing"]["items"] == [first.stem]
    r = bench("evaluate", tmp_path / "pred", "--reference", ref, "--metrics", "psnr,sim", "--out", out)
    assert r.returncode == 2 and "unknown metric 'sim'" in r.stderr and "Did you mean" in r.stderr
    r = bench("evaluate", tmp_path / "pred", "--reference", tmp_path / "nope", "--metrics", "psnr", "--out", out)
    assert r.returncode == 2 and "nope: no such folder" in r.stderr
    r = bench("evaluate", tmp_path / "pred", *args, "--allow-missing", "--device", "tpu")
    assert r.returncode == 2 and "--device tpu" in r.stderr
    r = bench("baseline", "bicubic", "--reference", ref, "--out", tmp_path / "pred", "--quiet")
    assert r.returncode == 2 and "--overwrite" in r.stderr


def test_compare_refuses_different_test_sets(tmp_path, ref):
    other = tmp_path / "other"
    photos = tmp_path / "photos"
    write_png(photos / "x.png", synthetic_photo(48, 48, 5))
    build(quick_config(other, photos, num_samples=2, crop_size=32))
    for name, r_ in (("a", ref), ("b", other)):  # in-process: `bench evaluate` itself is tested above
        write_baseline("bicubic", r_, tmp_path / name, progress=False)
        evaluate(EvalConfig(str(tmp_path / name), str(r_), "psnr", str(tmp_path / f"{name}.json"), progress=False,
                            cache_dir=None))
    r = bench("compare", tmp_path / "a.json", tmp_path / "b.json")
    assert r.returncode == 2 and "not comparable" in r.stderr and "a.json" in r.stderr
    r = bench("compare", tmp_path / "a.json", tmp_path / "b.json", "--force")
    assert r.returncode == 0 and "WARNING: different test sets" in r.stdout
    (tmp_path / "bad.json").write_text("{}")
    r = bench("compare", tmp_path / "a.json", tmp_path / "bad.json")
    assert r.returncode == 2 and "bad.json: field 'results_schema_version' is missing" in r.stderr
    r = bench("validate", tmp_path / "bad.json")
    assert r.returncode == 2 and "bad.json" in r.stderr


def test_importing_the_harness_loads_no_heavy_packages():
    code = ("import sys, pirs.benchmark, pirs.benchmark.cli, pirs.benchmark.pairing, pirs.benchmark.results, "
            "pirs.benchmark.evaluate, pirs.benchmark.baselines, pirs.benchmark.images; "
            "print([m for m in ('torch', 'pyiqa', 'transformers', 'pandas', 'pirs.models') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
