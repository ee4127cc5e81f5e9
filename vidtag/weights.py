"""Weights are data with a manifest: file, sha256, classes, input, licence, provenance.

A manifest ``<name>.json`` sits beside its state-dict file (``<name>.pt``) in a
weights folder; the sha256 is checked every time the weights are loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vidtag.errors import WeightsError

WEIGHTS_DIR_ENV = "VIDTAG_WEIGHTS_DIR"


@dataclass(frozen=True)
class WeightsManifest:
    """What a weights file is and where it came from (the manifest .json).

    Attributes:
        name: short name, e.g. ``"nanodet-g-coco"``.
        file: state-dict file name, relative to the manifest's folder.
        sha256: hex digest of that file.
        classes: class names in label order.
        input_size: default longest input side in pixels.
        stride_multiple: input H and W must be multiples of this.
        mean, std: per-channel normalisation, in ``channel_order``.
        channel_order: ``"BGR"`` or ``"RGB"``.
        source: where the original weights came from (package, version, files, sha256s).
        licenses: licence names of the weights and their sources.
        made_by: the command that produced the file.
        parity: measured figures (e.g. max abs difference to the reference).
        training: for trained temporal modules: the data they were trained on (``data``: file, frames) and how.
        inference: settings the modules run with by default (``config``) and how they were chosen.
        exports: the same network for other runtimes, by runtime (``"onnxruntime"``): ``file``
            (beside the manifest), ``sha256``, ``made_by``, ``parity`` against the torch model.
        kind: ``"detector"`` (a network ``--weights`` takes) or the temporal method whose
            modules the file holds (``"psla"``, ``"iff"``: ``--psla-weights`` / ``--iff-weights``).
        manifest_path: the .json this was read from.
    """

    name: str
    file: str
    sha256: str
    classes: tuple[str, ...]
    input_size: int
    stride_multiple: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    channel_order: str
    source: dict = field(default_factory=dict)
    licenses: tuple[str, ...] = ()
    made_by: str = ""
    parity: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    inference: dict = field(default_factory=dict)
    exports: dict = field(default_factory=dict)
    kind: str = "detector"
    manifest_path: Path | None = None

    @property
    def weights_path(self) -> Path:
        """The state-dict file (beside the manifest)."""
        base = self.manifest_path.parent if self.manifest_path is not None else Path(".")
        return base / self.file

    @classmethod
    def from_json(cls, path: str | Path) -> "WeightsManifest":
        """Read a manifest; WeightsError if it is missing or malformed."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
            return cls(
                name=data["name"],
                file=data["file"],
                sha256=data["sha256"].lower(),
                classes=tuple(data["classes"]),
                input_size=int(data["input_size"]),
                stride_multiple=int(data["stride_multiple"]),
                mean=tuple(float(v) for v in data["normalization"]["mean"]),
                std=tuple(float(v) for v in data["normalization"]["std"]),
                channel_order=data["normalization"]["channel_order"],
                source=data.get("source", {}),
                licenses=tuple(data.get("licenses", ())),
                made_by=data.get("made_by", ""),
                parity=data.get("parity", {}),
                training=data.get("training", {}),
                inference=data.get("inference", {}),
                exports=data.get("exports", {}),
                kind="psla" if "psla_config" in data else "iff" if "iff_config" in data else "detector",
                manifest_path=path,
            )
        except FileNotFoundError:
            raise WeightsError(f"{path}: manifest not found") from None
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise WeightsError(f"{path}: unreadable manifest ({type(err).__name__}: {err})") from None


def default_weights_dir() -> Path:
    """``$VIDTAG_WEIGHTS_DIR`` if set, else the repository's ``weights/`` folder."""
    env = os.environ.get(WEIGHTS_DIR_ENV)
    if env:
        return Path(env)
    import vidtag

    return Path(vidtag.__file__).resolve().parent.parent / "weights"


def list_weights(weights_dir: str | Path | None = None) -> list[WeightsManifest]:
    """Manifests in a weights folder (default: ``default_weights_dir()``), sorted by name.

    Files that are not readable manifests are skipped.
    """
    folder = Path(weights_dir) if weights_dir is not None else default_weights_dir()
    manifests = []
    for path in sorted(folder.glob("*.json")):
        try:
            manifests.append(WeightsManifest.from_json(path))
        except WeightsError:
            continue
    return sorted(manifests, key=lambda m: m.name)


def resolve_weights(name_or_path: str | Path, weights_dir: str | Path | None = None) -> WeightsManifest:
    """Find the manifest for a name or a path.

    Args:
        name_or_path: a manifest name (``"nanodet-g-coco"``, looked up in the
            weights folder), a manifest ``.json`` path, or a ``.pt`` path with
            a manifest beside it (same stem, or any manifest whose ``file``
            names it).
        weights_dir: folder for names; default ``default_weights_dir()``.

    Raises:
        WeightsError: nothing found.
    """
    path = Path(name_or_path)
    if path.suffix == ".json":
        return WeightsManifest.from_json(path)
    if path.suffix == ".pt":
        beside = path.with_suffix(".json")
        if beside.is_file():
            return WeightsManifest.from_json(beside)
        for manifest in list_weights(path.parent):
            if manifest.file == path.name:
                return manifest
        raise WeightsError(f"{path}: no manifest beside it (expected {beside.name})")
    folder = Path(weights_dir) if weights_dir is not None else default_weights_dir()
    candidate = folder / f"{name_or_path}.json"
    found = WeightsManifest.from_json(candidate) if candidate.is_file() else None
    for manifest in list_weights(folder) if found is None else ():
        if manifest.name == str(name_or_path):
            found = manifest
    if found is not None:
        return found
    known = ", ".join(m.name for m in list_weights(folder) if m.kind == "detector") or "none"
    raise WeightsError(f"{name_or_path}: unknown weights in {folder} (available: {known})")


def resolve_detector_weights(name_or_path: str | Path, weights_dir: str | Path | None = None) -> WeightsManifest:
    """:func:`resolve_weights`, refusing the manifests of temporal modules (WeightsError says which option takes them)."""
    manifest = resolve_weights(name_or_path, weights_dir)
    if manifest.kind != "detector":
        raise WeightsError(f"{name_or_path}: holds {manifest.kind} modules, not detector weights "
                           f"(give it to --{manifest.kind}-weights with --method {manifest.kind})")
    return manifest


def file_sha256(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def load_state_dict(manifest: WeightsManifest) -> dict[str, torch.Tensor]:
    """The state dict of a manifest's file, on the CPU, after checking its sha256.

    Tensors keep their stored dtype (float16 for converted TF.js weights);
    ``nn.Module.load_state_dict`` casts them to the model's dtype.

    Raises:
        WeightsError: ``"<file>: <cause>"`` for a missing file, a sha256
            mismatch, or a file torch cannot read.
    """
    path = manifest.weights_path
    if not path.is_file():
        raise WeightsError(f"{path}: weights file missing")
    try:
        actual = file_sha256(path)
    except OSError as err:
        raise WeightsError(f"{path}: unreadable ({err.strerror or err})") from None
    if actual != manifest.sha256:
        raise WeightsError(f"{path}: sha256 mismatch (expected {manifest.sha256[:12]}..., got {actual[:12]}...)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for corrupt files
        cause = " ".join(str(err).split())[:200]
        raise WeightsError(f"{path}: unreadable ({type(err).__name__}: {cause})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: unreadable (not a state dict of tensors)")
    return state
