"""Image-space training losses shared by the decoder/encoder stages: VGG-19 perceptual and adversarial.

- :class:`VGGPerceptual`: L1 between VGG-19 features of the output and the target, before
  the ReLUs of ``conv1_2, conv2_2, conv3_4, conv4_4, conv5_4`` weighted ``0.1, 0.1, 1, 1, 1``
  on ImageNet-normalized inputs (BasicSR's ``PerceptualLoss`` as Real-ESRGAN configures it;
  Diff-Restorer names only the VGG-19 backbone). Weights come from a local torchvision
  checkpoint (``vgg19-dcbb9e9d.pth``, or any file with its ``features.*`` tensors), loaded
  with ``weights_only=True``.
- :class:`PatchDiscriminator` and :func:`adversarial_losses`: a PatchGAN discriminator in
  taming-transformers' layout (4x4 convolutions, ``layers`` stride-2 stages, LeakyReLU 0.2;
  GroupNorm instead of BatchNorm, so a patch's score does not depend on the rest of the
  batch) with the hinge loss. The generator term sees the discriminator's weights detached
  and the discriminator term sees the output detached, so one backward pass and one
  optimizer step update both (simultaneous gradient descent), and the discriminator is
  part of the trainable state a checkpoint saves and a resumed run restores.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

VGG19_FILE = "vgg19-dcbb9e9d.pth"
VGG19_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"
# indices of conv1_2, conv2_2, conv3_4, conv4_4, conv5_4 in torchvision's vgg19().features, and their weights
VGG_LAYERS = {2: 0.1, 7: 0.1, 16: 1.0, 25: 1.0, 34: 1.0}
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


class VGGPerceptual(nn.Module):
    """Frozen VGG-19 feature loss; inputs are images in [-1, 1]."""

    def __init__(self, weights: str | Path):
        super().__init__()
        import torchvision

        path = Path(weights)
        if path.is_dir():
            path = path / VGG19_FILE
        if not path.is_file():
            raise FileNotFoundError(f"VGG-19 weights for the perceptual loss are missing: put torchvision's "
                                    f"{VGG19_FILE} ({VGG19_URL}) at {path}, or --set vgg19_weights=FILE")
        state = torch.load(path, map_location="cpu", weights_only=True)
        features = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
        net = torchvision.models.vgg19().features[: max(VGG_LAYERS) + 1]
        missing = [k for k in net.state_dict() if k not in features]
        if missing:
            raise ValueError(f"{path}: not a torchvision VGG-19 checkpoint (no features.{missing[0]})")
        net.load_state_dict({k: features[k] for k in net.state_dict()})
        for m in net:  # torchvision's ReLUs work in place and would turn the kept features into post-ReLU ones
            if isinstance(m, nn.ReLU):
                m.inplace = False
        self.net = net.eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)

    def features(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        """Pre-ReLU features of the loss layers for images in [-1, 1]."""
        h = ((x.float() + 1) / 2 - self.mean) / self.std
        out = {}
        for i, layer in enumerate(self.net):
            h = layer(h)
            if i in VGG_LAYERS:
                out[i] = h
        return out

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        fo = self.features(output)
        with torch.no_grad():
            ft = self.features(target)
        return sum(w * F.l1_loss(fo[i], ft[i]) for i, w in VGG_LAYERS.items())


class PatchDiscriminator(nn.Module):
    """PatchGAN: one realness score per receptive-field patch."""

    def __init__(self, channels: int = 3, width: int = 64, layers: int = 3):
        super().__init__()
        mods: list[nn.Module] = [nn.Conv2d(channels, width, 4, 2, 1), nn.LeakyReLU(0.2)]
        ch = width
        for n in range(1, layers + 1):
            out = width * min(2 ** n, 8)
            stride = 2 if n < layers else 1
            mods += [nn.Conv2d(ch, out, 4, stride, 1, bias=False), nn.GroupNorm(min(32, out), out), nn.LeakyReLU(0.2)]
            ch = out
        mods.append(nn.Conv2d(ch, 1, 4, 1, 1))
        self.net = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def adversarial_losses(disc: PatchDiscriminator, fake: torch.Tensor, real: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(generator term, discriminator term)`` of the hinge loss.

    The generator term ``-mean(D(fake))`` reaches the generator only (the discriminator's
    weights are detached); the discriminator term ``mean(relu(1 - D(real))) +
    mean(relu(1 + D(fake)))`` reaches the discriminator only (``fake`` is detached).
    """
    frozen = {n: p.detach() for n, p in disc.named_parameters()}
    g = -torch.func.functional_call(disc, frozen, (fake.float(),)).mean()
    d = F.relu(1 - disc(real.float())).mean() + F.relu(1 + disc(fake.detach().float())).mean()
    return g, d
