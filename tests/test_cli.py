"""Every command has --help; `degrade` works end to end from the command line."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

CLIS = {"degrade": "pirs.degrade.cli", "caption": "pirs.captioning.cli", "restore": "pirs.models.cli",
        "bench": "pirs.benchmark.cli", "leaderboard": "pirs.leaderboard.cli"}


def run(module: str, *args: str, check: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=300,
                          check=check)


@pytest.mark.parametrize("name", sorted(CLIS))
def test_help(name):
    r = run(CLIS[name], "--help")
    assert r.returncode == 0 and "usage:" in r.stdout


@pytest.mark.parametrize("sub", ["build", "preview", "recipes", "replay", "show", "gallery", "ingest", "testset"])
def test_degrade_subcommand_help(sub):
    r = run(CLIS["degrade"], sub, "--help")
    assert r.returncode == 0 and f"degrade {sub}" in r.stdout


@pytest.mark.parametrize("sub", ["train", "predict", "methods"])
def test_restore_subcommand_help(sub):
    r = run(CLIS["restore"], sub, "--help")
    assert r.returncode == 0 and f"restore {sub}" in r.stdout


def test_restore_without_a_command_fails():
    r = run(CLIS["restore"])
    assert r.returncode != 0 and "usage:" in r.stderr


def test_console_scripts_are_installed():
    import shutil

    for name in CLIS:
        assert shutil.which(name) or (Path(sys.executable).parent / name).exists(), name


def test_build_preview_replay_show_recipes(tmp_path, photos):
    out = tmp_path / "shards"
    r = run(CLIS["degrade"], "build", "--pipeline", "parameterized", "--input", str(photos), "--out", str(out),
            "--num-samples", "6", "--crop-size", "48", "--seed", "3", "--quiet")
    assert r.returncode == 0, r.stderr
    assert "built 6 samples" in r.stdout and "5 seen = 5 usable + 0 rejected" in r.stdout
    png = tmp_path / "preview.png"
    r = run(CLIS["degrade"], "preview", str(out), "--out", str(png), "--count", "3")
    assert r.returncode == 0, r.stderr
    img = np.asarray(Image.open(png).convert("RGB"))
    assert img.shape[0] > 3 * 200 and img.std() > 20  # three rows of pictures and text, not a blank page
    r = run(CLIS["degrade"], "replay", str(out), "00000002")
    assert r.returncode == 0 and "identical" in r.stdout
    r = run(CLIS["degrade"], "replay", str(out), "2")  # an unpadded number finds its zero-padded key
    assert r.returncode == 0 and "identical" in r.stdout
    r = run(CLIS["degrade"], "replay", str(out), "99999999")
    assert r.returncode == 2 and "not found" in r.stderr and "keys, 00000000 .. " in r.stderr
    r = run(CLIS["degrade"], "show", str(out), "00000001")
    rec = json.loads(r.stdout)
    assert rec["key"] == "00000001" and isinstance(rec["ops"], list)
    r = run(CLIS["degrade"], "recipes")
    assert r.returncode == 0 and all(n in r.stdout for n in ("realesrgan", "parameterized", "mixed", "light"))
    r = run(CLIS["degrade"], "recipes", "realesrgan")
    assert "blur [blur2] p=0.8" in r.stdout


def test_replay_detects_a_tampered_record(tmp_path, photos):
    from pirs.degrade.shards import ShardWriter, iter_records

    out = tmp_path / "shards"
    run(CLIS["degrade"], "build", "--pipeline", "realesrgan", "--input", str(photos), "--out", str(out),
        "--num-samples", "2", "--crop-size", "32", "--quiet", check=True)
    shard = out / "shard-000000.tar"
    rows = list(iter_records(shard))
    with ShardWriter(shard) as w:
        for key, rec, members in rows:
            ops = json.loads(rec["ops"])
            ops[-1]["params"]["quality"] = 3 if ops[-1]["op"] == "jpeg" else ops[-1]["params"].get("quality")
            for o in ops:
                if o["op"] == "noise":
                    o["params"]["seed"] += 1
            w.write(key, {**members, "json": json.dumps(dict(rec, ops=json.dumps(ops))).encode()})
    r = run(CLIS["degrade"], "replay", str(out), "00000000")  # the manifest's sha256 no longer matches
    assert r.returncode == 2 and "differs from manifest.json" in r.stderr
    (out / "manifest.json").unlink()  # a tampered shard with no manifest to betray it: replay itself tells
    r = run(CLIS["degrade"], "replay", str(out), "00000000")
    assert r.returncode == 1 and "DIFFERENT" in r.stdout


def test_bad_arguments_fail_before_work(tmp_path, photos):
    r = run(CLIS["degrade"], "build", "--pipeline", "nosuch", "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "unknown recipe" in r.stderr
    r = run(CLIS["degrade"], "build", "--pipeline", "realesrgan", "--out", str(tmp_path / "o"), "--crop-size", "30",
            "--input", str(photos))
    assert r.returncode == 2 and "multiple of the scale" in r.stderr
    r = run(CLIS["degrade"], "build", "--pipeline", "realesrgan", "--out", str(tmp_path / "o"),
            "--input", str(tmp_path / "missing"))
    assert r.returncode == 2 and "no such file" in r.stderr


from pathlib import Path  # noqa: E402


def test_texts_cut_for_the_contact_sheet_end_in_an_ellipsis():
    from pirs.degrade.preview import clip_lines

    prompt = "Deblur with sigma 2.9; Upsample to 6.0x; Denoise with sigma 0.06; Dejpeg with quality 45"
    one = clip_lines(prompt, 48, 1)
    assert len(one) == 1 and one[0].endswith("...") and len(one[0]) <= 48
    assert clip_lines(prompt, 48, 3) == ["Deblur with sigma 2.9; Upsample to 6.0x; Denoise",
                                         "with sigma 0.06; Dejpeg with quality 45"]  # fits: no ellipsis
    huge = clip_lines("word " * 20_000_000, 48, 4)  # a 100 MB caption: only what is drawn is wrapped
    assert len(huge) == 4 and huge[-1].endswith("...")


@pytest.mark.parametrize("argv", [("degrade", "recipes"), ("leaderboard", "reproduce", "--list"),
                                  ("bench", "metrics"), ("restore", "methods")])
def test_a_closed_pipe_ends_quietly(argv):
    """`degrade recipes | head -1`: the reader goes away (here before the first write); no traceback, no error
    line, status 0."""
    r = subprocess.run(f"{sys.executable} -m {CLIS[argv[0]]} {' '.join(argv[1:])} | true; "
                       "exit ${PIPESTATUS[0]}", shell=True, executable="/bin/bash", capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0 and r.stderr == "", r.stderr[-500:]
