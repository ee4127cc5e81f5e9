"""The file of a temporal method's trained modules: their state dict and the config they were built for.

PSLA + RFU + DenseFT and IFF-Net both keep NanoDet-g frozen and train small
new modules around it; both save only those (``torch.save({"config": ...,
"state_dict": ...})``) and refuse a file built for another shape.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch


def save_modules(model, path: str | Path) -> None:
    """Save ``model.trainable_modules()`` (on the CPU) and ``asdict(model.config)``."""
    state = {k: v.detach().cpu() for k, v in model.trainable_modules().state_dict().items()}
    torch.save({"config": asdict(model.config), "state_dict": state}, Path(path))


def load_modules(model, path: str | Path, shape_fields: tuple[str, ...]) -> None:
    """Load what :func:`save_modules` wrote into ``model.trainable_modules()``.

    The saved config is read with ``type(model.config).from_saved`` and must
    agree with ``model.config`` on every field of ``shape_fields``.

    Raises:
        ValueError: the file was saved for another configuration.
    """
    saved = torch.load(Path(path), map_location="cpu", weights_only=True)
    mine = model.config
    theirs = type(mine).from_saved(saved["config"])
    diff = [f"{f}={getattr(theirs, f)!r}" for f in shape_fields if getattr(theirs, f) != getattr(mine, f)]
    if diff:
        raise ValueError(f"{path}: saved for another {type(mine).__name__} ({', '.join(diff)})")
    model.trainable_modules().load_state_dict(saved["state_dict"])
