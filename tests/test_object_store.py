"""Object storage: builds written to and read from a real S3 protocol server (moto's server mode) on loopback."""

from __future__ import annotations

import copy
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import quick_config
from pirs.degrade.build import build

s3fs = pytest.importorskip("s3fs")
pytest.importorskip("moto")

BUCKET = "pirs-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto S3 server on a free loopback port with one bucket; yields the storage options to reach it."""
    port = _free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(endpoint + "/moto-api/", timeout=1)
                break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.2)
        opts = {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": endpoint,
                                                                         "region_name": "us-east-1"}}
        import boto3

        boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                     region_name="us-east-1").create_bucket(Bucket=BUCKET)
        yield opts
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def local_build(tmp_path_factory, photos_dir) -> Path:
    out = tmp_path_factory.mktemp("local") / "out"
    build(quick_config(out, photos_dir))
    return out


@pytest.fixture(scope="module")
def s3_build(s3, photos_dir, local_build) -> str:
    """The same build written to s3://BUCKET/shards (2 local workers)."""
    url = f"s3://{BUCKET}/shards"
    r = build(quick_config(url, photos_dir, workers=2, storage_options=s3))
    assert r.out == url and r.shards_built == 3
    return url


def _fs(opts):
    return s3fs.S3FileSystem(**opts)


def test_build_to_s3_gives_the_local_bytes(s3, s3_build, local_build):
    fs = _fs(s3)
    keys = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(f"{BUCKET}/shards", refresh=True))
    assert keys == ["README.md", "build.json", "manifest.json", "rejects.jsonl", "shard-000000.tar",
                    "shard-000001.tar", "shard-000002.tar", "stats"]
    for tar in sorted(local_build.glob("shard-*.tar")):
        assert fs.cat_file(f"{BUCKET}/shards/{tar.name}") == tar.read_bytes(), tar.name
    remote = json.loads(fs.cat_file(f"{BUCKET}/shards/manifest.json"))
    local = json.loads((local_build / "manifest.json").read_text())
    assert remote["content_sha256"] == local["content_sha256"] and remote["shards"] == local["shards"]
    assert "storage_options" not in remote["args"]
    assert b"testing" not in fs.cat_file(f"{BUCKET}/shards/stats/inputs.json")  # credentials are never written
    assert not [k for k in fs.find(f"{BUCKET}/shards") if k.endswith(".tmp")]


def test_rerun_on_s3_resumes_and_skips_complete_shards(s3, s3_build, photos_dir):
    fs = _fs(s3)
    fs.rm_file(f"{BUCKET}/shards/stats/shard-000001.json")  # as if the run died before this marker
    r = build(quick_config(s3_build, photos_dir, storage_options=s3))
    assert (r.shards_built, r.shards_skipped) == (1, 2)


def test_shards_are_published_whole_and_the_manifest_last(s3, photos_dir, monkeypatch):
    """Every write goes to a temporary key first; the manifest appears after every shard and marker."""
    from pirs.degrade import fs as pfs

    events: list[tuple[str, str]] = []
    real_mv, real_pipe = s3fs.S3FileSystem.mv, s3fs.S3FileSystem.pipe_file

    def mv(self, a, b, **kw):
        events.append(("publish", b.rsplit("/", 1)[-1]))
        assert not self.exists(b) or b.endswith((".json", ".jsonl", ".md")), f"{b} visible before it was complete"
        return real_mv(self, a, b, **kw)

    def pipe_file(self, path, data, **kw):
        assert path.endswith(".tmp"), f"{path} written in place"
        return real_pipe(self, path, data, **kw)

    monkeypatch.setattr(s3fs.S3FileSystem, "mv", mv)
    monkeypatch.setattr(s3fs.S3FileSystem, "pipe_file", pipe_file)
    url = f"s3://{BUCKET}/atomic"
    build(quick_config(url, photos_dir, storage_options=s3))
    names = [n for _, n in events]
    assert names[-1] == "manifest.json"
    assert {"shard-000000.tar", "shard-000001.tar", "shard-000002.tar"} <= set(names)
    assert all(names.index(f"shard-00000{i}.tar") < names.index(f"shard-00000{i}.json") for i in range(3))
    assert pfs.is_url(url)


