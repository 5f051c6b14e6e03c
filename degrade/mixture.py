"""``degrade mixture``: a balanced training mixture, N samples per degradation type, from a plan file.

A plan (``datasets/mixtures/diffrestorer-train.yaml``: Diff-Restorer Sec. IV-A; named by its
file or given as a path) lists one *part* per
degradation type: either a paired data set read with ``degrade ingest`` (layout, folder under
``--source-root``, ``match``, optional ``then`` recipe) or clean photos degraded with
``degrade build`` (recipe, folders, crop size). A mixture is built in two steps, each
resumable:

1. every part is ingested or built into ``OUT/parts/<type>/``, a normal shard folder with its
   own manifest, rejects and card (a build part makes exactly ``per_type`` samples, drawing
   its random crops from the photos in turn, as ``degrade build`` always does);
2. the merge writes ``OUT/shard-*.tar``: ``per_type`` samples of every part. A part with more
   records is sampled without repetition (a seeded choice); a part with fewer is repeated:
   every record ``per_type // n`` times and a seeded choice of the rest once more, and every
   copy after a record's first is augmented (the paper: "rotation, affine transformation,
   noise addition, and random cropping"; the parameters are the plan's ``augment``).

An augmented copy is a pure function of (the part record, the plan, seed, mixture index):
its generator is seeded from ``(seed, index)`` and what it drew is appended to the record's
``ops`` (``mixture-augment``, the same geometry on HQ and LQ; then ``noise`` on the LQ), its
labels unchanged. ``OUT/index.jsonl`` says for every mixture key which part record it copies
(``degrade replay`` a key in its part). ``OUT/manifest.json`` (written last) gives per type
the records available, used, repeated and augmented, the parts' content sha256 and the
mixture's; the card declares the features, so ``datasets.load_dataset(OUT)`` and
``restore train --data OUT`` read the mixture alone (the parts are in a sub-folder).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

from . import schema
from .atomic import write_json, write_text

if TYPE_CHECKING:
    import numpy as np

# The builders (and what they import) are imported where they are used, so that `degrade`'s parser can
# take this command's arguments from :func:`add_parser` at little cost.

PARTS_DIR = "parts"
INDEX_FILE = "index.jsonl"


class PlanError(ValueError):
    """A plan file that cannot be used; names the file and the key."""


@dataclass(frozen=True)
class Augment:
    """Paired augmentation of a repeated record (ranges drawn uniformly; ``*_p`` are chances).

    ``crop``: a random crop of this fraction of each side; ``quarter_turns``: one of the
    eight quarter turns and mirror images; ``affine_*``: rotation (degrees), zoom and shear
    (degrees) about the centre, reflecting at the borders; ``noise_*``: Gaussian noise on the
    LQ only (sigma on the 0-255 scale, colour).
    """

    crop: tuple[float, float] = (0.6, 1.0)
    quarter_turns: bool = True
    affine_p: float = 0.5
    affine_degrees: tuple[float, float] = (-10.0, 10.0)
    affine_scale: tuple[float, float] = (1.0, 1.2)
    affine_shear: tuple[float, float] = (-5.0, 5.0)
    noise_p: float = 0.5
    noise_sigma: tuple[float, float] = (1.0, 10.0)


@dataclass(frozen=True)
class Part:
    """One degradation type: ``ingest`` (a paired data set) or ``build`` (clean photos and a recipe)."""

    type: str
    source: str
    obtain: str
    expected: int | None = None
    ingest: dict | None = None  # layout, root, match, then
    build: dict | None = None  # pipeline, roots, crop_size


@dataclass(frozen=True)
class Plan:
    """A mixture plan: ``per_type`` samples of each part, seeded."""

    name: str
    version: str
    description: str
    citation: str
    per_type: int
    seed: int
    shard_size: int
    augment: Augment
    parts: tuple[Part, ...]
    sha256: str = ""
    path: str = ""


_INGEST_KEYS = {"layout", "root", "match", "then"}
_BUILD_KEYS = {"pipeline", "roots", "crop_size"}


def _fields(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _check_keys(where: str, raw: dict, allowed: set[str]) -> None:
    unknown = set(raw) - allowed
    if unknown:
        raise PlanError(f"{where}: unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}")


def _pair(where: str, v, kind=float) -> tuple:
    ok = isinstance(v, list | tuple) and len(v) == 2 and all(isinstance(x, int | float) for x in v)
    if not ok or v[0] > v[1]:
        raise PlanError(f"{where}: expected [low, high] with low <= high, got {v!r}")
    return (kind(v[0]), kind(v[1]))


def plans_dir() -> Path:
    """The shipped plans: ``mixtures/`` beside the test-set files (``datasets/mixtures`` in a checkout)."""
    from .testsets import testsets_dir

    return testsets_dir() / "mixtures"


def load_plan(path: str | Path) -> Plan:
    """Read and check a plan (a shipped name or a YAML path): unknown keys, layouts, recipes and ranges
    are refused by name."""
    from .layouts import get_layout
    from .limits import InputError, load_yaml
    from .recipe import load_recipe

    p = Path(path)
    if not p.is_file() and (plans_dir() / f"{path}.yaml").is_file():
        p = plans_dir() / f"{path}.yaml"
    if not p.is_file():
        known = ", ".join(sorted(q.stem for q in plans_dir().glob("*.yaml"))) or "none"
        raise PlanError(f"{path}: no such plan file or shipped plan (shipped: {known})")
    data = p.read_bytes()
    try:
        raw = load_yaml(data, str(p)) or {}
    except InputError as e:
        raise PlanError(str(e)) from None
    if not isinstance(raw, dict):
        raise PlanError(f"{p}: a plan is a mapping")
    top = _fields(Plan) - {"sha256", "path"}
    _check_keys(str(p), raw, top)
    missing = {"name", "version", "per_type", "parts"} - set(raw)
    if missing:
        raise PlanError(f"{p}: missing keys {sorted(missing)}")
    aug_raw = raw.get("augment") or {}
    _check_keys(f"{p}: augment", aug_raw, _fields(Augment))
    aug = {}
    for k, v in aug_raw.items():
        if k == "quarter_turns":
            aug[k] = bool(v)
        elif k.endswith("_p"):
            if not isinstance(v, int | float) or not 0 <= v <= 1:
                raise PlanError(f"{p}: augment.{k} must be a chance in [0, 1], got {v!r}")
            aug[k] = float(v)
        else:
            aug[k] = _pair(f"{p}: augment.{k}", v)
    augment = Augment(**aug)
    if not 0 < augment.crop[0] <= augment.crop[1] <= 1:
        raise PlanError(f"{p}: augment.crop must lie in (0, 1], got {list(augment.crop)}")
    parts = []
    seen: set[str] = set()
    for i, part in enumerate(raw["parts"] or []):
        where = f"{p}: parts[{i}]"
        if not isinstance(part, dict):
            raise PlanError(f"{where}: a part is a mapping")
        _check_keys(where, part, _fields(Part))
        if not part.get("type") or part["type"] in seen:
            raise PlanError(f"{where}: each part needs a type of its own, got {part.get('type')!r}")
        seen.add(part["type"])
        if (part.get("ingest") is None) == (part.get("build") is None):
            raise PlanError(f"{where} ({part['type']}): give exactly one of ingest or build")
        if part.get("ingest") is not None:
            ing = part["ingest"]
            _check_keys(f"{where}.ingest", ing, _INGEST_KEYS)
            if "layout" not in ing or "root" not in ing:
                raise PlanError(f"{where}.ingest: needs layout and root")
            try:
                get_layout(ing["layout"])
            except KeyError as e:
                raise PlanError(f"{where}.ingest: {e.args[0]}") from None
            if ing.get("then"):
                load_recipe(ing["then"])
        else:
            b = part["build"]
            _check_keys(f"{where}.build", b, _BUILD_KEYS)
            if "pipeline" not in b or not b.get("roots"):
                raise PlanError(f"{where}.build: needs pipeline and roots (folders of clean photos)")
            load_recipe(b["pipeline"])
        parts.append(Part(type=part["type"], source=part.get("source", ""), obtain=part.get("obtain", ""),
                          expected=part.get("expected"), ingest=part.get("ingest"), build=part.get("build")))
    if not parts:
        raise PlanError(f"{p}: no parts")
    if not isinstance(raw["per_type"], int) or raw["per_type"] < 1:
        raise PlanError(f"{p}: per_type must be a positive integer, got {raw['per_type']!r}")
    return Plan(name=str(raw["name"]), version=str(raw["version"]), description=raw.get("description", ""),
                citation=raw.get("citation", ""), per_type=raw["per_type"], seed=int(raw.get("seed", 0)),
                shard_size=int(raw.get("shard_size", 1000)), augment=augment, parts=tuple(parts),
                sha256=hashlib.sha256(data).hexdigest(), path=str(p))


# ---------------------------------------------------------------- augmentation (pure function + sampler)


def sample_augment(rng: np.random.Generator, aug: Augment, h: int, w: int) -> dict:
    """Draw one augmentation of an ``h x w`` pair: crop box, quarter turns, mirror, affine, LQ noise."""
    f = float(rng.uniform(*aug.crop))
    ch, cw = min(h, max(8, round(h * f))), min(w, max(8, round(w * f)))
    top, left = int(rng.integers(h - ch + 1)), int(rng.integers(w - cw + 1))
    turns = int(rng.integers(4)) if aug.quarter_turns else 0
    mirror = bool(rng.integers(2)) if aug.quarter_turns else False
    affine = None
    if rng.uniform() < aug.affine_p:
        affine = {"degrees": round(float(rng.uniform(*aug.affine_degrees)), 4),
                  "scale": round(float(rng.uniform(*aug.affine_scale)), 4),
                  "shear": round(float(rng.uniform(*aug.affine_shear)), 4)}
    noise = None
    if rng.uniform() < aug.noise_p:
        noise = {"kind": "gaussian", "sigma": round(float(rng.uniform(*aug.noise_sigma)), 4), "gray": False,
                 "seed": int(rng.integers(2**31))}
    return {"crop": [top, left, ch, cw], "quarter_turns": turns, "mirror": mirror, "affine": affine, "noise": noise}


def apply_geometry(img: np.ndarray, params: dict) -> np.ndarray:
    """The geometric part of an augmentation (applied alike to HQ and LQ): crop, mirror, turns, affine."""
    import cv2
    import numpy as np

    t, left, h, w = params["crop"]
    x = img[t: t + h, left: left + w]
    if params["mirror"]:
        x = x[:, ::-1]
    x = np.rot90(x, params["quarter_turns"])
    a = params["affine"]
    if a:
        hh, ww = x.shape[:2]
        m = cv2.getRotationMatrix2D((ww / 2 - 0.5, hh / 2 - 0.5), a["degrees"], a["scale"])
        shear = math.tan(math.radians(a["shear"]))
        s = np.array([[1.0, shear, -shear * (hh / 2 - 0.5)], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
        m = m @ s
        x = cv2.warpAffine(np.ascontiguousarray(x), m, (ww, hh), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REFLECT_101)
    return np.ascontiguousarray(x)


def augment_pair(hq: np.ndarray, lq: np.ndarray, params: dict) -> tuple[np.ndarray, np.ndarray]:
    """``(hq, lq)`` augmented by ``params`` (from :func:`sample_augment`); the noise goes on the LQ only."""
    import numpy as np

    from .ops import noise as noise_op

    hq2, lq2 = apply_geometry(hq, params), apply_geometry(lq, params)
    if params["noise"]:
        noisy = noise_op.apply(lq2.astype(np.float32) / np.float32(255.0), params["noise"])
        lq2 = np.clip(np.rint(noisy * 255.0), 0, 255).astype(np.uint8)
    return hq2, lq2


# ---------------------------------------------------------------- selection


def selection(n: int, count: int, seed: int, part: int) -> list[tuple[int, int]]:
    """``(record, copy)`` for ``count`` samples of a part with ``n`` records, seeded by (seed, part).

    ``n >= count``: a choice without repetition. Else every record ``count // n`` times and a
    choice of ``count % n`` records once more; copy 0 is the record itself.
    """
    import numpy as np

    rng = np.random.default_rng([int(seed), 7, int(part)])
    if n >= count:
        return [(int(i), 0) for i in sorted(rng.choice(n, count, replace=False))]
    reps, rest = divmod(count, n)
    extra = {int(i) for i in rng.choice(n, rest, replace=False)}
    return [(i, c) for i in range(n) for c in range(reps + (i in extra))]


# ---------------------------------------------------------------- the run


@dataclass
class MixtureConfig:
    """Arguments of ``degrade mixture``."""

    plan: str
    source_root: str
    out: str
    per_type: int | None = None  # default: the plan's
    workers: int = 1
    progress: bool = True
    overwrite: bool = False
    parts_only: bool = False


@dataclass
class MixtureResult:
    """What a mixture run did."""

    out: Path
    samples: int
    shards: int
    shards_built: int
    seconds: float
    manifest: dict = field(repr=False, default_factory=dict)


def check_sources(plan: Plan, root: Path) -> None:
    """Every part's folder exists, before any work: one message naming all that are missing."""
    from .build import BuildError

    missing = []
    for part in plan.parts:
        folders = [part.ingest["root"]] if part.ingest else list(part.build["roots"])
        for f in folders:
            if not (root / f).is_dir():
                missing.append(f"{part.type}: {root / f} ({part.source}; obtain it from {part.obtain})")
    if missing:
        raise BuildError(f"--source-root {root}: missing folders: " + "; ".join(missing))


