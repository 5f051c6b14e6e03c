"""pirs.leaderboard: the papers' published tables beside our scores (``leaderboard render``).

- :mod:`~pirs.leaderboard.papers`: the four papers' main tables as CSV with provenance
  (``load_paper_tables()``).
- :mod:`~pirs.leaderboard.merge`: one long table of paper rows and our results files
  (``merge``), convention-aware columns, and the reproduction view (``reproduction``).
- :mod:`~pirs.leaderboard.render`: the site: per test set Markdown, CSV, sortable HTML
  (:mod:`~pirs.leaderboard.html`) and a perception–distortion plot
  (:mod:`~pirs.leaderboard.plots`), plus an index (``render``).

Nothing heavy is imported here: pandas, PyYAML and matplotlib load when a function needs them.
"""

from __future__ import annotations

__all__ = ["render", "merge", "reproduction", "load_paper_tables"]


def __getattr__(name: str):
    if name == "render":
        from .render import render

        return render
    if name in ("merge", "reproduction"):
        from . import merge as _merge

        return getattr(_merge, name)
    if name == "load_paper_tables":
        from .papers import load_paper_tables

        return load_paper_tables
    raise AttributeError(f"module 'pirs.leaderboard' has no attribute {name!r}")
