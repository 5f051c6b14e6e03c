"""A tiny random LLaVA checkpoint built offline, for tests and the caption benchmark.

:func:`make_tiny_llava` writes to a local directory everything
``LlavaForConditionalGeneration.from_pretrained`` and ``AutoProcessor.from_pretrained`` need, with
nothing downloaded: a ``LlavaConfig`` joining a tiny CLIP vision tower (32x32 images, 8x8 patches, one
layer) to a tiny Llama (hidden 16, one layer), a BPE tokenizer trained on a few sentences with
``tokenizers`` (``<image>`` added, pad set), a ``CLIPImageProcessor`` at 32 pixels and a
``LlavaProcessor`` carrying the LLaVA-1.5 chat template of ``llava-hf/llava-1.5-7b-hf``.

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