def _build_part(cfg: MixtureConfig, plan: Plan, part: Part, count: int, root: Path, out: Path) -> dict:
    """Ingest or build one part into ``out``; returns its manifest."""
    from .build import BuildConfig, BuildError, build
    from .ingest import IngestConfig, ingest

    if part.ingest:
        ing = part.ingest
        match = ing.get("match")
        r = ingest(IngestConfig(layout=ing["layout"], input=str(root / ing["root"]), out=str(out),
                                match=[match] if isinstance(match, str) else match, then=ing.get("then"),
                                seed=plan.seed, shard_size=plan.shard_size, workers=cfg.workers,
                                progress=cfg.progress, overwrite=cfg.overwrite))
        return r.manifest
    b = part.build
    # A list of the photos, written beside the part, with paths under the source root reached through a
    # link: the records' source paths (and so the shards) do not depend on where the data sets are.
    src = out.parent / f"{part.type}.sources"
    src.mkdir(parents=True, exist_ok=True)
    link = src / "root"
    if link.is_symlink() and link.resolve() != root.resolve():
        link.unlink()
    if not link.is_symlink():
        link.symlink_to(root.resolve(), target_is_directory=True)
    exts = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
    lines = sorted(f"root/{p.relative_to(root).as_posix()}" for d in b["roots"] for p in (root / d).rglob("*")
                   if p.is_file() and p.suffix.lower() in exts)
    if not lines:
        raise BuildError(f"{part.type}: no images under {', '.join(str(root / d) for d in b['roots'])}")
    write_text(src / "sources.txt", "".join(line + "\n" for line in lines))
    r = build(BuildConfig(pipeline=b["pipeline"], out=str(out), input=str(src / "sources.txt"), num_samples=count,
                          seed=plan.seed, crop_size=int(b.get("crop_size", 512)), shard_size=plan.shard_size,
                          workers=cfg.workers, progress=cfg.progress, overwrite=cfg.overwrite))
    return r.manifest


