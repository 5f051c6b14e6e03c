"""The template and source backends: captions from known parameters and existing captions."""

from __future__ import annotations

import json

import pytest

from pirs.captioning.backend import XPSR_INSTRUCTIONS, CaptionError, Item
from pirs.captioning.instructions import InstructionError, load_instructions, select
from pirs.captioning.source import SourceBackend
from pirs.captioning.template import TemplateBackend, describe_ops, low_level_caption
from pirs.degrade.schema import empty_record

HIGH, LOW = XPSR_INSTRUCTIONS["high"], XPSR_INSTRUCTIONS["low"]


def _rec(ops: list[dict], key: str = "00000001", hq: int = 512, **kw) -> dict:
    return dict(empty_record(), key=key, hq_size=[hq, hq], ops=json.dumps(ops), **kw)


def test_spire_parameters_give_the_example_sentence():
    ops = [{"op": "blur", "params": {"kernel": "iso", "size": 21, "sigma_x": 2.1, "sigma_y": 2.1, "theta": 0.0}},
           {"op": "resize", "params": {"direction": "down", "factor": 0.3125, "size": [160, 160], "mode": "area"}},
           {"op": "noise", "params": {"kind": "gaussian", "sigma": 15.0, "scale": None, "gray": False, "seed": 1}},
           {"op": "jpeg", "params": {"quality": 45}},
           {"op": "resize", "params": {"direction": "up", "factor": 3.2, "size": [512, 512], "mode": "bicubic"}}]
    assert low_level_caption(_rec(ops)) == ("The image is blurred (sigma 2.1) and downscaled by 3.2, with Gaussian "
                                             "noise (sigma 15) and JPEG blocking (quality 45).")


def test_blur_kinds_noise_kinds_and_nothing():
    aniso = {"op": "blur", "params": {"kernel": "aniso", "sigma_x": 0.8, "sigma_y": 2.04, "theta": 0.1}}
    gen = {"op": "blur", "params": {"kernel": "generalized_iso", "sigma_x": 1.45, "sigma_y": 1.45, "beta": 2.0}}
    sinc = {"op": "blur", "params": {"kernel": "sinc", "size": 11, "omega_c": 1.8}}
    pois = {"op": "noise", "params": {"kind": "poisson", "scale": 2.2, "sigma": None, "gray": True, "seed": 3}}
    usm = {"op": "usm_sharpen", "params": {"radius": 50}}
    assert describe_ops([usm, aniso, gen], [64, 64]) == \
        "The image is blurred (anisotropic, sigma 0.8 x 2.0, then sigma 1.4, generalized Gaussian)."
    assert describe_ops([sinc, pois], [64, 64]) == "The image has grey Poisson noise (scale 2.2) and ringing artifacts."
    assert describe_ops([usm], [64, 64]) == "The image shows no visible degradation."
    assert describe_ops([], [64, 64]) == "The image shows no visible degradation."
    keep = {"op": "resize", "params": {"direction": "keep", "factor": 1.0, "size": [64, 64]}}
    assert describe_ops([keep, {"op": "jpeg", "params": {"quality": 30}}, {"op": "jpeg", "params": {"quality": 90}}],
                        [64, 64]) == "The image has JPEG blocking (quality 30, then 90)."
    # Real-ESRGAN x4: the LQ is a quarter of the HQ, whatever the per-op factors say
    down = {"op": "resize", "params": {"direction": "down", "factor": 1.0, "grid": "size", "size": [8, 8]}}
    assert describe_ops([down], [32, 32]) == "The image is downscaled by 4.0."


def test_template_backend_high_is_the_source_caption_or_nothing():
    b = TemplateBackend()
    items = [Item("a", _rec([], "a", caption_source="two dogs on a beach"), None), Item("b", _rec([], "b"), None)]
    assert b.caption(items, HIGH) == ["two dogs on a beach", None]
    assert b.caption(items, LOW) == ["The image shows no visible degradation."] * 2
    with pytest.raises(CaptionError, match="not valid JSON"):
        b.caption([Item("c", dict(_rec([], "c"), ops="[{"), None)], LOW)
    assert b.provenance(LOW, "lq")["backend"] == "template" and not b.needs_pixels


def test_source_backend_copies_a_field_or_a_text_file(tmp_path):
    b = SourceBackend()
    assert b.caption([Item("a", _rec([], "a", caption_source=" a red car "), None)], HIGH) == ["a red car"]
    with pytest.raises(CaptionError, match="caption_source is empty"):
        b.caption([Item("b", _rec([], "b"), None)], HIGH)
    (tmp_path / "caps").mkdir()
    (tmp_path / "caps" / "00000007.txt").write_text("by key\n")
    (tmp_path / "caps" / "kodim01.txt").write_text("by source stem")
    d = SourceBackend(source_dir=str(tmp_path / "caps"))
    got = d.caption([Item("00000007", _rec([], "00000007"), None),
                     Item("00000008", _rec([], "00000008", source_path="photos/kodim01.png"), None)], HIGH)
    assert got == ["by key", "by source stem"]
    with pytest.raises(CaptionError, match="no caption file"):
        d.caption([Item("00000009", _rec([], "00000009", source_path="../../etc/passwd"), None)], HIGH)
    with pytest.raises(ValueError, match="not a text field"):
        SourceBackend(source_field="scale")


def test_instructions_from_yaml(tmp_path):
    f = tmp_path / "my.yaml"
    f.write_text("instructions:\n  semantic:\n    field: caption_high\n    text: Describe it in 60 words.\n")
    got = load_instructions(f)
    assert got["semantic"].field == "caption_high" and set(XPSR_INSTRUCTIONS) <= set(got)
    assert [i.name for i in select(["low", "semantic"], got)] == ["low", "semantic"]
    with pytest.raises(InstructionError, match="did you mean 'semantic'"):
        select(["semantc"], got)
    with pytest.raises(InstructionError, match="both fill caption_high"):
        select(["high", "semantic"], got)
    f.write_text("instructions:\n  x:\n    field: caption_meta\n    text: hi\n")
    with pytest.raises(InstructionError, match="field must be one of"):
        load_instructions(f)
    f.write_text("instructions:\n  high:\n    field: caption_high\n    text: hi\n")
    with pytest.raises(InstructionError, match="redefines a built-in"):
        load_instructions(f)
