"""Training the PSLA modules without labels: distillation from the frozen NanoDet-g.

``data`` decodes training ranges and samples degraded clips, ``losses`` holds
the distillation terms, ``loop`` runs Adam over them (:func:`train_psla`).
"""

from vidtag.train.data import ClipSpec, VideoFrames, load_frames, make_clip_pair, sample_clip
from vidtag.train.losses import LossWeights, distillation_loss
from vidtag.train.loop import TrainConfig, TrainResult, evaluate_student, train_psla, write_manifest

__all__ = [
    "ClipSpec",
    "LossWeights",
    "TrainConfig",
    "TrainResult",
    "VideoFrames",
    "distillation_loss",
    "evaluate_student",
    "load_frames",
    "make_clip_pair",
    "sample_clip",
    "train_psla",
    "write_manifest",
]
