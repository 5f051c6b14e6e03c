"""The ``llava`` caption backend: LLaVA-1.5 through transformers, batched, greedy, offline by default.

XPSR (Qu et al., ECCV 2024, Sec. 3.2) captions each LQ image twice with LLaVA-1.5, once with a
high-level instruction (content) and once with a low-level one (quality); the instructions are
:data:`pirs.captioning.backend.XPSR_INSTRUCTIONS`, given to the model verbatim.

The model loads with ``LlavaForConditionalGeneration`` and ``AutoProcessor`` from a local directory,
or from a hub id whose files are already in the local Hugging Face cache: nothing is downloaded unless
``allow_download=True`` is passed. Missing files raise :class:`MissingWeightsError`, which lists what
to put where. Generation is batched with left padding and greedy (``do_sample=False``, one beam); the
prompt is the processor's chat template with the image and the instruction (LLaVA-1.5's
``"USER: <image>\\n{instruction} ASSISTANT:"`` when the processor has none); only the new tokens are
decoded. Nothing heavy (torch, transformers) is imported until a backend is built.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from pirs.captioning.backend import Backend, CaptionError, Instruction, Item

# LLaVA-1.5's conversation format, used when the processor carries no chat template.
LLAVA15_PROMPT = "USER: <image>\n{instruction} ASSISTANT:"

_DTYPES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16", "half": "float16",
           "bfloat16": "bfloat16", "bf16": "bfloat16"}

_EXPECTED_FILES = """\
  config.json                          the LlavaConfig (vision tower, language model, image token)
  model.safetensors                    the weights; or model-0000X-of-0000N.safetensors shards plus
                                       model.safetensors.index.json (pytorch_model*.bin also loads)
  tokenizer.json or tokenizer.model    the tokenizer, with tokenizer_config.json (and special_tokens_map.json)
  preprocessor_config.json or processor_config.json
                                       the CLIP image processor (and the LlavaProcessor settings:
                                       patch_size, vision_feature_select_strategy)
  chat_template.jinja or chat_template.json
                                       the chat template (optional: LLaVA-1.5's "USER: <image>\\n... ASSISTANT:"
                                       is used without it)"""


class MissingWeightsError(FileNotFoundError, ValueError):
    """The model or processor files are not where the user said; the message lists what is needed.

    Also a ``ValueError``, so callers that turn bad arguments into a clean error message catch it too.
    """


def _missing_message(model: str, detail: str) -> str:
    return (f"llava: cannot load the model {model!r} without downloading ({detail}).\n"
            f"Put a LLaVA-1.5 checkpoint in transformers format (for example llava-hf/llava-1.5-7b-hf) in a local "
            f"directory and pass it as --model DIR. The directory needs:\n{_EXPECTED_FILES}\n"
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
        raise ValueError(f"llava: unknown dtype {dtype!r}; choose auto, {', '.join(sorted(set(_DTYPES)))}")
    dtype = _DTYPES[dtype]
    if device == "cpu" and dtype == "float16":
        raise ValueError("llava: float16 on CPU is not supported well by torch; use float32 or bfloat16")
    return device, dtype


class LlavaBackend(Backend):
    """Captions with a LLaVA-1.5 checkpoint (``LlavaForConditionalGeneration`` + its processor).

    ``model`` is a local directory or a hub id already in the local cache (``allow_download=True``
    lets transformers fetch a hub id). ``batch_size`` images are generated together with left
    padding; greedy decoding of at most ``max_new_tokens`` tokens.
    """

    def __init__(self, model: str, batch_size: int = 8, max_new_tokens: int = 128, device: str = "auto",
                 dtype: str = "auto", revision: str | None = None, allow_download: bool = False):
        if batch_size < 1:
            raise ValueError(f"llava: batch_size must be >= 1, got {batch_size}")
        if max_new_tokens < 1:
            raise ValueError(f"llava: max_new_tokens must be >= 1, got {max_new_tokens}")
        self.model_name = str(model)
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.device, self.dtype = _resolve_device_dtype(device, dtype)
        self.model, self.processor, commit = self._load(self.model_name, revision, allow_download)
        super().__init__(name="llava", needs_pixels=True, settings=self._settings(
            commit or revision, self.processor.chat_template))

    def _settings(self, revision: str | None, chat_template: Any) -> dict[str, Any]:
        return {
            "model": self.model_name,
            "revision": revision,
            "dtype": self.dtype,
            "device": self.device,
            "batch_size": self.batch_size,
            "max_new_tokens": self.max_new_tokens,
            "greedy": True,
            "num_beams": 1,
            "chat_template": "processor" if chat_template else "llava-1.5",
        }

    @classmethod
    def describe(cls, model: str, batch_size: int = 8, max_new_tokens: int = 128, device: str = "auto",
                 dtype: str = "auto", revision: str | None = None, allow_download: bool = False) -> dict[str, Any]:
        """The settings a backend built here would have (its provenance), without loading the weights.

        Reads only the processor (tokenizer and chat template); the device and dtype are
        resolved on this process, so call it where the captioning will run.
        """
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
        commit = commit or getattr(config, "_commit_hash", None)  # as _load finds it on the model's config
        return self._settings(commit or revision, processor.chat_template)

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
        from transformers import AutoProcessor, LlavaForConditionalGeneration

        source, commit, kwargs = self._source(model, revision, allow_download)
        try:
            dtype_kw = "dtype" if _transformers_at_least("4.56") else "torch_dtype"  # renamed in 4.56
            net = LlavaForConditionalGeneration.from_pretrained(source, **{dtype_kw: getattr(torch, self.dtype)},
                                                                **kwargs)
            processor = AutoProcessor.from_pretrained(source, **kwargs)
        except OSError as exc:  # transformers raises OSError (EnvironmentError) for files it cannot find
            raise MissingWeightsError(_missing_message(model, str(exc).splitlines()[0])) from exc
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
        if self.processor.chat_template:
            conversation = [{"role": "user", "content": [{"type": "image"},
                                                         {"type": "text", "text": instruction_text}]}]
            return self.processor.apply_chat_template(conversation, add_generation_prompt=True)
        return LLAVA15_PROMPT.format(instruction=instruction_text)

    def generate(self, images: list[np.ndarray], instruction_texts: list[str]) -> list[str]:
        """Greedy captions for images, each with its own instruction, in batches of ``batch_size``.

        Returns the decoded new tokens of each image, stripped (possibly empty); raises nothing per item.
        """
        import torch
        from PIL import Image

        if len(images) != len(instruction_texts):
            raise ValueError("llava: one instruction per image")
        tokenizer = self.processor.tokenizer
        out: list[str] = []
        for start in range(0, len(images), self.batch_size):
            batch = [Image.fromarray(np.ascontiguousarray(img)).convert("RGB")
                     for img in images[start:start + self.batch_size]]
            prompts = [self.prompt(t) for t in instruction_texts[start:start + self.batch_size]]
            inputs = self.processor(images=batch, text=prompts, padding=True, return_tensors="pt")
            inputs = inputs.to(self.device)
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
            with torch.inference_mode():
                ids = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False, num_beams=1,
                                          pad_token_id=tokenizer.pad_token_id)
            new = ids[:, inputs["input_ids"].shape[1]:]  # decode only what the model wrote
            out.extend(t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True))
        return out

    def caption(self, items: list[Item], instruction: Instruction) -> list[str]:
        """One caption per item with ``instruction.text`` verbatim.

        Items without an image or with an empty caption raise one :class:`CaptionError` after the whole
        list is generated; its message names the keys, and it carries ``failed`` (key -> reason) and
        ``captions`` (the list, with None for the failed items) so a caller may keep the good ones.
        """
        failed: dict[str, str] = {k.key: "no image given to the llava backend" for k in items if k.image is None}
        todo = [i for i, item in enumerate(items) if item.image is not None]
        texts = self.generate([items[i].image for i in todo], [instruction.text] * len(todo)) if todo else []
        captions: list[str | None] = [None] * len(items)
        for i, text in zip(todo, texts, strict=True):
            if text:
                captions[i] = text
            else:
                failed[items[i].key] = f"empty output from {self.model_name} for instruction {instruction.name!r}"
        if failed:
            err = CaptionError(f"llava: {len(failed)} of {len(items)} record(s) not captioned "
                               f"({instruction.name}): " + "; ".join(f"{k}: {r}" for k, r in failed.items()))
            err.failed, err.captions = failed, captions
            raise err
        return captions  # type: ignore[return-value]
