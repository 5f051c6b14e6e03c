"""The method registry and what every method provides.

A method is one module with a config dataclass, registered by name. ``Method.build``
makes the model from a config (tiny random parts, or real ones from ``base``);
``training_step`` returns the loss of one batch with noise and timesteps drawn from the
generator it is given; ``restore`` restores a batch of LQ images (at their own size, a
multiple of ``size_multiple``) under an :class:`~.sampling.InferenceProtocol` whose
defaults live in the method's config; ``predict`` is ``restore`` with the config's
protocol and keyword overrides. Everything a fair
comparison needs to be the same across methods (data, seeding, checkpoints, resume,
prediction files) lives in the shared trainer and predictor, not in the methods.
"""

from __future__ import annotations

import dataclasses
import difflib
from importlib import import_module, resources
from pathlib import Path
from typing import Any

import torch

METHODS: dict[str, type[Method]] = {}
_MODULES = {"spire": "pirs.models.spire", "xpsr": "pirs.models.xpsr", "diffrestorer": "pirs.models.diffrestorer",
            "dpir": "pirs.models.dpir"}


class ConfigError(ValueError):
    """A method config that cannot be used; names the file or key."""


def register(name: str):
    """Class decorator: make a :class:`Method` available as ``name``."""
    def deco(cls):
        cls.name = name
        METHODS[name] = cls
        return cls
    return deco


def get_method(name: str) -> type[Method]:
    """The method class called ``name`` (its module is imported on first use), with "did you mean"."""
    if name not in METHODS and name in _MODULES:
        import_module(_MODULES[name])
    if name in METHODS:
        return METHODS[name]
    close = difflib.get_close_matches(name, list(_MODULES), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise KeyError(f"unknown method {name!r}.{hint} Known methods: {', '.join(sorted(_MODULES))}")


def method_names() -> list[str]:
    """Names of the methods pirs ships."""
    return sorted(_MODULES)


def configs_dir(method: str) -> Path:
    """Folder of a method's shipped YAML configs."""
    return Path(str(resources.files("pirs.models") / "configs" / method))


def load_config(method: str, name_or_path: str, overrides: list[str] | None = None) -> Any:
    """A method's config dataclass from a shipped name (``tiny``) or a YAML path, with ``key=value`` overrides."""
    cls = get_method(method).Config
    p = Path(name_or_path)
    if not (p.suffix in (".yaml", ".yml") and p.is_file()):
        p = configs_dir(method) / f"{name_or_path}.yaml"
        if not p.is_file():
            known = sorted(q.stem for q in configs_dir(method).glob("*.yaml"))
            raise ConfigError(f"unknown config {name_or_path!r} for {method}; known: {', '.join(known)}")
    from pirs.degrade.limits import InputError, load_yaml, read_yaml_file

    try:  # a config may come from anywhere: no aliases, 1 MiB, bounded nesting
        raw = read_yaml_file(p, max_bytes=1 << 20) or {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{p}: a config must be a mapping of keys to values, got {type(raw).__name__}")
        for item in overrides or []:
            if "=" not in item:
                raise ConfigError(f"--set {item!r}: expected key=value")
            k, v = item.split("=", 1)
            raw[k.strip()] = load_yaml(v, f"--set {k.strip()}")
    except InputError as e:
        raise ConfigError(str(e)) from None
    except OSError as e:
        raise ConfigError(f"{p}: cannot be read ({e.strerror or e})") from None
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(raw) - names
    if unknown:
        raise ConfigError(f"{p}: unknown keys {sorted(map(str, unknown))} for {method}; allowed: {sorted(names)}")
    try:
        return cls(**raw)
    except TypeError as e:
        raise ConfigError(f"{p}: {e}") from None


class Method(torch.nn.Module):
    """Base of every method: trainable parts are what ``requires_grad`` says; frozen parts are frozen."""

    name = "method"

    @dataclasses.dataclass
    class Config:
        """Overridden by each method."""

    @classmethod
    def build(cls, config: Any, base: str | None = None) -> Method:
        """Make the model from ``config``; tiny random parts when ``base`` is None and the config allows it."""
        raise NotImplementedError

    frozen_modules: tuple[str, ...] = ("unet", "vae", "text_encoder")

    def train(self, mode: bool = True) -> Method:
        """Train mode for the trainable parts only: frozen parts stay in eval mode."""
        super().train(mode)
        for name in self.frozen_modules:
            m = getattr(self, name, None)
            if m is not None:
                m.eval()
        return self

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """The parameters the optimizer updates."""
        return [p for p in self.parameters() if p.requires_grad]

    def parameter_counts(self) -> dict[str, int]:
        """Trainable and frozen parameter counts."""
        train = sum(p.numel() for p in self.parameters() if p.requires_grad)
        total = sum(p.numel() for p in self.parameters())
        return {"trainable": train, "frozen": total - train, "total": total}

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The trainable tensors by name (what a checkpoint holds)."""
        keep = {n for n, p in self.named_parameters() if p.requires_grad}
        return {n: t.detach().contiguous() for n, t in self.state_dict().items() if n in keep}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load trainable tensors; every trainable name must be there."""
        own = self.trainable_state_dict()
        missing = set(own) - set(state)
        unexpected = set(state) - set(own)
        if missing or unexpected:
            raise ValueError(f"checkpoint does not fit this model: missing {sorted(missing)[:5]}, "
                             f"unexpected {sorted(unexpected)[:5]}")
        self.load_state_dict(state, strict=False)

    def required_text(self) -> tuple[str, ...]:
        """Record fields that must not be empty for training (``restore train`` refuses shards that leave them
        empty, unless ``--allow-empty-text``)."""
        return ()

    def training_step(self, batch: dict, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """``{"loss": ..., **logged}`` for one batch."""
        raise NotImplementedError

    latent_factor: int = 8

    @property
    def size_multiple(self) -> int:
        """Image sides must be a multiple of this (the VAE's factor; times the patch size for a transformer)."""
        return self.latent_factor

    def protocol(self, **overrides: Any):
        """The config's inference protocol with ``overrides`` (None values ignored), checked."""
        from .sampling import protocol_of

        return protocol_of(self.config, **overrides)

    @torch.no_grad()
    def predict(self, batch: dict, steps: int | None = None, generator: torch.Generator | None = None,
                **options: Any) -> torch.Tensor:
        """Restored images in [-1, 1], ``(B, 3, H, W)``: ``restore`` under the config's protocol.

        ``options`` that name protocol keys (``guidance_scale``, ``tile_size``, ...) override them;
        the rest go to ``restore``.
        """
        from .sampling import PROTOCOL_KEYS

        proto = self.protocol(steps=steps, **{k: v for k, v in options.items() if k in PROTOCOL_KEYS})
        extra = {k: v for k, v in options.items() if k not in PROTOCOL_KEYS}
        return self.restore(batch, generator if generator is not None else torch.Generator().manual_seed(0),
                            proto, **extra)

    @torch.no_grad()
    def restore(self, batch: dict, generator: torch.Generator, protocol: Any, **options: Any) -> torch.Tensor:
        """Restore ``batch["lq"]`` (``(B, 3, H, W)`` in [-1, 1], sides multiples of ``size_multiple``)."""
        raise NotImplementedError
