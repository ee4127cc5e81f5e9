"""PSLA + RFU + DenseFT model: parts, schedule, identity at init, save/load, devices."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vidtag.models.build import DetectOptions, FrameDetector
from vidtag.models.nanodet import load_nanodet
from vidtag.models.preprocess import letterbox
from vidtag.models.psla import (
    PSLAConfig,
    PSLAVideoDetector,
    QualityNet,
    TransformNet,
    UpdateNet,
    build_psla,
    segment_key_frames,
)
from vidtag.types import FrameChunk


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny inputs: one intra-op thread is faster than two fighting on a shared 2-core box."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def nanodet():
    torch.manual_seed(0)
    return load_nanodet(channels_last=True)


def _frames(t: int, h: int = 72, w: int = 100, seed: int = 0) -> torch.Tensor:
    """uint8 [T, H, W, 3]: a textured background with a bright square moving right."""
    gen = torch.Generator().manual_seed(seed)
    base = torch.randint(0, 120, (h, w, 3), generator=gen, dtype=torch.uint8)
    frames = base.repeat(t, 1, 1, 1)
    for i in range(t):
        frames[i, 20:50, 10 + 2 * i : 40 + 2 * i] = torch.tensor([230, 200, 40], dtype=torch.uint8)
    return frames


def _chunks(frames: torch.Tensor, size: int):
    for start in range(0, len(frames), size):
        part = frames[start : start + size]
        yield FrameChunk(start, part, np.arange(start, start + len(part)) / 25.0)


def _clip(t: int, seed: int = 0) -> torch.Tensor:
    return letterbox(_frames(t, seed=seed), 96)[0]


# --- parts -------------------------------------------------------------------


def test_fusion_nets_start_on_the_favoured_input():
    torch.manual_seed(0)
    a, b = torch.randn(2, 8, 5, 6) * 10, torch.randn(2, 8, 5, 6) * 10
    fused, weights = UpdateNet(8, 8, 4)(a, b)
    assert fused.shape == a.shape and weights.shape == (2, 2, 5, 6)
    torch.testing.assert_close(weights.sum(1), torch.ones(2, 5, 6))
    torch.testing.assert_close(fused, b, atol=1e-5, rtol=0)  # RFU keeps the key frame's own feature
    fused, _ = QualityNet(8, 8, 4)(a, b)
    torch.testing.assert_close(fused, a, atol=1e-5, rtol=0)  # DenseFT keeps the propagated feature
    net = UpdateNet(8, 8, 4, init_logit=0.0)
    fused, weights = net(a, b)
    torch.testing.assert_close(fused, (a + b) / 2)


@pytest.mark.parametrize("in_channels, in_stride", [(32, 4), (64, 4), (128, 8)])
def test_transform_net_shapes(in_channels, in_stride):
    net = TransformNet(in_channels, in_stride, out_channels=128, channels=16)
    h, w = 320 // in_stride, 416 // in_stride
    outs = net(torch.randn(2, in_channels, h, w))
    assert [tuple(o.shape) for o in outs] == [(2, 128, 40, 52), (2, 128, 20, 26), (2, 128, 10, 13)]


def test_config_validation():
    for bad in ({"split_stage": 3}, {"feature": "backbone"}, {"levels": (3,)}, {"key_interval": 0}, {"max_displacement": 0}):
        with pytest.raises(ValueError):
            PSLAConfig(**bad)


# --- schedule ------------------------------------------------------------------


def test_segment_key_frames_are_middles():
    assert segment_key_frames(1, 10) == [(0, 1, 0)]
    assert segment_key_frames(5, 10) == [(0, 5, 2)]
    assert segment_key_frames(10, 10) == [(0, 10, 5)]
    assert segment_key_frames(23, 10) == [(0, 10, 5), (10, 20, 15), (20, 23, 21)]


@pytest.mark.parametrize("t", [1, 5, 10, 23])
def test_video_schedule_one_detection_per_frame_in_order(nanodet, t):
    options = DetectOptions(conf=0.02, imgsz=96)
    frames = _frames(t)
    detector = PSLAVideoDetector(build_psla(nanodet), nanodet_classes(), options)
    reference = None
    for size in (3, 7):  # chunk sizes that do not divide the interval
        dets = list(detector.run(_chunks(frames, size)))
        assert len(dets) == t
        assert detector.state.key_frames == [k for _, _, k in segment_key_frames(t, 10)]
        assert detector.state.max_pending <= 10
        if reference is None:
            reference = dets
        for a, b in zip(dets, reference):
            np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)
            np.testing.assert_array_equal(a.labels, b.labels)
    # key frames give NanoDet's detections at init: they sit at the right places
    frame_det = FrameDetector(nanodet, nanodet_classes(), options, torch.device("cpu"))
    for key in detector.state.key_frames:
        want = frame_det.detect_frames(frames[key : key + 1])[0]
        got = reference[key]
        assert len(got) == len(want) > 0
        np.testing.assert_allclose(got.boxes, want.boxes, atol=1e-2)
        np.testing.assert_allclose(got.scores, want.scores, atol=1e-4)


def test_run_resets_between_videos(nanodet):
    detector = PSLAVideoDetector(build_psla(nanodet), nanodet_classes(), DetectOptions(imgsz=96))
    first = list(detector.run(_chunks(_frames(12), 4)))
    list(detector.run(_chunks(_frames(12, seed=5), 5)))
    again = list(detector.run(_chunks(_frames(12), 6)))
    for a, b in zip(first, again):
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)
    assert detector.state.key_frames == [5, 11]


def test_frame_size_change_is_refused(nanodet):
    detector = PSLAVideoDetector(build_psla(nanodet), nanodet_classes(), DetectOptions(imgsz=96))
    chunks = [FrameChunk(0, _frames(10), np.zeros(10)), FrameChunk(10, _frames(5, h=60), np.zeros(5))]
    with pytest.raises(ValueError, match="frame size changed"):
        list(detector.run(chunks))


# --- identity at init, training forward -------------------------------------------


@pytest.mark.parametrize("use_rfu", [True, False])
def test_key_frame_equals_nanodet_at_init(nanodet, use_rfu):
    model = build_psla(nanodet, PSLAConfig(use_rfu=use_rfu))
    clip = _clip(6)
    with torch.no_grad():
        first = model.forward_clip(clip[:1], 0)  # initialises F_t from frame 0
        out = model.forward_clip(clip, 4, memory=first.memory)  # RFU runs at frame 4
        want = nanodet(clip[4:5])
    got = out.outputs[4]
    assert (got.level_shapes, got.strides) == (want.level_shapes, want.strides)
    torch.testing.assert_close(got.cls_scores, want.cls_scores, atol=1e-5, rtol=0)
    torch.testing.assert_close(got.box_dists, want.box_dists, atol=1e-5, rtol=0)


def test_forward_clip_outputs_and_gradients(nanodet):
    model = build_psla(nanodet).train()
    clip = _clip(4)
    out = model.forward_clip(clip, 1)
    assert len(out.outputs) == 4 and out.nonkey_index == [0, 2, 3]
    assert all(o.cls_scores.shape == out.outputs[0].cls_scores.shape for o in out.outputs)
    # 100x72 frames -> 96x96 input (69 rows padded to 96)
    assert [tuple(f.shape) for f in out.features] == [(4, 128, 12, 12), (4, 128, 6, 6), (4, 128, 3, 3)]
    assert [tuple(f.shape) for f in out.transformed] == [(3, 128, 12, 12), (3, 128, 6, 6), (3, 128, 3, 3)]
    teacher = model.teacher_features(clip)
    loss = sum(((f - t) ** 2).mean() for f, t in zip(out.features, teacher))
    loss = loss + sum(o.cls_scores.mean() for o in out.outputs)
    loss.backward()
    assert all(p.grad is None for p in model.detector.parameters())
    grads = {name: p.grad for name, p in model.trainable_modules().named_parameters()}
    assert grads["transform_net.outs.0.weight"].abs().sum() > 0
    assert grads["quality_nets.0.out.bias"].abs().sum() > 0
    assert grads["psla.0.g.weight"] is not None


@pytest.mark.parametrize(
    "config",
    [
        PSLAConfig(use_rfu=False, use_denseft=False),
        PSLAConfig(use_denseft=False, max_displacement=2),
        PSLAConfig(max_displacement=5, levels=(0,)),
        PSLAConfig(feature="neck", split_stage=1),
        PSLAConfig(split_stage=2, key_interval=4),
    ],
)
def test_ablations_run(nanodet, config):
    model = build_psla(nanodet, config)
    clip = _clip(5)
    with torch.no_grad():
        first = model.forward_clip(clip[:1], 0)
        out = model.forward_clip(clip, 2, memory=first.memory)
        outputs, memory = model.forward_segment(clip, 2, first.memory)
    assert len(out.outputs) == 5 and outputs[1].cls_scores.shape[0] == 4
    assert (model.update_nets is None) == (not config.use_rfu)
    assert (model.quality_nets is None) == (not config.use_denseft)
    # forward_segment and forward_clip agree; non-key rows are frames 0, 1, 3, 4
    torch.testing.assert_close(outputs[0].cls_scores, out.outputs[2].cls_scores, atol=1e-5, rtol=0)
    torch.testing.assert_close(outputs[1].cls_scores[2:3], out.outputs[3].cls_scores, atol=1e-5, rtol=0)


def test_save_load_modules(nanodet, tmp_path):
    torch.manual_seed(1)
    model = build_psla(nanodet)
    with torch.no_grad():
        for p in model.trainable_modules().parameters():
            p.add_(torch.randn_like(p) * 0.01)
    path = tmp_path / "psla.pt"
    model.save_modules(path)
    saved = torch.load(path, weights_only=True)
    assert not any(k.startswith("detector") for k in saved["state_dict"])
    other = build_psla(nanodet)
    other.load_modules(path)
    for (name, a), b in zip(model.trainable_modules().state_dict().items(), other.trainable_modules().state_dict().values()):
        assert torch.equal(a, b), name
    with pytest.raises(ValueError, match="another PSLAConfig"):
        build_psla(nanodet, PSLAConfig(transform_channels=8)).load_modules(path)


def nanodet_classes():
    from vidtag.models.nanodet import COCO_CLASSES

    return COCO_CLASSES


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(nanodet):
    cpu = build_psla(nanodet)
    gpu_det = load_nanodet(device="cuda")
    gpu = build_psla(gpu_det)
    gpu.trainable_modules().load_state_dict(cpu.trainable_modules().state_dict())
    clip = _clip(10)
    with torch.no_grad():
        first_cpu = cpu.forward_segment(clip[:1], 0, None)[1]
        first_gpu = gpu.forward_segment(clip[:1].cuda(), 0, None)[1]
        out_cpu, _ = cpu.forward_segment(clip, 5, first_cpu)
        out_gpu, _ = gpu.forward_segment(clip.cuda(), 5, first_gpu)
    for a, b in zip(out_cpu, out_gpu):
        torch.testing.assert_close(b.cls_scores.cpu(), a.cls_scores, atol=1e-3, rtol=1e-3)
        torch.testing.assert_close(b.box_dists.cpu(), a.box_dists, atol=1e-2, rtol=1e-3)
    options = DetectOptions(conf=0.02, imgsz=96)
    frames = _frames(12)
    dets_cpu = list(PSLAVideoDetector(cpu, nanodet_classes(), options).run(_chunks(frames, 4)))
    dets_gpu = list(PSLAVideoDetector(gpu, nanodet_classes(), options, "cuda").run(_chunks(frames.cuda(), 4)))
    assert len(dets_gpu) == 12
    for a, b in zip(dets_cpu, dets_gpu):
        keep = a.scores > 0.1
        assert len(b) >= keep.sum()


# --- non-key affinity, inference-time options -------------------------------------


def test_nonkey_affinity_uses_the_key_frames_transformed_feature(nanodet):
    torch.manual_seed(2)
    clip = _clip(5)
    for affinity in ("key_transformed", "memory"):
        model = build_psla(nanodet, PSLAConfig(nonkey_affinity=affinity))
        with torch.no_grad():
            out = model.forward_clip(clip, 2)
            key_t = model.transform_net(model.low_features(clip[2:3]))
        for level, psla_module in enumerate(model.psla):
            want = psla_module.f(key_t[level]) if affinity == "key_transformed" else out.memory.embeds[level]
            torch.testing.assert_close(out.memory.nonkey_embeds[level], want, atol=1e-5, rtol=0)
            # the next key frame's RFU always compares with f(F_t)
            torch.testing.assert_close(out.memory.embeds[level], psla_module.f(out.memory.features[level]), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="nonkey_affinity"):
        PSLAConfig(nonkey_affinity="flow")


def test_config_from_older_files_means_the_papers_affinity():
    saved = {"key_interval": 10, "levels": [0, 1, 2], "some_future_field": 1}
    config = PSLAConfig.from_saved(saved)
    assert config.nonkey_affinity == "memory" and config.levels == (0, 1, 2)
    assert PSLAConfig.from_saved(saved, key_interval=4).key_interval == 4


def test_inference_options_override_the_shipped_config():
    from vidtag.models.build import DetectorSettings, build_detector

    overrides = {"key_interval": 4, "max_displacement": 2, "use_rfu": False, "displacement_scaling": "none"}
    detector, _ = build_detector(DetectorSettings("psla", None, DetectOptions(imgsz=96), "cpu", overrides))
    config = detector.model.config
    assert (config.key_interval, config.max_displacement, config.use_rfu) == (4, 2, False)
    assert [p.max_displacement for p in detector.model.psla] == [2, 2, 2]
    scaled, _ = build_detector(DetectorSettings("psla", None, DetectOptions(imgsz=96), "cpu", {"max_displacement": 4, "displacement_scaling": "stride"}))
    assert [p.max_displacement for p in scaled.model.psla] == [4, 2, 1]
    dets = list(detector.run(_chunks(_frames(9), 5)))
    assert len(dets) == 9 and detector.state.key_frames == [2, 6, 8]  # segments 0-3, 4-7, 8
    with pytest.raises(ValueError, match="cannot change at inference"):
        build_detector(DetectorSettings("psla", None, DetectOptions(imgsz=96), "cpu", {"embed_channels": 8}))
    with pytest.raises(ValueError, match="PSLA options"):
        build_detector(DetectorSettings("frame", None, DetectOptions(imgsz=96), "cpu", {"key_interval": 4}))


def test_displacement_scaling_keeps_the_reach_in_pixels(nanodet):
    config = PSLAConfig(max_displacement=4, displacement_scaling="stride")
    assert [config.level_displacement(level) for level in range(3)] == [4, 2, 1]  # 32 px at strides 8, 16, 32
    assert [PSLAConfig(max_displacement=5).level_displacement(level) for level in range(3)] == [5, 5, 5]
    model = build_psla(nanodet, config)
    assert [p.max_displacement for p in model.psla] == [4, 2, 1]
    with pytest.raises(ValueError, match="displacement_scaling"):
        PSLAConfig(displacement_scaling="log")


def test_offset_prior_modules_save_load_and_start_near_a_copy(nanodet, tmp_path):
    """``offset_prior``: a learnt per-offset bias per level, saved with the modules; files
    without one (the paper's softmax) refuse to load into a model with one and back."""
    with_prior = build_psla(nanodet, PSLAConfig(offset_prior=30.0, displacement_scaling="stride"))
    assert all(p.offset_bias is not None and p.offset_bias[0] == 30.0 for p in with_prior.psla)
    assert "psla.0.offset_bias" in with_prior.trainable_modules().state_dict()
    assert PSLAConfig.from_saved({"key_interval": 10}).offset_prior is None  # older files: no prior
    clip = _clip(3)
    with torch.no_grad():
        out = with_prior.forward_clip(clip, 1)
    for level, (propagated, memory) in enumerate(zip(out.propagated, out.memory.features)):
        torch.testing.assert_close(propagated, memory.expand_as(propagated), atol=1e-4, rtol=1e-4, msg=f"level {level}")
    path = tmp_path / "prior.pt"
    with torch.no_grad():
        with_prior.psla[0].offset_bias[3] = -2.0
    with_prior.save_modules(path)
    with pytest.raises(ValueError, match="another PSLAConfig"):
        build_psla(nanodet, PSLAConfig()).load_modules(path)
    loaded = build_psla(nanodet, PSLAConfig.from_saved(torch.load(path, weights_only=True)["config"]))
    loaded.load_modules(path)
    assert loaded.psla[0].offset_bias[3] == -2.0


def test_a_hard_cut_splits_the_segment_and_restarts_the_temporal_feature(nanodet):
    """Scene A for 6 frames, then scene B (thumbnail NCC 0.19 at the cut, 0.97 within a scene): B's frames get exactly the detections of a
    video that starts at B (key frames 8 and 12 either way), and the cut is found."""
    scene_a, scene_b = _frames(6, seed=1), _frames(8, seed=2).flip(2)  # B: another texture, the square moving left
    video = torch.cat((scene_a, scene_b))
    model = build_psla(nanodet, PSLAConfig(key_interval=10)).eval()
    options = DetectOptions(imgsz=96, conf=0.01)
    detector = PSLAVideoDetector(model, nanodet_classes(), options)
    dets = list(detector.run(_chunks(video, 5)))
    assert len(dets) == 14
    assert detector.state.shots.starts == [6] and detector.state.key_frames == [3, 8, 12]
    alone = PSLAVideoDetector(build_psla(nanodet, PSLAConfig(key_interval=4)).eval(), nanodet_classes(), options)
    alone.model.load_state_dict(model.state_dict())
    want = list(alone.run(_chunks(scene_b, 3)))
    assert alone.state.key_frames == [2, 6] and alone.state.shots.starts == []
    assert sum(len(d) for d in want) > 0
    for got, ref in zip(dets[6:], want):
        np.testing.assert_allclose(got.boxes, ref.boxes, atol=1e-3)
        np.testing.assert_allclose(got.scores, ref.scores, atol=1e-5)
    off = PSLAVideoDetector(build_psla(nanodet, PSLAConfig(key_interval=10, cut_threshold=0.0)).eval(), nanodet_classes(), options)
    list(off.run(_chunks(video, 5)))
    assert off.state.shots.starts == [] and off.state.key_frames == [5, 12]
    with pytest.raises(ValueError, match="cut_threshold"):
        PSLAConfig(cut_threshold=1.5)


def test_quality_bias_is_a_logit_added_to_the_propagated_side(nanodet):
    """quality_bias = b runs like Quality Nets whose last bias has b added on the P_i channel."""
    import copy
    from dataclasses import replace

    torch.manual_seed(3)
    model = build_psla(nanodet, PSLAConfig(fusion_init_logit=0.5))
    for q in model.quality_nets:
        torch.nn.init.normal_(q.out.weight, std=0.05)  # position-dependent weights, not the init's constant
    reference = copy.deepcopy(model)
    for q in reference.quality_nets:
        q.out.bias.data[0] += 1.5
    model.set_inference_config(replace(model.config, quality_bias=1.5))
    clip = _clip(5)
    with torch.no_grad():
        got, want = model.forward_segment(clip, 2, None)[0][1], reference.forward_segment(clip, 2, None)[0][1]
        plain = build_psla(nanodet, PSLAConfig(fusion_init_logit=0.5))
        plain.load_state_dict(model.state_dict())
        other = plain.forward_segment(clip, 2, None)[0][1]
    torch.testing.assert_close(got.cls_scores, want.cls_scores)
    torch.testing.assert_close(got.box_dists, want.box_dists)
    assert not torch.allclose(got.cls_scores, other.cls_scores)  # the bias changes the non-key frames
    assert all(q.logit_bias == 0 for q in plain.quality_nets)
    fresh = build_psla(nanodet, PSLAConfig(quality_bias=2.0))
    assert all(q.logit_bias == 2.0 for q in fresh.quality_nets)
