"""``leaderboard``: the papers' published tables beside our scores, as a static site.

    leaderboard render --out site/                          # the paper tables alone
    leaderboard render --results results/ --out site/       # + every results JSON in results/
    leaderboard render --results results/ --out site/ --test-set-alias realesrgan-x4=div2k-val \\
        --method-alias my-dpir=DPIR

Exit status: 0 on success, 2 on bad input (a malformed results file, a bad alias, a folder
that is not ours to overwrite), with one message naming the file and the field.
"""

from __future__ import annotations

import argparse
import sys

EPILOG = """\
output (under --out):
  index.html, index.md        every test set, with links
  leaderboard.csv             every number: test_set, method, source (paper or "pirs"), metric, value,
                              value_text, direction, conventions, conventions_id, fingerprint, ...
  reproduction.csv            paper value, our value, difference (where our method and test set are in a paper)
  TEST_SET/index.html         sortable table (our rows marked), notes, plot, reproduction, sources
  TEST_SET/leaderboard.md     the same as Markdown (best per column in bold, arrows for direction)
  TEST_SET/leaderboard.csv    that test set's rows of leaderboard.csv
  TEST_SET/perception-distortion.png

conventions: a metric computed under different conventions on one test set (a paper's PSNR of
unstated channel beside our RGB psnr) is split into one column per convention, each ranked on
its own, and the page says why. Our psnr-ycbcr is its own metric (its own column).

matching: a test set has one id everywhere. A standard test set built with `degrade testset ID`
(ids: `degrade testset --list`, the papers' test-set ids: div2k-val, realsr, diffrestorer-haze,
mscoco-val3000-parameterized, ...) writes its id into the shards' manifest, `bench evaluate` copies
it into the results' test_set.name, and its scores land on that paper page with no alias. Older
names of the standard sets (dr-haze, coco-val-parameterized, ...) are resolved to their ids.
Results' test_set.name and method.name meet the papers' ids and method names case-insensitively,
ignoring everything but letters and digits. A test set of your own (a folder made with `degrade
build` or `degrade ingest`, whose name is the folder's) needs an alias to meet a paper table:
--test-set-alias OURS=PAPER_ID, --method-alias OURS=PAPER_METHOD, or --aliases FILE (YAML):
  test_sets: {my-div2k-folder: div2k-val}
  methods: {my-dpir: DPIR}
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="leaderboard", description="pirs leaderboard: the papers' published tables beside our scores.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    r = sub.add_parser("render", help="write the leaderboard site (Markdown, CSV, HTML, plots)",
                       description="Merge the paper tables and our results files into one long table and write, per "
                                   "test set, a Markdown table, a CSV, a sortable HTML page and a perception-"
                                   "distortion plot, plus an index.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("--results", action="append", default=[], metavar="PATH",
                   help="a results JSON of 'bench evaluate', or a folder of them (*.json); repeatable. Without it: "
                        "the paper tables alone")
    r.add_argument("--out", required=True, help="output folder (new, empty, or an earlier render's)")
    r.add_argument("--test-set-alias", action="append", default=[], metavar="OURS=PAPER_ID",
                   help="show results on test set OURS (results' test_set.name: the folder name of a test set "
                        "of your own) as the paper test set PAPER_ID; not needed for the standard test sets of "
                        "'degrade testset', whose results carry the paper's id; repeatable")
    r.add_argument("--method-alias", action="append", default=[], metavar="OURS=PAPER_METHOD",
                   help="match results' method.name OURS with the papers' PAPER_METHOD in the reproduction view; "
                        "repeatable")
    r.add_argument("--aliases", metavar="FILE", help="a YAML file with 'test_sets' and 'methods' mappings")
    r.add_argument("--papers", metavar="DIR", help="paper tables folder (default: the tables shipped with pirs)")
    r.add_argument("--test-set", action="append", default=[], metavar="ID", dest="test_sets",
                   help="render only this test set (its id as shown, after aliasing); repeatable")
    r.add_argument("--no-papers", action="store_true", help="leave the paper tables out (our results alone)")
    r.add_argument("--no-plots", action="store_true", help="do not draw the perception-distortion plots")
    r.add_argument("--quiet", action="store_true", help="print only errors")
    return parser


def _aliases(args):
    from .merge import Aliases, load_alias_file, parse_alias

    aliases = load_alias_file(args.aliases) if args.aliases else Aliases()
    for text in args.test_set_alias:
        ours, paper = parse_alias(text, "--test-set-alias")
        aliases.test_sets[ours] = paper
    for text in args.method_alias:
        ours, paper = parse_alias(text, "--method-alias")
        aliases.methods[ours] = paper
    return aliases


def cmd_render(args) -> int:
    from .merge import LeaderboardError
    from .render import render

    if args.no_papers and not args.results:
        print("leaderboard render: error: --no-papers needs --results (there would be nothing to render)",
              file=sys.stderr)
        return 2
    log = None if args.quiet else (lambda m: print(m, flush=True))
    try:
        summary = render(args.out, args.results, aliases=_aliases(args), papers_dir=args.papers,
                         include_papers=not args.no_papers, plots=not args.no_plots,
                         test_sets=args.test_sets or None, log=log)
    except (LeaderboardError, FileNotFoundError, ValueError) as e:
        print(f"leaderboard render: error: {e}", file=sys.stderr)
        return 2
    if not args.quiet:
        for note in summary["notes"]:
            print(f"note: {note}")
        print(f"{len(summary['test_sets'])} test sets, {summary['rows']} numbers ({summary['results']} results files, "
              f"{summary['reproduction']} reproduction lines) -> {summary['out']}/index.html")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "render":
        return cmd_render(args)
    parser.print_help(sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
