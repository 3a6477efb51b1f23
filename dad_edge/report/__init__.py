"""The inspection report of `dad-edge eval --report`: one self-contained HTML file.

    dad-edge eval model.onnx --data my_part --report runs/my_part/report.html

Metric table (overall and per defect type), ROC / PR / PRO curves, the score histogram with
the threshold, and the worst cases (highest-scoring good images, lowest-scoring defective
ones) with overlay and ground truth, every image embedded: no network, no JavaScript.

    curves.py   the curves behind the metrics (PR from the ROC scan, the PRO curve AU-PRO integrates)
    charts.py   the figures, drawn with matplotlib (the optional `report` extra)
    gallery.py  the worst cases, as image / overlay / ground-truth tiles
    html.py     the page

Nothing here is imported by the runtime; matplotlib is imported only when a chart is drawn.
"""
from __future__ import annotations

from dad_edge.errors import ConfigError

EXTRA = "pip install 'dad_edge[report]'"


def require_matplotlib() -> None:
    """Raise ConfigError naming the extra to install when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ConfigError(f"the report draws its charts with matplotlib, which is not installed: {EXTRA}") from None
