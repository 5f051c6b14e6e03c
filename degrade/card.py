"""The dataset card written beside the shards: a README.md whose YAML header declares
the features of every field, so ``datasets.load_dataset(folder)`` never infers them."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml

from . import schema
from .atomic import write_text


def config_name(content_sha256: str) -> str:
    """Name of the folder's one dataset config, unique to the shards' bytes.

    ``datasets`` caches a folder loaded through README ``configs`` under the folder's
    name and the config name only, not the files' contents: two different builds in
    folders of the same name (or a folder whose shards were rewritten) would share a
    cache entry and the second would load the first's data. A content-derived config
    name gives every distinct set of shards its own cache entry.
    """
    return f"pirs-{content_sha256[:16]}"


def card_yaml(n_samples: int, content_sha256: str) -> dict:
    """The YAML header: the data files and the declared features."""
    return {
        "configs": [{"config_name": config_name(content_sha256), "default": True,
                     "data_files": [{"split": "train", "path": "shard-*.tar"}]}],
        # dataset_info must name the config: without config_name, `datasets` (5.x) applies it to no
        # config and infers the features from the data instead (seen: hq.png dropped when absent).
        "dataset_info": {"config_name": config_name(content_sha256), "features": schema.features_yaml()},
        "pretty_name": "pirs degradation shards",
        "tags": ["image-restoration", "super-resolution", "pirs"],
        "size_categories": [_size_category(n_samples)],
    }


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "n>1M"


def _type_name(t) -> str:
    return f"list of {t[0]}" if isinstance(t, list) else t


def write_card(out: Path, manifest: dict, recipe) -> Path:
    """Write ``out/README.md`` from the manifest."""
    return write_text(out / "README.md", render_card(out.as_posix(), manifest, recipe))


def render_card(folder: str, manifest: dict, recipe) -> str:
    """The dataset card's text for the shards in ``folder`` (a path or URL, as shown in the card)."""
    template = (resources.files("pirs.degrade") / "card_template.md").read_text()
    args = manifest["args"]
    rows = "\n".join(f"| `{n}` | {_type_name(t)} | {d} |" for n, (t, d) in schema.FIELDS.items())
    text = template.format(
        yaml=yaml.safe_dump(card_yaml(manifest["samples"], manifest["content_sha256"]), sort_keys=False).strip(),
        title=f"pirs shards: {recipe.name}",
        recipe=recipe.name, recipe_version=recipe.version, recipe_hash_short=recipe.hash[:12],
        description=recipe.description or recipe.name, recipe_source=recipe.source or "pirs",
        samples=manifest["samples"], n_shards=len(manifest["shards"]), crop_size=args["crop_size"],
        scale=args["scale"] if args["scale"] else f"recipe default ({', '.join(map(str, sorted(recipe.scales())))})",
        seed=args["seed"], seen=manifest["inputs"]["seen"], usable=manifest["inputs"]["usable"],
        rejected=manifest["inputs"]["rejected"], sample_rejects=manifest["sample_rejects"],
        fingerprint=manifest["fingerprint"], schema_version=manifest["schema_version"],
        folder=folder, field_rows=rows,
    )
    return text
