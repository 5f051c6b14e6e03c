"""Recipes: degradation pipelines as data (YAML), loaded into typed, validated objects.

A recipe lists its stages in order. A stage is either an op (``op: blur`` with its
sampling ranges, an application probability ``p`` and an optional ``id``), a choice
between sequences (``one_of: [[...], [...]]`` with ``weights``), ``k`` distinct sequences of a
list applied in list order (``choose: k`` with ``from: [[...], ...]``), or another recipe
(``recipe: realesrgan``). ``include: NAME`` starts from another recipe and
``override: {stage_id: {key: value}}`` changes only the named stages' keys.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from . import limits
from . import ops as ops_registry
from .atomic import one_line
from .recipe_checks import check_prob, check_probs

RECIPE_KEYS = {"name", "version", "description", "source", "scale", "upsample_lq", "prompt", "stages",
               "include", "override", "crop_size"}
STAGE_KEYS = {"op", "p", "id", "prompt", "label", "decimals"}
MAX_RECIPE_BYTES = 1 << 20  # a recipe file (the shipped ones are under 4 kB)
MAX_STAGES = 10_000  # stages of a recipe with everything it includes and nests, counted before hashing
MAX_RESOLVED_BYTES = 16 << 20  # the same, in bytes of JSON


class RecipeError(ValueError):
    """A recipe file that cannot be used; the message names the file and the reason."""


@dataclass(frozen=True)
class PromptSpec:
    """How the restoration prompt is written.

    ``fixed``: always ``text`` (Real-ESRGAN samples: "Remove all degradation").
    ``ops``: one phrase per applied op in order (SPIRE Table 2), each replaced by the
    bare verb with chance ``bare_prob``, joined by ``separator``; ``empty_text`` when no
    op with a phrase was applied.
    """

    mode: str = "fixed"
    text: str = "Remove all degradation"
    bare_prob: float = 0.0
    separator: str = "; "
    empty_text: str = "Remove all degradation"

    def validate(self) -> None:
        if self.mode not in ("fixed", "ops"):
            raise ValueError(f"prompt.mode must be 'fixed' or 'ops', got {self.mode!r}")
        check_prob("prompt.bare_prob", self.bare_prob)


@dataclass(frozen=True)
class OpStage:
    """One op with its sampling spec, applied with probability ``p``.

    ``prompt``/``label``: whether the op contributes a restoration phrase and a
    degradation label (false for a resize that only restores the output size).
    """

    op: str
    spec: Any
    p: float = 1.0
    id: str | None = None
    prompt: bool = True
    label: bool = True
    decimals: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class OneOf:
    """Run exactly one of ``branches`` (each a list of stages), chosen with ``weights``."""

    branches: list[list[Any]]
    weights: list[float]
    id: str | None = None


@dataclass(frozen=True)
class Choose:
    """Run ``k`` distinct ``branches``, drawn uniformly without replacement, in list order.

    The list order is the physical order of the degradations (scene, lens, optics,
    sensor, compression), so any subset of them is applied in a sensible order.
    """

    branches: list[list[Any]]
    k: int
    id: str | None = None


@dataclass(frozen=True)
class SubRecipe:
    """Run another recipe, with its own scale and prompt rules (a branch of a mixture)."""

    recipe: Recipe
    id: str | None = None


@dataclass(frozen=True)
class Recipe:
    """A resolved, validated recipe; ``hash`` is the sha256 of its canonical resolved form."""

    name: str
    version: str
    description: str
    source: str
    scale: int
    upsample_lq: bool
    prompt: PromptSpec
    stages: list[Any]
    crop_size: int | None
    resolved: dict
    hash: str
    path: str

    def scales(self) -> set[int]:
        """Every degradation scale this recipe can produce (mixtures have several)."""
        out = {self.scale}
        for st in _walk(self.stages):
            if isinstance(st, SubRecipe):
                out |= st.recipe.scales()
        return out


def _walk(stages: list[Any]):
    for st in stages:
        yield st
        if isinstance(st, OneOf | Choose):
            for br in st.branches:
                yield from _walk(br)


def builtin_dir() -> Path:
    """Folder of the recipes shipped with pirs."""
    return Path(str(resources.files("pirs.degrade") / "recipes"))


def list_recipes() -> list[str]:
    """Names of the shipped recipes."""
    return sorted(p.stem for p in builtin_dir().glob("*.yaml"))


def _names(keys) -> list[str]:
    """Keys of a mapping from YAML, sortable whatever their types."""
    return sorted(str(k) for k in keys)


def _locate(name: str) -> Path:
    if not isinstance(name, str) or not name or "\0" in name:
        raise RecipeError(f"a recipe is named by a non-empty string (a shipped name or a YAML path), got {name!r:.80}")
    p = Path(name)
    if p.suffix in (".yaml", ".yml") or p.is_file():
        if not p.is_file():
            raise RecipeError(f"{name}: recipe file not found")
        return p
    cand = builtin_dir() / f"{name}.yaml"
    if cand.is_file():
        return cand
    import difflib

    known = list_recipes()
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise RecipeError(f"unknown recipe {name!r}.{hint} Known recipes: {', '.join(known)}")


def _read_raw(path: Path, chain: tuple[str, ...]) -> dict:
    """Read a recipe YAML and resolve ``include``/``override`` into one plain dict."""
    key = str(path.resolve())
    if key in chain:
        raise RecipeError(f"{path}: include cycle through {' -> '.join(chain + (key,))}")
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_RECIPE_BYTES + 1)
    except OSError as e:
        raise RecipeError(f"{path}: cannot be read ({e.strerror or e})") from None
    try:
        raw = limits.load_yaml(data, str(path), MAX_RECIPE_BYTES)
    except limits.InputError as e:
        raise RecipeError(str(e)) from None
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: a recipe must be a mapping, got {type(raw).__name__}")
    unknown = set(raw) - RECIPE_KEYS
    if unknown:
        raise RecipeError(f"{path}: unknown keys {_names(unknown)}; allowed: {sorted(RECIPE_KEYS)}")
    bad = limits.non_finite(raw)
    if bad is not None:
        raise RecipeError(f"{path}: {bad} is NaN or infinite; recipe numbers must be finite")
    if "include" in raw:
        inc = raw["include"]
        if not isinstance(inc, str) or not inc or "\0" in inc:
            raise RecipeError(f"{path}: include must name a recipe (a shipped name or a YAML path), got {inc!r:.80}")
        try:
            base = _read_raw(_locate_from(inc, path), chain + (key,))
        except RecipeError as e:
            raise RecipeError(f"{path}: include {inc!r}: {e}") from None
        overrides = raw.get("override") or {}
        if not isinstance(overrides, dict):
            raise RecipeError(f"{path}: override must map stage ids to changed keys")
        base["stages"] = _apply_overrides(base.get("stages", []), dict(overrides), path)
        for k, v in raw.items():
            if k not in ("include", "override"):
                base[k] = v
        raw = base
    elif "override" in raw:
        raise RecipeError(f"{path}: override needs include")
    return raw


def _locate_from(name: str, parent: Path) -> Path:
    sibling = parent.parent / f"{name}.yaml"
    return sibling if sibling.is_file() else _locate(name)


def _apply_overrides(stages: list, overrides: dict, path: Path) -> list:
    stages = copy.deepcopy(stages)
    seen: set[str] = set()

    def visit(lst: list) -> None:
        for st in lst:
            if not isinstance(st, dict):
                continue
            sid = st.get("id")
            if isinstance(sid, str) and sid in overrides:
                change = overrides[sid]
                if not isinstance(change, dict):
                    raise RecipeError(f"{path}: override[{sid}] must be a mapping of keys to values")
                st.update(copy.deepcopy(change))
                seen.add(sid)
            for br in (st.get("one_of") or []) + (st.get("from") or []):
                visit(br if isinstance(br, list) else [])

    visit(stages)
    missing = set(overrides) - seen
    if missing:
        raise RecipeError(f"{path}: override names stages that do not exist: {_names(missing)}")
    return stages


def _build_spec(op: str, body: dict, where: str) -> Any:
    mod = ops_registry.get(op)
    names = {f.name for f in dataclasses.fields(mod.Spec)}
    unknown = set(body) - names
    if unknown:
        raise RecipeError(f"{where}: unknown keys {_names(unknown)} for op {op!r}; allowed: {sorted(names)}")
    try:
        spec = mod.Spec(**body)
        spec.validate()
    except (TypeError, ValueError) as e:
        raise RecipeError(f"{where}: {one_line(e)[:300]}") from None
    except Exception as e:  # a parameter of the wrong shape that the op's validator did not expect
        raise RecipeError(f"{where}: invalid parameters for op {op!r} "
                          f"({type(e).__name__}: {one_line(e)[:300]})") from None
    return spec



def _build_stages(raw: list, where: str, chain: tuple[str, ...], budget: list[int]) -> list[Any]:
    if not isinstance(raw, list):
        raise RecipeError(f"{where}: stages must be a list")
    out: list[Any] = []
    for i, st in enumerate(raw):
        here = f"{where}[{i}]"
        budget[0] += 1
        if budget[0] > MAX_STAGES:
            raise RecipeError(f"{here}: the recipe expands to more than {MAX_STAGES} stages (with what it includes "
                              "and nests)")
        if not isinstance(st, dict):
            raise RecipeError(f"{here}: a stage must be a mapping, got {st!r:.80}")
        sid = st.get("id")
        if sid is not None and not isinstance(sid, str):
            raise RecipeError(f"{here}: id must be a string, got {sid!r:.80}")
        here = f"{here}" + (f" ({sid})" if sid else "")
        if "one_of" in st:
            extra = set(st) - {"one_of", "weights", "id"}
            if extra:
                raise RecipeError(f"{here}: unknown keys {_names(extra)} for one_of")
            branches = st["one_of"]
            if not isinstance(branches, list) or not branches:
                raise RecipeError(f"{here}: one_of must be a non-empty list of stage lists")
            weights = st.get("weights") or [1.0 / len(branches)] * len(branches)
            if not isinstance(weights, list):
                raise RecipeError(f"{here}: weights must be a list of numbers, got {weights!r:.80}")
            if len(weights) != len(branches):
                raise RecipeError(f"{here}: {len(weights)} weights for {len(branches)} branches")
            try:
                check_probs("weights", {str(j): w for j, w in enumerate(weights)})
            except ValueError as e:
                raise RecipeError(f"{here}: {e}") from None
            built = [_build_stages(b, f"{here}.one_of[{j}]", chain, budget) for j, b in enumerate(branches)]
            out.append(OneOf(branches=built, weights=[float(w) for w in weights], id=sid))
        elif "choose" in st:
            extra = set(st) - {"choose", "from", "id"}
            if extra:
                raise RecipeError(f"{here}: unknown keys {_names(extra)} for choose")
            branches, k = st.get("from"), st["choose"]
            if not isinstance(branches, list) or not branches:
                raise RecipeError(f"{here}: choose needs 'from', a non-empty list of stage lists")
            if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= len(branches):
                raise RecipeError(f"{here}: choose must be an integer in 1..{len(branches)}, got {k!r}")
            built = [_build_stages(b, f"{here}.from[{j}]", chain, budget) for j, b in enumerate(branches)]
            out.append(Choose(branches=built, k=k, id=sid))
        elif "recipe" in st:
            extra = set(st) - {"recipe", "id"}
            if extra:
                raise RecipeError(f"{here}: unknown keys {_names(extra)} for a recipe stage")
            if not isinstance(st["recipe"], str):
                raise RecipeError(f"{here}: recipe must name a recipe, got {st['recipe']!r:.80}")
            try:
                sub = _load(st["recipe"], chain, budget)
            except RecipeError as e:
                raise RecipeError(f"{here}: recipe {st['recipe']!r}: {e}") from None
            out.append(SubRecipe(recipe=sub, id=sid))
        elif "op" in st:
            if not isinstance(st["op"], str):
                raise RecipeError(f"{here}: op must be an op name (a string), got {st['op']!r:.80}")
            body = {k: v for k, v in st.items() if k not in STAGE_KEYS}
            try:
                ops_registry.get(st["op"])
                check_prob("p", st.get("p", 1.0))
            except (KeyError, ValueError) as e:
                raise RecipeError(f"{here}: {e.args[0]}") from None
            decimals = st.get("decimals") or {}
            if not isinstance(decimals, dict) or not all(isinstance(v, int) for v in decimals.values()):
                raise RecipeError(f"{here}: decimals must map parameter names to integers")
            out.append(OpStage(op=st["op"], spec=_build_spec(st["op"], body, here), p=float(st.get("p", 1.0)),
                               id=sid, prompt=bool(st.get("prompt", True)), label=bool(st.get("label", True)),
                               decimals=dict(decimals)))
        else:
            raise RecipeError(f"{here}: a stage needs one of 'op', 'one_of', 'choose' or 'recipe', "
                              f"got keys {_names(st)}")
    return out


def _load(name: str, chain: tuple[str, ...] = (), budget: list[int] | None = None) -> Recipe:
    budget = [0, 0] if budget is None else budget  # [stages, bytes] of everything loaded for one recipe
    path = _locate(name)
    key = str(path.resolve())
    if key in chain:
        raise RecipeError(f"{path}: recipe refers to itself through {' -> '.join(chain + (key,))}")
    raw = _read_raw(path, ())
    where = str(path)
    budget[1] += len(json.dumps(raw, default=str))
    if budget[1] > MAX_RESOLVED_BYTES:
        raise RecipeError(f"{where}: the recipe with what it includes and nests is over {MAX_RESOLVED_BYTES} bytes")
    for req in ("name", "version", "stages"):
        if req not in raw:
            raise RecipeError(f"{where}: missing required key {req!r}")
    scale = raw.get("scale", 1)
    if not isinstance(scale, int) or scale < 1:
        raise RecipeError(f"{where}: scale must be a positive integer, got {scale!r}")
    try:
        prompt = PromptSpec(**(raw.get("prompt") or {}))
        prompt.validate()
    except (TypeError, ValueError) as e:
        raise RecipeError(f"{where}: prompt: {e}") from None
    stages = _build_stages(raw["stages"], f"{where}: stages", chain + (key,), budget)
    # Resolve nested recipes so the hash covers what actually runs.
    resolved = copy.deepcopy(raw)
    resolved["stages"] = _resolve_refs(raw["stages"], stages)
    digest = hashlib.sha256(json.dumps(resolved, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    return Recipe(name=str(raw["name"]), version=str(raw["version"]), description=str(raw.get("description", "")),
                  source=str(raw.get("source", "")), scale=scale, upsample_lq=bool(raw.get("upsample_lq", False)),
                  prompt=prompt, stages=stages, crop_size=raw.get("crop_size"), resolved=resolved,
                  hash=digest, path=str(path))


def _resolve_refs(raw_stages: list, built: list) -> list:
    out = []
    for r, b in zip(raw_stages, built, strict=True):
        r = dict(r)
        if isinstance(b, SubRecipe):
            r["recipe"] = b.recipe.resolved
        elif isinstance(b, OneOf):
            r["one_of"] = [_resolve_refs(rb, bb) for rb, bb in zip(r["one_of"], b.branches, strict=True)]
        elif isinstance(b, Choose):
            r["from"] = [_resolve_refs(rb, bb) for rb, bb in zip(r["from"], b.branches, strict=True)]
        out.append(r)
    return out


def load_recipe(name_or_path: str) -> Recipe:
    """Load a shipped recipe by name (``realesrgan``) or a YAML file by path; raises RecipeError.

    Untrusted recipe files are safe to load: at most 1 MiB of UTF-8 YAML, no aliases, nesting
    and expansion (includes and nested recipes) bounded, numbers finite; anything malformed
    is a :class:`RecipeError` naming the file and the stage.
    """
    try:
        return _load(name_or_path)
    except RecipeError:
        raise
    except (TypeError, AttributeError, KeyError, IndexError, ValueError) as e:  # a shape nothing above expected
        raise RecipeError(f"{name_or_path}: malformed recipe ({type(e).__name__}: {one_line(e)[:300]})") from None


def describe(recipe: Recipe, indent: str = "  ") -> list[str]:
    """One line per stage, for ``degrade recipes``."""
    lines: list[str] = []

    def walk(stages: list, depth: int) -> None:
        pad = indent * depth
        for st in stages:
            if isinstance(st, OpStage):
                body = {k: v for k, v in dataclasses.asdict(st.spec).items()}
                p = "" if st.p == 1.0 else f" p={st.p:g}"
                sid = f" [{st.id}]" if st.id else ""
                lines.append(f"{pad}- {st.op}{sid}{p}: {json.dumps(body, separators=(',', ':'))}")
            elif isinstance(st, OneOf):
                lines.append(f"{pad}- one of ({', '.join(f'{w:g}' for w in st.weights)}):")
                for j, br in enumerate(st.branches):
                    lines.append(f"{pad}{indent}branch {j}:")
                    walk(br, depth + 2)
            elif isinstance(st, Choose):
                lines.append(f"{pad}- {st.k} distinct of {len(st.branches)}, in this order:")
                for j, br in enumerate(st.branches):
                    lines.append(f"{pad}{indent}branch {j}:")
                    walk(br, depth + 2)
            else:
                lines.append(f"{pad}- recipe {st.recipe.name} (scale {st.recipe.scale})")

    walk(recipe.stages, 1)
    return lines
