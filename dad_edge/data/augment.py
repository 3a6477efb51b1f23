"""Views of a good training image that are good parts too: mirror images and quarter turns.

A surface texture (a ground tile, a woven fabric, a brushed plate) is just as good mirrored or
turned, and every view is another normal sample for the networks to learn. An object often is
not: a connector with its notch on the left, a label with text. Only the user knows which views
the product allows, so none is on by default (`dad-edge train --augment hflip,vflip`).

A view is drawn per sample before the synthetic anomaly, so the anomaly's mask, the clean target
and a foreground mask read from a folder are all in the view's frame. Views act on the first two
axes of an (S, S[, C]) array; quarter turns need square arrays, which the loader's resize gives.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence, Tuple

import numpy as np

from dad_edge.errors import ConfigError

VIEWS = ("hflip", "vflip", "rot90")


def parse_augment(spec) -> Tuple[str, ...]:
    """'hflip,vflip' (or a list of names) -> ('hflip', 'vflip'); 'none', '' or None -> ()."""
    if spec is None:
        return ()
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    names = [str(n).strip().lower() for n in names if str(n).strip()]
    if names == ["none"]:
        return ()
    unknown = [n for n in names if n not in VIEWS]
    if unknown:
        raise ConfigError(f"augment={spec!r}: unknown view {unknown[0]!r}; use 'none' or a comma-separated "
                          f"list of {', '.join(VIEWS)} (e.g. --augment hflip,vflip)")
    return tuple(n for n in VIEWS if n in names)  # canonical order: the record does not depend on typing order


class View(NamedTuple):
    hflip: bool = False
    vflip: bool = False
    quarter_turns: int = 0  # counter-clockwise, 0..3

    def apply(self, array: np.ndarray) -> np.ndarray:
        """The view of an (S, S[, C]) array, contiguous (OpenCV needs it)."""
        out = array
        if self.hflip:
            out = out[:, ::-1]
        if self.vflip:
            out = out[::-1]
        if self.quarter_turns:
            out = np.rot90(out, self.quarter_turns, axes=(0, 1))
        return np.ascontiguousarray(out)

    @property
    def identity(self) -> bool:
        return not (self.hflip or self.vflip or self.quarter_turns)

    @property
    def name(self) -> str:
        """'hflip-rot90' etc.; 'identity' for the image as it is."""
        parts = ["hflip"] * self.hflip + ["vflip"] * self.vflip + \
            ([f"rot{90 * self.quarter_turns}"] if self.quarter_turns else [])
        return "-".join(parts) or "identity"


def draw_view(views: Sequence[str], rng: np.random.Generator) -> View:
    """A random view among those allowed: each flip with probability 1/2, a uniform quarter turn."""
    return View(hflip="hflip" in views and bool(rng.random() < 0.5),
                vflip="vflip" in views and bool(rng.random() < 0.5),
                quarter_turns=int(rng.integers(4)) if "rot90" in views else 0)
