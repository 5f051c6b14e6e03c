"""The one shard writer and the one safe shard reader."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from pirs.degrade.schema import empty_record
from pirs.degrade.shards import ShardError, ShardWriter, check_key, iter_records, iter_samples


def _tar(path: Path, members: list[tuple[str, bytes | None, str]]) -> Path:
    """Write a tar with (name, data, kind) members; kind is file, dir or symlink."""
    with tarfile.open(path, "w") as tf:
        for name, data, kind in members:
            ti = tarfile.TarInfo(name)
            if kind == "dir":
                ti.type = tarfile.DIRTYPE
                tf.addfile(ti)
            elif kind == "symlink":
                ti.type = tarfile.SYMTYPE
                ti.linkname = "/etc/passwd"
                tf.addfile(ti)
            else:
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
    return path


def test_writer_groups_by_key_and_reader_round_trips(tmp_path):
    rec = empty_record()
    with ShardWriter(tmp_path / "s.tar") as w:
        for k in ("a1", "b2"):
            w.write(k, {"hq.png": b"H" + k.encode(), "lq.png": b"L", "json": json.dumps(dict(rec, key=k)).encode()})
    assert not (tmp_path / "s.tar.tmp").exists()
    got = list(iter_samples(tmp_path / "s.tar"))
    assert [k for k, _ in got] == ["a1", "b2"] and got[0][1]["hq.png"] == b"Ha1"
    assert [k for k, _, _ in iter_records(tmp_path / "s.tar")] == ["a1", "b2"]


def test_writer_is_atomic_on_error(tmp_path):
    with pytest.raises(RuntimeError):
        with ShardWriter(tmp_path / "s.tar") as w:
            w.write("a", {"json": b"{}"})
            raise RuntimeError("boom")
    assert not (tmp_path / "s.tar").exists() and not (tmp_path / "s.tar.tmp").exists()


@pytest.mark.parametrize("key", ["", "a.b", "a/b", "..", "x\n"])
def test_bad_keys_are_refused(key):
    with pytest.raises(ValueError, match="invalid sample key"):
        check_key(key)


@pytest.mark.parametrize("members,match", [
    ([("../evil.json", b"{}", "file")], "separator or '..'"),
    ([("dir/a.json", b"{}", "file")], "separator"),
    ([("/abs.json", b"{}", "file")], "separator"),
    ([("a.json", None, "symlink")], "not a regular file"),
    ([("d", None, "dir")], "not a regular file"),
    ([("noext", b"x", "file")], "no extension"),
    ([("a.json", b"{}", "file"), ("a.json", b"{}", "file")], "appears twice"),
])
def test_reader_refuses_unsafe_members(tmp_path, members, match):
    path = _tar(tmp_path / "bad.tar", members)
    with pytest.raises(ShardError, match=match) as e:
        list(iter_samples(path))
    assert "bad.tar" in str(e.value)


def test_reader_refuses_oversized_members_and_garbage(tmp_path):
    path = _tar(tmp_path / "big.tar", [("a.bin", b"x" * 2000, "file")])
    with pytest.raises(ShardError, match="over the 1000 limit"):
        list(iter_samples(path, max_member_bytes=1000))
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"this is not a tar" * 100)
    with pytest.raises(ShardError, match="not a readable tar"):
        list(iter_samples(junk))


def test_records_must_follow_the_schema(tmp_path):
    path = _tar(tmp_path / "s.tar", [("k.json", b'{"key": "k"}', "file")])
    with pytest.raises(ShardError, match="missing fields"):
        list(iter_records(path))
    path = _tar(tmp_path / "t.tar", [("k.json", b"{not json", "file")])
    with pytest.raises(ShardError, match="not valid JSON"):
        list(iter_records(path))
    path = _tar(tmp_path / "u.tar", [("k.hq.png", b"x", "file")])
    with pytest.raises(ShardError, match="no json member"):
        list(iter_records(path))


def test_nothing_is_extracted_to_disk(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = _tar(tmp_path / "s.tar", [("k.json", json.dumps(dict(empty_record(), key="k")).encode(), "file")])
    before = sorted(p.name for p in tmp_path.iterdir())
    list(iter_records(path))
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_webdataset_reads_our_shards(tmp_path, photos):
    import webdataset as wds

    from conftest import quick_config
    from pirs.degrade.build import build

    build(quick_config(tmp_path / "o", photos, num_samples=4, shard_size=4))
    ds = wds.WebDataset(str(tmp_path / "o" / "shard-000000.tar"), shardshuffle=False)
    rows = list(ds)
    assert [r["__key__"] for r in rows] == [f"0000000{i}" for i in range(4)]
    for r in rows:
        assert set(r) >= {"hq.png", "lq.png", "json"}
        assert json.loads(r["json"])["key"] == r["__key__"]
