"""`leaderboard render`: merging paper tables with results files, Markdown/CSV/HTML/PNG, reproduction, errors."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from pirs.leaderboard import cli
from pirs.leaderboard.merge import Aliases, LeaderboardError, load_results, merge, normalize, reproduction
from pirs.leaderboard.papers import load_paper_tables
from pirs.leaderboard.render import read_csv, render

EVIL = '<script>alert("x")</script> & <b>bold</b>'


# ---------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def scored(tmp_path_factory) -> Path:
    """A real results file: bicubic on a 4-image Real-ESRGAN test set (folder 'ref'), psnr, ssim, psnr-ycbcr."""
    from pirs.benchmark.baselines import write_baseline
    from pirs.benchmark.evaluate import EvalConfig, evaluate
    from pirs.degrade.build import BuildConfig, build

    root = tmp_path_factory.mktemp("scored")
    build(BuildConfig(pipeline="realesrgan", out=str(root / "ref"), num_samples=4, crop_size=32, flip_prob=0.0,
                      progress=False))
    write_baseline("bicubic", root / "ref", root / "pred", progress=False)
    evaluate(EvalConfig(predictions=str(root / "pred"), reference=str(root / "ref"), metrics="psnr,ssim,psnr-ycbcr",
                        out=str(root / "results" / "bicubic.json"), progress=False, cache_dir=None, device="cpu"))
    return root / "results" / "bicubic.json"


def variant(src: Path, dest: Path, edit) -> Path:
    """A copy of a results file with ``edit(dict)`` applied."""
    d = json.loads(src.read_text())
    edit(d)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(d, indent=1))
    return dest


def set_method(name: str):
    def edit(d):
        d["method"]["name"] = name
    return edit


@pytest.fixture(scope="module")
def papers_site(tmp_path_factory) -> Path:
    """The paper tables alone, rendered once (all test sets, with plots)."""
    out = tmp_path_factory.mktemp("site") / "site"
    render(out)
    return out


def md_tables(text: str) -> list[tuple[list[str], list[list[str]]]]:
    """Every pipe table of a Markdown page (one per protocol group): header cells and body rows."""
    tables, block = [], []
    for ln in [*text.splitlines(), ""]:
        if ln.startswith("| "):
            block.append([c.strip() for c in re.split(r"(?<!\\)\|", ln)[1:-1]])
        elif block:
            tables.append((block[0], block[2:]))
            block = []
    return tables


def md_table(text: str) -> tuple[list[str], list[list[str]]]:
    """The first pipe table of a Markdown page: header cells and body rows."""
    return md_tables(text)[0]


def number(cell: str) -> float:
    """A table cell's value: bold and our ± interval stripped."""
    return float(cell.strip("*").split(" ± ")[0])


# ---------------------------------------------------------------------------------------------- paper tables alone


def test_render_papers_only(papers_site):
    papers = load_paper_tables()
    test_sets = list(dict.fromkeys(papers["test_set"]))
    index = (papers_site / "index.html").read_text()
    for ts in test_sets:
        for f in ("index.html", "leaderboard.md", "leaderboard.csv"):
            assert (papers_site / ts / f).is_file(), (ts, f)
        assert f'href="{ts}/index.html"' in index
        assert f"]({ts}/leaderboard.md)" in (papers_site / "index.md").read_text()
    assert not (papers_site / "reproduction.csv").exists()
    manifest = json.loads((papers_site / "manifest.json").read_text())
    assert all((papers_site / f).is_file() for f in manifest["files"])
    # div2k-val: DPIR and XPSR both, in one page
    text = (papers_site / "div2k-val" / "leaderboard.md").read_text()
    assert "DPIR" in text and "XPSR" in text and "SeeSR" in text
    # rtts prints "-" for FID, LPIPS, DISTS: no plot, and the page says why
    assert not (papers_site / "rtts" / "perception-distortion.png").exists()
    assert "no perception–distortion plot" in (papers_site / "rtts" / "index.html").read_text()


