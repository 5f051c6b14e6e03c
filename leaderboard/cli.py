"""``leaderboard``: the papers' published tables beside our scores, as a static site.

    leaderboard render --out site/                          # the paper tables alone
    leaderboard render --results results/ --out site/       # + every results JSON in results/
    leaderboard render --results results/ --out site/ --test-set-alias realesrgan-x4=div2k-val \\
        --method-alias my-dpir=DPIR
    leaderboard reproduce --list                            # every paper table setting
    leaderboard reproduce diff-restorer:table-i:diffrestorer-haze --method diffrestorer \\
        --checkpoint runs/dr --source /data/RESIDE/SOTS/outdoor --work repro/dr-haze [--dry-run]

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
    parser.add_argument("--debug", action="store_true", help="traceback of an unexpected error (or PIRS_DEBUG=1)")
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
    _reproduce_parser(sub)
    return parser


REPRODUCE_EPILOG = """\
stages (each writes what its own command writes; a rerun skips what is complete):
  WORK/testset/                 degrade testset ID --source DIR (reused when its manifest names ID)
  WORK/predictions/NAME/        restore predict (the checkpoint's config protocol; resumes image by image),
                                or bench baseline (identity, bicubic, lanczos, spandrel --checkpoint FILE)
  WORK/results/NAME.json        bench evaluate with exactly the metrics of the table
  WORK/leaderboard/             leaderboard render of that test set, NAME matched to the paper's method
  WORK/reproduction.md, .json   paper value, ours, difference, better or worse by the metric's direction
"""


def _reproduce_parser(sub) -> None:
    p = sub.add_parser("reproduce", help="reproduce one paper table setting: test set, predictions, scores, view",
                       description="Build or reuse a paper table setting's test set, restore it with a method and "
                                   "checkpoint under the method's protocol, score exactly the table's metrics and "
                                   "show our numbers beside the paper's.",
                       epilog=REPRODUCE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("setting", nargs="?", help="PAPER:TABLE:TEST_SET (see --list), PAPER:TEST_SET, or a test-set id "
                                              "that one table holds")
    p.add_argument("--list", action="store_true", help="list every paper table setting and exit")
    p.add_argument("--method", help="spire, xpsr, diffrestorer, dpir, identity, bicubic, lanczos or spandrel")
    p.add_argument("--checkpoint", help="a run folder of `restore train` (pirs methods) or a weights file (spandrel)")
    p.add_argument("--source", help="the test set's raw data folder (not needed once WORK/testset is built)")
    p.add_argument("--testset", help="an already built test-set folder to use instead of WORK/testset")
    p.add_argument("--work", help="working folder for the four stages")
    p.add_argument("--name", help="our row's method name (default: the method, or spandrel's architecture)")
    p.add_argument("--paper-method", help="the paper row to compare with (default: the method's paper name)")
    p.add_argument("--base", help="local base-model folder (default: the one the checkpoint trained on)")
    p.add_argument("--weights-dir", help="metric weights folder (as bench evaluate)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--workers", type=int, default=1, help="processes building the test set (default 1)")
    p.add_argument("--limit", type=int, help="only the first N test images (a quick look; marked partial)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling noise (default 0)")
    p.add_argument("--metrics", help="score only these of the table's metrics (comma-separated), e.g. while some "
                                     "weight files are missing; the view says which were left out")
    for flag, typ in (("--steps", int), ("--guidance-scale", float), ("--tile-size", int), ("--tile-overlap", int),
                      ("--color-fix", str), ("--process-size", int)):
        p.add_argument(flag, type=typ, default=None, help="override the protocol's " + flag[2:].replace("-", "_"))
    p.add_argument("--dry-run", action="store_true", help="print the plan and load nothing")
    p.add_argument("--json", action="store_true", help="with --dry-run or --list: print JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def cmd_reproduce(args) -> int:
    import json

    from .reproduce import ReproduceConfig, ReproduceError, format_plan, plan, run, table_settings

    if args.list:
        settings = table_settings()
        if args.json:
            print(json.dumps([{"key": s.key, "paper": s.paper, "table": s.table, "label": s.label,
                               "test_set": s.test_set, "metrics": [m for m, _ in s.metrics],
                               "methods": s.methods} for s in settings], indent=2))
            return 0
        width = max(len(s.key) for s in settings)
        for s in settings:
            print(f"{s.key:{width}s}  {s.label}: {', '.join(m for m, _ in s.metrics)}")
        return 0
    missing = [f for f, v in (("SETTING", args.setting), ("--method", args.method), ("--work", args.work)) if not v]
    if missing:
        print(f"leaderboard reproduce: error: {', '.join(missing)} required (see --list and --help)", file=sys.stderr)
        return 2
    protocol = {k: getattr(args, k) for k in ("steps", "guidance_scale", "tile_size", "tile_overlap", "color_fix",
                                               "process_size") if getattr(args, k) is not None}
    cfg = ReproduceConfig(setting=args.setting, method=args.method, work=args.work, checkpoint=args.checkpoint,
                          source=args.source, testset=args.testset, name=args.name, paper_method=args.paper_method,
                          base=args.base, weights_dir=args.weights_dir, device=args.device, workers=args.workers,
                          limit=args.limit, seed=args.seed, protocol=protocol, progress=not args.quiet,
                          metrics=[m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None)
    try:
        if args.dry_run:
            p = plan(cfg)
            print(json.dumps(p, indent=2, default=str) if args.json else format_plan(p))
            return 0
        out = run(cfg, log=(lambda m: None) if args.quiet else (lambda m: print(m, flush=True)))
    except (ReproduceError, ValueError, FileNotFoundError, FileExistsError, RuntimeError, KeyError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"leaderboard reproduce: error: {msg}", file=sys.stderr)
        return 2
    print(out["view"], end="")
    print(f"written: {out['paths']['view_md']}, {out['paths']['leaderboard']}/index.html")
    return 0


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
    from pirs.benchmark.cli import quiet_pipe  # a closed pipe (leaderboard reproduce --list | head) ends quietly
    from pirs.degrade.fs import run_cli

    if args.command == "render":
        return run_cli("leaderboard render", quiet_pipe(cmd_render), args)
    if args.command == "reproduce":
        return run_cli("leaderboard reproduce", quiet_pipe(cmd_reproduce), args)
    parser.print_help(sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
