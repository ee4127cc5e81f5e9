"""NanoDet-g (COCO-80) in plain PyTorch: backbone, neck, GFL head, post-processing.

The architecture follows the TF.js graph of NanoDet-g (RangiLyu/nanodet,
Apache-2.0) that ``tools/convert_nanodet.py`` converts; batch norm is already
folded into the convolutions' biases there, so every conv here has a bias and
no norm layer.

Stages (channels, stride, cells for a 416x416 input):

=====  ==================================  ========  ======  =======
index  module                              channels  stride  size
=====  ==================================  ========  ======  =======
0      stem: conv 3x3 s2 + maxpool 3x3 s2        32       4  104x104
1      CSP stage, 1 res block                    64       4  104x104
2      CSP stage, 2 res blocks, s2              128       8    52x52
3      CSP stage, 2 res blocks, s2              256      16    26x26
4      CSP stage, 3 res blocks, s2              512      32    13x13
-      neck (3 lateral 1x1 convs, resizes)      128  8/16/32
-      head (3x3 conv + 1x1 pred per level)     124  8/16/32
=====  ==================================  ========  ======  =======

The neck takes stages 2-4 and returns three 128-channel maps (strides 8, 16,
32); the head has one 3x3 conv and one 1x1 predictor per level (not shared).

PSLA split: the "lower part" candidate is stages 0-2
(``model.backbone.forward_stages(x, 0, 3)`` -> [..., Tensor[B, 128, H/8, W/8]]);
stages 3-4 (``forward_stages(feat, 3)``) are the "upper part".  Stage 2's
output is the stride-8 map the neck uses directly.  Cheaper but with
coarser semantics are stages 0-1 (64 channels at stride 4) and the stem
alone; ``benchmarks/bench_psla_cost.py`` prints what each split costs per
frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidtag.ops.boxes import batched_nms
from vidtag.ops.pointwise import pointwise, pointwise_cells
from vidtag.coco_classes import COCO_CLASSES  # noqa: F401  (re-exported: the model's class list)
from vidtag.types import Detections



@dataclass(frozen=True)
class NanoDetConfig:
    """Shape of a NanoDet-g network (defaults: the COCO model that is converted)."""

    num_classes: int = 80  # COCO-80; graph output [1, N, 80]
    reg_max: int = 10  # GFL bins per side = reg_max + 1 = 11; graph output [1, N, 44]
    strides: tuple[int, ...] = (8, 16, 32)  # nanodet-g.yml head.strides; graph output sizes 52/26/13 at 416
    stem_channels: int = 32  # first conv 3x3 s2, 3 -> 32 (graph "convolution")
    stage_channels: tuple[int, ...] = (32, 64, 128, 256)  # CSP stage widths (nanodet-g.yml CspBlock rows)
    stage_res_blocks: tuple[int, ...] = (1, 2, 2, 3)  # res blocks per CSP stage (same rows)
    stage_strides: tuple[int, ...] = (1, 2, 2, 2)  # first conv stride per CSP stage (same rows)
    neck_channels: int = 128  # nanodet-g.yml fpn.out_channels; lateral 1x1 convs -> 128
    head_channels: int = 128  # nanodet-g.yml head.feat_channels, one 3x3 conv per level (stacked_convs 1)
    negative_slope: float = 0.1  # LeakyReLU alpha in the graph
    input_size: int = 416  # graph signature input [1, 3, 416, 416]

    @property
    def backbone_out_channels(self) -> tuple[int, ...]:
        """Channels of the last three backbone stages (each CSP stage doubles its width)."""
        return tuple(2 * c for c in self.stage_channels[-len(self.strides) :])


class ConvAct(nn.Module):
    """Conv2d (with bias, BN folded in) followed by LeakyReLU; 'same' padding."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, slope: float = 0.1):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2)
        self.act = nn.LeakyReLU(slope)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.conv(x))


