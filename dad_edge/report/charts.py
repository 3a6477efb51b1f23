"""The report's figures as PNG bytes, drawn with matplotlib's object API (Figure + Agg canvas):
no pyplot state, no GUI backend, safe to call from any thread.

Every number printed on a chart (AUROC, AP, AU-PRO) is passed in from the metrics dict, so the
charts and the table cannot disagree.
"""
from __future__ import annotations

import io
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from dad_edge.report import require_matplotlib
from dad_edge.report.curves import Curve, thin

_SIZE = (5.0, 4.0)  # inches; at _DPI about 500 x 400 pixels, two side by side on a laptop screen
_DPI = 100
_GOOD, _BAD, _PIXEL = "#2c7fb8", "#d7301f", "#31a354"


def _figure():
    require_matplotlib()
    from matplotlib.figure import Figure

    fig = Figure(figsize=_SIZE, dpi=_DPI, layout="constrained")
    return fig, fig.add_subplot()


def _png(fig) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _label(name: str, metric: str, value: Optional[float]) -> str:
    return name if value is None else f"{name} ({metric} {100 * value:.2f} %)"


def roc_chart(curves: Dict[str, Tuple[Curve, Optional[float]]]) -> bytes:
    """ROC curves {name: ((fpr, tpr), auroc)}."""
    fig, ax = _figure()
    ax.plot([0, 1], [0, 1], color="0.75", lw=1, ls="--", label="chance")
    for (name, ((fpr, tpr), auroc)), colour in zip(curves.items(), (_BAD, _PIXEL)):
        ax.plot(*thin(fpr, tpr), color=colour, lw=2, label=_label(name, "AUROC", auroc))
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    return _png(fig)


def pr_chart(curves: Dict[str, Tuple[Curve, Optional[float], float]]) -> bytes:
    """Precision-recall curves {name: ((recall, precision), ap, share of positives)}; the dotted line
    at each share of positives is what a random detector reaches."""
    fig, ax = _figure()
    for (name, ((recall, precision), ap, base)), colour in zip(curves.items(), (_BAD, _PIXEL)):
        ax.plot(*thin(recall, precision), color=colour, lw=2, label=_label(name, "AP", ap))
        ax.axhline(base, color=colour, lw=1, ls=":", alpha=0.7)
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="recall", ylabel="precision", title="Precision-recall")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    return _png(fig)


def pro_chart(curve: Curve, au_pro: Optional[float], fpr_limit: float = 0.3) -> bytes:
    """The PRO curve up to `fpr_limit`, its area (AU-PRO) shaded."""
    fig, ax = _figure()
    fpr, pro = curve
    ax.fill_between(fpr, pro, color=_PIXEL, alpha=0.2)
    ax.plot(fpr, pro, color=_PIXEL, lw=2, label=_label("pixel", "AU-PRO", au_pro))
    ax.set(xlim=(0, fpr_limit), ylim=(0, 1.01), xlabel="false positive rate (normal pixels)",
           ylabel="per-region overlap", title=f"PRO up to FPR {fpr_limit:g}")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    return _png(fig)


def score_histogram(good: Sequence[float], defective: Sequence[float],
                    thresholds: Dict[str, Optional[float]]) -> bytes:
    """Image scores of good and defective test images on shared bins, each threshold {name: value}
    drawn as a vertical line."""
    fig, ax = _figure()
    good, defective = np.asarray(good, float), np.asarray(defective, float)
    span = np.concatenate([good, defective, [v for v in thresholds.values() if v is not None]])
    bins = np.linspace(span.min(), max(span.max(), span.min() + 1e-6), 31)  # the lines inside the axis
    ax.hist(good, bins=bins, color=_GOOD, alpha=0.6, label=f"good ({good.size})")
    ax.hist(defective, bins=bins, color=_BAD, alpha=0.6, label=f"defective ({defective.size})")
    for (name, value), style in zip(thresholds.items(), ("-", "--", ":")):
        if value is not None:
            ax.axvline(value, color="black", lw=1.5, ls=style, label=f"{name} {value:.4g}")
    ax.set(xlabel="image score", ylabel="images", title="Image scores")
    ax.legend(loc="upper right", fontsize="small")
    return _png(fig)
