"""Static HTML pages of the leaderboard: one per test set and an index.

Every string that comes from data (method names, paper names, conventions, file names) goes
through :func:`esc` (``html.escape`` with quotes), and the page's one script and one style
sheet are fixed text: a Content-Security-Policy allows exactly those two (by their SHA-256)
and nothing else, so even a string that escaped escaping could not run.

The leaderboard table has one ``<tbody>`` per evaluation protocol, headed by a row naming it
(``tr.group``); bold (``td.best``) marks the best value of a column within its group only.

Sorting (:data:`SCRIPT`): clicking a column header sorts the rows of every group by it, best
first (descending for higher-is-better metrics, ascending otherwise and for text); clicking
again reverses. Rows never leave their group; missing values stay last. The URL hash drives
the same code, so a page can be opened sorted and a headless browser can test it:

``#sort=COLUMN`` or ``#sort=COLUMN:asc|desc``
    sort the leaderboard table by the column whose ``data-col`` is ``COLUMN`` (``method``,
    ``source``, a metric name such as ``psnr``, or ``psnr.2`` for a metric split by convention).
``#click=COLUMN[,COLUMN...]``
    click those headers' buttons, in order (the same handler as a mouse click).

After a sort the table's ``data-sort`` attribute is ``COLUMN:asc`` or ``COLUMN:desc`` and the
header carries ``aria-sort``.
"""

from __future__ import annotations

import base64
import hashlib
import html
import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .render import Page

SCRIPT = r"""
(function () {
  "use strict";
  function key(row, i, type) {
    var c = row.cells[i];
    if (!c) return type === "num" ? NaN : "";
    var v = c.hasAttribute("data-v") ? c.getAttribute("data-v") : c.textContent;
    if (type === "num") return v === "" ? NaN : parseFloat(v);
    return v.toLowerCase();
  }
  function missing(v, type) { return type === "num" ? isNaN(v) : v === ""; }
  function sortTable(table, th, dir) {
    var ths = Array.prototype.slice.call(table.tHead.rows[0].cells);
    var i = ths.indexOf(th), type = th.getAttribute("data-type") || "text";
    Array.prototype.forEach.call(table.tBodies, function (body) {
      var rows = Array.prototype.filter.call(body.rows, function (r) { return !r.classList.contains("group"); });
      var items = rows.map(function (r, n) { return {r: r, n: n, v: key(r, i, type)}; });
      items.sort(function (a, b) {
        var am = missing(a.v, type), bm = missing(b.v, type);
        if (am !== bm) return am ? 1 : -1;
        if (!am) {
          var c = type === "num" ? a.v - b.v : (a.v < b.v ? -1 : (a.v > b.v ? 1 : 0));
          if (c !== 0) return dir === "desc" ? -c : c;
        }
        return a.n - b.n;
      });
      items.forEach(function (it) { body.appendChild(it.r); });
    });
    ths.forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", dir === "asc" ? "ascending" : "descending");
    table.setAttribute("data-sort", th.getAttribute("data-col") + ":" + dir);
  }
  function firstDir(th) { return th.getAttribute("data-better") === "higher" ? "desc" : "asc"; }
  function clicked(table, th) {
    var dir = firstDir(th);
    if (table.getAttribute("data-sort") === th.getAttribute("data-col") + ":" + dir) {
      dir = dir === "asc" ? "desc" : "asc";
    }
    sortTable(table, th, dir);
  }
  function header(table, col) {
    var ths = table.tHead.rows[0].cells;
    for (var i = 0; i < ths.length; i++) { if (ths[i].getAttribute("data-col") === col) return ths[i]; }
    return null;
  }
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) {
      var b = th.querySelector("button");
      if (b) b.addEventListener("click", function () { clicked(table, th); });
    });
  });
  function applyHash() {
    var table = document.getElementById("leaderboard");
    if (!table) return;
    location.hash.replace(/^#/, "").split("&").forEach(function (part) {
      var eq = part.indexOf("=");
      if (eq < 0) return;
      var name = part.slice(0, eq), value = decodeURIComponent(part.slice(eq + 1));
      if (name === "sort") {
        var colon = value.lastIndexOf(":"), dir = colon < 0 ? "" : value.slice(colon + 1);
        var col = (dir === "asc" || dir === "desc") ? value.slice(0, colon) : value;
        var th = header(table, col);
        if (th) { if (dir === "asc" || dir === "desc") { sortTable(table, th, dir); } else { clicked(table, th); } }
      } else if (name === "click") {
        value.split(",").forEach(function (col) {
          var th = header(table, col);
          if (th && th.querySelector("button")) th.querySelector("button").click();
        });
      }
    });
  }
  applyHash();
  window.addEventListener("hashchange", applyHash);
})();
"""

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 80rem;
       padding: 0 1rem; color: #1b1b1b; }