def test_markdown_best_respects_direction(papers_site):
    checked = 0
    for md_file in sorted(papers_site.glob("*/leaderboard.md")):
        for head, body in [t for t in md_tables(md_file.read_text()) if t[0][:2] == ["Method", "Source"]]:
            for j, h in enumerate(head):
                if not h.endswith(("↑", "↓")):
                    continue
                cells = [row[j] for row in body]
                values = [number(c) for c in cells if c != "–"]
                bold = [number(c) for c in cells if c.startswith("**")]
                if not values:
                    assert not bold
                    continue
                best = max(values) if h.endswith("↑") else min(values)
                assert bold and all(b == best for b in bold), (md_file, h, bold, best)
                assert sum(v == best for v in values) == len(bold)
                checked += 1
    assert checked > 50
    # spot values: on div2k-val the best PSNR is StableSR's 22.87 (higher), the best LPIPS DPIR's 0.3622 (lower)
    head, body = md_table((papers_site / "div2k-val" / "leaderboard.md").read_text())
    psnr, lpips = head.index("PSNR ↑"), head.index("LPIPS ↓")
    assert {r[0] for r in body if r[psnr].startswith("**")} == {"StableSR"}
    assert {(r[0], r[lpips]) for r in body if r[lpips].startswith("**")} == {("DPIR", "**0.3622**")}


def test_csv_round_trip(papers_site):
    papers = load_paper_tables()
    df = merge(papers, [])
    back = read_csv(papers_site / "leaderboard.csv")
    assert len(back) == len(papers) == len(df)
    assert list(back["value_text"]) == list(df["value_text"])
    assert np.allclose(back["value"], df["value"], equal_nan=True)
    for col in ("test_set", "method", "source", "metric", "direction", "conventions", "fingerprint"):
        assert list(back[col]) == list(df[col]), col
    one = read_csv(papers_site / "div2k-val" / "leaderboard.csv")
    assert set(one["test_set"]) == {"div2k-val"}
    assert len(one) == int((papers["test_set"] == "div2k-val").sum())
    row = one[(one["source"] == "DPIR") & (one["method"] == "SUPIR") & (one["metric"] == "dists")].iloc[0]
    assert row["value_text"] == "0.1873" and row["value"] == pytest.approx(0.1873)


def test_plot_png_is_nontrivial(papers_site):
    from PIL import Image

    png = papers_site / "div2k-val" / "perception-distortion.png"
    assert png.stat().st_size > 15_000
    with Image.open(png) as im:
        assert im.format == "PNG" and im.width >= 600 and im.height >= 400
        a = np.asarray(im.convert("RGB"))
    colours = np.unique(a.reshape(-1, 3), axis=0)
    assert len(colours) > 50 and a.std() > 10
    # the blue DPIR markers are there (C0 = #1f77b4)
    assert (np.abs(a.astype(int) - [31, 119, 180]).sum(axis=-1) < 30).sum() > 100


# ---------------------------------------------------------------------------------------------- with results


def test_render_with_results_own_test_set(scored, tmp_path):
    out = tmp_path / "site"
    summary = render(out, [scored.parent], test_sets=["ref"], plots=True)
    assert "ref" in summary["test_sets"] and summary["results"] == 1
    text = (out / "ref" / "leaderboard.md").read_text()
    head, body = md_table(text)
    assert head[:2] == ["Method", "Source"] and "PSNR ↑" in head and "PSNR (YCbCr Y) ↑" in head
    assert body == [[c for c in body[0]]] and body[0][0] == "★ bicubic" and body[0][1] == "pirs"
    d = json.loads(scored.read_text())
    low, high = d["metrics"]["psnr"]["ci95"]
    assert body[0][head.index("PSNR ↑")] == f"**{d['metrics']['psnr']['value']:.2f} ± {(high - low) / 2:.2f}**"
    # one method, psnr/ssim only: no plot, and the page says so
    assert "no perception–distortion plot" in text and not (out / "ref" / "perception-distortion.png").exists()
    # nothing of ours meets a paper table: the index says how to alias
    assert "--test-set-alias" in (out / "index.md").read_text()
    html = (out / "ref" / "index.html").read_text()
    assert 'class="ours"' in html and "badge" in html
    csv = read_csv(out / "ref" / "leaderboard.csv")
    assert set(csv["source"]) == {"pirs"} and set(csv["fingerprint"]) == {d["test_set"]["fingerprint"]}
    assert csv.set_index("metric").loc["psnr", "value"] == d["metrics"]["psnr"]["value"]


