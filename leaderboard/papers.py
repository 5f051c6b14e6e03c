"""Published tables of the four papers, as data.

The tables live beside this module in ``papers/``: one long-format CSV per table (one row
per test set, method, prompts and metric) and ``provenance.yaml`` describing each of them
(seed file and lines, settings, test sets, metric directions and conventions, what the seed
leaves out). ``papers/README.md`` documents the columns.

Nothing is read at import time; pandas and PyYAML are imported by the functions that need them.

>>> df = load_paper_tables()                                  # doctest: +SKIP
>>> df.query("paper == 'SPIRE' and metric == 'fid'")[["setting", "method", "value"]]  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

#: The folder holding the CSVs and ``provenance.yaml``.
PAPERS_DIR = Path(__file__).resolve().parent / "papers"

#: The columns of every CSV, in order.
COLUMNS = (
    "paper", "table", "setting", "setting_label", "test_set", "method", "method_label", "prompts",
    "metric", "metric_label", "value", "direction", "direction_source", "conventions",
    "source_file", "source_line", "source_cell",
)

#: Columns that may be empty: ``prompts`` (tables without prompt columns) and ``value``
#: (a cell printed as "-" or left blank).
OPTIONAL = frozenset({"prompts", "value"})

#: One published number is identified by these columns; no two rows may share them.
KEY = ("paper", "table", "setting", "test_set", "method", "prompts", "metric")

DIRECTIONS = frozenset({"lower", "higher"})
DIRECTION_SOURCES = frozenset({"arrow", "known"})

#: pirs metric names that paper rows may use (the benchmark registry's names).
METRICS = frozenset({"psnr", "ssim", "lpips", "dists", "fid", "niqe", "musiq", "maniqa", "clipiqa",
                     "liqe", "clip-i", "clip-t"})


def paper_table_files(directory: str | Path | None = None) -> list[Path]:
    """The CSV files of the paper tables, sorted by name."""
    folder = Path(directory) if directory is not None else PAPERS_DIR
    if not folder.is_dir():
        raise FileNotFoundError(f"paper tables folder not found: {folder}")
    return sorted(folder.glob("*.csv"))


def load_provenance(directory: str | Path | None = None) -> dict[str, Any]:
    """``provenance.yaml`` as a dict: ``{"schema_version": 1, "tables": [{"file": ..., ...}, ...]}``."""
    import yaml

    folder = Path(directory) if directory is not None else PAPERS_DIR
    path = folder / "provenance.yaml"
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    if not isinstance(data, dict) or not isinstance(data.get("tables"), list):
        raise ValueError(f"{path}: expected a mapping with a 'tables' list")
    for i, entry in enumerate(data["tables"]):
        for field in ("file", "paper", "table", "seed", "settings", "metrics"):
            if field not in entry:
                raise ValueError(f"{path}: tables[{i}] has no field {field!r}")
    return data


def _read_one(path: Path) -> pd.DataFrame:
    """Read and validate one CSV; every problem names the file, the line and the field."""
    import pandas as pd

    df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    if tuple(df.columns) != COLUMNS:
        missing = [c for c in COLUMNS if c not in df.columns]
        extra = [c for c in df.columns if c not in COLUMNS]
        raise ValueError(f"{path}: columns must be {', '.join(COLUMNS)} in this order "
                         f"(missing: {missing or 'none'}; unexpected: {extra or 'none'})")
    if df.empty:
        raise ValueError(f"{path}: no rows")

    def fail(i: int, field: str, why: str) -> None:
        # i is the 0-based data row; +2 for the header and 1-based lines
        raise ValueError(f"{path}, line {i + 2}, field {field!r}: {why}")

    for i, row in enumerate(df.itertuples(index=False)):
        rec = row._asdict()
        for col in COLUMNS:
            if col not in OPTIONAL and not rec[col].strip():
                fail(i, col, "is empty")
            if rec[col] != rec[col].strip():
                fail(i, col, f"has leading or trailing spaces: {rec[col]!r}")
        if rec["direction"] not in DIRECTIONS:
            fail(i, "direction", f"{rec['direction']!r} is not one of {sorted(DIRECTIONS)}")
        if rec["direction_source"] not in DIRECTION_SOURCES:
            fail(i, "direction_source", f"{rec['direction_source']!r} is not one of {sorted(DIRECTION_SOURCES)}")
        if rec["metric"] not in METRICS:
            fail(i, "metric", f"{rec['metric']!r} is not a pirs metric name ({', '.join(sorted(METRICS))})")
        for col in ("source_line", "source_cell"):
            if not rec[col].isdigit():
                fail(i, col, f"{rec[col]!r} is not a non-negative integer")
        if rec["value"]:
            try:
                float(rec["value"])
            except ValueError:
                fail(i, "value", f"{rec['value']!r} is not a number (leave it empty for '-')")

    dup = df.duplicated(list(KEY), keep=False)
    if dup.any():
        first = df[dup].iloc[0]
        raise ValueError(f"{path}: {int(dup.sum())} rows share ({', '.join(KEY)}), e.g. "
                         + ", ".join(f"{k}={first[k]!r}" for k in KEY))
    return df


def load_paper_tables(directory: str | Path | None = None) -> pd.DataFrame:
    """All published paper tables as one long DataFrame, one row per published number.

    Reads every ``*.csv`` in ``directory`` (default: the ``papers/`` folder installed beside
    this module), checks each one (the columns, in order; required fields non-empty;
    ``direction`` is ``lower`` or ``higher``; ``metric`` is a pirs metric name; ``value`` is a
    number or empty; no two rows share ``(paper, table, setting, test_set, method, prompts, metric)``)
    and raises ``ValueError`` naming the file, line and field of the first problem.

    Columns: those of the CSVs (see ``COLUMNS`` and ``papers/README.md``), with ``value`` as a
    float (NaN where the paper printed "-"), ``value_text`` the value exactly as printed (so
    trailing zeros survive: ``"0.300"``), and ``source_line`` / ``source_cell`` as integers.
    Rows keep the files' order (files sorted by name).
    """
    import pandas as pd

    files = paper_table_files(directory)
    if not files:
        raise FileNotFoundError(f"no paper table CSVs in {Path(directory) if directory else PAPERS_DIR}")
    df = pd.concat([_read_one(p) for p in files], ignore_index=True)
    dup = df.duplicated(list(KEY), keep=False)
    if dup.any():
        first = df[dup].iloc[0]
        raise ValueError("the same published number appears in two files, e.g. "
                         + ", ".join(f"{k}={first[k]!r}" for k in KEY))
    df["value_text"] = df["value"]
    df["value"] = pd.to_numeric(df["value"].where(df["value"] != ""), errors="raise").astype(float)
    df["source_line"] = df["source_line"].astype(int)
    df["source_cell"] = df["source_cell"].astype(int)
    return df
