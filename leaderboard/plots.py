"""The perception–distortion plot of a test set (matplotlib, written as PNG).

One point per leaderboard row that has both metrics: a fidelity ("distortion") metric on the
x axis and a perceptual-quality metric on the y axis (Blau and Michaeli's perception–distortion
plane). Which metric is which is the registry's ``role`` (``pirs.benchmark.registry``): PSNR,
SSIM and their variants are fidelity; LPIPS, DISTS, FID, KID and the no-reference metrics are
perceptual. The pair is chosen per test set from what its rows report (:func:`choose_axes`):
the pair covering the most rows, earlier pairs of :data:`DISTORTION` x :data:`PERCEPTION`
first, so PSNR against LPIPS where a table has both. A test set without a fidelity metric
(Diff-Restorer's tables: FID, LPIPS, DISTS, NIQE, MUSIQ, CLIPIQA) or without two rows
reporting both gets no plot, and the page says why; two perceptual metrics are never plotted
as perception against distortion.

Labels are placed so that none covers another or any point (:func:`place_labels`): each
label tries positions around its point, nearest first, with a leader line when it had to move
away; a label that finds no free place within the axes is left off the plot and listed under
it. The corner where the best methods sit is named in the title, never drawn over the data.

matplotlib is imported only when a plot is drawn, with its object API and the Agg canvas
(no pyplot, no global backend switch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

#: Fidelity metrics for the x axis, in order of preference (registry role "fidelity").
DISTORTION = ("psnr", "psnr-ycbcr", "psnr-rgb", "psnry", "ssim", "ssim-ycbcr", "ssim-rgb", "ssimc", "ms-ssim")
#: Perceptual-quality metrics for the y axis, in order of preference (registry role "perceptual").
PERCEPTION = ("lpips", "dists", "fid", "kid", "musiq", "clipiqa", "clipiqa+", "topiq_nr", "topiq_fr", "niqe",
              "niqe-ycbcr", "maniqa", "liqe", "lpips-vgg", "brisque", "pi")

#: Fewest points worth a plot.
MIN_POINTS = 2


@dataclass
class PlotChoice:
    """The metrics of a plot, or why there is none (``x`` and ``y`` None, ``reason`` set); after drawing, where
    the points and labels went (display pixels) and which labels found no free place."""

    x: str | None
    y: str | None
    points: int
    reason: str = ""
    point_boxes: list[tuple[float, float, float, float]] = field(default_factory=list)
    label_boxes: list[tuple[str, tuple[float, float, float, float]]] = field(default_factory=list)
    unplaced: list[str] = field(default_factory=list)


def _wide(df: pd.DataFrame) -> pd.DataFrame:
    """One line per leaderboard row, one column per metric (values), for the rows of one test set."""
    sub = df.dropna(subset=["value"])
    return sub.pivot_table(index="row", columns="metric", values="value", aggfunc="first")


def choose_axes(df: pd.DataFrame) -> PlotChoice:
    """The (fidelity, perceptual) pair of metrics with the most rows reporting both."""
    wide = _wide(df)
    best: tuple[int, int, str, str] | None = None
    order = 0
    for x in DISTORTION:
        for y in PERCEPTION:
            if x not in wide or y not in wide:
                continue
            n = int((wide[x].notna() & wide[y].notna()).sum())
            order += 1
            if best is None or n > best[0]:
                best = (n, order, x, y)
    if best is None:
        present = ", ".join(sorted(wide.columns)) or "none"
        has_fidelity = any(m in wide for m in DISTORTION)
        why = ("no perceptual metric" if has_fidelity else "no fidelity metric (PSNR, SSIM or a variant): the "
               "metrics reported are all perceptual, and two perceptual metrics are not a perception–distortion "
               "plane")
        return PlotChoice(None, None, 0, f"no perception–distortion plot: {why}; this test set has values for: "
                          f"{present}")
    n, _, x, y = best
    if n < MIN_POINTS:
        return PlotChoice(None, None, n, f"no perception–distortion plot: fewer than {MIN_POINTS} rows report both "
                          f"{x} and {y} (found {n})")
    return PlotChoice(x, y, n)


def _tex_safe(text: str) -> str:
    """Text for matplotlib without mathtext (a ``$`` would start a formula)."""
    return str(text).replace("\\", "\\\\").replace("$", r"\$")


def _overlaps(a: tuple, b: tuple, pad: float = 0.0) -> bool:
    return a[0] < b[2] + pad and b[0] < a[2] + pad and a[1] < b[3] + pad and b[1] < a[3] + pad


def place_labels(ax, points: list[tuple[float, float]], texts: list[str], radius: float,
                 fontsize: float = 7.0) -> tuple[dict[int, tuple], list[int], list[tuple]]:
    """Annotate each point (data coordinates) with its text where it covers no other label, no point and stays
    inside the axes; returns ``(label boxes by index, indices left unlabelled, point boxes)`` in display pixels.

    Candidates: eight directions around the point at growing distances (nearest first); labels of
    points in crowded places are placed first. A label beyond the nearest ring gets a leader line.
    """
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    trans = ax.transData
    pix = [tuple(trans.transform(p)) for p in points]
    point_boxes = [(x - radius, y - radius, x + radius, y + radius) for x, y in pix]
    frame = ax.get_window_extent(renderer)
    inside = (frame.x0 + 2, frame.y0 + 2, frame.x1 - 2, frame.y1 - 2)
    crowd = [sum(math.hypot(px - qx, py - qy) < 60 for qx, qy in pix) for px, py in pix]
    order = sorted(range(len(points)), key=lambda i: (-crowd[i], i))
    directions = [(1, 1), (1, -1), (-1, 1), (-1, -1), (1, 0), (-1, 0), (0, 1), (0, -1)]
    steps = [radius + 3, radius + 12, radius + 24, radius + 40, radius + 60, radius + 85, radius + 115]
    placed: dict[int, tuple] = {}
    unplaced: list[int] = []
    dpi_scale = fig.dpi / 72.0
    for i in order:
        text = ax.annotate(texts[i], points[i], textcoords="offset points", xytext=(0, 0), fontsize=fontsize,
                           color="#333333", zorder=4)
        done = False
        for k, dist in enumerate(steps):
            for dx, dy in directions:
                norm = math.hypot(dx, dy)
                ox, oy = dx / norm * dist, dy / norm * dist
                text.set_position((ox / dpi_scale, oy / dpi_scale))
                text.set_ha("left" if dx > 0 else "right" if dx < 0 else "center")
                text.set_va("bottom" if dy > 0 else "top" if dy < 0 else "center")
                bb = text.get_window_extent(renderer)
                box = (bb.x0, bb.y0, bb.x1, bb.y1)
                if not (box[0] >= inside[0] and box[1] >= inside[1] and box[2] <= inside[2] and box[3] <= inside[3]):
                    continue
                if any(_overlaps(box, pb, 1.0) for pb in point_boxes):
                    continue
                if any(_overlaps(box, lb, 1.0) for lb in placed.values()):
                    continue
                placed[i] = box
                if k > 0:
                    text.remove()
                    text = ax.annotate(texts[i], points[i], textcoords="offset points",
                                       xytext=(ox / dpi_scale, oy / dpi_scale), fontsize=fontsize, color="#333333",
                                       ha=text.get_ha(), va=text.get_va(), zorder=4,
                                       arrowprops={"arrowstyle": "-", "color": "#999999", "lw": 0.6,
                                                   "shrinkA": 0, "shrinkB": radius / dpi_scale})
                done = True
                break
            if done:
                break
        if not done:
            text.remove()
            unplaced.append(i)
    return placed, unplaced, point_boxes


def perception_distortion_plot(df: pd.DataFrame, out: str | Path, title: str, labels: dict[str, str],
                               choice: PlotChoice | None = None) -> PlotChoice:
    """Draw the plot of one test set's long-table rows to ``out`` (PNG); return the metrics used and where the
    points and labels went.

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
    fig = Figure(figsize=(8.0, 5.6), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    sources = list(dict.fromkeys(xs.loc[both, "source"]))
    markers = "osD^vP<>hX"
    size = {True: 160, False: 50}
    for i, source in enumerate(sources):
        rows = [r for r in both if xs.at[r, "source"] == source]
        ours = source == OURS
        ax.scatter([xs.at[r, "value"] for r in rows], [ys.at[r, "value"] for r in rows],
                   marker="*" if ours else markers[i % len(markers)], s=size[ours],
                   color="#d62728" if ours else f"C{i % 10 if i % 10 != 3 else 9}", edgecolors="black",
                   linewidths=0.5, zorder=3 if ours else 2, label=_tex_safe("pirs (ours)" if ours else source))
    dx, dy = xs["direction"].iloc[0], ys["direction"].iloc[0]
    arrow = {"lower": "↓", "higher": "↑"}
    ax.set_xlabel(f"{metric_label(x)} {arrow[dx]} ({dx} is better)")
    ax.set_ylabel(f"{metric_label(y)} {arrow[dy]} ({dy} is better)")
    corner = f"{'top' if dy == 'higher' else 'bottom'} {'right' if dx == 'higher' else 'left'}"
    ax.set_title(_tex_safe(f"{title}: perception–distortion ({len(both)} methods)\nbetter toward the {corner}"),
                 fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.margins(0.22, 0.18)  # room around the outer points for their labels
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    mixed = [m for m, part in ((x, xs.loc[both]), (y, ys.loc[both])) if part["conventions_id"].nunique() > 1]
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.canvas.draw()  # fixes the view limits (margins) before labels are measured against them
    texts = []
    for r in both:
        t = labels.get(r, r)
        texts.append(_tex_safe(t if len(t) <= 40 else t[:39] + "…"))
    points = [(float(xs.at[r, "value"]), float(ys.at[r, "value"])) for r in both]
    radius = math.sqrt(size[True]) / 2 * fig.dpi / 72.0 + 1  # the largest marker, in pixels
    placed, unplaced, point_boxes = place_labels(ax, points, texts, radius)
    footer = []
    if unplaced:
        footer.append("Not labelled (no free place): " + "; ".join(
            f"{texts[i]} ({points[i][0]:.4g}, {points[i][1]:.4g})" for i in unplaced) + ".")
    if mixed:
        footer.append("Note: " + " and ".join(metric_label(m) for m in mixed)
                      + " combine numbers computed under different conventions (see the table notes).")
    for k, line in enumerate(footer):
        fig.text(0.01, 0.035 - 0.028 * k, line, fontsize=7, color="#8c2d04", wrap=True)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")
    choice.point_boxes = point_boxes
    choice.label_boxes = [(texts[i], box) for i, box in sorted(placed.items())]
    choice.unplaced = [texts[i] for i in unplaced]
    return choice
