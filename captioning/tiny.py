"""Tiny random vision-language checkpoints built offline, for tests and the caption benchmark.

Each ``make_tiny_*`` writes to a local directory everything ``AutoModelForImageTextToText.from_pretrained``
and ``AutoProcessor.from_pretrained`` need, with nothing downloaded: the family's config class with a
one-layer vision tower and a one-layer language model of hidden size 16, a BPE tokenizer trained on a
few sentences with ``tokenizers`` (the family's special tokens added, pad set), the family's image
processor at a few dozen pixels and its processor carrying the family's chat template:

* :func:`make_tiny_llava`: ``LlavaConfig`` (CLIP tower at 32x32, 8x8 patches; Llama), the LLaVA-1.5 chat
  template of ``llava-hf/llava-1.5-7b-hf``;
* :func:`make_tiny_qwen2_vl`: ``Qwen2VLConfig`` (native-resolution tower, 8x8 patches merged 2x2, images
  resized to 16..48 px a side; Qwen2 with multimodal rotary positions), the ChatML template of
  ``Qwen/Qwen2-VL-7B-Instruct`` (default system turn, ``<|vision_start|><|image_pad|><|vision_end|>``);
* :func:`make_tiny_idefics3`: ``Idefics3Config`` (SigLIP tower at 32x32, pixel shuffle by 2, no image
  splitting; Llama), the ``User:<image>...<end_of_utterance>\\nAssistant:`` template of Idefics3 / SmolVLM.

:func:`make_tiny` builds one by family name (:data:`FAMILIES`).

The weights are random but seeded, so greedy generation is deterministic. The rows of the LM head
for special tokens are zeroed, so a normal tiny model practically never emits EOS and always writes
``max_new_tokens`` tokens of text (handy for timing); ``eos_only=True`` zeroes the whole head, so
every greedy step picks token 0, which is EOS: every caption is empty (for failure-path tests).
"""

from __future__ import annotations

from pathlib import Path

# LLaVA-1.5 chat template as shipped by llava-hf/llava-1.5-7b-hf (processor and tokenizer):
# "USER: <image>\n{text} ASSISTANT:".
LLAVA15_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}{% endif %}"
    "{# Render all images first #}{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}"
    "{# Render all text next #}{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' '}}"
    "{% endfor %}{% else %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ content['text'] + ' '}}{% endgeneration %}{% endfor %}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

# Token 0 is EOS (the eos_only trick relies on it); then the other specials.
SPECIAL_TOKENS = ["</s>", "<unk>", "<s>", "<pad>", "<image>"]

_CORPUS = [
    "USER: <image>\nPlease provide a descriptive summary of the content of this image ASSISTANT:",
    "USER: <image>\nPlease describe the quality of this image and evaluate it based on factors such as "
    "clarity, color, noise, and lighting ASSISTANT:",
    "The image shows a red house beside a green field under a blue sky, with two people walking a dog.",
    "The image is blurry, with heavy noise, JPEG blocking artifacts, low contrast and dim lighting.",
    "A photo of a cat sitting on a wooden table next to a window; the colors are vivid and the details sharp.",
    "Describe this picture in one sentence. What is in the image? Where was it taken? 0123456789",
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ abcdefghijklmnopqrstuvwxyz .,;:!?'\"()-_/",
]

IMAGE_SIZE = 32
PATCH_SIZE = 8
VOCAB_SIZE = 160


