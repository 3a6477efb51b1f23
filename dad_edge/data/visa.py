"""A reader for one object of VisA (Zou et al., ECCV 2022) in the layout it is distributed in.

    <visa>/split_csv/1cls.csv                       the official one-class split, one row per image:
                                                    object,split,label,image,mask (paths under <visa>)
    <visa>/<object>/Data/Images/Normal/*.JPG        normal images (training and test)
    <visa>/<object>/Data/Images/Anomaly/*.JPG       anomalous images (test)
    <visa>/<object>/Data/Masks/Anomaly/*.png        their masks: 0, and a defect index (1, 2, ...)

`--data <visa>/<object>` reads the rows of that object from the split file: `train` rows (all
normal) are the training images, `test` rows the test set. The masks hold small class indices,
not 255, so any non-zero pixel is defect (mask_threshold 0).
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import List, Optional, Union

from dad_edge.data.category import GOOD, Category, Sample
from dad_edge.errors import DataError

SPLIT_FILE = Path("split_csv") / "1cls.csv"
COLUMNS = ("object", "split", "label", "image", "mask")
ANOMALY = "anomaly"  # the defect type of every anomalous VisA image (the split file has no finer one)
LABELS = {"normal": GOOD, "anomaly": ANOMALY}
SPLITS = ("train", "test")


def is_visa_object(folder: Path) -> bool:
    """True for a VisA object folder: it holds Data/Images/."""
    return (folder / "Data" / "Images").is_dir()


class VisACategory(Category):
    """The training and test samples of one VisA object, from the official split file."""

    def __init__(self, root: Union[str, Path], split_csv: Optional[Union[str, Path]] = None):
        super().__init__(root)
        if not is_visa_object(self.root):
            raise DataError(f"{self.root}: no Data/Images/ folder; expected a VisA object folder such as "
                            "VisA_20220922/candle")
        self.object = self.root.name
        self.base = self.root.parent  # the split file's paths are relative to the data set folder
        self.split_csv = Path(split_csv) if split_csv is not None else self.base / SPLIT_FILE
        if not self.split_csv.is_file():
            raise DataError(f"{self.split_csv}: no such file; VisA's one-class split ships as {SPLIT_FILE} "
                            f"beside the object folders (from the VisA release); put it there")
        self._train, self._test = self._read_split()
        if not self._train:
            raise DataError(f"{self.split_csv}: no training rows for object {self.object!r}; "
                            "check the object folder name against the file's `object` column")

    def _resolve(self, relative: str, line: int, what: str) -> Path:
        """A path from the split file, inside the data set folder and existing."""
        path = (self.base / relative).resolve()
        if self.base.resolve() not in path.parents:
            raise DataError(f"{self.split_csv}, line {line}: {what} {relative!r} points outside "
                            f"{self.base}; the split file may only name files under it")
        if not path.is_file():
            raise DataError(f"{self.split_csv}, line {line}: {what} {self.base / relative} does not exist; "
                            "restore the file or use the split file that came with these images")
        return self.base / relative

    def _read_split(self):
        train: List[Sample] = []
        test: List[Sample] = []
        with open(self.split_csv, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = tuple(c.strip() for c in next(reader, ()))
            if header != COLUMNS:
                raise DataError(f"{self.split_csv}: header {','.join(header) or '(empty)'}; a VisA split file "
                                f"starts with {','.join(COLUMNS)}")
            for line, row in enumerate(reader, start=2):
                if not row or row[0] != self.object:
                    continue
                if len(row) != len(COLUMNS):
                    raise DataError(f"{self.split_csv}, line {line}: {len(row)} fields, expected {len(COLUMNS)} "
                                    f"({','.join(COLUMNS)})")
                _, split, label, image, mask = (c.strip() for c in row)
                if split not in SPLITS or label not in LABELS:
                    raise DataError(f"{self.split_csv}, line {line}: split {split!r} / label {label!r}; expected "
                                    f"split in {SPLITS} and label in {tuple(LABELS)}")
                defect_type = LABELS[label]
                if split == "train" and defect_type != GOOD:
                    raise DataError(f"{self.split_csv}, line {line}: an anomalous training image; training takes "
                                    f"normal images only: use the one-class split ({SPLIT_FILE})")
                mask_path = None
                if defect_type != GOOD:
                    if not mask:
                        raise DataError(f"{self.split_csv}, line {line}: anomalous image {image} without a mask; "
                                        "add its mask path in the last column")
                    mask_path = self._resolve(mask, line, "mask")
                sample = Sample(self._resolve(image, line, "image"), defect_type, mask_path, mask_threshold=0)
                (train if split == "train" else test).append(sample)
        return sorted(train, key=lambda s: s.path), sorted(test, key=lambda s: (s.label, s.path))

    def train_samples(self) -> List[Sample]:
        return list(self._train)

    def test_samples(self) -> List[Sample]:
        if not self._test:
            raise DataError(f"{self.split_csv}: no test rows for object {self.object!r}")
        return list(self._test)