def test_read_back_from_s3_caption_and_bench(tmp_path, s3, s3_build, local_build):
    """`caption run` streams s3 shards; `bench evaluate` scores against an s3 reference; same as from local."""
    from pirs.benchmark.baselines import write_baseline
    from pirs.benchmark.evaluate import EvalConfig, evaluate
    from pirs.captioning.run import CaptionConfig, run

    a = run(CaptionConfig(shards=s3_build, out=str(tmp_path / "cap-s3"), progress=False, storage_options=s3))
    b = run(CaptionConfig(shards=str(local_build), out=str(tmp_path / "cap-local"), progress=False))
    assert a.samples == 12
    for p in sorted((tmp_path / "cap-local").glob("shard-*.tar")):
        assert (tmp_path / "cap-s3" / p.name).read_bytes() == p.read_bytes()
    assert a.manifest["content_sha256"] == b.manifest["content_sha256"]

    preds = write_baseline("bicubic", local_build, tmp_path / "bicubic", progress=False)
    res = {}
    for name, ref in (("s3", s3_build), ("local", str(local_build))):
        out = tmp_path / name / "r.json"
        evaluate(EvalConfig(str(preds), ref, "psnr,ssim", str(out), device="cpu", progress=False, cache_dir=None,
                            storage_options=s3 if name == "s3" else None))
        res[name] = json.loads(out.read_text())
    assert res["s3"]["metrics"] == res["local"]["metrics"]
    assert res["s3"]["test_set"]["fingerprint"] == res["local"]["test_set"]["fingerprint"]
    assert res["s3"]["test_set"]["path"] == s3_build