def _records(folder: Path) -> list[tuple[Path, str, dict]]:
    """A part's samples in order: (shard, key, member spans)."""
    from .shards import index_samples, shard_paths

    out = []
    for shard in shard_paths(folder):
        index = index_samples(shard)
        out += [(shard, key, index[key]) for key in sorted(index)]
    return out


def _read(shard: Path, span: tuple[int, int]) -> bytes:
    with open(shard, "rb") as f:
        f.seek(span[0])
        return f.read(span[1])


def mixture_sample(plan: Plan, part: Part, src: tuple[Path, str, dict], copy: int, index: int,
                   key: str) -> tuple[dict, dict, dict]:
    """One mixture sample: ``(members, record, index row)``. Pure in (the part record, plan, index)."""
    from .build import BuildError, decode_png, encode_png, sample_rng

    shard, part_key, spans = src
    rec = schema.validate(schema.upgrade(json.loads(_read(shard, spans["json"]))), f"{shard}: {part_key}")
    hq_bytes, lq_bytes = _read(shard, spans["hq.png"]), _read(shard, spans["lq.png"])
    row = {"key": key, "type": part.type, "part": f"{PARTS_DIR}/{part.type}", "part_shard": shard.name,
           "part_key": part_key, "copy": copy, "augment": None}
    rec = dict(rec, key=key, index=int(index), seed=int(plan.seed))
    if copy:
        hq, lq = decode_png(hq_bytes), decode_png(lq_bytes)
        if hq.shape[:2] != lq.shape[:2]:
            raise BuildError(f"{shard}: {part_key}: augmenting needs HQ and LQ of one size, got {hq.shape[:2]} "
                             f"and {lq.shape[:2]}")
        params = sample_augment(sample_rng(plan.seed, index), plan.augment, *hq.shape[:2])
        hq, lq = augment_pair(hq, lq, params)
        hq_bytes, lq_bytes = encode_png(hq), encode_png(lq)
        ops = schema.decode_ops(rec)
        geometry = {k: params[k] for k in ("crop", "quarter_turns", "mirror", "affine")}
        ops.append({"op": "mixture-augment", "id": "mixture", "params": geometry, "prompt": ""})
        if params["noise"]:
            ops.append({"op": "noise", "id": "mixture", "params": params["noise"], "prompt": ""})
        rec.update(ops=json.dumps(ops, sort_keys=True, separators=(",", ":")), hq_size=list(hq.shape[:2]),
                   lq_size=list(lq.shape[:2]))
        row["augment"] = params
    schema.validate(rec, key)
    members = {"hq.png": hq_bytes, "lq.png": lq_bytes,
               "json": json.dumps(rec, sort_keys=True, separators=(",", ":")).encode()}
    return members, rec, row