class CspResBlock(nn.Module):
    """x [B, C, H, W] -> [B, C, H, W]: cat(conv2(conv1(x)), conv1(x)), each conv to C/2."""

    def __init__(self, channels: int, slope: float):
        super().__init__()
        self.conv1 = ConvAct(channels, channels // 2, 3, 1, slope)
        self.conv2 = ConvAct(channels // 2, channels // 2, 3, 1, slope)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv1(x)
        return torch.cat((self.conv2(y), y), dim=1)


class CspStage(nn.Module):
    """x [B, C, H, W] -> [B, 2C, H/s, W/s]: cat(out_conv(res_blocks(in_conv(x))), in_conv(x))."""

    def __init__(self, channels: int, num_res_blocks: int, stride: int, slope: float):
        super().__init__()
        self.in_conv = ConvAct(channels, channels, 3, stride, slope)
        self.res_blocks = nn.Sequential(*(CspResBlock(channels, slope) for _ in range(num_res_blocks)))
        self.out_conv = ConvAct(channels, channels, 3, 1, slope)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = self.in_conv(x)
        return torch.cat((self.out_conv(self.res_blocks(shortcut)), shortcut), dim=1)


class Stem(nn.Module):
    """x [B, 3, H, W] -> [B, C, H/4, W/4]: conv 3x3 s2 + LeakyReLU, maxpool 3x3 s2 pad 1.

    LeakyReLU is increasing, so it commutes with the max: it runs after the
    pool, on a quarter of the cells (the same values, bit for bit).
    """

    def __init__(self, channels: int, slope: float):
        super().__init__()
        self.conv = ConvAct(3, channels, 3, 2, slope)
        self.pool = nn.MaxPool2d(3, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv.act(self.pool(self.conv.conv(x)))


class Backbone(nn.Module):
    """NanoDet-g's CustomCspNet: a stem and four CSP stages.

    ``stages[i]`` maps the output of ``stages[i - 1]`` (or the image for i = 0)
    to its own output; see the module docstring for channels and strides.
    """

    def __init__(self, config: NanoDetConfig):
        super().__init__()
        slope = config.negative_slope
        stages: list[nn.Module] = [Stem(config.stem_channels, slope)]
        for channels, blocks, stride in zip(config.stage_channels, config.stage_res_blocks, config.stage_strides):
            stages.append(CspStage(channels, blocks, stride, slope))
        self.stages = nn.ModuleList(stages)
        self.channels = (config.stem_channels,) + tuple(2 * c for c in config.stage_channels)
        strides = [4]
        for s in config.stage_strides:
            strides.append(strides[-1] * s)
        self.strides = tuple(strides)

    def forward_stages(self, x: Tensor, start: int = 0, stop: int | None = None) -> list[Tensor]:
        """Run ``stages[start:stop]`` on x (the input of stage ``start``).

        Returns:
            list[Tensor]: each run stage's output, [B, channels[i], H_i, W_i].
        """
        outputs = []
        for stage in self.stages[start:stop]:
            x = stage(x)
            outputs.append(x)
        return outputs

    def forward(self, x: Tensor) -> list[Tensor]:
        """x (Tensor[B, 3, H, W] float32, normalised BGR, H and W multiples of 32).

        Returns:
            list[Tensor]: the outputs of all 5 stages, strides 4, 4, 8, 16, 32.
        """
        return self.forward_stages(x)


class Neck(nn.Module):
    """NanoDet's PAN without extra convs: 1x1 laterals, bilinear top-down then bottom-up sums."""

    def __init__(self, in_channels: tuple[int, ...], out_channels: int):
        super().__init__()
        self.laterals = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in in_channels)

    def forward(self, feats: list[Tensor]) -> list[Tensor]:
        """feats: backbone stage outputs; the last ``len(laterals)`` are used (finest first).

        Returns:
            list[Tensor]: [B, out_channels, H/s, W/s] for strides 8, 16, 32.
        """
        feats = feats[-len(self.laterals) :]
        maps = [pointwise(f, lateral) for lateral, f in zip(self.laterals, feats)]
        for i in range(len(maps) - 1, 0, -1):  # top-down: upsample coarse, add to finer
            maps[i - 1] = maps[i - 1] + _resize(maps[i], maps[i - 1])
        for i in range(len(maps) - 1):  # bottom-up: downsample fine, add to coarser
            maps[i + 1] = maps[i + 1] + _resize(maps[i], maps[i + 1])
        return maps


def _resize(x: Tensor, like: Tensor) -> Tensor:
    # TF ResizeBilinear(half_pixel_centers=True) == align_corners=False, no antialias.
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


@dataclass(frozen=True)
class NanoDetOutput:
    """Raw network output; cells of all levels concatenated (strides ascending), row-major.

    Attributes:
        cls_scores (Tensor[B, N, num_classes] float32): sigmoid class scores.
        box_dists (Tensor[B, N, 4 * (reg_max + 1)]): GFL logits, sides
            left, top, right, bottom, each ``reg_max + 1`` bins.
        level_shapes (tuple[tuple[int, int], ...]): (h, w) cells per level.
        strides (tuple[int, ...]): stride per level in input pixels.
    """

    cls_scores: Tensor
    box_dists: Tensor
    level_shapes: tuple[tuple[int, int], ...]
    strides: tuple[int, ...]


MASS_MIN_SCORE = 0.3
"""Class scores below this do not count towards a frame's :func:`confidence_mass`."""


def confidence_mass(cls_scores: Tensor, min_score: float = MASS_MIN_SCORE) -> Tensor:
    """How much the detector sees in each frame: cls_scores (Tensor[B, N, K], sigmoid
    scores per head cell) -> Tensor[B], the sum over cells of the best class score
    where it is at least ``min_score``."""
    best = cls_scores.amax(dim=-1)
    return torch.where(best >= min_score, best, torch.zeros_like(best)).sum(dim=-1)


class HeadLevel(nn.Module):
    """One level of the GFL head: conv 3x3 + LeakyReLU, then a 1x1 predictor of cls + reg."""

    def __init__(self, in_channels: int, feat_channels: int, num_outputs: int, slope: float):
        super().__init__()
        self.conv = ConvAct(in_channels, feat_channels, 3, 1, slope)
        self.pred = nn.Conv2d(feat_channels, num_outputs, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.pred(self.conv(x))


class GFLHead(nn.Module):
    """Generalised-focal-loss head (NanoDetHead, share_cls_reg) with per-level weights."""

    def __init__(self, config: NanoDetConfig):
        super().__init__()
        self.num_classes = config.num_classes
        self.reg_max = config.reg_max
        self.strides = tuple(config.strides)
        outputs = config.num_classes + 4 * (config.reg_max + 1)
        self.levels = nn.ModuleList(
            HeadLevel(config.neck_channels, config.head_channels, outputs, config.negative_slope)
            for _ in config.strides
        )

    def forward(self, pyramid: list[Tensor]) -> NanoDetOutput:
        """pyramid: [B, C, H/s, W/s] per stride (ascending) -> NanoDetOutput."""
        return self.predict([level.conv(x) for level, x in zip(self.levels, pyramid)])

    def predict(self, features: list[Tensor]) -> NanoDetOutput:
        """The 1x1 predictors alone: each level's 3x3-conv output [B, feat_channels, H/s, W/s] -> NanoDetOutput."""
        preds = [pointwise_cells(x, level.pred) for level, x in zip(self.levels, features)]  # [B, h*w, outputs]
        shapes = tuple((x.shape[2], x.shape[3]) for x in features)
        pred = torch.cat(preds, dim=1) if len(preds) > 1 else preds[0]
        cls_scores = pred[..., : self.num_classes].sigmoid()
        box_dists = pred[..., self.num_classes :]
        return NanoDetOutput(cls_scores, box_dists, shapes, self.strides)


class NanoDet(nn.Module):
    """backbone -> neck -> head; each part can also be called on its own."""

    def __init__(self, backbone: Backbone, neck: Neck, head: GFLHead, config: NanoDetConfig | None = None):
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.head = head
        self.config = config or NanoDetConfig()
        self.channels_last = False

    def use_channels_last(self, enabled: bool = True) -> "NanoDet":
        """Store weights (and feed inputs) channels-last, the layout oneDNN's CPU
        kernels are fastest in (its NCHW max-pool above all); same results."""
        self.channels_last = enabled
        return self.to(memory_format=torch.channels_last if enabled else torch.contiguous_format)

    def forward(self, x: Tensor) -> NanoDetOutput:
        """x (Tensor[B, 3, H, W] float32): normalised BGR (see ``preprocess.letterbox``),
        H and W multiples of 32, not necessarily equal.
        """
        if x.shape[-1] % 32 or x.shape[-2] % 32:
            raise ValueError(f"NanoDet input H and W must be multiples of 32, got {tuple(x.shape[-2:])}")
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.head(self.neck(self.backbone(x)))


def build_nanodet(config: NanoDetConfig | None = None) -> NanoDet:
    """A randomly initialised NanoDet for ``config`` (default: NanoDet-g COCO)."""
    config = config or NanoDetConfig()
    backbone = Backbone(config)
    neck = Neck(config.backbone_out_channels, config.neck_channels)
    head = GFLHead(config)
    return NanoDet(backbone, neck, head, config)


def load_nanodet(
    weights="nanodet-g-coco", device: str | torch.device = "cpu", channels_last: bool = True
) -> NanoDet:
    """NanoDet-g with converted weights, float32, in eval mode.

    Args:
        weights: a manifest name (``"nanodet-g-coco"``), a manifest .json path,
            a .pt path with its manifest beside it, or a ``WeightsManifest``.
        device: where to put the model.
        channels_last: see ``NanoDet.use_channels_last``.

    Raises:
        vidtag.errors.WeightsError: weights missing, corrupt or not fitting.
    """
    from vidtag.errors import WeightsError
    from vidtag.weights import WeightsManifest, load_state_dict, resolve_weights

    manifest = weights if isinstance(weights, WeightsManifest) else resolve_weights(weights)
    config = NanoDetConfig(num_classes=len(manifest.classes), input_size=manifest.input_size)
    model = build_nanodet(config)
    state = load_state_dict(manifest)
    try:
        model.load_state_dict({k: v.float() for k, v in state.items()})
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        raise WeightsError(f"{manifest.weights_path}: does not fit NanoDet ({first[1].strip() if len(first) > 1 else first[0]})") from err
    return model.use_channels_last(channels_last).to(device).eval()


# ---------------------------------------------------------------------------
# Post-processing
# ---------------------------------------------------------------------------


def cell_centers(level_shapes, strides, device=None) -> tuple[Tensor, Tensor]:
    """Centres of all cells, in the order of ``NanoDetOutput`` rows.

    Args:
        level_shapes: (h, w) per level.
        strides: stride per level.

    Returns:
        (centers Tensor[N, 2] float32 x, y in input pixels, ``(col + 0.5) * stride``;
        cell_strides Tensor[N] float32).
    """
    centers, cell_strides = [], []
    for (h, w), stride in zip(level_shapes, strides):
        ys, xs = torch.meshgrid(
            torch.arange(h, device=device, dtype=torch.float32),
            torch.arange(w, device=device, dtype=torch.float32),
            indexing="ij",
        )
        centers.append((torch.stack((xs, ys), dim=-1).reshape(-1, 2) + 0.5) * stride)
        cell_strides.append(torch.full((h * w,), float(stride), device=device))
    return torch.cat(centers), torch.cat(cell_strides)


def distances_to_boxes(box_dists: Tensor, centers: Tensor, cell_strides: Tensor) -> Tensor:
    """Decode GFL distributions to boxes.

    Args:
        box_dists (Tensor[B, N, 4 * bins]): logits; sides left, top, right,
            bottom, ``bins`` each.
        centers (Tensor[N, 2]): cell centres x, y in input pixels.
        cell_strides (Tensor[N]): stride of each cell.

    Returns:
        Tensor[B, N, 4]: xyxy in input pixels: ``x1 = cx - E[left] * stride``,
        ``y1 = cy - E[top] * stride``, ``x2 = cx + E[right] * stride``,
        ``y2 = cy + E[bottom] * stride`` where E is the expected bin index
        under the softmax over bins.
    """
    b, n, _ = box_dists.shape
    probs = box_dists.float().reshape(b, n, 4, box_dists.shape[-1] // 4).softmax(dim=-1)
    bins = torch.arange(probs.shape[-1], device=probs.device, dtype=probs.dtype)
    dist = (probs * bins).sum(-1) * cell_strides[None, :, None]  # [B, N, 4]
    sign = dist.new_tensor([-1.0, -1.0, 1.0, 1.0])
    return centers.repeat(1, 2)[None] + sign * dist


def postprocess(
    output: NanoDetOutput,
    letterbox,
    conf_threshold: float = 0.25,
    iou_threshold: float = 0.6,
    max_det: int = 100,
    classes=None,
    max_candidates: int = 1000,
) -> list[Detections]:
    """Raw output -> detections per batch item, in source-frame pixels.

    Every (cell, class) pair scoring above ``conf_threshold`` is a candidate
    (NanoDet's multi-label decoding); at most ``max_candidates`` best go to
    class-aware NMS, and the best ``max_det`` survivors are kept.

    Args:
        output: network output for a batch of B frames of one letterbox.
        letterbox (vidtag.ops.letterbox.Letterbox): how the frames were mapped to input.
        conf_threshold: minimum class score (strict >).
        iou_threshold: NMS IoU threshold.
        max_det: boxes kept per frame.
        classes: optional collection of class indices to keep.
        max_candidates: candidates per frame before NMS.

    Returns:
        list[Detections] of length B: boxes xyxy float32 in source pixels,
        clipped to the source frame, by decreasing score.
    """
    input_w, input_h = letterbox.input
    expected = tuple((-(-input_h // s), -(-input_w // s)) for s in output.strides)
    if tuple(output.level_shapes) != expected:
        raise ValueError(f"output grid {output.level_shapes} does not match the letterbox input {letterbox.input}")
    scores = output.cls_scores.float()
    if classes is not None:
        keep_classes = torch.zeros(scores.shape[-1], dtype=torch.bool, device=scores.device)
        keep_classes[torch.as_tensor(sorted(classes), dtype=torch.int64, device=scores.device)] = True
        scores = scores.masked_fill(~keep_classes, 0.0)
    centers, cell_strides = cell_centers(output.level_shapes, output.strides, scores.device)
    src_w, src_h = letterbox.source
    limits = centers.new_tensor([src_w, src_h, src_w, src_h])

    results = []
    num_classes = scores.shape[-1]
    for frame_scores, frame_dists in zip(scores, output.box_dists):
        flat = frame_scores.flatten()
        candidates = torch.nonzero(flat > conf_threshold).squeeze(1)
        if len(candidates) > max_candidates:
            candidates = candidates[flat[candidates].topk(max_candidates).indices]
        cand_scores = flat[candidates]
        cand_cells = candidates // num_classes
        cand_labels = candidates % num_classes
        # decode only the candidates' cells: the same boxes, a fraction of the work
        cand_boxes = distances_to_boxes(frame_dists[cand_cells][None], centers[cand_cells], cell_strides[cand_cells])[0]
        cand_boxes = torch.minimum(letterbox.to_source(cand_boxes).clamp(min=0), limits)
        kept = batched_nms(cand_boxes, cand_scores, cand_labels, iou_threshold)[:max_det]
        results.append(
            Detections(
                cand_boxes[kept].cpu().numpy(),
                cand_scores[kept].cpu().numpy(),
                cand_labels[kept].cpu().numpy(),
            )
        )
    return results
