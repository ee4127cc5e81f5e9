"""Label-free PSLA training: sampling, losses, and tiny end-to-end runs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from tests.clips import make_clip
from vidtag.models.nanodet import NanoDetOutput, load_nanodet
from vidtag.models.psla import build_psla
from vidtag.train.data import MAX_TRAIN_SEED, load_frames, make_clip_pair, sample_clip
from vidtag.train.losses import (
    box_distillation_loss,
    distillation_loss,
    feature_distillation_loss,
    score_distillation_loss,
)
from vidtag.train.loop import TrainConfig, lr_factor, train_psla, write_manifest


@pytest.fixture(scope="module")
def nanodet():
    return load_nanodet(channels_last=False)


@pytest.fixture(scope="module")
def clip_path(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("train") / "clip.mp4", n_frames=30, width=64, height=48)


def tiny_config(clip_path, **overrides) -> TrainConfig:
    values = dict(videos=(str(clip_path),), frames=((0, 24),), imgsz=64, steps=4, batch=1, seed=7, threads=None, log_every=1, warmup_steps=2)
    values.update(overrides)
    return TrainConfig(**values)


# --- data -----------------------------------------------------------------------


def test_load_frames_keeps_only_the_range(clip_path):
    video = load_frames(clip_path, 5, 17, imgsz=64)
    assert video.frames.shape == (12, 48, 64, 3) and video.frames.dtype == np.uint8
    with pytest.raises(ValueError, match="past the end"):
        load_frames(clip_path, 0, 31, imgsz=64)


def test_load_frames_downscales_to_the_letterbox_size(clip_path):
    assert load_frames(clip_path, 0, 2, imgsz=32).frames.shape == (2, 24, 32, 3)


def test_sample_clip_follows_the_key_frame_schedule():
    rng = np.random.default_rng(0)
    for _ in range(500):
        spec = sample_clip(rng, [40, 12], key_interval=10, max_offset=5)
        n = 40 if spec.video == 0 else 12
        assert 1 <= abs(spec.nonkey - spec.key) <= 5
        assert 0 <= spec.nonkey < n and 0 <= spec.key < n
        assert spec.prev_key == (spec.key - 10 if spec.key >= 10 else None)
        assert 0 <= spec.crop_seed < MAX_TRAIN_SEED and 0 <= spec.degrade_seed < MAX_TRAIN_SEED
        assert list(spec.indices) == sorted(spec.indices)


def test_sample_clip_is_deterministic():
    a = [sample_clip(np.random.default_rng(3), [30, 30]) for _ in range(3)]
    b = [sample_clip(np.random.default_rng(3), [30, 30]) for _ in range(3)]
    assert a == b


def test_clip_pair_shares_geometry(clip_path):
    video = load_frames(clip_path, 0, 24, imgsz=64)
    spec = sample_clip(np.random.default_rng(1), [24])
    clean, degraded = make_clip_pair(spec, [video], degrade_fraction=0.0)
    assert clean.shape == degraded.shape == (len(spec.indices), 48, 64, 3)
    np.testing.assert_array_equal(clean, degraded)  # nothing degraded: the same crop on both
    _, degraded = make_clip_pair(spec, [video], degrade_fraction=1.0)
    assert (degraded != clean).any()


# --- losses ---------------------------------------------------------------------


def _output(cls_scores, box_dists):
    return NanoDetOutput(cls_scores, box_dists, ((2, 2),), (8,))


def test_losses_vanish_when_student_equals_teacher():
    g = torch.Generator().manual_seed(0)
    scores = torch.rand(2, 4, 80, generator=g)
    dists = torch.randn(2, 4, 44, generator=g)
    feats = [torch.randn(2, 8, 2, 2, generator=g)]
    parts = distillation_loss(_output(scores, dists), _output(scores, dists), feats, feats)
    assert parts["box"].abs() < 1e-6 and parts["feature"] == 0 and parts["cls"].abs() < 1e-5


def test_score_loss_is_qfl_normalised_by_confident_cells():
    teacher = torch.zeros(1, 3, 2)
    teacher[0, 0, 1] = 0.9
    student = torch.full((1, 3, 2), 0.2)
    s, t = student.clamp(1e-6, 1 - 1e-6), teacher
    bce = -(t * s.log() + (1 - t) * (1 - s).log())
    expected = (bce * (s - t).abs() ** 2).sum() / 1
    assert math.isclose(float(score_distillation_loss(student, teacher)), float(expected), rel_tol=1e-5)


def test_box_loss_only_on_confident_cells():
    teacher_scores = torch.zeros(1, 2, 80)
    teacher_scores[0, 0, 3] = 0.8
    teacher = torch.zeros(1, 2, 44)
    student = torch.zeros(1, 2, 44)
    student[0, 1] = torch.randn(44)  # differs only on the background cell
    assert box_distillation_loss(student, teacher, teacher_scores) == 0
    student[0, 0, 0] = 5.0
    assert box_distillation_loss(student, teacher, teacher_scores) > 0
    assert box_distillation_loss(student, teacher, torch.zeros(1, 2, 80)) == 0


def test_feature_loss_is_scale_free():
    t = [torch.randn(1, 4, 3, 3)]
    s = [t[0] * 1.1]
    a = feature_distillation_loss(s, t)
    b = feature_distillation_loss([x * 100 for x in s], [x * 100 for x in t])
    assert torch.isclose(a, b, rtol=1e-5)


def test_lr_schedule_warms_up_then_decays(clip_path):
    cfg = tiny_config(clip_path, steps=100, warmup_steps=10, min_lr_ratio=0.1)
    factors = [lr_factor(s, cfg) for s in range(100)]
    assert factors[0] == pytest.approx(0.1) and max(factors) == pytest.approx(1.0)
    assert factors[-1] >= 0.1 and factors[-1] < 0.2
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))


# --- the loop -------------------------------------------------------------------


def test_tiny_run_trains_only_the_new_modules(nanodet, clip_path, tmp_path):
    before = {k: v.clone() for k, v in nanodet.state_dict().items()}
    torch.manual_seed(7)
    fresh = {k: v.clone() for k, v in build_psla(nanodet).trainable_modules().state_dict().items()}
    logs = []
    cfg = tiny_config(clip_path, checkpoint=str(tmp_path / "m.pt"))
    result = train_psla(cfg, on_log=logs.append, detector=nanodet)

    assert result.steps == 4 and len(result.history) == 4 and len(logs) == 4
    assert all(math.isfinite(r["total"]) for r in result.history)
    assert {"step", "cls", "box", "feature", "steps_per_s", "eta_s"} <= set(logs[-1])
    for k, v in nanodet.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not any(p.requires_grad for p in result.model.detector.parameters())
    trained = result.model.trainable_modules().state_dict()
    assert any(not torch.equal(trained[k], fresh[k]) for k in fresh)

    reloaded = build_psla(nanodet, cfg.psla)
    reloaded.load_modules(tmp_path / "m.pt")
    for k, v in reloaded.trainable_modules().state_dict().items():
        assert torch.equal(v, trained[k]), k

    path = write_manifest(result, cfg, tmp_path / "m.pt", "psla-test", "pytest")
    manifest = json.loads(path.read_text())
    assert manifest["base_weights"]["name"] == "nanodet-g-coco"
    assert manifest["training"]["data"][0]["frames"] == [0, 24]
    assert manifest["training"]["steps"] == 4 and len(manifest["sha256"]) == 64


def test_same_seed_same_losses(nanodet, clip_path):
    cfg = tiny_config(clip_path, steps=3)
    a = train_psla(cfg, detector=nanodet).history
    b = train_psla(cfg, detector=nanodet).history
    assert [r["total"] for r in a] == [r["total"] for r in b]
    c = train_psla(tiny_config(clip_path, steps=3, seed=8), detector=nanodet).history
    assert [r["total"] for r in a] != [r["total"] for r in c]


def _cocovid(path, video_name, frames, boxes_per_frame, category="person"):
    """A CocoVID file: one video, ``frames`` images, the same xywh boxes on each."""
    images = [{"id": i + 1, "video_id": 1, "frame_id": i, "file_name": f"{video_name}/{i:06d}.jpg", "width": 64, "height": 48}
              for i in range(frames)]
    annotations = [{"id": len(images) * j + i + 1, "image_id": i + 1, "category_id": 1, "bbox": list(b), "area": b[2] * b[3],
                    "iscrowd": 0, "instance_id": j + 1} for i in range(frames) for j, b in enumerate(boxes_per_frame)]
    data = {"videos": [{"id": 1, "name": video_name}], "images": images, "annotations": annotations,
            "categories": [{"id": 1, "name": category}]}
    path.write_text(json.dumps(data))
    return path


def test_labelled_training_uses_the_detection_loss(nanodet, clip_path, tmp_path):
    labels = _cocovid(tmp_path / "gt.json", "clip", 24, [(8, 6, 20, 30), (36, 10, 16, 20)])
    cfg = tiny_config(clip_path, labels=str(labels), steps=3)
    result = train_psla(cfg, detector=nanodet)
    assert result.steps == 3
    assert all(math.isfinite(r["total"]) and r["giou"] > 0 and r["feature"] == 0 for r in result.history)


def test_labelled_training_refuses_labels_that_do_not_fit(clip_path, tmp_path):
    wrong_name = _cocovid(tmp_path / "a.json", "other", 24, [(8, 6, 20, 30)])
    data = json.loads(wrong_name.read_text())
    data["videos"].append({"id": 2, "name": "other2"})
    wrong_name.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="no labelled video named 'clip'"):
        train_psla(tiny_config(clip_path, labels=str(wrong_name)))
    unknown = _cocovid(tmp_path / "c.json", "clip", 24, [(8, 6, 20, 30)], category="unicorn")
    with pytest.raises(ValueError, match="unicorn"):
        train_psla(tiny_config(clip_path, labels=str(unknown)))


def test_config_checks_ranges():
    with pytest.raises(ValueError, match="one \\(start, stop\\) range per video"):
        TrainConfig(videos=("a.mp4", "b.mp4"), frames=((0, 10),))
    with pytest.raises(ValueError, match="bad frame range"):
        TrainConfig(videos=("a.mp4",), frames=((5, 5),))
