"""Hint lines the commands print are commands that run; `bench evaluate` takes a test set's metrics by default."""

from __future__ import annotations

import contextlib
import io
import json
import shlex
from pathlib import Path

from pirs.benchmark.cli import main as bench
from pirs.degrade.cli import main as degrade
from pirs.models.cli import main as restore
from pirs.models.train import TrainConfig, train


def run(main, argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def hint(stdout: str) -> list[str]:
    line = next(x for x in stdout.splitlines() if x.startswith("score "))
    return shlex.split(line.split(None, 1)[1])


def test_the_printed_score_lines_run_and_stay_in_the_working_folder(tmp_path, photos_dir, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert run(degrade, ["build", "--pipeline", "realesrgan", "--input", str(photos_dir), "--out", "demo/testset",
                         "--num-samples", "2", "--crop-size", "32", "--quiet"])[0] == 0
    code, out, err = run(bench, ["baseline", "bicubic", "--reference", "demo/testset", "--out",
                                 "demo/predictions/bicubic/"])
    assert code == 0, err
    assert "to demo/predictions/bicubic/" in out and "bicubic//" not in out
    argv = hint(out)
    assert argv[argv.index("--out") + 1] == "demo/results/bicubic.json"  # beside the predictions, inside demo/
    assert run(bench, argv[1:])[0] == 0 and Path("demo/results/bicubic.json").is_file()

    train(TrainConfig(method="spire", data="demo/testset", out="runs/spire", max_steps=1, batch_size=1,
                      progress=False))
    code, out, err = run(restore, ["predict", "--checkpoint", "runs/spire", "--input", "demo/testset", "--out",
                                   "demo/predictions/spire/", "--steps", "1", "--quiet"])
    assert code == 0, err
    assert "to demo/predictions/spire/ " in out
    argv = hint(out)
    assert run(bench, argv[1:])[0] == 0
    assert json.loads(Path("demo/results/spire.json").read_text())["method"]["name"] == "spire"


def test_bench_evaluate_takes_metrics_and_out_from_the_test_set(tmp_path, monkeypatch, capsys) -> None:
    from test_leaderboard_reproduce import sots_outdoor

    monkeypatch.chdir(tmp_path)
    sots_outdoor(tmp_path / "SOTS")
    assert run(degrade, ["testset", "diffrestorer-haze", "--source", "SOTS", "--out", "ts", "--allow-partial",
                         "--quiet"])[0] == 0
    assert run(bench, ["baseline", "identity", "--reference", "ts", "--out", "preds/identity"])[0] == 0
    code, _, err = run(bench, ["evaluate", "preds/identity", "--reference", "ts", "--weights-dir", "none"])
    assert code == 2 and "fid" in err and "missing" in err  # Table I's metrics, whose weights are not here
    code, out, err = run(bench, ["evaluate", "preds/identity", "--reference", "ts", "--metrics", "psnr"])
    assert code == 0 and Path("results/diffrestorer-haze/identity.json").is_file(), err
    (tmp_path / "plain").mkdir()
    assert run(degrade, ["build", "--pipeline", "haze", "--input", "SOTS/gt", "--out", "plain/ts",
                         "--num-samples", "2", "--crop-size", "32", "--quiet"])[0] == 0
    assert run(bench, ["baseline", "identity", "--reference", "plain/ts", "--out", "plain/p"])[0] == 0
    code, _, err = run(bench, ["evaluate", "plain/p", "--reference", "plain/ts"])
    assert code == 2 and "not a standard test set" in err and "--metrics" in err


def test_caption_run_says_what_the_template_backend_writes(tmp_path, photos_dir, monkeypatch) -> None:
    from pirs.captioning.cli import main as caption

    monkeypatch.chdir(tmp_path)
    assert run(degrade, ["build", "--pipeline", "mixed", "--input", str(photos_dir), "--out", "shards",
                         "--num-samples", "2", "--crop-size", "32", "--quiet"])[0] == 0
    code, out, err = run(caption, ["run", "shards", "--out", "captioned", "--backend", "template", "--quiet"])
    assert code == 0, err
    lines = [x for x in out.splitlines() if "->" in x]
    assert len(lines) == 2 and "Please" not in out  # not the LLaVA instructions the template never sends
    assert "applied degradations" in lines[0] and "caption_source" in lines[1]


def test_restore_prints_no_third_party_import_warning() -> None:
    """diffusers imports bitsandbytes (pyiqa's dependency), whose CPU backend logged a warning on every command."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "pirs.models.cli", "methods", "--counts"], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0 and "gemm_4bit" not in r.stderr and "WARNING" not in r.stderr, r.stderr[-500:]
