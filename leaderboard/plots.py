"""The perception–distortion plot of a test set (matplotlib, written as PNG).

One point per leaderboard row that has both metrics: a fidelity ("distortion") metric on the
x axis and a perceptual-quality metric on the y axis (Blau and Michaeli's perception–distortion
plane). The pair is chosen per test set from what its rows report (:func:`choose_axes`): the
pair covering the most rows, earlier pairs of :data:`DISTORTION` x :data:`PERCEPTION` first,
so PSNR against LPIPS where a table has both, else for instance LPIPS against FID. Without two
such metrics reported together by at least two rows there is no plot, and the page says why.

matplotlib is imported only when a plot is drawn, with its object API and the Agg canvas
(no pyplot, no global backend switch).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

#: Fidelity metrics for the x axis, in order of preference.
DISTORTION = ("psnr", "psnr-ycbcr", "psnry", "ssim", "ssim-ycbcr", "ssimc", "lpips", "lpips-vgg", "dists", "clip-i")
#: Perceptual-quality metrics for the y axis, in order of preference.
PERCEPTION = ("lpips", "fid", "musiq", "clipiqa", "niqe", "maniqa", "liqe", "dists", "lpips-vgg", "clip-i")

#: Fewest points worth a plot.
MIN_POINTS = 2


@dataclass
class PlotChoice:
    """The metrics of a plot, or why there is none (``x`` and ``y`` None, ``reason`` set)."""

    x: str | None
    y: str | None
    points: int
    reason: str = ""


def _wide(df: pd.DataFrame) -> pd.DataFrame:
    """One line per leaderboard row, one column per metric (values), for the rows of one test set."""
    sub = df.dropna(subset=["value"])
    return sub.pivot_table(index="row", columns="metric", values="value", aggfunc="first")


def choose_axes(df: pd.DataFrame) -> PlotChoice:
    """The (distortion, perception) pair of metrics with the most rows reporting both."""
    wide = _wide(df)
    best: tuple[int, int, str, str] | None = None
    order = 0
    for x in DISTORTION:
        for y in PERCEPTION:
            if x == y or x not in wide or y not in wide:
                continue
            n = int((wide[x].notna() & wide[y].notna()).sum())
            order += 1
            if best is None or n > best[0]:
                best = (n, order, x, y)
    if best is None:
        present = ", ".join(sorted(wide.columns)) or "none"
        return PlotChoice(None, None, 0, "no perception–distortion plot: the test set has no values for both a "
                          f"fidelity metric ({', '.join(DISTORTION)}) and a perceptual one ({', '.join(PERCEPTION)}); "
                          f"it has values for: {present}")
    n, _, x, y = best
    if n < MIN_POINTS:
        return PlotChoice(None, None, n, f"no perception–distortion plot: fewer than {MIN_POINTS} rows report both "
                          f"{x} and {y} (found {n})")
    return PlotChoice(x, y, n)


def _tex_safe(text: str) -> str:
    """Text for matplotlib without mathtext (a ``$`` would start a formula)."""
    return str(text).replace("\\", "\\\\").replace("$", r"\$")


def perception_distortion_plot(df: pd.DataFrame, out: str | Path, title: str, labels: dict[str, str],
                               choice: PlotChoice | None = None) -> PlotChoice:
    """Draw the plot of one test set's long-table rows to ``out`` (PNG); return the metrics used.

    ``labels`` maps each ``row`` id to the text written beside its point. When the choice
    has no axes, nothing is written and the returned choice carries the reason.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from .merge import OURS, metric_label

    choice = choice or choose_axes(df)
    if choice.x is None:
        return choice
    x, y = choice.x, choice.y
    sub = df.dropna(subset=["value"])
    xs = sub[sub["metric"] == x].drop_duplicates("row").set_index("row")
    ys = sub[sub["metric"] == y].drop_duplicates("row").set_index("row")
    both = [r for r in xs.index if r in ys.index]
    fig = Figure(figsize=(7.5, 5.2), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    sources = list(dict.fromkeys(xs.loc[both, "source"]))
    markers = "osD^vP<>hX"
    for i, source in enumerate(sources):
        rows = [r for r in both if xs.at[r, "source"] == source]
        ours = source == OURS
        ax.scatter([xs.at[r, "value"] for r in rows], [ys.at[r, "value"] for r in rows],
                   marker="*" if ours else markers[i % len(markers)], s=160 if ours else 50,
                   color="#d62728" if ours else f"C{i % 10 if i % 10 != 3 else 9}", edgecolors="black",
                   linewidths=0.5, zorder=3 if ours else 2, label=_tex_safe("pirs (ours)" if ours else source))
        for r in rows:
            text = labels.get(r, r)
            text = text if len(text) <= 28 else text[:27] + "…"
            ax.annotate(_tex_safe(text), (xs.at[r, "value"], ys.at[r, "value"]), textcoords="offset points",
                        xytext=(4, 4), fontsize=7, color="#333333")
    dx, dy = xs["direction"].iloc[0], ys["direction"].iloc[0]
    arrow = {"lower": "↓", "higher": "↑"}
    ax.set_xlabel(f"{metric_label(x)} {arrow[dx]} ({dx} is better)")
    ax.set_ylabel(f"{metric_label(y)} {arrow[dy]} ({dy} is better)")
    ax.set_title(_tex_safe(f"{title}: perception–distortion ({len(both)} methods)"), fontsize=11)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    # the corner where the best methods sit
    ax.annotate("better", xy=(0.98 if dx == "higher" else 0.02, 0.98 if dy == "higher" else 0.02),
                xycoords="axes fraction", ha="right" if dx == "higher" else "left",
                va="top" if dy == "higher" else "bottom", fontsize=8, color="#2ca02c", fontweight="bold")
    mixed = [m for m, part in ((x, xs.loc[both]), (y, ys.loc[both])) if part["conventions_id"].nunique() > 1]
    if mixed:
        fig.text(0.01, 0.005, "Note: " + " and ".join(metric_label(m) for m in mixed)
                 + " combine numbers computed under different conventions (see the table notes).",
                 fontsize=7, color="#8c2d04")
    fig.tight_layout(rect=(0, 0.03 if mixed else 0, 1, 1))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")
    return choice
