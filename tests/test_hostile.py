"""Hostile input (issue 18): a corpus made here, run through every command that reads that kind of input.

Each case must end in one line on stderr and a non-zero exit (2 for bad input), never a
traceback, never a file outside ``--out``, within 30 s (for the subprocesses, 30 s of CPU:
the 2 cores are shared with other jobs). The cases that attack memory or time (YAML
aliases, a 100 MB caption, a PNG decompression bomb) run in a subprocess under
``RLIMIT_AS``: the address space that importing torch, OpenCV, numpy and Pillow takes on
this machine (measured once, ``_import_vm``, about 3.3 GiB here) plus 1 GiB, so that the
input itself can never cost a command more than 1 GiB. The rest run in-process through
each CLI's ``main`` (fast; ``run_cli`` is what turns errors into one line there too).
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import resource
import subprocess
import sys
import tarfile
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from pirs.degrade.schema import empty_record

LIMIT_SECONDS = 30
GIB = 1 << 30


# ---------------------------------------------------------------- making the corpus


def png(h: int = 16, w: int = 16, seed: int = 0) -> bytes:
    img = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".png", img)
    assert ok
    return buf.tobytes()


@functools.cache
def png_bomb(side: int = 16000) -> bytes:
    """A valid greyscale PNG of ``side``² pixels (256 M for 16000), a few hundred kB: all zeros."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    z = zlib.compressobj(9)
    row = bytes(side + 1)  # filter byte 0, then the row
    body = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    ihdr = side.to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def record(key: str, **kw) -> dict:
    rec = empty_record()
    rec.update(key=key, hq_size=[16, 16], lq_size=[16, 16], scale=1, ops="[]", recipe="hostile", branch="hostile",
               restoration_prompt="Remove all degradation", source_path=f"{key}.png")
    rec.update(kw)
    return rec


def sample(key: str, rec: dict | None = None, **members: bytes) -> list[tuple[str, bytes]]:
    """The members of one sample: hq.png, lq.png and json unless given (None drops one)."""
    m = {"hq.png": png(seed=1), "lq.png": png(seed=2),
         "json": json.dumps(rec if rec is not None else record(key), sort_keys=True).encode()}
    m.update({k.replace("_", "."): v for k, v in members.items()})
    return [(f"{key}.{ext}", data) for ext, data in sorted(m.items()) if data is not None]


