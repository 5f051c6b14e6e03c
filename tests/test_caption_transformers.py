"""The transformers backend end to end through real transformers code, with tiny random models built offline.

Three families (LLaVA, Qwen2-VL, Idefics3 = SmolVLM's architecture), each from its config class, with its own
processor and chat template: batched equals one at a time, greedy is deterministic, instructions go in verbatim.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import synthetic_photo
from pirs.captioning.backend import BUILTIN_INSTRUCTIONS, XPSR_INSTRUCTIONS, CaptionError, Instruction, Item
from pirs.captioning.tiny import FAMILIES, make_tiny, make_tiny_llava
from pirs.captioning.vlm import LLAVA15_PROMPT, MissingWeightsError, TransformersBackend, _resolve_device_dtype

# What each family's chat template makes of one user turn (image, then the instruction).
EXPECTED_PROMPTS = {
    "llava": "USER: <image>\n{text} ASSISTANT:",
    "qwen2-vl": "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                "<|vision_start|><|image_pad|><|vision_end|>{text}<|im_end|>\n<|im_start|>assistant\n",
    "idefics3": "<|begin_of_text|>User:<image>{text}<end_of_utterance>\nAssistant:",
}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return make_tiny_llava(tmp_path_factory.mktemp("tiny") / "llava", seed=0)


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family_dir(request, tmp_path_factory) -> tuple[str, Path]:
    return request.param, make_tiny(request.param, tmp_path_factory.mktemp("tiny") / request.param, seed=0)


@pytest.fixture(scope="module")
def eos_dir(tmp_path_factory) -> Path:
    return make_tiny_llava(tmp_path_factory.mktemp("tiny") / "llava-eos", seed=0, eos_only=True)


def _items(n: int, sizes=((40, 56), (64, 48), (33, 33), (80, 120), (48, 48))) -> list[Item]:
    return [Item(f"rec{i:03d}", {}, synthetic_photo(*sizes[i % len(sizes)], seed=i)) for i in range(n)]


class _Spy:
    """Wraps a callable and keeps the arguments and results of every call."""

    def __init__(self, fn):
        self.fn, self.calls = fn, []

    def __call__(self, *args, **kwargs):
        result = self.fn(*args, **kwargs)
        self.calls.append((args, kwargs, result))
        return result


def test_tiny_checkpoint_round_trips(tiny_dir):
    from transformers import AutoProcessor, LlavaForConditionalGeneration, LlavaProcessor

    names = {p.name for p in tiny_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names
    model = LlavaForConditionalGeneration.from_pretrained(tiny_dir, local_files_only=True)
    processor = AutoProcessor.from_pretrained(tiny_dir, local_files_only=True)
    assert isinstance(processor, LlavaProcessor)
    assert sum(p.numel() for p in model.parameters()) < 30_000
    assert processor.tokenizer.pad_token is not None and processor.chat_template


def test_every_family_loads_through_the_auto_classes(family_dir):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    family, path = family_dir
    model = AutoModelForImageTextToText.from_pretrained(path, local_files_only=True)
    processor = AutoProcessor.from_pretrained(path, local_files_only=True)
    assert sum(p.numel() for p in model.parameters()) < 30_000
    assert processor.chat_template and processor.tokenizer.pad_token is not None
    b = TransformersBackend(str(path), batch_size=2, max_new_tokens=3)
    assert b.name == "transformers" and b.settings["model_type"] == model.config.model_type
    assert b.settings["architecture"] == type(model).__name__
    assert b.settings["chat_template"].startswith("sha256:")
    assert TransformersBackend.describe(str(path), batch_size=2, max_new_tokens=3) == b.settings


def test_every_family_batched_equals_one_at_a_time_and_is_deterministic(family_dir, tmp_path):
    family, path = family_dir
    items = _items(5)
    texts = ["Describe.", "Please describe this picture in one sentence, with its colors and lighting.",
             XPSR_INSTRUCTIONS["low"].text, BUILTIN_INSTRUCTIONS["spire-long"].text, "What is in the image?"]
    batched = TransformersBackend(str(path), batch_size=5, max_new_tokens=10)
    got = batched.generate([it.image for it in items], texts)
    single = TransformersBackend(str(path), batch_size=1, max_new_tokens=10)
    assert got == [single.generate([it.image], [t])[0] for it, t in zip(items, texts, strict=True)]
    assert all(got) and len(set(got)) == 5
    assert batched.generate([it.image for it in items], texts) == got  # greedy: the same again
    again = TransformersBackend(str(make_tiny(family, tmp_path / "again", seed=0)), batch_size=2, max_new_tokens=10)
    assert again.generate([it.image for it in items], texts) == got  # the same model built again
    other = TransformersBackend(str(make_tiny(family, tmp_path / "other", seed=1)), batch_size=5, max_new_tokens=10)
    assert other.generate([it.image for it in items], texts) != got


def test_every_family_gets_the_instructions_verbatim_in_its_own_template(family_dir, monkeypatch):
    family, path = family_dir
    b = TransformersBackend(str(path), batch_size=8, max_new_tokens=4)
    seen: list = []
    real = b.processor.__class__.__call__

    def spy(self, *args, **kwargs):
        seen.append(kwargs["text"])
        return real(self, *args, **kwargs)

    monkeypatch.setattr(b.processor.__class__, "__call__", spy)
    for inst in BUILTIN_INSTRUCTIONS.values():
        assert len(b.caption(_items(2), inst)) == 2
        expected = EXPECTED_PROMPTS[family].format(text=inst.text)
        assert seen[-1] == [expected, expected]


def test_batched_left_padding_equals_one_at_a_time(tiny_dir):
    images = [it.image for it in _items(3)]
    texts = ["Describe.", "Please describe this picture in one sentence, with its colors and lighting.",
             XPSR_INSTRUCTIONS["low"].text]
    batched = TransformersBackend(str(tiny_dir), batch_size=3, max_new_tokens=12)
    got = batched.generate(images, texts)
    single = TransformersBackend(str(tiny_dir), batch_size=1, max_new_tokens=12)
    want = [single.generate([img], [t])[0] for img, t in zip(images, texts, strict=True)]
    assert got == want
    assert all(got) and len(set(got)) == 3
    # the batch really was padded, on the left
    inputs = batched.processor(images=[_pil(i) for i in images], text=[batched.prompt(t) for t in texts],
                               padding=True, return_tensors="pt")
    mask = inputs["attention_mask"]
    assert (mask[:, -1] == 1).all() and (mask[0, 0] == 0) and (mask[2, 0] == 1)


def _pil(img):
    from PIL import Image

    return Image.fromarray(img)


def test_greedy_is_deterministic_and_seeded(tiny_dir, tmp_path):
    items = _items(5)
    b = TransformersBackend(str(tiny_dir), batch_size=4, max_new_tokens=10)
    first = b.caption(items, XPSR_INSTRUCTIONS["high"])
    assert first == b.caption(items, XPSR_INSTRUCTIONS["high"])
    again = TransformersBackend(str(make_tiny_llava(tmp_path / "again", seed=0)), batch_size=2, max_new_tokens=10)
    assert again.caption(items, XPSR_INSTRUCTIONS["high"]) == first
    other = TransformersBackend(str(make_tiny_llava(tmp_path / "other", seed=1)), batch_size=4, max_new_tokens=10)
    assert other.caption(items, XPSR_INSTRUCTIONS["high"]) != first


def test_chat_template_and_xpsr_instructions_verbatim(tiny_dir, monkeypatch):
    b = TransformersBackend(str(tiny_dir), batch_size=8, max_new_tokens=4)
    seen: list = []
    real = b.processor.__class__.__call__

    def spy(self, *args, **kwargs):
        seen.append(kwargs["text"])
        return real(self, *args, **kwargs)

    monkeypatch.setattr(b.processor.__class__, "__call__", spy)
    for inst in XPSR_INSTRUCTIONS.values():
        b.caption(_items(2), inst)
        expected = f"USER: <image>\n{inst.text} ASSISTANT:"
        assert seen[-1] == [expected, expected]
        conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": inst.text}]}]
        assert b.processor.apply_chat_template(conversation, add_generation_prompt=True) == expected
    assert XPSR_INSTRUCTIONS["high"].text == "Please provide a descriptive summary of the content of this image"
    assert XPSR_INSTRUCTIONS["low"].text == ("Please describe the quality of this image and evaluate it based on "
                                             "factors such as clarity, color, noise, and lighting")
    # without a chat template on the processor: LLaVA-1.5's own format
    b.processor.chat_template = None
    b.caption(_items(1), XPSR_INSTRUCTIONS["high"])
    assert seen[-1] == [LLAVA15_PROMPT.format(instruction=XPSR_INSTRUCTIONS["high"].text)]


def test_decodes_only_the_new_tokens(tiny_dir, monkeypatch):
    b = TransformersBackend(str(tiny_dir), batch_size=2, max_new_tokens=7)
    spy = _Spy(b.model.generate)
    monkeypatch.setattr(b.model, "generate", spy)
    items = _items(2)
    captions = b.caption(items, XPSR_INSTRUCTIONS["high"])
    (_, kwargs, ids), = spy.calls
    assert kwargs["do_sample"] is False and kwargs["num_beams"] == 1 and kwargs["max_new_tokens"] == 7
    n_in = kwargs["input_ids"].shape[1]
    assert ids.shape[1] == n_in + 7  # the tiny model never emits EOS, so it writes all 7 tokens
    tok = b.processor.tokenizer
    for row, caption in zip(ids, captions, strict=True):
        assert caption == tok.decode(row[n_in:], skip_special_tokens=True).strip()
        assert "ASSISTANT:" in tok.decode(row, skip_special_tokens=True)
        assert not caption.startswith("USER")


def test_provenance_fields(tiny_dir, tmp_path):
    b = TransformersBackend(str(tiny_dir), batch_size=3, max_new_tokens=9)
    prov = b.provenance(XPSR_INSTRUCTIONS["low"], "lq")
    assert prov["backend"] == "transformers" and b.name == "transformers" and b.needs_pixels
    assert prov["model"] == str(tiny_dir) and prov["revision"] is None
    assert prov["instruction"] == "low" and prov["instruction_text"] == XPSR_INSTRUCTIONS["low"].text
    assert prov["image"] == "lq"
    assert prov["dtype"] == "float32" and prov["device"] == "cpu"
    assert prov["batch_size"] == 3 and prov["max_new_tokens"] == 9 and prov["greedy"] is True
    # a hub-cache snapshot directory names its commit
    commit = "0123456789abcdef0123456789abcdef01234567"
    snap = tmp_path / "models--pirs--tiny" / "snapshots" / commit
    shutil.copytree(tiny_dir, snap)
    prov = TransformersBackend(str(snap), max_new_tokens=2).provenance(XPSR_INSTRUCTIONS["high"], "hq")
    assert prov["revision"] == commit


def test_device_and_dtype_choice():
    assert _resolve_device_dtype("cpu", "auto") == ("cpu", "float32")
    assert _resolve_device_dtype("cpu", "bf16") == ("cpu", "bfloat16")
    with pytest.raises(ValueError, match="unknown dtype"):
        _resolve_device_dtype("cpu", "int3")


def test_missing_weights_say_which_files_go_where(tmp_path, tiny_dir):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MissingWeightsError) as exc:
        TransformersBackend(str(empty))
    msg = str(exc.value)
    for name in ("config.json", "model.safetensors", "model.safetensors.index.json", "tokenizer.json",
                 "tokenizer_config.json", "preprocessor_config.json", "processor_config.json", "chat_template",
                 str(empty), "--model DIR"):
        assert name in msg, name
    with pytest.raises(MissingWeightsError, match="not a directory"):
        TransformersBackend(str(tmp_path / "nowhere"))
    # a hub id that is not in the local cache: refused before any download is attempted
    with pytest.raises(MissingWeightsError, match="not in the local Hugging Face cache"):
        TransformersBackend("pirs-tests-nobody/no-such-llava-checkpoint")
    # weights missing but everything else there
    partial = tmp_path / "partial"
    shutil.copytree(tiny_dir, partial)
    (partial / "model.safetensors").unlink()
    with pytest.raises(MissingWeightsError, match=r"missing model\.safetensors"):
        TransformersBackend(str(partial))


def test_empty_output_raises_caption_error_naming_keys(eos_dir):
    b = TransformersBackend(str(eos_dir), batch_size=2, max_new_tokens=5)
    items = _items(3)
    with pytest.raises(CaptionError) as exc:
        b.caption(items, XPSR_INSTRUCTIONS["high"])
    for it in items:
        assert it.key in str(exc.value)
    assert "empty output" in str(exc.value)
    assert set(exc.value.failed) == {it.key for it in items}
    assert exc.value.captions == [None, None, None]


def test_missing_image_fails_only_that_item(tiny_dir):
    b = TransformersBackend(str(tiny_dir), batch_size=4, max_new_tokens=4)
    items = _items(3)
    items[1] = Item("nopix", {}, None)
    with pytest.raises(CaptionError, match="nopix") as exc:
        b.caption(items, Instruction("custom", "caption_high", "What is this?"))
    assert list(exc.value.failed) == ["nopix"]
    assert exc.value.captions[1] is None and exc.value.captions[0] and exc.value.captions[2]
    assert b.caption([], XPSR_INSTRUCTIONS["high"]) == []


def test_hub_id_loads_from_the_local_cache_only(tiny_dir, tmp_path):
    """A hub id whose files sit in the HF cache loads offline and records the snapshot's commit."""
    import os
    import subprocess
    import sys

    commit = "89abcdef0123456789abcdef0123456789abcdef"
    repo = tmp_path / "hub" / "models--pirs--tiny-llava"
    shutil.copytree(tiny_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    code = ("from pirs.captioning.vlm import TransformersBackend, MissingWeightsError\n"
            "b = TransformersBackend('pirs/tiny-llava', max_new_tokens=2)\n"
            "print(b.settings['model'], b.settings['revision'])\n"
            "try:\n    TransformersBackend('pirs/tiny-llava', revision='v2')\n"
            "except MissingWeightsError as e:\n    print('refused', 'not in the local Hugging Face cache' in str(e))\n")
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == [f"pirs/tiny-llava {commit}", "refused True"]


def test_instruction_sets_are_named_and_selectable_per_field(tiny_dir, tmp_path, photos_dir, capsys):
    """XPSR's two, the Q-Instruct prompt of XPSR's code, SPIRE's long and short descriptions, SUPIR's: by name,
    each in its field or in the one FIELD=NAME gives."""
    import json

    from conftest import quick_config
    from pirs.captioning import cli
    from pirs.captioning.run import CaptionConfig, run
    from pirs.degrade.build import build
    from pirs.degrade.shards import iter_records, shard_paths

    texts = {name: (ins.field, ins.text) for name, ins in BUILTIN_INSTRUCTIONS.items()}
    assert texts == {
        "high": ("caption_high", "Please provide a descriptive summary of the content of this image"),
        "low": ("caption_low", "Please describe the quality of this image and evaluate it based on factors such as "
                               "clarity, color, noise, and lighting"),
        "qinstruct": ("caption_low", "Describe and evaluate the quality of the image."),  # XPSR utils_data/
        "spire-long": ("caption_high", "Describe this image and its style in a very detailed manner, in about 60 "
                                       "words."),
        "spire-short": ("caption_high", "Describe this image and its style in fewer than 20 words."),
        "supir": ("caption_high", "Describe this image and its style in a very detailed manner."),
    }
    assert all(ins.source for ins in BUILTIN_INSTRUCTIONS.values())
    shards = tmp_path / "shards"
    build(quick_config(shards, photos_dir, num_samples=3, shard_size=3, crop_size=48))
    out = tmp_path / "out"
    r = run(CaptionConfig(shards=str(shards), out=str(out), backend="transformers", model=str(tiny_dir),
                          instructions=["spire-long", "caption_source=spire-short", "qinstruct"], max_new_tokens=4,
                          device="cpu", progress=False))
    assert r.failures == [] and r.captions == 9
    for p in shard_paths(out):
        for _, rec, _ in iter_records(p):
            meta = json.loads(rec["caption_meta"])
            assert {f: (m["instruction"], m["instruction_text"]) for f, m in meta.items()} == {
                "caption_high": ("spire-long", texts["spire-long"][1]),
                "caption_source": ("spire-short", texts["spire-short"][1]),
                "caption_low": ("qinstruct", texts["qinstruct"][1])}
            assert rec["caption_high"] and rec["caption_low"] and rec["caption_source"]
    assert r.manifest["captions"]["instructions"]["spire-short"]["field"] == "caption_source"
    assert cli.main(["instructions"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in BUILTIN_INSTRUCTIONS) and "lowlevel_prompt_train.py" in listed


def test_a_model_that_is_not_image_text_to_text_is_refused_in_one_line(tiny_dir, tmp_path):
    import json

    text_only = tmp_path / "text-only"
    shutil.copytree(tiny_dir, text_only)
    config = json.loads((text_only / "config.json").read_text())["text_config"]
    (text_only / "config.json").write_text(json.dumps({**config, "model_type": "llama"}))
    with pytest.raises(ValueError, match="'llama' model, which AutoModelForImageTextToText does not load"):
        TransformersBackend(str(text_only))
    with pytest.raises(ValueError, match="AutoModelForImageTextToText does not load"):
        TransformersBackend.describe(str(text_only))
