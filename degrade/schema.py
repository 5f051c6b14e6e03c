"""The record schema: one versioned declaration of every field of a sample's ``json`` member.

Every record carries every field. A text field that does not apply or is not filled
yet (captions before ``caption`` runs) is the empty string, never JSON ``null``, so
loaders that infer types from the first records see the same types as loaders that
read the declared features. The list of applied ops is a JSON-encoded string
(``ops``), because its parameters vary in shape from op to op.
"""

from __future__ import annotations

import json
from typing import Any

SCHEMA_VERSION = "1.1"
# Fields each minor version added, with their empty values: a reader upgrades an older
# record (a stranger's 1.0 shards) by filling them in, never by guessing anything else.
ADDED: dict[str, dict[str, Any]] = {"1.1": {"dataset": "", "lq_source_path": "", "lq_source_sha256": ""}}

# name -> (type, description). Types: string, bool, int32, int64, or [type] for a list.
FIELDS: dict[str, tuple[Any, str]] = {
    "key": ("string", "sample key: the zero-padded sample index, no dots"),
    "schema_version": ("string", "version of this schema"),
    "source_path": ("string", "source (HQ) image, relative to the input ('file.tar#member' inside shards); "
                              "empty when the data set has no ground truth"),
    "source_sha256": ("string", "sha256 of the source image's bytes"),
    "dataset": ("string", "layout of an ingested paired data set (e.g. lol, gopro); empty for synthesized pairs"),
    "lq_source_path": ("string", "ingested LQ image, relative to the input; empty for synthesized pairs"),
    "lq_source_sha256": ("string", "sha256 of the ingested LQ image's bytes; empty for synthesized pairs"),
    "source_size": (["int32"], "[height, width] of the decoded source after EXIF orientation"),
    "pad": (["int32"], "[top, bottom, left, right] reflect padding added to the source before cropping"),
    "crop_box": (["int32"], "[top, left, height, width] of the HQ crop in the padded source"),
    "flip": ("bool", "whether the crop was mirrored left-right"),
    "hq_size": (["int32"], "[height, width] of hq.png; [] when there is no HQ (real photos without ground truth)"),
    "lq_size": (["int32"], "[height, width] of lq.png"),
    "scale": ("int32", "degradation scale: LQ size x scale = HQ size unless lq_upsampled"),
    "lq_upsampled": ("bool", "LQ was bicubically resized back to the HQ size"),
    "recipe": ("string", "recipe the build ran"),
    "recipe_version": ("string", "its version"),
    "recipe_hash": ("string", "sha256 of the resolved recipe"),
    "branch": ("string", "recipe that degraded this sample (differs from recipe in a mixture)"),
    "seed": ("int64", "global seed of the build"),
    "index": ("int64", "sample index; the sample's generator is seeded from (seed, index)"),
    "ops": ("string", "JSON list of applied ops in order: [{op, id, params, prompt}]"),
    "restoration_prompt": ("string", "SPIRE-style restoration prompt"),
    "degradations": (["string"], "ordered degradation labels"),
    "caption_high": ("string", "high-level (content) caption; empty until captioned"),
    "caption_low": ("string", "low-level (quality) caption; empty until captioned"),
    "caption_source": ("string", "caption that came with the source (e.g. MS-COCO); empty if none"),
    "caption_meta": ("string", "JSON provenance of the captions (model, instruction, image, settings); empty if none"),
}

MEMBERS = ("hq.png", "lq.png", "json")  # hq.png is absent for data sets without ground truth

_PY = {"string": str, "bool": bool, "int32": int, "int64": int}


class SchemaError(ValueError):
    """A record that does not follow the schema."""


def validate(rec: dict, where: str = "record") -> dict:
    """Check that ``rec`` has exactly the schema's fields with the right types; return it."""
    missing = [k for k in FIELDS if k not in rec]
    extra = [k for k in rec if k not in FIELDS]
    if missing or extra:
        raise SchemaError(f"{where}: missing fields {missing}, unexpected fields {extra}")
    for name, (typ, _) in FIELDS.items():
        v = rec[name]
        if isinstance(typ, list):
            ok = isinstance(v, list) and all(_is(x, typ[0]) for x in v)
        else:
            ok = _is(v, typ)
        if not ok:
            raise SchemaError(f"{where}: field {name!r} must be {typ}, got {v!r:.80}")
    if "." in rec["key"] or "/" in rec["key"] or not rec["key"]:
        raise SchemaError(f"{where}: key {rec['key']!r} must be non-empty without dots or slashes")
    return rec


def upgrade(rec: dict) -> dict:
    """An older minor version's record with the fields added since filled with their empty values."""
    version = rec.get("schema_version") if isinstance(rec, dict) else None
    if not isinstance(version, str) or version == SCHEMA_VERSION or version.split(".")[0] != "1":
        return rec
    out = dict(rec)
    for added_in, fields in ADDED.items():
        if _version_tuple(version) < _version_tuple(added_in):
            for name, empty in fields.items():
                out.setdefault(name, empty)
    out["schema_version"] = SCHEMA_VERSION
    return out


def _version_tuple(v: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in v.split("."))
    except ValueError:
        return (0,)


def _is(v: Any, typ: str) -> bool:
    if typ in ("int32", "int64"):
        return isinstance(v, int) and not isinstance(v, bool)
    return isinstance(v, _PY[typ])


def empty_record() -> dict:
    """A record with every field at its empty value."""
    out: dict[str, Any] = {}
    for name, (typ, _) in FIELDS.items():
        out[name] = [] if isinstance(typ, list) else {"string": "", "bool": False}.get(typ, 0)
    out["schema_version"] = SCHEMA_VERSION
    return out


def decode_ops(rec: dict) -> list[dict]:
    """The applied ops of a record as a list of dicts."""
    return json.loads(rec["ops"]) if rec.get("ops") else []


def features_yaml() -> list[dict]:
    """The Hugging Face ``dataset_info.features`` list for a pirs shard folder."""
    def one(name: str, typ: Any) -> dict:
        return {"name": name, "list": typ[0]} if isinstance(typ, list) else {"name": name, "dtype": typ}

    return [
        {"name": "__key__", "dtype": "string"},
        {"name": "__url__", "dtype": "string"},
        {"name": "hq.png", "dtype": "image"},
        {"name": "json", "struct": [one(n, t) for n, (t, _) in FIELDS.items()]},
        {"name": "lq.png", "dtype": "image"},
    ]


def hf_features():
    """The same features as a ``datasets.Features`` (imports ``datasets``)."""
    import datasets

    def one(typ: Any):
        return datasets.List(datasets.Value(typ[0])) if isinstance(typ, list) else datasets.Value(typ)

    return datasets.Features({
        "__key__": datasets.Value("string"),
        "__url__": datasets.Value("string"),
        "hq.png": datasets.Image(),
        "json": {n: one(t) for n, (t, _) in FIELDS.items()},
        "lq.png": datasets.Image(),
    })
