"""One long table of published numbers and our scores, and the reproduction view.

:func:`merge` turns the paper tables (:func:`pirs.leaderboard.papers.load_paper_tables`) and
any number of ``bench evaluate`` results files into one long ``pandas.DataFrame``, one row per
number, with the columns of :data:`LONG_COLUMNS`:

``test_set``
    the test-set id: the paper's id (``div2k-val``, ``realsr``, ...) or, for our rows, the
    results' ``test_set.name`` (the id ``degrade testset`` wrote into the shards' manifest, the
    same id as the paper tables'), an older name of a standard test set resolved to its id
    (``dr-haze`` -> ``diffrestorer-haze``, the ``aliases`` of ``datasets/*.yaml``), or a name
    mapped by an alias of ours (see :class:`Aliases`).
``method``, ``source``
    the method, and where the number comes from: the paper's name (``SPIRE``, ``DPIR``...) or
    ``pirs`` for our results.
``metric``, ``value``, ``value_text``, ``direction``
    the pirs metric name, the value as a float (NaN where a paper prints "-"), the value as
    printed (papers) or with full precision (ours), ``lower`` or ``higher`` (is better).
``conventions``, ``conventions_id``
    how the number was computed, as ``key=value`` pairs joined by ``;``; for paper rows the
    CSV's string (``impl=unspecified;channel=unspecified;crop=unspecified``), for our rows a
    summary of the results file's ``conventions`` entry (``impl=pirs;backend=pyiqa 'psnr';
    color_space=RGB;crop_border=0``). ``conventions_id`` is a short hash of the full
    conventions (for our rows: the whole ``conventions`` object, less its purely descriptive
    keys): two numbers are ranked in one column only when their ids agree.
``fingerprint``
    our rows: the test set's fingerprint (``content_sha256`` of its shards); empty for papers.
``row``
    which line of the leaderboard the number belongs to: one per paper row (prompt setting
    included) and one per (method, test-set fingerprint, conventions) of ours, several results
    files of one method under the same conventions merged into one row (``merged`` says so).
``protocol``
    the evaluation protocol the number was produced under: a paper table's setting
    (``DPIR, Main Results (4× Super-Resolution): DIV2K-Val Dataset``), or for our rows the test
    set's fingerprint. Rows of different protocols are never ranked against each other: a
    test set's page groups its rows by protocol and marks the best value within each group
    (two papers' "DIV2K-Val" are not the same images, crops or metric settings, see
    ``papers/provenance.yaml``).
``std``, ``ci_low``, ``ci_high``
    our rows: the metric's sample standard deviation over the images and its 95% bootstrap
    interval, from the results file (NaN where it has none, and for paper rows).

and ``setting``, ``prompts``, ``method_label``, ``metric_label``, ``table``, ``results_file``,
``test_set_name`` (our test set's own name, before aliasing), ``predictions_fingerprint``,
``merged`` (for a merged row of ours: which results files it stands for and how they differ).

Test sets and methods are matched after :func:`normalize` (case-insensitive, only letters and
digits kept), so ``DIV2K-Val`` is ``div2k-val`` and ``Real-ESRGAN`` is ``realesrgan``. A standard
test set needs no alias: its results carry its id. A test set of one's own (say a folder built
with ``degrade build``) needs one to meet a paper table (``--test-set-alias ours=paper_id``;
methods: ``--method-alias ours=PaperMethod``; or a YAML file, see :func:`load_alias_file`).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

#: The columns of the long table, in order.
LONG_COLUMNS = (
    "test_set", "method", "source", "metric", "value", "value_text", "direction", "conventions", "conventions_id",
    "fingerprint", "row", "setting", "prompts", "method_label", "metric_label", "table", "results_file",
    "test_set_name", "predictions_fingerprint", "protocol", "std", "ci_low", "ci_high", "merged",
)

#: ``source`` of our rows.
OURS = "pirs"

#: Keys of a results file's conventions entry that describe but do not change the number.
DESCRIPTIVE_KEYS = frozenset({"papers", "identical_images", "relation", "matches", "checkpoint_note", "description",
                              "implementation"})

#: Keys shown (in this order) in the readable ``conventions`` string of our rows.
SUMMARY_KEYS = ("backend", "color_space", "crop_border", "variant", "version", "checkpoint", "mode", "clip_model")

#: Display names of the registry's metrics (the papers' own headers win where a paper has the metric).
METRIC_LABELS = {
    "psnr": "PSNR", "psnry": "PSNR (YIQ Y)", "psnr-ycbcr": "PSNR (YCbCr Y)", "psnr-rgb": "PSNR (RGB, BasicSR)",
    "ssim": "SSIM", "ssimc": "SSIM (RGB)", "ssim-ycbcr": "SSIM (YCbCr Y)", "ssim-rgb": "SSIM (RGB, BasicSR)",
    "ms-ssim": "MS-SSIM", "lpips": "LPIPS", "lpips-vgg": "LPIPS (VGG)", "dists": "DISTS", "fid": "FID", "kid": "KID",
    "niqe": "NIQE", "niqe-ycbcr": "NIQE (YCbCr Y)", "musiq": "MUSIQ", "maniqa": "MANIQA", "clipiqa": "CLIPIQA",
    "clipiqa+": "CLIPIQA+", "liqe": "LIQE", "topiq_fr": "TOPIQ-FR", "topiq_nr": "TOPIQ-NR", "brisque": "BRISQUE",
    "pi": "PI", "clip-i": "CLIP-I", "clip-t": "CLIP-T",
}

#: A paper's metric and the pirs variants that measure the same quantity under some convention;
#: the reproduction view compares a paper's number with each variant we scored.
FAMILIES = {
    "psnr": ("psnr", "psnr-ycbcr", "psnry", "psnr-rgb"),
    "ssim": ("ssim", "ssim-ycbcr", "ssimc", "ssim-rgb"),
    "niqe": ("niqe", "niqe-ycbcr"),
    "lpips": ("lpips", "lpips-vgg"),
}


def normalize(name: str) -> str:
    """A name for matching: lower case, letters and digits only (``Real-ESRGAN`` -> ``realesrgan``)."""
    return re.sub(r"[^0-9a-z]+", "", str(name).casefold())


def metric_label(metric: str) -> str:
    """The display name of a pirs metric (``psnr-ycbcr`` -> ``PSNR (YCbCr Y)``)."""
    return METRIC_LABELS.get(metric, metric.upper())


class LeaderboardError(ValueError):
    """A problem with the leaderboard's input (results files, aliases); the message names the file and field."""


