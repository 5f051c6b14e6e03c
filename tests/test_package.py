"""Packaging: one distribution, subpackages of the `pirs` namespace, light imports."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_datasets_folder_never_shadows_hugging_face_datasets():
    assert not (ROOT / "datasets" / "__init__.py").exists()
    import datasets

    assert hasattr(datasets, "load_dataset") and "site-packages" in datasets.__file__


def test_importing_degrade_loads_no_heavy_packages():
    code = ("import sys, pirs.degrade, pirs.degrade.cli; "
            "heavy = [m for m in ('torch', 'pyiqa', 'transformers', 'diffusers', 'datasets', 'skimage') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_top_level_layout():
    for name in ("pyproject.toml", "degrade", "datasets", "captioning", "benchmark", "models", "leaderboard",
                 "tests", "README.md"):
        assert (ROOT / name).exists(), name


def test_wheel_contains_the_namespace_packages_and_recipes(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path),
                        str(ROOT)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    warnings = [line for line in (r.stdout + r.stderr).splitlines() if "Warning" in line]
    assert not warnings, warnings[:5]  # setuptools: no deprecated license table, no data folder outside packages
    wheel = next(tmp_path.glob("pirs-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for must in ("pirs/degrade/__init__.py", "pirs/degrade/recipes/realesrgan.yaml", "pirs/degrade/card_template.md",
                 "pirs/models/configs/xpsr/sd15.yaml", "pirs/models/configs/dpir/sd3.yaml",
                 "pirs/leaderboard/papers/provenance.yaml", "pirs/testsets/mixtures/diffrestorer-train.yaml",
                 "pirs/captioning/cli.py", "pirs/benchmark/cli.py", "pirs/models/cli.py", "pirs/leaderboard/cli.py",
                 "pirs/testsets/realsr.yaml", "pirs/testsets/diffrestorer-mix2-snow-noise.yaml"):
        assert must in names, must
    assert "pirs/__init__.py" not in names  # implicit namespace
    assert "pirs/testsets/__init__.py" not in names  # the test-set files stay data
    assert not any(n.startswith(("degrade/", "models/", "benchmark/", "datasets/")) for n in names)
    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)
    code = ("import pirs.degrade as d; from pirs.degrade.testsets import testsets_dir, load_testset; "
            "r = d.load_recipe('realesrgan-light'); "
            f"print(d.__file__.startswith({str(target)!r}), r.name, str(testsets_dir()).startswith({str(target)!r}), "
            "load_testset('realsr').name)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"})
    assert out.stdout.split() == ["True", "realesrgan-light", "True", "realsr"], out.stderr
