"""Universal recipes: one per type, the uniform mix, k-of-n mixtures and Diff-Restorer's test mixtures."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import numpy as np
import pytest

import datasets
from conftest import quick_config, synthetic_photo
from pirs.degrade.build import build
from pirs.degrade.labels import UNIVERSAL
from pirs.degrade.pipeline import degrade, replay
from pirs.degrade.recipe import Choose, RecipeError, load_recipe

SINGLE = {
    "noise": (["noise"], "Denoise with sigma 0.20"),
    "jpeg": (["jpeg"], "Dejpeg with quality 10"),
    "low-light": (["low-light"], "Brighten the low-light image"),
    "haze": (["haze"], "Remove the haze"),
    "rain": (["rain"], "Remove the rain"),
    "raindrop": (["raindrop"], "Remove the raindrops"),
    "snow": (["snow"], "Remove the snow"),
    "motion-blur": (["blur"], "Deblur"),
    "defocus-blur": (["blur"], "Deblur"),
    "dr-noise-blur": (["blur", "noise"], "Deblur; Denoise with sigma 0.20"),
    "dr-snow-noise": (["snow", "noise"], "Remove the snow; Denoise with sigma 0.20"),
    "dr-raindrop-noise-blur": (["raindrop", "blur", "noise"], "Remove the raindrops; Deblur; Denoise with sigma 0.20"),
    "dr-jpeg-noise-blur": (["blur", "noise", "jpeg"], "Deblur; Denoise with sigma 0.20; Dejpeg with quality 10"),
}
PHYSICAL_ORDER = ["haze", "rain", "snow", "raindrop", "blur", "low-light", "noise", "jpeg"]
HQ = synthetic_photo(48, 48, 4)


@pytest.mark.parametrize("name", sorted(SINGLE))
def test_fixed_recipes_give_their_labels_prompt_and_replay(name: str) -> None:
    labels, prompt = SINGLE[name]
    recipe = load_recipe(name)
    out = degrade(HQ, recipe, np.random.default_rng(3))
    assert out.labels == labels and out.prompt == prompt and out.scale == 1
    assert out.lq.shape == HQ.shape and not np.array_equal(out.lq, HQ)
    assert np.array_equal(replay(HQ, out.ops, upsample=False), out.lq)


def test_range_variants_draw_inside_their_ranges() -> None:
    sig = [degrade(HQ, load_recipe("noise-range"), np.random.default_rng(i)).ops[0]["params"]["sigma"]
           for i in range(60)]
    assert 10 <= min(sig) < 20 and 40 < max(sig) <= 50
    q = [degrade(HQ, load_recipe("jpeg-range"), np.random.default_rng(i)).ops[0]["params"]["quality"]
         for i in range(60)]
    assert 10 <= min(q) < 20 and 40 < max(q) <= 50


def test_universal_picks_one_type_uniformly() -> None:
    recipe = load_recipe("universal")
    tiny = HQ[:8, :8]
    counts = collections.Counter()
    for i in range(800):
        out = degrade(tiny, recipe, np.random.default_rng(i))
        assert len(out.labels) == 1
        counts[out.labels[0]] += 1
    assert set(counts) == set(UNIVERSAL)
    for lab in UNIVERSAL:  # 100 expected each; 5 sigma is about 47
        assert 55 < counts[lab] < 150, counts


@pytest.mark.parametrize(("name", "k"), [("mixed2", 2), ("mixed3", 3)])
def test_mixtures_give_k_distinct_types_in_physical_order(name: str, k: int) -> None:
    recipe = load_recipe(name)
    assert any(isinstance(st, Choose) and st.k == k for st in recipe.stages)
    tiny = HQ[:8, :8]
    seen = collections.Counter()
    for i in range(300):
        out = degrade(tiny, recipe, np.random.default_rng(i))
        assert len(out.labels) == k == len(set(out.labels))
        assert out.labels == sorted(out.labels, key=PHYSICAL_ORDER.index)
        assert out.prompt.count("; ") == k - 1
        seen.update(out.labels)
    assert set(seen) == set(UNIVERSAL)


def test_choose_is_validated(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nversion: '1'\nstages:\n  - choose: 3\n    from:\n      - - {op: haze}\n"
                   "      - - {op: rain}\n")
    with pytest.raises(RecipeError, match="choose must be an integer in 1..2"):
        load_recipe(str(bad))
    bad.write_text("name: bad\nversion: '1'\nstages:\n  - choose: 1\n    pick: x\n    from: [[{op: haze}]]\n")
    with pytest.raises(RecipeError, match="unknown keys"):
        load_recipe(str(bad))


def test_universal_build_labels_survive_datasets(tmp_path: Path, photos: Path) -> None:
    out = tmp_path / "shards"
    build(quick_config(out, photos, pipeline="universal", num_samples=16, shard_size=8))
    datasets.disable_progress_bars()
    ds = datasets.load_dataset(str(out), split="train", cache_dir=str(tmp_path / "cache"))
    assert ds.num_rows == 16
    labels = set()
    for row in ds:
        rec = row["json"]
        assert len(rec["degradations"]) == 1 and rec["degradations"][0] in UNIVERSAL
        assert rec["restoration_prompt"] and rec["branch"] != "universal"
        ops = json.loads(rec["ops"])
        assert ops and ops[-1]["prompt"] == rec["restoration_prompt"]
        labels.add(rec["degradations"][0])
    assert len(labels) >= 4


def test_gallery_draws_every_type(tmp_path: Path) -> None:
    from PIL import Image

    from pirs.degrade.cli import main
    from pirs.degrade.gallery import GALLERY_RECIPES, PHOTOS

    out = tmp_path / "g.png"
    assert main(["gallery", "--out", str(out), "--tile", "32"]) == 0
    im = Image.open(out)
    cells = len(GALLERY_RECIPES) + len(PHOTOS)
    rows = (cells + 4) // 5
    assert im.size == (5 * 40 + 8, rows * (32 + 58 + 8) + 8)
    assert {"noise", "haze", "low-light", "dr-jpeg-noise-blur"} <= set(GALLERY_RECIPES)
