"""``op: albumentations``: any pixel-level albumentations transform as a stage whose drawn parameters
are stored in the record, so ``degrade replay`` rebuilds the LQ bit for bit."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import quick_config, synthetic_photo
from pirs.degrade import degrade, load_recipe, replay
from pirs.degrade.build import build
from pirs.degrade.cli import main as degrade_main
from pirs.degrade.ops import albument
from pirs.degrade.recipe import RecipeError
from pirs.degrade.shards import iter_records, shard_paths

# The six transforms the issue names (snow in both of its models), each with arguments that make it visible.
CASES = [
    ("RandomRain", {"rain_type": "heavy", "slant_range": [-20, 20]}),
    ("RandomSnow", {"method": "bleach", "snow_point_range": [0.2, 0.4]}),
    ("RandomSnow", {"method": "texture"}),
    ("RandomFog", {"fog_coef_range": [0.1, 0.3]}),
    ("RandomSunFlare", {"src_radius": 40}),
    ("ISONoise", {"intensity": [0.3, 0.6]}),
    ("ImageCompression", {"quality_range": [20, 60]}),
    ("ImageCompression", {"compression_type": "webp", "quality_range": [20, 60]}),
]


def _recipe(tmp_path: Path, transform: str, args: dict, p: float = 1.0) -> str:
    path = tmp_path / f"{transform}.yaml"
    stage = {"op": "albumentations", "id": "a", "p": p, "transform": transform, "args": args}
    path.write_text(json.dumps({"name": f"alb-{transform.lower()}", "version": "1", "scale": 1,
                                "prompt": {"mode": "ops"}, "stages": [stage]}))
    return str(path)


def _forget_draws() -> None:
    """Replay as a fresh process would: no draw of sample() left to reuse."""
    albument._local.__dict__.pop("last", None)


@pytest.mark.parametrize("transform,args", CASES, ids=[f"{t}-{a.get('method', a.get('compression_type', ''))}"
                                                       for t, a in CASES])
def test_replay_from_the_record_is_bit_exact(tmp_path, transform, args):
    recipe = load_recipe(_recipe(tmp_path, transform, args))
    hq = synthetic_photo(96, 96, 3)
    for index in range(3):
        out = degrade(hq, recipe, np.random.default_rng([0, 0, index]))
        assert not np.array_equal(out.lq, hq)  # it did something
        stored = json.loads(json.dumps(out.ops, sort_keys=True))  # what the record holds
        _forget_draws()
        assert np.array_equal(replay(hq, stored, False), out.lq)
        params = stored[0]["params"]
        assert params["transform"] == transform and params["albumentations"] == albument.version()
        # the stored values are the transform's own: albumentations' __call__ with the same seeded generators
        t = albument.transform_class(transform)(**args, p=1.0)
        t.set_random_state(np.random.default_rng(params["seed"]), random.Random(params["seed"]))
        own = t(image=hq.astype(np.float32) / np.float32(255.0))
        for name, value in params["drawn"].items():
            if "regenerate" in (value if isinstance(value, dict) else {}):
                assert albument.digest(t.get_applied_params()[name]) == value["regenerate"]["sha256"]
            else:
                assert albument.digest(albument.decode(value)) == albument.digest(t.get_applied_params()[name]), name
        np.testing.assert_array_equal(np.clip(np.rint(own["image"] * 255), 0, 255).astype(np.uint8), out.lq)


def test_large_draws_are_stored_as_sha256_and_checked(tmp_path):
    recipe = load_recipe(_recipe(tmp_path, "RandomSnow", {"method": "texture"}))
    hq = synthetic_photo(64, 64, 1)
    out = degrade(hq, recipe, np.random.default_rng(5))
    drawn = out.ops[0]["params"]["drawn"]
    assert drawn["snow_texture"]["regenerate"]["what"] == "ndarray <f8 [64, 64]"
    assert len(json.dumps(out.ops)) < 2000
    bad = json.loads(json.dumps(out.ops))
    bad[0]["params"]["drawn"]["snow_texture"]["regenerate"]["sha256"] = "0" * 64
    _forget_draws()
    with pytest.raises(ValueError, match="drawn again from the stored seed differs"):
        replay(hq, bad, False)


def test_typed_values_round_trip():
    values = [(1, 2.5), np.arange(6, dtype=np.int32).reshape(3, 2), np.float32(0.1), np.int64(7), [(0.1, (3, 4))],
              {"a": np.zeros(2, np.uint8)}, None, "x", True]
    for v in values:
        back = albument.decode(json.loads(json.dumps(albument.encode(v))))
        assert albument.digest(back) == albument.digest(v), v
    assert type(albument.decode(albument.encode(np.float32(0.1)))) is np.float32
    with pytest.raises(ValueError, match="non-finite"):
        albument.encode(float("nan"))


def test_randomness_comes_from_the_given_generator_only(tmp_path):
    recipe = load_recipe(_recipe(tmp_path, "RandomRain", {}))
    hq = synthetic_photo(48, 48, 2)
    runs = []
    for global_seed in (1, 2):
        np.random.seed(global_seed)
        random.seed(global_seed)
        runs.append(degrade(hq, recipe, np.random.default_rng(9)))
    assert runs[0].ops == runs[1].ops and np.array_equal(runs[0].lq, runs[1].lq)
    other = degrade(hq, recipe, np.random.default_rng(10))
    assert other.ops[0]["params"]["drawn"] != runs[0].ops[0]["params"]["drawn"]


def test_labels_and_prompts(tmp_path):
    hq = synthetic_photo(48, 48, 2)
    expect = {"RandomRain": ("rain", "Remove the rain"), "RandomSnow": ("snow", "Remove the snow"),
              "RandomFog": ("haze", "Remove the haze"), "RandomSunFlare": ("flare", "Remove the sun flare"),
              "ISONoise": ("noise", "Denoise")}
    for transform, (label, text) in expect.items():
        out = degrade(hq, load_recipe(_recipe(tmp_path, transform, {})), np.random.default_rng(0))
        assert (out.labels, out.prompt) == ([label], text)
    out = degrade(hq, load_recipe(_recipe(tmp_path, "ImageCompression", {"quality_range": [30, 30]})),
                  np.random.default_rng(0))
    assert (out.labels, out.prompt) == (["jpeg"], "Dejpeg with quality 30")


@pytest.mark.parametrize("stage,match", [
    ({"transform": "RandomRian"}, "did you mean 'RandomRain'"),
    ({"transform": "HorizontalFlip"}, "not pixel-level"),
    ({"transform": "ImageOnlyTransform"}, "not an albumentations transform"),
    ({"transform": "RandomRain", "args": {"p": 0.5}}, "not allowed"),
    ({"transform": "RandomRain", "args": {"slant_rang": [1, 2]}}, "not valid for transform RandomRain"),
    ({"transform": "RandomRain", "args": {"slant_range": [30, -5]}}, "First value should be less"),
    ({"transform": "RandomRain", "degradation": "drizzle"}, "not a degradation label"),
    ({}, "needs 'transform'"),
])
def test_bad_stages_are_recipe_errors(tmp_path, stage, match):
    path = tmp_path / "bad.yaml"
    path.write_text(json.dumps({"name": "bad", "version": "1", "stages": [{"op": "albumentations", **stage}]}))
    with pytest.raises(RecipeError, match=match):
        load_recipe(str(path))


def test_shipped_recipe_builds_and_every_record_replays(tmp_path, photos, capsys):
    out = tmp_path / "shards"
    build(quick_config(out, photos, pipeline="albumentations-weather", num_samples=8, crop_size=48, shard_size=4))
    seen: set[str] = set()
    for shard in shard_paths(out):
        for key, rec, _ in iter_records(shard):
            ops = json.loads(rec["ops"])
            seen |= {o["params"]["transform"] for o in ops}
            _forget_draws()
            assert degrade_main(["replay", str(out), key]) == 0
            assert "identical" in capsys.readouterr().out
    assert {"ISONoise", "ImageCompression"} <= seen and seen & {"RandomRain", "RandomSnow", "RandomFog",
                                                                  "RandomSunFlare"}


def test_degrading_with_albumentations_imports_no_torch_and_fetches_nothing():
    code = ("import os, sys, numpy as np\n"
            "from pirs.degrade import degrade, load_recipe\n"
            "r = load_recipe('albumentations-weather')\n"
            "out = degrade(np.full((32, 32, 3), 128, np.uint8), r, np.random.default_rng(0))\n"
            "print('torch' in sys.modules, os.environ.get('NO_ALBUMENTATIONS_UPDATE'))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "1"]


def test_the_build_fingerprint_names_the_albumentations_version(monkeypatch, photos):
    from pirs.degrade.build import fingerprint, scan_inputs

    cfg = quick_config(Path("unused"), photos, pipeline="albumentations-weather")
    sources, _, _ = scan_inputs(cfg)
    recipe = load_recipe("albumentations-weather")
    plain_cfg = quick_config(Path("unused"), photos)
    before = fingerprint(cfg, recipe, sources), fingerprint(plain_cfg, load_recipe("realesrgan"), sources)
    monkeypatch.setattr(albument, "version", lambda: "0.0.0")  # a resumed build on another albumentations
    after = fingerprint(cfg, recipe, sources), fingerprint(plain_cfg, load_recipe("realesrgan"), sources)
    assert before[0] != after[0] and before[1] == after[1]