def write_tar(path: Path, entries: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tf:
        for name, data in entries:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    return path


def shard_folder(root: Path, samples: list[list[tuple[str, bytes]]], manifest: object = True) -> Path:
    """A folder with one shard of ``samples`` and (``manifest`` True) a true manifest.json; a dict or
    bytes ``manifest`` is written as given."""
    root.mkdir(parents=True, exist_ok=True)
    shard = write_tar(root / "shard-000000.tar", [e for s in samples for e in s])
    if manifest is True:
        data = shard.read_bytes()
        entry = {"name": shard.name, "samples": len(samples), "bytes": len(data),
                 "sha256": hashlib.sha256(data).hexdigest()}
        manifest = {"samples": len(samples), "shards": [entry], "content_sha256": ""}
    if isinstance(manifest, dict | list):
        manifest = json.dumps(manifest).encode()
    if manifest:
        (root / "manifest.json").write_bytes(manifest)
    return root


def deep_json(n: int = 100_000) -> bytes:
    return b"[" * n + b"]" * n


def true_manifest(root: Path) -> dict:
    shard = root / "shard-000000.tar"
    data = shard.read_bytes()
    return {"samples": 2, "shards": [{"name": shard.name, "samples": 2, "bytes": len(data),
                                      "sha256": hashlib.sha256(data).hexdigest()}]}


def make_shard_cases(base: Path) -> dict[str, Path]:
    """Hostile shard folders by name (each holds what its name says, the rest valid)."""
    ok = [sample("a"), sample("b")]
    cases: dict[str, Path] = {}

    def add(name, samples, manifest=True):
        cases[name] = shard_folder(base / name, samples, manifest)

    add("key-repeated-later", [sample("a"), sample("b"), sample("a")])
    add("record-key-differs", [sample("a", record("zzz")), sample("b")])
    add("key-with-newline", [sample("a\nb", record("a\nb")), sample("b")])
    add("key-with-control-char", [sample("a\x1bb", record("a\x1bb")), sample("b")])
    add("json-nested-100k", [sample("a", json=deep_json()), sample("b")])
    add("json-not-an-object", [sample("a", json=b"[1, 2]"), sample("b")])
    add("json-not-utf8", [sample("a", json=b'{"key": "\xff\xfe"}'), sample("b")])
    add("ops-not-json", [sample("a", record("a", ops="[{not json")), sample("b")])
    add("ops-nested-deep", [sample("a", record("a", ops="[" * 5000 + "]" * 5000)), sample("b")])
    add("caption-over-text-cap", [sample("a", record("a", caption_high="x" * 200_000)), sample("b")])
    add("no-lq-png", [sample("a", lq_png=None), sample("b")])
    add("garbage-png", [sample("a", lq_png=b"\x89PNG\r\n\x1a\n" + os.urandom(200)), sample("b")])
    add("manifest-is-a-list", ok, manifest=b"[]")
    add("manifest-nested-100k", ok, manifest=deep_json())
    add("manifest-not-json", ok, manifest=b"{oops")
    cases["tmp-ok"] = shard_folder(base / "tmp-ok", ok, manifest=False)  # valid: the control
    m = true_manifest(cases["tmp-ok"])
    add("manifest-wrong-count", ok, manifest=dict(m, shards=[dict(m["shards"][0], samples=5)], samples=5))
    add("manifest-wrong-sha256", ok, manifest=dict(m, shards=[dict(m["shards"][0], sha256="0" * 64)]))
    add("manifest-wrong-bytes", ok, manifest=dict(m, shards=[dict(m["shards"][0], bytes=12)]))
    add("manifest-total-wrong", ok, manifest=dict(m, samples=7))
    add("shard-not-in-manifest", ok, manifest=dict(m, shards=[dict(m["shards"][0], name="shard-000001.tar")]))
    return cases


# ---------------------------------------------------------------- running a command


def snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def check_result(code: int, err: str, seconds: float, case: str) -> None:
    """Exit 2, one ``PROG: error: ...`` line, no traceback, in time. (Other lines may be a report's
    indented details, as `bench evaluate` lists pairing problems, or a library's import-time notice.)"""
    errors = [x for x in err.splitlines() if ": error:" in x or "internal error" in x]
    assert code == 2, f"{case}: exit {code}, stderr {err[-2000:]!r}"
    assert "Traceback" not in err, f"{case}: traceback\n{err}"
    assert len(errors) == 1, f"{case}: {len(errors)} error lines on stderr: {err[-2000:]!r}"
    assert seconds < LIMIT_SECONDS, f"{case}: {seconds:.1f} s"


def run_inprocess(capsys, main, argv: list[str], root: Path, out: Path | None, case: str) -> str:
    before = snapshot(root)
    t0 = time.monotonic()
    code = main([str(a) for a in argv])
    seconds = time.monotonic() - t0
    err = capsys.readouterr().err
    check_result(code, err, seconds, case)
    new = {p for p in snapshot(root) - before if out is None or not (root / p).resolve().is_relative_to(out)}
    assert not new, f"{case}: files written outside --out: {sorted(new)}"
    return err


def _import_vm() -> int:
    """Peak address space (bytes) of a Python that imports what the commands import."""
    code = ("import torch, cv2, numpy, PIL.Image, yaml\n"
            "print([int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmPeak')][0])")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=120)
    return int(r.stdout.strip()) * 1024


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    env.pop("PIRS_DEBUG", None)
    return env


@pytest.fixture(scope="module")
def address_limit() -> int:
    return _import_vm() + GIB


