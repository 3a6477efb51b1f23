"""`open_category(path)`: the category in a folder, whichever of the supported layouts it is in.

    MVTec AD (also MPDD, BTAD, magnetic tile)   <category>/train/good/, test/, ground_truth/
    VisA                                        <visa>/<object>/Data/Images/ + <visa>/split_csv/1cls.csv
    DAGM 2007                                   <dagm>/ClassN/Train/Label/, Test/Label/

Each layout is recognised by folders only it has. A folder that matches none is read as MVTec,
whose reader says what it expected; a data set folder given in place of one of its categories
gets a message naming the categories in it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, List, Tuple, Union

from dad_edge.data.category import Category
from dad_edge.data.dagm import DAGMCategory, is_dagm_class
from dad_edge.data.mvtec import GOOD, MVTecCategory
from dad_edge.data.visa import VisACategory, is_visa_object
from dad_edge.errors import DataError


def _is_mvtec(folder: Path) -> bool:
    return (folder / "train" / GOOD).is_dir()


# name -> (recognises a category folder, reads it); checked in this order.
LAYOUTS: Dict[str, Tuple[Callable[[Path], bool], Callable[[Path], Category]]] = {
    "mvtec": (_is_mvtec, MVTecCategory),
    "visa": (is_visa_object, VisACategory),
    "dagm": (is_dagm_class, DAGMCategory),
}


def detect_layout(path: Union[str, Path]) -> str:
    """The name of the layout of category folder `path` ("mvtec", "visa", "dagm"); "" for none."""
    folder = Path(path)
    for name, (recognises, _) in LAYOUTS.items():
        if folder.is_dir() and recognises(folder):
            return name
    return ""


def _categories_inside(folder: Path) -> List[str]:
    """Sub-folders of `folder` that are categories of a non-MVTec layout (MVTecCategory hints at its own)."""
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir()
                  if p.is_dir() and detect_layout(p) in ("visa", "dagm"))


def open_category(path: Union[str, Path]) -> Category:
    """The Category of `path`: what `dad-edge train`, `eval` and `baseline` read with --data."""
    folder = Path(path)
    layout = detect_layout(folder)
    if layout:
        return LAYOUTS[layout][1](folder)
    inside = _categories_inside(folder)
    if inside:
        raise DataError(f"{folder}: a data set folder holding the categories {', '.join(inside)}; "
                        "pass one of them (e.g. --data " + str(folder / inside[0]) + ")")
    return MVTecCategory(folder)
