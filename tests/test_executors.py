"""Executors: local processes and a real local Ray cluster (2 CPUs) give the same bytes; failures retry."""

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
from pirs.degrade.build import BuildError, build
from pirs.degrade.executors import FAULT_ENV, LocalExecutor, TaskFailed

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_cluster():
    """A local 2-CPU Ray cluster for the module; yields its address."""
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 1024 * 1024, log_to_driver=False,
             configure_logging=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def _tars(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("shard-*.tar"))}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, photos_dir) -> Path:
    """The build every executor must reproduce: local, one worker."""
    out = tmp_path_factory.mktemp("ref") / "out"
    build(quick_config(out, photos_dir))
    return out


def test_local_2_workers_and_ray_give_identical_shards(tmp_path, photos_dir, reference, ray_cluster):
    ref = _tars(reference)
    assert len(ref) == 3
    build(quick_config(tmp_path / "local2", photos_dir, workers=2))
    r = build(quick_config(tmp_path / "ray", photos_dir, workers=2, executor="ray"))
    assert _tars(tmp_path / "local2") == ref
    assert _tars(tmp_path / "ray") == ref
    assert r.failures == [] and not (tmp_path / "ray" / "stats" / "failures.jsonl").exists()
    m_ref = json.loads((reference / "manifest.json").read_text())
    assert r.manifest["content_sha256"] == m_ref["content_sha256"]
    assert "executor" not in r.manifest["args"]  # how it ran is not part of what it is


@pytest.mark.parametrize("executor", ["ray", "local"])
def test_worker_killed_mid_task_is_retried(tmp_path, photos_dir, reference, ray_cluster, monkeypatch, executor):
    # the worker process running shard 1 dies (os._exit) on its first attempt
    monkeypatch.setenv(FAULT_ENV, "1:1:exit")
    r = build(quick_config(tmp_path / "o", photos_dir, workers=2, executor=executor))
    assert _tars(tmp_path / "o") == _tars(reference)
    failed = [(f["shard"], f["attempt"]) for f in r.failures]
    lines = (tmp_path / "o" / "stats" / "failures.jsonl").read_text().splitlines()
    assert [(f["shard"], f["attempt"]) for f in map(json.loads, lines)] == failed
    if executor == "ray":  # Ray knows which task's worker died
        assert failed == [(1, 1)] and "died" in r.failures[0]["error"].lower()
    else:  # a dead worker breaks a process pool: every task in flight then counts one failed attempt
        assert (1, 1) in failed and all(a == 1 for _, a in failed)
        assert all("worker process died" in f["error"] for f in r.failures)


def test_retries_exhausted_fail_naming_the_shard(tmp_path, photos_dir, ray_cluster, monkeypatch, capsys):
    from pirs.degrade.cli import main

    monkeypatch.setenv(FAULT_ENV, "2:*:raise")
    with pytest.raises(BuildError, match=r"shard 2 \(2 attempts\).*injected fault in shard 2"):
        build(quick_config(tmp_path / "o", photos_dir, workers=2, executor="ray", max_retries=1))
    fails = [json.loads(x) for x in (tmp_path / "o" / "stats" / "failures.jsonl").read_text().splitlines()]
    assert [(f["shard"], f["attempt"]) for f in fails] == [(2, 1), (2, 2)]
    assert (tmp_path / "o" / "shard-000000.tar").is_file()  # the other shards were finished
    assert not (tmp_path / "o" / "manifest.json").exists()
    code = main(["build", "--pipeline", "realesrgan", "--input", str(photos_dir), "--out", str(tmp_path / "c"),
                 "--num-samples", "12", "--crop-size", "32", "--shard-size", "5", "--quiet", "--max-retries", "0"])
    assert code != 0
    assert "shard 2 (1 attempts): RuntimeError: injected fault in shard 2, attempt 1" in capsys.readouterr().err


def test_executor_reports_every_failed_attempt():
    ex = LocalExecutor(1, max_retries=2)
    ex.faults = {0: ("*", "raise"), 1: ("1", "raise")}
    with pytest.raises(TaskFailed) as e:
        ex.map_shards(_square, [0, 1, 2], None)
    assert e.value.failed == [0]
    assert [(f["shard"], f["attempt"]) for f in e.value.failures] == [(0, 1), (1, 1), (0, 2), (0, 3)]


def _square(state, i: int) -> dict:
    return {"value": i * i}


