"""Recipes as data: loading, validation, include/override, parameter distributions, prompts."""

from __future__ import annotations

import math
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from pirs.degrade import degrade, list_recipes, load_recipe
from pirs.degrade.ops import get as get_op
from pirs.degrade.recipe import RecipeError

N = 1500  # samples per distribution check; 4 standard errors of a proportion at N=1500 is < 0.052


def _runs(name: str, n: int = N, size: int = 16, seed: int = 0):
    recipe = load_recipe(name)
    hq = np.full((size, size, 3), 128, np.uint8)
    hq[:, : size // 2] = 40
    return [degrade(hq, recipe, np.random.default_rng([seed, 0, i])) for i in range(n)]


def _close(count: int, n: int, p: float) -> bool:
    return abs(count / n - p) <= 4 * math.sqrt(p * (1 - p) / n) + 1e-9


def _by_id(runs, sid: str):
    return [o for r in runs for o in r.ops if o["id"] == sid]


def test_shipped_recipes_load_with_stable_hashes():
    names = list_recipes()
    assert {"realesrgan", "parameterized", "mixed", "realesrgan-light"} <= set(names)
    for name in names:
        a, b = load_recipe(name), load_recipe(name)
        assert a.hash == b.hash and len(a.hash) == 64
    assert len({load_recipe(n).hash for n in names}) == len(names)


def test_realesrgan_light_changes_only_ranges():
    base, light = load_recipe("realesrgan").resolved, load_recipe("realesrgan-light").resolved

    def flat(stages, out):
        for st in stages:
            if "one_of" in st:
                for br in st["one_of"]:
                    flat(br, out)
            else:
                out[st["id"]] = st
        return out

    fb, fl = flat(base["stages"], {}), flat(light["stages"], {})
    assert list(fb) == list(fl)
    changed = {sid: {k for k in fb[sid] if fb[sid][k] != fl[sid].get(k)} for sid in fb}
    changed = {k: v for k, v in changed.items() if v}
    assert changed == {
        "blur1": {"sigma", "beta_g", "beta_p"}, "resize1": {"range"}, "noise1": {"sigma", "poisson_scale"},
        "jpeg1": {"quality"}, "blur2": {"p", "sigma", "beta_g", "beta_p"}, "resize2": {"range"},
        "noise2": {"sigma", "poisson_scale"}, "jpeg2_a": {"quality"}, "jpeg2_b": {"quality"},
    }
    assert fl["noise1"]["sigma"] == [1.0, 15.0] and fl["jpeg2_a"]["quality"] == [60, 100]


@pytest.mark.parametrize("body,match", [
    ("name: x\nversion: '1'\nstages: [{op: blurr}]\n", "did you mean 'blur'"),
    ("name: x\nversion: '1'\nstages: [{op: blur, sigmaa: [1, 2]}]\n", "unknown keys \\['sigmaa'\\]"),
    ("name: x\nversion: '1'\nstages: [{op: blur, sigma: [3, 1]}]\n", "low <= high"),
    ("name: x\nversion: '1'\nstages: [{op: jpeg, quality: [0, 50]}]\n", ">= 1"),
    ("name: x\nversion: '1'\nstages: [{op: noise, p: 1.5}]\n", "probability"),
    ("name: x\nversion: '1'\nstages: [{op: resize, directions: {up: 0.5, down: 0.4}}]\n", "sum to 1"),
    ("name: x\nversion: '1'\nstages: [{one_of: [[{op: jpeg}]], weights: [0.5, 0.5]}]\n", "2 weights for 1"),
    ("name: x\nversion: '1'\nstages: [{op: jpeg}]\ncolour: red\n", "unknown keys \\['colour'\\]"),
    ("name: x\nstages: []\n", "missing required key 'version'"),
    ("include: realesrgan\noverride: {nosuch: {p: 0.1}}\n", "do not exist"),
    ("name: x\nversion: '1'\nscale: 0\nstages: []\n", "scale must be a positive integer"),
    ("[1, 2]\n", "must be a mapping"),
    ("name: x\nversion: '1'\nstages: [{op: jpeg}\n", "not valid YAML"),
])
def test_bad_recipes_fail_loudly_naming_the_file(tmp_path: Path, body, match):
    path = tmp_path / "bad.yaml"
    path.write_text(body)
    with pytest.raises(RecipeError, match=match) as e:
        load_recipe(str(path))
    assert "bad.yaml" in str(e.value)


def test_include_cycle_and_unknown_name(tmp_path: Path):
    (tmp_path / "a.yaml").write_text("include: b\nname: a\nversion: '1'\n")
    (tmp_path / "b.yaml").write_text("include: a\nname: b\nversion: '1'\n")
    with pytest.raises(RecipeError, match="cycle"):
        load_recipe(str(tmp_path / "a.yaml"))
    with pytest.raises(RecipeError, match="Did you mean 'realesrgan'"):
        load_recipe("realesrgam")


def test_realesrgan_first_order_distributions():
    runs = _runs("realesrgan")
    blur1 = [o["params"] for o in _by_id(runs, "blur1")]
    assert len(blur1) == N
    kinds = Counter(p["kernel"] for p in blur1)
    assert _close(kinds["sinc"], N, 0.1)
    for kind, p in {"iso": 0.45, "aniso": 0.25, "generalized_iso": 0.12, "plateau_iso": 0.12}.items():
        assert _close(kinds[kind], N, 0.9 * p), (kind, kinds)
    assert {p["size"] for p in blur1} == set(range(7, 22, 2))
    gauss = [p for p in blur1 if p["kernel"] != "sinc"]
    assert all(0.2 <= p["sigma_x"] <= 3.0 and 0.2 <= p["sigma_y"] <= 3.0 for p in gauss)
    assert all(p["sigma_x"] == p["sigma_y"] and p["theta"] == 0 for p in gauss if p["kernel"].endswith("_iso")
               or p["kernel"] == "iso")
    assert all(0.5 <= p["beta"] <= 4.0 for p in gauss if p["kernel"].startswith("generalized"))
    assert all(1.0 <= p["beta"] <= 2.0 for p in gauss if p["kernel"].startswith("plateau"))
    sincs = [p for p in blur1 if p["kernel"] == "sinc"]
    assert all((math.pi / 3 if p["size"] < 13 else math.pi / 5) <= p["omega_c"] <= math.pi for p in sincs)
    r1 = [o["params"] for o in _by_id(runs, "resize1")]
    drawn = Counter("up" if p["factor"] > 1 else "down" if p["factor"] < 1 else "keep" for p in r1)
    assert _close(drawn["up"], N, 0.2) and _close(drawn["down"], N, 0.7) and _close(drawn["keep"], N, 0.1)
    assert all(0.15 <= p["factor"] <= 1.5 for p in r1)
    assert {p["mode"] for p in r1} == {"area", "bilinear", "bicubic"}
    n1 = [o["params"] for o in _by_id(runs, "noise1")]
    gauss_n = [p for p in n1 if p["kind"] == "gaussian"]
    assert _close(len(gauss_n), N, 0.5) and _close(sum(p["gray"] for p in n1), N, 0.4)
    assert all(1 <= p["sigma"] <= 30 for p in gauss_n)
    assert all(0.05 <= p["scale"] <= 3 for p in n1 if p["kind"] == "poisson")
    q = [o["params"]["quality"] for o in _by_id(runs, "jpeg1")]
    assert min(q) == 30 and max(q) == 95


def test_realesrgan_second_order_and_final_distributions():
    runs = _runs("realesrgan")
    blur2 = [o["params"] for o in _by_id(runs, "blur2")]
    assert _close(len(blur2), N, 0.8)
    assert all(0.2 <= p["sigma_x"] <= 1.5 for p in blur2 if p["kernel"] != "sinc")
    r2 = [o["params"] for o in _by_id(runs, "resize2")]
    drawn = Counter("up" if p["factor"] > 1 else "down" if p["factor"] < 1 else "keep" for p in r2)
    assert _close(drawn["up"], N, 0.3) and _close(drawn["down"], N, 0.4) and _close(drawn["keep"], N, 0.3)
    assert all(0.3 <= p["factor"] <= 1.2 for p in r2)
    n2 = [o["params"] for o in _by_id(runs, "noise2")]
    assert all(1 <= p["sigma"] <= 25 for p in n2 if p["kind"] == "gaussian")
    assert all(0.05 <= p["scale"] <= 2.5 for p in n2 if p["kind"] == "poisson")
    order_a = sum(1 for r in runs if any(o["id"] == "final_resize_a" for o in r.ops))
    assert _close(order_a, N, 0.5)
    sinc = len(_by_id(runs, "final_sinc_a")) + len(_by_id(runs, "final_sinc_b"))
    assert _close(sinc, N, 0.8)
    for r in runs:
        ids = [o["id"] for o in r.ops]
        tail = ids[ids.index("noise2") + 1:]
        assert tail in (["final_resize_a", "final_sinc_a", "jpeg2_a"], ["final_resize_a", "jpeg2_a"],
                        ["jpeg2_b", "final_resize_b", "final_sinc_b"], ["jpeg2_b", "final_resize_b"])
        assert r.lq.shape == (4, 4, 3) and r.prompt == "Remove all degradation" and r.scale == 4


PROMPT = re.compile(r"^(Deblur with sigma \d+\.\d|Deblur|Upsample to \d+\.\dx|Upsample|Denoise with sigma \d\.\d\d|"
                    r"Denoise|Dejpeg with quality \d+|Dejpeg)$")


def _applied(r):
    """The ops of a run that changed the image (a downsample 'keep' at scale 1 is a no-op)."""
    return [o for o in r.ops if o["id"] != "output_size" and o["params"].get("direction") != "keep"]


def test_parameterized_stages_prompts_and_order():
    runs = _runs("parameterized", size=32)
    order = ["blur", "downsample", "noise", "jpeg"]
    verbs = {"blur": "Deblur", "downsample": "Upsample", "noise": "Denoise", "jpeg": "Dejpeg"}
    counts = Counter()
    bare = 0
    for r in runs:
        applied = _applied(r)
        ids = [o["id"] for o in applied]
        assert ids == [s for s in order if s in ids]  # SPIRE's order (Sec. 4.1: phrases follow the degradations)
        counts.update(ids)
        assert r.lq.shape == (32, 32, 3) and r.scale == 1
        if not applied:
            assert r.prompt == "Remove all degradation"
            continue
        parts = r.prompt.split("; ")
        assert len(parts) == len(applied)
        for part, o in zip(parts, applied, strict=True):
            assert PROMPT.match(part), part
            assert part.startswith(verbs[o["id"]]) and part == o["prompt"]
            regenerated = get_op(o["op"]).prompt(o["params"], bare=False)
            if part == verbs[o["id"]]:
                bare += 1
            else:
                assert part == regenerated  # the stored parameters say exactly what the text says
        assert r.labels == [{"blur": "blur", "downsample": "downsample", "noise": "noise", "jpeg": "jpeg"}[i]
                            for i in ids]
    # The downsample's p 0.5 is its 'keep' direction; a drawn factor above 1/1.05 prints (and is) "1.0x", a keep.
    p_down = 0.5 * (1 - (1 - 1 / 1.05) / 0.85)
    for sid in order:
        assert _close(counts[sid], N, p_down if sid == "downsample" else 0.5), (sid, counts)
    assert _close(bare, sum(counts.values()), 0.1)


def test_parameterized_prompt_values_match_parameters():
    """SPIRE's wording and printed precision (Table 2, Sec. 4.4), each parameter on the grid the text prints."""
    runs = _runs("parameterized", n=400, size=32)
    seen = Counter()
    for r in runs:
        for o in _applied(r):
            p, text = o["params"], o["prompt"]
            if text in ("Deblur", "Upsample", "Denoise", "Dejpeg"):
                continue
            seen[o["id"]] += 1
            if o["id"] == "blur":
                assert text == f"Deblur with sigma {p['sigma_x']:.1f}" and p["sigma_x"] == round(p["sigma_x"], 1)
                assert p["kernel"] == "iso" and 0.2 <= p["sigma_x"] <= 5.0
            if o["id"] == "noise":  # 0-1 scale, two decimals ("Denoise with sigma 0.06"); stored on 0-255
                unit = p["sigma"] / 255
                assert text == f"Denoise with sigma {unit:.2f}" and abs(unit * 100 - round(unit * 100)) < 1e-9
                assert p["kind"] == "gaussian" and 0.01 <= round(unit, 2) <= 0.24 and p["sigma"] > 1.0
            if o["id"] == "jpeg":
                assert text == f"Dejpeg with quality {p['quality']}" and 30 <= p["quality"] <= 95
            if o["id"] == "downsample":
                assert text == f"Upsample to {p['upsample']:.1f}x" and p["upsample"] == round(p["upsample"], 1)
                assert p["factor"] == pytest.approx(1 / p["upsample"]) and 0.15 <= p["factor"] <= 1.0
    assert set(seen) == {"blur", "downsample", "noise", "jpeg"}
    assert get_op("noise").prompt({"kind": "gaussian", "sigma": 15.3}, bare=False) == "Denoise with sigma 0.06"
    assert get_op("noise").prompt({"kind": "gaussian", "sigma": 61.2}, bare=False) == "Denoise with sigma 0.24"


@pytest.mark.parametrize("name", ["parameterized", "noise-range", "mixed2", "mixed3"])
def test_drawn_noise_sigmas_print_exactly(name):
    """Every recipe that draws a noise sigma draws it on the two-decimal grid of SPIRE's 0-1 scale."""
    n = 0
    for r in _runs(name, n=150, size=16, seed=2):
        for o in r.ops:
            if o["op"] == "noise" and o["params"]["kind"] == "gaussian":
                unit = o["params"]["sigma"] / 255
                assert abs(unit * 100 - round(unit * 100)) < 1e-9, (name, o["params"])
                assert o["prompt"] in (f"Denoise with sigma {unit:.2f}", "Denoise")
                n += 1
    assert n > 10


def test_fixed_diffrestorer_sigma_keeps_its_value_and_prints_rounded():
    """Diff-Restorer's sigma 50 (0-255) stays 50; SPIRE's two-decimal text rounds 0.196 to 0.20 (README)."""
    (r,) = _runs("noise", n=1)
    assert r.ops[0]["params"]["sigma"] == 50.0 and r.prompt == "Denoise with sigma 0.20"


def test_parameterized_ranges_hold_the_papers_test_prompts():
    """Every parameter the paper prompts with (Sec. 1, 4.4, Tab. 4, Fig. 3, 7, 9) is inside the training ranges."""
    stages = {st.id: st for st in load_recipe("parameterized").stages}
    blur, down, noise = stages["blur"].spec, stages["downsample"].spec, stages["noise"].spec
    for sigma in (0.6, 1.0, 2.0, 2.9, 3.0, 3.5, 5.0):  # Tab. 4, Fig. 9, Fig. 3/7, Sec. 1 ("deblur with sigma 3.5")
        assert blur.sigma[0] <= sigma <= blur.sigma[1], sigma
    for unit in (0.06, 0.24):  # Sec. 4.4 / Fig. 7, on the 0-1 scale
        assert noise.sigma[0] <= unit * 255 <= noise.sigma[1] and noise.unit_decimals == 2
    assert down.range[0] <= 1 / 6.0 <= down.range[1] and down.upsample_decimals == 1  # Fig. 9 "Upsample to 6.0x"
    assert blur.kernel_sizes == [7, 9, 11, 13, 15, 17, 19, 21] and blur.kernel_types == {"iso": 1.0}  # Real-ESRGAN's


def test_parameterized_at_scale_4_says_the_whole_upsample():
    """``--scale 4``: the LQ is a quarter of the HQ and the prompt says so, the drawn downsample included."""
    recipe = load_recipe("parameterized")
    hq = np.full((64, 64, 3), 128, np.uint8)
    hq[:, :32] = 40
    ups = []
    for i in range(300):
        r = degrade(hq, recipe, np.random.default_rng([3, i]), scale=4)
        assert r.lq.shape == (16, 16, 3) and r.scale == 4 and "downsample" in r.labels
        (down,) = [o for o in r.ops if o["id"] == "downsample"]
        ids = [o["id"] for o in r.ops]
        assert ids.index("downsample") < min((ids.index(k) for k in ("noise", "jpeg") if k in ids), default=99)
        assert ids[-1] == "output_size"  # noise and JPEG act on the smallest grid, then back to HQ/4
        up = down["params"]["upsample"]
        smallest = min(o["params"]["size"][0] for o in r.ops if o["op"] == "resize")
        assert smallest == down["params"]["size"][0] and 4.0 <= up <= 4 / 0.15
        assert abs(64 / up - smallest) < 1.0  # the factor a model seeing the LQ at HQ size has to undo
        phrase = [p for p in r.prompt.split("; ") if p.startswith("Upsample")]
        assert phrase == [f"Upsample to {up:.1f}x"] or phrase == ["Upsample"]
        ups.append(up)
    assert ups.count(4.0) > 100 and max(ups) > 12  # no extra downsample half the time: "Upsample to 4.0x"


def test_mixed_draws_each_pipeline_half_the_time():
    runs = _runs("mixed", n=600, size=16)
    branches = Counter(r.branch for r in runs)
    assert _close(branches["realesrgan"], 600, 0.5)
    for r in runs:
        assert r.lq.shape == (16, 16, 3)  # upsampled back to HQ size
        if r.branch == "realesrgan":
            assert r.prompt == "Remove all degradation" and r.scale == 4 and r.upsampled
        else:
            assert r.scale == 1 and not r.upsampled


def test_same_generator_state_same_run():
    recipe = load_recipe("realesrgan")
    hq = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    a = degrade(hq, recipe, np.random.default_rng([5, 0, 9]))
    b = degrade(hq, recipe, np.random.default_rng([5, 0, 9]))
    c = degrade(hq, recipe, np.random.default_rng([5, 0, 10]))
    assert np.array_equal(a.lq, b.lq) and a.ops == b.ops
    assert a.ops != c.ops


def test_a_folder_named_like_a_recipe_does_not_hide_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "realesrgan").mkdir()
    assert load_recipe("realesrgan").name == "realesrgan"


@pytest.mark.parametrize("body,match", [
    ("op: noise\n    unit_decimals: 9", "unit_decimals must be an integer in 0..6"),
    ("op: noise\n    sigma: [1.0, 2.0]\n    unit_decimals: 2", "holds no multiple"),
    ("op: resize\n    upsample_decimals: 1\n    directions: {up: 1.0}\n    range: [1.0, 2.0]",
     "upsample_decimals is for"),
    ("op: resize\n    upsample_decimals: 1\n    target: true", "upsample_decimals is for"),
])
def test_prompt_grid_options_are_validated(tmp_path, body, match):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"name: bad\nversion: '1'\nstages:\n  - {body}\n")
    with pytest.raises(RecipeError, match=match):
        load_recipe(str(bad))
