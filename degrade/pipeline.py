"""Run a recipe on one HQ crop: draw every op's parameters, apply them, write the prompt.

A run is a pure function of (HQ pixels, recipe, generator state). The applied ops are
returned with all their parameters, and :func:`apply_ops` replays them bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import ops as ops_registry
from .ops.jpeg import to_uint8
from .ops.resize import resize
from .recipe import Choose, OneOf, OpStage, Recipe, SubRecipe


@dataclass
class Degraded:
    """The result of one pipeline run."""

    lq: np.ndarray  # uint8 (h, w, 3)
    ops: list[dict]  # [{"op", "id", "params", "prompt"}] in order of application
    prompt: str
    labels: list[str]
    branch: str  # the recipe that actually ran (differs from the top one in a mixture)
    scale: int
    upsampled: bool


def hq_to_float(hq: np.ndarray) -> np.ndarray:
    """uint8 HQ to float32 in [0, 1]."""
    return hq.astype(np.float32) / np.float32(255.0)


def apply_ops(img: np.ndarray, ops: list[dict]) -> np.ndarray:
    """Apply stored ops in order to a float32 image."""
    for rec in ops:
        img = ops_registry.apply(img, rec["op"], rec["params"])
    return img


def finish(img: np.ndarray, hq_shape: tuple[int, int], upsample: bool) -> np.ndarray:
    """Quantise to 8 bits and, when ``upsample``, bicubically resize back to the HQ size."""
    lq = to_uint8(img)
    if upsample and lq.shape[:2] != tuple(hq_shape):
        up = resize(lq.astype(np.float32) / np.float32(255.0), hq_shape, "bicubic")
        lq = to_uint8(up)
    return lq


def replay(hq: np.ndarray, ops: list[dict], upsample: bool) -> np.ndarray:
    """Rebuild an LQ image from its uint8 HQ and stored ops."""
    return finish(apply_ops(hq_to_float(hq), ops), hq.shape[:2], upsample)


class _Run:
    def __init__(self, rng: np.random.Generator, hq_shape: tuple[int, int]):
        self.rng = rng
        self.hq_shape = hq_shape
        self.ops: list[dict] = []

    def stages(self, stages: list, img: np.ndarray, target: tuple[int, int], recipe: Recipe):
        for st in stages:
            if isinstance(st, OpStage):
                if st.p < 1.0 and not self.rng.uniform() < st.p:
                    continue
                img = self.op(st, img, target, recipe)
            elif isinstance(st, OneOf):
                j = int(self.rng.choice(len(st.branches), p=np.asarray(st.weights) / sum(st.weights)))
                img, recipe = self.stages(st.branches[j], img, target, recipe)
            elif isinstance(st, Choose):
                picked = sorted(int(j) for j in self.rng.choice(len(st.branches), size=st.k, replace=False))
                for j in picked:
                    img, recipe = self.stages(st.branches[j], img, target, recipe)
            elif isinstance(st, SubRecipe):
                sub = st.recipe
                sub_target = _target(self.hq_shape, sub.scale)
                img, recipe = self.stages(sub.stages, img, sub_target, sub)
        return img, recipe

    def op(self, st: OpStage, img: np.ndarray, target: tuple[int, int], recipe: Recipe) -> np.ndarray:
        mod = ops_registry.get(st.op)
        ctx = {"size": img.shape[:2], "target": target, "image": img}  # image: for samplers that look at it
        params = mod.sample(self.rng, st.spec, ctx)
        for name, d in st.decimals.items():
            if params.get(name) is not None:
                params[name] = round(float(params[name]), d)
        if hasattr(mod, "resolve"):
            params = mod.resolve(params, st.spec, ctx)
        text = None
        if st.prompt and recipe.prompt.mode == "ops":
            bare = recipe.prompt.bare_prob > 0 and bool(self.rng.uniform() < recipe.prompt.bare_prob)
            text = mod.prompt(params, bare)
        label = mod.label(params) if st.label else None
        rec = {"op": st.op, "id": st.id, "params": params, "prompt": text, "label": label}
        self.ops.append(rec)
        return mod.apply(img, params)


def _target(hq_shape: tuple[int, int], scale: int) -> tuple[int, int]:
    h, w = hq_shape
    if h % scale or w % scale:
        raise ValueError(f"HQ size {h}x{w} is not a multiple of the scale {scale}")
    return (h // scale, w // scale)


def degrade(hq: np.ndarray, recipe: Recipe, rng: np.random.Generator, scale: int | None = None,
            upsample: bool | None = None) -> Degraded:
    """Degrade a uint8 HQ crop with ``recipe``, drawing from ``rng``.

    ``scale`` overrides the recipe's scale (branches of a mixture keep their own);
    ``upsample`` overrides whether the LQ is resized back to the HQ size.
    """
    hq_shape = hq.shape[:2]
    run = _Run(rng, hq_shape)
    top_scale = recipe.scale if scale is None else int(scale)
    img, ran = run.stages(recipe.stages, hq_to_float(hq), _target(hq_shape, top_scale), recipe)
    eff_scale = top_scale if ran is recipe else ran.scale
    expect = _target(hq_shape, eff_scale)
    if img.shape[:2] != expect:
        raise ValueError(f"recipe {ran.name!r} ended at {img.shape[1]}x{img.shape[0]}, expected the output size "
                         f"{expect[1]}x{expect[0]} (scale {eff_scale}); add a final 'resize' stage with target: true")
    up = recipe.upsample_lq if upsample is None else bool(upsample)
    lq = finish(img, hq_shape, up)
    texts = [r["prompt"] for r in run.ops if r["prompt"]]
    if ran.prompt.mode == "fixed":
        prompt = ran.prompt.text
    else:
        prompt = ran.prompt.separator.join(texts) if texts else ran.prompt.empty_text
    labels: list[str] = []
    for r in run.ops:
        if r["label"] and r["label"] not in labels:
            labels.append(r["label"])
    ops = [{k: r[k] for k in ("op", "id", "params", "prompt")} for r in run.ops]
    return Degraded(lq=lq, ops=ops, prompt=prompt, labels=labels, branch=ran.name, scale=eff_scale,
                    upsampled=bool(up and eff_scale != 1))
