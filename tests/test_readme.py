"""The README runs: every command it prints is checked, and those that need no real data are run.

Every ```bash block of README.md is split into commands (continuation lines joined,
comments dropped). Each pirs command (`degrade`, `caption`, `restore`, `bench`,
`leaderboard`) is parsed by its own argument parser, so a misspelt flag, a removed option or
a wrong choice fails here. Then the commands are run in README order in a sandbox that holds
a few photos (and what earlier commands wrote), with sizes made small (sample counts, steps,
crops, workers); a command that needs real data, weights, a GPU cluster or object storage
(paths under /data or /models, s3://, Ray) is only parsed: that is the "--help" of the issue,
stricter. `python -c` lines are compiled, and run when their inputs are there. Programs
outside pirs (huggingface-cli, ray, vllm, ...) must be in a short list of known tools.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import re
import shlex
from pathlib import Path

import pytest

from conftest import synthetic_photo, write_png

ROOT = Path(__file__).resolve().parents[1]
PIRS = {"degrade": "pirs.degrade.cli", "caption": "pirs.captioning.cli", "restore": "pirs.models.cli",
        "bench": "pirs.benchmark.cli", "leaderboard": "pirs.leaderboard.cli"}
EXTERNAL = {"huggingface-cli", "ray", "vllm", "python3", "curl", "pip", "lmdeploy", "text-generation-launcher",
            "docker", "accelerate", "open", "cat", "nvidia-smi"}
NEEDS_REAL = re.compile(r"(^|[\s=])(/data|/models|s3://|gs://|weights/|HEAD_IP|/path/)|--executor ray|--base\b|"
                        r"--backend (llava|transformers|openai)|--ray-address")
SMALL = {"--num-samples": 48, "--max-steps": 1, "--batch-size": 1, "--grad-accum": 1, "--workers": 1, "--steps": 2,
         "--per-type": 2, "--count": 2}
NO_WEIGHT_METRICS = {"psnr", "psnry", "psnr-ycbcr", "ssim", "ssimc", "ssim-ycbcr"}


def readme_commands() -> list[tuple[int, str]]:
    """(line number, command) of every command in the README's bash blocks, in order."""
    text = (ROOT / "README.md").read_text()
    out = []
    for m in re.finditer(r"```bash\n(.*?)```", text, re.S):
        first = text[: m.start(1)].count("\n") + 1
        cmd, start = "", 0
        for k, line in enumerate(m.group(1).split("\n")):
            if not cmd:
                start = first + k
            cmd = f"{cmd} {line.strip()}" if cmd else line.strip()
            if cmd.endswith("\\"):
                cmd = cmd[:-1].rstrip()
                continue
            if cmd and not cmd.startswith("#"):
                out.append((start, cmd))
            cmd = ""
    return out


def argv_of(cmd: str) -> list[str]:
    return shlex.split(cmd, comments=True)


def parser_of(prog: str):
    mod = importlib.import_module(PIRS[prog])
    for name in ("make_parser", "build_parser"):
        if hasattr(mod, name):
            return getattr(mod, name)()
    raise AssertionError(f"{PIRS[prog]} exposes no make_parser()/build_parser()")


COMMANDS = readme_commands()


def test_the_readme_prints_commands() -> None:
    assert len(COMMANDS) > 40
    assert COMMANDS[0][1].startswith("bash scripts/demo.sh") and COMMANDS[1][1].startswith("bash scripts/test.sh")


@pytest.mark.parametrize("line,cmd", COMMANDS, ids=[f"L{n}" for n, _ in COMMANDS])
def test_every_printed_command_parses(line: int, cmd: str) -> None:
    argv = argv_of(cmd)
    prog = argv[0]
    if prog == "bash":
        assert (ROOT / argv[1]).is_file(), f"README line {line}: {argv[1]} does not exist"
        return
    if prog in ("python", ".venv/bin/python"):
        assert argv[1] == "-c", f"README line {line}: {cmd}"
        compile(argv[2], f"README line {line}", "exec")
        return
    if prog not in PIRS:
        assert prog in EXTERNAL, f"README line {line}: unknown program {prog!r} in {cmd!r}"
        return
    parser = parser_of(prog)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            parser.parse_args(argv[1:])
        except SystemExit as e:
            assert e.code == 0, f"README line {line}: {cmd}\n{err.getvalue()[-800:]}"