def build_mixture(cfg: MixtureConfig) -> MixtureResult:
    """Build (or resume) the parts and the merged mixture of ``cfg.plan``."""
    from .build import BuildError

    t0 = time.perf_counter()
    try:
        plan = load_plan(cfg.plan)
    except (PlanError, ValueError) as e:
        raise BuildError(str(e)) from None
    count = cfg.per_type if cfg.per_type is not None else plan.per_type
    if count < 1:
        raise BuildError(f"--per-type must be at least 1, got {count}")
    root, out = Path(cfg.source_root), Path(cfg.out)
    check_sources(plan, root)
    out.mkdir(parents=True, exist_ok=True)
    from .lock import LockHeld, output_lock

    try:
        with output_lock(out, "degrade mixture"):  # one writer per output (each part also locks its own)
            return _build_locked(cfg, plan, count, root, out, t0)
    except LockHeld as e:
        raise BuildError(str(e)) from None


def _build_locked(cfg: MixtureConfig, plan: Plan, count: int, root: Path, out: Path, t0: float) -> MixtureResult:
    manifests = {}
    for part in plan.parts:
        manifests[part.type] = _build_part(cfg, plan, part, count, root, out / PARTS_DIR / part.type)
    if cfg.parts_only:
        return MixtureResult(out=out, samples=0, shards=0, shards_built=0, seconds=time.perf_counter() - t0)
    return _merge(plan, count, out, manifests, t0)