# ---------------------------------------------------------------------------------------------- aliases


@dataclass
class Aliases:
    """Renames applied to our results before they meet the paper tables.

    ``test_sets`` maps a results file's ``test_set.name`` (the reference folder's name) to a
    paper test-set id; ``methods`` maps a results file's ``method.name`` to a paper's method
    name. Keys are matched after :func:`normalize`.
    """

    test_sets: dict[str, str] = field(default_factory=dict)
    methods: dict[str, str] = field(default_factory=dict)

    def test_set(self, name: str) -> str | None:
        """The alias of a test-set name, or None."""
        return _lookup(self.test_sets, name)

    def method(self, name: str) -> str | None:
        """The alias of a method name, or None."""
        return _lookup(self.methods, name)

    def update(self, other: Aliases) -> Aliases:
        """Add ``other``'s entries (they win); return self."""
        self.test_sets.update(other.test_sets)
        self.methods.update(other.methods)
        return self


def _lookup(mapping: dict[str, str], name: str) -> str | None:
    key = normalize(name)
    for k, v in mapping.items():
        if normalize(k) == key:
            return v
    return None


def parse_alias(text: str, option: str) -> tuple[str, str]:
    """``"ours=paper"`` as ``("ours", "paper")``; ``option`` names the flag in the error."""
    ours, sep, paper = text.partition("=")
    if not sep or not ours.strip() or not paper.strip():
        raise LeaderboardError(f"{option} {text!r}: expected OURS=PAPER, e.g. {option} ref=div2k-val")
    return ours.strip(), paper.strip()