def _small(argv: list[str]) -> list[str]:
    out = list(argv)
    for i, a in enumerate(out[:-1]):
        if a in SMALL and out[i + 1].isdigit():
            out[i + 1] = str(min(int(out[i + 1]), SMALL[a]))
        if a == "--crop-size" and out[i + 1].isdigit():
            out[i + 1] = str(min(int(out[i + 1]), 64))
    if out[:2] == ["restore", "predict"] and "--steps" not in out:
        out += ["--steps", "2"]
    if out[:2] == ["degrade", "build"]:
        out += [] if "--input" in out else ["--input", "photos"]
        out += [] if "--crop-size" in out else ["--crop-size", "64"]
    return out


def _why_not_run(argv: list[str], cmd: str) -> str | None:
    if argv[0] in ("python", ".venv/bin/python"):
        needed = [p for p in re.findall(r"load_dataset\('([^']+)'", argv[2]) if "/" in p]
        needed += re.findall(r"data_dir='([^']+)'", argv[2])
        missing = [p for p in needed if not Path(p).exists()]
        return f"{missing[0]} is not in the sandbox" if missing else None
    if NEEDS_REAL.search(cmd):
        return "needs real data, weights or a cluster"
    if argv[:2] == ["bench", "evaluate"] and "--metrics" in argv:
        metrics = set(argv[argv.index("--metrics") + 1].split(","))
        if metrics - NO_WEIGHT_METRICS:
            return "needs metric weights"
    outputs = {argv[i + 1] for i, a in enumerate(argv[:-1]) if a in ("--out", "--work", "--per-image")}
    for i, a in enumerate(argv[2:], start=2):
        looks_like_path = "/" in a or a.endswith((".json", ".tar", ".png", ".pth", ".safetensors", ".yaml"))
        if a.startswith("-") or not looks_like_path or a in outputs or argv[i - 1] in ("--set", "--match"):
            continue
        if not Path(a).exists():
            return f"{a} is not in the sandbox"
    return None


def _run(prog: str, *argv: str) -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = importlib.import_module(PIRS[prog]).main([*argv])
    assert code == 0, f"setting up the sandbox: {prog} {' '.join(argv)}\n{err.getvalue()[-800:]}"


def _stand_ins() -> None:
    """Small stand-ins for the folders the README's examples read: test sets (built from the sandbox's
    photos, under the names the README uses) and results files."""
    for name, pipeline in (("mscoco-val3000-parameterized", "parameterized"), ("div2k-val", "realesrgan"),
                           ("realsr", "realesrgan"), ("diffrestorer-haze", "haze")):
        _run("degrade", "build", "--pipeline", pipeline, "--input", "photos", "--out", f"testsets/{name}",
             "--num-samples", "2", "--crop-size", "64", "--quiet")
    for method, out in (("identity", "a"), ("bicubic", "b"), ("lanczos", "mymethod")):
        _run("bench", "baseline", method, "--reference", "testsets/div2k-val", "--out", f"stand-in/{method}")
        _run("bench", "evaluate", f"stand-in/{method}", "--reference", "testsets/div2k-val", "--metrics", "psnr,ssim",
             "--out", f"results/{out}.json", "--quiet")


def test_the_readme_runs_in_a_sandbox(tmp_path, monkeypatch) -> None:
    """Run the commands that need no real data in order; each must exit 0."""
    for i in range(6):
        write_png(tmp_path / "photos" / f"p{i}.png", synthetic_photo(144, 160, i))
    for i in range(SMALL["--num-samples"]):
        (tmp_path / "coco-captions").mkdir(exist_ok=True)
        (tmp_path / "coco-captions" / f"{i:08d}.txt").write_text(f"a synthetic photo number {i}")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PIRS_WEIGHTS_DIR", str(tmp_path / "no-weights"))
    _stand_ins()
    ran, parsed_only = [], []
    for line, cmd in COMMANDS:
        argv = argv_of(cmd)
        if argv[0] not in PIRS and argv[0] not in ("python", ".venv/bin/python"):
            continue
        reason = _why_not_run(argv, cmd)
        if argv[0] in ("python", ".venv/bin/python"):
            if reason:
                parsed_only.append((line, reason))
                continue
            with contextlib.redirect_stdout(io.StringIO()):
                exec(compile(argv[2], f"README line {line}", "exec"), {})
            ran.append(line)
            continue
        if reason:
            parsed_only.append((line, reason))
            continue
        argv = _small(argv)
        main = importlib.import_module(PIRS[argv[0]]).main
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(argv[1:])
        assert code == 0, f"README line {line}: {' '.join(argv)} exited {code}\n{err.getvalue()[-1500:]}"
        ran.append(line)
    assert len(ran) >= 25, (ran, parsed_only)  # the rest need real data, weights, a GPU cluster or a store
    os.environ.pop("PIRS_WEIGHTS_DIR", None)