def _merge(plan: Plan, count: int, out: Path, manifests: dict[str, dict], t0: float) -> MixtureResult:
    from .build import PIRS_VERSION, STATS_DIR, BuildError, key_width, shard_name
    from .shards import ShardWriter

    records = {part.type: _records(out / PARTS_DIR / part.type) for part in plan.parts}
    for part in plan.parts:
        if not records[part.type]:
            raise BuildError(f"{out / PARTS_DIR / part.type}: the {part.type} part holds no samples")
    chosen = [(part, rec_i, copy) for p_i, part in enumerate(plan.parts)
              for rec_i, copy in selection(len(records[part.type]), count, plan.seed, p_i)]
    fp = hashlib.sha256(json.dumps({
        "pirs": PIRS_VERSION, "schema": schema.SCHEMA_VERSION, "plan": plan.sha256, "per_type": count,
        "parts": {t: m["content_sha256"] for t, m in sorted(manifests.items())}}, sort_keys=True).encode()).hexdigest()
    prev = out / "mixture.json"
    if prev.is_file() and json.loads(prev.read_text()).get("fingerprint") != fp:
        for old in list(out.glob("shard-*.tar")) + list((out / STATS_DIR).glob("shard-*.json")):
            old.unlink()
        (out / "manifest.json").unlink(missing_ok=True)
    write_json(prev, {"fingerprint": fp, "plan": plan.path, "per_type": count})
    total, width = len(chosen), key_width(len(chosen))
    n_shards = math.ceil(total / plan.shard_size)
    built = 0
    rows: dict[int, list[dict]] = {}
    for s in range(n_shards):
        marker = out / STATS_DIR / f"{shard_name(s)[:-4]}.json"
        if marker.is_file() and (out / shard_name(s)).is_file() and \
                json.loads(marker.read_text()).get("fingerprint") == fp:
            rows[s] = json.loads(marker.read_text())["index"]
            continue
        lo, hi = s * plan.shard_size, min((s + 1) * plan.shard_size, total)
        rows[s] = []
        with ShardWriter(out / shard_name(s)) as w:
            for m in range(lo, hi):
                part, rec_i, copy = chosen[m]
                key = f"{m:0{width}d}"
                members, _, row = mixture_sample(plan, part, records[part.type][rec_i], copy, m, key)
                w.write(key, members)
                rows[s].append(row)
        nbytes = (out / shard_name(s)).stat().st_size
        sha = hashlib.sha256((out / shard_name(s)).read_bytes()).hexdigest()
        write_json(marker, {"shard": shard_name(s), "samples": hi - lo, "bytes": nbytes, "sha256": sha,
                            "fingerprint": fp, "index": rows[s]})
        built += 1
    write_text(out / INDEX_FILE, "".join(json.dumps(r, sort_keys=True) + "\n" for s in range(n_shards)
                                         for r in rows[s]))
    manifest = _write_outputs(plan, count, out, manifests, records, chosen, fp, n_shards)
    return MixtureResult(out=out, samples=total, shards=n_shards, shards_built=built,
                         seconds=time.perf_counter() - t0, manifest=manifest)


