"""The record schema is declared once and enforced on every record."""

from __future__ import annotations

import pytest

import datasets
from pirs.degrade import schema


def test_empty_record_is_valid_and_complete():
    rec = schema.empty_record()
    rec["key"] = "00000001"
    assert schema.validate(rec) is rec
    assert set(rec) == set(schema.FIELDS)
    assert all(v is not None for v in rec.values())  # never JSON null


@pytest.mark.parametrize("change,match", [
    (lambda r: r.pop("caption_low"), "missing fields"),
    (lambda r: r.update(surprise=1), "unexpected fields"),
    (lambda r: r.update(scale="4"), "'scale' must be int32"),
    (lambda r: r.update(flip=1), "'flip' must be bool"),
    (lambda r: r.update(degradations=["blur", 3]), "'degradations'"),
    (lambda r: r.update(caption_high=None), "'caption_high' must be string"),
    (lambda r: r.update(key="a.b"), "without dots"),
])
def test_validate_rejects(change, match):
    rec = schema.empty_record()
    rec["key"] = "k"
    change(rec)
    with pytest.raises(schema.SchemaError, match=match):
        schema.validate(rec)


def test_yaml_features_match_datasets_own_serialisation():
    assert schema.features_yaml() == schema.hf_features()._to_yaml_list()
    assert datasets.Features._from_yaml_list(schema.features_yaml()) == schema.hf_features()


def test_every_field_is_documented():
    for name, (typ, desc) in schema.FIELDS.items():
        assert desc and typ, name


def test_a_schema_1_0_record_is_upgraded_not_refused(tmp_path):
    import json

    from pirs.degrade.schema import ADDED, SCHEMA_VERSION, empty_record, upgrade, validate
    from pirs.degrade.shards import ShardWriter, iter_records

    old = empty_record()
    for name in ADDED["1.1"]:
        del old[name]
    old.update(key="00000001", schema_version="1.0")
    with pytest.raises(Exception, match="missing fields"):
        validate(dict(old))
    new = upgrade(old)
    assert new["schema_version"] == SCHEMA_VERSION and new["dataset"] == "" and validate(new)
    assert "dataset" not in old  # the input is not modified
    shard = tmp_path / "old.tar"
    with ShardWriter(shard) as w:
        w.write("00000001", {"json": json.dumps(old).encode(), "lq.png": b"x"})
    [(key, rec, _)] = list(iter_records(shard))
    assert rec["lq_source_path"] == "" and rec["schema_version"] == SCHEMA_VERSION
    future = dict(old, schema_version="2.0")
    assert upgrade(future) is future  # another major version is left to fail validation