def _tokenizer():
    """A Llama-style (Metaspace BPE, BOS prepended) fast tokenizer trained offline on ``_CORPUS``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=SPECIAL_TOKENS, show_progress=False)
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", bos)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>", extra_special_tokens={"image_token": "<image>"},
                                   padding_side="left", model_max_length=512)
    return fast


def make_tiny_llava(path: str | Path, seed: int = 0, eos_only: bool = False) -> Path:
    """Write a tiny random LLaVA (model, tokenizer, processor, chat template) to ``path``; return the path.

    Deterministic for a given ``seed``. About 14k parameters. ``eos_only=True`` gives a model whose
    every greedy caption is empty (its first token is EOS).
    """
    import torch
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        GenerationConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = _tokenizer()
    assert tokenizer.convert_tokens_to_ids("</s>") == 0
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    vocab = len(tokenizer)

    vision = CLIPVisionConfig(image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, hidden_size=16, intermediate_size=32,
                              num_hidden_layers=1, num_attention_heads=2, projection_dim=16)
    text = LlamaConfig(vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                       num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    n_image_tokens = (IMAGE_SIZE // PATCH_SIZE) ** 2  # the CLS token is dropped by the "default" strategy
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=image_token_id,
                         vision_feature_layer=-1, vision_feature_select_strategy="default",
                         image_seq_length=n_image_tokens, tie_word_embeddings=False)

    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    with torch.no_grad():
        for p in model.parameters():  # the default init of a tiny model is nearly flat; make outputs varied
            if p.dim() > 1:
                p.normal_(0.0, 0.5)
        head = model.get_output_embeddings().weight
        if eos_only:
            head.zero_()  # all logits tie at 0; greedy argmax picks the first, token 0 = EOS
        else:
            head[tokenizer.all_special_ids] = 0.0  # plain text only, practically never EOS
    model.generation_config = GenerationConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(path)

    image_processor = CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE},
                                         crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=PATCH_SIZE,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1,
                               chat_template=LLAVA15_CHAT_TEMPLATE)
    processor.save_pretrained(path)
    return path


# ------------------------------------------------------------------------------------------------- other families

# Qwen2-VL-Instruct's chat template (ChatML with a default system turn), images and text in content order.
QWEN2_VL_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' or 'image' in content "
    "or 'image_url' in content %}<|vision_start|><|image_pad|><|vision_end|>{% elif 'text' in content %}"
    "{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Idefics3 / SmolVLM's chat template.
IDEFICS3_CHAT_TEMPLATE = (
    "<|begin_of_text|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{ line['text'] }}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)


def _family_tokenizer(specials: list[str], template: str, **tokens):
    """A Metaspace BPE tokenizer over ``_CORPUS`` and the family's rendered prompts; ``specials[0]`` is EOS (id 0)."""
    import jinja2
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    render = jinja2.Environment().from_string(template).render
    prompts = [render(messages=[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": t}]}],
                      add_generation_prompt=True) for t in _CORPUS[2:]]
    for special in specials:  # learn the text around the special tokens, never pieces of their spelling
        prompts = [p.replace(special, " ") for p in prompts]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE + 40, special_tokens=specials + ["<unk>"],
                                  show_progress=False)
    tok.train_from_iterator((_CORPUS + prompts) * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", padding_side="left",
                                   model_max_length=2048, **tokens)
    assert fast.convert_tokens_to_ids(specials[0]) == 0
    return fast


def _randomize(model, tokenizer, eos_only: bool) -> None:
    """Weights varied enough to give varied text (seed torch before building the model); the head never
    (with ``eos_only``, always) picks the EOS."""
    import torch

    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.5)
        head = model.get_output_embeddings().weight
        if eos_only:
            head.zero_()  # all logits tie at 0; greedy argmax picks token 0, the EOS
        else:
            head[tokenizer.all_special_ids] = 0.0


def _text_config(tokenizer, bos: str | None, eos: str, pad: str, **extra) -> dict:
    tid = tokenizer.convert_tokens_to_ids
    return dict(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=2048,
                bos_token_id=tid(bos) if bos else None, eos_token_id=tid(eos), pad_token_id=tid(pad), **extra)