def _write_outputs(plan: Plan, count: int, out: Path, manifests: dict, records: dict, chosen: list, fp: str,
                   n_shards: int) -> dict:
    from .build import PIRS_VERSION, STATS_DIR, content_sha256, shard_name

    stats = [json.loads((out / STATS_DIR / f"{shard_name(s)[:-4]}.json").read_text()) for s in range(n_shards)]
    types = {}
    for part in plan.parts:
        mine = [(r, c) for p, r, c in chosen if p is part]
        types[part.type] = {
            "source": part.source, "obtain": part.obtain, "expected": part.expected,
            "how": ({"ingest": part.ingest} if part.ingest else {"build": part.build}),
            "part": f"{PARTS_DIR}/{part.type}", "part_content_sha256": manifests[part.type]["content_sha256"],
            "available": len(records[part.type]), "samples": len(mine), "unique": len({r for r, _ in mine}),
            "augmented": sum(1 for _, c in mine if c)}
    manifest = {
        "pirs_version": PIRS_VERSION, "schema_version": schema.SCHEMA_VERSION, "fingerprint": fp,
        "mixture": {"name": plan.name, "version": plan.version, "plan_sha256": plan.sha256,
                    "citation": plan.citation, "per_type": count, "seed": plan.seed,
                    "augment": dataclasses.asdict(plan.augment)},
        "types": types,
        # the fields the dataset card shows, as a build's manifest has them
        "args": {"crop_size": "as each part", "scale": 1, "seed": plan.seed},
        "inputs": {"seen": sum(t["available"] for t in types.values()),
                   "usable": sum(t["available"] for t in types.values()), "rejected": 0},
        "sample_rejects": 0, "test_set": None,
        "samples": sum(st["samples"] for st in stats),
        "shards": [{"name": st["shard"], "samples": st["samples"], "bytes": st["bytes"], "sha256": st["sha256"]}
                   for st in stats],
        "content_sha256": content_sha256([st["sha256"] for st in stats]),
    }
    like_recipe = SimpleNamespace(name=plan.name, version=plan.version, hash=plan.sha256,
                                  description=plan.description or plan.name, source=plan.citation,
                                  scales=lambda: {1})
    table = "\n".join(f"| {t} | {v['source']} | {v['available']} | {v['samples']} | {v['unique']} | "
                      f"{v['augmented']} |" for t, v in types.items())
    extra = ("\n\n## Mixture\n\n| type | source | available | samples | unique records | augmented copies |\n"
             f"| --- | --- | --- | --- | --- | --- |\n{table}\n\nEvery key's part record: `{INDEX_FILE}`.\n")
    from .fs import Folder

    Folder(str(out)).write_card(manifest, like_recipe, extra)
    write_json(out / "manifest.json", manifest)  # last: a manifest means the mixture is complete
    return manifest


