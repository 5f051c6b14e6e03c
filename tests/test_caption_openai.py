"""`caption run --backend openai` against a real HTTP server on loopback (`caption serve`, tiny random models).

The server is pirs' own OpenAI-compatible one (captioning/serve.py), started by the tests: in this process
on a thread, or as a `caption serve` process that a test kills mid-run. Captions must equal the
transformers backend's on the same model; failing requests are retried; a record that fails every retry is
listed and captioned by the next run; a server that stops leaves an output the same command resumes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import quick_config, synthetic_photo
from pirs.captioning import cli
from pirs.captioning.backend import XPSR_INSTRUCTIONS, Item
from pirs.captioning.openai_api import OpenAIBackend
from pirs.captioning.run import FAILURES_FILE, CaptionConfig, RunError, run
from pirs.captioning.serve import FAULT_ENV, CaptionServer
from pirs.captioning.tiny import FAMILIES, make_tiny
from pirs.captioning.vlm import TransformersBackend
from pirs.degrade.build import build
from pirs.degrade.shards import iter_records, iter_samples, shard_paths

TOKENS = 6
KEY = "sk-pirs-test-0123456789-never-written"


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The server's model thread and this process's other work share the cores: one torch thread each, or
    torch's threads spin against each other (one request took 0.5 s instead of 60 ms on a loaded machine)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def shards(tmp_path_factory, photos_dir) -> Path:
    """Eight records in four shards."""
    out = tmp_path_factory.mktemp("in") / "shards"
    build(quick_config(out, photos_dir, num_samples=8, shard_size=2, crop_size=48))
    return out


@pytest.fixture(scope="module")
def qwen(tmp_path_factory) -> Path:
    return make_tiny("qwen2-vl", tmp_path_factory.mktemp("m") / "qwen2-vl", seed=0)


@pytest.fixture(scope="module")
def reference(shards, qwen, tmp_path_factory) -> dict[str, dict]:
    """The transformers backend's captions of the shards (both XPSR fields)."""
    out = tmp_path_factory.mktemp("ref") / "out"
    run(CaptionConfig(shards=str(shards), out=str(out), backend="transformers", model=str(qwen), batch_size=4,
                      max_new_tokens=TOKENS, device="cpu", progress=False))
    return _records(out)


def _records(folder: Path) -> dict[str, dict]:
    return {k: rec for p in shard_paths(folder) for k, rec, _ in iter_records(p)}


def _captions(recs: dict[str, dict]) -> dict[str, tuple[str, str]]:
    return {k: (r["caption_high"], r["caption_low"]) for k, r in recs.items()}


def _server(model: Path, **kw) -> CaptionServer:
    backend = TransformersBackend(str(model), batch_size=16, max_new_tokens=64, device="cpu")
    return CaptionServer(backend, "tiny", **kw).start()


def _cfg(shards: Path, out: Path, endpoint: str, **kw) -> CaptionConfig:
    args = {"backend": "openai", "endpoint": endpoint, "served_model": "tiny", "max_new_tokens": TOKENS,
            "concurrency": 4, "batch_size": 8, "retries": 3, "retry_backoff": 0.01, "progress": False, **kw}
    return CaptionConfig(shards=str(shards), out=str(out), **args)