def make_tiny_qwen2_vl(path: str | Path, seed: int = 0, eos_only: bool = False) -> Path:
    """Write a tiny random Qwen2-VL (model, tokenizer, image and video processors, chat template) to ``path``.

    About 25k parameters; images are resized to 16..48 px a side (1 to 9 image tokens).
    """
    import torch
    from transformers import (
        GenerationConfig,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
    )
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    specials = ["<|im_end|>", "<|endoftext|>", "<|im_start|>", "<|vision_start|>", "<|vision_end|>",
                "<|image_pad|>", "<|video_pad|>"]
    tok = _family_tokenizer(specials, QWEN2_VL_CHAT_TEMPLATE, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                            extra_special_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
                                                  "vision_bos_token": "<|vision_start|>",
                                                  "vision_eos_token": "<|vision_end|>"})
    tid = tok.convert_tokens_to_ids
    rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1]}  # head_dim 8: 4 pairs
    config = Qwen2VLConfig(
        text_config=_text_config(tok, None, "<|im_end|>", "<|endoftext|>", rope_parameters=rope),
        vision_config=dict(depth=1, embed_dim=16, hidden_size=16, mlp_ratio=2, num_heads=2, patch_size=PATCH_SIZE,
                           spatial_merge_size=2, temporal_patch_size=2),
        image_token_id=tid("<|image_pad|>"), video_token_id=tid("<|video_pad|>"),
        vision_start_token_id=tid("<|vision_start|>"), vision_end_token_id=tid("<|vision_end|>"))
    torch.manual_seed(seed)
    torch_model = Qwen2VLForConditionalGeneration(config).eval()
    _randomize(torch_model, tok, eos_only)
    torch_model.generation_config = GenerationConfig(eos_token_id=tid("<|im_end|>"), pad_token_id=tid("<|endoftext|>"))
    torch_model.save_pretrained(path)
    sizes = dict(patch_size=PATCH_SIZE, merge_size=2, temporal_patch_size=2, min_pixels=16 * 16, max_pixels=48 * 48)
    processor = Qwen2VLProcessor(image_processor=Qwen2VLImageProcessor(**sizes), tokenizer=tok,
                                 video_processor=Qwen2VLVideoProcessor(**sizes), chat_template=QWEN2_VL_CHAT_TEMPLATE)
    processor.save_pretrained(path)
    return path


def make_tiny_idefics3(path: str | Path, seed: int = 0, eos_only: bool = False) -> Path:
    """Write a tiny random Idefics3 (the SmolVLM architecture: model, tokenizer, processor, chat template).

    About 17k parameters; each image is one 32x32 view (no splitting), 4 image tokens.
    """
    import torch
    from transformers import (
        GenerationConfig,
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessor,
        Idefics3Processor,
    )

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    specials = ["<end_of_utterance>", "<|begin_of_text|>", "<|finetune_right_pad_id|>", "<fake_token_around_image>",
                "<image>", "<global-img>"]
    tok = _family_tokenizer(specials, IDEFICS3_CHAT_TEMPLATE, eos_token="<end_of_utterance>",
                            bos_token="<|begin_of_text|>", pad_token="<|finetune_right_pad_id|>",
                            extra_special_tokens={"image_token": "<image>"})
    tid = tok.convert_tokens_to_ids
    config = Idefics3Config(
        text_config=dict(model_type="llama", **_text_config(tok, "<|begin_of_text|>", "<end_of_utterance>",
                                                            "<|finetune_right_pad_id|>")),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=IMAGE_SIZE, patch_size=PATCH_SIZE),
        image_token_id=tid("<image>"), scale_factor=2)
    torch.manual_seed(seed)
    torch_model = Idefics3ForConditionalGeneration(config).eval()
    _randomize(torch_model, tok, eos_only)
    torch_model.generation_config = GenerationConfig(bos_token_id=tid("<|begin_of_text|>"),
                                                     eos_token_id=tid("<end_of_utterance>"),
                                                     pad_token_id=tid("<|finetune_right_pad_id|>"))
    torch_model.save_pretrained(path)
    image_processor = Idefics3ImageProcessor(do_image_splitting=False, size={"longest_edge": IMAGE_SIZE},
                                             max_image_size={"longest_edge": IMAGE_SIZE})
    n_tokens = (IMAGE_SIZE // PATCH_SIZE) ** 2 // 2 ** 2
    processor = Idefics3Processor(image_processor=image_processor, tokenizer=tok, image_seq_len=n_tokens,
                                  chat_template=IDEFICS3_CHAT_TEMPLATE)
    processor.save_pretrained(path)
    return path


FAMILIES = {"llava": make_tiny_llava, "qwen2-vl": make_tiny_qwen2_vl, "idefics3": make_tiny_idefics3}


def make_tiny(family: str, path: str | Path, seed: int = 0, eos_only: bool = False) -> Path:
    """Write the tiny random model of ``family`` (one of :data:`FAMILIES`) to ``path``; return the path."""
    if family not in FAMILIES:
        raise ValueError(f"unknown tiny family {family!r} (choose from {', '.join(FAMILIES)})")
    return FAMILIES[family](path, seed=seed, eos_only=eos_only)
