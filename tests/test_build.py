"""The shard builder: determinism across worker counts, resumption, geometry, source use."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import quick_config
from pirs.degrade.build import BuildError, build, decode_png, source_index
from pirs.degrade.pipeline import replay
from pirs.degrade.schema import FIELDS, decode_ops
from pirs.degrade.shards import iter_records, shard_paths


def _tar_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in shard_paths(out)}


def _records(out: Path) -> list[tuple[str, dict, dict]]:
    return [r for shard in shard_paths(out) for r in iter_records(shard)]


def test_workers_1_and_2_give_byte_identical_shards(tmp_path, photos):
    a = build(quick_config(tmp_path / "a", photos, pipeline="mixed", workers=1))
    b = build(quick_config(tmp_path / "b", photos, pipeline="mixed", workers=2))
    assert a.samples == b.samples == 12
    ta, tb = _tar_bytes(tmp_path / "a"), _tar_bytes(tmp_path / "b")
    assert list(ta) == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    assert ta == tb
    assert (tmp_path / "a" / "manifest.json").read_bytes() != b""
    ma, mb = (json.loads((tmp_path / d / "manifest.json").read_text()) for d in "ab")
    assert ma["shards"] == mb["shards"] and ma["fingerprint"] == mb["fingerprint"]


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path, photos):
    build(quick_config(tmp_path / "a", photos, num_samples=5))
    build(quick_config(tmp_path / "b", photos, num_samples=5))
    build(quick_config(tmp_path / "c", photos, num_samples=5, seed=1))
    assert _tar_bytes(tmp_path / "a") == _tar_bytes(tmp_path / "b")
    assert _tar_bytes(tmp_path / "a") != _tar_bytes(tmp_path / "c")


def test_tar_members_are_fixed_and_ordered(tmp_path, photos):
    import tarfile

    build(quick_config(tmp_path / "o", photos, num_samples=3))
    with tarfile.open(tmp_path / "o" / "shard-000000.tar") as tf:
        members = tf.getmembers()
    assert [m.name for m in members] == [f"0000000{i}.{e}" for i in range(3) for e in ("hq.png", "json", "lq.png")]
    assert {(m.mtime, m.uname, m.gname, m.mode) for m in members} == {(0, "pirs", "pirs", 0o644)}


def test_every_record_complete_geometry_and_replay(tmp_path, photos):
    build(quick_config(tmp_path / "o", photos, num_samples=16, crop_size=48, shard_size=16))
    recs = _records(tmp_path / "o")
    assert len(recs) == 16
    kinds = set()
    for key, rec, members in recs:
        assert set(rec) == set(FIELDS)
        assert set(members) == {"hq.png", "lq.png", "json"}
        hq, lq = decode_png(members["hq.png"]), decode_png(members["lq.png"])
        assert list(hq.shape[:2]) == rec["hq_size"] == [48, 48]
        assert rec["scale"] == 4 and not rec["lq_upsampled"]
        assert lq.shape[0] * 4 == hq.shape[0] and lq.shape[1] * 4 == hq.shape[1]
        ops = decode_ops(rec)
        kinds |= {o["params"].get("kind") for o in ops if o["op"] == "noise"}
        assert np.array_equal(replay(hq, ops, rec["lq_upsampled"]), lq), key
        assert rec["restoration_prompt"] == "Remove all degradation"
    assert "poisson" in kinds and "gaussian" in kinds  # replay covers both noise models


def test_upsampled_lq_has_hq_size(tmp_path, photos):
    build(quick_config(tmp_path / "o", photos, num_samples=4, upsample_lq=True))
    for _, rec, members in _records(tmp_path / "o"):
        assert rec["lq_upsampled"] and rec["lq_size"] == rec["hq_size"]
        assert decode_png(members["lq.png"]).shape == decode_png(members["hq.png"]).shape


def test_crop_must_be_multiple_of_every_scale(tmp_path, photos):
    with pytest.raises(BuildError, match="multiple of the scale 4"):
        build(quick_config(tmp_path / "o", photos, crop_size=30))
    with pytest.raises(BuildError, match="multiple of the scale 4"):
        build(quick_config(tmp_path / "o", photos, pipeline="mixed", crop_size=34))


def test_each_source_used_once_per_pass(tmp_path, photos):
    n = 5
    for seed in (0, 3):
        for p in range(3):
            used = [source_index(seed, i, n) for i in range(p * n, (p + 1) * n)]
            assert sorted(used) == list(range(n))
    build(quick_config(tmp_path / "o", photos, num_samples=10, shard_size=10))
    paths = [rec["source_path"] for _, rec, _ in _records(tmp_path / "o")]
    assert sorted(paths[:5]) == sorted(set(paths)) and sorted(paths[5:]) == sorted(set(paths))


def test_rerun_skips_complete_shards(tmp_path, photos):
    cfg = quick_config(tmp_path / "o", photos)
    first = build(cfg)
    stamps = {p.name: p.stat().st_mtime_ns for p in shard_paths(tmp_path / "o")}
    again = build(cfg)
    assert first.shards_built == 3 and again.shards_built == 0 and again.shards_skipped == 3
    assert {p.name: p.stat().st_mtime_ns for p in shard_paths(tmp_path / "o")} == stamps


def test_a_changed_build_in_the_same_folder_is_refused(tmp_path, photos):
    build(quick_config(tmp_path / "o", photos))
    with pytest.raises(BuildError, match="different build"):
        build(quick_config(tmp_path / "o", photos, seed=7))
    r = build(quick_config(tmp_path / "o", photos, seed=7, overwrite=True))
    assert r.shards_built == 3


def test_damaged_shard_is_rebuilt(tmp_path, photos):
    cfg = quick_config(tmp_path / "o", photos)
    build(cfg)
    good = _tar_bytes(tmp_path / "o")
    victim = tmp_path / "o" / "shard-000001.tar"
    victim.write_bytes(victim.read_bytes()[:1000])
    r = build(cfg)
    assert r.shards_built == 1 and _tar_bytes(tmp_path / "o") == good


def _start_build(out: Path, photos: Path, n: int, workers: int = 1) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "pirs.degrade.cli", "build", "--pipeline", "realesrgan", "--input", str(photos),
           "--out", str(out), "--num-samples", str(n), "--crop-size", "64", "--shard-size", "3", "--quiet",
           "--workers", str(workers)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _running(pid: int) -> bool:
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()
    except OSError:
        return False


def _wait_gone(pids: list[int], seconds: float = 15) -> None:
    """Worker processes of a killed build end by themselves."""
    deadline = time.time() + seconds
    alive = pids
    while time.time() < deadline:
        alive = [p for p in alive if _running(p)]
        if not alive:
            return
        time.sleep(0.2)
    raise AssertionError(f"processes of the killed build are still running: {alive}")


@pytest.mark.parametrize("sig,workers", [(signal.SIGKILL, 1), (signal.SIGINT, 1), (signal.SIGKILL, 2),
                                         (signal.SIGINT, 2)])
def test_killed_build_resumes_to_identical_output(tmp_path, photos, sig, workers):
    ref = tmp_path / "ref"
    out = tmp_path / "out"
    n = 60
    proc = _start_build(out, photos, n, workers)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((out / "stats").glob("*.json"))) < 2:
        time.sleep(0.02)
    kids = _children(proc.pid)
    os.kill(proc.pid, sig)
    proc.wait(timeout=60)
    _wait_gone(kids)
    done_before = {p.name for p in (out / "stats").glob("*.json")}
    assert 2 <= len(done_before) < 20, "the build finished before it could be interrupted"
    # Whatever was interrupted left no partial shard under a final name: every tar there
    # is complete (a tar without its marker yet is rebuilt on resume, never trusted).
    for tar in out.glob("shard-*.tar"):
        assert len(list(iter_records(tar))) == 3, tar.name
    # Only shards whose stats marker was written count as complete; a tar renamed just
    # before the kill, without its marker yet, is legitimately rebuilt.
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.tar")
              if (out / "stats" / f"{p.stem}.json").exists()}
    proc = _start_build(out, photos, n, workers)
    assert proc.wait(timeout=300) == 0, proc.stderr.read().decode()
    assert not list(out.glob("*.tmp"))
    for name, t in stamps.items():
        assert (out / name).stat().st_mtime_ns == t  # complete shards were not redone
    assert _start_build(ref, photos, n).wait(timeout=300) == 0
    assert _tar_bytes(out) == _tar_bytes(ref)
    m = json.loads((out / "manifest.json").read_text())
    assert m["samples"] == n and len(m["shards"]) == 20


def test_manifest_matches_shards(tmp_path, photos):
    from pirs.degrade.shards import file_digest

    build(quick_config(tmp_path / "o", photos))
    m = json.loads((tmp_path / "o" / "manifest.json").read_text())
    for entry in m["shards"]:
        nbytes, sha = file_digest(tmp_path / "o" / entry["name"])
        assert (entry["bytes"], entry["sha256"]) == (nbytes, sha)
        assert entry["samples"] == len(list(iter_records(tmp_path / "o" / entry["name"])))
    assert m["inputs"]["seen"] == m["inputs"]["usable"] + m["inputs"]["rejected"] == 5
    assert m["recipe"]["name"] == "realesrgan" and len(m["recipe"]["hash"]) == 64
    assert m["args"]["seed"] == 0 and m["args"]["crop_size"] == 32


def test_bundled_sample_photos_are_the_default_input(tmp_path):
    r = build(quick_config(tmp_path / "o", None, num_samples=3, crop_size=64))
    assert r.inputs_seen >= 6 and r.samples == 3
    srcs = {rec["source_path"] for _, rec, _ in _records(tmp_path / "o")}
    assert srcs <= {"astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "hubble_deep_field.jpg", "ihc.png",
                    "motorcycle_left.png", "retina.jpg"}


def test_output_folder_inside_the_input_folder_is_not_read_as_input(photos):
    out = photos / "shards"
    first = build(quick_config(out, photos))
    again = build(quick_config(out, photos))  # the first build's shards must not become inputs
    assert first.inputs_seen == again.inputs_seen == 5 and again.shards_built == 0
