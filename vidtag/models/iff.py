"""IFF-Net (Jin et al.): in-network feature flow and FGFA aggregation on NanoDet-g.

The paper's parts, mapped onto NanoDet (equations in ``docs/equations.md``):

* ``N_m``: NanoDet-g's backbone and neck; ``F_t`` is the neck output, three
  128-channel maps (strides 8, 16, 32).  Each frame runs it once; the video
  detector keeps the results in a :class:`FeatureRing` of ``window + 1``
  frames.
* IFF module (:class:`BasicIFF`, :class:`AdvancedIFF`): the feature flow
  ``M_{j->i}`` between the current frame i and a neighbour j, in cells of the
  pyramid level ``flow_level`` (default 1, stride 16), resized and rescaled to
  the other levels (``flow * 2**(flow_level - level)``).  The per-frame half
  of the module (the shared 1x1 + 3x3 of the basic module, EB-1 of the
  advanced one) runs once per frame and is cached with the features; the
  per-pair half (concatenation or correlation, the convs that follow) runs
  once per pair.
* Warp: :func:`vidtag.ops.flow.warp` (bilinear, ``align_corners=True``; an
  integer flow moves features by exactly that many cells).
* Aggregation (FGFA): an embedding network per level (1x1, 3x3, 1x1);
  weight of frame j at position p = softmax over the window (current frame
  included) of the cosine similarity between the current frame's embedding
  and frame j's warped embedding; the output is the weighted sum of the warped
  features, fed to NanoDet's head.  Deviation: the embedding is computed once
  per frame on its own feature, scaled to unit length and warped with it in
  the same bilinear pass (FGFA embeds each warped feature): 20 embedding
  passes per frame would cost more than the detector.  The cosine is then
  taken with the warped embedding as it is (a blend of unit vectors).
* Temperature (``learn_temperature``, not in FGFA): the cosines are scaled by
  one learned factor before the softmax.  Cosines lie in [-1, 1], so without
  it the current frame (cosine 1 with itself) can never take much more than
  1/21 of the weight when 20 aligned neighbours look alike; the shipped
  modules learn it, together with the window-matched training softmax
  (``aggregate(counts=)``, :mod:`vidtag.train.iff`).
* Self prior (``self_prior``, not in FGFA, inference only): a logit added to
  the current frame's weight before the softmax, so a frame keeps more of its
  own features and its neighbours weigh in less; the shipped manifest's
  ``inference`` block sets the value ``benchmarks/cross_scene.py`` chose.
* Clean-frame gate (``clean_gate``, not in FGFA, inference only): NanoDet's
  head also runs on each frame's own features, and a frame's *confidence
  mass* (:func:`vidtag.models.nanodet.confidence_mass`: the sum over head
  cells of the best class score, where it is at least 0.3) is compared with
  the masses in its window.  A frame whose mass is at least ``clean_gate`` times
  the window's median (the current frame and its neighbours, as the softmax
  counts them) keeps its own detections, exactly the per-frame detector's,
  and skips flow, warp and aggregation; the others (a blurred, dark, noisy
  or occluded frame among sharper neighbours: its detector sees less than
  they do) are aggregated, and keep the aggregated detections only where
  those carry more mass than the frame's own (a window that did not help,
  e.g. where the flow fails, changes nothing).  A clip where nothing
  degrades is then the per-frame result at little more than per-frame cost.
* Fusion of an aggregated frame's output (``fusion``, not in FGFA, inference
  only).  ``"frame"``: the whole frame keeps either its own detections or the
  aggregated ones, as above.  ``"cells"``: head cell by head cell, the output
  whose best class score is higher (the frame's own on a tie), class scores
  and box together (:func:`fuse_by_cell`): a position the frame sees well
  keeps its own box and score, a position it lost takes the window's.
* Carry (``carry``, not in FGFA, inference only; no effect without the gate): a frame the
  gate finds degraded also takes the boxes that the nearest clean frames
  before and after it (within its window and shot; clean by the same mass
  test) both see, placed on it by straight-line interpolation, where it has
  no such box of its own (:mod:`vidtag.carry`).  Aggregation recovers what
  the window's features can align; carry recovers an object the frame lost
  entirely, from the boxes of the frames that saw it.
* Window (``window`` neighbours, default 20 = +-10): frames before the first
  and after the last are the first and last frame repeated, and each repeat
  counts in the softmax.  ``window = 0`` is the per-frame detector exactly.
  ``window_step`` s > 1 (not in the paper, inference only) aggregates only
  the neighbours at offsets that are multiples of s, each counting as
  ``window / used`` frames in the softmax (``aggregate(counts=)``, as
  training counts its drawn neighbours): the same reach and current-frame
  share for a fraction of the flow and warp cost.

Widths, scaled from the paper's ResNet-101 (2048-channel res5) to NanoDet's
128-channel neck: EB-1 / the basic module's convs 64 (paper 512), EB-2 and the
correlation conv 32 (paper 128), embedding 32 / 32 / 64 (FGFA 512 / 512 /
2048).  The last conv of the flow branch starts at zero: a fresh module
predicts zero flow.

Why flow at stride 16 and not per level: the correlation's reach (10 cells)
is 160 input pixels there, 80 at stride 8 (less than a fast object moves in
10 frames) and more than the whole map at stride 32; one flow for all levels
costs one module pass per pair instead of three (``benchmarks/bench_iff_cost.py``
prints both).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidtag.carry import add_unseen, carry_over
from vidtag.models import modules_file
from vidtag.models.nanodet import MASS_MIN_SCORE, NanoDet, NanoDetOutput, confidence_mass
from vidtag.models.video_detector import VideoDetectorBase, check_frame_shape
from vidtag.ops.flow import correlation, warp
from vidtag.shots import CUT_THRESHOLD, ShotBoundaries, frame_thumbnails
from vidtag.types import Detections, FrameChunk

MODULES = ("basic", "advanced")
FUSIONS = ("frame", "cells")


@dataclass(frozen=True)
class IFFConfig:
    """Shape and window of IFF-Net on NanoDet-g."""

    module: str = "advanced"  # "basic" | "advanced" IFF module (paper sect. 3.2 / 3.3)
    window: int = 20  # neighbours aggregated at test time (paper: 20, +-10); even
    flow_level: int = 1  # pyramid level the flow is estimated at (stride 8 * 2**level); module doc
    flow_channels: int = 64  # EB-1 / basic module width; paper 512
    fusion_channels: int = 32  # EB-2, correlation conv and fused convs; paper 128
    max_displacement: int = 10  # correlation reach in cells (paper 10)
    correlation_stride: int = 2  # paper 2 -> 121 channels
    embed_channels: tuple[int, int, int] = (32, 32, 64)  # FGFA embedding 1x1, 3x3, 1x1; FGFA 512, 512, 2048
    trl_weight: float = 0.65  # lambda of the transformation residual loss (training only); 0 = no TRL
    learn_temperature: bool = False  # FGFA: softmax of the cosine as it is; True: of cosine * a learned scale (module doc)
    cut_threshold: float = CUT_THRESHOLD  # vidtag.shots: the window stops at hard cuts (shot ends repeated); 0 = off (not in the paper)
    self_prior: float = 0.0  # logit added to the current frame's aggregation weight at inference: trust a frame's own features more (module doc); 0 = as trained
    lookalike_threshold: float = 0.2  # a neighbour whose thumbnail NCC with the frame is below this is replaced by the frame (dissolves, flashes); 0 = off
    window_step: int = 1  # aggregate every step-th frame of the window (at most window/2), each counting as window / (neighbours used) frames (module doc)
    clean_gate: float = 0.0  # a frame whose confidence mass is >= this fraction of its window's median keeps its own detections (module doc); 0 = off
    fusion: str = "frame"  # an aggregated frame's output: "frame" (own or aggregated, by mass) or "cells" (per head cell, the more confident; module doc)
    carry: bool = False  # a frame the gate finds degraded also takes the boxes its nearest clean frames on both sides see (vidtag.carry); no effect without a gate

    @classmethod
    def from_saved(cls, saved: dict, **overrides) -> "IFFConfig":
        """The config recorded in a modules file or manifest; ``overrides`` replace fields."""
        known = {f.name for f in fields(cls)}
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in saved.items() if k in known}
        values.update(overrides)
        return cls(**values)

    def __post_init__(self):
        if self.module not in MODULES:
            raise ValueError(f"IFF module must be one of {', '.join(MODULES)}, got {self.module!r}")
        if self.window < 0 or self.window % 2:
            raise ValueError(f"window must be an even number of neighbours >= 0 (+-window/2), got {self.window}")
        if self.flow_level not in (0, 1, 2):
            raise ValueError(f"flow_level must be 0, 1 or 2, got {self.flow_level}")
        if self.trl_weight < 0:
            raise ValueError(f"trl_weight must be >= 0, got {self.trl_weight}")
        if not 0 <= self.cut_threshold <= 1:
            raise ValueError(f"cut_threshold must be in [0, 1] (0 = off), got {self.cut_threshold}")
        if not 0 <= self.lookalike_threshold <= 1:
            raise ValueError(f"lookalike_threshold must be in [0, 1] (0 = off), got {self.lookalike_threshold}")
        if self.window_step < 1:
            raise ValueError(f"window_step must be >= 1, got {self.window_step}")
        if not 0 <= self.clean_gate <= 1:
            raise ValueError(f"clean_gate must be in [0, 1] (0 = off), got {self.clean_gate}")
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {', '.join(FUSIONS)}, got {self.fusion!r}")

    @property
    def radius(self) -> int:
        """Neighbours on each side: ``window // 2``."""
        return self.window // 2


