"""Map prediction class names onto ground-truth class names.

Resolution order for each prediction class (first hit wins):

1. the user's map (``--class-map``: JSON ``{"pred_name": "gt_name"}`` or a
   two-column CSV ``pred_name,gt_name``); an empty target (``""`` or JSON
   ``null``) drops the class;
2. identity, when the name already is a ground-truth class (compared after
   lower-casing and treating spaces, ``-`` and ``_`` alike, so ``red panda``
   matches ``red_panda``);
3. the built-in :data:`COCO_TO_VID` map, used only when its target is a class
   of the ground truth.

Prediction classes that resolve to nothing are dropped before evaluation.
Several prediction classes may map to one ground-truth class; their boxes
then compete for the same objects (duplicates count as false positives).

Built-in choices: ``truck`` is *not* mapped.  VID's ``car`` is the WordNet
synset n02958343 (car, automobile), which excludes trucks (n04490091), and VID
has no truck class; mapping trucks to cars would turn correct truck detections
on unannotated trucks into false positives less often but would also accept
wrong labels.  A user who wants it writes ``{"truck": "car"}``.  Likewise
``teddy bear`` is not ``bear`` and COCO has no antelope, fox, giant panda,
hamster, lion, lizard, monkey, rabbit, red panda, snake, squirrel, tiger,
turtle or whale.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

COCO_TO_VID: dict[str, str] = {
    "airplane": "airplane",
    "bear": "bear",
    "bicycle": "bicycle",
    "bird": "bird",
    "bus": "bus",
    "car": "car",
    "cow": "cattle",
    "dog": "dog",
    "cat": "domestic_cat",
    "elephant": "elephant",
    "horse": "horse",
    "motorcycle": "motorcycle",
    "sheep": "sheep",
    "train": "train",
    "boat": "watercraft",
    "zebra": "zebra",
}
"""COCO class name -> ImageNet VID class name, for the 16 classes both have."""

_CSV_HEADERS = {"pred", "pred_name", "prediction", "predicted", "from", "source", "src", "model"}


def normalize_name(name: str) -> str:
    """Lower case, with spaces and hyphens as underscores: the key names are compared by."""
    return "_".join(str(name).strip().lower().replace("-", " ").replace("_", " ").split())


def load_class_map(path: str | Path) -> dict[str, str | None]:
    """Read a user class map.

    Args:
        path: ``.json`` holding ``{"pred_name": "gt_name"}`` (``null`` or
            ``""`` drops the class), or a CSV with two columns
            ``pred_name,gt_name`` per line.  The CSV may have a header row
            whose first cell is one of ``pred, pred_name, prediction, from,
            source``; lines starting with ``#`` and blank lines are skipped.

    Returns:
        pred name -> gt name, or None for a dropped class.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json" or text.lstrip().startswith("{"):
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"{path}: class map JSON must be an object {{\"pred_name\": \"gt_name\"}}")
        return {str(k): (str(v) if v not in (None, "") else None) for k, v in data.items()}
    mapping: dict[str, str | None] = {}
    rows = [r for r in csv.reader(text.splitlines()) if r and any(c.strip() for c in r) and not r[0].lstrip().startswith("#")]
    for i, row in enumerate(rows):
        cells = [c.strip() for c in row]
        if i == 0 and cells[0].lower() in _CSV_HEADERS:
            continue
        if len(cells) != 2:
            raise ValueError(f"{path}: row {i + 1}: expected two columns pred_name,gt_name, got {row}")
        mapping[cells[0]] = cells[1] or None
    return mapping


def resolve_class_map(
    pred_classes, gt_classes, user_map: dict[str, str | None] | None = None, builtin: dict[str, str] = COCO_TO_VID
) -> dict[str, str]:
    """Decide the ground-truth class of each prediction class.

    Args:
        pred_classes: names the predictions use.
        gt_classes: the ground truth's label space (all its class names,
            also those absent from the annotated frames).
        user_map: pred name -> gt name (None drops); takes precedence.  A
            target outside the label space is an error (most likely a typo).
        builtin: fallback map, applied only where its target is a gt class.

    Returns:
        pred name -> gt name, for the prediction classes that are kept.
    """
    gt_by_norm = {normalize_name(g): g for g in gt_classes}
    builtin_norm = {normalize_name(k): v for k, v in builtin.items()}
    user_norm = {normalize_name(k): v for k, v in (user_map or {}).items()}
    mapping: dict[str, str] = {}
    for name in sorted(set(pred_classes)):
        key = normalize_name(name)
        if key in user_norm:
            target = user_norm[key]
            if target is None:
                continue
            if normalize_name(target) not in gt_by_norm:
                raise ValueError(f"class map: {name!r} -> {target!r}, but {target!r} is not a ground-truth class")
            mapping[name] = gt_by_norm[normalize_name(target)]
        elif key in gt_by_norm:
            mapping[name] = gt_by_norm[key]
        elif key in builtin_norm and normalize_name(builtin_norm[key]) in gt_by_norm:
            mapping[name] = gt_by_norm[normalize_name(builtin_norm[key])]
    return mapping