def load_alias_file(path: str | Path) -> Aliases:
    """Read an alias file (YAML or JSON)::

        test_sets:          # results' test_set.name -> paper test-set id
          div2k-val-512: div2k-val
        methods:            # results' method.name -> paper method
          dpir-repro: DPIR
    """
    from pirs.degrade.limits import InputError, read_yaml_file

    p = Path(path)
    try:
        data = read_yaml_file(p, max_bytes=1 << 20)
    except OSError as e:
        raise LeaderboardError(f"{p}: cannot read ({e.strerror or e})") from None
    except InputError as e:
        raise LeaderboardError(str(e)) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise LeaderboardError(f"{p}: expected a mapping with 'test_sets' and/or 'methods'")
    unknown = sorted(set(data) - {"test_sets", "methods"})
    if unknown:
        raise LeaderboardError(f"{p}: unknown field {unknown[0]!r} (expected 'test_sets' and/or 'methods')")
    out = Aliases()
    for key, target in (("test_sets", out.test_sets), ("methods", out.methods)):
        section = data.get(key) or {}
        if not isinstance(section, dict):
            raise LeaderboardError(f"{p}: field {key!r} must be a mapping of our name to the paper's name")
        for k, v in section.items():
            if not isinstance(v, str | int | float) or not str(v).strip():
                raise LeaderboardError(f"{p}: field '{key}.{k}' must be a non-empty name, got {v!r}")
            target[str(k)] = str(v).strip()
    return out


# ---------------------------------------------------------------------------------------------- results files


def results_files(paths: list[str | Path]) -> list[Path]:
    """The results JSON files named by ``paths`` (files, or folders searched for ``*.json``, not recursively)."""
    out: list[Path] = []
    for given in paths:
        p = Path(given)
        if p.is_dir():
            found = sorted(q for q in p.glob("*.json") if q.is_file())
            if not found:
                raise LeaderboardError(f"{p}: no results files (*.json) in this folder")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise LeaderboardError(f"{p}: no such file or folder")
    seen: set[Path] = set()
    unique = []
    for p in out:
        if p.resolve() not in seen:
            seen.add(p.resolve())
            unique.append(p)
    return unique


def load_results(paths: list[str | Path]) -> list[tuple[Path, dict]]:
    """Read and validate every results file (``benchmark.results.validate_results``).

    A malformed file raises :class:`LeaderboardError` whose message names the file and the field.
    """
    from pirs.benchmark.results import ResultsError, validate_results

    out = []
    for p in results_files(paths):
        try:
            out.append((p, validate_results(p)))
        except ResultsError as e:
            raise LeaderboardError(str(e)) from None
    return out


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:10]


def _summary_value(v: Any) -> str:
    s = json.dumps(v, ensure_ascii=False) if isinstance(v, dict | list) else str(v)
    return s.replace(";", ",")


def our_conventions(conv: dict) -> tuple[str, str]:
    """The readable ``conventions`` string and the ``conventions_id`` of a results file's conventions entry."""
    parts = ["impl=pirs"] + [f"{k}={_summary_value(conv[k])}" for k in SUMMARY_KEYS if conv.get(k) is not None]
    kept = {k: v for k, v in conv.items() if k not in DESCRIPTIVE_KEYS}
    return ";".join(parts), _hash("pirs\n" + json.dumps(kept, sort_keys=True, ensure_ascii=False))


def paper_conventions_id(conventions: str) -> str:
    """The ``conventions_id`` of a paper row's conventions string."""
    return _hash("paper\n" + conventions)


def _format_ours(x: float) -> str:
    return repr(float(x)) if math.isfinite(x) else str(x)


# ---------------------------------------------------------------------------------------------- merging


def paper_rows(papers: pd.DataFrame) -> pd.DataFrame:
    """The paper tables in the long-table layout."""
    import pandas as pd

    df = pd.DataFrame({
        "test_set": papers["test_set"], "method": papers["method"], "source": papers["paper"],
        "metric": papers["metric"], "value": papers["value"].astype(float), "value_text": papers["value_text"],
        "direction": papers["direction"], "conventions": papers["conventions"],
        "conventions_id": papers["conventions"].map(paper_conventions_id), "fingerprint": "",
        "row": ("paper|" + papers["paper"] + "|" + papers["table"] + "|" + papers["setting"] + "|"
                + papers["method"] + "|" + papers["prompts"]),
        "setting": papers["setting_label"], "prompts": papers["prompts"], "method_label": papers["method_label"],
        "metric_label": papers["metric_label"], "table": papers["table"], "results_file": "", "test_set_name": "",
        "predictions_fingerprint": "",
        "protocol": papers["paper"] + ", " + papers["table"] + ": " + papers["setting_label"],
        "std": math.nan, "ci_low": math.nan, "ci_high": math.nan, "merged": "",
    })
    return df[list(LONG_COLUMNS)]