def test_conventions_note_when_mixing(scored, tmp_path):
    out = tmp_path / "site"
    render(out, [scored], aliases=Aliases(test_sets={"ref": "div2k-val"}), test_sets=["div2k-val"], plots=False)
    md_text = (out / "div2k-val" / "leaderboard.md").read_text()
    html = (out / "div2k-val" / "index.html").read_text()
    tables = md_tables(md_text)
    head, body = tables[0]  # DPIR's group
    ours_head, ours_body = next(t for t in tables if t[1] and t[1][0][0] == "★ bicubic")
    # DPIR's PSNR (channel unspecified) and our RGB psnr are not one column
    assert "PSNR · DPIR ↑" in head and "PSNR · pirs ↑" in ours_head and "PSNR ↑" not in head + ours_head
    for text in (md_text.replace("\\", ""), html):
        assert "split into 2 columns" in text and "channel=unspecified" in text and "color_space=RGB" in text
    ours = ours_body[0]
    assert "PSNR · DPIR ↑" not in ours_head and ours[ours_head.index("PSNR · pirs ↑")].startswith("**")
    # the best of the paper column is still the paper's best, not ours (26 dB would beat 22.87)
    dpir_col = [r[head.index("PSNR · DPIR ↑")] for r in body]
    assert [c for c in dpir_col if c.startswith("**")] == ["**22.87**"]
    assert 'data-col="psnr.1"' in html and 'data-col="psnr.2"' in html and 'class="num split"' in html
    assert "shown here as &#x27;div2k-val&#x27;" in html or "shown here as 'div2k-val'" in html
    # without the alias nothing mixes: our test set stands alone
    out2 = tmp_path / "site2"
    render(out2, [scored], test_sets=["ref"], plots=False)
    assert "split into" not in (out2 / "ref" / "leaderboard.md").read_text()


def test_unstated_conventions_note(papers_site):
    # XPSR and DPIR both print CLIPIQA on div2k-val, neither says how it was computed
    text = (papers_site / "div2k-val" / "leaderboard.md").read_text()
    assert re.search(r"'CLIPIQA' pools DPIR, XPSR.*unspecified", text)


def test_reproduction_values(scored, tmp_path):
    d = json.loads(scored.read_text())
    ours_psnr, ours_y = d["metrics"]["psnr"]["value"], d["metrics"]["psnr-ycbcr"]["value"]
    real = variant(scored, tmp_path / "results" / "real.json", set_method("real-esrgan"))
    results = load_results([real])
    df = merge(load_paper_tables(), results, Aliases(test_sets={"ref": "div2k-val"}))
    rep = reproduction(df)
    # DPIR prints Real-ESRGAN on DIV2K-Val with PSNR 22.62: compared with our psnr and psnr-ycbcr
    assert set(rep["our_metric"]) == {"psnr", "psnr-ycbcr"}
    assert set(rep["paper"]) == {"DPIR"} and set(rep["method"]) == {"Real-ESRGAN"}
    r = rep.set_index("our_metric")
    assert r.loc["psnr", "paper_value"] == pytest.approx(22.62)
    assert r.loc["psnr", "our_value"] == ours_psnr
    assert r.loc["psnr", "difference"] == pytest.approx(ours_psnr - 22.62)
    assert r.loc["psnr", "relative_difference"] == pytest.approx((ours_psnr - 22.62) / 22.62)
    assert r.loc["psnr-ycbcr", "difference"] == pytest.approx(ours_y - 22.62)
    assert r.loc["psnr", "closer"] == ("better" if ours_psnr > 22.62 else "worse")
    assert "channel=unspecified" in r.loc["psnr", "paper_conventions"]

    # rendered: per test set and site-wide, Markdown and HTML
    out = tmp_path / "site"
    summary = render(out, [real], aliases=Aliases(test_sets={"ref": "div2k-val"}), test_sets=["div2k-val"],
                     plots=False)
    assert summary["reproduction"] == 2
    csv = __import__("pandas").read_csv(out / "div2k-val" / "reproduction.csv")
    assert csv.set_index("our_metric").loc["psnr", "difference"] == pytest.approx(ours_psnr - 22.62)
    assert (out / "reproduction.csv").is_file()
    md_text = (out / "div2k-val" / "leaderboard.md").read_text()
    assert "## Reproduction" in md_text
    line = next(ln for ln in md_text.splitlines() if ln.startswith("| Real-ESRGAN") and "| psnr | psnr |" in ln)
    assert f"| 22.62 | {ours_psnr:.2f} | {ours_psnr - 22.62:+.2f} |" in line
    assert "<h2>Reproduction</h2>" in (out / "div2k-val" / "index.html").read_text()