h1 { font-size: 1.5rem; margin-bottom: .2rem; }
h2 { font-size: 1.15rem; margin-top: 2rem; }
.sub { color: #555; margin-top: 0; }
table { border-collapse: collapse; font-size: .9rem; margin: .5rem 0; }
th, td { border-bottom: 1px solid #ddd; padding: .3rem .6rem; text-align: left; vertical-align: top; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
th button { font: inherit; font-weight: 600; background: none; border: 0; padding: 0; cursor: pointer; color: inherit; }
th[aria-sort=ascending] button::after { content: " \\25B2"; font-size: .7em; }
th[aria-sort=descending] button::after { content: " \\25BC"; font-size: .7em; }
th.split { background: #fff4e5; }
td.best { font-weight: 700; }
tr.ours { background: #eaf4ff; }
tr.group th { background: #f3f3f3; text-align: left; font-weight: 600; font-size: .85rem; color: #333; }
.badge { display: inline-block; font-size: .7rem; background: #1f6feb; color: #fff; border-radius: .3rem;
         padding: 0 .35rem; margin-left: .35rem; vertical-align: middle; }
.notes { background: #fff8e6; border-left: 4px solid #f0a500; padding: .4rem 1rem; margin: 1rem 0; }
.notes li { margin: .3rem 0; }
.muted { color: #666; font-size: .85rem; }
code { font-size: .85em; }
img.plot { max-width: 100%; border: 1px solid #ddd; }
.better { color: #1a7f37; }
.worse { color: #b42318; }
"""


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


#: The page's Content-Security-Policy: only the inline script and style above, images from the site.
CSP = (f"default-src 'none'; script-src {_csp_hash(SCRIPT)}; style-src {_csp_hash(STYLE)}; "
       "img-src 'self' file: data:; base-uri 'none'; form-action 'none'")


def esc(value: Any) -> str:
    """HTML-escape any value (``<``, ``>``, ``&``, both quotes)."""
    return html.escape("" if value is None else str(value), quote=True)


def _num(v: float) -> str:
    """A ``data-v`` sort key: the float, or empty when missing."""
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else repr(float(v))


def _head(title: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta http-equiv="Content-Security-Policy" content="{esc(CSP)}">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{esc(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n")


def _tail() -> str:
    return f"<script>{SCRIPT}</script>\n</body>\n</html>\n"


def _notes(notes: list[str]) -> str:
    if not notes:
        return ""
    return '<div class="notes"><strong>Notes</strong><ul>' + "".join(f"<li>{esc(n)}</li>" for n in notes) + \
        "</ul></div>\n"


def test_set_page(page: Page) -> str:
    """The HTML page of one test set."""
    out = [_head(f"pirs leaderboard: {page.test_set}")]
    out.append('<p class="muted"><a href="../index.html">All test sets</a></p>\n')
    out.append(f"<h1>{esc(page.test_set)}</h1>\n")
    if page.subtitle:
        out.append(f'<p class="sub">{esc(page.subtitle)}</p>\n')
    out.append(_notes(page.notes))

    out.append('<table id="leaderboard" class="sortable" data-sort="">\n<thead><tr>')
    out.append('<th data-col="method" data-type="text"><button type="button">Method</button></th>')
    out.append('<th data-col="source" data-type="text"><button type="button">Source</button></th>')
    if page.has_prompts:
        out.append('<th data-col="prompts" data-type="text"><button type="button">Prompts</button></th>')
    for c in page.cols:
        conv = " | ".join(f"{s}: {cv}" for s, cv in c.conventions)
        cls = "num split" if c.split else "num"
        out.append(f'<th class="{cls}" data-col="{esc(c.id)}" data-type="num" data-better="{esc(c.direction)}" '
                   f'title="{esc(c.direction)} is better; conventions: {esc(conv)}">'
                   f'<button type="button">{esc(c.label)} {c.arrow}</button></th>')
    out.append("</tr></thead>\n")
    width = 2 + page.has_prompts + len(page.cols)
    for protocol, rows in page.groups:
        out.append(f'<tbody data-protocol="{esc(protocol)}">\n<tr class="group"><th colspan="{width}" '
                   f'scope="rowgroup">{esc(protocol)}</th></tr>\n')
        for r in rows:
            out.append(_row(page, r))
        out.append("</tbody>\n")
    out.append("</table>\n")
    out.append('<p class="muted">Rows are grouped by evaluation protocol (a paper table\'s setting, or the test-set '
               "build our results were scored on) and ordered by the first metric. Click a column header to sort "
               "within every group (best first; click again to reverse). Bold: the best value of the column within "
               'its group. Blue rows with the <span class="badge">pirs</span> mark: our results, ± half the width of '
               "the 95% bootstrap interval of the mean over images (hover a value for the interval and the standard "
               "deviation). ↑ higher is better, ↓ lower is better; – not reported. Hover a header for its "
               "conventions.</p>\n")

    out.append("<h2>Perception–distortion</h2>\n")
    if page.plot_file:
        out.append(f'<p><img class="plot" src="{esc(page.plot_file)}" '
                   f'alt="{esc(page.test_set)}: {esc(page.plot.y)} against {esc(page.plot.x)}"></p>\n')
    else:
        out.append(f'<p class="muted">{esc(page.plot_note)}</p>\n')

    if page.repro is not None and len(page.repro):
        out.append("<h2>Reproduction</h2>\n")
        out.append('<p class="muted">Where we scored a method the papers also report on this test set: their number, '
                   "ours, and ours minus theirs. A paper metric is compared with each of our variants of it "
                   "(PSNR: RGB, YCbCr Y, YIQ Y), since papers rarely say which they mean.</p>\n")
        out.append('<table class="sortable"><thead><tr>')
        heads = [("method", "Method", "text"), ("paper", "Paper", "text"), ("prompts", "Prompts", "text"),
                 ("metric", "Paper metric", "text"), ("our_metric", "Our metric", "text"),
                 ("paper_value", "Paper", "num"), ("our_value", "Ours", "num"), ("difference", "Difference", "num"),
                 ("relative_difference", "Relative", "num"), ("closer", "Ours is", "text"),
                 ("conventions", "Conventions (paper | ours)", "text")]
        for col, label, typ in heads:
            cls = ' class="num"' if typ == "num" else ""
            out.append(f'<th{cls} data-col="{col}" data-type="{typ}"><button type="button">{esc(label)}</button></th>')
        out.append("</tr></thead>\n<tbody>\n")
        for _, x in page.repro.iterrows():
            rel = x["relative_difference"]
            out.append("<tr>")
            out.append(f'<td title="ours: {esc(x["our_method"])}">{esc(x["method"])}</td>')
            out.append(f'<td>{esc(x["paper"])} ({esc(x["table"])})</td><td>{esc(x["prompts"])}</td>')
            out.append(f'<td>{esc(x["metric"])}</td><td>{esc(x["our_metric"])}</td>')
            out.append(f'<td class="num" data-v="{_num(x["paper_value"])}">{esc(x["paper_value_text"])}</td>')
            printed = x["paper_value_text"]
            ours, diff = fmt_like(x["our_value"], printed), fmt_diff(x["difference"], printed)
            out.append(f'<td class="num" data-v="{_num(x["our_value"])}">{esc(ours)}</td>')
            out.append(f'<td class="num" data-v="{_num(x["difference"])}">{esc(diff)}</td>')
            rel_text = "" if math.isnan(rel) else f"{100 * rel:+.1f}%"
            out.append(f'<td class="num" data-v="{_num(rel)}">{esc(rel_text)}</td>')
            out.append(f'<td class="{esc(x["closer"])}">{esc(x["closer"])}</td>')
            out.append(f'<td class="muted">{esc(x["paper_conventions"])} | {esc(x["our_conventions"])}</td>')
            out.append("</tr>\n")
        out.append("</tbody>\n</table>\n")

    out.append("<h2>Sources</h2>\n<ul>\n")
    for line in page.sources:
        out.append(f"<li>{esc(line)}</li>\n")
    out.append("</ul>\n")
    out.append('<p class="muted">Files: <a href="leaderboard.md">Markdown</a>, <a href="leaderboard.csv">CSV</a>'
               + (', <a href="reproduction.csv">reproduction CSV</a>' if page.repro is not None and len(page.repro)
                  else "") + ". Generated by <code>leaderboard render</code> (pirs).</p>\n")
    out.append(_tail())
    return "".join(out)


def _row(page: Page, r) -> str:
    """One ``<tr>`` of the leaderboard table."""
    title = f"{r.results_file} (test-set fingerprint {r.fingerprint})" if r.ours else r.method_label
    cls = ' class="ours"' if r.ours else ""
    out = [f'<tr{cls} data-row="{esc(r.id)}">']
    badge = '<span class="badge">pirs</span>' if r.ours else ""
    out.append(f'<td data-v="{esc(r.method)}" title="{esc(title)}">{esc(r.method)}{badge}</td>')
    out.append(f"<td>{esc(r.source)}</td>")
    if page.has_prompts:
        out.append(f"<td>{esc(r.prompts)}</td>")
    for c in page.cols:
        cell = r.cells.get(c.id)
        if cell is None:
            out.append('<td class="num" data-v="">–</td>')
            continue
        value, text = cell
        cls = "num best" if r.id in page.best.get(c.id, ()) else "num"
        shown = "–" if text == "" else text
        spread = r.spread.get(c.id)
        hover = ""
        if spread:
            low, high, std = spread
            hover = (f' title="95% bootstrap interval [{low:.6g}, {high:.6g}]'
                     + (f', standard deviation {std:.6g}' if math.isfinite(std) else "") + '"')
        out.append(f'<td class="{cls}" data-v="{esc(_num(value))}"{hover}>{esc(shown)}</td>')
    out.append("</tr>\n")
    return "".join(out)


def index_page(pages: list[Page], notes: list[str]) -> str:
    """The index: one line per test set, with links."""
    out = [_head("pirs leaderboard")]
    out.append("<h1>pirs leaderboard</h1>\n")
    out.append('<p class="sub">Published tables of SPIRE, XPSR, Diff-Restorer and DPIR beside our scores, one page '
               "per test set.</p>\n")
    out.append(_notes(notes))
    out.append('<table id="leaderboard" class="sortable" data-sort=""><thead><tr>')
    for col, label, typ in (("test_set", "Test set", "text"), ("sources", "Sources", "text"),
                            ("methods", "Methods", "num"), ("ours", "Our results", "num"),
                            ("metrics", "Metrics", "text"), ("links", "Files", "text")):
        cls = ' class="num"' if typ == "num" else ""
        out.append(f'<th{cls} data-col="{col}" data-type="{typ}"><button type="button">{label}</button></th>')
    out.append("</tr></thead>\n<tbody>\n")
    for p in pages:
        cls = ' class="ours"' if p.n_ours else ""
        href = f"{p.slug}/index.html"
        links = [f'<a href="{esc(p.slug)}/leaderboard.md">md</a>', f'<a href="{esc(p.slug)}/leaderboard.csv">csv</a>']
        if p.plot_file:
            links.append(f'<a href="{esc(p.slug)}/{esc(p.plot_file)}">plot</a>')
        out.append(f'<tr{cls}><td data-v="{esc(p.test_set)}"><a href="{esc(href)}">{esc(p.test_set)}</a></td>'
                   f"<td>{esc(', '.join(p.source_names))}</td>"
                   f'<td class="num" data-v="{len(p.rows)}">{len(p.rows)}</td>'
                   f'<td class="num" data-v="{p.n_ours}">{p.n_ours}</td>'
                   f"<td>{esc(', '.join(c.label for c in p.cols))}</td><td>{' '.join(links)}</td></tr>\n")
    out.append("</tbody>\n</table>\n")
    out.append('<p class="muted">Also: <a href="index.md">Markdown index</a>, <a href="leaderboard.csv">every number '
               "in one CSV</a>.</p>\n")
    out.append(_tail())
    return "".join(out)


def fmt_value(v: float) -> str:
    """Our number for display: 2 decimals from 10 up, else 4."""
    if v is None or not math.isfinite(v):
        return "" if v is None or math.isnan(v) else str(v)
    return f"{v:.2f}" if abs(v) >= 10 else f"{v:.4f}"


def fmt_pm(value: float, half: float) -> str:
    """`` ± half`` with as many decimals as :func:`fmt_value` gives ``value``."""
    if half is None or not math.isfinite(half) or value is None or not math.isfinite(value):
        return ""
    return f" ± {half:.2f}" if abs(value) >= 10 else f" ± {half:.4f}"


def fmt_diff(v: float, like: str = "") -> str:
    """A signed difference for display, with as many decimals as ``like`` (a paper's printed value) has."""
    if v is None or not math.isfinite(v):
        return ""
    if "." in like:
        return f"{v:+.{len(like.split('.')[1])}f}"
    return f"{v:+.2f}" if abs(v) >= 10 else f"{v:+.4f}"


def fmt_like(v: float, like: str) -> str:
    """Our value with as many decimals as a paper's printed value ``like``."""
    if v is None or not math.isfinite(v) or "." not in like:
        return fmt_value(v)
    return f"{v:.{len(like.split('.')[1])}f}"
