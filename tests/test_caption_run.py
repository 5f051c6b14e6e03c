"""`caption run`: captioned shards with unchanged images, resumption, failures retried, strangers refused."""

from __future__ import annotations

import io
import json
import shutil
import sys
import tarfile
from pathlib import Path

import pytest

from conftest import quick_config
from pirs.captioning import cli
from pirs.captioning.backend import CaptionError
from pirs.captioning.run import FAILURES_FILE, CaptionConfig, RunError, run
from pirs.captioning.template import TemplateBackend, low_level_caption
from pirs.degrade.build import build
from pirs.degrade.card import config_name
from pirs.degrade.schema import FIELDS
from pirs.degrade.shards import iter_records, iter_samples, shard_paths


@pytest.fixture(scope="module")
def shards(tmp_path_factory, photos_dir) -> Path:
    """Seven records of Real-ESRGAN shards in three shards (3 + 3 + 1)."""
    out = tmp_path_factory.mktemp("in") / "shards"
    build(quick_config(out, photos_dir, num_samples=7, shard_size=3))
    return out


def _cfg(shards: Path, out: Path, **kw) -> CaptionConfig:
    return CaptionConfig(shards=str(shards), out=str(out), progress=False, **kw)


def _records(folder: Path) -> dict[str, tuple[dict, dict]]:
    return {k: (rec, mem) for p in shard_paths(folder) for k, rec, mem in iter_records(p)}


class Flaky(TemplateBackend):
    """The template backend (same name and provenance), failing for chosen keys."""

    def __init__(self, fail: set[str], empty: set[str] = frozenset(), interrupt_after: int | None = None):
        super().__init__()
        self.fail, self.empty, self.calls, self.interrupt_after = fail, empty, 0, interrupt_after

    def caption(self, items, instruction):
        self.calls += 1
        if self.interrupt_after is not None and self.calls > self.interrupt_after:
            raise KeyboardInterrupt
        if instruction.field != "caption_low":
            return super().caption(items, instruction)
        bad = [it.key for it in items if it.key in self.fail]
        if bad:
            raise CaptionError(f"{bad[0]}: model said nothing useful")
        caps = super().caption(items, instruction)
        return ["" if it.key in self.empty else c for it, c in zip(items, caps, strict=True)]


def test_template_run_fills_captions_and_keeps_images(shards, tmp_path):
    out = tmp_path / "cap"
    r = run(_cfg(shards, out, batch_size=2))
    assert (r.samples, r.shards, r.shards_done, r.failures) == (7, 3, 3, [])
    before, after = _records(shards), _records(out)
    assert list(before) == list(after)
    for key, (rec, mem) in after.items():
        old_rec, old_mem = before[key]
        assert mem["hq.png"] == old_mem["hq.png"] and mem["lq.png"] == old_mem["lq.png"]
        assert rec["caption_low"] == low_level_caption(old_rec) and rec["caption_low"].startswith("The image")
        assert rec["caption_high"] == ""  # no source caption: nothing to write, not a failure
        meta = json.loads(rec["caption_meta"])
        assert set(meta) == {"caption_low"} and meta["caption_low"]["backend"] == "template"
        assert meta["caption_low"]["image"] == "lq" and meta["caption_low"]["instruction"] == "low"
        assert {k: v for k, v in rec.items() if not k.startswith("caption_")} == \
            {k: v for k, v in old_rec.items() if not k.startswith("caption_")}
    m_in = json.loads((shards / "manifest.json").read_text())
    m = json.loads((out / "manifest.json").read_text())
    assert m["content_sha256"] != m_in["content_sha256"] and m["recipe"] == m_in["recipe"]
    assert [s["samples"] for s in m["shards"]] == [3, 3, 1] and all(s["model"] == "template" for s in m["shards"])
    assert m["captions"]["backend"] == "template" and m["captions"]["complete"]
    assert m["captions"]["input"]["content_sha256"] == m_in["content_sha256"]
    card = (out / "README.md").read_text()
    assert config_name(m["content_sha256"]) in card and config_name(m_in["content_sha256"]) not in card
    assert "## Captions" in card and (out / FAILURES_FILE).read_text() == ""

    import datasets

    datasets.disable_progress_bars()
    ds = datasets.load_dataset(str(out), split="train", cache_dir=str(tmp_path / "hf"))
    assert ds.num_rows == 7 and set(ds.features["json"]) == set(FIELDS)
    rows = list(ds)
    assert all(row["json"]["caption_low"].startswith("The image") for row in rows)
    assert all(set(row["json"]) == set(FIELDS) for row in rows)