def standard_test_set_names() -> dict[str, str]:
    """Every id and alias of the standard test sets (``datasets/*.yaml``), normalized, to the set's id."""
    from pirs.degrade.testsets import TestsetError, list_testsets, testset_aliases

    try:
        names = {normalize(t): t for t in list_testsets()}
        names.update({normalize(a): t for a, t in testset_aliases().items()})
    except TestsetError as e:
        raise LeaderboardError(f"the standard test sets cannot be read: {e}") from None
    return names


def result_rows(results: list[tuple[Path, dict]], aliases: Aliases | None = None,
                known_test_sets: list[str] = ()) -> pd.DataFrame:
    """Our results in the long-table layout, one leaderboard row per (test set, method, fingerprint, conventions).

    A results file's test set becomes, in this order: its alias (ours); the id of the standard
    test set whose id or alias :func:`normalize` makes equal to its name (the results of a
    ``degrade testset`` build already carry that id, which is the paper tables' id); the paper
    test-set id :func:`normalize` makes equal to its name; its own name. Its method stays as
    named (the method alias is used only to match paper rows, see :func:`reproduction`).

    Several results files of one method on the same test set (same fingerprint) whose metrics
    agree in conventions wherever they share a metric are one row: each metric's value comes
    from the newest file (``date``) that has it, and the ``merged`` column names the files and,
    where their values differ, what the older ones said.
    """
    import pandas as pd

    from pirs.benchmark.results import decode_number

    aliases = aliases or Aliases()
    by_norm = {normalize(t): t for t in known_test_sets}
    standard = standard_test_set_names() if results else {}
    entries = []
    for path, d in results:
        name = d["test_set"]["name"]
        test_set = aliases.test_set(name) or standard.get(normalize(name)) or by_norm.get(normalize(name), name)
        metrics = {}
        for metric, e in d["metrics"].items():
            conv, conv_id = our_conventions(d["conventions"].get(metric, {}))
            metrics[metric] = (conv, conv_id, e)
        entries.append((path, d, test_set, metrics))
    entries.sort(key=lambda x: (str(x[1].get("date", "")), str(x[0])), reverse=True)  # newest first

    merged: list[dict] = []  # {"key", "files": [(path, d)], "metrics": {metric: (path, d, conv, conv_id, e)}}
    for path, d, test_set, metrics in entries:
        key = (test_set, d["method"]["name"], d["test_set"]["fingerprint"])
        home = next((m for m in merged if m["key"] == key and all(
            m["metrics"][k][3] == metrics[k][1] for k in metrics if k in m["metrics"])), None)
        if home is None:
            home = {"key": key, "files": [], "metrics": {}}
            merged.append(home)
        home["files"].append((path, d))
        for metric, (conv, conv_id, e) in metrics.items():
            home["metrics"].setdefault(metric, (path, d, conv, conv_id, e))
    merged.reverse()  # back to the oldest first, as the files were given

    rows = []
    for m in merged:
        test_set, method, fingerprint = m["key"]
        newest_path = m["files"][0][0]
        note = _merge_note(m) if len(m["files"]) > 1 else ""
        order = list(dict.fromkeys(metric for _, d in m["files"] for metric in d["metrics"]))
        for metric in order:
            path, d, conv, conv_id, e = m["metrics"][metric]
            value = decode_number(e["value"])
            ci = e.get("ci95") or [math.nan, math.nan]
            std = e.get("std")
            rows.append({
                "test_set": test_set, "method": method, "source": OURS, "metric": metric, "value": value,
                "value_text": _format_ours(value), "direction": e["direction"], "conventions": conv,
                "conventions_id": conv_id, "fingerprint": fingerprint,
                "row": f"ours|{newest_path}", "setting": "", "prompts": "", "method_label": method,
                "metric_label": metric_label(metric), "table": "", "results_file": str(path),
                "test_set_name": d["test_set"]["name"], "predictions_fingerprint": d["predictions"]["fingerprint"],
                "protocol": f"pirs: test set {d['test_set']['name']} (fingerprint {fingerprint[:12]})",
                "std": math.nan if std is None else decode_number(std), "ci_low": float(ci[0]),
                "ci_high": float(ci[1]), "merged": note,
            })
    return pd.DataFrame(rows, columns=list(LONG_COLUMNS))


