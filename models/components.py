"""Stable Diffusion components: tiny random ones built from configs, or real ones from a local folder.

A local ``--base`` folder has the diffusers layout of Stable Diffusion 1.5 (``unet/``,
``vae/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``), as ``save_pretrained`` or
``huggingface-cli download stable-diffusion-v1-5/stable-diffusion-v1-5 --local-dir DIR``
writes it. Nothing is ever downloaded: loading uses ``local_files_only=True`` and a
missing file is one message saying which files to put where.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

SD_FILES = {
    "unet": ["config.json", "diffusion_pytorch_model.safetensors"],
    "vae": ["config.json", "diffusion_pytorch_model.safetensors"],
    "text_encoder": ["config.json", "model.safetensors"],
    "tokenizer": ["tokenizer_config.json"],
    "scheduler": ["scheduler_config.json"],
}
SD15_HINT = ("on a machine with internet: huggingface-cli download stable-diffusion-v1-5/stable-diffusion-v1-5 "
             "--local-dir DIR (or StableDiffusionPipeline.save_pretrained(DIR))")


class WeightsMissing(FileNotFoundError):
    """A local weights folder lacks files; the message lists them and where they go."""


@dataclass
class SDComponents:
    """The frozen parts every method shares: UNet, VAE, CLIP text encoder and its tokenizer, noise schedule."""

    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    scheduler_config: dict


def check_local(base: str, files: dict[str, list[str]] = SD_FILES, hint: str = SD15_HINT) -> Path:
    """Raise :class:`WeightsMissing` naming every missing file under ``base``."""
    root = Path(base)
    missing = []
    for sub, names in files.items():
        for n in names:
            p = root / sub / n
            alt = p.with_name(n.replace(".safetensors", ".bin")) if n.endswith(".safetensors") else p
            if not p.is_file() and not alt.is_file():
                missing.append(f"{sub}/{n}")
    if missing:
        raise WeightsMissing(f"{root}: missing {', '.join(missing)}. Put the Stable Diffusion 1.5 weights in the "
                             f"diffusers layout under {root} ({', '.join(f'{s}/' for s in files)}); {hint}")
    return root


def load_sd(base: str, unet: bool = True) -> SDComponents:
    """Load SD 1.5-style components from a local diffusers folder (``unet=False``: all but the UNet, left None)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import AutoTokenizer, CLIPTextModel

    root = check_local(base, SD_FILES if unet else {k: v for k, v in SD_FILES.items() if k != "unet"})
    kw = {"local_files_only": True}
    import json

    return SDComponents(
        unet=UNet2DConditionModel.from_pretrained(root / "unet", **kw) if unet else None,
        vae=AutoencoderKL.from_pretrained(root / "vae", **kw),
        text_encoder=CLIPTextModel.from_pretrained(root / "text_encoder", **kw),
        tokenizer=AutoTokenizer.from_pretrained(root / "tokenizer", **kw),
        scheduler_config=json.loads((root / "scheduler" / "scheduler_config.json").read_text()),
    )


TINY_CORPUS = [
    "Remove all degradation", "Deblur with sigma 2.1", "Upsample to 3.2x", "Denoise with sigma 0.06",
    "Dejpeg with quality 45", "Remove the haze", "Remove the rain", "Remove the snow", "Remove the raindrops",
    "Brighten the low-light image", "a photo of a red house and a green field under a blue sky",
    "the image is blurry noisy dark with jpeg artifacts, low contrast", "0123456789 .,;:!?'()-_/",
    "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ",
]


def tiny_tokenizer(max_length: int = 16):
    """A CLIP-like BPE tokenizer trained offline on a few sentences (padding to ``max_length``)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<|unk|>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>", "<|startoftext|>", "<|unk|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(TINY_CORPUS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|startoftext|>", eos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>", unk_token="<|unk|>", model_max_length=max_length)


def tiny_sd(seed: int = 0, channels: tuple[int, int] = (8, 16), cross_dim: int = 16) -> SDComponents:
    """Random SD-shaped components of a few thousand parameters each (seeded, no downloads)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer()
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=channels, layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_dim, attention_head_dim=2, norm_num_groups=4)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(4, 8), latent_channels=4,
                        layers_per_block=1, norm_num_groups=4, sample_size=16)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=cross_dim, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, max_position_embeddings=tokenizer.model_max_length,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
    sched = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
             "prediction_type": "epsilon", "clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1}
    return SDComponents(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler_config=sched)


