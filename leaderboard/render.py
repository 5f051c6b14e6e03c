"""``leaderboard render``: the paper tables and our results as a static site.

:func:`render` merges the paper tables and any results files into one long table
(:mod:`pirs.leaderboard.merge`) and writes, under ``out/``::

    index.html, index.md       every test set, with links
    leaderboard.csv            every number (the long table, all test sets)
    reproduction.csv           paper value, our value, difference (when any of ours matches a paper row)
    manifest.json              the files written (a re-render replaces exactly these)
    <test set>/index.html      sortable table, notes, plot, reproduction, sources
    <test set>/leaderboard.md  the same as Markdown
    <test set>/leaderboard.csv the test set's rows of the long table
    <test set>/reproduction.csv
    <test set>/perception-distortion.png

Conventions are never mixed silently: a metric whose numbers on a test set were computed
under different conventions (a paper's PSNR of unstated channel beside our RGB ``psnr``) is
split into one column per convention, each ranked on its own, and the page and the Markdown
say why; a column pooling several papers whose shared conventions leave something
unspecified carries a note too. Protocols are not mixed either: rows are grouped by the
protocol that produced them (a paper table's setting; our test set's fingerprint), and the
best value (bold, by the metric's direction) is marked within each group only. Within a group
rows are ordered by the page's first metric, best first. Our rows are marked (★ in Markdown, a
badge and a blue row in HTML) and show ± half the width of their 95% bootstrap interval; several
results files of one method under the same conventions are one row, and a note says so.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from . import html as H
from .merge import (
    OURS,
    Aliases,
    Column,
    LeaderboardError,
    best_rows,
    columns,
    convention_notes,
    load_results,
    merge,
    reproduction,
)
from .plots import PlotChoice

if TYPE_CHECKING:
    import pandas as pd

PLOT_FILE = "perception-distortion.png"
MANIFEST = "manifest.json"
GENERATOR = "pirs leaderboard render"


@dataclass
class Row:
    """One line of a test set's table."""

    id: str
    method: str
    method_label: str
    source: str
    prompts: str
    ours: bool
    fingerprint: str
    results_file: str
    protocol: str = ""
    cells: dict[str, tuple[float, str]] = field(default_factory=dict)  # column id -> (value, text)
    spread: dict[str, tuple[float, float, float]] = field(default_factory=dict)  # column id -> (ci low, high, std)

    @property
    def label(self) -> str:
        return f"{self.method} [{self.prompts}]" if self.prompts else self.method


@dataclass
class Page:
    """Everything the Markdown and HTML of one test set show."""

    test_set: str
    slug: str
    subtitle: str
    rows: list[Row]  # grouped by protocol, each group ordered by the first metric
    cols: list[Column]
    best: dict[str, set[str]]
    notes: list[str]
    repro: pd.DataFrame | None
    sources: list[str]
    source_names: list[str]
    has_prompts: bool
    data: pd.DataFrame
    plot: PlotChoice | None = None
    plot_file: str | None = None
    plot_note: str = ""

    @property
    def n_ours(self) -> int:
        return sum(r.ours for r in self.rows)

    @property
    def groups(self) -> list[tuple[str, list[Row]]]:
        """The rows by protocol, in order: ``[(protocol, rows)]``."""
        out: dict[str, list[Row]] = {}
        for r in self.rows:
            out.setdefault(r.protocol, []).append(r)
        return list(out.items())


# ---------------------------------------------------------------------------------------------- building


