"""DPIR: Dual Prompting Image Restoration with diffusion transformers (Kong et al., 2025).

The method as the paper describes it, on diffusers and transformers parts:

- an SD3 transformer (``SD3Transformer2DModel``) denoising 16-channel latents by
  rectified flow: ``x_t = (1 - s) x_0 + s e``, the model predicts ``e - x_0``, ``s`` drawn
  logit-normally (``s = sigmoid(n)``, ``n ~ N(0, 1)``); Euler flow-matching sampling;
- the **LQ image condition branch** (Sec. 3.2): a few trainable convolutions ``F_c`` on the LQ
  latent, aligned by **cross-normalization** to the statistics of the first transformer
  block's output and added to it: ``y_c = F_d0(z_t) + eta(F_c(z_LQ); mu, sigma)``, with
  ``eta(c) = (c - mean(c)) / std(c) * sigma + mu`` per sample (ControlNeXt's alignment),
  scaled by a learnable gate that starts at zero;
- **dual prompting** (Sec. 3.3): the CLIP *text* embeddings of SD3 are replaced by CLIP
  *image* tokens of the LQ image, a global view (the whole image) and local patches (a
  2x2 grid), zero-padded to the joint attention width like SD3 pads its CLIP tokens and
  joined with the T5 embedding of the caption (dropped to ``""`` with ``caption_dropout``);
  the pooled projection comes from the image embeddings;
- the **degradation-robust VAE encoder** (Sec. 3.1), ``--stage vae``: a copy of the VAE
  encoder trained on LQ images so that ``D(E_dr(x_LQ))`` matches ``x_HQ`` with L1 plus
  ``lpips_weight`` times LPIPS (pyiqa's network with local weights from ``lpips_weights``; 0 in
  the tiny config, which has no weights), plus ``gan_weight`` times an optional GAN term; the transformer
  stage encodes the LQ with it when ``vae_checkpoint`` names that run.

Documented choices: the transformer is fine-tuned with the LQ branch (the frozen parts are
T5, the CLIP image encoder and the VAE); the global view at inference is the whole LQ image
(the paper's larger context crop needs the surrounding image, which a test-set record does
not carry); the robust encoder's optional GAN term (``gan_weight``, off by default) uses
:mod:`.losses`' PatchGAN discriminator with the hinge loss, trained alongside the encoder.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .components import freeze, tiny_tokenizer
from .losses import PatchDiscriminator, adversarial_losses
from .method import ConfigError, Method, register
from .sampling import InferenceProtocol, crops, denoise, make_sampler, per_tile
from .tiling import tiled_decode, tiled_encode


def cross_normalize(cond: torch.Tensor, main: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``eta(cond; mu, sigma)``: ``cond`` standardized per sample, then given ``main``'s mean and std per sample."""
    dims = tuple(range(1, cond.ndim))
    c = (cond - cond.mean(dim=dims, keepdim=True)) / (cond.std(dim=dims, keepdim=True) + eps)
    return c * main.std(dim=dims, keepdim=True) + main.mean(dim=dims, keepdim=True)


class LQConditionBranch(nn.Module):
    """``F_c``: a few convolutions on the LQ latent, patchified to the transformer's tokens."""

    def __init__(self, latent_channels: int, width: int, inner_dim: int, patch_size: int):
        super().__init__()
        self.convs = nn.Sequential(nn.Conv2d(latent_channels, width, 3, padding=1), nn.SiLU(),
                                   nn.Conv2d(width, width, 3, padding=1), nn.SiLU())
        self.to_tokens = nn.Conv2d(width, inner_dim, patch_size, stride=patch_size)
        self.gate = nn.Parameter(torch.zeros(()))

    def forward(self, z_lq: torch.Tensor) -> torch.Tensor:
        return self.to_tokens(self.convs(z_lq)).flatten(2).transpose(1, 2)


def logit_normal(n: int, generator: torch.Generator, mean: float = 0.0, std: float = 1.0) -> torch.Tensor:
    """Flow-matching noise levels ``sigmoid(N(mean, std))`` (SD3's logit-normal sampling)."""
    return torch.sigmoid(torch.randn(n, generator=generator) * std + mean)