def test_cli_build_to_s3_with_storage_options(tmp_path, s3, photos_dir, local_build):
    url = f"s3://{BUCKET}/cli"
    r = subprocess.run([sys.executable, "-m", "pirs.degrade.cli", "build", "--pipeline", "realesrgan", "--input",
                        str(photos_dir), "--out", url, "--num-samples", "12", "--crop-size", "32", "--shard-size", "5",
                        "--quiet", "--storage-options", json.dumps(s3)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    fs = _fs(s3)
    assert fs.cat_file(f"{BUCKET}/cli/shard-000002.tar") == (local_build / "shard-000002.tar").read_bytes()


def test_datasets_loads_shards_from_s3(tmp_path, s3, s3_build, local_build):
    """`datasets.load_dataset("webdataset", data_files=s3://...)` through fsspec storage options (not streaming)."""
    import datasets

    files = [f"{s3_build}/shard-00000{i}.tar" for i in range(3)]
    # (streaming=True fails inside datasets/s3fs: datasets passes block_size on to aiobotocore's session)
    ds = datasets.load_dataset("webdataset", data_files={"train": files}, split="train",
                               storage_options=copy.deepcopy(s3),  # datasets adds its own keys to the dict
                               cache_dir=str(tmp_path / "hf"))
    rows = list(ds)
    assert len(rows) == 12
    assert sorted(r["__key__"] for r in rows) == [f"{i:08d}" for i in range(12)]
    assert all(r["hq.png"].size == (32, 32) for r in rows)


def test_build_reads_its_photos_from_s3(tmp_path, s3, photos_dir, local_build):
    """`--input s3://...` (a folder of photos, a .txt list, a shard folder) gives the bytes of a local input."""
    fs = _fs(s3)
    for p in sorted(photos_dir.glob("*.png")):
        fs.pipe_file(f"{BUCKET}/photos/{p.name}", p.read_bytes())
    fs.pipe_file(f"{BUCKET}/photos/notes/readme.txt", b"not an image")
    fs.pipe_file(f"{BUCKET}/photos/.hidden.png", b"skipped: hidden")
    r = build(quick_config(tmp_path / "a", None, input=f"s3://{BUCKET}/photos/", workers=2, storage_options=s3))
    assert r.inputs_usable == 4 and r.inputs_rejected == 1  # notes/readme.txt: not an image
    reject = json.loads((tmp_path / "a" / "rejects.jsonl").read_text().splitlines()[0])
    assert reject["path"] == "notes/readme.txt" and "image" in reject["reason"]
    assert _tars(tmp_path / "a") == _tars(local_build)

    names = sorted(p.name for p in photos_dir.glob("*.png"))
    fs.pipe_file(f"{BUCKET}/lists/photos.txt", ("\n".join(f"../photos/{n}" for n in names[:2]) + "\nmissing.png\n")
                 .encode())
    r = build(quick_config(tmp_path / "b", None, input=f"s3://{BUCKET}/lists/photos.txt", storage_options=s3))
    assert r.inputs_usable == 2 and r.inputs_rejected == 1
    assert {s["source_path"] for s in _records(tmp_path / "b")} <= {f"../photos/{n}" for n in names[:2]}

    # a pirs shard folder on S3 as input: its hq images are the sources
    r = build(quick_config(tmp_path / "c", None, input=f"s3://{BUCKET}/shards", storage_options=s3))
    assert r.inputs_usable == 12 and all("#" in s["source_path"] for s in _records(tmp_path / "c"))


def _tars(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("shard-*.tar"))}


def _records(folder: Path) -> list[dict]:
    from pirs.degrade.shards import iter_records, shard_paths

    return [rec for shard in shard_paths(folder) for _, rec, _ in iter_records(shard)]


def test_caption_run_writes_to_s3_and_resumes(tmp_path, s3, s3_build, local_build):
    """`caption run --out s3://...`: the local run's bytes, the manifest last, a re-run skips every shard."""
    from pirs.captioning.run import CaptionConfig, run

    url = f"s3://{BUCKET}/captioned"
    a = run(CaptionConfig(shards=s3_build, out=url, progress=False, storage_options=s3))
    b = run(CaptionConfig(shards=str(local_build), out=str(tmp_path / "local"), progress=False))
    assert a.out == url and a.captions == b.captions > 0
    fs = _fs(s3)
    for p in sorted((tmp_path / "local").glob("shard-*.tar")):
        assert fs.cat_file(f"{BUCKET}/captioned/{p.name}") == p.read_bytes(), p.name
    remote = json.loads(fs.cat_file(f"{BUCKET}/captioned/manifest.json"))
    assert remote["content_sha256"] == b.manifest["content_sha256"]
    assert not [k for k in fs.find(f"{BUCKET}/captioned") if k.endswith(".tmp")]
    again = run(CaptionConfig(shards=s3_build, out=url, progress=False, storage_options=s3))
    assert (again.shards_done, again.shards_skipped) == (0, 3)


def test_bench_reads_predictions_from_and_writes_scores_to_s3(tmp_path, s3, s3_build, local_build):
    from pirs.benchmark.baselines import write_baseline
    from pirs.benchmark.evaluate import EvalConfig, evaluate

    preds = write_baseline("bicubic", local_build, tmp_path / "bicubic", progress=False)
    fs = _fs(s3)
    for p in sorted(preds.iterdir()):
        fs.pipe_file(f"{BUCKET}/preds/bicubic/{p.name}", p.read_bytes())
    local = evaluate(EvalConfig(str(preds), str(local_build), "psnr,ssim", str(tmp_path / "r.json"), device="cpu",
                                progress=False, cache_dir=None))
    remote = evaluate(EvalConfig(f"s3://{BUCKET}/preds/bicubic", s3_build, "psnr,ssim",
                                 f"s3://{BUCKET}/results/bicubic.json", device="cpu", progress=False,
                                 cache_dir=None, storage_options=s3))
    assert remote["metrics"] == local["metrics"] and remote["method"] == local["method"]
    assert remote["predictions"]["fingerprint"] == local["predictions"]["fingerprint"]
    written = json.loads(fs.cat_file(f"{BUCKET}/results/bicubic.json"))
    assert written["metrics"] == local["metrics"] and written["per_image"] == "bicubic.csv"
    assert fs.cat_file(f"{BUCKET}/results/bicubic.csv") == (tmp_path / "r.csv").read_bytes()


def test_ingest_writes_to_s3(tmp_path, s3):
    from conftest import lol_tree
    from pirs.degrade.ingest import IngestConfig, ingest

    root = lol_tree(tmp_path / "lol", 3)
    args = {"layout": "lol", "input": str(root), "shard_size": 2, "progress": False}
    a = ingest(IngestConfig(out=str(tmp_path / "local"), **args))
    b = ingest(IngestConfig(out=f"s3://{BUCKET}/lol", storage_options=s3, **args))
    fs = _fs(s3)
    assert b.shards_built == 2 and b.manifest["content_sha256"] == a.manifest["content_sha256"]
    for p in sorted((tmp_path / "local").glob("shard-*.tar")):
        assert fs.cat_file(f"{BUCKET}/lol/{p.name}") == p.read_bytes()


def test_cli_readers_take_urls_and_a_missing_bucket_is_named(tmp_path, s3, s3_build, capsys):
    """`degrade replay/show/preview` read shards on S3; a build into a missing bucket fails and creates nothing."""
    from pirs.degrade.build import BuildError
    from pirs.degrade.cli import main

    opts = ["--storage-options", json.dumps(s3)]
    assert main(["replay", s3_build, "00000003", *opts]) == 0
    assert "identical" in capsys.readouterr().out
    assert main(["show", s3_build, "00000003", *opts]) == 0
    assert '"key": "00000003"' in capsys.readouterr().out
    assert main(["preview", s3_build, "--out", str(tmp_path / "p.png"), "--count", "2", *opts]) == 0
    assert (tmp_path / "p.png").stat().st_size > 0
    with pytest.raises(BuildError, match="bucket 'no-such-bucket' does not exist"):
        build(quick_config("s3://no-such-bucket/x", None, storage_options=s3))
    assert "no-such-bucket" not in [b.rstrip("/") for b in _fs(s3).ls("", refresh=True)]


def test_unreachable_store_is_one_line_and_exit_2(tmp_path, photos_dir, capsys):
    from pirs.degrade.cli import main

    dead = json.dumps({"key": "k", "secret": "s", "client_kwargs": {"endpoint_url": "http://127.0.0.1:9",
                                                                    "region_name": "us-east-1"},
                       "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 2}})
    base = ["build", "--pipeline", "realesrgan", "--num-samples", "4", "--crop-size", "32", "--quiet",
            "--storage-options", dead]
    assert main(base + ["--input", str(photos_dir), "--out", f"s3://{BUCKET}/dead"]) == 2
    assert "cannot reach the object store" in capsys.readouterr().err
    assert main(base + ["--input", f"s3://{BUCKET}/photos", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("degrade build: error: object storage:") and "Traceback" not in err
    assert not (tmp_path / "o" / "manifest.json").exists()


def test_restore_reads_training_shards_from_s3(tmp_path, s3, s3_build, local_build):
    """The training loader reads members by ranged requests: the same batches as from a local folder."""
    import torch

    from pirs.degrade.fs import set_storage_options
    from pirs.models.cli import main
    from pirs.models.data import DataOptions, ShardPairs

    set_storage_options(s3)
    try:
        remote = ShardPairs(s3_build, DataOptions(seed=3, resolution=32))
        local = ShardPairs(str(local_build), DataOptions(seed=3, resolution=32))
        assert len(remote) == len(local) == 12
        for i in (0, 5):
            a, b = remote.batch(i, 2), local.batch(i, 2)
            assert a["key"] == b["key"] and torch.equal(a["lq"], b["lq"]) and torch.equal(a["hq"], b["hq"])
    finally:
        set_storage_options(None)
    assert main(["train", "--method", "spire", "--data", s3_build, "--out", str(tmp_path / "run"), "--max-steps",
                 "1", "--batch-size", "2", "--quiet", "--storage-options", json.dumps(s3)]) == 0
    assert (tmp_path / "run" / "log.jsonl").is_file()


def test_one_writer_per_output_on_s3(s3, photos_dir, capsys):
    """A lease object (conditional put) is the lock on an s3:// --out: a second writer is refused naming the
    holder; a lease of another host not renewed for longer than the lease time is stale and taken over."""
    from pirs.degrade.build import BuildError
    from pirs.degrade.fs import Folder
    from pirs.degrade.lock import LOCK_NAME, output_lock

    url = f"s3://{BUCKET}/locked"
    fs = _fs(s3)
    with output_lock(Folder(url, s3), "caption run"):
        assert json.loads(fs.cat_file(f"{BUCKET}/locked/{LOCK_NAME}"))["command"] == "caption run"
        with pytest.raises(BuildError, match=r"being written by caption run \(pid \d+ on host"):
            build(quick_config(url, photos_dir, storage_options=s3))
    assert not fs.exists(f"{BUCKET}/locked/{LOCK_NAME}")
    stale = {"host": "elsewhere", "pid": 1, "command": "degrade build", "started": "2020-01-01", "renewed": 0}
    fs.pipe_file(f"{BUCKET}/locked/{LOCK_NAME}", json.dumps(stale).encode())
    r = build(quick_config(url, photos_dir, storage_options=s3))
    assert r.samples == 12 and not fs.exists(f"{BUCKET}/locked/{LOCK_NAME}")
    assert "took over a stale lease of degrade build (pid 1 on host elsewhere" in capsys.readouterr().err
