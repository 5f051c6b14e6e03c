"""The leaderboard page in a real browser: headless Chromium loads it, sorts columns, and we read the order back.

Chromium is driven without extra Python packages: ``--dump-dom`` prints the DOM after the
page's script has run, and the page sorts from its URL hash through the same handler a
click uses (``#click=lpips`` clicks the LPIPS header's button; ``#sort=method:asc``). The
test is skipped only when no Chromium binary exists (``PIRS_CHROMIUM`` names another one);
the project's test set-up installs Debian's ``chromium``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from pirs.leaderboard.merge import Aliases
from pirs.leaderboard.papers import load_paper_tables
from pirs.leaderboard.render import render

EVIL = '<img src=x onerror="document.title=1"><script>document.body.innerHTML=""</script>'


def chromium() -> str | None:
    for name in (os.environ.get("PIRS_CHROMIUM"), "chromium", "/usr/bin/chromium", "chromium-browser"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


BROWSER = chromium()
pytestmark = pytest.mark.skipif(BROWSER is None, reason="no chromium binary (apt-get install chromium, or set "
                                                       "PIRS_CHROMIUM)")


def dump_dom(page: Path, fragment: str, profile: Path) -> str:
    """The DOM of ``page#fragment`` after its scripts ran, as headless Chromium serializes it."""
    url = page.resolve().as_uri() + (f"#{fragment}" if fragment else "")
    cmd = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
           "--disable-extensions", f"--user-data-dir={profile}", "--virtual-time-budget=5000", "--dump-dom", url]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0 and "<table" in proc.stdout, proc.stderr[-2000:]
    return proc.stdout


class Table(HTMLParser):
    """The leaderboard table of a dumped DOM: header ids and attributes, protocol groups, rows with their cells'
    sort values, classes and text."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.attrs: dict[str, str] = {}
        self.heads: list[dict[str, str]] = []
        self.rows: list[dict] = []
        self.groups: list[str] = []
        self.scripts = 0
        self.images = 0
        self._in = False
        self._thead = False
        self._depth = 0
        self._cell: dict | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        if tag == "script":
            self.scripts += 1
        if tag == "img":
            self.images += 1
        if tag == "table":
            if a.get("id") == "leaderboard":
                self._in, self.attrs = True, a
            if self._in:
                self._depth += 1
        if not self._in:
            return
        if tag == "thead":
            self._thead = True
        elif tag == "tbody":
            self.groups.append(a.get("data-protocol", ""))
        elif tag == "th" and self._thead:
            self.heads.append(a)
        elif tag == "tr" and "data-row" in a:
            self.rows.append({"id": a["data-row"], "ours": "ours" in a.get("class", "").split(), "cells": [],
                              "group": len(self.groups) - 1})
        elif tag == "td" and self.rows:
            self._cell = {"v": a.get("data-v"), "text": "", "best": "best" in a.get("class", "").split(),
                          "title": a.get("title", "")}
            self.rows[-1]["cells"].append(self._cell)

    def handle_endtag(self, tag):
        if tag == "table" and self._in:
            self._depth -= 1
            self._in = self._depth > 0
        if tag == "td":
            self._cell = None
        if tag == "thead":
            self._thead = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"] += data

    def column(self, col: str) -> list[str | None]:
        i = [h.get("data-col") for h in self.heads].index(col)
        return [r["cells"][i]["v"] for r in self.rows]

    def header(self, col: str) -> dict[str, str]:
        return next(h for h in self.heads if h.get("data-col") == col)

    def by_group(self, col: str) -> list[list[float | None]]:
        """A column's values, one list per protocol group, in page order."""
        i = [h.get("data-col") for h in self.heads].index(col)
        return [[float(r["cells"][i]["v"]) if r["cells"][i]["v"] else None for r in self.rows if r["group"] == g]
                for g in range(len(self.groups))]


def numbers(values: list[str | None]) -> list[float | None]:
    return [float(v) if v else None for v in values]


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> tuple[Path, Path]:
    """div2k-val: the DPIR and XPSR rows plus our bicubic scores under a method name full of markup."""
    from pirs.benchmark.baselines import write_baseline
    from pirs.benchmark.evaluate import EvalConfig, evaluate
    from pirs.degrade.build import BuildConfig, build

    root = tmp_path_factory.mktemp("browser")
    build(BuildConfig(pipeline="realesrgan", out=str(root / "ref"), num_samples=4, crop_size=32, flip_prob=0.0,
                      progress=False))
    write_baseline("bicubic", root / "ref", root / "pred", progress=False)
    res = root / "results" / "bicubic.json"
    evaluate(EvalConfig(predictions=str(root / "pred"), reference=str(root / "ref"), metrics="psnr,ssim",
                        out=str(res), method=EVIL, progress=False, cache_dir=None, device="cpu"))
    again = root / "results" / "bicubic-again.json"  # the same evaluation twice: one row on the page
    d = json.loads(res.read_text())
    d["date"] = "2000-01-01T00:00:00+00:00"
    again.write_text(json.dumps(d))
    render(root / "site", [res, again], aliases=Aliases(test_sets={"ref": "div2k-val"}), test_sets=["div2k-val"])
    return root / "site" / "div2k-val" / "index.html", root / "profile"