def test_served_captions_equal_the_transformers_backend(shards, qwen, reference, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with _server(qwen, api_key=KEY) as server:
        r = run(_cfg(shards, tmp_path / "out", server.url))
        assert server.stats["chat_requests"] == 16 and max(server.stats["batches"]) > 1  # really batched
    assert r.failures == [] and r.captions == 16
    got = _records(tmp_path / "out")
    assert _captions(got) == _captions(reference) and all(all(c) for c in _captions(got).values())
    meta = json.loads(next(iter(got.values()))["caption_meta"])["caption_low"]
    assert meta["backend"] == "openai" and meta["served_model"] == meta["model"] == "tiny"
    assert meta["endpoint"] == server.url and meta["model_root"] == str(qwen.resolve())
    assert meta["temperature"] == 0.0 and meta["seed"] == 0 and meta["max_new_tokens"] == TOKENS
    assert meta["instruction_text"] == XPSR_INSTRUCTIONS["low"].text
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert m["captions"]["backend"] == "openai" and m["captions"]["complete"]
    for f in (tmp_path / "out").rglob("*"):  # the key went to the server, never into a file
        assert not f.is_file() or KEY.encode() not in f.read_bytes(), f
    # a wrong key, a wrong model name and a dead endpoint each stop the run before any work, in one line
    with _server(qwen, api_key="another-key") as other:
        with pytest.raises(RunError, match=r"refused the API key \(401\).*\$OPENAI_API_KEY, which is set"):
            run(_cfg(shards, tmp_path / "o2", other.url))
        monkeypatch.setenv("OPENAI_API_KEY", "another-key")
        with pytest.raises(RunError, match=r"does not serve 'llava' \(it serves: tiny\)"):
            run(_cfg(shards, tmp_path / "o3", other.url, served_model="llava"))
        dead = other.url
    assert cli.main(["run", str(shards), "--out", str(tmp_path / "o4"), "--backend", "openai", "--endpoint", dead,
                     "--served-model", "tiny", "--quiet"]) == 2


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_served_equals_generated_here(family, tmp_path):
    """Three families through the protocol, 8 concurrent requests batched by the server, one at a time here."""
    model = make_tiny(family, tmp_path / family, seed=0)
    items = [Item(f"k{i}", {}, synthetic_photo(30 + 7 * i, 60 - 3 * i, seed=i)) for i in range(8)]
    here = TransformersBackend(str(model), batch_size=1, max_new_tokens=TOKENS)
    want = here.caption(items, XPSR_INSTRUCTIONS["high"])
    with _server(model) as server:
        client = OpenAIBackend(server.url, "tiny", concurrency=8, max_new_tokens=TOKENS)
        assert client.caption(items, XPSR_INSTRUCTIONS["high"]) == want
        client.close()
        assert max(server.stats["batches"]) > 1


def test_a_server_failing_some_requests_is_retried(shards, qwen, reference, tmp_path, monkeypatch):
    monkeypatch.setenv(FAULT_ENV, "every:3")  # every third request answers 503
    with _server(qwen) as server:
        r = run(_cfg(shards, tmp_path / "out", server.url))
        faults = server.stats["faults"]
    assert faults >= 5 and r.failures == []
    assert _captions(_records(tmp_path / "out")) == _captions(reference)


def test_a_record_failing_after_the_last_retry_is_listed_then_retried(shards, qwen, reference, tmp_path,
                                                                       monkeypatch):
    key, png = next((k, m["lq.png"]) for p in shard_paths(shards) for k, _, m in iter_records(p))
    monkeypatch.setenv(FAULT_ENV, "image:" + hashlib.sha256(png).hexdigest()[:16])  # this image: always 500
    out = tmp_path / "out"
    with _server(qwen) as server:
        r = run(_cfg(shards, out, server.url, retries=2))
    assert {(f["key"], f["field"]) for f in r.failures} == {(key, "caption_high"), (key, "caption_low")}
    assert all("HTTP 500" in f["reason"] and "after 3 attempts" in f["reason"] for f in r.failures)
    assert len((out / FAILURES_FILE).read_text().splitlines()) == 2
    assert _records(out)[key]["caption_high"] == "" and not json.loads((out / "manifest.json").read_text())[
        "captions"]["complete"]
    monkeypatch.delenv(FAULT_ENV)
    with _server(qwen) as server:  # the server is fixed (and on another port): the same run finishes
        r = run(_cfg(shards, out, server.url))
        assert server.stats["chat_requests"] == 2  # only the failed record's two fields
    assert r.failures == [] and r.shards_skipped == 3
    assert _captions(_records(out)) == _captions(reference)


def _serve_process(model: Path, env: dict) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "pirs.captioning.cli", "serve", "--model", str(model), "--port", "0",
           "--served-model-name", "tiny", "--device", "cpu"]
    env = dict(env, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True)
    seen = []
    for line in proc.stderr:  # progress bars and warnings first, then "caption serve: ... at URL"
        seen.append(line)
        m = re.search(r"caption serve: .* at (http://\S+/v1)", line)
        if m:  # keep reading, so that a full pipe never blocks the server
            threading.Thread(target=proc.stderr.read, daemon=True).start()
            return proc, m.group(1)
    proc.wait(timeout=30)
    raise AssertionError("caption serve did not start: " + "".join(seen))