# Runs a CLI module as ``python -m`` would, and writes its peak resident memory (VmHWM, bytes) and
# the CPU seconds it and its children used to $PIRS_TEST_PEAK when it exits.
_WRAPPER = """
import atexit, json, os, resource, runpy, sys
def _peak():
    hwm = [int(x.split()[1]) for x in open('/proc/self/status') if x.startswith('VmHWM')][0]
    cpu = sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                 resource.getrusage(resource.RUSAGE_CHILDREN)))
    with open(os.environ['PIRS_TEST_PEAK'], 'w') as f:
        json.dump({"rss": hwm * 1024, "cpu": cpu}, f)
atexit.register(_peak)
sys.argv = sys.argv[1:]
runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)
"""


def run_limited(argv: list[str], cwd: Path, limit: int, case: str) -> tuple[str, float, int]:
    """Run CLI module ``argv[0]`` with ``argv[1:]`` under RLIMIT_AS = ``limit`` in ``cwd`` (``--out``
    under ``cwd/out``); returns (stderr, seconds, peak resident bytes)."""
    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    peak_file = cwd.parent / f"{cwd.name}.peak"
    before = snapshot(cwd)
    t0 = time.monotonic()
    p = subprocess.Popen([sys.executable, "-c", _WRAPPER, *argv], cwd=cwd, env=dict(_env(), PIRS_TEST_PEAK=str(
        peak_file)), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=cap)
    try:
        _, err = p.communicate(timeout=LIMIT_SECONDS * 3)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        pytest.fail(f"{case}: still running after {LIMIT_SECONDS * 3} s")
    wall = time.monotonic() - t0
    err = err.decode(errors="replace")
    used = json.loads(peak_file.read_text()) if peak_file.is_file() else {"rss": -1, "cpu": wall}
    # The time bound is on CPU seconds: on 2 cores shared with other jobs, wall time measures the machine.
    check_result(p.returncode, err, used["cpu"], case)
    assert wall < 3 * LIMIT_SECONDS, f"{case}: {wall:.1f} s of wall time"
    new = {x for x in snapshot(cwd) - before if not x.startswith("out")}
    assert not new, f"{case}: files written outside --out: {sorted(new)}"
    print(f"\n[hostile] {case}: exit {p.returncode}, {used['cpu']:.1f} s CPU ({wall:.1f} s wall), peak RSS "
          f"{used['rss'] / 2**20:.0f} MiB (address-space limit {limit / 2**30:.2f} GiB)")
    return err, used["cpu"], used["rss"]


