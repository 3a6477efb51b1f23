"""A test set from two folders and no masks: `--good DIR --bad DIR` of `eval` and `calibrate`.

    category = GoodBadFolders("shots/ok", "shots/reject")
    evaluate_model("model.onnx", category)      # image-level metrics only: there are no masks

The images of each folder (recursively, sorted) are the test samples: `good` ones labelled 0, the
`bad` ones labelled 1 under the defect type "bad", none with a mask. There is no training split.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Union

from dad_edge.data.category import GOOD, Category, Sample
from dad_edge.data.imageio import IMAGE_EXTENSIONS, list_images
from dad_edge.errors import DataError

BAD = "bad"  # the defect type of every image of the bad folder

PathLike = Union[str, Path]


def _images(folder: Path, role: str) -> List[Path]:
    if not folder.is_dir():
        raise DataError(f"--{role} {folder}: no such folder; pass a folder of {role} images")
    files = list_images(folder, recursive=True)
    if not files:
        raise DataError(f"--{role} {folder}: no images ({', '.join(IMAGE_EXTENSIONS)}) in it")
    return files


class GoodBadFolders(Category):
    """Good and defective images in two folders, without masks: image-level metrics and thresholds."""

    has_masks = False  # what eval reports: image metrics only

    def __init__(self, good: PathLike, bad: PathLike):
        self.good, self.bad = Path(good), Path(bad)
        super().__init__(self.good)
        if self.good.resolve() == self.bad.resolve():
            raise DataError(f"--good and --bad are the same folder ({self.good}); give two folders")
        self._samples = ([Sample(p, GOOD, None) for p in _images(self.good, "good")]
                         + [Sample(p, BAD, None) for p in _images(self.bad, "bad")])

    def __repr__(self) -> str:
        return f"GoodBadFolders(good={str(self.good)!r}, bad={str(self.bad)!r})"

    def __str__(self) -> str:
        return f"--good {self.good} --bad {self.bad}"

    def train_samples(self) -> List[Sample]:
        raise DataError(f"{self}: two test folders have no training images; train on a category folder "
                        "(train/good/)")

    def test_samples(self) -> List[Sample]:
        return list(self._samples)