def test_reproduction_method_alias_and_normalisation(scored, tmp_path):
    a = variant(scored, tmp_path / "r" / "a.json", set_method("my-bicubic-run"))
    b = variant(scored, tmp_path / "r" / "b.json", lambda d: (set_method("STABLE SR")(d),
                                                              d["test_set"].__setitem__("name", "DIV2K_Val")))
    results = load_results([a, b])
    aliases = Aliases(test_sets={"REF": "div2k-val"}, methods={"My-Bicubic-Run": "SUPIR"})
    df = merge(load_paper_tables(), results, aliases)
    # 'DIV2K_Val' meets 'div2k-val' without an alias; 'ref' through one (keys matched case-insensitively)
    assert set(df.loc[df["source"] == "pirs", "test_set"]) == {"div2k-val"}
    rep = reproduction(df, aliases)
    assert set(zip(rep["our_method"], rep["method"], rep["paper"], strict=True)) == {
        ("my-bicubic-run", "SUPIR", "DPIR"), ("STABLE SR", "StableSR", "DPIR")}
    # without the method alias only the normalised name matches
    assert set(reproduction(df)["our_method"]) == {"STABLE SR"}
    assert normalize("Real-ESRGAN") == normalize("real esrgan") == "realesrgan"


def test_alias_file(scored, tmp_path):
    from pirs.leaderboard.merge import load_alias_file

    f = tmp_path / "aliases.yaml"
    f.write_text("test_sets:\n  ref: div2k-val\nmethods:\n  bicubic: SUPIR\n")
    out = tmp_path / "site"
    assert cli.main(["render", "--results", str(scored), "--out", str(out), "--aliases", str(f), "--test-set",
                     "div2k-val", "--no-plots", "--quiet"]) == 0
    assert (out / "div2k-val" / "reproduction.csv").is_file()
    bad = tmp_path / "bad.yaml"
    bad.write_text("testsets:\n  ref: div2k-val\n")
    with pytest.raises(LeaderboardError, match=r"bad\.yaml: unknown field 'testsets'"):
        load_alias_file(bad)


def test_html_escaping(scored, tmp_path):
    evil = variant(scored, tmp_path / "results" / "evil.json", set_method(EVIL))
    out = tmp_path / "site"
    render(out, [evil], aliases=Aliases(test_sets={"ref": "div2k-val"}), test_sets=["div2k-val"], plots=True)
    for page in (out / "div2k-val" / "index.html", out / "index.html"):
        html = page.read_text()
        assert html.count("<script") == 1 and html.count("</script>") == 1   # only the page's own sort script
        assert "<b>" not in html and "alert(" not in html.split("<script>")[1].split("</script>")[0]
    html = (out / "div2k-val" / "index.html").read_text()
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in html
    assert "Content-Security-Policy" in html and "script-src &#x27;sha256-" in html
    md_text = (out / "div2k-val" / "leaderboard.md").read_text()
    assert "<script>" not in md_text and "&lt;script&gt;" in md_text
    # the CSV keeps the name as it is (data, not markup)
    assert EVIL in set(read_csv(out / "div2k-val" / "leaderboard.csv")["method"])


def test_csp_hashes_match_inline_script():
    import base64
    import hashlib

    from pirs.leaderboard import html as H

    for text in (H.SCRIPT, H.STYLE):
        digest = base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in H.CSP


# ---------------------------------------------------------------------------------------------- errors and CLI


