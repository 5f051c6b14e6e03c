"""Released shards load in Hugging Face ``datasets`` with every field, every time."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import datasets
from conftest import quick_config
from pirs.degrade.build import build
from pirs.degrade.schema import FIELDS, hf_features
from pirs.degrade.shards import ShardWriter, iter_records, shard_paths


@pytest.fixture(autouse=True)
def _quiet():
    datasets.disable_progress_bars()


def _load(*args, cache: Path, **kw):
    """load_dataset with a cache of the test's own (the environment variable is read at import)."""
    return datasets.load_dataset(*args, cache_dir=str(cache), **kw)


def _fill_captions_in_later_shards(folder: Path) -> None:
    """Rewrite every shard but the first with caption fields set (as the caption stage will)."""
    for shard in shard_paths(folder)[1:]:
        rows = list(iter_records(shard))
        with ShardWriter(shard) as w:
            for key, rec, members in rows:
                rec = dict(rec, caption_high=f"a photo {key}", caption_low="blurry and noisy",
                           caption_meta=json.dumps({"model": "test"}))
                w.write(key, {**members, "json": json.dumps(rec, sort_keys=True).encode()})


def _check(ds, n: int) -> None:
    assert ds.num_rows == n
    assert set(ds.features["json"]) == set(FIELDS)
    rows = list(ds)
    for row in rows:
        assert set(row["json"]) == set(FIELDS)
        assert row["hq.png"].size == (32, 32) and row["lq.png"].size == (8, 8)
        ops = json.loads(row["json"]["ops"])
        assert ops and all({"op", "params"} <= set(o) for o in ops)
    first, last = rows[0]["json"], rows[-1]["json"]
    assert first["caption_high"] == ""  # not captioned in the first shard ...
    assert last["caption_high"] == f"a photo {last['key']}"  # ... but set later, and not dropped
    assert last["caption_low"] == "blurry and noisy" and json.loads(last["caption_meta"]) == {"model": "test"}


def test_folder_load_returns_late_fields(tmp_path, photos):
    out = tmp_path / "shards"
    build(quick_config(out, photos, num_samples=12, shard_size=6))
    _fill_captions_in_later_shards(out)
    ds = _load(str(out), split="train", cache=tmp_path / "cache")
    _check(ds, 12)
    assert ds[0]["json"]["degradations"] and isinstance(ds[0]["json"]["crop_box"], list)


def test_webdataset_data_files_load_returns_late_fields(tmp_path, photos):
    out = tmp_path / "shards"
    build(quick_config(out, photos, num_samples=12, shard_size=6))
    _fill_captions_in_later_shards(out)
    files = [str(p) for p in shard_paths(out)]
    _check(_load("webdataset", data_files={"train": files}, split="train", features=hf_features(),
                 cache=tmp_path / "cache"), 12)
    # Without declared features, types are inferred from the first records only: because
    # pirs writes "" (never null) for unfilled text, the inferred types still hold later.
    _check(_load("webdataset", data_files={"train": files}, split="train", cache=tmp_path / "cache"), 12)


def test_card_declares_every_field(tmp_path, photos):
    import yaml

    out = tmp_path / "shards"
    build(quick_config(out, photos, num_samples=3))
    text = (out / "README.md").read_text()
    header = yaml.safe_load(text.split("---")[1])
    declared = datasets.Features._from_yaml_list(header["dataset_info"]["features"])
    assert declared == hf_features()
    assert header["configs"][0]["data_files"][0]["path"] == "shard-*.tar"
    manifest = json.loads((out / "manifest.json").read_text())
    assert header["configs"][0]["config_name"] == "pirs-" + manifest["content_sha256"][:16]
    assert header["configs"][0]["default"] is True


def test_copied_folder_loads_anywhere(tmp_path, photos):
    out = tmp_path / "shards"
    build(quick_config(out, photos, num_samples=4))
    moved = tmp_path / "elsewhere" / "copy"
    shutil.copytree(out, moved)
    ds = _load(str(moved), split="train", cache=tmp_path / "cache")
    assert [r["__key__"] for r in ds] == [f"0000000{i}" for i in range(4)]


def test_same_named_folders_never_share_a_cache_entry(tmp_path, photos):
    """datasets caches README-config folders by folder and config name: pirs makes the name content-derived."""
    a, b = tmp_path / "a" / "shards", tmp_path / "b" / "shards"
    build(quick_config(a, photos, num_samples=3))
    build(quick_config(b, photos, num_samples=5, pipeline="parameterized"))
    cache = tmp_path / "cache"
    da = _load(str(a), split="train", cache=cache)
    db = _load(str(b), split="train", cache=cache)
    assert (da.num_rows, db.num_rows) == (3, 5)
    assert da[0]["json"]["recipe"] == "realesrgan" and db[0]["json"]["recipe"] == "parameterized"
    assert da.info.config_name != db.info.config_name