def save_sd(c: SDComponents, folder: str) -> Path:
    """Write components in the diffusers SD layout (what ``--base`` reads)."""
    import json

    root = Path(folder)
    c.unet.save_pretrained(root / "unet")
    c.vae.save_pretrained(root / "vae")
    c.text_encoder.save_pretrained(root / "text_encoder")
    c.tokenizer.save_pretrained(root / "tokenizer")
    (root / "scheduler").mkdir(parents=True, exist_ok=True)
    (root / "scheduler" / "scheduler_config.json").write_text(json.dumps(
        {"_class_name": "DDIMScheduler", **c.scheduler_config}, indent=2))
    return root


def freeze(*modules: torch.nn.Module) -> None:
    """No gradients and eval mode: frozen parts stay exactly as loaded."""
    for m in modules:
        m.requires_grad_(False)
        m.eval()


@torch.no_grad()
def encode_text(c: SDComponents, texts: list[str], device: torch.device | str = "cpu") -> torch.Tensor:
    """CLIP text embeddings ``(B, tokens, dim)`` of ``texts`` (padded to the tokenizer's length)."""
    ids = c.tokenizer(list(texts), padding="max_length", truncation=True, max_length=c.tokenizer.model_max_length,
                      return_tensors="pt").input_ids.to(device)
    return c.text_encoder(ids)[0]


def sd_parts(config, base: str | None) -> SDComponents:
    """The SD parts a method's config asks for: from the local folder ``base``, else tiny random ones."""
    from .method import ConfigError

    if base is None and config.variant != "tiny":
        raise ConfigError(f"config variant {config.variant!r} needs --base: a local Stable Diffusion folder")
    torch.manual_seed(config.seed)
    return load_sd(base) if base else tiny_sd(config.seed)


def make_scheduler(scheduler_config: dict, kind: str = "ddpm"):
    """A DDPM (training) or DDIM (sampling) scheduler from an SD ``scheduler_config.json``."""
    from diffusers import DDIMScheduler, DDPMScheduler

    keys = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "prediction_type", "steps_offset",
            "clip_sample", "set_alpha_to_one")
    cfg = {k: v for k, v in scheduler_config.items() if k in keys}
    if kind == "ddim":
        return DDIMScheduler(**cfg)
    cfg.pop("set_alpha_to_one", None)
    cfg.pop("steps_offset", None)
    return DDPMScheduler(**cfg)


def noised_latents(sched, z0: torch.Tensor, generator: torch.Generator
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(noise, t, z_t)`` of one DDPM training step: noise, then timesteps, drawn from ``generator``."""
    noise = torch.randn(z0.shape, generator=generator, dtype=z0.dtype).to(z0.device)
    t = torch.randint(0, sched.config.num_train_timesteps, (z0.shape[0],), generator=generator).to(z0.device)
    return noise, t, sched.add_noise(z0, noise, t)


def diffusion_target(sched, z0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """What the UNet predicts: the noise, or the velocity for a v-prediction schedule."""
    return noise if sched.config.prediction_type == "epsilon" else sched.get_velocity(z0, noise, t)


def initial_latents(unet, lq: torch.Tensor, factor: int, generator: torch.Generator, sched) -> torch.Tensor:
    """Sampling's starting noise at the latent size of ``lq``, scaled by the scheduler's initial sigma."""
    shape = (lq.shape[0], unet.config.in_channels, lq.shape[2] // factor, lq.shape[3] // factor)
    return torch.randn(shape, generator=generator).to(lq.device) * sched.init_noise_sigma


@torch.no_grad()
def vae_latents(vae, images: torch.Tensor) -> torch.Tensor:
    """The VAE posterior mean of ``images`` times the scaling factor."""
    return vae.encode(images).latent_dist.mean * vae.config.scaling_factor


def load_clip_vision(folder: Path):
    """A CLIP vision tower with its projection, from its own folder or from a whole ``CLIPModel`` folder.

    A ``CLIPModel`` config (``model_type: clip``, as openai/clip-vit-large-patch14 and
    laion/CLIP-ViT-bigG-14-laion2B-39B-b160k ship) keeps the projection width at its top
    level, while its ``vision_config`` may carry a default 512; the tower is built with the
    top-level width and the text tower's weights are left out.
    """
    import json

    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    raw = json.loads((folder / "config.json").read_text())
    kw: dict = {"local_files_only": True}
    if raw.get("model_type") == "clip":
        kw["config"] = CLIPVisionConfig(**{**raw.get("vision_config", {}), "projection_dim": raw["projection_dim"]})
    return CLIPVisionModelWithProjection.from_pretrained(folder, **kw)
