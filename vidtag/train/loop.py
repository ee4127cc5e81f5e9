"""Label-free training of the PSLA modules: distillation from the frozen NanoDet-g.

Per step, ``batch`` clips from :func:`vidtag.train.data.sample_clip`; for each:

1. teacher: NanoDet-g on the *clean* frames -> features ``Fh`` and head outputs;
2. student, on the *degraded* frames: ``forward_clip(prev_key, 0)`` sets the
   memory ``F_t`` (when the clip has a previous key frame), then
   ``forward_clip([key, nonkey], key_index, memory)`` runs RFU on the key frame
   and DenseFT on the non-key frame;
3. :func:`vidtag.train.losses.distillation_loss` on the key and non-key frames.

Only the new modules train (the NanoDet is frozen, eval mode); Adam, linear
warm-up then cosine decay, gradient-norm clipping.  Everything random comes
from ``TrainConfig.seed``: ``torch.manual_seed`` before the modules are built,
a NumPy ``Generator`` for the clips, crops and degradation seeds; two runs with
the same config and thread count give the same losses.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from vidtag.models.nanodet import NanoDet, NanoDetOutput
from vidtag.models.psla import PSLAConfig, PSLADetector, build_psla
from vidtag.train.data import ClipSpec, VideoFrames, load_frames, make_clip_pair, sample_clip
from vidtag.train.losses import LossWeights, distillation_loss

LOSS_PARTS = ("total", "cls", "box", "feature", "transform", "giou", "trl")  # giou: labelled training; trl: IFF-Net


@dataclass(frozen=True)
class TrainConfig:
    """What to train on and how.

    ``videos[j]`` is trained on its frames ``frames[j][0] <= i < frames[j][1]``
    only (half-open ranges); nothing after ``frames[j][1]`` is decoded.
    """

    videos: tuple[str, ...]
    frames: tuple[tuple[int, int], ...]  # per video (start, stop), half-open
    imgsz: int = 320  # training input (longest side); the modules are fully convolutional, inference uses 416
    steps: int = 1500
    batch: int = 2  # clips per step (gradients accumulated; forward_clip runs one video at a time)
    lr: float = 2e-3  # Adam
    weight_decay: float = 0.0
    warmup_steps: int = 50  # linear warm-up from lr / 10
    min_lr_ratio: float = 0.05  # cosine decays to lr * min_lr_ratio
    grad_clip: float = 5.0  # max global gradient norm
    seed: int = 0
    psla: PSLAConfig = PSLAConfig(fusion_init_logit=4.0)  # 4 not 16: both fused inputs get gradient; 150-step check: held-out loss 0.552 vs 0.563
    loss: LossWeights = LossWeights()
    degrade_fraction: float = 0.5  # share of a span's frames in degradation bursts (benchmark: 0.4)
    camera_motion: bool = True  # random pan/zoom crop per clip (same for teacher and student)
    max_offset: int = 5  # |nonkey - key| <= 5: the non-key frames of a 10-frame segment
    prev_key_prob: float = 1.0  # add the key frame k - key_interval (RFU) whenever it exists
    base_weights: str = "nanodet-g-coco"
    threads: int | None = None  # torch.set_num_threads; None leaves it
    log_every: int = 10
    checkpoint: str | None = None  # save_modules here every checkpoint_every steps and at the end
    checkpoint_every: int = 0
    time_limit_s: float | None = None  # stop early (keeping the schedule) when this much wall time has passed
    labels: str | None = None  # CocoVID JSON / ImageNet VID folder: GFL detection loss on its boxes instead of distillation

    def __post_init__(self):
        check_schedule(self)


def check_schedule(config) -> None:
    """ValueError unless ``config`` has one half-open frame range per video and at least one step and clip per step."""
    if len(config.videos) != len(config.frames) or not config.videos:
        raise ValueError(f"need one (start, stop) range per video, got {len(config.videos)} videos and {len(config.frames)} ranges")
    for start, stop in config.frames:
        if not 0 <= start < stop:
            raise ValueError(f"bad frame range ({start}, {stop})")
    if config.steps < 1 or config.batch < 1:
        raise ValueError(f"steps and batch must be >= 1, got {config.steps}, {config.batch}")


@dataclass
class TrainResult:
    """What :func:`train_psla` returns.

    Attributes:
        model (PSLADetector): the trained detector (new modules trained, NanoDet untouched).
        history (list[dict]): per step: ``step``, ``lr``, ``grad_norm`` and the
            loss parts (mean over the step's clips).
        steps (int): steps run (fewer than configured if ``time_limit_s`` hit).
        wall_s (float): training wall time, decoding excluded.
        load_s (float): decoding time.
    """

    model: PSLADetector
    history: list[dict] = field(default_factory=list)
    steps: int = 0
    wall_s: float = 0.0
    load_s: float = 0.0

    def final_losses(self, last: int | None = None) -> dict[str, float]:
        """Mean of each loss part over the last ``last`` steps (default: the last 10 %, at least 1)."""
        last = last or max(1, len(self.history) // 10)
        rows = self.history[-last:]
        return {k: float(np.mean([r[k] for r in rows])) for k in LOSS_PARTS}


def lr_factor(step: int, config: TrainConfig) -> float:
    """Multiplier of ``config.lr`` at ``step`` (0-based): linear warm-up, then cosine."""
    if step < config.warmup_steps:
        return 0.1 + 0.9 * step / config.warmup_steps
    span = max(1, config.steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def to_input(frames: np.ndarray, imgsz: int) -> Tensor:
    """uint8[T, h, w, 3] RGB -> normalised Tensor[T, 3, H, W] (letterbox)."""
    from vidtag.models.preprocess import letterbox

    return letterbox(torch.from_numpy(np.ascontiguousarray(frames)), imgsz)[0]


def _cat_outputs(outputs: list[NanoDetOutput]) -> NanoDetOutput:
    first = outputs[0]
    return NanoDetOutput(
        torch.cat([o.cls_scores for o in outputs]), torch.cat([o.box_dists for o in outputs]), first.level_shapes, first.strides
    )


def _rows(output: NanoDetOutput, rows: list[int]) -> NanoDetOutput:
    return NanoDetOutput(output.cls_scores[rows], output.box_dists[rows], output.level_shapes, output.strides)


@dataclass
class ClipForward:
    """Teacher and student on one clip: the frames the loss sees (key, non-key) in time order."""

    student: NanoDetOutput
    teacher: NanoDetOutput
    student_features: list[Tensor]
    teacher_features: list[Tensor]
    transformed: list[Tensor]
    transformed_teacher: list[Tensor]
    key_row: int  # row of the key frame in the tensors above


def forward_student(model: PSLADetector, spec: ClipSpec, x_deg: Tensor):
    """The student on a clip's (degraded) input Tensor[T, 3, H, W]: the previous key
    frame (if any) sets the memory, then RFU on the key frame and DenseFT on the other.

    Returns:
        (PSLAClipOutput of the frames after the previous key frame, rows: their
        indices in the clip, key_row: the key frame's index in that output).
    """
    idx = list(spec.indices)
    memory, first = None, 0
    if spec.prev_key is not None:
        memory = model.forward_clip(x_deg[0:1], 0).memory
        first = 1
    rows = list(range(first, len(idx)))
    key_row = idx.index(spec.key) - first
    return model.forward_clip(x_deg[first:], key_row, memory), rows, key_row


def forward_clip_pair(model: PSLADetector, spec: ClipSpec, clean: np.ndarray, degraded: np.ndarray, imgsz: int) -> ClipForward:
    """Run teacher (clean) and student (degraded) on a clip from :func:`make_clip_pair`."""
    x_clean, x_deg = to_input(clean, imgsz), to_input(degraded, imgsz)
    with torch.no_grad():
        t_feats = model.teacher_features(x_clean)
        t_out = model.predict(t_feats)  # == model.detector(x_clean) for feature="head" / "neck"
    out, rows, key_row = forward_student(model, spec, x_deg)
    nonkey_rows = [rows[i] for i in out.nonkey_index]
    return ClipForward(
        student=_cat_outputs(out.outputs),
        teacher=_rows(t_out, rows),
        student_features=out.features,
        teacher_features=[f[rows] for f in t_feats],
        transformed=out.transformed,
        transformed_teacher=[f[nonkey_rows] for f in t_feats],
        key_row=key_row,
    )


def clip_loss(model: PSLADetector, fwd: ClipForward, weights: LossWeights) -> dict[str, Tensor]:
    """The distillation loss of one clip (key and non-key frames together)."""
    return distillation_loss(
        fwd.student, fwd.teacher, fwd.student_features, fwd.teacher_features, weights, fwd.transformed, fwd.transformed_teacher
    )


def crop_targets(target, affine: np.ndarray, width: int, height: int, imgsz: int) -> tuple[Tensor, Tensor] | None:
    """One frame's labelled boxes moved by its camera-motion crop, in network-input pixels.

    Args:
        target: the frame's labels (``.boxes`` float[n, 4] xyxy source pixels,
            ``.labels`` int[n]) or None for an unlabelled frame.
        affine (float32[2, 3]): the frame's source -> crop pixel map.
        width, height: the crop's size.
        imgsz: the network input size.

    Returns:
        (boxes Tensor[m, 4] xyxy input pixels, labels Tensor[m]) of the boxes the
        crop left in view, or None.
    """
    from vidtag.degrade import warp_boxes_xyxy
    from vidtag.ops.letterbox import plan_letterbox

    if target is None:
        return None
    box = plan_letterbox((width, height), imgsz)[0]
    boxes = warp_boxes_xyxy(target.boxes, affine, width, height)
    keep = (boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1)  # boxes the crop left in view
    return box.to_input(torch.from_numpy(boxes[keep])), torch.from_numpy(target.labels[keep])


def labelled_clip_loss(model: PSLADetector, spec: ClipSpec, videos: list[VideoFrames], targets: dict, config: TrainConfig) -> dict[str, Tensor]:
    """The detection loss of one clip on its labelled key / non-key frames (boxes follow the camera-motion crop)."""
    from vidtag.train.supervised import detection_loss

    _, degraded, affines = make_clip_pair(spec, videos, config.degrade_fraction, config.camera_motion, return_affines=True)
    out, rows, _ = forward_student(model, spec, to_input(degraded, config.imgsz))
    h, w = degraded.shape[1:3]
    frame_targets = [crop_targets(targets.get(spec.indices[row]), affines[row], w, h, config.imgsz) for row in rows]
    return detection_loss(_cat_outputs(out.outputs), frame_targets)


def load_videos(config: TrainConfig) -> list[VideoFrames]:
    """Decode every training range of ``config`` at its ``imgsz``."""
    return [load_frames(v, start, stop, config.imgsz) for v, (start, stop) in zip(config.videos, config.frames)]


def seeded_model(config, build, module_config, detector: NanoDet | None = None):
    """``build(detector, module_config)`` right after ``torch.manual_seed(config.seed)``: NanoDet-g
    (``detector``, else ``config.base_weights``) with freshly initialised new modules."""
    from vidtag.models.nanodet import load_nanodet

    torch.manual_seed(config.seed)
    detector = detector if detector is not None else load_nanodet(config.base_weights)
    return build(detector, module_config)


def build_student(config: TrainConfig, detector: NanoDet | None = None) -> PSLADetector:
    """NanoDet-g (frozen, eval) + fresh PSLA modules, initialised from ``torch.manual_seed(config.seed)``."""
    return seeded_model(config, build_psla, config.psla, detector)


def prepare_training(config, videos: list[VideoFrames] | None, build_model) -> tuple[list[VideoFrames], float, object, list | None]:
    """What every training starts with: threads, decoded ranges, the student, the labels.

    Args:
        config: a TrainConfig or IFFTrainConfig (``threads``, ``labels``, data fields).
        videos: already decoded ranges, or None to decode them from ``config``.
        build_model: () -> the student (its NanoDet is frozen here).

    Returns:
        (videos, decode seconds, student, per-video labelled targets or None).

    Raises:
        ValueError: the labels do not fit the videos.
    """
    if config.threads:
        torch.set_num_threads(config.threads)
    t0 = time.perf_counter()
    videos = videos if videos is not None else load_videos(config)
    load_s = time.perf_counter() - t0
    model = build_model()
    model.detector.eval().requires_grad_(False)
    targets = None
    if config.labels is not None:
        from vidtag.models.nanodet import COCO_CLASSES
        from vidtag.train.supervised import load_targets

        targets = load_targets(config.labels, videos, COCO_CLASSES[: model.detector.config.num_classes])
        if not any(targets):
            raise ValueError(f"{config.labels}: no labelled frame inside the training ranges")
    return videos, load_s, model, targets


def finish_training(model, config, sample_loss, load_s: float, on_log=None) -> TrainResult:
    """Run :func:`run_schedule`, then eval mode and the final checkpoint."""
    result = TrainResult(model, load_s=load_s)
    run_schedule(model, config, sample_loss, result, on_log)
    model.eval()
    if config.checkpoint:
        model.save_modules(config.checkpoint)
    return result


def train_psla(
    config: TrainConfig,
    on_log: Callable[[dict], None] | None = None,
    detector: NanoDet | None = None,
    videos: list[VideoFrames] | None = None,
) -> TrainResult:
    """Train the PSLA, RFU and DenseFT modules by distillation (see the module doc).

    Args:
        config: data, schedule and seeds.
        on_log: called every ``config.log_every`` steps and at the last with a
            dict: ``step``, ``steps``, ``lr``, ``grad_norm``, the loss parts
            (mean since the last call), ``steps_per_s``, ``elapsed_s``, ``eta_s``.
        detector: a loaded NanoDet to use instead of ``config.base_weights``
            (it is frozen in place).
        videos: already decoded training ranges (else decoded from ``config``).

    With ``config.labels`` the loss is NanoDet's detection loss on those boxes
    (:mod:`vidtag.train.supervised`) on the key and non-key frames that have
    them, and the teacher is not run.

    Raises:
        ValueError: the labels do not fit the videos (see ``supervised.load_targets``).
    """
    videos, load_s, model, targets = prepare_training(config, videos, lambda: build_student(config, detector))

    def sample_loss(rng: np.random.Generator) -> dict[str, Tensor]:
        spec = sample_clip(rng, lengths, config.psla.key_interval, config.max_offset, config.prev_key_prob)
        if targets is None:
            clean, degraded = make_clip_pair(spec, videos, config.degrade_fraction, config.camera_motion)
            return clip_loss(model, forward_clip_pair(model, spec, clean, degraded, config.imgsz), config.loss)
        while not ({spec.key, spec.nonkey} & targets[spec.video].keys()):
            spec = sample_clip(rng, lengths, config.psla.key_interval, config.max_offset, config.prev_key_prob)
        return labelled_clip_loss(model, spec, videos, targets[spec.video], config)

    lengths = [len(v.frames) for v in videos]
    return finish_training(model, config, sample_loss, load_s, on_log)


def run_schedule(model, config, sample_loss: Callable[[np.random.Generator], dict[str, Tensor]], result: TrainResult, on_log=None) -> None:
    """The optimisation loop shared by the PSLA and IFF trainings.

    Per step, ``config.batch`` calls of ``sample_loss(rng)`` (one clip each,
    gradients accumulated); Adam on ``model.trainable_modules()``, linear
    warm-up then cosine (:func:`lr_factor`), gradient-norm clipping,
    checkpoints, logging as :func:`train_psla` documents, and
    ``config.time_limit_s``.  ``rng`` is ``np.random.default_rng(config.seed)``.
    Fills ``result.history``, ``steps`` and ``wall_s``; leaves the model in eval mode.
    """
    modules = model.trainable_modules().train()
    params = [p for p in modules.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, config))
    rng = np.random.default_rng(config.seed)
    window: list[dict] = []
    start = time.perf_counter()
    last_log = start
    for step in range(config.steps):
        optimizer.zero_grad(set_to_none=True)
        sums = dict.fromkeys(LOSS_PARTS, 0.0)
        for _ in range(config.batch):
            parts = sample_loss(rng)
            (parts["total"] / config.batch).backward()
            for k in LOSS_PARTS:
                sums[k] += float(parts[k].detach()) / config.batch if k in parts else 0.0
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, config.grad_clip))
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
        row = {"step": step + 1, "lr": lr, "grad_norm": grad_norm, **sums}
        result.history.append(row)
        window.append(row)
        result.steps = step + 1
        elapsed = time.perf_counter() - start
        done = step + 1 == config.steps or (config.time_limit_s is not None and elapsed >= config.time_limit_s)
        if config.checkpoint and config.checkpoint_every and (step + 1) % config.checkpoint_every == 0:
            model.save_modules(config.checkpoint)
        if on_log is not None and ((step + 1) % config.log_every == 0 or done):
            now = time.perf_counter()
            rate = len(window) / max(now - last_log, 1e-9)
            info = {"step": step + 1, "steps": config.steps, "lr": lr, "grad_norm": float(np.mean([r["grad_norm"] for r in window]))}
            info.update({k: float(np.mean([r[k] for r in window])) for k in LOSS_PARTS})
            info.update(steps_per_s=rate, elapsed_s=elapsed, eta_s=(config.steps - step - 1) / max(rate, 1e-9))
            on_log(info)
            window, last_log = [], now
        if done:
            break
    result.wall_s = time.perf_counter() - start


# ---------------------------------------------------------------------------
# Measuring the student against the teacher
# ---------------------------------------------------------------------------


def fixed_clips(videos: list[VideoFrames], count: int, seed: int, key_interval: int = 10, max_offset: int = 5) -> list[ClipSpec]:
    """``count`` clips drawn from ``seed`` (each with a previous key frame where one exists): a fixed evaluation set."""
    rng = np.random.default_rng(seed)
    return [sample_clip(rng, [len(v.frames) for v in videos], key_interval, max_offset, 1.0) for _ in range(count)]


@torch.no_grad()
def evaluate_student(
    model: PSLADetector,
    videos: list[VideoFrames],
    clips: list[ClipSpec],
    imgsz: int,
    weights: LossWeights = LossWeights(),
    degrade_fraction: float = 1.0,
    camera_motion: bool = False,
) -> dict[str, float]:
    """How far the student is from the teacher on degraded frames.

    For each clip, the teacher runs on the clean frames, the student and (as a
    baseline) the plain NanoDet on the degraded ones.  Class-score errors use
    the teacher's cells: ``pos_err`` is ``mean |s - t|`` at the teacher's top
    class over cells with ``max t >= weights.pos_threshold``; ``neg_err`` is
    ``mean max_c relu(s - t)`` over cells with ``max t < 0.05`` (false alarms).

    Returns:
        dict: ``loss`` / ``cls`` / ``box`` / ``feature`` (student, key and
        non-key frames), ``{key,nonkey}_{pos,neg}_err`` for the student and
        ``frame_{key,nonkey}_{pos,neg}_err`` for NanoDet on the degraded frame.
    """
    acc: dict[str, list[float]] = {}

    def add(name, value):
        acc.setdefault(name, []).append(float(value))

    for spec in clips:
        clean, degraded = make_clip_pair(spec, videos, degrade_fraction, camera_motion)
        fwd = forward_clip_pair(model, spec, clean, degraded, imgsz)
        parts = clip_loss(model, fwd, weights)
        for k in ("total", "cls", "box", "feature"):
            add("loss" if k == "total" else k, parts[k])
        first = 1 if spec.prev_key is not None else 0
        frame_out = model.detector(to_input(degraded[first:], imgsz))
        for who, out in (("", fwd.student), ("frame_", frame_out)):
            for role, row in (("key", fwd.key_row), ("nonkey", 1 - fwd.key_row)):
                s, t = out.cls_scores[row], fwd.teacher.cls_scores[row]
                top, cls = t.max(dim=-1)
                pos = top >= weights.pos_threshold
                if pos.any():
                    add(f"{who}{role}_pos_err", (s.gather(-1, cls[:, None])[:, 0] - top)[pos].abs().mean())
                neg = top < 0.05
                add(f"{who}{role}_neg_err", (s - t).clamp(min=0).amax(dim=-1)[neg].mean())
    return {k: float(np.mean(v)) for k, v in sorted(acc.items())}


# ---------------------------------------------------------------------------
# The manifest of trained modules
# ---------------------------------------------------------------------------


def write_manifest(
    result: TrainResult,
    config: TrainConfig,
    weights_path: str | Path,
    name: str,
    command: str,
    extra: dict | None = None,
) -> Path:
    """Write ``<weights_path stem>.json`` beside the modules file saved by ``save_modules``.

    ``config`` is a :class:`TrainConfig` (PSLA) or a ``vidtag.train.iff.IFFTrainConfig``.
    Records the file's sha256, the base weights (name, sha256), the PSLAConfig / IFFConfig,
    the training data (files, frame ranges, sha256 of the sources), seeds, the
    command, steps, final losses and wall time; ``extra`` is merged in
    (e.g. measured figures).
    """
    from vidtag.models.nanodet import COCO_CLASSES
    from vidtag.models.preprocess import BGR_MEAN, BGR_STD
    from vidtag.weights import file_sha256, resolve_weights

    weights_path = Path(weights_path)
    base = resolve_weights(config.base_weights)
    kind = "iff" if hasattr(config, "iff") else "psla"
    Kind, Detector, trainer = ("IFF", "IFFDetector", "vidtag.train.iff.train_iff") if kind == "iff" else ("PSLA", "PSLADetector", "vidtag.train.loop.train_psla")
    manifest = {
        "name": name,
        "file": weights_path.name,
        "sha256": file_sha256(weights_path),
        "format": f"torch.save({{'config': asdict({Kind}Config), 'state_dict': new modules}}); load with {Detector}.load_modules",
        "model": f"vidtag.models.{kind}.build_{kind}(load_nanodet(base), {Kind}Config(**config)) + load_modules",
        "base_weights": {"name": base.name, "file": base.file, "sha256": base.sha256},
        f"{kind}_config": asdict(getattr(config, kind)),
        "classes": list(base.classes if base.classes else COCO_CLASSES),
        "input_size": base.input_size,
        "stride_multiple": 32,
        "normalization": {"channel_order": "BGR", "mean": list(BGR_MEAN), "std": list(BGR_STD)},
        "licenses": list(base.licenses),
        "training": {
            "method": (f"GFL detection loss on the labels {Path(config.labels).name} (vidtag.train.supervised)" if config.labels
                       else f"label-free distillation from the frozen base NanoDet ({trainer})"),
            "data": [
                {"file": Path(v).name, "frames": [start, stop], "sha256": file_sha256(v)}
                for v, (start, stop) in zip(config.videos, config.frames)
            ],
            "config": _jsonable(asdict(config)),
            "seeds": {"seed": config.seed, "crop_and_degradation_seeds": "numpy Generator(seed), each < 1000"},
            "steps": result.steps,
            "final_losses": result.final_losses(),
            "wall_s": round(result.wall_s, 1),
            "decode_s": round(result.load_s, 1),
            "threads": torch.get_num_threads(),
        },
        "made_by": command,
    }
    if extra:
        manifest.update(extra)
    path = weights_path.with_suffix(".json")
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return path


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value
