"""A reader for one class of DAGM 2007 (the "Weakly Supervised Learning for Industrial Optical
Inspection" competition data) in the layout it is distributed in.

    <dagm>/ClassN/Train/*.PNG                        training images, defect-free and defective
    <dagm>/ClassN/Train/Label/Labels.txt             one line per image (below)
    <dagm>/ClassN/Train/Label/<stem>_label.PNG       the defect's (elliptic, coarse) mask
    <dagm>/ClassN/Test/...                           the same for the test images

Labels.txt: a first line with one number, then one tab-separated line per image:
`<index> <defect 0|1> <image file> <0> <label file, or 0>`. Without Labels.txt, an image is
defective when Label/<stem>_label.PNG exists. Training takes the defect-free images of Train/
(the defective ones are left out: one-class training); the test set is all of Test/.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Union

from dad_edge.data.category import GOOD, Category, Sample
from dad_edge.data.imageio import list_images
from dad_edge.errors import DataError

SPLITS = ("Train", "Test")
LABEL_DIR = "Label"
LABELS_FILE = "Labels.txt"
LABEL_SUFFIX = "_label"
DEFECT = "defect"  # every DAGM defect is one type per class
LAYOUT_HINT = ("expected a DAGM 2007 class folder: ClassN/Train/ and ClassN/Test/, each with Label/Labels.txt "
               "and Label/<stem>_label.PNG masks")


def is_dagm_class(folder: Path) -> bool:
    """True for a DAGM class folder: Train/ and Test/, each with a Label/ folder."""
    return all((folder / split / LABEL_DIR).is_dir() for split in SPLITS)


def _from_labels_file(folder: Path, labels: Path) -> List[Sample]:
    """The images Labels.txt lists, each with its mask when defective."""
    samples: List[Sample] = []
    lines = labels.read_text(encoding="utf-8-sig", errors="replace").splitlines()
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields or (number == 1 and len(fields) == 1):
            continue  # blank lines; the first line holds one number, not an image
        if len(fields) != 5 or fields[1] not in ("0", "1"):
            raise DataError(f"{labels}, line {number}: {line.strip()!r}; expected 5 tab-separated fields "
                            "<index> <defect 0|1> <image file> <0> <label file or 0>")
        image = folder / fields[2]
        if not image.is_file():
            raise DataError(f"{labels}, line {number}: image {image} does not exist; restore it or remove the line")
        if fields[1] == "0":
            samples.append(Sample(image, GOOD, None, mask_threshold=0))
            continue
        mask = folder / LABEL_DIR / fields[4]
        if fields[4] == "0" or not mask.is_file():
            raise DataError(f"{labels}, line {number}: defective image {image.name} without its mask "
                            f"({mask} does not exist); restore the label image")
        samples.append(Sample(image, DEFECT, mask, mask_threshold=0))
    return samples


def _from_label_images(folder: Path) -> List[Sample]:
    """Without Labels.txt: an image is defective when Label/<stem>_label.<ext> exists."""
    masks: Dict[str, Path] = {}
    for m in list_images(folder / LABEL_DIR):
        if m.stem.endswith(LABEL_SUFFIX):
            masks[m.stem[:-len(LABEL_SUFFIX)]] = m
    samples = []
    for image in list_images(folder):
        mask = masks.get(image.stem)
        samples.append(Sample(image, GOOD if mask is None else DEFECT, mask, mask_threshold=0))
    return samples


class DAGMCategory(Category):
    """The defect-free training images and the test images of one DAGM 2007 class."""

    def __init__(self, root: Union[str, Path]):
        super().__init__(root)
        if not is_dagm_class(self.root):
            raise DataError(f"{self.root}: not a DAGM class folder; {LAYOUT_HINT}")
        self._samples = {split: self._read(self.root / split) for split in SPLITS}
        if not self.train_samples():
            raise DataError(f"{self.root / 'Train'}: no defect-free images; training needs normal images")

    def _read(self, folder: Path) -> List[Sample]:
        labels = folder / LABEL_DIR / LABELS_FILE
        samples = _from_labels_file(folder, labels) if labels.is_file() else _from_label_images(folder)
        if not samples:
            raise DataError(f"{folder}: no images; {LAYOUT_HINT}")
        return sorted(samples, key=lambda s: (s.label, s.path.name))

    def train_samples(self) -> List[Sample]:
        return [s for s in self._samples["Train"] if s.label == 0]

    def test_samples(self) -> List[Sample]:
        return list(self._samples["Test"])