def test_interrupted_ray_run_resumes(tmp_path, photos_dir, ray_cluster):
    """The driver of a Ray build is killed; the same command resumes and gives the bytes of an uninterrupted build."""
    out, n = tmp_path / "out", 48
    cmd = [sys.executable, "-m", "pirs.degrade.cli", "build", "--pipeline", "realesrgan", "--input",
           str(photos_dir), "--out", str(out), "--num-samples", str(n), "--crop-size", "64", "--shard-size", "3",
           "--quiet", "--workers", "2", "--executor", "ray", "--ray-address", ray_cluster]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((out / "stats").glob("shard-*.json"))) < 2 and proc.poll() is None:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    done_before = {p.name for p in (out / "stats").glob("shard-*.json")}
    assert 2 <= len(done_before) < n // 3, "the build finished before it could be interrupted"
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.tar")
              if (out / "stats" / f"{p.stem}.json").exists()}
    time.sleep(1.0)  # Ray ends the dead driver's tasks
    r = build(quick_config(out, photos_dir, num_samples=n, crop_size=64, shard_size=3, workers=2, executor="ray"))
    assert r.shards_skipped >= len(stamps) and r.shards_built == n // 3 - r.shards_skipped
    for name, t in stamps.items():
        assert (out / name).stat().st_mtime_ns == t  # complete shards were not redone
    assert not list(out.glob("*.tmp"))
    ref = tmp_path / "ref"
    build(quick_config(ref, photos_dir, num_samples=n, crop_size=64, shard_size=3))
    assert _tars(out) == _tars(ref)


def test_caption_run_on_a_ray_actor_pool_matches_local(tmp_path, reference, ray_cluster):
    """Tiny random Qwen2-VL: each of 2 actors loads it once; the captioned shards equal a local run's."""
    from pirs.captioning.run import CaptionConfig, run
    from pirs.captioning.tiny import make_tiny_qwen2_vl

    model = make_tiny_qwen2_vl(tmp_path / "qwen2-vl", seed=0)

    def cfg(out: Path, **kw) -> CaptionConfig:
        return CaptionConfig(shards=str(reference), out=str(out), backend="transformers", model=str(model),
                             instructions=["low"], batch_size=4, max_new_tokens=6, device="cpu", dtype="float32",
                             progress=False, **kw)

    local = run(cfg(tmp_path / "local"))
    on_ray = run(cfg(tmp_path / "ray", executor="ray", workers=2))
    assert on_ray.shards_done == 3 and on_ray.captions == local.captions == 12
    assert _tars(tmp_path / "ray") == _tars(tmp_path / "local")
    assert on_ray.manifest["content_sha256"] == local.manifest["content_sha256"]


def test_bench_evaluate_on_ray_matches_local(tmp_path, reference, ray_cluster):
    from pirs.benchmark.baselines import write_baseline
    from pirs.benchmark.evaluate import EvalConfig, evaluate

    preds = write_baseline("bicubic", reference, tmp_path / "bicubic", progress=False)
    runs = {}
    for ex in ("local", "ray"):
        out = tmp_path / ex / "bicubic.json"
        evaluate(EvalConfig(str(preds), str(reference), "psnr,ssim", str(out), device="cpu", progress=False,
                            cache_dir=None, executor=ex))
        runs[ex] = json.loads(out.read_text())
        assert out.with_suffix(".csv").is_file()
    for r in runs.values():  # the timing fields, documented as the only ones that may differ
        r.pop("date"), r.pop("seconds")
    assert runs["ray"] == runs["local"]
    assert runs["ray"]["metrics"]["psnr"]["value"] > 10
    assert (tmp_path / "ray" / "bicubic.csv").read_bytes() == (tmp_path / "local" / "bicubic.csv").read_bytes()


def test_ingest_on_ray_matches_local(tmp_path, ray_cluster):
    from conftest import lol_tree
    from pirs.degrade.ingest import IngestConfig, ingest

    root = lol_tree(tmp_path / "lol", 5)
    args = {"layout": "lol", "input": str(root), "then": "noise-range", "shard_size": 2, "progress": False}
    a = ingest(IngestConfig(out=str(tmp_path / "local"), **args))
    b = ingest(IngestConfig(out=str(tmp_path / "ray"), workers=2, executor="ray", **args))
    assert b.shards_built == 3 and _tars(tmp_path / "ray") == _tars(tmp_path / "local")
    assert a.manifest["content_sha256"] == b.manifest["content_sha256"]


def test_caption_run_on_local_worker_processes_matches_one_process(tmp_path, reference):
    """`caption run --workers 2` (two spawned processes, each building the backend once) = one process."""
    from pirs.captioning.run import CaptionConfig, run

    one = run(CaptionConfig(shards=str(reference), out=str(tmp_path / "one"), progress=False))
    two = run(CaptionConfig(shards=str(reference), out=str(tmp_path / "two"), progress=False, workers=2))
    assert two.shards_done == 3 and two.captions == one.captions > 0
    assert _tars(tmp_path / "two") == _tars(tmp_path / "one")
    assert two.manifest["content_sha256"] == one.manifest["content_sha256"]


def test_local_paths_on_a_multi_node_cluster_are_warned_about(capsys, ray_cluster):
    from pirs.degrade.executors import RayExecutor, warn_local_paths

    ex = RayExecutor(2)
    assert ex.nodes == 1  # the local test cluster: nothing to warn about
    warn_local_paths(ex, "/data/out", "s3://b/in")
    assert capsys.readouterr().err == ""
    ex.nodes = 3  # as ray.nodes() reports on a cluster of three machines
    warn_local_paths(ex, "/data/out", "s3://b/in", None)
    err = capsys.readouterr().err
    assert "3 nodes" in err and "/data/out" in err and "s3://b/in" not in err


