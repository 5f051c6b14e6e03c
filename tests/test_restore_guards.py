"""Training traps: empty captions a method reads, resuming on other data, a run already at its last step."""

from __future__ import annotations

from pathlib import Path

import pytest

from pirs.degrade.build import BuildConfig, build
from pirs.models.cli import main
from pirs.models.data import DataError, ShardPairs
from pirs.models.train import TrainConfig, train


@pytest.fixture(scope="module")
def uncaptioned(tmp_path_factory, photos_dir) -> Path:
    out = tmp_path_factory.mktemp("guards") / "shards"
    build(BuildConfig(pipeline="parameterized", out=str(out), input=str(photos_dir), num_samples=2, crop_size=32,
                      shard_size=2, progress=False))
    return out


def test_empty_fields_are_counted(uncaptioned) -> None:
    data = ShardPairs(str(uncaptioned))
    assert data.empty_fields["caption_low"] == data.empty_fields["caption_high"] == len(data) == 2


def test_xpsr_refuses_empty_low_level_captions_unless_told(tmp_path, uncaptioned, capsys) -> None:
    with pytest.raises(DataError, match="2 of 2 records have an empty caption_low.*--allow-empty-text"):
        train(TrainConfig(method="xpsr", data=str(uncaptioned), out=str(tmp_path / "a"), max_steps=1,
                          batch_size=1, progress=False))
    assert not list((tmp_path / "a").glob("checkpoint-*"))
    assert main(["train", "--method", "xpsr", "--data", str(uncaptioned), "--out", str(tmp_path / "b"),
                 "--max-steps", "1", "--batch-size", "1", "--quiet"]) == 2
    assert "empty caption_low" in capsys.readouterr().err
    assert main(["train", "--method", "xpsr", "--data", str(uncaptioned), "--out", str(tmp_path / "c"),
                 "--max-steps", "1", "--batch-size", "1", "--quiet", "--allow-empty-text"]) == 0


def test_resuming_on_other_data_is_refused_and_a_finished_run_says_so(tmp_path, uncaptioned, photos_dir,
                                                                       capsys) -> None:
    run = str(tmp_path / "run")
    args = ["train", "--method", "spire", "--out", run, "--max-steps", "1", "--batch-size", "1", "--quiet"]
    assert main([*args, "--data", str(uncaptioned)]) == 0
    assert "trained spire to step 1" in capsys.readouterr().out
    assert main([*args, "--data", str(uncaptioned)]) == 0  # already at --max-steps: no "loss nan"
    out = capsys.readouterr().out
    assert "already at step 1 of --max-steps 1" in out and "nan" not in out
    other = tmp_path / "other"
    build(BuildConfig(pipeline="parameterized", out=str(other), input=str(photos_dir), num_samples=3, crop_size=32,
                      shard_size=3, seed=5, progress=False))
    assert main([*args[:5], "--max-steps", "2", "--batch-size", "1", "--quiet", "--data", str(other)]) == 2
    assert "trained on other data" in capsys.readouterr().err
