"""DPIR: Dual Prompting Image Restoration with diffusion transformers (Kong et al., CVPR 2025).

The method as its descriptions give it (``../shared/seeds/000_*.txt``, a summary, and
``001_*.txt``, a blog post; the official code is not public), on diffusers and transformers
parts. Names follow the paper.

- **Rectified flow on SD3** (blog Sec. 2): ``z_t = (1 - t) x_0 + t e``, the transformer
  predicts ``e - x_0``; training draws ``t = shift(sigmoid(n))``, ``n ~ N(0, 1)``, with the
  same ``shift`` the Euler sampler uses (SD3's scheduler shift, which diffusers' SD3 training
  applies by drawing from the shifted scheduler table).
- **Degradation-robust VAE encoder** ``E_dr`` (Sec. 3.1), ``--stage vae``: a copy of SD3's VAE
  encoder trained so that ``D(E_dr(x_LQ))`` matches ``x_HQ`` (``D`` frozen) with
  ``L1 + lambda_lpips LPIPS + lambda_gan L_GAN`` (``lpips_weight``, ``gan_weight``; the GAN
  term is :mod:`.losses`' PatchGAN with the hinge loss, trained in the same step); the
  transformer stage encodes the LQ with it when ``vae_checkpoint`` names that run.
- **LQ image conditioning branch** (Sec. 3.2): a few convolutions ``F_c`` on the LQ latent,
  aligned to the first DiT block's output and added to it:
  ``y_c = F_d0(z_t) + eta(F_c(z_LQ); mu, sigma)`` with
  ``eta(c) = (c - mean(c)) / std(c) * sigma + mu`` per sample (ControlNeXt's
  cross-normalization), scaled by a learnable gate that starts at zero (pirs).
- **Dual prompting** (Sec. 3.3): SD3's two CLIP *text* encoders are replaced by two CLIP
  *image* encoders (the vision towers of the same two CLIP models, ``image_encoder`` and
  ``image_encoder_2``). Both read the **local** view (the patch being restored) and the
  **global** view (a larger context patch containing it, ``global_scale`` times its side);
  each view's token features of the two encoders are joined side by side and zero-padded to
  the joint attention width, the global view's tokens then the local view's form
  ``c^vis_{G-L}``, followed by the T5 tokens of the caption (``c_dual``); the pooled
  projection ``c_pool`` is the two encoders' image embeddings of the local view joined, as
  SD3 joins its two pooled text embeddings.
- **Global-local visual training**: each transformer training step cuts a random local patch
  (``1 / global_scale`` of the crop's side) from the batch's LQ/HQ crops with the step's
  generator, and its global view around it from the same crop; at inference every latent
  tile is a local view and its global view is the window ``global_scale`` times the tile
  around it, clamped to the image (:func:`context_box`, shared by both paths).

What differs from the paper or fills a gap it leaves is listed in the README's DPIR section,
each row with the test that pins it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .components import WeightsMissing, freeze, load_clip_vision, tiny_tokenizer
from .losses import PatchDiscriminator, adversarial_losses
from .method import ConfigError, Method, register
from .sampling import InferenceProtocol, crops, denoise, make_sampler, per_tile
from .tiling import Box, tiled_decode, tiled_encode

# CLIP's input normalization (openai/clip-vit-large-patch14 preprocessor_config.json; OpenCLIP's bigG/14
# uses the same OpenAI mean and std)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


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


def shifted(t: torch.Tensor, shift: float) -> torch.Tensor:
    """SD3's timestep shift ``shift * t / (1 + (shift - 1) * t)`` (diffusers' ``FlowMatchEulerDiscreteScheduler``)."""
    return shift * t / (1 + (shift - 1) * t)


def context_box(box: Box, height: int, width: int, scale: float) -> Box:
    """The global view of the local view ``box`` in a ``height x width`` image.

    ``scale`` times the box's sides (never smaller than the box, never larger than the
    image), centred on the box and shifted inside the image, so it always contains the box.
    """
    h = min(height, max(box.h, round(scale * box.h)))
    w = min(width, max(box.w, round(scale * box.w)))
    y0 = min(max((2 * box.y0 + box.h - h) // 2, 0), height - h)
    x0 = min(max((2 * box.x0 + box.w - w) // 2, 0), width - w)
    return Box(y0, x0, h, w)


@register("dpir")
class Dpir(Method):
    """DPIR: SD3 transformer with the LQ condition branch, dual prompting and a degradation-robust VAE encoder."""

    sampler = "flow-euler"

    @dataclass
    class Config(InferenceProtocol):
        """``stage``: ``dit`` (transformer and LQ branch) or ``vae`` (the degradation-robust encoder).

        ``global_scale``: the global view's side over the local view's (training cuts local
        patches of ``resolution / global_scale``; inference widens each tile by it).
        Protocol keys (steps, sampler, tiles, ...) as :class:`~.sampling.InferenceProtocol`'s.
        """

        variant: str = "tiny"
        stage: str = "dit"
        vae_checkpoint: str | None = None
        lq_branch_width: int = 16
        global_scale: float = 2.0
        t5_max_length: int | None = None  # None: the tokenizer's model_max_length
        caption_dropout: float = 0.1
        semantic_field: str = "caption_high"
        logit_mean: float = 0.0
        logit_std: float = 1.0
        shift: float = 1.0
        lpips_weight: float = 0.0
        lpips_weights: str | None = None  # folder with LPIPS_v0.1_alex-df73285e.pth and alexnet-owt-7be5be79.pth
        gan_weight: float = 0.0  # lambda_gan of the robust encoder stage (PatchGAN, hinge)
        disc_width: int = 64
        resolution: int = 32
        learning_rate: float = 1e-4
        seed: int = 0

    def __init__(self, config: Config, transformer, vae, text_encoder, tokenizer, image_encoder, image_encoder_2):
        super().__init__()
        import copy

        if config.stage not in ("dit", "vae"):
            raise ConfigError(f"stage must be 'dit' or 'vae', got {config.stage!r}")
        if config.global_scale < 1:
            raise ConfigError(f"global_scale must be >= 1 (the global view contains the local one), "
                              f"got {config.global_scale}")
        self.config = config
        self.semantic_dropout = config.caption_dropout
        self.transformer, self.vae, self.text_encoder = transformer, vae, text_encoder
        self.image_encoder, self.image_encoder_2 = image_encoder, image_encoder_2
        self.tokenizer = tokenizer
        check_image_encoders(transformer.config, image_encoder.config, image_encoder_2.config)
        freeze(self.vae, self.text_encoder, self.image_encoder, self.image_encoder_2)
        self.robust_encoder = copy.deepcopy(self.vae.encoder)
        self.robust_quant_conv = copy.deepcopy(self.vae.quant_conv) if self.vae.quant_conv is not None else None
        inner = transformer.config.num_attention_heads * transformer.config.attention_head_dim
        self.lq_branch = LQConditionBranch(self.vae.config.latent_channels, config.lq_branch_width, inner,
                                           transformer.config.patch_size)
        self.latent_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.lpips = make_lpips(config.lpips_weights) if config.stage == "vae" and config.lpips_weight else None
        if self.lpips is not None:
            freeze(self.lpips)
        # L_GAN of the robust encoder stage: a PatchGAN discriminator trained alongside
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
        base = ("vae", "text_encoder", "image_encoder", "image_encoder_2", "lpips")
        return base + ("transformer", "lq_branch") if self.config.stage == "vae" else base + ("robust_encoder",)

    @classmethod
    def build(cls, config: Config, base: str | None = None) -> Dpir:
        if base is not None or config.variant != "tiny":
            if base is None:
                raise ConfigError(f"config variant {config.variant!r} needs --base: a local SD3 folder")
            parts = load_sd3(base)
        else:
            torch.manual_seed(config.seed)
            parts = tiny_sd3()
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

    @torch.no_grad()
    def clip_view(self, view: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(tokens, pooled)`` of one view (images in [-1, 1]) through both CLIP image encoders.

        Each encoder sees the view resized (bicubic, antialiased) to its square input; its
        penultimate hidden states are the tokens (what SD3 takes from its CLIP text encoders
        and from its image encoder: ``hidden_states[-2]``) and its projected class token the
        pooled embedding. The two encoders' tokens are joined side by side and their pooled
        embeddings end to end, as SD3's ``encode_prompt`` joins its two CLIP text encoders'.
        """
        mean = torch.tensor(CLIP_MEAN, device=view.device, dtype=view.dtype)[None, :, None, None]
        std = torch.tensor(CLIP_STD, device=view.device, dtype=view.dtype)[None, :, None, None]
        tokens, pooled = [], []
        for enc in (self.image_encoder, self.image_encoder_2):
            size = enc.config.image_size
            x = F.interpolate((view + 1) / 2, size=(size, size), mode="bicubic", align_corners=False,
                              antialias=True)
            out = enc(pixel_values=((x - mean) / std).to(enc.dtype), output_hidden_states=True)
            tokens.append(out.hidden_states[-2])
            pooled.append(out.image_embeds)
        return torch.cat(tokens, dim=-1), torch.cat(pooled, dim=-1)

    @torch.no_grad()
    def visual_prompt(self, local: torch.Tensor, glob: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(c^vis_{G-L}, c_pool)``: the global view's tokens, then the local view's; the local view's pooled."""
        g_tokens, _ = self.clip_view(glob)
        l_tokens, pooled = self.clip_view(local)
        return torch.cat([g_tokens, l_tokens], dim=1), pooled

    @torch.no_grad()
    def text_prompt(self, captions: list[str], device: torch.device | str) -> torch.Tensor:
        """T5 tokens of the captions (the text half of the dual prompt)."""
        length = self.config.t5_max_length or self.tokenizer.model_max_length
        ids = self.tokenizer(list(captions), padding="max_length", truncation=True, max_length=length,
                             return_tensors="pt").input_ids
        return self.text_encoder(ids.to(device))[0]

    def dual_prompt(self, vis: torch.Tensor, pooled: torch.Tensor, t5: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(c_dual, pooled)`` as the transformer takes them: visual tokens padded to the joint width, then T5."""
        width = self.transformer.config.joint_attention_dim
        vis = F.pad(vis, (0, width - vis.shape[-1]))
        pooled = F.pad(pooled, (0, self.transformer.config.pooled_projection_dim - pooled.shape[-1]))
        return torch.cat([vis, t5.to(vis.dtype)], dim=1), pooled

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

    def training_views(self, batch: dict, generator: torch.Generator) -> dict:
        """The global-local views of one training step, cut from the batch's crops with ``generator``.

        The local view is a square of ``resolution / global_scale`` (down to a multiple of
        ``size_multiple``) at a random place in each sample's crop; its global view is
        :func:`context_box` of it (the whole crop when ``resolution = global_scale x local``).
        Returns the pixel boxes and the LQ/HQ local patches and the LQ global views.
        """
        lq, hq = batch["lq"], batch["hq"]
        height, width = lq.shape[-2:]
        m = self.size_multiple
        side = int(min(height, width) / self.config.global_scale) // m * m
        if side < m:
            raise ConfigError(f"resolution {min(height, width)} / global_scale {self.config.global_scale} leaves "
                              f"no local patch of at least {m} px")
        ys = torch.randint(0, height - side + 1, (lq.shape[0],), generator=generator).tolist()
        xs = torch.randint(0, width - side + 1, (lq.shape[0],), generator=generator).tolist()
        local = [Box(y, x, side, side) for y, x in zip(ys, xs, strict=True)]
        glob = [context_box(b, height, width, self.config.global_scale) for b in local]
        return {"local": local, "global": glob,
                "lq": torch.stack([b.crop(lq[i]) for i, b in enumerate(local)]),
                "hq": torch.stack([b.crop(hq[i]) for i, b in enumerate(local)]),
                "lq_global": torch.stack([b.crop(lq[i]) for i, b in enumerate(glob)])}

    def noise_levels(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Training's ``t``: logit-normal, then SD3's shift (the sampler's ``shift``)."""
        s = logit_normal(n, generator, self.config.logit_mean, self.config.logit_std)
        return shifted(s, self.config.shift)

    def training_step(self, batch: dict, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """``dit``: rectified flow on a global-local training patch; ``vae``: the robust encoder's loss."""
        hq, lq = batch["hq"], batch["lq"]
        if self.config.stage == "vae":  # ||D(E_dr(x_LQ)) - x_HQ||_1 + l_lpips LPIPS + l_gan L_GAN (Sec. 3.1)
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
        views = self.training_views(batch, generator)
        with torch.no_grad():
            x0 = self.encode(views["hq"])
            z_lq = self.encode(views["lq"], robust=self.config.vae_checkpoint is not None)
        vis, pooled = self.visual_prompt(views["lq"], views["lq_global"])
        c_dual, pooled = self.dual_prompt(vis, pooled, self.text_prompt(batch["semantic_prompt"], lq.device))
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
        t = self.noise_levels(x0.shape[0], generator).to(x0.device)
        x_t = (1 - t[:, None, None, None]) * x0 + t[:, None, None, None] * noise
        pred = self.velocity(x_t, t, z_lq, c_dual, pooled)
        loss = F.mse_loss(pred.float(), (noise - x0).float())
        return {"loss": loss}

    @property
    def size_multiple(self) -> int:
        """The VAE's factor times the transformer's patch size."""
        return self.latent_factor * self.transformer.config.patch_size

    @torch.no_grad()
    def restore(self, batch: dict, generator: torch.Generator, protocol: InferenceProtocol, lq_branch: bool = True,
                tile_batch: int = 1, **_: object) -> torch.Tensor:
        """Euler flow-matching sampling over latent tiles, each with its own global-local visual prompt."""
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
        t5 = self.text_prompt(batch["semantic_prompt"], lq.device)
        prompts: dict[Box, tuple[torch.Tensor, torch.Tensor]] = {}  # per tile, computed once for all steps

        def tile_prompt(box: Box) -> tuple[torch.Tensor, torch.Tensor]:
            if box not in prompts:
                local, glob = self.tile_views(lq, box)
                prompts[box] = self.visual_prompt(local, glob)
            return prompts[box]

        def model_output(z_t: torch.Tensor, t: torch.Tensor, boxes: list[Box]) -> torch.Tensor:
            n = len(boxes)
            vis, pooled = zip(*(tile_prompt(b) for b in boxes), strict=True)
            c_dual, pooled = self.dual_prompt(torch.cat(vis), torch.cat(pooled), per_tile(t5, n))
            sigma = (t / 1000).expand(z_t.shape[0]).to(z_t.dtype)
            return self.velocity(z_t, sigma, crops(z_lq, boxes), c_dual, pooled, lq_branch)

        z = denoise(sched, z, model_output, p, generator, tile_batch=tile_batch)
        out = tiled_decode(lambda zt, _box: self.decode(zt), z, f, p.vae_decoder_tile, p.vae_tile_overlap,
                           tile_batch)
        return out.clamp(-1, 1)

    def tile_views(self, lq: torch.Tensor, box: Box) -> tuple[torch.Tensor, torch.Tensor]:
        """``(local, global)`` LQ pixels of a latent tile: the pixels under it, and its :func:`context_box`."""
        px = box.scaled(self.latent_factor)
        ctx = context_box(px, lq.shape[-2], lq.shape[-1], self.config.global_scale)
        return px.crop(lq), ctx.crop(lq)


def check_image_encoders(tr, enc, enc2) -> None:
    """The two CLIP image encoders must fit where SD3's two CLIP text encoders went."""
    t1, t2 = ((c.image_size // c.patch_size) ** 2 + 1 for c in (enc, enc2))
    if t1 != t2:
        raise ConfigError(f"image_encoder and image_encoder_2 give {t1} and {t2} tokens; their tokens are joined "
                          "side by side, so they need the same image_size / patch_size")
    if enc.hidden_size + enc2.hidden_size > tr.joint_attention_dim:
        raise ConfigError(f"the CLIP image tokens ({enc.hidden_size} + {enc2.hidden_size}) are wider than the "
                          f"transformer's joint_attention_dim {tr.joint_attention_dim}")
    if enc.projection_dim + enc2.projection_dim > tr.pooled_projection_dim:
        raise ConfigError(f"the CLIP image embeddings ({enc.projection_dim} + {enc2.projection_dim}) are wider than "
                          f"the transformer's pooled_projection_dim {tr.pooled_projection_dim}")


LPIPS_FILES = ("LPIPS_v0.1_alex-df73285e.pth", "alexnet-owt-7be5be79.pth")


def make_lpips(folder: str | None) -> nn.Module:
    """pyiqa's LPIPS network (AlexNet, v0.1) with its weights from ``folder``; nothing is downloaded."""
    import torch.hub
    from pyiqa.archs.lpips_arch import LPIPS

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


def tiny_sd3() -> tuple:
    """A two-layer SD3 transformer, a 16-channel VAE, a tiny T5 and two tiny CLIP vision towers (random, offline).

    The two towers differ in width (12 and 16) like CLIP-L and bigG do, and their image
    embeddings (12 + 20) fill the transformer's pooled width (32) as 768 + 1280 fill SD3's 2048.
    """
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
    clips = [CLIPVisionModelWithProjection(CLIPVisionConfig(
        image_size=32, patch_size=8, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
        num_attention_heads=2, projection_dim=proj)) for hidden, proj in ((12, 12), (16, 20))]
    return transformer, vae, t5, tokenizer, *clips


# SD3 medium and the two CLIP vision towers at their published sizes (for counting on the meta device)
SD3_MEDIUM_TRANSFORMER = dict(sample_size=128, patch_size=2, in_channels=16, num_layers=24, attention_head_dim=64,
                              num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536,
                              pooled_projection_dim=2048, out_channels=16, pos_embed_max_size=192)
SD3_VAE = dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
               up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
               latent_channels=16, norm_num_groups=32, sample_size=1024, scaling_factor=1.5305, shift_factor=0.0609,
               use_quant_conv=False, use_post_quant_conv=False)
T5_XXL = dict(vocab_size=32128, d_model=4096, d_ff=10240, d_kv=64, num_layers=24, num_heads=64,
              feed_forward_proj="gated-gelu")  # google/t5-v1_1-xxl's encoder, SD3's text_encoder_3
CLIP_L14_VISION = dict(image_size=224, patch_size=14, hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                       num_attention_heads=16, projection_dim=768,
                       hidden_act="quick_gelu")  # openai/clip-vit-large-patch14
CLIP_BIGG14_VISION = dict(image_size=224, patch_size=14, hidden_size=1664, intermediate_size=8192,
                          num_hidden_layers=48, num_attention_heads=16, projection_dim=1280,
                          hidden_act="gelu")  # laion/CLIP-ViT-bigG-14-laion2B-39B-b160k


def sd3_architecture() -> tuple:
    """Random parts of SD3 medium's sizes with the two CLIP vision towers (build under ``torch.device("meta")``)."""
    from diffusers import AutoencoderKL, SD3Transformer2DModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection, T5Config, T5EncoderModel

    return (SD3Transformer2DModel(**SD3_MEDIUM_TRANSFORMER), AutoencoderKL(**SD3_VAE),
            T5EncoderModel(T5Config(**T5_XXL)), tiny_tokenizer(77),
            CLIPVisionModelWithProjection(CLIPVisionConfig(**CLIP_L14_VISION)),
            CLIPVisionModelWithProjection(CLIPVisionConfig(**CLIP_BIGG14_VISION)))


# what --base must hold: folder -> (what it is, the Hugging Face repository it comes from)
SD3_LAYOUT = {
    "transformer": ("SD3 medium's transformer", "stabilityai/stable-diffusion-3-medium-diffusers"),
    "vae": ("SD3's VAE", "stabilityai/stable-diffusion-3-medium-diffusers"),
    "text_encoder_3": ("SD3's T5-XXL encoder", "stabilityai/stable-diffusion-3-medium-diffusers"),
    "tokenizer_3": ("SD3's T5 tokenizer", "stabilityai/stable-diffusion-3-medium-diffusers"),
    "image_encoder": ("the CLIP ViT-L/14 vision tower", "openai/clip-vit-large-patch14"),
    "image_encoder_2": ("the OpenCLIP ViT-bigG/14 vision tower", "laion/CLIP-ViT-bigG-14-laion2B-39B-b160k"),
}


def check_sd3(base: str) -> Path:
    """Raise :class:`WeightsMissing` naming every missing file of the DPIR ``--base`` layout."""
    root = Path(base)
    missing = []
    for sub, (what, repo) in SD3_LAYOUT.items():
        folder = root / sub
        need = ["tokenizer_config.json"] if sub.startswith("tokenizer") else ["config.json"]
        lacks = [n for n in need if not (folder / n).is_file()]
        if not sub.startswith("tokenizer") and not any(folder.glob("*.safetensors")) \
                and not any(folder.glob("*.bin")):
            lacks.append("*.safetensors")
        missing += [f"{sub}/{n} ({what}, from {repo})" for n in lacks]
    if missing:
        raise WeightsMissing(f"{root}: missing {'; '.join(missing)}. On a machine with internet: huggingface-cli "
                             "download stabilityai/stable-diffusion-3-medium-diffusers --local-dir DIR, then "
                             "huggingface-cli download openai/clip-vit-large-patch14 --local-dir DIR/image_encoder "
                             "and laion/CLIP-ViT-bigG-14-laion2B-39B-b160k --local-dir DIR/image_encoder_2")
    return root


def load_sd3(base: str) -> tuple:
    """SD3 (medium) components from a local diffusers folder plus the two CLIP vision towers."""
    from diffusers import AutoencoderKL, SD3Transformer2DModel
    from transformers import AutoTokenizer, T5EncoderModel

    root = check_sd3(base)
    kw = {"local_files_only": True}
    return (SD3Transformer2DModel.from_pretrained(root / "transformer", **kw),
            AutoencoderKL.from_pretrained(root / "vae", **kw),
            T5EncoderModel.from_pretrained(root / "text_encoder_3", **kw),
            AutoTokenizer.from_pretrained(root / "tokenizer_3", **kw),
            load_clip_vision(root / "image_encoder"), load_clip_vision(root / "image_encoder_2"))