def test_malformed_results_error_names_file_and_field(scored, tmp_path, capsys):
    bad = variant(scored, tmp_path / "results" / "broken.json", lambda d: d["metrics"]["psnr"].pop("direction"))
    with pytest.raises(LeaderboardError, match=r"broken\.json: field 'metrics\.psnr\.direction' is missing"):
        render(tmp_path / "site", [tmp_path / "results"])
    assert not (tmp_path / "site").exists()   # validated before anything is written
    assert cli.main(["render", "--results", str(bad), "--out", str(tmp_path / "site")]) == 2
    err = capsys.readouterr().err
    assert "broken.json" in err and "metrics.psnr.direction" in err
    # not JSON at all; an empty folder; a missing path
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x.json").write_text("{not json")
    assert cli.main(["render", "--results", str(tmp_path / "junk"), "--out", str(tmp_path / "s2")]) == 2
    assert "x.json: not valid JSON" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert cli.main(["render", "--results", str(tmp_path / "empty"), "--out", str(tmp_path / "s3")]) == 2
    assert "no results files" in capsys.readouterr().err
    assert cli.main(["render", "--results", str(tmp_path / "nope"), "--out", str(tmp_path / "s4")]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_cli_help_and_usage(capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0 and "render" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        cli.main(["render", "--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and "--test-set-alias" in out and "conventions" in out
    assert cli.main([]) == 2
    assert cli.main(["render", "--out", str(tmp_path / "s"), "--test-set-alias", "nonsense", "--quiet"]) == 2
    assert "expected OURS=PAPER" in capsys.readouterr().err
    assert cli.main(["render", "--out", str(tmp_path / "s"), "--test-set", "nope", "--quiet"]) == 2
    assert "no such test set" in capsys.readouterr().err


def test_out_folder_rules(tmp_path, capsys):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert cli.main(["render", "--out", str(foreign), "--test-set", "realsr", "--no-plots", "--quiet"]) == 2
    assert "not written by 'leaderboard render'" in capsys.readouterr().err
    assert (foreign / "notes.txt").read_text() == "mine"
    site = tmp_path / "site"
    assert cli.main(["render", "--out", str(site), "--test-set", "realsr", "--test-set", "div2k-val", "--no-plots",
                     "--quiet"]) == 0
    assert (site / "realsr" / "index.html").is_file()
    (site / "extra.txt").write_text("kept")
    # a re-render replaces the earlier files: realsr is gone, what we did not write stays
    assert cli.main(["render", "--out", str(site), "--test-set", "div2k-val", "--no-plots", "--quiet"]) == 0
    assert not (site / "realsr").exists() and (site / "div2k-val" / "index.html").is_file()
    assert (site / "extra.txt").read_text() == "kept"


def test_nonfinite_and_missing_values(scored, tmp_path):
    inf = variant(scored, tmp_path / "results" / "inf.json",
                  lambda d: (set_method("oracle")(d), d["metrics"]["psnr"].__setitem__("value", "inf")))
    df = merge(None, load_results([inf]))
    v = df.set_index("metric").loc["psnr", "value"]
    assert math.isinf(v)
    out = tmp_path / "site"
    render(out, [inf], include_papers=False, plots=False)
    assert "inf" in (out / "ref" / "leaderboard.md").read_text()


# ---------------------------------------------------------------------------------------------- protocols, rows, plots


def test_best_is_marked_within_each_protocol_only(papers_site):
    """DPIR's and XPSR's DIV2K-Val are different protocols (provenance.yaml): each group has its own best."""
    md_text = (papers_site / "div2k-val" / "leaderboard.md").read_text()
    tables = [t for t in md_tables(md_text) if t[0][:2] == ["Method", "Source"]]
    assert len(tables) == 2 and {t[1][0][1] for t in tables} == {"DPIR", "XPSR"}
    bold_musiq = [r[h.index("MUSIQ ↑")] for h, body in tables for r in body if r[h.index("MUSIQ ↑")].startswith("**")]
    assert sorted(bold_musiq) == ["**68.71**", "**71.94**"]  # one per group, never one across them
    assert "### DPIR, Main Results" in md_text and "### XPSR, Main Results: DIV2K-Val" in md_text
    html = (papers_site / "div2k-val" / "index.html").read_text()
    assert html.count("<tbody data-protocol=") == 2 and "not ranked against each other" in html
    single = (papers_site / "diffrestorer-haze" / "leaderboard.md").read_text()
    assert "###" not in single.split("## Conventions")[0]  # one protocol: one table, no group heading


def test_rows_are_ordered_by_the_first_metric_within_each_group(papers_site):
    checked = 0
    for md_file in sorted(papers_site.glob("*/leaderboard.md")):
        for head, body in [t for t in md_tables(md_file.read_text()) if t[0][:2] == ["Method", "Source"]]:
            j = next(i for i, h in enumerate(head) if h.endswith(("↑", "↓")))
            values = [number(r[j]) for r in body if r[j] != "–"]
            want = sorted(values, reverse=head[j].endswith("↑"))
            assert values == want, (md_file, head[j], values)
            assert all(r[j] != "–" for r in body[: len(values)])  # rows without it come last
            checked += 1
    assert checked >= 20


def test_two_results_of_one_method_are_one_row(scored, tmp_path):
    older = variant(scored, tmp_path / "r" / "a.json", lambda d: d.update(date="2020-01-01T00:00:00+00:00"))
    newer = variant(scored, tmp_path / "r" / "b.json", lambda d: d.update(date="2030-01-01T00:00:00+00:00"))
    out = tmp_path / "site"
    render(out, [older, newer], test_sets=["ref"], plots=False)
    head, body = md_table((out / "ref" / "leaderboard.md").read_text())
    assert len(body) == 1 and body[0][0] == "★ bicubic"
    text = (out / "ref" / "leaderboard.md").read_text().replace("\\", "")
    assert "2 results files under the same conventions, shown as one row" in text and "identical values" in text

    def worse(d):
        d.update(date="2020-01-01T00:00:00+00:00")
        d["metrics"]["psnr"]["value"] -= 1.0
    differing = variant(scored, tmp_path / "r" / "c.json", worse)
    render(tmp_path / "site2", [differing, newer], test_sets=["ref"], plots=False)
    text = (tmp_path / "site2" / "ref" / "leaderboard.md").read_text().replace("\\", "")
    _, body = md_table(text)
    d = json.loads(scored.read_text())
    assert len(body) == 1 and body[0][2].startswith(f"**{d['metrics']['psnr']['value']:.2f}")  # the newest value
    assert "their values differ" in text and "older: psnr" in text and "c.json" in text

    def cropped(d):
        d["conventions"]["psnr"]["crop_border"] = 4
    other = variant(scored, tmp_path / "r" / "d.json", cropped)
    render(tmp_path / "site3", [other, newer], test_sets=["ref"], plots=False)
    _, body = md_table((tmp_path / "site3" / "ref" / "leaderboard.md").read_text())
    assert len(body) == 2  # another convention: another row


def test_our_values_show_their_interval(scored, tmp_path):
    render(tmp_path / "site", [scored], test_sets=["ref"], plots=False)
    html = (tmp_path / "site" / "ref" / "index.html").read_text()
    d = json.loads(scored.read_text())
    low, high = d["metrics"]["ssim"]["ci95"]
    assert f"{d['metrics']['ssim']['value']:.4f} ± {(high - low) / 2:.4f}" in html
    assert f"95% bootstrap interval [{low:.6g}, {high:.6g}]" in html
    csv = read_csv(tmp_path / "site" / "ref" / "leaderboard.csv").set_index("metric")
    assert csv.loc["ssim", "ci_low"] == pytest.approx(low) and csv.loc["ssim", "std"] == pytest.approx(
        d["metrics"]["ssim"]["std"])


def test_plots_put_fidelity_against_perception_with_labels_clear_of_each_other_and_of_points(tmp_path):
    from pirs.benchmark import registry
    from pirs.leaderboard.plots import DISTORTION, PERCEPTION, choose_axes, perception_distortion_plot

    assert all(registry.get(m).role == registry.FIDELITY for m in DISTORTION)
    assert all(registry.get(m).role == registry.PERCEPTUAL for m in PERCEPTION)
    df = merge(load_paper_tables(), [])
    haze = choose_axes(df[df["test_set"] == "diffrestorer-haze"])  # FID, LPIPS, DISTS, NIQE, MUSIQ, CLIPIQA
    assert haze.x is None and "no fidelity metric" in haze.reason
    checked = 0
    for ts in ("mscoco-val3000-parameterized", "mscoco-val3000-realesrgan", "div2k-val"):
        sub = df[df["test_set"] == ts]
        labels = {r: f"{m} [{p}]" if p else m for r, m, p in zip(sub["row"], sub["method"], sub["prompts"],
                                                                  strict=True)}
        choice = perception_distortion_plot(sub, tmp_path / f"{ts}.png", ts, labels)
        assert choice.x == "psnr" and choice.y == "lpips"
        boxes = [b for _, b in choice.label_boxes]
        assert len(boxes) + len(choice.unplaced) == choice.points and not choice.unplaced
        for i, a in enumerate(boxes):
            for b in boxes[i + 1:]:
                assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]), (ts, a, b)
            for p in choice.point_boxes:
                assert not (a[0] < p[2] and p[0] < a[2] and a[1] < p[3] and p[1] < a[3]), (ts, a, p)
            checked += 1
    assert checked >= 20


def test_a_closed_pipe_ends_leaderboard_quietly():
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "pirs.leaderboard.cli", "reproduce", "--list"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 0 and err == "", err