def test_a_server_that_stops_mid_run_leaves_a_resumable_output(tmp_path, photos_dir, qwen):
    shards = tmp_path / "shards"
    build(quick_config(shards, photos_dir, num_samples=16, shard_size=2, crop_size=48))
    env = dict(os.environ, HF_HUB_OFFLINE="1", **{FAULT_ENV: "delay:0.1"})
    server, url = _serve_process(qwen, env)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "pirs.captioning.cli", "run", str(shards), "--out", str(out), "--backend", "openai",
           "--endpoint", url, "--served-model", "tiny", "--max-new-tokens", str(TOKENS), "--concurrency", "2",
           "--batch-size", "2", "--retries", "2", "--retry-backoff", "0.05", "--quiet"]
    runner = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and len(list((out / "stats").glob("*.json"))) < 2:
            time.sleep(0.05)
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=30)
        assert runner.wait(timeout=120) == 2
    finally:
        for p in (server, runner):
            if p.poll() is None:
                p.kill()
    err = runner.stderr.read()
    assert "the server stopped answering" in err and "run the same command again" in err, err
    assert len(err.strip().splitlines()) == 1, err
    finished = {p.name: p.stat().st_mtime_ns for p in (out / "stats").glob("*.json")}
    assert 2 <= len(finished) < 8 and not (out / "manifest.json").exists() and not list(out.glob("*.tmp"))

    server, url = _serve_process(qwen, dict(os.environ, HF_HUB_OFFLINE="1"))  # back, on another port
    try:
        cmd[cmd.index("--endpoint") + 1] = url
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    finally:
        server.kill()
        server.wait(timeout=30)
    assert done.returncode == 0, done.stderr
    for name, t in finished.items():
        assert (out / "stats" / name).stat().st_mtime_ns == t  # finished shards were not redone
    ref = tmp_path / "ref"
    run(CaptionConfig(shards=str(shards), out=str(ref), backend="transformers", model=str(qwen), batch_size=8,
                      max_new_tokens=TOKENS, device="cpu", progress=False))
    assert _captions(_records(out)) == _captions(_records(ref))


def test_endpoints_and_arguments(qwen):
    from pirs.captioning.openai_api import EndpointError, normalize_endpoint

    assert normalize_endpoint("http://127.0.0.1:8000") == "http://127.0.0.1:8000/v1"
    assert normalize_endpoint("http://gpu1:8000/v1/") == "http://gpu1:8000/v1"
    assert normalize_endpoint("https://host/openai/v1") == "https://host/openai/v1"
    for bad in ("127.0.0.1:8000", "ftp://x/v1", "http://h:1/v1?x=1"):
        with pytest.raises(EndpointError):
            normalize_endpoint(bad)
    with _server(qwen) as a, _server(qwen) as b:
        client = OpenAIBackend(f"{a.url},{b.url}", "tiny", concurrency=4, max_new_tokens=3)
        assert client.settings["endpoint"] == [a.url, b.url]
        items = [Item(f"k{i}", {}, np.full((20, 20, 3), 10 * i, np.uint8)) for i in range(12)]
        client.caption(items, XPSR_INSTRUCTIONS["low"])
        assert a.stats["chat_requests"] > 0 and b.stats["chat_requests"] > 0  # both endpoints took requests
        assert a.stats["chat_requests"] + b.stats["chat_requests"] == 12
        # the protocol's refusals are per request, in the OpenAI error shape
        import openai

        raw = openai.OpenAI(base_url=a.url, api_key="x", max_retries=0)
        for body, status in (({"temperature": 0.7}, 400), ({"model": "nope"}, 404), ({"n": 2}, 400)):
            req = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], **body}
            with pytest.raises(openai.APIStatusError) as e:
                raw.chat.completions.create(**req)
            assert e.value.status_code == status and e.value.body["message"]
        url = [{"type": "image_url", "image_url": {"url": "https://example.com/x.png"}}, {"type": "text", "text": "x"}]
        with pytest.raises(openai.BadRequestError, match="fetches nothing"):
            raw.chat.completions.create(model="tiny", messages=[{"role": "user", "content": url}])


ray = pytest.importorskip("ray")


def test_openai_on_a_ray_actor_pool_spreads_over_endpoints(shards, qwen, reference, tmp_path):
    """Two Ray actors, each sending to the two endpoints given; the shards equal a local run's, byte for byte."""
    with _server(qwen) as a, _server(qwen) as b:
        endpoints = f"{a.url},{b.url}"
        local = run(_cfg(shards, tmp_path / "local", endpoints))
        ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 1024 * 1024, log_to_driver=False,
                 configure_logging=False)
        try:
            on_ray = run(_cfg(shards, tmp_path / "ray", endpoints, executor="ray", workers=2))
        finally:
            ray.shutdown()
        assert a.stats["chat_requests"] >= 8 and b.stats["chat_requests"] >= 8
    assert on_ray.captions == local.captions == 16 and on_ray.failures == []
    tars = {p.name: p.read_bytes() for p in shard_paths(tmp_path / "ray")}
    assert tars == {p.name: p.read_bytes() for p in shard_paths(tmp_path / "local")}
    assert _captions(_records(tmp_path / "ray")) == _captions(reference)
    assert {k: m for p in shard_paths(tmp_path / "ray") for k, m in iter_samples(p)}.keys() == reference.keys()