def _merge_note(m: dict) -> str:
    """What a merged row of ours stands for: its results files and, where they differ, the older values."""
    from pirs.benchmark.results import decode_number

    files = [f"{Path(p).name} ({d.get('date', '?')})" for p, d in m["files"]]
    differ = []
    for metric, (path, _, _, _, e) in m["metrics"].items():
        shown = decode_number(e["value"])
        for p, other in m["files"]:
            o = other["metrics"].get(metric)
            if o is None or str(p) == str(path):
                continue
            v = decode_number(o["value"])
            if not (v == shown or (math.isnan(v) and math.isnan(shown))):
                differ.append(f"{metric} {_format_ours(v)} in {Path(p).name}")
    text = f"{len(files)} results files under the same conventions, shown as one row: {', '.join(files)}"
    if differ:
        return text + "; their values differ, each metric shows the newest file's (older: " + "; ".join(differ) + ")"
    return text + "; identical values"


def merge(papers: pd.DataFrame | None, results: list[tuple[Path, dict]], aliases: Aliases | None = None
          ) -> pd.DataFrame:
    """The long table (:data:`LONG_COLUMNS`): paper rows first, in the CSVs' order, then our rows."""
    import pandas as pd

    parts = []
    known: list[str] = []
    if papers is not None and len(papers):
        parts.append(paper_rows(papers))
        known = list(dict.fromkeys(papers["test_set"]))
    ours = result_rows(results, aliases, known)
    if len(ours):
        parts.append(ours)
    if not parts:
        return pd.DataFrame(columns=list(LONG_COLUMNS))
    df = pd.concat(parts, ignore_index=True)
    df["value"] = df["value"].astype(float)
    return df


# ---------------------------------------------------------------------------------------------- columns


@dataclass
class Column:
    """One metric column of a test set's table: a metric under one convention."""

    id: str  # stable, used in URLs (#sort=ID:desc) and CSS: the metric name, or metric.N when split
    metric: str
    label: str
    direction: str
    conventions_id: str
    conventions: list[tuple[str, str]]  # (source, conventions string), one per source
    split: bool = False  # the metric has several columns in this test set (conventions differ)
    unstated: bool = False  # several sources share the column but the conventions are unspecified

    @property
    def arrow(self) -> str:
        return "↓" if self.direction == "lower" else "↑"

    @property
    def sources(self) -> list[str]:
        return list(dict.fromkeys(s for s, _ in self.conventions))


def columns(df: pd.DataFrame) -> list[Column]:
    """The metric columns of one test set's rows, in order of first appearance.

    A metric whose rows use one convention is one column (id: the metric name). A metric
    whose rows use several conventions is split, one column per convention (ids ``psnr.1``,
    ``psnr.2``...), labelled with the sources using it, so that no column ranks numbers
    computed differently.
    """
    out: list[Column] = []
    for metric in dict.fromkeys(df["metric"]):
        sub = df[df["metric"] == metric]
        groups = list(dict.fromkeys(sub["conventions_id"]))
        labels = sub["metric_label"]
        paper_label = next((lab for lab, src in zip(labels, sub["source"], strict=True) if src != OURS), None)
        base = paper_label or metric_label(metric)
        made = []
        for i, gid in enumerate(groups, 1):
            g = sub[sub["conventions_id"] == gid]
            conv = list(dict.fromkeys(zip(g["source"], g["conventions"], strict=True)))
            sources = list(dict.fromkeys(g["source"]))
            unstated = len(sources) > 1 and any("unspecified" in c for _, c in conv)
            made.append(Column(id=metric if len(groups) == 1 else f"{metric}.{i}", metric=metric, label=base,
                               direction=g["direction"].iloc[0], conventions_id=gid, conventions=conv,
                               split=len(groups) > 1, unstated=unstated))
        if len(made) > 1:
            names = [", ".join(c.sources) for c in made]
            for i, c in enumerate(made):
                tag = names[i] if names.count(names[i]) == 1 else f"{names[i]} #{i + 1}"
                c.label = f"{base} · {tag}"
        out.extend(made)
    return out