def expected_lpips_order() -> list[str]:
    p = load_paper_tables()
    p = p[(p["test_set"] == "div2k-val") & (p["metric"] == "lpips")].sort_values("value", kind="stable")
    return list(p["method"])


def test_page_loads_grouped_by_protocol_ordered_and_with_our_row_marked(page):
    html_file, profile = page
    t = Table(dump_dom(html_file, "", profile))
    assert t.attrs.get("data-sort") == ""
    # DPIR's and XPSR's DIV2K-Val are different protocols, ours a third: three groups, our two files one row
    assert len(t.groups) == 3 and t.groups[0].startswith("DPIR,") and t.groups[1].startswith("XPSR,")
    assert t.groups[2].startswith("pirs: test set ref")
    assert len(t.rows) == 9 and [r["ours"] for r in t.rows] == [False] * 8 + [True]
    assert [r["group"] for r in t.rows] == [0] * 5 + [1] * 3 + [2]
    # the markup in the method name stayed text: one script element (the page's own), no image
    assert t.scripts == 1 and t.images == 1            # the one image is the plot
    assert t.rows[-1]["cells"][0]["text"].startswith(EVIL)
    # each group ordered by its first metric, best first: DPIR's by PSNR, XPSR's by CLIPIQA, ours by our PSNR
    assert t.by_group("psnr.1")[0] == sorted(t.by_group("psnr.1")[0], reverse=True)
    assert t.by_group("clipiqa")[1] == sorted(t.by_group("clipiqa")[1], reverse=True)
    # best marked within each group only: MUSIQ has one bold cell in DPIR's group and one in XPSR's
    i = [h.get("data-col") for h in t.heads].index("musiq")
    bold = [(r["group"], r["cells"][i]["v"]) for r in t.rows if r["cells"][i]["best"]]
    assert sorted(bold) == [(0, "71.94"), (1, "68.71")]
    # our values carry their interval; the page says the two results files are one row
    ours = t.rows[-1]["cells"][[h.get("data-col") for h in t.heads].index("psnr.2")]
    assert " ± " in ours["text"] and ours["title"].startswith("95% bootstrap interval")
    assert "2 results files under the same conventions, shown as one row" in html_file.read_text()


def test_click_sorts_best_first_then_reverses(page):
    html_file, profile = page
    t = Table(dump_dom(html_file, "click=lpips", profile))
    assert t.attrs["data-sort"] == "lpips:asc" and t.header("lpips").get("aria-sort") == "ascending"
    vals = numbers(t.column("lpips"))
    present = [v for v in vals if v is not None]
    assert present == sorted(present) and len(present) == 5
    assert vals[5:] == [None] * 4                      # rows without LPIPS stay last
    methods = [r["cells"][0]["text"] for r in t.rows[:5]]
    assert methods == expected_lpips_order() and methods[0] == "DPIR"

    t = Table(dump_dom(html_file, "click=lpips,lpips", profile))
    assert t.attrs["data-sort"] == "lpips:desc" and t.header("lpips").get("aria-sort") == "descending"
    vals = numbers(t.column("lpips"))
    assert [v for v in vals if v is not None] == sorted(present, reverse=True) and vals[5:] == [None] * 4


def test_higher_is_better_sorts_descending_and_split_columns_sort_alone(page):
    html_file, profile = page
    t = Table(dump_dom(html_file, "click=musiq", profile))
    assert t.attrs["data-sort"] == "musiq:desc"
    groups = t.by_group("musiq")  # sorted within each group, never across them
    assert groups[0] == sorted(groups[0], reverse=True) and groups[0][0] == 71.94
    assert groups[1] == sorted(groups[1], reverse=True) and groups[1][0] == 68.71
    assert [r["group"] for r in t.rows] == [0] * 5 + [1] * 3 + [2]
    # our RGB psnr is its own column (psnr.2): sorting it puts our row first in its group, which stays last
    d = json.loads((html_file.parents[2] / "results" / "bicubic.json").read_text())
    t = Table(dump_dom(html_file, "click=psnr.2", profile))
    assert t.attrs["data-sort"] == "psnr.2:desc" and t.rows[-1]["ours"]
    assert float(t.column("psnr.2")[-1]) == d["metrics"]["psnr"]["value"]


def test_sort_by_text_column_from_hash(page):
    html_file, profile = page
    t = Table(dump_dom(html_file, "sort=method:desc", profile))
    assert t.attrs["data-sort"] == "method:desc"
    for g in range(3):
        names = [r["cells"][0]["v"].lower() for r in t.rows if r["group"] == g]
        assert names == sorted(names, reverse=True)