def _load_model(state: str) -> dict:
    """Stands for loading a captioning model: records which process did it."""
    with open(state, "a") as f:
        f.write(f"{os.getpid()}\n")
    return {"pid": os.getpid()}


def _use_model(model: dict, i: int) -> dict:
    return {"index": i, "pid": model["pid"]}


@pytest.mark.parametrize("executor", ["ray", "local"])
def test_setup_runs_once_per_worker(tmp_path, ray_cluster, executor):
    """`setup` (the model load) runs once per Ray actor / worker process, not once per task."""
    from ray import cloudpickle

    from pirs.degrade.executors import make_executor

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray workers do not import the tests
    log = tmp_path / "loads.txt"
    with make_executor(executor, 2) as ex:
        report = ex.map_shards(_use_model, range(8), str(log), setup=_load_model)
    loads = log.read_text().split()
    assert sorted(report.results) == list(range(8))
    assert len(loads) == len(set(loads)) <= 2  # at most one load per worker
    assert {r["pid"] for r in report.results.values()} == {int(p) for p in loads}


def test_bench_input_errors_on_ray_are_raised_once_not_retried(tmp_path, reference, ray_cluster):
    from pirs.benchmark.evaluate import EvalConfig, evaluate
    from pirs.benchmark.pairing import PairingError, ReferenceError

    with pytest.raises(PairingError, match="no such folder"):
        evaluate(EvalConfig(str(tmp_path / "nope"), str(reference), "psnr", str(tmp_path / "r.json"), device="cpu",
                            progress=False, cache_dir=None, executor="ray"))
    with pytest.raises(ReferenceError, match="no such folder or file"):
        evaluate(EvalConfig(str(reference), str(tmp_path / "no-ref"), "psnr", str(tmp_path / "r.json"), device="cpu",
                            progress=False, cache_dir=None, executor="ray"))
    assert not (tmp_path / "r.json").exists()


def test_an_unreachable_ray_address_fails_fast():
    from pirs.degrade.executors import ExecutorError, _check_reachable

    t0 = time.perf_counter()
    with pytest.raises(ExecutorError, match="cannot reach the Ray cluster at 127.0.0.1:9"):
        _check_reachable("127.0.0.1:9")
    assert time.perf_counter() - t0 < 15
    with pytest.raises(ExecutorError, match="want auto, HOST:PORT"):
        _check_reachable("nonsense")


def test_relative_paths_reach_ray_workers_in_other_working_folders(tmp_path, photos_dir, reference, ray_cluster,
                                                                   monkeypatch):
    """Ray workers keep the working folder they started in: relative paths must not be resolved there."""
    from pirs.benchmark.baselines import write_baseline
    from pirs.benchmark.evaluate import EvalConfig, evaluate
    from pirs.captioning.run import CaptionConfig, run

    before = set(Path.cwd().iterdir())
    monkeypatch.chdir(tmp_path)  # after the cluster's workers started elsewhere
    build(quick_config("rel", photos_dir, workers=2, executor="ray"))
    assert _tars(tmp_path / "rel") == _tars(reference)
    run(CaptionConfig(shards="rel", out="cap", progress=False, executor="ray", workers=2))
    assert len(_tars(tmp_path / "cap")) == 3
    write_baseline("bicubic", "rel", "bic", progress=False)
    evaluate(EvalConfig("bic", "rel", "psnr", "res/bic.json", device="cpu", progress=False, cache_dir=None,
                        executor="ray"))
    assert (tmp_path / "res" / "bic.json").is_file() and (tmp_path / "res" / "bic.csv").is_file()
    monkeypatch.undo()
    assert set(Path.cwd().iterdir()) == before  # nothing was written where the workers started


def test_a_distributed_caption_run_never_loads_the_model_in_the_driver(tmp_path, reference, ray_cluster,
                                                                       monkeypatch):
    """The driver only describes the backend (on a worker, where device and dtype are resolved)."""
    from pirs.captioning.run import CaptionConfig, run
    from pirs.captioning.tiny import make_tiny_llava
    from pirs.captioning.vlm import TransformersBackend

    model = make_tiny_llava(tmp_path / "llava", seed=0)
    args = {"model": str(model), "batch_size": 4, "max_new_tokens": 6, "device": "cpu", "dtype": "float32"}
    assert TransformersBackend.describe(**args) == TransformersBackend(**args).settings  # what workers check

    def no_load(*a, **k):
        raise AssertionError("the driver loaded the model")

    monkeypatch.setattr(TransformersBackend, "_load", no_load)  # this process only: workers are other processes
    for ex, out in (("ray", "ray"), ("local", "local")):
        r = run(CaptionConfig(shards=str(reference), out=str(tmp_path / out), backend="llava", model=str(model),
                              instructions=["low"], batch_size=4, max_new_tokens=6, device="cpu", dtype="float32",
                              progress=False, executor=ex, workers=2))
        assert r.captions == 12
    assert _tars(tmp_path / "ray") == _tars(tmp_path / "local")