@register("dpir")
class Dpir(Method):
    """DPIR: SD3 transformer with the LQ condition branch, dual prompting and a degradation-robust VAE encoder."""

    sampler = "flow-euler"

    @dataclass
    class Config(InferenceProtocol):
        """``stage``: ``dit`` (transformer and LQ branch) or ``vae`` (the degradation-robust encoder).

        Protocol keys (steps, sampler, tiles, ...) as :class:`~.sampling.InferenceProtocol`'s.
        """

        variant: str = "tiny"
        stage: str = "dit"
        vae_checkpoint: str | None = None
        lq_branch_width: int = 16
        clip_image_size: int = 32
        local_grid: int = 2
        caption_dropout: float = 0.1
        semantic_field: str = "caption_high"
        logit_mean: float = 0.0
        logit_std: float = 1.0
        shift: float = 1.0
        lpips_weight: float = 0.0
        lpips_weights: str | None = None  # folder with LPIPS_v0.1_alex-df73285e.pth and alexnet-owt-7be5be79.pth
        gan_weight: float = 0.0  # the optional GAN term of the robust encoder stage (PatchGAN, hinge)
        disc_width: int = 64
        resolution: int = 32
        learning_rate: float = 1e-4
        seed: int = 0

    def __init__(self, config: Config, transformer, vae, text_encoder, tokenizer, image_encoder):
        super().__init__()
        import copy

        if config.stage not in ("dit", "vae"):
            raise ConfigError(f"stage must be 'dit' or 'vae', got {config.stage!r}")
        self.config = config
        self.semantic_dropout = config.caption_dropout
        self.transformer, self.vae, self.text_encoder, self.image_encoder = transformer, vae, text_encoder, \
            image_encoder
        self.tokenizer = tokenizer
        freeze(self.vae, self.text_encoder, self.image_encoder)
        self.robust_encoder = copy.deepcopy(self.vae.encoder)
        self.robust_quant_conv = copy.deepcopy(self.vae.quant_conv) if self.vae.quant_conv is not None else None
        inner = transformer.config.num_attention_heads * transformer.config.attention_head_dim
        self.lq_branch = LQConditionBranch(self.vae.config.latent_channels, config.lq_branch_width, inner,
                                           transformer.config.patch_size)
        self.latent_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.lpips = make_lpips(config.lpips_weights) if config.stage == "vae" and config.lpips_weight else None
        if self.lpips is not None:
            freeze(self.lpips)
        # the optional GAN term of the robust encoder stage: a PatchGAN discriminator trained alongside
        self.discriminator = PatchDiscriminator(width=config.disc_width) \
            if config.stage == "vae" and config.gan_weight else None
        if config.stage == "vae":
            self.requires_grad_(False)
            self.robust_encoder.requires_grad_(True)
            if self.robust_quant_conv is not None:
                self.robust_quant_conv.requires_grad_(True)
            if self.discriminator is not None:
                self.discriminator.requires_grad_(True)
        else:
            self.transformer.requires_grad_(True)
            self.robust_encoder.requires_grad_(False)
            if self.robust_quant_conv is not None:
                self.robust_quant_conv.requires_grad_(False)

    @property
    def frozen_modules(self) -> tuple[str, ...]:  # type: ignore[override]
        base = ("vae", "text_encoder", "image_encoder", "lpips")
        return base + ("transformer", "lq_branch") if self.config.stage == "vae" else base + ("robust_encoder",)

    @classmethod
    def build(cls, config: Config, base: str | None = None) -> Dpir:
        if base is not None or config.variant != "tiny":
            if base is None:
                raise ConfigError(f"config variant {config.variant!r} needs --base: a local SD3 folder")
            parts = load_sd3(base)
        else:
            torch.manual_seed(config.seed)
            parts = tiny_sd3(config)
        model = cls(config, *parts)
        if config.stage == "dit" and config.vae_checkpoint:
            model.load_robust_encoder(config.vae_checkpoint)
        return model

    def load_robust_encoder(self, path: str) -> None:
        """Load the robust encoder trained by a ``--stage vae`` run."""
        from safetensors.torch import load_file

        from . import checkpoint as ckpt

        folder = ckpt.latest(path)
        if folder is None:
            raise ConfigError(f"vae_checkpoint {path!r}: no checkpoint there (train with --stage vae first)")
        state = {k: v for k, v in load_file(folder / "model.safetensors").items() if k.startswith("robust_")}
        self.load_state_dict(state, strict=False)

    # ------------------------------------------------------------------ pieces

    def encode(self, images: torch.Tensor, robust: bool = False) -> torch.Tensor:
        """Latents ``(mean - shift) * scale`` of the (robust, for LQ) VAE encoder."""
        enc = self.robust_encoder if robust else self.vae.encoder
        qc = self.robust_quant_conv if robust else self.vae.quant_conv
        h = enc(images)
        h = qc(h) if qc is not None else h
        mean = h.chunk(2, dim=1)[0]
        shift = self.vae.config.shift_factor or 0.0
        return (mean - shift) * self.vae.config.scaling_factor

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        shift = self.vae.config.shift_factor or 0.0
        return self.vae.decode(z / self.vae.config.scaling_factor + shift).sample

    def dual_prompt(self, lq: torch.Tensor, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(c_dual, pooled)``: CLIP image tokens of the global view and local patches, then T5 tokens."""
        size, g = self.config.clip_image_size, self.config.local_grid
        views = [lq]
        h, w = lq.shape[-2:]
        for i in range(g):
            for j in range(g):
                views.append(lq[..., i * h // g:(i + 1) * h // g, j * w // g:(j + 1) * w // g])
        mean = torch.tensor([0.48145466, 0.4578275, 0.40821073], device=lq.device)[None, :, None, None]
        std = torch.tensor([0.26862954, 0.26130258, 0.27577711], device=lq.device)[None, :, None, None]
        tokens, pooled = [], None
        with torch.no_grad():
            for k, v in enumerate(views):
                x = F.interpolate((v + 1) / 2, size=(size, size), mode="bicubic", align_corners=False)
                out = self.image_encoder(pixel_values=(x - mean) / std)
                tokens.append(out.last_hidden_state)
                if k == 0:
                    pooled = out.image_embeds  # the global view's embedding
            ids = self.tokenizer(list(captions), padding="max_length", truncation=True,
                                 max_length=self.tokenizer.model_max_length, return_tensors="pt").input_ids
            t5 = self.text_encoder(ids.to(lq.device))[0]
        width = self.transformer.config.joint_attention_dim
        vis = torch.cat(tokens, dim=1)
        vis = F.pad(vis, (0, width - vis.shape[-1]))
        pooled = F.pad(pooled, (0, self.transformer.config.pooled_projection_dim - pooled.shape[-1]))
        return torch.cat([vis, t5], dim=1), pooled

    def velocity(self, z_t: torch.Tensor, sigma: torch.Tensor, z_lq: torch.Tensor, c_dual: torch.Tensor,
                 pooled: torch.Tensor, lq_branch: bool = True) -> torch.Tensor:
        """The transformer's prediction with the LQ branch injected after its first block (cross-normalized)."""
        tr = self.transformer
        p = tr.config.patch_size
        hgt, wid = z_t.shape[-2:]
        h = tr.pos_embed(z_t)
        temb = tr.time_text_embed(sigma * 1000, pooled)
        ctx = tr.context_embedder(c_dual)
        for k, block in enumerate(tr.transformer_blocks):
            ctx, h = block(hidden_states=h, encoder_hidden_states=ctx, temb=temb)
            if k == 0 and lq_branch:
                h = h + self.lq_branch.gate * cross_normalize(self.lq_branch(z_lq), h)
        h = tr.proj_out(tr.norm_out(h, temb))
        h = h.reshape(h.shape[0], hgt // p, wid // p, p, p, tr.out_channels)
        return torch.einsum("nhwpqc->nchpwq", h).reshape(h.shape[0], tr.out_channels, hgt, wid)

    # ------------------------------------------------------------------ train / predict

    def training_step(self, batch: dict, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """``dit``: rectified flow with logit-normal noise levels; ``vae``: L1 of D(E_dr(LQ)) against HQ."""
        hq, lq = batch["hq"], batch["lq"]
        if self.config.stage == "vae":  # ||D(E_dr(x_LQ)) - x_HQ||_1 + alpha * LPIPS (Sec. 3.1)
            rec = self.decode(self.encode(lq, robust=True))
            l1 = F.l1_loss(rec.float(), hq.float())
            out = {"l1": l1.detach()}
            loss = l1
            if self.lpips is not None:
                per = self.lpips((rec.float() + 1) / 2, (hq.float() + 1) / 2).mean()
                loss = loss + self.config.lpips_weight * per
                out["lpips"] = per.detach()
            if self.discriminator is not None:
                adv, disc = adversarial_losses(self.discriminator, rec, hq)
                loss = loss + self.config.gan_weight * adv + disc  # + the discriminator's own hinge term
                out["adv"], out["disc"] = adv.detach(), disc.detach()
            return {"loss": loss, **out}
        with torch.no_grad():
            x0 = self.encode(hq)
            z_lq = self.encode(lq, robust=self.config.vae_checkpoint is not None)
        c_dual, pooled = self.dual_prompt(lq, batch["semantic_prompt"])
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
        s = logit_normal(x0.shape[0], generator, self.config.logit_mean, self.config.logit_std).to(x0.device)
        x_t = (1 - s[:, None, None, None]) * x0 + s[:, None, None, None] * noise
        pred = self.velocity(x_t, s, z_lq, c_dual, pooled)
        loss = F.mse_loss(pred.float(), (noise - x0).float())
        return {"loss": loss}

    @property
    def size_multiple(self) -> int:
        """The VAE's factor times the transformer's patch size."""
        return self.latent_factor * self.transformer.config.patch_size

    @torch.no_grad()
    def restore(self, batch: dict, generator: torch.Generator, protocol: InferenceProtocol, lq_branch: bool = True,
                tile_batch: int = 1, **_: object) -> torch.Tensor:
        """Euler flow-matching sampling from noise to the restored latent, over latent tiles."""
        p = protocol
        if p.sampler != "flow-euler":
            raise ConfigError(f"DPIR samples by rectified flow: sampler must be 'flow-euler', got {p.sampler!r}")
        sched = make_sampler("flow-euler", {}, p.steps, shift=self.config.shift)
        lq = batch["lq"]
        f, patch = self.latent_factor, self.transformer.config.patch_size
        if p.tile_size % patch or p.tile_overlap % patch:
            raise ConfigError(f"DPIR's tile_size and tile_overlap must be multiples of the patch size {patch}")
        robust = self.config.vae_checkpoint is not None
        z_lq = tiled_encode(lambda x: self.encode(x, robust=robust), lq, f, p.vae_encoder_tile,
                            p.vae_tile_overlap, tile_batch)
        z = torch.randn(z_lq.shape, generator=generator).to(lq.device)
        c_dual, pooled = self.dual_prompt(lq, batch["semantic_prompt"])

        def model_output(z_t: torch.Tensor, t: torch.Tensor, boxes: list) -> torch.Tensor:
            n = len(boxes)
            sigma = (t / 1000).expand(z_t.shape[0]).to(z_t.dtype)
            return self.velocity(z_t, sigma, crops(z_lq, boxes), per_tile(c_dual, n), per_tile(pooled, n), lq_branch)

        z = denoise(sched, z, model_output, p, generator, tile_batch=tile_batch)
        out = tiled_decode(lambda zt, _box: self.decode(zt), z, f, p.vae_decoder_tile, p.vae_tile_overlap,
                           tile_batch)
        return out.clamp(-1, 1)


LPIPS_FILES = ("LPIPS_v0.1_alex-df73285e.pth", "alexnet-owt-7be5be79.pth")


def make_lpips(folder: str | None) -> nn.Module:
    """pyiqa's LPIPS network (AlexNet, v0.1) with its weights from ``folder``; nothing is downloaded."""
    from pathlib import Path

    import torch.hub
    from pyiqa.archs.lpips_arch import LPIPS

    from .components import WeightsMissing

    root = Path(folder) if folder else None
    missing = [n for n in LPIPS_FILES if root is None or not (root / n).is_file()]
    if missing:
        raise WeightsMissing(f"lpips_weights {folder!r}: missing {', '.join(missing)}. Put LPIPS v0.1's linear layers "
                             "(pyiqa's release) and torchvision's AlexNet weights in one folder and set "
                             "lpips_weights to it (the same files `bench` uses under torch/hub/), or set "
                             "lpips_weight to 0")
    import shutil
    import tempfile

    saved = torch.hub.get_dir()
    hub = Path(tempfile.mkdtemp(prefix="pirs-hub-"))  # the weights folder itself may be read-only
    (hub / "checkpoints").mkdir()
    (hub / "checkpoints" / LPIPS_FILES[1]).symlink_to((root / LPIPS_FILES[1]).resolve())
    torch.hub.set_dir(str(hub))  # torchvision finds AlexNet there instead of downloading it
    try:
        return LPIPS(pretrained=True, net="alex", pretrained_model_path=str(root / LPIPS_FILES[0]))
    finally:
        torch.hub.set_dir(saved)
        shutil.rmtree(hub, ignore_errors=True)


def tiny_sd3(config) -> tuple:
    """A two-layer SD3 transformer, a 16-channel VAE, a tiny T5 and a tiny CLIP vision tower (random, offline)."""
    from diffusers import AutoencoderKL, SD3Transformer2DModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection, T5Config, T5EncoderModel

    tokenizer = tiny_tokenizer(16)
    transformer = SD3Transformer2DModel(sample_size=16, patch_size=2, in_channels=16, num_layers=2,
                                        attention_head_dim=8, num_attention_heads=2, joint_attention_dim=32,
                                        caption_projection_dim=16, pooled_projection_dim=32, out_channels=16,
                                        pos_embed_max_size=32)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), latent_channels=16,
                        layers_per_block=1, norm_num_groups=4, sample_size=32, scaling_factor=1.5305,
                        shift_factor=0.0609, use_quant_conv=False, use_post_quant_conv=False)
    t5 = T5EncoderModel(T5Config(vocab_size=len(tokenizer), d_model=32, d_ff=32, d_kv=8, num_layers=1, num_heads=2,
                                 pad_token_id=tokenizer.pad_token_id, decoder_start_token_id=tokenizer.pad_token_id))
    clip = CLIPVisionModelWithProjection(CLIPVisionConfig(
        image_size=config.clip_image_size, patch_size=8, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, projection_dim=16))
    return transformer, vae, t5, tokenizer, clip


SD3_FILES = {"transformer": ["config.json"], "vae": ["config.json"], "text_encoder_3": ["config.json"],
             "tokenizer_3": ["tokenizer_config.json"], "image_encoder": ["config.json"]}


def load_sd3(base: str) -> tuple:
    """SD3 (medium) components from a local diffusers folder plus ``image_encoder/`` (a CLIP vision tower)."""
    from diffusers import AutoencoderKL, SD3Transformer2DModel
    from transformers import AutoTokenizer, CLIPVisionModelWithProjection, T5EncoderModel

    from .components import check_local

    root = check_local(base, SD3_FILES, "on a machine with internet: huggingface-cli download "
                       "stabilityai/stable-diffusion-3-medium-diffusers --local-dir DIR, and a CLIP ViT-L/14 vision "
                       "tower (openai/clip-vit-large-patch14) into DIR/image_encoder")
    kw = {"local_files_only": True}
    return (SD3Transformer2DModel.from_pretrained(root / "transformer", **kw),
            AutoencoderKL.from_pretrained(root / "vae", **kw),
            T5EncoderModel.from_pretrained(root / "text_encoder_3", **kw),
            AutoTokenizer.from_pretrained(root / "tokenizer_3", **kw),
            CLIPVisionModelWithProjection.from_pretrained(root / "image_encoder", **kw))