# ---------------------------------------------------------------- shards through every reader


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    return make_shard_cases(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def preds(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("preds")
    for k in ("a", "b"):
        (d / f"{k}.png").write_bytes(png(seed=3))
    return d


SHARD_READERS = {
    "degrade show": lambda src, out, preds: ("pirs.degrade.cli", ["show", src, "a"]),
    "degrade replay": lambda src, out, preds: ("pirs.degrade.cli", ["replay", src, "a"]),
    "degrade preview": lambda src, out, preds: ("pirs.degrade.cli", ["preview", src, "--out", out / "p.png"]),
    "caption run": lambda src, out, preds: ("pirs.captioning.cli", ["run", src, "--out", out, "--quiet"]),
    "restore train": lambda src, out, preds: ("pirs.models.cli", ["train", "--method", "spire", "--data", src,
                                                                  "--out", out, "--max-steps", "1", "--batch-size",
                                                                  "1", "--quiet"]),
    "bench evaluate": lambda src, out, preds: ("pirs.benchmark.cli", ["evaluate", preds, "--reference", src,
                                                                      "--metrics", "psnr", "--out", out / "r.json",
                                                                      "--no-cache", "--device", "cpu", "--quiet"]),
    "bench baseline": lambda src, out, preds: ("pirs.benchmark.cli", ["baseline", "identity", "--reference", src,
                                                                      "--out", out, "--quiet"]),
}

# Readers that read only what they need: `show` and `replay` stop at their key, `preview` at
# --count records, and `bench evaluate` against this predictions folder does not decode an
# lq.png; they see a problem only when it lies in what they read.
NOT_READ = {
    ("degrade show", "no-lq-png"), ("degrade show", "garbage-png"),
    ("bench evaluate", "no-lq-png"), ("bench evaluate", "garbage-png"),
    ("caption run", "garbage-png"), ("caption run", "no-lq-png"),  # the template backend reads no pixels
}


def _main(module: str):
    import importlib

    return importlib.import_module(module).main


@pytest.mark.parametrize("reader", sorted(SHARD_READERS))
def test_every_hostile_shard_through_every_reader(reader, corpus, preds, tmp_path, capsys):
    results = {}
    for case, src in sorted(corpus.items()):
        if (reader, case) in NOT_READ or case == "tmp-ok":
            continue
        out = tmp_path / f"out-{case}"
        module, argv = SHARD_READERS[reader](src, out, preds)
        results[case] = run_inprocess(capsys, _main(module), argv, src.parent, out, f"{reader} / {case}")
    assert results


def test_the_readers_accept_the_valid_folder(corpus, preds, tmp_path, capsys):
    """The same folder without the hostile part passes, so the cases above fail for their own reason."""
    ok = corpus["tmp-ok"]
    (ok / "manifest.json").write_text(json.dumps(true_manifest(ok)))
    from pirs.degrade.cli import main as degrade

    assert degrade(["show", str(ok), "a"]) == 0
    assert degrade(["preview", str(ok), "--out", str(tmp_path / "p.png")]) == 0
    from pirs.captioning.cli import main as caption

    assert caption(["run", str(ok), "--out", str(tmp_path / "c"), "--quiet"]) == 0
    capsys.readouterr()


# ---------------------------------------------------------------- bounded memory and time


@pytest.fixture(scope="module")
def bombs(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("bombs")
    big = record("a", caption_high="x" * 100_000_000)  # a 100 MB caption
    return {
        "caption-100MB": shard_folder(base / "caption", [sample("a", big), sample("b")]),
        "png-bomb-lq": shard_folder(base / "bomb", [sample("a", lq_png=png_bomb()), sample("b")]),
    }


LIMITED = [
    ("degrade show", "caption-100MB"), ("degrade preview", "caption-100MB"), ("caption run", "caption-100MB"),
    ("restore train", "caption-100MB"),
    ("degrade replay", "png-bomb-lq"), ("degrade preview", "png-bomb-lq"), ("restore train", "png-bomb-lq"),
]


@pytest.mark.parametrize(("reader", "case"), LIMITED, ids=[f"{r}-{c}" for r, c in LIMITED])
def test_memory_and_time_bombs_in_shards(reader, case, bombs, preds, address_limit, tmp_path):
    src = tmp_path / "in"
    src.symlink_to(bombs[case], target_is_directory=True)
    module, argv = SHARD_READERS[reader](src, tmp_path / "out", preds)
    err, seconds, _ = run_limited([module, *map(str, argv)], tmp_path, address_limit, f"{reader} / {case}")
    assert "limit" in err or "over" in err, err


def test_png_bomb_as_a_prediction(tmp_path, address_limit):
    shard_folder(tmp_path / "ref", [sample("a"), sample("b")])
    pred = tmp_path / "pred"
    pred.mkdir()
    (pred / "a.png").write_bytes(png_bomb())
    (pred / "b.png").write_bytes(png(seed=3))
    argv = ["pirs.benchmark.cli", "evaluate", "pred", "--reference", "ref", "--metrics", "psnr", "--out",
            "out/r.json", "--no-cache", "--device", "cpu", "--quiet"]
    err, _, _ = run_limited(argv, tmp_path, address_limit, "bench evaluate / png bomb prediction")
    assert "a.png" in err and "limit" in err


BILLION_LAUGHS = """name: lol
version: '1'
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
stages: [{op: blur, p: 1, extra: *i}]
"""


@pytest.mark.parametrize("command", ["recipes", "build"])
def test_billion_laughs_recipe(command, tmp_path, address_limit):
    (tmp_path / "lol.yaml").write_text(BILLION_LAUGHS)
    argv = ["pirs.degrade.cli", "recipes", "lol.yaml"] if command == "recipes" else \
        ["pirs.degrade.cli", "build", "--pipeline", "lol.yaml", "--out", "out", "--num-samples", "1", "--quiet"]
    err, seconds, _ = run_limited(argv, tmp_path, address_limit, f"degrade {command} / billion laughs")
    assert "alias" in err and "lol.yaml" in err


# ---------------------------------------------------------------- recipes


HOSTILE_RECIPES = {
    "include-number": "name: x\nversion: '1'\ninclude: 5\n",
    "include-binary": "name: x\nversion: '1'\ninclude: ./bin.yaml\nstages: []\n",
    "op-is-a-list": "name: x\nversion: '1'\nstages:\n  - {op: [blur]}\n",
    "op-unknown-type": "name: x\nversion: '1'\nstages:\n  - {op: {a: 1}}\n",
    "nan-range": "name: x\nversion: '1'\nstages:\n  - {op: noise, sigma: [.nan, 5]}\n",
    "inf-range": "name: x\nversion: '1'\nstages:\n  - {op: noise, sigma: [1, .inf]}\n",
    "nan-probability": "name: x\nversion: '1'\nstages:\n  - {op: noise, p: .nan}\n",
    "stages-a-mapping": "name: x\nversion: '1'\nstages: {op: blur}\n",
    "weights-a-number": "name: x\nversion: '1'\nstages:\n  - {one_of: [[{op: blur}]], weights: 3}\n",
    "recipe-stage-a-list": "name: x\nversion: '1'\nstages:\n  - {recipe: [a]}\n",
    "id-a-list": "name: x\nversion: '1'\nstages:\n  - {op: blur, id: [1]}\n",
    "keys-not-strings": "name: x\nversion: '1'\n1: 2\nstages: []\n",
    "override-of-a-list-id": "name: x\nversion: '1'\ninclude: realesrgan\noverride: {[1]: 2}\n",
    "python-tag": "name: !!python/object/apply:os.system ['true']\nversion: '1'\nstages: []\n",
    "nested-deep": "name: x\nversion: '1'\nstages: " + "[" * 5000 + "]" * 5000 + "\n",
    "params-wrong-shape": "name: x\nversion: '1'\nstages:\n  - {op: blur, sigma: {a: b}}\n",
}


def _write_recipe(tmp_path: Path, name: str) -> Path:
    (tmp_path / "bin.yaml").write_bytes(b"\x00\x01\x02\xff" * 100)
    p = tmp_path / f"{name}.yaml"
    p.write_text(HOSTILE_RECIPES[name])
    return p


@pytest.mark.parametrize("name", sorted(HOSTILE_RECIPES))
def test_hostile_recipes(name, tmp_path, capsys):
    from pirs.degrade.cli import main

    p = _write_recipe(tmp_path, name)
    err = run_inprocess(capsys, main, ["recipes", p], tmp_path, None, f"degrade recipes / {name}")
    assert str(p) in err or "bin.yaml" in err
    run_inprocess(capsys, main, ["build", "--pipeline", p, "--out", tmp_path / "out", "--num-samples", "1",
                                 "--quiet"], tmp_path, tmp_path / "out", f"degrade build / {name}")
    assert not (tmp_path / "out").exists()


def test_non_utf8_and_binary_recipes(tmp_path, capsys):
    from pirs.degrade.cli import main

    (tmp_path / "latin1.yaml").write_bytes("name: caf\xe9\nversion: '1'\nstages: []\n".encode("latin-1"))
    (tmp_path / "binary.yaml").write_bytes(b"\x00\x01\x02\xff" * 100)
    for f in ("latin1.yaml", "binary.yaml"):
        err = run_inprocess(capsys, main, ["recipes", tmp_path / f], tmp_path, None, f"degrade recipes / {f}")
        assert f in err


# ---------------------------------------------------------------- results, outputs, permissions


def test_hostile_results_files(tmp_path, capsys):
    from pirs.benchmark.cli import main as bench
    from pirs.leaderboard.cli import main as leaderboard

    files = {"deep.json": deep_json(), "list.json": b"[]", "nan.json": b'{"metrics": NaN}', "binary.json": b"\xff\x00",
             "empty.json": b"", "huge-number.json": b'{"metrics": 1' + b"0" * 5000 + b"}"}
    for name, data in files.items():
        d = tmp_path / name.split(".")[0]
        d.mkdir()
        (d / name).write_bytes(data)
        run_inprocess(capsys, bench, ["validate", d / name], tmp_path, None, f"bench validate / {name}")
        run_inprocess(capsys, bench, ["compare", d / name, d / name], tmp_path, None, f"bench compare / {name}")
        out = tmp_path / f"site-{name}"
        run_inprocess(capsys, leaderboard, ["render", "--results", d, "--out", out, "--no-plots", "--quiet"],
                      tmp_path, out, f"leaderboard render / {name}")


def test_out_that_is_a_file(tmp_path, capsys, corpus):
    from pirs.captioning.cli import main as caption
    from pirs.degrade.cli import main as degrade

    f = tmp_path / "file"
    f.write_text("x")
    ok = corpus["tmp-ok"]
    (ok / "manifest.json").write_text(json.dumps(true_manifest(ok)))
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "p.png").write_bytes(png(64, 64))
    cases = {
        "degrade build": (degrade, ["build", "--pipeline", "noise", "--input", tmp_path / "photos", "--out", f,
                                    "--num-samples", "1", "--crop-size", "32", "--quiet"]),
        "caption run": (caption, ["run", ok, "--out", f, "--quiet"]),
        "degrade preview (a folder)": (degrade, ["preview", ok, "--out", tmp_path / "photos"]),
        "degrade preview (under a file)": (degrade, ["preview", ok, "--out", f / "p.png"]),
    }
    for name, (main, argv) in cases.items():
        run_inprocess(capsys, main, argv, tmp_path, None, name)
    assert f.read_text() == "x"


def test_unwritable_out_is_not_an_object_store_problem(tmp_path, capsys):
    from pirs.leaderboard.cli import main as leaderboard

    out = Path("/proc/pirs-no-such-folder/site")
    err = run_inprocess(capsys, leaderboard, ["render", "--out", out, "--no-plots", "--quiet"], tmp_path, None,
                        "leaderboard render / unwritable --out")
    assert "object storage" not in err and "credentials" not in err


def test_local_permission_error_is_reported_as_such(tmp_path, capsys):
    from pirs.degrade.fs import run_cli, store_error

    def handler(_):
        open(tmp_path / "x", "rb")  # noqa: SIM115 - raises here
        raise PermissionError(13, "Permission denied", str(tmp_path / "x"))

    (tmp_path / "x").write_bytes(b"")
    assert store_error(PermissionError(13, "Permission denied", "/data/x")) is None
    assert run_cli("degrade build", handler, None) == 2
    err = capsys.readouterr().err
    assert "permission denied" in err and "object storage" not in err and len(err.strip().splitlines()) == 1


def test_unexpected_errors_are_one_line_with_a_way_to_the_traceback(capsys, monkeypatch):
    from pirs.degrade.fs import run_cli

    def bug(_):
        return {}["missing"]

    monkeypatch.delenv("PIRS_DEBUG", raising=False)
    assert run_cli("degrade show", bug, None) == 3
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "PIRS_DEBUG=1" in err and "KeyError" in err
    monkeypatch.setenv("PIRS_DEBUG", "1")
    with pytest.raises(KeyError):
        run_cli("degrade show", bug, None)