# ---------------------------------------------------------------- command line


def add_parser(sub) -> argparse.ArgumentParser:
    """The ``mixture`` sub-command (for ``degrade``'s parser)."""
    p = sub.add_parser("mixture", help="a balanced training mixture (N per degradation type) from a plan",
                       description="Ingest or build every part of a mixture plan under OUT/parts/, then merge "
                                   "N samples per type into OUT/ (repeating and augmenting small parts). "
                                   "Re-running the same command resumes.")
    p.add_argument("plan", help="a shipped plan (diffrestorer-train) or a plan YAML path")
    p.add_argument("--source-root", required=True, help="folder holding the plan's data sets (each part's root)")
    p.add_argument("--out", required=True, help="output folder: the mixture's shards, parts/ beneath")
    p.add_argument("--per-type", type=int, default=None, help="samples per type (default: the plan's)")
    p.add_argument("--workers", type=int, default=1, help="processes per part (default 1)")
    p.add_argument("--parts-only", action="store_true", help="build the parts, do not merge")
    p.add_argument("--overwrite", action="store_true", help="replace parts built with other settings")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def cmd_mixture(a) -> int:
    """Run ``degrade mixture``; one line on error, exit 2."""
    from .build import BuildError

    cfg = MixtureConfig(plan=a.plan, source_root=a.source_root, out=a.out, per_type=a.per_type, workers=a.workers,
                        progress=not a.quiet, overwrite=a.overwrite, parts_only=a.parts_only)
    try:
        r = build_mixture(cfg)
    except (BuildError, PlanError, OSError, ValueError) as e:
        print(f"degrade mixture: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    if cfg.parts_only:
        print(f"built the parts of {a.plan} in {r.out}/{PARTS_DIR}/")
        return 0
    per = ", ".join(f"{t} {v['samples']} ({v['unique']} records, {v['augmented']} augmented)"
                    for t, v in r.manifest["types"].items())
    print(f"wrote {r.samples} samples in {r.shards} shard(s) to {r.out}/ ({r.shards_built} built now): {per}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m pirs.degrade.mixture PLAN --source-root DIR --out DIR``."""
    parser = argparse.ArgumentParser(prog="degrade")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    return cmd_mixture(parser.parse_args(["mixture", *(sys.argv[1:] if argv is None else argv)]))


if __name__ == "__main__":
    sys.exit(main())
