"""`caption run --backend llava` (a name for transformers), tiny LLaVA: fields, batching, a killed run resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import quick_config
from pirs.captioning.tiny import make_tiny_llava
from pirs.degrade.build import build
from pirs.degrade.shards import iter_records, shard_paths


@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory) -> Path:
    return make_tiny_llava(tmp_path_factory.mktemp("llava") / "tiny")


def _caption(shards: Path, out: Path, model: Path, batch: int = 4) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "pirs.captioning.cli", "run", str(shards), "--out", str(out), "--backend", "llava",
           "--model", str(model), "--batch-size", str(batch), "--max-new-tokens", "6", "--device", "cpu", "--quiet"]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)


def _records(folder: Path) -> dict[str, dict]:
    return {k: rec for shard in shard_paths(folder) for k, rec, _ in iter_records(shard)}


def _comparable(recs: dict[str, dict]) -> dict[str, dict]:
    """Records with the run's batch size taken out of the provenance (it is recorded, and may differ)."""
    out = {}
    for k, rec in recs.items():
        provenance = json.loads(rec["caption_meta"]).items()
        meta = {f: {n: v for n, v in m.items() if n != "batch_size"} for f, m in provenance}
        out[k] = dict(rec, caption_meta=meta)
    return out


def test_llava_run_fills_both_xpsr_fields_and_resumes_after_a_kill(tmp_path, photos, tiny_llava):
    shards = tmp_path / "shards"
    build(quick_config(shards, photos, num_samples=24, shard_size=2))
    ref = tmp_path / "ref"
    assert _caption(shards, ref, tiny_llava, batch=3).wait(timeout=600) == 0
    done = _records(ref)
    assert len(done) == 24
    for rec in done.values():
        assert rec["caption_high"] and rec["caption_low"]
        meta = json.loads(rec["caption_meta"])
        assert meta["caption_high"]["instruction_text"].startswith("Please provide a descriptive summary")
        assert meta["caption_low"]["instruction_text"].startswith("Please describe the quality of this image")
        assert meta["caption_low"]["backend"] == "transformers" and meta["caption_low"]["image"] == "lq"

    out = tmp_path / "out"
    proc = _caption(shards, out, tiny_llava, batch=1)
    deadline = time.time() + 300
    while time.time() < deadline and len(list((out / "stats").glob("*.json"))) < 2:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    finished = {p.name: p.stat().st_mtime_ns for p in (out / "stats").glob("*.json")}
    assert 2 <= len(finished) < 12, "the run finished before it could be killed"
    proc = _caption(shards, out, tiny_llava, batch=4)  # another batch size: same captions, same folder
    assert proc.wait(timeout=600) == 0, proc.stderr.read().decode()
    assert _comparable(_records(out)) == _comparable(done)  # greedy: batch size and the kill change nothing
    for name, t in finished.items():
        assert (out / "stats" / name).stat().st_mtime_ns == t  # finished shards were not redone
    assert not list(out.glob("*.tmp"))
