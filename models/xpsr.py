"""XPSR: Cross-modal Priors for Diffusion-based Image Super-Resolution (Qu et al., ECCV 2024).

The method as its authors built it (the paper, and where the paper is silent or differs, the
official code github qyp2000/XPSR; the README's XPSR section lists every difference):

- **semantic priors** (Sec. 3.1): an MLLM's high-level caption (content, layout) and
  low-level caption (quality, noise, blur, lighting), read from the shards'
  ``caption_high`` and ``caption_low``, each encoded by the frozen CLIP text encoder into
  ``c_h`` and ``c_l``;
- **Semantic-Fusion Attention** (Sec. 3.2) in the ControlNet's down and middle blocks:
  ``CA_f(CA_h(x, c_h), CA_l(x, c_l))`` with the official modules ``attentions``,
  ``attentions_lowlevel`` and ``attentions_connect`` (:mod:`.xpsr_net`); the UNet's text
  attention sees ``c_h`` only, and each layer of its up blocks ends with a trained
  ``pixel_attentions`` reading the ControlNet residual of its skip (official code);
- the **Degradation-Free Constraint** (Sec. 3.3): ``to_rgbs`` map the ControlNet image
  encoder's features after each stride-2 stage to RGB, aligned (L1) with the bilinearly
  resized HQ image; ``conv_degradation`` map every ControlNet residual, and
  ``conv_degradation_mid`` the middle one, to the latent channels, aligned (L1) with the
  bilinearly resized HQ latent; ``L = L_diffusion + 0.05 * L_DFC`` (official ``train.py``);
- trainable, as the official ``train.py``: the whole ControlNet (with SFA and the DFC heads)
  and the UNet modules named in ``configs/xpsr.yaml`` ``trainable_modules``
  (``pixel_attentions``, ``attentions_lowlevel``, ``attentions_connect``); the rest of SD is
  frozen. The ControlNet reads the LQ image in [0, 1] (official dataset and pipeline);
- inference (official ``test.py``, ``configs/xpsr_test.yaml``, ``pipeline_xpsr.py``): the
  start latent is the LQ's VAE latent noised to the first timestep and again to
  ``added_noise_level``; classifier-free guidance whose unconditional branch has the
  negative prompt for ``c_h`` and its own negative low-level prompt for ``c_l``; DDPM,
  20 steps, guidance 4.5, latent tiles, tiled VAE, AdaIN colour fix (the config).

:meth:`Xpsr.from_official` loads the released checkpoint (``unet/`` and ``controlnet/``
folders written by diffusers ``save_pretrained``) onto these modules, name for name.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .components import (
    SDComponents,
    WeightsMissing,
    diffusion_target,
    encode_text,
    freeze,
    initial_latents,
    load_sd,
    make_scheduler,
    noised_latents,
    sd_parts,
)
from .method import ConfigError, Method, load_config, register
from .sampling import InferenceProtocol, cfg, crops, decode_sd, denoise, make_sampler, per_tile, with_added_prompt
from .tiling import tiled_encode
from .xpsr_net import (
    TRAINABLE_UNET_MODULES,
    ControlOutput,
    add_degradation_heads,
    add_pixel_attentions,
    add_semantic_fusion,
    controlnet_forward,
    unet_forward,
)

NEGATIVE_PROMPT = "blurry, dotted, noise, unclear, low-res, over-smoothed"  # the paper's (seed 004, training)
NEGATIVE_LOW_PROMPT = "high resolution, best quality, clear"  # pipeline_xpsr.py __call__, lowlevel negative_prompt
OFFICIAL_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
OFFICIAL_CONTROLNET = {"use_rrdb": False, "return_rgbs": True, "use_latent_pred": True}  # controlnet.py defaults


@register("xpsr")
class Xpsr(Method):
    """XPSR: SD UNet + ControlNet with Semantic-Fusion Attention, pixel attention and the DFC (Sec. 3)."""

    @dataclass
    class Config(InferenceProtocol):
        """``tiny``: random parts; ``sd15``: Stable Diffusion 1.5 from ``--base``; protocol keys as the mixin's."""

        variant: str = "tiny"
        hint_channels: list[int] | None = None  # ControlNet image-encoder widths (None: 16, 32, 96, 256, cut)
        controlnet_lowlevel: bool = True  # SFA in the ControlNet (controlnet.py use_lowlevel_prompt)
        unet_lowlevel_down: bool = False  # SFA in the UNet (unet_2d_condition.py down/mid/up_use_lowlevel_prompt)
        unet_lowlevel_mid: bool = False
        unet_lowlevel_up: list[bool] | None = None  # per up block; None: none
        dfc_weight: float = 0.05
        train_caption_high: bool = False  # the official training conditions c_h on "" (see sd15.yaml)
        negative_prompt: str = NEGATIVE_PROMPT
        negative_low_prompt: str = NEGATIVE_LOW_PROMPT
        start_from_lq: bool = True
        added_noise_level: int = 800
        resolution: int = 32
        learning_rate: float = 1e-4
        max_grad_norm: float | None = None  # gradient clipping of the trainer (None: off)
        seed: int = 0

    frozen_modules = ("unet", "vae", "text_encoder")

    def __init__(self, config: Config, parts: SDComponents):
        super().__init__()
        from diffusers import ControlNetModel

        self.config = config
        self.unet, self.vae, self.text_encoder = parts.unet, parts.vae, parts.text_encoder
        self.tokenizer = parts.tokenizer
        self.scheduler_config = parts.scheduler_config
        freeze(self.unet, self.vae, self.text_encoder)
        factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.latent_factor = factor
        hint = list(config.hint_channels or [16, 32, 96, 256][: int(factor).bit_length()])
        if 2 ** (len(hint) - 1) != factor:
            raise ConfigError(f"hint_channels {hint} must have {int(factor).bit_length()} entries: the image encoder "
                              f"must downsample by the VAE's factor {factor}")
        steps = self.scheduler_config.get("num_train_timesteps", 1000)
        if not 0 <= config.added_noise_level < steps:
            raise ConfigError(f"added_noise_level must be in [0, {steps}), got {config.added_noise_level}")
        n_up = len(self.unet.up_blocks)
        up = list(config.unet_lowlevel_up or [])
        if len(up) not in (0, n_up):
            raise ConfigError(f"unet_lowlevel_up needs one entry per UNet up block ({n_up}), got {up}")
        # the ControlNet: a copy of the UNet's encoder (official train.py ControlNetModel.from_unet) ...
        self.controlnet = ControlNetModel.from_unet(self.unet, conditioning_embedding_out_channels=tuple(hint))
        cn = self.controlnet
        if config.controlnet_lowlevel:  # ... with SFA in its down and middle blocks (Sec. 3.2)
            for block in [*cn.down_blocks, cn.mid_block]:
                if getattr(block, "attentions", None) is not None:
                    add_semantic_fusion(block)
        add_degradation_heads(cn)  # the DFC heads (Sec. 3.3)
        add_pixel_attentions(self.unet)
        for block, on in ([(b, config.unet_lowlevel_down) for b in self.unet.down_blocks]
                          + [(self.unet.mid_block, config.unet_lowlevel_mid)]
                          + list(zip(self.unet.up_blocks, up or [False] * n_up, strict=True))):
            if on and getattr(block, "attentions", None) is not None:
                add_semantic_fusion(block)
        # trainable (official train.py): the whole ControlNet, and the UNet modules named in trainable_modules
        cn.requires_grad_(True)
        self.unet.requires_grad_(False)
        for name, module in self.unet.named_modules():
            if name.endswith(TRAINABLE_UNET_MODULES):
                module.requires_grad_(True)

    @classmethod
    def build(cls, config: Config, base: str | None = None) -> Xpsr:
        return cls(config, sd_parts(config, base))

    # ------------------------------------------------------------------------------------------ parts

    def scheduler(self, kind: str):
        return make_scheduler(self.scheduler_config, kind)

    def text(self, prompts: list[str]) -> torch.Tensor:
        return encode_text(self, prompts, self.unet.conv_in.weight.device)

    @torch.no_grad()
    def latents(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A sample of the VAE posterior of ``images`` times the scaling factor (official ``train.py``)."""
        return self.vae.encode(images).latent_dist.sample(generator) * self.vae.config.scaling_factor

    @staticmethod
    def control_image(lq: torch.Tensor) -> torch.Tensor:
        """The ControlNet's input: the LQ in [0, 1] (official ``localdataset.py`` ToTensor, ``prepare_image``)."""
        return (lq + 1) / 2

    def denoiser(self, z_t: torch.Tensor, t: torch.Tensor, lq: torch.Tensor, c_h: torch.Tensor,
                 c_l: torch.Tensor) -> tuple[torch.Tensor, ControlOutput]:
        """The UNet's noise prediction on ``c_h`` with the ControlNet's residuals (SFA over ``c_h``, ``c_l``)."""
        control = controlnet_forward(self.controlnet, z_t, t, c_h, c_l, self.control_image(lq))
        return unet_forward(self.unet, z_t, t, c_h, c_l, control), control

    def eps(self, z_t: torch.Tensor, t: torch.Tensor, lq: torch.Tensor, c_h: torch.Tensor,
            c_l: torch.Tensor) -> torch.Tensor:
        return self.denoiser(z_t, t, lq, c_h, c_l)[0]

    # ------------------------------------------------------------------------------------------ training

    @staticmethod
    def dfc_loss(control: ControlOutput, hq: torch.Tensor, z_hq: torch.Tensor) -> torch.Tensor:
        """L_DFC (Sec. 3.3, official ``train.py``): L1 of each RGB prediction to the HQ image and of each latent
        prediction to the HQ latent, the targets bilinearly resized to the prediction; summed."""
        total = hq.new_zeros((), dtype=torch.float32)
        for pred, target in [(r, hq) for r in control.rgbs] + [(z, z_hq) for z in control.latents]:
            resized = F.interpolate(target, size=pred.shape[-2:], mode="bilinear")
            total = total + F.l1_loss(pred.float(), resized.float())
        return total

    def required_text(self) -> tuple[str, ...]:
        """The low-level caption always; the high-level one too when training conditions on it."""
        return ("caption_low", "caption_high") if self.config.train_caption_high else ("caption_low",)

    def training_step(self, batch: dict, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """``L_diffusion + dfc_weight * L_DFC`` (Sec. 3.3)."""
        sched = self.scheduler("ddpm")
        z0 = self.latents(batch["hq"], generator)
        noise, t, z_t = noised_latents(sched, z0, generator)
        high = batch["caption_high"] if self.config.train_caption_high else [""] * len(batch["caption_high"])
        pred, control = self.denoiser(z_t, t, batch["lq"], self.text(high), self.text(batch["caption_low"]))
        diffusion = F.mse_loss(pred.float(), diffusion_target(sched, z0, noise, t).float())
        dfc = self.dfc_loss(control, batch["hq"], z0)
        return {"loss": diffusion + self.config.dfc_weight * dfc, "diffusion": diffusion.detach(), "dfc": dfc.detach()}

    # ------------------------------------------------------------------------------------------ inference

    @torch.no_grad()
    def start_latents(self, lq: torch.Tensor, sched, generator: torch.Generator, protocol: InferenceProtocol,
                      tile_batch: int = 1) -> torch.Tensor:
        """Sampling's first latent (official ``pipeline_xpsr.py`` ``prepare_latents``).

        With ``start_from_lq`` (``init_latent_with_noise: False``): a posterior sample of the LQ's
        latent (tiled VAE encoder), noised to the first sampling timestep, then noised again to
        ``added_noise_level``, with the training schedule's ``add_noise``; three draws from
        ``generator`` in that order. Otherwise Gaussian noise.
        """
        from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

        if not self.config.start_from_lq:
            return initial_latents(self.unet, lq, self.latent_factor, generator, sched)
        if protocol.sampler == "flow-euler":
            raise ConfigError("start_from_lq noises the LQ latent on the DDPM schedule; use a DDPM-family sampler")
        p, f, n = protocol, self.latent_factor, lq.shape[0]
        moments = tiled_encode(lambda x: self.vae.encode(x).latent_dist.parameters, lq, f, p.vae_encoder_tile,
                               p.vae_tile_overlap, tile_batch)
        z = DiagonalGaussianDistribution(moments).sample(generator) * self.vae.config.scaling_factor
        train = self.scheduler("ddpm")
        for t in (sched.timesteps[:1].repeat(n), torch.full((n,), self.config.added_noise_level)):
            noise = torch.randn(z.shape, generator=generator, dtype=z.dtype).to(z.device)
            z = train.add_noise(z, noise, t.long().cpu())
        return z * sched.init_noise_sigma

    @torch.no_grad()
    def restore(self, batch: dict, generator: torch.Generator, protocol: InferenceProtocol,
                tile_batch: int = 1, **_: object) -> torch.Tensor:
        """Sampling with classifier-free guidance (official pipeline), over latent tiles."""
        p = protocol
        sched = make_sampler(p.sampler, self.scheduler_config, p.steps)
        lq = batch["lq"]
        f, n_img = self.latent_factor, lq.shape[0]
        z = self.start_latents(lq, sched, generator, p, tile_batch)
        c_h = self.text(with_added_prompt(batch["caption_high"], p.added_prompt))
        c_l = self.text(batch["caption_low"])
        g = p.guidance_scale
        guided = g > 1.0  # pipeline_xpsr.py: do_classifier_free_guidance = guidance_scale > 1.0
        if guided:  # the unconditional branch: negative prompt for c_h, negative low-level prompt for c_l
            neg_h = self.text([p.negative_prompt] * n_img)
            neg_l = self.text([self.config.negative_low_prompt] * n_img)

        def model_output(z_t: torch.Tensor, t: torch.Tensor, boxes: list) -> torch.Tensor:
            n, lq_t = len(boxes), crops(lq, boxes, f)
            eps = self.eps(z_t, t, lq_t, per_tile(c_h, n), per_tile(c_l, n))
            if not guided:
                return eps
            return cfg(eps, self.eps(z_t, t, lq_t, per_tile(neg_h, n), per_tile(neg_l, n)), g)

        z = denoise(sched, z, model_output, p, generator, tile_batch=tile_batch)
        return decode_sd(self.vae, z, f, p, tile_batch)

    # ------------------------------------------------------------------------------------------ official weights

    def official_names(self) -> dict[str, str]:
        """Official parameter name (``unet/NAME``, ``controlnet/NAME``) -> this model's parameter name."""
        return {f"{part}/{name}": f"{part}.{name}" for part in ("unet", "controlnet")
                for name, _ in getattr(self, part).named_parameters()}

    def load_official_state(self, unet: dict[str, torch.Tensor], controlnet: dict[str, torch.Tensor],
                            where: str = "checkpoint") -> None:
        """Load the official ``unet/`` and ``controlnet/`` state dicts; every tensor must find its parameter."""
        names = self.official_names()
        given = {f"unet/{k}": v for k, v in unet.items()} | {f"controlnet/{k}": v for k, v in controlnet.items()}
        params = dict(self.named_parameters())
        missing = sorted(set(names) - set(given))
        unexpected = sorted(set(given) - set(names))
        shapes = [f"{k} {tuple(given[k].shape)} vs {tuple(params[names[k]].shape)}" for k in names
                  if k in given and given[k].shape != params[names[k]].shape]
        if missing or unexpected or shapes:
            raise ValueError(f"{where}: does not fit the XPSR model built from its config.json: "
                             f"{len(missing)} missing {missing[:3]}, {len(unexpected)} unexpected {unexpected[:3]}, "
                             f"{len(shapes)} of another shape {shapes[:3]}")
        with torch.no_grad():
            for k, v in given.items():
                params[names[k]].copy_(v)

    @classmethod
    def from_official(cls, folder: str, base: str | None, config: Config | None = None) -> Xpsr:
        """The released checkpoint: ``folder/unet/`` and ``folder/controlnet/`` (config.json + weights), on the
        VAE, text encoder, tokenizer and scheduler of the local SD 1.5 folder ``base``."""
        from diffusers import UNet2DConditionModel

        root = Path(folder)
        if base is None:
            raise ConfigError("an official XPSR checkpoint needs --base: a local Stable Diffusion 1.5 folder "
                              "(its vae/, text_encoder/, tokenizer/, scheduler/)")
        ucfg, ccfg = (_read_json(root / part / "config.json") for part in ("unet", "controlnet"))
        for key, want in OFFICIAL_CONTROLNET.items():
            if ccfg.get(key, want) != want:
                raise ConfigError(f"{root}/controlnet/config.json: {key}={ccfg[key]} is not supported (pirs builds "
                                  f"the released model: {OFFICIAL_CONTROLNET})")
        n_up = len(ucfg.get("up_block_types", ()))
        up = [bool(x) for x in ucfg.get("up_use_lowlevel_prompt", [])][:n_up]
        c = dataclasses.replace(
            config if config is not None else load_config("xpsr", "sd15"), variant="sd",
            hint_channels=list(ccfg.get("conditioning_embedding_out_channels", (16, 32, 96, 256))),
            controlnet_lowlevel=bool(ccfg.get("use_lowlevel_prompt", True)),
            unet_lowlevel_down=bool(ucfg.get("down_use_lowlevel_prompt", False)),
            unet_lowlevel_mid=bool(ucfg.get("mid_use_lowlevel_prompt", False)),
            unet_lowlevel_up=up if any(up) else None)
        unet_state, cn_state = (read_official_weights(root / part) for part in ("unet", "controlnet"))
        parts = load_sd(base, unet=False)
        known = set(inspect.signature(UNet2DConditionModel.__init__).parameters)
        torch.manual_seed(c.seed)
        parts.unet = UNet2DConditionModel.from_config({k: v for k, v in ucfg.items() if k in known})
        model = cls(c, parts)
        model.load_official_state(unet_state, cn_state, where=str(root))
        return model.eval()


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise WeightsMissing(f"{path}: missing; an official XPSR checkpoint folder holds unet/ and controlnet/, "
                             "each with config.json and diffusion_pytorch_model.safetensors (or .bin)")
    from .checkpoint import read_json

    data = read_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a diffusers config (a JSON object expected)")
    return data


def read_official_weights(folder: Path) -> dict[str, torch.Tensor]:
    """A diffusers ``save_pretrained`` folder's tensors: safetensors, or a ``.bin`` read with ``weights_only``."""
    from safetensors.torch import load_file

    st, pt = (folder / name for name in OFFICIAL_WEIGHTS)
    if st.is_file():
        return load_file(st)
    if pt.is_file():
        return torch.load(pt, map_location="cpu", weights_only=True)
    raise WeightsMissing(f"{folder}: missing {OFFICIAL_WEIGHTS[0]} (or {OFFICIAL_WEIGHTS[1]})")


def is_official_checkpoint(path: str) -> bool:
    """A folder with the official ``unet/`` and ``controlnet/`` and no pirs ``trainer.json``."""
    p = Path(path)
    return (not (p / "trainer.json").is_file() and (p / "unet" / "config.json").is_file()
            and (p / "controlnet" / "config.json").is_file())


def official_weights_sha256(path: str) -> str:
    """One sha256 for an official checkpoint: of its unet and controlnet weight files' sha256s."""
    digests = []
    for part in ("unet", "controlnet"):
        f = next((Path(path) / part / n for n in OFFICIAL_WEIGHTS if (Path(path) / part / n).is_file()), None)
        if f is None:
            raise WeightsMissing(f"{path}/{part}: missing {OFFICIAL_WEIGHTS[0]}")
        h = hashlib.sha256()
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 24), b""):
                h.update(chunk)
        digests.append(h.hexdigest())
    return hashlib.sha256(" ".join(digests).encode()).hexdigest()


def load_official(path: str, base: str | None, method: str | None = None):
    """``(model, folder, meta)`` of an official checkpoint folder, as ``predict.load_trained`` returns them."""
    if method not in (None, "xpsr"):
        raise ValueError(f"{path} is an official XPSR checkpoint (unet/, controlnet/), not {method}")
    model = Xpsr.from_official(path, base)
    meta = {"method": "xpsr", "step": None, "config": dataclasses.asdict(model.config), "config_name": "sd15",
            "overrides": [], "base": base, "official": True, "weights_sha256": official_weights_sha256(path)}
    return model, Path(path), meta