def slugify(name: str, taken: set[str]) -> str:
    """A folder name for a test set: letters, digits, ``.``, ``_``, ``-``; unique among ``taken``."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-") or "test-set"
    slug, i = base, 2
    while slug.lower() in taken or slug.lower() in {"index.html", "index.md", "leaderboard.csv", "reproduction.csv",
                                                    MANIFEST}:
        slug, i = f"{base}-{i}", i + 1
    taken.add(slug.lower())
    return slug


def cell_text(source: str, value: float, value_text: str, ci: tuple[float, float] | None = None) -> str:
    """The printed value of a paper, or our value rounded for display, with ± half its 95% interval when known."""
    if source != OURS:
        return value_text
    return H.fmt_value(value) + (H.fmt_pm(value, (ci[1] - ci[0]) / 2) if ci else "")


def _finite(*xs: float) -> bool:
    return all(isinstance(x, float | int) and math.isfinite(x) for x in xs)


def order_rows(rows: list[Row], cols: list[Column]) -> list[Row]:
    """Rows grouped by protocol (groups in order of first appearance), each group ordered best first by the first
    column it has values in; rows without that value last, in their previous order."""
    groups: dict[str, list[Row]] = {}
    for r in rows:
        groups.setdefault(r.protocol, []).append(r)
    out: list[Row] = []
    for members in groups.values():
        key_col = next((c for c in cols if any(_finite(r.cells.get(c.id, (math.nan,))[0]) for r in members)), None)
        if key_col is None:
            out += members
            continue
        sign = 1.0 if key_col.direction == "lower" else -1.0

        def key(item: tuple[int, Row], c: Column = key_col, sign: float = sign) -> tuple:
            i, r = item
            v = r.cells.get(c.id, (math.nan,))[0]
            return (0, sign * v, i) if _finite(v) else (1, 0.0, i)

        out += [r for _, r in sorted(enumerate(members), key=key)]
    return out


def build_page(test_set: str, df: pd.DataFrame, slug: str, results: dict[str, dict], repro: pd.DataFrame,
               provenance: dict[tuple[str, str], dict]) -> Page:
    """The :class:`Page` of one test set from its rows of the long table."""
    cols = columns(df)
    by_key = {(c.metric, c.conventions_id): c for c in cols}
    rows: dict[str, Row] = {}
    for rec in df.itertuples(index=False):
        r = rows.get(rec.row)
        if r is None:
            r = rows[rec.row] = Row(id=rec.row, method=rec.method, method_label=rec.method_label, source=rec.source,
                                    prompts=rec.prompts, ours=rec.source == OURS, fingerprint=rec.fingerprint,
                                    results_file=rec.results_file, protocol=rec.protocol)
        col = by_key[(rec.metric, rec.conventions_id)]
        ci = (rec.ci_low, rec.ci_high) if rec.source == OURS and _finite(rec.ci_low, rec.ci_high) else None
        r.cells[col.id] = (rec.value, cell_text(rec.source, rec.value, rec.value_text, ci))
        if ci:
            r.spread[col.id] = (rec.ci_low, rec.ci_high, rec.std)
    best = {c.id: best_rows(df, c) for c in cols}
    notes = convention_notes(cols)
    protocols = list(dict.fromkeys(df["protocol"]))
    if len(protocols) > 1:
        notes.append(f"The rows come from {len(protocols)} evaluation protocols ({'; '.join(protocols)}): each is a "
                     "group of its own, and bold marks the best value within a group only. Different papers' "
                     "tables (and our test-set builds) differ in images, crops or metric settings, so their "
                     "numbers are not ranked against each other.")
    for text, method in dict.fromkeys(zip(df["merged"], df["method"], strict=True)):
        if text:
            notes.append(f"{method}: {text}.")
    ours = df[df["source"] == OURS]
    prints = sorted(set(ours["fingerprint"]))
    if len(prints) > 1:
        notes.append(f"Our rows come from {len(prints)} different builds of this test set (fingerprints "
                     + ", ".join(p[:12] for p in prints) + "): they were not scored on the same images.")
    renamed = sorted({(n, t) for n, t in zip(ours["test_set_name"], ours["test_set"], strict=True) if n != t})
    for name, ts in renamed:
        notes.append(f"Our results on the test set named '{name}' are shown here as '{ts}' (alias or matching name).")

    paper = df[df["source"] != OURS]
    settings = list(dict.fromkeys(zip(paper["source"], paper["table"], paper["setting"], strict=True)))
    subtitle = "; ".join(f"{s}, {t}: {lab}" for s, t, lab in settings)
    sources = []
    for s, t, lab in settings:
        prov = provenance.get((s, t), {})
        extra = f" (seed {prov['seed']}, {prov.get('seed_kind', '')})" if prov.get("seed") else ""
        sources.append(f"{s}, {t}, \"{lab}\"{extra}.")
    for path in dict.fromkeys(ours["results_file"]):
        d = results[path]
        git = (d["environment"].get("git") or {}).get("commit", "")
        sources.append(f"pirs: {d['method']['name']} from {Path(path).name} (test set '{d['test_set']['name']}', "
                       f"{d['count']} images, fingerprint {d['test_set']['fingerprint'][:12]}, {d['date']}"
                       + (f", git {git[:10]}" if git else "") + ").")
    source_names = list(dict.fromkeys(df["source"]))
    sub_repro = repro[repro["test_set"] == test_set] if repro is not None and len(repro) else None
    return Page(test_set=test_set, slug=slug, subtitle=subtitle, rows=order_rows(list(rows.values()), cols),
                cols=cols, best=best,
                notes=notes, repro=sub_repro, sources=sources, source_names=source_names,
                has_prompts=bool((df["prompts"] != "").any()), data=df)


# ---------------------------------------------------------------------------------------------- Markdown


def md(text: object) -> str:
    """Text for a Markdown table cell: no line breaks, pipes and Markdown/HTML specials escaped."""
    s = " ".join(str(text).split())
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return re.sub(r"([\\`*_\[\]|#])", r"\\\1", s)


def markdown_page(page: Page) -> str:
    """The Markdown of one test set (GitHub-flavoured tables)."""
    out = [f"# {md(page.test_set)}", ""]
    if page.subtitle:
        out += [md(page.subtitle), ""]
    if page.notes:
        out += ["**Notes**", ""] + [f"- {md(n)}" for n in page.notes] + [""]
    groups = page.groups
    for protocol, rows in groups:
        if len(groups) > 1:
            out += [f"### {md(protocol)}", ""]
        cols = [c for c in page.cols if any(c.id in r.cells for r in rows)]
        prompts = page.has_prompts and any(r.prompts for r in rows)
        head = ["Method", "Source"] + (["Prompts"] if prompts else []) + [f"{md(c.label)} {c.arrow}" for c in cols]
        align = ["---", "---"] + (["---"] if prompts else []) + ["---:" for _ in cols]
        out += ["| " + " | ".join(head) + " |", "| " + " | ".join(align) + " |"]
        for r in rows:
            cells = [("★ " if r.ours else "") + md(r.method), md(r.source)] + ([md(r.prompts)] if prompts else [])
            for c in cols:
                cell = r.cells.get(c.id)
                if cell is None or cell[1] == "":
                    cells.append("–")
                else:
                    text = md(cell[1])
                    cells.append(f"**{text}**" if r.id in page.best.get(c.id, ()) else text)
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    out += [("Rows grouped by evaluation protocol, each group ordered by its first metric; bold: the best value "
             "of each column within a group. " if len(groups) > 1 else "Rows ordered by the first metric; bold: "
             "the best value of each column. ") + "↑ higher is better, ↓ lower is better; – not reported. ★ our "
            "results (pirs), ± half the width of the 95% bootstrap interval of the mean over images.", ""]
    out += ["## Conventions", ""]
    out += [f"- {md(c.label)}: " + "; ".join(f"{md(s)}: {md(conv)}" for s, conv in c.conventions) for c in page.cols]
    out += [""]
    out += ["## Perception–distortion", ""]
    out += [f"![{md(page.test_set)}: {page.plot.y} against {page.plot.x}]({PLOT_FILE})" if page.plot_file
            else md(page.plot_note), ""]
    if page.repro is not None and len(page.repro):
        out += ["## Reproduction", "", "Paper value, our value, ours minus the paper's. A paper metric is compared "
                "with each of our variants of it (PSNR: RGB, YCbCr Y, YIQ Y).", ""]
        out += ["| Method | Paper | Prompts | Paper metric | Our metric | Paper | Ours | Difference | Relative "
                "| Ours is |",
                "| --- | --- | --- | --- | --- | ---: | ---: | ---: | ---: | --- |"]
        for _, x in page.repro.iterrows():
            rel = x["relative_difference"]
            out.append("| " + " | ".join([
                md(x["method"]) + ("" if x["our_method"] == x["method"] else f" (ours: {md(x['our_method'])})"),
                md(f"{x['paper']}, {x['table']}"), md(x["prompts"]), md(x["metric"]), md(x["our_metric"]),
                md(x["paper_value_text"]) or "–", md(H.fmt_like(x["our_value"], x["paper_value_text"])),
                md(H.fmt_diff(x["difference"], x["paper_value_text"])),
                "" if math.isnan(rel) else f"{100 * rel:+.1f}%", md(x["closer"])]) + " |")
        out.append("")
    out += ["## Sources", ""] + [f"- {md(s)}" for s in page.sources] + [""]
    return "\n".join(out)


def markdown_index(pages: list[Page], notes: list[str]) -> str:
    """The Markdown index of all test sets."""
    out = ["# pirs leaderboard", "", "Published tables of SPIRE, XPSR, Diff-Restorer and DPIR beside our scores.", ""]
    if notes:
        out += ["**Notes**", ""] + [f"- {md(n)}" for n in notes] + [""]
    out += ["| Test set | Sources | Methods | Our results | Metrics |", "| --- | --- | ---: | ---: | --- |"]
    for p in pages:
        out.append(f"| [{md(p.test_set)}]({p.slug}/leaderboard.md) | {md(', '.join(p.source_names))} | "
                   f"{len(p.rows)} | {p.n_ours} | {md(', '.join(c.label for c in p.cols))} |")
    out.append("")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------- writing


def write_csv(df: pd.DataFrame, path: Path) -> None:
    """The long table as CSV (values with full precision; ``value_text`` keeps the printed form)."""
    df.to_csv(path, index=False, float_format=None, encoding="utf-8")


def read_csv(path: str | Path) -> pd.DataFrame:
    """Read a long-table CSV written by :func:`render` (text columns as text; ``value``, ``std``, ``ci_low``,
    ``ci_high`` as float)."""
    import pandas as pd

    from .merge import LONG_COLUMNS

    df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    for col in ("value", "std", "ci_low", "ci_high"):
        if col in df:
            df[col] = pd.to_numeric(df[col].where(df[col] != ""), errors="raise").astype(float)
    return df[[c for c in LONG_COLUMNS if c in df.columns]]


def _prepare_out(out: Path) -> None:
    """Make ``out``; refuse a non-empty folder that an earlier render did not write; remove that render's files."""
    if out.exists() and not out.is_dir():
        raise LeaderboardError(f"{out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / MANIFEST
    if not any(out.iterdir()):
        return
    try:
        old = json.loads(manifest.read_text(encoding="utf-8"))
        files = old["files"] if old.get("generator") == GENERATOR else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        files = None
    if not isinstance(files, list):
        raise LeaderboardError(f"{out}: the folder is not empty and was not written by 'leaderboard render' (no "
                               f"{MANIFEST}); choose an empty or new folder")
    root = out.resolve()
    dirs = set()
    for name in files:
        p = (out / str(name)).resolve()
        if root in p.parents and p.is_file():
            p.unlink()
            dirs.add(p.parent)
    for d in sorted(dirs, key=lambda d: len(d.parts), reverse=True):
        if d != root and not any(d.iterdir()):
            d.rmdir()
    manifest.unlink(missing_ok=True)


def render(out: str | Path, results: list[str | Path] = (), *, aliases: Aliases | None = None,
           papers_dir: str | Path | None = None, include_papers: bool = True, plots: bool = True,
           test_sets: list[str] | None = None, log=None) -> dict:
    """Write the leaderboard site to ``out``; return a summary (``test_sets``, ``files``, ``reproduction`` count).

    ``results``: results JSON files or folders of them (``bench evaluate`` output). Every file is
    validated first; a malformed one raises :class:`~pirs.leaderboard.merge.LeaderboardError`
    naming the file and the field, before anything is written. ``test_sets``: render only these
    test sets (ids as shown, after aliasing).
    """
    from .papers import load_paper_tables, load_provenance
    from .plots import perception_distortion_plot

    aliases = aliases or Aliases()
    loaded = load_results(list(results)) if results else []
    papers = load_paper_tables(papers_dir) if include_papers else None
    provenance: dict[tuple[str, str], dict] = {}
    if include_papers:
        for t in load_provenance(papers_dir)["tables"]:
            provenance[(t["paper"], t["table"])] = t
    df = merge(papers, loaded, aliases)
    if df.empty:
        raise LeaderboardError("nothing to render: no paper tables and no results")
    if test_sets:
        known = list(dict.fromkeys(df["test_set"]))
        unknown = [t for t in test_sets if t not in known]
        if unknown:
            raise LeaderboardError(f"--test-set {unknown[0]!r}: no such test set; known: {', '.join(known)}")
        df = df[df["test_set"].isin(test_sets)].reset_index(drop=True)
    repro = reproduction(df, aliases)
    by_path = {str(p): d for p, d in loaded}

    out = Path(out)
    try:
        _prepare_out(out)
    except OSError as e:
        raise LeaderboardError(f"--out {out}: cannot be written ({e.strerror or e})") from None
    written: list[str] = []

    def write_text(rel: str, text: str) -> None:
        p = out / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")
        written.append(rel)

    taken: set[str] = set()
    pages = []
    # test sets with our results first, then the papers' in their order
    order = list(dict.fromkeys(df.loc[df["source"] == OURS, "test_set"])) + list(dict.fromkeys(df["test_set"]))
    for ts in dict.fromkeys(order):
        sub = df[df["test_set"] == ts]
        page = build_page(ts, sub, slugify(ts, taken), by_path, repro, provenance)
        if plots:
            labels = {r.id: r.label for r in page.rows}
            choice = perception_distortion_plot(sub, out / page.slug / PLOT_FILE, ts, labels)
            page.plot = choice
            if choice.x is not None:
                page.plot_file = PLOT_FILE
                written.append(f"{page.slug}/{PLOT_FILE}")
            else:
                page.plot_note = choice.reason
        else:
            page.plot_note = "plots were not drawn (--no-plots)"
        write_text(f"{page.slug}/index.html", H.test_set_page(page))
        write_text(f"{page.slug}/leaderboard.md", markdown_page(page))
        write_csv(sub, out / page.slug / "leaderboard.csv")
        written.append(f"{page.slug}/leaderboard.csv")
        if page.repro is not None and len(page.repro):
            page.repro.to_csv(out / page.slug / "reproduction.csv", index=False)
            written.append(f"{page.slug}/reproduction.csv")
        if log:
            log(f"{ts}: {len(page.rows)} rows ({page.n_ours} ours), {len(page.cols)} columns"
                + (f", plot {page.plot.y} against {page.plot.x}" if page.plot_file else "")
                + (f", {len(page.repro)} reproduction lines" if page.repro is not None and len(page.repro) else ""))
        pages.append(page)

    index_notes = []
    unmatched = [p.test_set for p in pages if p.n_ours and set(p.source_names) == {OURS}]
    if unmatched and include_papers:
        index_notes.append("Our results on " + ", ".join(unmatched) + " meet no paper table: if they are one of the "
                           "papers' test sets, build it with `degrade testset ID` (its results then carry the "
                           "paper's id), or name it with --test-set-alias OURS=PAPER_ID (paper ids: the test "
                           "sets listed here).")
    write_text("index.html", H.index_page(pages, index_notes))
    write_text("index.md", markdown_index(pages, index_notes))
    write_csv(df, out / "leaderboard.csv")
    written.append("leaderboard.csv")
    if len(repro):
        repro.to_csv(out / "reproduction.csv", index=False)
        written.append("reproduction.csv")
    (out / MANIFEST).write_text(json.dumps({"generator": GENERATOR, "files": written}, indent=1) + "\n",
                                encoding="utf-8")
    return {"out": str(out), "test_sets": [p.test_set for p in pages], "files": written, "reproduction": len(repro),
            "rows": len(df), "results": len(loaded), "notes": index_notes}
