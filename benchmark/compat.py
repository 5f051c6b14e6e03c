"""Work-arounds for known breakage in the libraries the metrics come from, each as narrow as possible.

- ``openai-clip`` (imported by pyiqa's CLIP-IQA, LIQE and CLIPScore) does
  ``from pkg_resources import packaging`` at import time, and uses nothing else from it
  (``packaging.version.parse`` on torch's version). setuptools >= 81 no longer ships
  ``pkg_resources``. :func:`import_openai_clip` imports ``clip`` as is when that works;
  only if it fails for want of ``pkg_resources`` does it put a minimal module in
  ``sys.modules["pkg_resources"]`` holding just ``packaging``, import ``clip``, and take the
  shim out again (``clip`` keeps its own reference), so no other library ever sees it.
- pyiqa's MANIQA builds its ViT with ``timm.create_model('vit_base_patch8_224', pretrained=True)``,
  which fetches ImageNet weights from the Hugging Face hub, and then loads the MANIQA checkpoint
  with ``strict=True`` over the whole network, ViT included, so those ImageNet weights are
  always overwritten. :func:`timm_without_pretrained` builds that ViT without them: the same
  scores, one fewer file and no hub access.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import types
from collections.abc import Iterator
from typing import Any

SHIM_MARK = "__pirs_shim__"


def pkg_resources_shim() -> types.ModuleType:
    """A stand-in ``pkg_resources`` with the one attribute openai-clip reads: ``packaging``."""
    import packaging
    import packaging.version  # noqa: F401  (clip calls packaging.version.parse)

    shim = types.ModuleType("pkg_resources", "pirs shim: only `packaging`, for openai-clip")
    shim.packaging = packaging  # type: ignore[attr-defined]
    setattr(shim, SHIM_MARK, True)
    return shim


def import_openai_clip() -> types.ModuleType:
    """``import clip`` (openai-clip), with a ``pkg_resources`` shim only if the plain import fails for want of it."""
    try:
        return importlib.import_module("clip")
    except ModuleNotFoundError as err:
        if err.name != "pkg_resources":
            raise
    shim = pkg_resources_shim()
    sys.modules["pkg_resources"] = shim
    try:
        for name in [m for m in sys.modules if m == "clip" or m.startswith("clip.")]:
            del sys.modules[name]  # half-imported leftovers of the failed attempt
        return importlib.import_module("clip")
    finally:
        if sys.modules.get("pkg_resources") is shim:
            del sys.modules["pkg_resources"]


@contextlib.contextmanager
def timm_without_pretrained(*names: str) -> Iterator[None]:
    """While inside, ``timm.create_model(name, pretrained=True)`` for ``names`` builds without pretrained weights."""
    import timm

    original = timm.create_model

    def create_model(model_name: str, *args: Any, **kwargs: Any) -> Any:
        if model_name in names:
            if args:  # create_model(name, pretrained, ...)
                args = (False, *args[1:])
            else:
                kwargs["pretrained"] = False
        return original(model_name, *args, **kwargs)

    timm.create_model = create_model
    try:
        yield
    finally:
        timm.create_model = original