def best_rows(df: pd.DataFrame, col: Column) -> set[str]:
    """The ``row`` ids holding the best value of a column within each protocol (all of them on a tie; none where
    the column is empty): rows of different protocols are not ranked against each other."""
    sub = df[(df["metric"] == col.metric) & (df["conventions_id"] == col.conventions_id)].dropna(subset=["value"])
    out: set[str] = set()
    for _, group in sub.groupby("protocol", sort=False):
        best = group["value"].min() if col.direction == "lower" else group["value"].max()
        out |= set(group.loc[group["value"] == best, "row"])
    return out


def convention_notes(cols: list[Column]) -> list[str]:
    """Plain-text notes: which metrics are split by convention, and which columns pool unstated conventions."""
    notes = []
    by_metric: dict[str, list[Column]] = {}
    for c in cols:
        by_metric.setdefault(c.metric, []).append(c)
    for metric, cs in by_metric.items():
        if len(cs) > 1:
            detail = "; ".join(f"'{c.label}': " + ", ".join(f"{s} [{conv}]" for s, conv in c.conventions) for c in cs)
            notes.append(f"{cs[0].label.split(' · ')[0]} ({metric}) is computed under {len(cs)} different conventions "
                         f"here, so it is split into {len(cs)} columns that are ranked separately: {detail}.")
    for c in cols:
        if c.unstated:
            notes.append(f"'{c.label}' pools {', '.join(c.sources)}, which share the conventions string "
                         f"[{c.conventions[0][1]}] but leave some of it unspecified: the numbers may not have been "
                         f"computed the same way.")
    return notes


# ---------------------------------------------------------------------------------------------- reproduction

REPRO_COLUMNS = (
    "test_set", "method", "paper", "table", "setting", "prompts", "metric", "our_method", "our_metric",
    "paper_value", "paper_value_text", "our_value", "difference", "relative_difference", "direction", "closer",
    "paper_conventions", "our_conventions", "results_file",
)


def reproduction(df: pd.DataFrame, aliases: Aliases | None = None) -> pd.DataFrame:
    """Paper value, our value and difference per metric, where we scored a method and test set a paper reports.

    Our row matches a paper row when the test sets are equal (after aliasing, see :func:`merge`)
    and the methods are equal after :func:`normalize`, or our ``method.name`` has a method alias
    naming the paper's method. A paper metric is compared with each pirs variant of it we
    scored (:data:`FAMILIES`: a paper's ``psnr`` with our ``psnr``, ``psnr-ycbcr`` and
    ``psnry``), since papers rarely state which one they mean. ``difference`` is ours minus the
    paper's; ``relative_difference`` divides it by the paper's magnitude; ``closer`` says whether
    our number is ``better`` or ``worse`` than the paper's given the direction (or ``equal``).
    """
    import pandas as pd

    aliases = aliases or Aliases()
    ours = df[df["source"] == OURS]
    papers = df[df["source"] != OURS]
    rows = []
    if ours.empty or papers.empty:
        return pd.DataFrame(columns=list(REPRO_COLUMNS))
    paper_norm = papers["method"].map(normalize)
    for _, o in ours.iterrows():
        target = normalize(aliases.method(o["method"]) or o["method"])
        cand = papers[(papers["test_set"] == o["test_set"]) & (paper_norm == target)]
        for _, p in cand.iterrows():
            if o["metric"] not in FAMILIES.get(p["metric"], (p["metric"],)):
                continue
            pv, ov = float(p["value"]), float(o["value"])
            diff = ov - pv if math.isfinite(pv) and math.isfinite(ov) else math.nan
            rel = diff / abs(pv) if math.isfinite(diff) and pv != 0 else math.nan
            if not math.isfinite(diff):
                closer = ""
            elif diff == 0:
                closer = "equal"
            else:
                closer = "better" if (diff < 0) == (p["direction"] == "lower") else "worse"
            rows.append({
                "test_set": o["test_set"], "method": p["method"], "paper": p["source"], "table": p["table"],
                "setting": p["setting"], "prompts": p["prompts"], "metric": p["metric"], "our_method": o["method"],
                "our_metric": o["metric"], "paper_value": pv, "paper_value_text": p["value_text"], "our_value": ov,
                "difference": diff, "relative_difference": rel, "direction": p["direction"], "closer": closer,
                "paper_conventions": p["conventions"], "our_conventions": o["conventions"],
                "results_file": o["results_file"],
            })
    return pd.DataFrame(rows, columns=list(REPRO_COLUMNS))