def _conv(in_channels: int, out_channels: int, kernel_size: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size, 1, kernel_size // 2)


def _zero_last(conv: nn.Conv2d) -> nn.Conv2d:
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.zero_()
    return conv


class EmbeddedBlock(nn.Module):
    """EB-1 / EB-2 (paper Fig. 5): ``act(conv3x3(act(conv1x1(x))) + conv1x1'(x))``."""

    def __init__(self, in_channels: int, channels: int):
        super().__init__()
        self.reduce = _conv(in_channels, channels, 1)
        self.conv = _conv(channels, channels, 3)
        self.skip = _conv(in_channels, channels, 1)
        self.act = nn.LeakyReLU(0.1)

    def forward(self, x: Tensor) -> Tensor:
        """x (Tensor[B, C_in, h, w]) -> Tensor[B, channels, h, w]."""
        return self.act(self.conv(self.act(self.reduce(x))) + self.skip(x))


class BasicIFF(nn.Module):
    """Basic IFF module: shared 1x1 + 3x3 on each map, concatenation, 3x3 conv to 2.

    ``encode`` is the per-frame half (cached); ``forward`` the per-pair half.
    """

    def __init__(self, in_channels: int, channels: int):
        super().__init__()
        self.reduce = _conv(in_channels, channels, 1)
        self.conv = _conv(channels, channels, 3)
        self.flow = _zero_last(_conv(2 * channels, 2, 3))
        self.act = nn.LeakyReLU(0.1)

    def encode(self, x: Tensor) -> Tensor:
        """x (Tensor[B, C_in, h, w]) -> Tensor[B, channels, h, w]."""
        return self.act(self.conv(self.act(self.reduce(x))))

    def forward(self, current: Tensor, neighbours: Tensor) -> Tensor:
        """current (Tensor[1, c, h, w]) and neighbours (Tensor[N, c, h, w]), both from
        :meth:`encode` -> flow ``M_{j->i}`` (Tensor[N, 2, h, w], (dx, dy) in cells)."""
        return self.flow(torch.cat((current.expand_as(neighbours), neighbours), dim=1))


class AdvancedIFF(nn.Module):
    """Advanced IFF module (paper Fig. 4): EB-1, correlation, EB-2, fusion.

    ``encode`` (EB-1) is the per-frame half (cached).  Per current frame, EB-2
    on its EB-1 output; per pair, correlation (``(2 D / s + 1)**2`` channels)
    -> 3x3 conv, added to EB-2's output, -> 3x3 conv -> 3x3 conv to 2.
    """

    def __init__(self, in_channels: int, channels: int, fusion_channels: int, max_displacement: int, stride: int):
        super().__init__()
        self.max_displacement, self.stride = max_displacement, stride
        num_displacements = (2 * max_displacement // stride + 1) ** 2
        self.eb1 = EmbeddedBlock(in_channels, channels)
        self.eb2 = EmbeddedBlock(channels, fusion_channels)
        self.corr_conv = _conv(num_displacements, fusion_channels, 3)
        self.fuse = _conv(fusion_channels, fusion_channels, 3)
        self.flow = _zero_last(_conv(fusion_channels, 2, 3))
        self.act = nn.LeakyReLU(0.1)

    def encode(self, x: Tensor) -> Tensor:
        """x (Tensor[B, C_in, h, w]) -> EB-1 output Tensor[B, channels, h, w]."""
        return self.eb1(x)

    def forward(self, current: Tensor, neighbours: Tensor) -> Tensor:
        """current (Tensor[1, c, h, w]) and neighbours (Tensor[N, c, h, w]), both EB-1
        outputs -> flow ``M_{j->i}`` (Tensor[N, 2, h, w], (dx, dy) in cells)."""
        corr = correlation(current, neighbours, self.max_displacement, self.stride)
        fused = self.act(self.corr_conv(corr)) + self.eb2(current)
        return self.flow(self.act(self.fuse(fused)))


class Temperature(nn.Module):
    """One learned scale ``exp(log_scale)`` (starts at 1) applied to the cosine similarities before the softmax."""

    def __init__(self):
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(()))

    def forward(self, sims: Tensor) -> Tensor:
        return sims * self.log_scale.exp()


class EmbeddingNet(nn.Module):
    """FGFA's embedding network: 1x1 -> 3x3 -> 1x1 (ReLU between)."""

    def __init__(self, in_channels: int, channels: tuple[int, int, int]):
        super().__init__()
        a, b, c = channels
        self.layers = nn.Sequential(_conv(in_channels, a, 1), nn.ReLU(), _conv(a, b, 3), nn.ReLU(), _conv(b, c, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


@dataclass(frozen=True)
class FrameFeatures:
    """What one run of ``N_m`` and the per-frame modules gives for B frames.

    Attributes:
        levels (list[Tensor[B, C + E, h, w]]): per pyramid level (strides 8, 16,
            32) the neck output (channels ``:C``) and the unit-length embedding
            (channels ``C:``) in one map, so that one warp moves both.
        encoded (Tensor[B, c, h, w]): the IFF module's per-frame half at ``flow_level``.
        channels (int): C, the neck's channels.
    """

    levels: list[Tensor]
    encoded: Tensor
    channels: int

    def __len__(self) -> int:
        return self.encoded.shape[0]

    @property
    def features(self) -> list[Tensor]:
        """Neck output per level, Tensor[B, C, h, w] (views)."""
        return [x[:, : self.channels] for x in self.levels]

    @property
    def embeds(self) -> list[Tensor]:
        """Unit-length embeddings per level, Tensor[B, E, h, w] (views)."""
        return [x[:, self.channels :] for x in self.levels]

    def select(self, rows) -> "FrameFeatures":
        """The frames ``rows`` (a list or LongTensor of batch rows, repeats allowed)."""
        rows = torch.as_tensor(rows, dtype=torch.long, device=self.encoded.device)
        return FrameFeatures([x[rows] for x in self.levels], self.encoded[rows], self.channels)


@dataclass(frozen=True)
class Aggregated:
    """:meth:`IFFDetector.aggregate` for one current frame and N neighbours.

    Attributes:
        features (list[Tensor[1, 128, h, w]]): the aggregated feature per level.
        flow (Tensor[N, 2, h, w]): ``M_{j->i}`` at ``flow_level``, in its cells.
        flows (list[Tensor[N, 2, h, w]]): the flow at each level, in that level's cells.
        weights (list[Tensor[N + 1, 1, h, w]]): aggregation weights per level
            (row 0: the current frame, then the neighbours), summing to 1.
    """

    features: list[Tensor]
    flow: Tensor
    flows: list[Tensor]
    weights: list[Tensor]


def flow_to_level(flow: Tensor, shape: tuple[int, int], scale: float) -> Tensor:
    """flow (Tensor[N, 2, h, w], cells of its level) -> Tensor[N, 2, *shape] in cells of a
    level ``scale`` times finer (bilinear resize, values times ``scale``)."""
    if tuple(flow.shape[-2:]) == tuple(shape):
        return flow * scale if scale != 1 else flow
    return F.interpolate(flow, size=shape, mode="bilinear", align_corners=False) * scale


class IFFDetector(nn.Module):
    """NanoDet-g with an IFF module and FGFA aggregation; stateless.

    The NanoDet is frozen (``requires_grad_(False)``); the IFF module and the
    embedding networks train.  Inputs are normalised frames from
    ``preprocess.letterbox``.
    """

    def __init__(self, detector: NanoDet, iff: nn.Module, embeddings: nn.ModuleList, config: IFFConfig):
        super().__init__()
        self.detector = detector.requires_grad_(False)
        self.iff = iff
        self.embeddings = embeddings
        self.temperature = Temperature() if config.learn_temperature else None
        self.config = config
        self.engine = None  # inference only: a vidtag.models.runtime.OnnxNanoDet that runs N_m and the head instead of torch

    INFERENCE_FIELDS = ("window", "window_step", "cut_threshold", "self_prior", "lookalike_threshold", "clean_gate", "fusion", "carry")
    """Config fields that may change after training (the modules do not depend on them)."""

    def configure(self, **changes) -> None:
        """Change :attr:`INFERENCE_FIELDS` of the config (validated as a new config).

        Raises:
            ValueError: a field that is not an inference field, or an invalid value.
        """
        unknown = sorted(set(changes) - set(self.INFERENCE_FIELDS))
        if unknown:
            raise ValueError(f"IFF settings {unknown} are fixed by training (changeable: {', '.join(self.INFERENCE_FIELDS)})")
        self.config = IFFConfig.from_saved(asdict(self.config), **changes)

    def neck_features(self, x: Tensor) -> list[Tensor]:
        """``N_m``: x (Tensor[B, 3, H, W]) -> neck output per level, Tensor[B, 128, H/s, W/s]."""
        if x.shape[-1] % 32 or x.shape[-2] % 32:
            raise ValueError(f"input H and W must be multiples of 32, got {tuple(x.shape[-2:])}")
        if self.engine is not None:
            return self.engine.neck(x)
        if self.detector.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.detector.neck(self.detector.backbone(x))

    def frame_features(self, x: Tensor, features: list[Tensor] | None = None) -> FrameFeatures:
        """Everything a frame contributes to any window: x (Tensor[B, 3, H, W]) ->
        :class:`FrameFeatures`; ``features``: its neck output if already computed."""
        return self.per_frame_modules(self.neck_features(x) if features is None else features)

    def per_frame_modules(self, features: list[Tensor]) -> FrameFeatures:
        """The per-frame modules (embeddings, the IFF module's per-frame half) on the neck
        output ``features`` (Tensor[B, 128, h, w] per level) -> :class:`FrameFeatures`."""
        levels = [torch.cat((f, F.normalize(net(f), dim=1)), dim=1) for net, f in zip(self.embeddings, features)]
        return FrameFeatures(levels, self.iff.encode(features[self.config.flow_level]), features[0].shape[1])

    def aggregate(self, current: FrameFeatures, neighbours: FrameFeatures, counts: Tensor | None = None) -> Aggregated:
        """Warp N neighbours onto the current frame and take the FGFA weighted sum.

        Args:
            current: one frame (batch 1).
            neighbours: N frames (repeats allowed: each counts in the softmax);
                N = 0 returns the current frame's features.
            counts: Tensor[N] > 0, how many frames of the window each neighbour
                stands for: a neighbour with count k weighs exactly as k copies
                of it would (``log k`` is added to its logits).  Training draws
                2 neighbours of a 20-frame window and gives each a count of 10,
                so the current frame's share is the one it gets at test time.
                None: 1 each.
        """
        if len(current) != 1:
            raise ValueError(f"aggregate takes one current frame, got {len(current)}")
        n, c = len(neighbours), current.channels
        if n == 0:
            ones = [torch.ones_like(f[:, :1]) for f in current.levels]
            empty = current.encoded.new_zeros((0, 2, *current.encoded.shape[-2:]))
            return Aggregated(current.features, empty, [], ones)
        flow = self.iff(current.encoded, neighbours.encoded)
        fine = self.config.flow_level
        out, flows, weights = [], [], []
        for level, (mine, theirs) in enumerate(zip(current.levels, neighbours.levels)):
            level_flow = flow_to_level(flow, theirs.shape[-2:], 2.0 ** (fine - level))
            warped = warp(theirs, level_flow)  # [N, C + E, h, w]: features and embeddings moved together
            emb_i = mine[:, c:]
            # cosine: the embeddings are unit vectors, a warped one is a blend of unit vectors
            dots = torch.linalg.vecdot(warped[:, c:], emb_i, dim=1)
            sims = dots / torch.linalg.vector_norm(warped[:, c:], dim=1).clamp(min=1e-8)
            self_sim = torch.linalg.vector_norm(emb_i, dim=1).square()  # 1 (0 where the embedding is 0)
            logits = torch.cat((self_sim, sims))
            if self.temperature is not None:
                logits = self.temperature(logits)
            if self.config.self_prior:
                logits = torch.cat((logits[:1] + self.config.self_prior, logits[1:]))
            if counts is not None:
                logits = torch.cat((logits[:1], logits[1:] + counts.log().view(-1, 1, 1)))
            w = logits.softmax(dim=0).unsqueeze(1)  # [N + 1, 1, h, w]
            out.append(w[:1] * mine[:, :c] + (w[1:] * warped[:, :c]).sum(dim=0, keepdim=True))
            flows.append(level_flow)
            weights.append(w)
        return Aggregated(out, flow, flows, weights)

    def predict(self, features: list[Tensor]) -> NanoDetOutput:
        """NanoDet's head on (aggregated) neck features."""
        return self.detector.head(features) if self.engine is None else self.engine.head(features)

    def head_features(self, features: list[Tensor]) -> list[Tensor]:
        """Each head level's 3x3-conv output on ``features`` (the distillation feature)."""
        return [level.conv(f) for level, f in zip(self.detector.head.levels, features)]

    # --- the trainable part -------------------------------------------------

    def trainable_modules(self) -> nn.ModuleDict:
        parts = {"iff": self.iff, "embeddings": self.embeddings}
        if self.temperature is not None:
            parts["temperature"] = self.temperature
        return nn.ModuleDict(parts)

    SHAPE_FIELDS = ("module", "flow_level", "flow_channels", "fusion_channels", "max_displacement",
                    "correlation_stride", "embed_channels", "learn_temperature")  # fmt: skip
    """The config fields a modules file must share with the model it is loaded into."""

    def save_modules(self, path: str | Path) -> None:
        """Save the IFF module and embeddings with the config (not the NanoDet)."""
        modules_file.save_modules(self, path)

    def load_modules(self, path: str | Path) -> None:
        """Load what :meth:`save_modules` wrote; the configs must agree on :attr:`SHAPE_FIELDS`.

        Raises:
            ValueError: the file was saved for another module shape.
        """
        modules_file.load_modules(self, path, self.SHAPE_FIELDS)


def build_iff(detector: NanoDet, config: IFFConfig | None = None) -> IFFDetector:
    """Assemble an IFFDetector with fresh modules around ``detector`` (its device and memory format)."""
    config = config or IFFConfig()
    channels = detector.config.neck_channels
    if config.module == "basic":
        iff: nn.Module = BasicIFF(channels, config.flow_channels)
    else:
        iff = AdvancedIFF(channels, config.flow_channels, config.fusion_channels, config.max_displacement, config.correlation_stride)
    embeddings = nn.ModuleList(EmbeddingNet(channels, config.embed_channels) for _ in detector.config.strides)
    model = IFFDetector(detector, iff, embeddings, config)
    param = next(detector.parameters())
    fmt = torch.channels_last if detector.channels_last else torch.contiguous_format
    model.trainable_modules().to(device=param.device, memory_format=fmt)
    return model.eval()


# ---------------------------------------------------------------------------
# Video detector: a ring buffer of per-frame features
# ---------------------------------------------------------------------------


def fuse_by_cell(own: NanoDetOutput, aggregated: NanoDetOutput) -> NanoDetOutput:
    """Per head cell, the more confident of two outputs of the same frames.

    own, aggregated: NanoDetOutput with cls_scores [B, N, K] and box_dists
    [B, N, 4 * (reg_max + 1)] over the same cells.  Returns a NanoDetOutput
    whose cell n takes both its class scores and its box logits from ``own``
    where own's best class score is >= aggregated's, else from ``aggregated``.
    """
    take_own = (own.cls_scores.amax(dim=-1) >= aggregated.cls_scores.amax(dim=-1)).unsqueeze(-1)
    return NanoDetOutput(torch.where(take_own, own.cls_scores, aggregated.cls_scores),
                         torch.where(take_own, own.box_dists, aggregated.box_dists),
                         aggregated.level_shapes, aggregated.strides)


def lookalike_window(t: int, neighbours: list[int], thumbs: dict[int, Tensor], threshold: float) -> list[int]:
    """``neighbours`` of frame t with each one whose thumbnail NCC with t's is below
    ``threshold`` replaced by t itself (``thumbs``: index -> :func:`vidtag.shots.thumbnails`
    row).  A window then never mixes frames that do not look alike: the two
    sides of a dissolve, a flash (a fade through black is a cut already)."""
    if threshold <= 0:
        return neighbours
    mine = thumbs[t]
    return [j if j == t or float(thumbs[j] @ mine) >= threshold else t for j in neighbours]


def window_indices(t: int, num_frames: int, radius: int, first: int = 0, step: int = 1) -> list[int]:
    """The neighbours of frame t: ``t-radius .. t+radius`` without t, every ``step``-th
    (offsets that are multiples of ``step``), clamped to ``[first, num_frames - 1]``
    (the first / last frame repeated at the ends; ``first`` and ``num_frames`` bound
    t's shot when the video has cuts)."""
    return [min(max(t + d, first), num_frames - 1) for d in range(-radius, radius + 1) if d and d % step == 0]


class FeatureRing:
    """Per-frame features of the last ``capacity`` frames of a video, by frame index.

    Storage is allocated once (``capacity`` slots, frame n in slot ``n %
    capacity``): pushing frame n overwrites frame ``n - capacity``; asking for
    an overwritten or future frame raises.

    A frame may also be pushed as its neck output alone (:meth:`push_neck`);
    ``per_frame`` (the model's :meth:`IFFDetector.per_frame_modules`) then
    completes it the first time :meth:`gather` asks for it, together with the
    other incomplete frames asked for, in one batch.  A frame no window
    gathers (e.g. every frame around it kept its own detections) never pays
    for the per-frame modules.  ``completed`` counts the frames completed that
    way.
    """

    def __init__(self, capacity: int, per_frame: Callable[[list[Tensor]], FrameFeatures] | None = None):
        if capacity < 1:
            raise ValueError(f"ring capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.per_frame = per_frame
        self.storage: FrameFeatures | None = None
        self.complete = [False] * capacity  # by slot: the per-frame modules' channels hold this frame's
        self.completed = 0
        self.next_index = 0

    @property
    def oldest(self) -> int:
        return max(0, self.next_index - self.capacity)

    def push(self, item: FrameFeatures, row: int = 0) -> int:
        """Store frame ``row`` of ``item`` as the next frame; returns its index."""
        if self.storage is None:
            self.storage = FrameFeatures(
                [x.new_empty((self.capacity, *x.shape[1:])) for x in item.levels],
                item.encoded.new_empty((self.capacity, *item.encoded.shape[1:])),
                item.channels,
            )
        index, slot = self.next_index, self.next_index % self.capacity
        for store, x in zip(self.storage.levels, item.levels):
            store[slot] = x[row]
        self.storage.encoded[slot] = item.encoded[row]
        self.complete[slot] = True
        self.next_index += 1
        return index

    def push_neck(self, features: list[Tensor], row: int = 0) -> int:
        """Store frame ``row`` of the neck output ``features`` (Tensor[B, C, h, w] per level)
        as the next frame, its per-frame modules left for :meth:`gather`; returns its index."""
        if self.per_frame is None:
            raise ValueError("push_neck needs a ring made with per_frame")
        if self.storage is None:  # the first frame is completed now: its output gives the storage's shapes
            return self.push(self.per_frame([f[row : row + 1] for f in features]))
        index, slot = self.next_index, self.next_index % self.capacity
        for store, f in zip(self.storage.features, features):
            store[slot] = f[row]
        self.complete[slot] = False
        self.next_index += 1
        return index

    def gather(self, indices: list[int]) -> FrameFeatures:
        """The frames ``indices`` (repeats allowed) as one batch."""
        bad = sorted({i for i in indices if not self.oldest <= i < self.next_index})
        if bad:
            raise KeyError(f"frames {bad} not in the ring (holds {self.oldest}..{self.next_index - 1})")
        slots = [i % self.capacity for i in indices]
        missing = sorted({s for s in slots if not self.complete[s]})
        if missing:
            done = self.per_frame([f[missing] for f in self.storage.features])
            for store, x in zip(self.storage.levels, done.levels):
                store[missing] = x
            self.storage.encoded[missing] = done.encoded
            for s in missing:
                self.complete[s] = True
            self.completed += len(missing)
        return self.storage.select(slots)


@dataclass
class OwnOutput:
    """A frame's detection on its own features (clean gate and cell fusion)."""

    mass: float  # confidence_mass of its head output
    detections: Detections  # post-processed, source pixels
    raw: NanoDetOutput | None  # the head output (one frame), kept for fusion="cells"


class IFFVideoDetector(VideoDetectorBase):
    """Video detector with the interface of ``build.FrameDetector``.

    Each chunk runs ``N_m`` and the per-frame modules as one batch; each frame's
    features then enter a :class:`FeatureRing` of ``window + 1`` frames.  Frame t
    is detected once frame ``t + window/2`` has arrived (or the video ended),
    from the ring alone: memory is bounded by the window and the chunk, not the
    video's length.  The window stays within t's shot: at a hard cut
    (``vidtag.shots``, ``config.cut_threshold``) the shot's first / last frame
    is repeated, as at the ends of the video.  Within the shot, a neighbour
    that does not look like frame t (``config.lookalike_threshold``:
    :func:`lookalike_window`) is replaced by t itself, so gradual transitions
    and flashes, which no cut test sees, do not mix either; ``replaced`` counts
    the neighbours replaced in the last video.  With ``config.clean_gate``,
    each frame is also detected on its own features, and a frame whose
    :func:`confidence_mass` is at least ``clean_gate`` times its window's
    median keeps those detections; the others are aggregated and, with
    ``config.fusion == "frame"``, keep the aggregated detections where those
    carry more mass than their own, or with ``"cells"`` take, cell by cell,
    the more confident of their own and the aggregated head output.
    With ``config.carry``, a frame the gate found degraded also takes the boxes
    its nearest clean frames on both sides see (``carried_from`` maps each such
    frame to the two frames it took them from).
    ``own_frames`` lists the frames that kept their own detections in the
    last video, ``own_weight`` the current frame's mean aggregation weight
    per frame (1 where it kept its own).

    Args:
        model (IFFDetector): in eval mode on ``device``.
        classes: class names (index = label).
        options (build.DetectOptions): thresholds and input size.
        device: where the network runs.
    """

    method = "iff"

    def __init__(self, model: IFFDetector, classes: tuple[str, ...], options, device: torch.device | str = "cpu"):
        super().__init__(model, classes, options, device)
        self.ring: FeatureRing | None = None  # the current video's features; set by run()
        self.thumbs: dict[int, Tensor] = {}  # thumbnails of the frames windows can still reach, by index
        self.replaced = 0  # window neighbours replaced by the frame itself in the last video (lookalike_window)
        self.own: dict[int, OwnOutput] = {}  # clean gate / cell fusion: each frame's output on its own features, by index
        self.own_frames: list[int] = []  # frames of the last video that kept their own detections (clean gate)
        self.carried_from: dict[int, tuple[int, int]] = {}  # last video, config.carry: frame -> the clean frames it took boxes from
        self.own_weight: dict[int, float] = {}  # last video: the current frame's mean aggregation weight (1: kept its own)
        self.gate_score = MASS_MIN_SCORE  # class scores below this do not count towards the confidence mass

    def run(self, chunks: Iterable[FrameChunk]) -> Iterator[Detections]:
        """Yield one Detections per frame of ``chunks`` (one video), in order."""
        from vidtag.models.runtime import release_memory

        try:
            yield from self._run(chunks)
        finally:
            release_memory(self.model.engine)  # the video is done (or failed): an exported network's buffers can go

    @torch.inference_mode()
    def _run(self, chunks: Iterable[FrameChunk]) -> Iterator[Detections]:
        from vidtag.models.preprocess import letterbox

        radius = self.model.config.radius
        # with the gate, a frame's per-frame modules run only once a window gathers it (FeatureRing.push_neck)
        lazy = self.model.config.clean_gate > 0
        self.ring = ring = FeatureRing(2 * radius + 1, self.model.per_frame_modules if lazy else None)
        self.shots = ShotBoundaries(self.model.config.cut_threshold, self.options.imgsz)
        self.thumbs, self.own = {}, {}
        self.replaced, self.own_frames, self.own_weight, self.carried_from = 0, [], {}, {}
        cells = self.model.config.fusion == "cells"
        own_pass = self.model.config.clean_gate > 0 or cells  # the head also runs on each frame's own features
        box, shape, emitted = None, None, 0
        for chunk in chunks:
            frames = torch.as_tensor(chunk.frames).to(self.device, non_blocking=True)
            shape = check_frame_shape(frames, shape)
            x, box = letterbox(frames, self.options.imgsz, chunk.source_size)
            self.shots.push(x, box)
            if self.model.config.lookalike_threshold > 0:
                start = ring.next_index
                # the cut test already made this chunk's thumbnails when it is on
                thumbs = self.shots.last_thumbs if self.model.config.cut_threshold > 0 else frame_thumbnails(x, box, self.options.imgsz)
                for k, thumb in enumerate(thumbs):
                    self.thumbs[start + k] = thumb
                for old in [i for i in self.thumbs if i < start - 2 * radius]:
                    del self.thumbs[old]  # frames this chunk's windows can no longer reach
            batch = None if lazy else self.model.frame_features(x)
            features = self.model.neck_features(x) if lazy else batch.features
            if own_pass:
                start = ring.next_index
                own = self.model.predict(features)
                masses = confidence_mass(own.cls_scores, self.gate_score).tolist()
                for k, dets in enumerate(self.options.postprocess(own, box)):
                    raw = NanoDetOutput(own.cls_scores[k : k + 1], own.box_dists[k : k + 1], own.level_shapes, own.strides) if cells else None
                    self.own[start + k] = OwnOutput(masses[k], dets, raw)
                for old in [i for i in self.own if i < start - 2 * radius]:
                    del self.own[old]
            for row in range(len(x)):
                newest = ring.push_neck(features, row) if lazy else ring.push(batch, row)  # copied into the ring's storage
                if newest - radius >= 0:  # frame newest - radius has all its neighbours now
                    yield self._detect(emitted, None, box)
                    emitted += 1
            del batch, features
        total = ring.next_index
        while emitted < total:  # the last frames: the window runs past the end
            yield self._detect(emitted, total, box)
            emitted += 1

    def _detect(self, t: int, num_frames: int | None, box) -> Detections:
        radius = self.model.config.radius
        first, end = self.shots.shot_of(t, self.ring.next_index if num_frames is None else num_frames)
        step = max(1, min(self.model.config.window_step, radius))
        neighbours = window_indices(t, end, radius, first, step)
        if self.model.config.lookalike_threshold > 0:
            kept = lookalike_window(t, neighbours, self.thumbs, self.model.config.lookalike_threshold)
            self.replaced += sum(a != b for a, b in zip(neighbours, kept))
            neighbours = kept
        gate, own = self.model.config.clean_gate, self.own.get(t)
        if gate > 0:
            clean_mass = gate * float(np.median([self.own[j].mass for j in [t] + neighbours]))
            if own.mass >= clean_mass:
                return self._keep_own(t, own.detections)
        counts = None if step == 1 else torch.full((len(neighbours),), self.model.config.window / len(neighbours), device=self.device)
        agg = self.model.aggregate(self.ring.gather([t]), self.ring.gather(neighbours), counts)
        out = self.model.predict(agg.features)
        if self.model.config.fusion == "cells":
            out = fuse_by_cell(own.raw, out)
        if self.model.config.fusion == "frame" and gate > 0 and float(confidence_mass(out.cls_scores, self.gate_score)[0]) < own.mass:
            dets = self._keep_own(t, own.detections)  # the window did not help this frame: it sees less than the frame alone
        else:
            self.own_weight[t] = float(torch.stack([w[0].mean() for w in agg.weights]).mean())
            dets = self.options.postprocess(out, box)[0]
        return self._carry(t, dets, clean_mass, first, end) if gate > 0 else dets

    def _carry(self, t: int, dets: Detections, clean_mass: float, first: int, end: int) -> Detections:
        """With ``config.carry``: ``dets`` of degraded frame t plus the boxes that the nearest
        frames before and after t within its window and shot (``first`` .. ``end - 1``) whose
        own mass is at least ``clean_mass`` both see, interpolated to t (:mod:`vidtag.carry`)."""
        if not self.model.config.carry:
            return dets
        radius = self.model.config.radius
        before = next((j for j in range(t - 1, max(first, t - radius) - 1, -1) if self.own[j].mass >= clean_mass), None)
        after = next((j for j in range(t + 1, min(end - 1, t + radius) + 1) if self.own[j].mass >= clean_mass), None)
        if before is None or after is None:
            return dets
        self.carried_from[t] = (before, after)
        carried = carry_over(self.own[before].detections, self.own[after].detections, (t - before) / (after - before))
        return add_unseen(dets, carried)

    def _keep_own(self, t: int, dets: Detections) -> Detections:
        self.own_frames.append(t)
        self.own_weight[t] = 1.0
        return dets
