"""COCO's 80 detection classes and their official category ids, in one place.

COCO numbers its categories 1-90 with gaps (ids of the 91 categories of the
original paper, 11 of which have no boxes): ``stop sign`` is 13, not 12.
Every output that carries a category id uses :func:`category_ids`, so files
from COCO-trained weights merge with other COCO files and score against
COCO-style ground truth.
"""

from __future__ import annotations

from typing import Sequence

COCO_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip

COCO_CATEGORY_IDS = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31, 32,
    33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59,
    60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90,
)  # fmt: skip
"""COCO's official category id of each class of :data:`COCO_CLASSES`, in that order."""


def category_ids(classes: Sequence[str]) -> tuple[int, ...]:
    """The category id of each class: COCO's official ids when ``classes`` are COCO's
    80 in COCO's order (COCO-trained weights), otherwise the class index + 1."""
    if tuple(classes) == COCO_CLASSES:
        return COCO_CATEGORY_IDS
    return tuple(range(1, len(classes) + 1))