def test_resume_skips_complete_shards(shards, tmp_path):
    out = tmp_path / "cap"
    run(_cfg(shards, out))
    first = {p.name: p.read_bytes() for p in shard_paths(out)}
    mtimes = {p.name: p.stat().st_mtime_ns for p in shard_paths(out)}
    (out / "shard-000001.tar").unlink()  # as if killed while writing it
    (out / "stats" / "shard-000001.json").unlink()
    r = run(_cfg(shards, out))
    assert (r.shards_done, r.shards_skipped) == (1, 2)
    assert {p.name: p.read_bytes() for p in shard_paths(out)} == first  # deterministic
    assert all(p.stat().st_mtime_ns == mtimes[p.name] for p in shard_paths(out) if p.name != "shard-000001.tar")
    assert run(_cfg(shards, out, batch_size=5)).shards_skipped == 3  # the batch size does not change captions
    # an interrupt in the second shard keeps the first, leaves no temporary file, and the rerun finishes
    out2 = tmp_path / "cap2"
    with pytest.raises(KeyboardInterrupt):
        run(_cfg(shards, out2, batch_size=3, instructions=["low"]), backend=Flaky(set(), interrupt_after=1))
    assert [p.name for p in shard_paths(out2)] == ["shard-000000.tar"] and not list(out2.glob("*.tmp"))
    r = run(_cfg(shards, out2, batch_size=3, instructions=["low"]))
    assert (r.shards_done, r.shards_skipped) == (2, 1)
    # other settings in the same folder are refused unless --overwrite
    with pytest.raises(RunError, match="other settings"):
        run(_cfg(shards, out2, instructions=["high"], backend="source"))


def test_failures_are_listed_kept_and_retried(shards, tmp_path):
    out = tmp_path / "cap"
    keys = list(_records(shards))
    r = run(_cfg(shards, out, batch_size=2), backend=Flaky({keys[1]}, empty={keys[4]}))
    assert sorted((f["key"], f["field"]) for f in r.failures) == [(keys[1], "caption_low"), (keys[4], "caption_low")]
    lines = [json.loads(line) for line in (out / FAILURES_FILE).read_text().splitlines()]
    reasons = {f["key"]: f["reason"] for f in lines}
    assert "model said nothing useful" in reasons[keys[1]] and reasons[keys[4]] == "empty output"
    recs = _records(out)
    assert len(recs) == 7 and recs[keys[1]][0]["caption_low"] == "" and recs[keys[0]][0]["caption_low"]
    assert "caption_low" not in (json.loads(recs[keys[1]][0]["caption_meta"] or "{}"))
    m = json.loads((out / "manifest.json").read_text())
    assert [s["complete"] for s in m["shards"]] == [False, False, True] and not m["captions"]["complete"]
    mtime2 = (out / "shard-000002.tar").stat().st_mtime_ns
    good = Flaky(set())
    r = run(_cfg(shards, out, batch_size=2), backend=good)
    assert r.failures == [] and (r.shards_done, r.shards_skipped) == (2, 1) and r.captions == 2
    assert (out / "shard-000002.tar").stat().st_mtime_ns == mtime2
    assert (out / FAILURES_FILE).read_text() == ""
    recs = _records(out)
    assert all(rec["caption_low"] == low_level_caption(rec) for rec, _ in recs.values())
    ref = tmp_path / "ref"
    run(_cfg(shards, ref, batch_size=2))
    assert [p.read_bytes() for p in shard_paths(out)] == [p.read_bytes() for p in shard_paths(ref)]


