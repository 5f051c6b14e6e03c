"""The ``transformers`` caption backend: any vision-language model transformers loads, batched, greedy, offline.

XPSR (Qu et al., ECCV 2024, Sec. 3.2) captions each LQ image twice with LLaVA-1.5, once with a
high-level instruction (content) and once with a low-level one (quality); SPIRE (Sec. 4.4) asks LLaVA
for long and short semantic descriptions; newer data sets are captioned with Qwen2-VL / Qwen2.5-VL,
LLaVA-OneVision, Idefics3 / SmolVLM and the like. This backend runs any of them: every model that
``AutoModelForImageTextToText`` and ``AutoProcessor`` load, with the processor's own chat template. The
instruction (:mod:`pirs.captioning.instructions`) is given verbatim, after the image, in one user turn.

The model loads from a local directory, or from a hub id whose files are already in the local Hugging
Face cache: nothing is downloaded unless ``allow_download=True`` is passed. Missing files raise
:class:`MissingWeightsError`, which lists what to put where. Generation is batched with left padding and
greedy (``do_sample=False``, one beam); only the new tokens are decoded. A LLaVA checkpoint without a chat
template gets LLaVA-1.5's ``"USER: <image>\\n{instruction} ASSISTANT:"``; any other model without one is
refused. ``--backend llava`` is a name for this backend (the one pirs had first). Nothing heavy (torch,
transformers) is imported until a backend is built.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from pirs.captioning.backend import Backend, CaptionError, Instruction, Item

# LLaVA-1.5's conversation format, used when a LLaVA processor carries no chat template.
LLAVA15_PROMPT = "USER: <image>\n{instruction} ASSISTANT:"

_DTYPES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16", "half": "float16",
           "bfloat16": "bfloat16", "bf16": "bfloat16"}

_EXPECTED_FILES = """\
  config.json                          the model's config (LlavaConfig, Qwen2VLConfig, ...: vision tower,
                                       language model, image token)
  model.safetensors                    the weights; or model-0000X-of-0000N.safetensors shards plus
                                       model.safetensors.index.json (pytorch_model*.bin also loads)
  tokenizer.json or tokenizer.model    the tokenizer, with tokenizer_config.json (and special_tokens_map.json)
  preprocessor_config.json or processor_config.json
                                       the image processor (and the processor's settings)
  chat_template.jinja or chat_template.json
                                       the chat template (optional for LLaVA-1.5 only, whose
                                       "USER: <image>\\n... ASSISTANT:" is used without it)"""


class MissingWeightsError(FileNotFoundError, ValueError):
    """The model or processor files are not where the user said; the message lists what is needed.

    Also a ``ValueError``, so callers that turn bad arguments into a clean error message catch it too.
    """


def _missing_message(model: str, detail: str) -> str:
    return (f"transformers: cannot load the model {model!r} without downloading ({detail}).\n"
            f"Put a vision-language checkpoint in transformers format (for example llava-hf/llava-1.5-7b-hf or "
            f"Qwen/Qwen2.5-VL-7B-Instruct) in a local directory and pass it as --model DIR. The directory "
            f"needs:\n{_EXPECTED_FILES}\n"
            f"A hub id works only when its files are already in the local Hugging Face cache "
            f"(HF_HOME / HF_HUB_CACHE), unless downloads are allowed explicitly.")


def check_model_dir(path: Path) -> None:
    """Raise :class:`MissingWeightsError` naming the missing files when ``path`` is not a usable checkpoint."""
    names = {p.name for p in path.iterdir()} if path.is_dir() else set()
    missing = []
    if "config.json" not in names:
        missing.append("config.json")
    weights = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
    if not names & set(weights):
        missing.append("model.safetensors (or shards + model.safetensors.index.json)")
    if not names & {"tokenizer.json", "tokenizer.model"}:
        missing.append("tokenizer.json or tokenizer.model (+ tokenizer_config.json)")
    if not names & {"preprocessor_config.json", "processor_config.json"}:
        missing.append("preprocessor_config.json or processor_config.json")
    if missing:
        where = "is not a directory" if not path.is_dir() else "is missing " + ", ".join(missing)
        raise MissingWeightsError(_missing_message(str(path), f"{path} {where}"))


def _commit_from_path(path: str | None) -> str | None:
    """The commit hash of a hub-cache snapshot path (``.../snapshots/<40 hex>/...``), else None."""
    if not path:
        return None
    m = re.search(r"[/\\]snapshots[/\\]([0-9a-f]{40})(?:[/\\]|$)", str(path))
    return m.group(1) if m else None


def _transformers_at_least(version: str) -> bool:
    import transformers
    from packaging.version import Version

    return Version(transformers.__version__) >= Version(version)


def _resolve_device_dtype(device: str, dtype: str) -> tuple[str, str]:
    """``auto`` device: CUDA when present, else CPU. ``auto`` dtype: bf16 (or fp16) on GPU, fp32 on CPU."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype == "auto":
        if device.startswith("cuda"):
            dtype = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        else:
            dtype = "float32"
    if dtype not in _DTYPES:
        raise ValueError(f"transformers: unknown dtype {dtype!r}; choose auto, {', '.join(sorted(set(_DTYPES)))}")
    dtype = _DTYPES[dtype]
    if device == "cpu" and dtype == "float16":
        raise ValueError("transformers: float16 on CPU is not supported well by torch; use float32 or bfloat16")
    return device, dtype


class TransformersBackend(Backend):
    """Captions with any ``AutoModelForImageTextToText`` checkpoint and its ``AutoProcessor``.

    ``model`` is a local directory or a hub id already in the local cache (``allow_download=True``
    lets transformers fetch a hub id). ``batch_size`` images are generated together with left
    padding; greedy decoding of at most ``max_new_tokens`` tokens. The provenance names the model,
    its revision, family (``model_type``), class, a digest of the chat template and the settings.
    """

    def __init__(self, model: str, batch_size: int = 8, max_new_tokens: int = 128, device: str = "auto",
                 dtype: str = "auto", revision: str | None = None, allow_download: bool = False):
        self._check_args(batch_size, max_new_tokens)
        self.model_name = str(model)
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.device, self.dtype = _resolve_device_dtype(device, dtype)
        self.model, self.processor, commit = self._load(self.model_name, revision, allow_download)
        self.model_type = self.model.config.model_type
        super().__init__(name="transformers", needs_pixels=True, settings=self._settings(
            commit or revision, self.processor.chat_template, self.model.config))

    @staticmethod
    def _check_args(batch_size: int, max_new_tokens: int) -> None:
        if batch_size < 1:
            raise ValueError(f"transformers: batch_size must be >= 1, got {batch_size}")
        if max_new_tokens < 1:
            raise ValueError(f"transformers: max_new_tokens must be >= 1, got {max_new_tokens}")

    def _settings(self, revision: str | None, chat_template: Any, config: Any) -> dict[str, Any]:
        arch = (getattr(config, "architectures", None) or [None])[0]
        return {
            "model": self.model_name,
            "revision": revision,
            "model_type": config.model_type,
            "architecture": arch,
            "dtype": self.dtype,
            "device": self.device,
            "batch_size": self.batch_size,
            "max_new_tokens": self.max_new_tokens,
            "greedy": True,
            "num_beams": 1,
            "chat_template": _template_id(chat_template, config.model_type),
        }

    @classmethod
    def describe(cls, model: str, batch_size: int = 8, max_new_tokens: int = 128, device: str = "auto",
                 dtype: str = "auto", revision: str | None = None, allow_download: bool = False) -> dict[str, Any]:
        """The settings a backend built here would have (its provenance), without loading the weights.

        Reads only the processor (tokenizer and chat template) and the config; the device and dtype
        are resolved on this process, so call it where the captioning will run.
        """
        cls._check_args(batch_size, max_new_tokens)
        self = cls.__new__(cls)
        self.model_name, self.batch_size, self.max_new_tokens = str(model), batch_size, max_new_tokens
        self.device, self.dtype = _resolve_device_dtype(device, dtype)
        source, commit, kwargs = self._source(self.model_name, revision, allow_download)
        from transformers import AutoConfig, AutoProcessor

        try:
            processor = AutoProcessor.from_pretrained(source, **kwargs)
            config = AutoConfig.from_pretrained(source, **kwargs)
        except OSError as exc:
            raise MissingWeightsError(_missing_message(model, str(exc).splitlines()[0])) from exc
        _check_vlm(model, config)
        commit = commit or getattr(config, "_commit_hash", None)  # as _load finds it on the model's config
        return self._settings(commit or revision, processor.chat_template, config)

    # -- loading -----------------------------------------------------------------------------------------------

    def _source(self, model: str, revision: str | None, allow_download: bool) -> tuple[str, str | None, dict]:
        """Where to load from, its commit when known, and the ``from_pretrained`` keyword arguments."""
        local = Path(model).expanduser()
        is_dir = local.is_dir()
        if is_dir:
            check_model_dir(local)
            source, commit = str(local), _commit_from_path(str(local.resolve()))
        elif local.exists() or model.startswith((".", "/", "~")) or model.count("/") > 1:
            raise MissingWeightsError(_missing_message(model, f"{model} is not a directory"))
        else:
            source, commit = model, None
            if not allow_download:
                commit = self._cached_commit(model, revision)
        kwargs: dict[str, Any] = {"local_files_only": not allow_download}
        if revision is not None and not is_dir:
            kwargs["revision"] = revision
        return source, commit, kwargs

    def _load(self, model: str, revision: str | None, allow_download: bool) -> tuple[Any, Any, str | None]:
        import torch
        from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

        source, commit, kwargs = self._source(model, revision, allow_download)
        try:
            _check_vlm(model, AutoConfig.from_pretrained(source, **kwargs))
            dtype_kw = "dtype" if _transformers_at_least("4.56") else "torch_dtype"  # renamed in 4.56
            net = AutoModelForImageTextToText.from_pretrained(source, **{dtype_kw: getattr(torch, self.dtype)},
                                                              **kwargs)
            processor = AutoProcessor.from_pretrained(source, **kwargs)
        except OSError as exc:  # transformers raises OSError (EnvironmentError) for files it cannot find
            raise MissingWeightsError(_missing_message(model, str(exc).splitlines()[0])) from exc
        if not hasattr(processor, "tokenizer") or not hasattr(processor, "image_processor"):
            raise ValueError(f"transformers: {model}: AutoProcessor gave a {type(processor).__name__}, not a "
                             "processor with a tokenizer and an image processor")
        net.to(self.device).eval()
        tokenizer = processor.tokenizer
        tokenizer.padding_side = "left"  # decoder-only batched generation: pad on the left
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
        commit = commit or getattr(net.config, "_commit_hash", None)  # transformers 4.x keeps it on the config
        return net, processor, commit

    @staticmethod
    def _cached_commit(model: str, revision: str | None) -> str | None:
        """The commit of a hub id's cached config.json; MissingWeightsError when it is not cached."""
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:  # pragma: no cover - huggingface_hub ships with transformers
            return None
        hit = try_to_load_from_cache(model, "config.json", revision=revision)
        if not isinstance(hit, str):
            raise MissingWeightsError(_missing_message(
                model, f"{model!r} (revision {revision or 'main'}) is not in the local Hugging Face cache"))
        return _commit_from_path(hit)

    # -- prompting and generation ------------------------------------------------------------------------------

    def prompt(self, instruction_text: str) -> str:
        """The full text prompt for one image: the chat template with the image and the instruction, verbatim."""
        return chat_prompt(self.processor, self.model_type, [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": instruction_text}]}])

    def generate(self, images: list[np.ndarray], instruction_texts: list[str]) -> list[str]:
        """Greedy captions for images, each with its own instruction, in batches of ``batch_size``.

        Returns the decoded new tokens of each image, stripped (possibly empty); raises nothing per item.
        """
        if len(images) != len(instruction_texts):
            raise ValueError("transformers: one instruction per image")
        return self.generate_prompts(images, [self.prompt(t) for t in instruction_texts])

    def generate_prompts(self, images: list[np.ndarray], prompts: list[str],
                         max_new_tokens: int | None = None) -> list[str]:
        """Greedy completions of full text prompts (one image each), in batches of ``batch_size``."""
        out: list[str] = []
        for start in range(0, len(images), self.batch_size):
            out.extend(t for t, _ in self.generate_batch(images[start:start + self.batch_size],
                                                         prompts[start:start + self.batch_size], max_new_tokens))
        return out

    def generate_batch(self, images: list[np.ndarray], prompts: list[str],
                       max_new_tokens: int | None = None) -> list[tuple[str, dict[str, Any]]]:
        """One batched ``generate`` call: ``(text, usage)`` per image, usage giving the prompt and new tokens
        and whether generation stopped at an end token (``"stop"``) or at the token limit (``"length"``)."""
        import torch
        from PIL import Image

        if not images:
            return []
        limit = max_new_tokens or self.max_new_tokens
        tokenizer = self.processor.tokenizer
        batch = [Image.fromarray(np.ascontiguousarray(img)).convert("RGB") for img in images]
        inputs = self.processor(images=batch, text=list(prompts), padding=True, return_tensors="pt")
        inputs = inputs.to(self.device)
        for k, v in inputs.items():  # pixel values (and any other float input) in the model's dtype
            if torch.is_tensor(v) and torch.is_floating_point(v):
                inputs[k] = v.to(self.model.dtype)
        with torch.inference_mode():
            ids = self.model.generate(**inputs, max_new_tokens=limit, do_sample=False, num_beams=1,
                                      pad_token_id=tokenizer.pad_token_id)
        n_in = inputs["input_ids"].shape[1]
        new = ids[:, n_in:]  # decode only what the model wrote
        eos = self.model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        prompt_lens = inputs["attention_mask"].sum(dim=1).tolist()
        out = []
        for row, text, n_prompt in zip(new.tolist(), tokenizer.batch_decode(new, skip_special_tokens=True),
                                       prompt_lens, strict=True):
            stop = next((i for i, t in enumerate(row) if t in eos_ids), None)
            n_new = stop + 1 if stop is not None else len(row)
            out.append((text.strip(), {"prompt_tokens": int(n_prompt), "completion_tokens": n_new,
                                       "finish_reason": "stop" if stop is not None else "length"}))
        return out

    def caption(self, items: list[Item], instruction: Instruction) -> list[str]:
        """One caption per item with ``instruction.text`` verbatim.

        Items without an image or with an empty caption raise one :class:`CaptionError` after the whole
        list is generated; its message names the keys, and it carries ``failed`` (key -> reason) and
        ``captions`` (the list, with None for the failed items) so a caller may keep the good ones.
        """
        failed: dict[str, str] = {k.key: f"no image given to the {self.name} backend"
                                  for k in items if k.image is None}
        todo = [i for i, item in enumerate(items) if item.image is not None]
        texts = self.generate([items[i].image for i in todo], [instruction.text] * len(todo)) if todo else []
        captions: list[str | None] = [None] * len(items)
        for i, text in zip(todo, texts, strict=True):
            if text:
                captions[i] = text
            else:
                failed[items[i].key] = f"empty output from {self.model_name} for instruction {instruction.name!r}"
        if failed:
            err = CaptionError(f"{self.name}: {len(failed)} of {len(items)} record(s) not captioned "
                               f"({instruction.name}): " + "; ".join(f"{k}: {r}" for k, r in failed.items()))
            err.failed, err.captions = failed, captions
            raise err
        return captions  # type: ignore[return-value]


def _check_vlm(model: str, config: Any) -> None:
    """Refuse, in one line, a checkpoint that ``AutoModelForImageTextToText`` cannot load."""
    from transformers import AutoModelForImageTextToText

    if type(config) not in AutoModelForImageTextToText._model_mapping:
        raise ValueError(f"transformers: {model} is a {config.model_type!r} model, which AutoModelForImageTextToText "
                         "does not load (an image-text-to-text model is needed: LLaVA, Qwen2-VL, Qwen2.5-VL, "
                         "LLaVA-OneVision, Idefics3, SmolVLM, InternVL, Gemma 3, ...)")


def _template_id(chat_template: Any, model_type: str) -> str:
    """What formats the prompt: ``sha256:<12 hex>`` of the processor's chat template, or LLaVA-1.5's fallback."""
    import hashlib

    if chat_template:
        text = chat_template if isinstance(chat_template, str) else repr(sorted(chat_template.items()))
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:12]
    if model_type == "llava":
        return "llava-1.5"
    raise ValueError(f"transformers: the {model_type} processor has no chat template (chat_template.jinja or "
                     "chat_template.json in the model folder); only LLaVA-1.5 has a built-in fallback")


def chat_prompt(processor: Any, model_type: str, messages: list[dict[str, Any]]) -> str:
    """The processor's chat template applied to ``messages`` (transformers' form: content parts ``image`` and
    ``text`` in order) with the generation prompt; LLaVA-1.5's format for a LLaVA processor without one."""
    if processor.chat_template:
        return processor.apply_chat_template(messages, add_generation_prompt=True)
    _template_id(None, model_type)  # raises unless LLaVA
    content = messages[0]["content"] if len(messages) == 1 and messages[0]["role"] == "user" else []
    if [c["type"] for c in content] != ["image", "text"]:
        raise ValueError("LLaVA-1.5's format takes one user turn: one image, then the text")
    return LLAVA15_PROMPT.format(instruction=content[1]["text"])
