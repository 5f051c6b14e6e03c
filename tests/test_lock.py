"""One writer per output (issue 18): a second writer into the same --out exits 2 naming the holder.

The concurrent builds are real ``degrade build`` processes: the first is stopped (SIGSTOP)
while it holds the lock, so the overlap is certain rather than a matter of timing, then let
go; its output must be whole and its own (every record of its seed, sha256s that match).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import synthetic_photo, write_png
from pirs.degrade.lock import LOCK_NAME, LockHeld, output_lock
from pirs.degrade.shards import iter_records, shard_paths


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lockphotos")
    for i in range(3):
        write_png(root / f"p{i}.png", synthetic_photo(96, 96, i))
    return root


def degrade(*args, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pirs.degrade.cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), **kw)


def build_args(photos: Path, out: Path, seed: int, n: int = 120) -> list:
    return ["build", "--pipeline", "realesrgan", "--input", photos, "--out", out, "--num-samples", n,
            "--crop-size", 64, "--shard-size", 30, "--seed", seed, "--quiet"]


def start_and_stop_holding(photos: Path, out: Path, seed: int) -> subprocess.Popen:
    """Start a build and stop it (SIGSTOP) as soon as it holds the lock on ``out``."""
    p = degrade(*build_args(photos, out, seed))
    lock = out / LOCK_NAME
    deadline = time.monotonic() + 60
    while not (lock.is_file() and lock.stat().st_size):
        assert p.poll() is None, f"the first build ended before it was seen holding the lock: {p.communicate()}"
        assert time.monotonic() < deadline, "the first build never took the lock"
        time.sleep(0.002)
    os.kill(p.pid, signal.SIGSTOP)
    return p


def check_whole(out: Path, seed: int, n: int = 120) -> None:
    """The folder holds exactly one build of ``seed``: every record, shards matching the manifest."""
    m = json.loads((out / "manifest.json").read_text())
    assert m["args"]["seed"] == seed and m["samples"] == n
    seeds = [rec["seed"] for s in shard_paths(out) for _, rec, _ in iter_records(s)]  # checks the manifest too
    assert seeds == [seed] * n
    assert not (out / LOCK_NAME).exists() and not list(out.glob("*.tmp"))


@pytest.mark.parametrize("second_seed", [0, 1], ids=["same-seed", "other-seed-overwrite"])
def test_two_concurrent_builds(second_seed, photos, tmp_path):
    out = tmp_path / "out"
    first = start_and_stop_holding(photos, out, seed=0)
    try:
        extra = ["--overwrite"] if second_seed else []
        second = degrade(*build_args(photos, out, second_seed), *extra)
        _, err = second.communicate(timeout=120)
        assert second.returncode == 2, err
        lines = [x for x in err.splitlines() if x.strip()]
        assert len(lines) == 1 and "Traceback" not in err
        assert f"pid {first.pid}" in err and "degrade build" in err and socket.gethostname() in err
    finally:
        os.kill(first.pid, signal.SIGCONT)
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    check_whole(out, seed=0)


def test_a_killed_writer_leaves_a_stale_lock_that_the_next_run_takes_over(photos, tmp_path):
    out = tmp_path / "out"
    first = start_and_stop_holding(photos, out, seed=0)
    first.kill()  # kill -9 while holding the lock: the lock file stays, naming a process that is gone
    first.communicate()
    assert json.loads((out / LOCK_NAME).read_text())["pid"] == first.pid
    again = degrade(*build_args(photos, out, 0))
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert f"stale lock of degrade build (pid {first.pid}" in err
    check_whole(out, seed=0)


def test_lock_in_process(tmp_path):
    out = tmp_path / "o"
    with output_lock(out, "caption run"):
        info = json.loads((out / LOCK_NAME).read_text())
        assert info["pid"] == os.getpid() and info["command"] == "caption run"
        with pytest.raises(LockHeld, match=r"being written by caption run \(pid \d+ on host"):
            with output_lock(out, "degrade build"):
                pass
    assert not (out / LOCK_NAME).exists()
    with output_lock(out, "degrade build"):  # released: free again
        pass
    f = tmp_path / "results.json"
    with output_lock(f, "bench evaluate", file=True):
        assert (tmp_path / f".results.json{LOCK_NAME}").is_file()
        with pytest.raises(LockHeld, match="bench evaluate"):
            with output_lock(f, "bench evaluate", file=True):
                pass
    assert not list(tmp_path.glob(".*"))


def test_ingest_caption_and_bench_refuse_a_held_output(tmp_path, capsys):
    from test_hostile import png, sample, shard_folder

    from conftest import lol_tree
    from pirs.benchmark.cli import main as bench
    from pirs.captioning.cli import main as caption
    from pirs.degrade.cli import main as degrade_main

    shards = shard_folder(tmp_path / "shards", [sample("a"), sample("b")])
    preds = tmp_path / "preds"
    preds.mkdir()
    for k in ("a", "b"):
        (preds / f"{k}.png").write_bytes(png(seed=4))
    out = tmp_path / "out"
    lol = lol_tree(tmp_path / "lol", 2)
    runs = {
        "degrade ingest": lambda: degrade_main(["ingest", "--layout", "lol", "--input", str(lol), "--out", str(out),
                                                "--quiet"]),
        "caption run": lambda: caption(["run", str(shards), "--out", str(out), "--quiet"]),
        "bench baseline": lambda: bench(["baseline", "identity", "--reference", str(shards), "--out", str(out),
                                         "--quiet"]),
        "bench evaluate": lambda: bench(["evaluate", str(preds), "--reference", str(shards), "--metrics", "psnr",
                                         "--out", str(out / "r.json"), "--no-cache", "--device", "cpu", "--quiet"]),
    }
    for name, run in runs.items():
        file = name == "bench evaluate"
        with output_lock(out / "r.json" if file else out, "degrade build", file=file):
            assert run() == 2, name
        err = capsys.readouterr().err
        assert "being written by degrade build" in err and len(err.strip().splitlines()) == 1, (name, err)
    assert sorted(p.name for p in out.iterdir()) == []  # nothing written by the refused runs