def test_source_backend_run_and_cli(shards, tmp_path, capsys):
    caps = tmp_path / "caps"
    caps.mkdir()
    keys = list(_records(shards))
    for k in keys[:-1]:
        (caps / f"{k}.txt").write_text(f"a photo number {k}")
    out = tmp_path / "cap"
    rc = cli.main(["run", str(shards), "--out", str(out), "--backend", "source", "--source-dir", str(caps),
                   "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1 and "1 caption(s) could not be written" in err and "retry" in err
    recs = _records(out)
    assert recs[keys[0]][0]["caption_high"] == f"a photo number {keys[0]}" and recs[keys[-1]][0]["caption_high"] == ""
    (caps / f"{keys[-1]}.txt").write_text("the last one")
    assert cli.main(["run", str(shards), "--out", str(out), "--backend", "source", "--source-dir", str(caps),
                     "--quiet"]) == 0
    assert _records(out)[keys[-1]][0]["caption_high"] == "the last one"
    assert "already complete" in capsys.readouterr().out


def _evil_shard(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True)
    path = folder / "shard-000000.tar"
    with tarfile.open(path, "w") as tf:
        ti = tarfile.TarInfo(name)
        ti.size = 2
        tf.addfile(ti, io.BytesIO(b"{}"))
    return path


def test_strangers_shards_and_bad_arguments_are_refused(shards, tmp_path, capsys, monkeypatch):
    _evil_shard(tmp_path / "evil", "../evil.json")
    assert cli.main(["run", str(tmp_path / "evil"), "--out", str(tmp_path / "o1"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "shard-000000.tar" in err and "../evil.json" in err
    assert not list((tmp_path / "o1").glob("*.tar"))
    assert cli.main(["run", str(shards), "--out", str(shards), "--quiet"]) == 2
    assert "is the input folder" in capsys.readouterr().err
    assert cli.main(["run", str(shards), "--out", str(tmp_path / "o2"), "--backend", "llava"]) == 2
    assert "--model" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "pirs.captioning.vlm", None)  # as if the module were missing
    assert cli.main(["run", str(shards), "--out", str(tmp_path / "o3"), "--backend", "llava", "--model", "x"]) == 2
    assert "transformers backend" in capsys.readouterr().err
    assert cli.main(["run", str(shards), "--out", str(tmp_path / "o6"), "--backend", "openai"]) == 2
    assert "--endpoint" in capsys.readouterr().err
    assert cli.main(["run", str(shards), "--out", str(tmp_path / "o7"), "--endpoint", "http://127.0.0.1:1"]) == 2
    assert "for --backend openai" in capsys.readouterr().err
    assert cli.main(["run", str(shards), "--out", str(tmp_path / "o8"), "--instructions", "caption_x=supir"]) == 2
    assert "not a caption field" in capsys.readouterr().err
    assert cli.main(["run", str(shards), "--out", str(tmp_path / "o4"), "--instructions", "lowww"]) == 2
    assert "did you mean 'low'" in capsys.readouterr().err
    assert cli.main(["run", str(shards), "--out", str(tmp_path / "o5"), "--image", "hq"]) == 2
    for argv in (["--help"], ["run", "--help"]):
        with pytest.raises(SystemExit) as e:
            cli.main(argv)
        assert e.value.code == 0
    assert "--instructions-file" in capsys.readouterr().out


def test_images_untouched_for_shards_copied_elsewhere(shards, tmp_path):
    """A single .tar as input works, and members other than the json are copied as they are."""
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(shards / "shard-000002.tar", one / "shard-000002.tar")
    out = tmp_path / "cap"
    r = run(_cfg(one / "shard-000002.tar", out))
    assert r.samples == 1
    a = dict(iter_samples(one / "shard-000002.tar"))
    b = dict(iter_samples(out / "shard-000002.tar"))
    assert {k: {e: v for e, v in m.items() if e != "json"} for k, m in a.items()} == \
        {k: {e: v for e, v in m.items() if e != "json"} for k, m in b.items()}
