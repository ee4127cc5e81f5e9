"""PSLA + RFU + DenseFT (Guo et al., ICCV 2019) on NanoDet-g.

The paper's parts, mapped onto NanoDet (equations in ``docs/equations.md``):

* ``N_f`` (key frames): the whole backbone, the neck and, with the default
  ``feature="head"``, each head level's 3x3 conv.  The *high-level feature*
  ``Fh`` of a level is that conv's output (128 channels); the task network
  ``N_t`` is the head's 1x1 predictor.  With ``feature="neck"`` ``Fh`` is the
  neck output and ``N_t`` the whole head.
* ``N_l`` (non-key frames): backbone stages ``0..split_stage``, giving ``Fl``.
* RFU (key frames): ``F^_t = PSLA(Fh_k, F_t)``; ``F_t = W^ F^_t + W Fh_k``
  with the two weights from the Update Net; ``F_t`` replaces ``Fh_k`` for the
  detection of frame k; the first key frame sets ``F_t = Fh_k``.
* DenseFT (non-key frames): ``T_i = Transform(Fl_i)`` per level,
  ``P_i = PSLA(T_i, F_t)``, ``F_i = Q^ P_i + Q T_i`` from the Quality Net,
  then ``N_t``.
* One PSLA module (embeddings ``f`` for the memory, ``g`` for the query) per
  pyramid level, shared by RFU and DenseFT; the memory-side embeddings are
  computed once per key frame and reused by the segment's non-key frames.
* Non-key affinity (``nonkey_affinity``, default ``"memory"``).  The paper compares the query
  ``g(T_i)`` with ``f(F_t)``: a cheap feature of frame i against the
  high-level memory, two different kinds of feature that the embeddings must
  learn to match.  ``"key_transformed"`` compares it with
  ``f(T_k)`` instead, where ``T_k = Transform(Fl_k)`` is the key frame's own
  cheap feature (one Transform Net pass per segment): like with like, as a
  correlation of appearance; the values aggregated are still ``F_t``.  Trained
  the same way, the paper's ``"memory"`` did better on the robustness
  benchmark (``benchmarks/robustness.py``), so it is the config default.

Why ``feature="head"`` and ``split_stage=0``: for the whole method to be 2x
faster than NanoDet at key interval 10, a non-key frame must cost well under
half a NanoDet frame, which leaves no room for the head's 3x3 convs *and* a
lower backbone deeper than the stem.  ``benchmarks/bench_psla_cost.py``
prints the per-frame cost of each split (figures in benchmarks/RESULTS.md).

Parameter-free non-key frames (``nonkey_affinity="appearance"``, not in the
paper).  The non-key feature is ``F_t`` carried over by PSLA's sparse
neighbourhood and aggregation with fixed weights: the softmax of
``appearance_temperature`` times the cosine between 3x3 patches of NanoDet's
own stem features (:func:`patch_cosines`), plus ``appearance_prior`` for the
same cell.  Nothing is learnt, so it does not depend on the scenes the
modules were trained on; when nothing matches better, the key frame's own
cell stays (the carried-over feature).  With ``two_sided`` the frames
between two key frames attend to both; with ``promote_below`` a frame that
matches its key frames poorly runs the whole network.  The shipped manifest
selects this mode (``benchmarks/cross_scene.py`` chose its settings).

Displacement per level (``displacement_scaling``).  With ``"none"`` every
level searches ``d`` cells; at stride 32 that is 128 input pixels, most of
the height of a 416x192 input.  ``"stride"`` keeps ``d`` cells at stride 8 and
the same reach in pixels at the coarser levels (4 / 2 / 1 cells for d = 4).
The shipped modules run with ``"stride"``, which scored better on the
robustness benchmark.

Quality Net bias (``quality_bias``, not in the paper).  A logit added to the
``P_i`` side of DenseFT's two-way softmax at inference.  Trained by
distillation, the Quality Nets can give the Transform Net's stem-only guess
``T_i`` much of the weight though it is the worse feature;
``tools/calibrate_psla.py`` picks the bias on the training frames (never the
benchmark's held-out ones) and writes it into the modules' manifest.  0 runs
the modules as trained.

Offline schedule (sect. 3.5): segments of ``key_interval`` frames, the middle
frame (``start + n // 2`` for a segment of n frames) is the key frame; frames
of a segment before its key frame wait for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidtag.models import modules_file
from vidtag.models.nanodet import NanoDet, NanoDetOutput, confidence_mass
from vidtag.models.video_detector import VideoDetectorBase, check_frame_shape
from vidtag.ops.pointwise import pointwise, pointwise_pair
from vidtag.ops.sampling import PSLA, psla_affinities, psla_aggregate
from vidtag.shots import CUT_THRESHOLD, ShotBoundaries
from vidtag.types import Detections, FrameChunk


NONKEY_AFFINITIES = ("memory", "key_transformed", "appearance")


@dataclass(frozen=True)
class PSLAConfig:
    """Shape and schedule of PSLA + RFU + DenseFT on NanoDet-g."""

    key_interval: int = 10  # paper sect. 3.5 "key frame interval l is set as 10 by default"
    max_displacement: int = 4  # paper sect. 3.5 "d is set as 4"; Table 5 ablates 2..5 (1 + 8d positions)
    displacement_scaling: str = "none"  # "none": d cells at every level; "stride": d at stride 8, fewer cells at coarser levels (same reach in pixels)
    embed_channels: int = 16  # f, g 1x1 convs; paper 256 for 1024-ch res5 (1/4); 1/8 of our 128 ch: affinity cost halves (bench)
    split_stage: int = 0  # N_l = backbone stages 0..split_stage (paper: up to res4b3); 0 = stem, measured (module doc)
    feature: str = "head"  # where Fh / F_t live: "head" = after each head level's 3x3 conv, "neck" = neck output (measured)
    levels: tuple[int, ...] = (0, 1, 2)  # pyramid levels (strides 8/16/32) that get PSLA; others use Transform(Fl) alone
    fusion_channels: int = 32  # Update/Quality Net 1x1 width; paper 256 from a 2x1024 input (1/8) -> 256/8 = 32
    fusion_mid_channels: int = 16  # Update/Quality Net 3x3 width, paper Fig. 4 (16)
    transform_channels: int = 16  # Transform Net bottleneck width; paper 256 (1/4 of 1024); 16 rather than 32 for speed (bench_psla_cost.py)
    fusion_init_logit: float = 16.0  # initial logit gap of Update/Quality Net: 1e-7 weight on the disfavoured input (fresh modules: key frames are NanoDet's own)
    use_rfu: bool = True  # Table 5 ablation: off = F_t is the key frame's own feature
    use_denseft: bool = True  # Table 5 ablation: off = non-key feature is PSLA(Transform(Fl), F_t), no Quality Net
    psla_impl: str = "auto"  # vidtag.ops.sampling: sparse on CPU (faster there), slices elsewhere
    nonkey_affinity: str = "memory"  # DenseFT's PSLA compares g(T_i) with f(F_t) (paper) or f(T_k) ("key_transformed"); module doc
    offset_prior: float | None = None  # None: the paper's softmax; p: learnt per-offset logit bias starting at p for the same cell (module doc)
    cut_threshold: float = CUT_THRESHOLD  # vidtag.shots: a hard cut splits the segment and restarts F_t; 0 = off (not in the paper)
    quality_bias: float = 0.0  # logit added to the Quality Net's P_i side at inference; 0 = as trained (module doc)
    appearance_temperature: float = 50.0  # nonkey_affinity="appearance": softmax scale of the cosines (module doc)
    appearance_prior: float = 3.0  # nonkey_affinity="appearance": logit added for the same cell (the carried-over feature)
    two_sided: bool = True  # nonkey_affinity="appearance": frames between two key frames attend to both (offline; PSLAVideoDetector)
    promote_below: float = 0.0  # nonkey_affinity="appearance": a non-key frame whose match quality is below this runs as a key frame; 0 = never
    promote_mass_below: float = 0.0  # a non-key frame whose confidence mass falls below this fraction of its key frame's runs as a key frame; 0 = never

    def level_displacement(self, level: int) -> int:
        """Max displacement in cells at pyramid level ``level`` (stride ``8 * 2**level``)."""
        if self.displacement_scaling == "none":
            return self.max_displacement
        return max(1, round(self.max_displacement / 2**level))

    @classmethod
    def from_saved(cls, saved: dict, **overrides) -> "PSLAConfig":
        """The config recorded in a modules file or manifest (lists back to tuples,
        unknown keys dropped); files from before ``nonkey_affinity`` existed used
        the paper's ``"memory"``.  ``overrides`` replace fields (e.g. key_interval)."""
        known = {f.name for f in fields(cls)}
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in saved.items() if k in known}
        values.setdefault("nonkey_affinity", "memory")
        values.update(overrides)
        return cls(**values)

    def __post_init__(self):
        if self.key_interval < 1:
            raise ValueError(f"key_interval must be >= 1, got {self.key_interval}")
        if not 1 <= self.max_displacement <= 8:
            raise ValueError(f"max_displacement must be in 1..8 (paper ablates 2..5), got {self.max_displacement}")
        if self.split_stage not in (0, 1, 2):
            raise ValueError(f"split_stage must be 0, 1 or 2 (stride 4 or 8 lower features), got {self.split_stage}")
        if self.feature not in ("head", "neck"):
            raise ValueError(f"feature must be 'head' or 'neck', got {self.feature!r}")
        if not set(self.levels) <= {0, 1, 2}:
            raise ValueError(f"levels must be a subset of (0, 1, 2), got {self.levels}")
        if self.displacement_scaling not in ("none", "stride"):
            raise ValueError(f"displacement_scaling must be 'none' or 'stride', got {self.displacement_scaling!r}")
        if not 0 <= self.cut_threshold <= 1:
            raise ValueError(f"cut_threshold must be in [0, 1] (0 = off), got {self.cut_threshold}")
        if self.nonkey_affinity not in NONKEY_AFFINITIES:
            raise ValueError(f"nonkey_affinity must be one of {', '.join(NONKEY_AFFINITIES)}, got {self.nonkey_affinity!r}")
        if self.appearance_temperature <= 0:
            raise ValueError(f"appearance_temperature must be > 0, got {self.appearance_temperature}")
        if not 0 <= self.promote_below <= 1:
            raise ValueError(f"promote_below must be in [0, 1] (0 = never), got {self.promote_below}")
        if not 0 <= self.promote_mass_below <= 1:
            raise ValueError(f"promote_mass_below must be in [0, 1] (0 = never), got {self.promote_mass_below}")


@dataclass(frozen=True)
class PSLAMemory:
    """The temporal feature ``F_t`` of a video, one map per pyramid level.

    Attributes:
        features (tuple[Tensor[1, C, h, w], ...]): ``F_t`` per level.
        embeds (tuple[Tensor[1, E, h, w] | None, ...]): ``f(F_t)`` per level
            (None for levels without PSLA): what the next key frame's RFU compares
            with, and the non-key frames' with ``nonkey_affinity="memory"``.
        nonkey_embeds (tuple[Tensor[1, E, h, w] | None, ...]): what the non-key
            frame (``"key_transformed"``) or ``embeds`` (``"memory"``).
        mass (float | None): the key frame's confidence mass
            (:func:`vidtag.models.nanodet.confidence_mass`), what ``promote_mass_below``
            compares the non-key frames with; None before :meth:`PSLADetector.key_frame`.
    """

    features: tuple[Tensor, ...]
    embeds: tuple[Tensor | None, ...]
    nonkey_embeds: tuple[Tensor | None, ...]
    mass: float | None = None


@dataclass(frozen=True)
class PSLAClipOutput:
    """What :meth:`PSLADetector.forward_clip` computed for one clip of T frames.

    Attributes:
        outputs (list[NanoDetOutput]): head output per frame (batch 1), frame order.
        key_index (int): the key frame.
        nonkey_index (list[int]): the other frames, ascending; the row order of
            the non-key tensors below.
        key_features (list[Tensor[1, C, h, w]]): ``Fh_k`` per level.
        memory (PSLAMemory): ``F_t`` after the key frame's update.
        transformed (list[Tensor[T-1, C, h, w]]): ``Transform(Fl_i)`` per level.
        propagated (list[Tensor[T-1, C, h, w] | None]): ``PSLA(T_i, F_t)`` per level.
        features (list[Tensor[T, C, h, w]]): the features fed to ``N_t``, per
            level, frame order.
    """

    outputs: list[NanoDetOutput]
    key_index: int
    nonkey_index: list[int]
    key_features: list[Tensor]
    memory: PSLAMemory
    transformed: list[Tensor]
    propagated: list[Tensor | None]
    features: list[Tensor]


def _conv(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2)


class UpdateNet(nn.Module):
    """RFU's Update Net (paper Fig. 4): 1x1 conv -> ReLU -> 3x3 conv -> ReLU -> 3x3 conv to 2,
    softmax over the 2 channels; fuses two maps with per-position weights.

    The last conv starts at weight 0 and bias ``(-g/2, +g/2)`` (``favour=1``)
    or ``(+g/2, -g/2)`` (``favour=0``), so a fresh net returns the favoured
    input up to a weight of ``sigmoid(-g)`` on the other (1e-7 for g = 16).
    Gradients on the last conv are then ~1e-7 too: Adam's scale-free steps move
    it at once; with SGD lower ``g`` (e.g. 4) before training.

    Args:
        channels (int): channels of each input map.
        hidden_channels (int): width of the 1x1 conv.
        mid_channels (int): width of the first 3x3 conv.
        init_logit (float): g.
        favour (int): which input (0 or 1) a fresh net returns.
    """

    def __init__(self, channels: int, hidden_channels: int = 32, mid_channels: int = 16, init_logit: float = 16.0, favour: int = 1):
        super().__init__()
        self.reduce = _conv(2 * channels, hidden_channels, 1)
        self.conv = _conv(hidden_channels, mid_channels, 3)
        self.out = _conv(mid_channels, 2, 3)
        self.act = nn.ReLU()
        self.logit_bias = 0.0  # added to the first input's logit (QualityNet: PSLAConfig.quality_bias)
        sign = 1.0 if favour == 1 else -1.0
        with torch.no_grad():
            self.out.weight.zero_()
            self.out.bias.copy_(torch.tensor([-sign * init_logit / 2, sign * init_logit / 2]))

    def forward(self, first: Tensor, second: Tensor) -> tuple[Tensor, Tensor]:
        """first, second (Tensor[B, C, H, W]; first may have batch 1) ->
        (fused Tensor[B, C, H, W], weights Tensor[B, 2, H, W]).

        ``fused = weights[:, 0:1] * first + weights[:, 1:2] * second``; the
        weights sum to 1 at each position.
        """
        # the 1x1 conv on cat(first, second), as two convs on the halves of its
        # weight: same result, no concatenated copy
        x = pointwise_pair(first, second, self.reduce)
        logits = self.out(self.act(self.conv(self.act(x))))
        if self.logit_bias:
            logits = logits + logits.new_tensor([self.logit_bias, 0.0]).view(1, 2, 1, 1)
        weights = logits.softmax(dim=1)
        # lerp: second + w0 * (first - second), one fused pass instead of two products and a sum
        return torch.lerp(second, first, weights[:, 0:1]), weights


class QualityNet(UpdateNet):
    """DenseFT's Quality Net: the Update Net's structure (paper sect. 3.5) on
    (propagated ``P_i``, transformed ``T_i``); a fresh one returns ``P_i``
    (the key frame's feature carried over), as the Transform Net is untrained."""

    def __init__(self, channels: int, hidden_channels: int = 32, mid_channels: int = 16, init_logit: float = 16.0):
        super().__init__(channels, hidden_channels, mid_channels, init_logit, favour=0)


class TransformNet(nn.Module):
    """DenseFT's Transform Net: the low feature ``Fl`` to each pyramid level's shape.

    A shared bottleneck (paper Fig. 5: 1x1 reduce, 3x3, 3x3 to the high-level
    channel count) with one output branch per level::

        Fl [B, Cl, H/sl, W/sl] -> 1x1 Cl->t (if Cl > t) -> 3x3 ->t (stride 8/sl) = trunk at stride 8
        level 0: trunk                       -> 3x3 t->C            (stride 8)
        level 1: trunk -> 3x3 s2 t->t        -> 3x3 t->C            (stride 16)
        level 2: ...   -> 3x3 s2 t->t (x2)   -> 3x3 t->C            (stride 32)

    LeakyReLU(0.1) (NanoDet's) after every conv except the outputs, which stay
    linear so they can regress any target feature.

    Args:
        in_channels (int): channels of ``Fl``.
        in_stride (int): stride of ``Fl``, 4 or 8.
        out_channels (int): channels of the high-level feature (128).
        channels (int): bottleneck width t.
        num_levels (int): pyramid levels, strides 8, 16, 32, ...
    """

    def __init__(self, in_channels: int, in_stride: int, out_channels: int = 128, channels: int = 32, num_levels: int = 3):
        super().__init__()
        if in_stride not in (4, 8):
            raise ValueError(f"TransformNet takes a stride 4 or 8 input, got {in_stride}")
        # the 1x1 reduction only where it reduces (the stem's output is 32 channels already)
        self.reduce = _conv(in_channels, channels, 1) if in_channels > channels else None
        self.to_stride8 = _conv(channels if self.reduce is not None else in_channels, channels, 3, stride=8 // in_stride)
        self.downs = nn.ModuleList(_conv(channels, channels, 3, stride=2) for _ in range(num_levels - 1))
        self.outs = nn.ModuleList(_conv(channels, out_channels, 3) for _ in range(num_levels))
        self.act = nn.LeakyReLU(0.1)

    def forward(self, low: Tensor) -> list[Tensor]:
        """low (Tensor[B, Cl, H/sl, W/sl]) -> [Tensor[B, out_channels, H/s, W/s]] for s = 8, 16, 32."""
        x = low if self.reduce is None else self.act(pointwise(low, self.reduce))
        x = self.act(self.to_stride8(x))
        outputs = [self.outs[0](x)]
        for down, out in zip(self.downs, self.outs[1:]):
            x = self.act(down(x))
            outputs.append(out(x))
        return outputs


class PSLADetector(nn.Module):
    """NanoDet-g with PSLA, RFU and DenseFT; stateless (the memory is passed in).

    The NanoDet is frozen here (``requires_grad_(False)``); only the new
    modules train.  Inputs are normalised frames as from ``preprocess.letterbox``.

    Args:
        detector (NanoDet): the per-frame network (teacher and ``N_f``/``N_l``/``N_t``).
        psla_per_level (nn.ModuleList[PSLA | None]): one PSLA per pyramid level
            (None for levels not in ``config.levels``).
        update_nets (nn.ModuleList[UpdateNet | None] | None): RFU per level; None if ``use_rfu`` is off.
        transform_net (TransformNet): Fl -> one map per level.
        quality_nets (nn.ModuleList[QualityNet | None] | None): DenseFT fusion per level; None if ``use_denseft`` is off.
        config (PSLAConfig): the config the parts were built for.
    """

    def __init__(
        self,
        detector: NanoDet,
        psla_per_level: nn.ModuleList,
        update_nets: nn.ModuleList | None,
        transform_net: TransformNet,
        quality_nets: nn.ModuleList | None,
        config: PSLAConfig,
    ):
        super().__init__()
        if config.use_rfu and update_nets is None:
            raise ValueError("use_rfu is on but no update_nets were given")
        if config.use_denseft and quality_nets is None:
            raise ValueError("use_denseft is on but no quality_nets were given")
        self.detector = detector.requires_grad_(False)
        self.psla = psla_per_level
        self.update_nets = update_nets
        self.transform_net = transform_net
        self.quality_nets = quality_nets
        self.config = config
        self.engine = None  # inference only: a vidtag.models.runtime.ExportedNanoDet that runs N_l, N_f and N_t (set_engine)

    def set_engine(self, engine) -> None:
        """Run ``N_l``, ``N_f`` and ``N_t`` in an exported runtime (a
        :class:`vidtag.models.runtime.ExportedNanoDet` whose psla graphs were made for
        this config's ``split_stage`` and ``feature``), the new modules staying in
        torch between them; None: torch.  The engine runs only where no gradient is
        recorded (inference); training runs the torch NanoDet as before.

        Raises:
            ValueError: the engine's psla graphs are for another split (or missing).
        """
        if engine is not None and engine.psla_split != (self.config.split_stage, self.config.feature):
            raise ValueError(f"the exported psla graphs are for {engine.psla_split} (split_stage, feature), "
                             f"these modules need ({self.config.split_stage}, {self.config.feature!r})")
        self.engine = engine

    def _exported(self) -> bool:
        return self.engine is not None and not torch.is_grad_enabled()

    def set_inference_config(self, config: PSLAConfig) -> None:
        """Run the trained modules under ``config``: another key interval, max
        displacement, its scaling or PSLA implementation, or RFU / DenseFT
        switched off (their modules stay loaded and are simply not run).

        Raises:
            ValueError: ``config`` switches on a part these modules lack.
        """
        if (config.use_rfu and self.update_nets is None) or (config.use_denseft and self.quality_nets is None):
            raise ValueError("cannot switch on RFU / DenseFT: the modules were built without them")
        if config.nonkey_affinity != self.config.nonkey_affinity and config.nonkey_affinity != "appearance":
            raise ValueError(f"modules trained for nonkey_affinity={self.config.nonkey_affinity!r} cannot run "
                             f"{config.nonkey_affinity!r} (only 'appearance', which needs no trained non-key part)")
        self.config = config
        for level, p in enumerate(self.psla):
            if p is not None:
                p.max_displacement = config.level_displacement(level)
                p.impl = config.psla_impl
        for q in self.quality_nets or ():
            if q is not None:
                q.logit_bias = config.quality_bias

    # --- parts --------------------------------------------------------------

    def _prepare(self, x: Tensor) -> Tensor:
        if x.shape[-1] % 32 or x.shape[-2] % 32:
            raise ValueError(f"input H and W must be multiples of 32, got {tuple(x.shape[-2:])}")
        if self.detector.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def high_features(self, x: Tensor | None, low: Tensor | None = None) -> list[Tensor]:
        """N_f: x (Tensor[B, 3, H, W]) -> ``Fh`` per level, Tensor[B, 128, H/s, W/s], s = 8, 16, 32.

        ``low``: ``low_features(x)`` if already computed (then x is not read).
        """
        if self._exported():
            return self.engine.psla_high(self.engine.psla_low(x) if low is None else low)
        backbone = self.detector.backbone
        if low is None:
            stages = backbone(self._prepare(x))
        else:
            stages = [low] + backbone.forward_stages(low, self.config.split_stage + 1)
        pyramid = self.detector.neck(stages)
        if self.config.feature == "neck":
            return pyramid
        return [level.conv(p) for level, p in zip(self.detector.head.levels, pyramid)]

    def low_features(self, x: Tensor) -> Tensor:
        """N_l: x (Tensor[B, 3, H, W]) -> ``Fl`` Tensor[B, Cl, H/sl, W/sl] (stage ``split_stage``'s output)."""
        if self._exported():
            return self.engine.psla_low(x)
        return self.detector.backbone.forward_stages(self._prepare(x), 0, self.config.split_stage + 1)[-1]

    def predict(self, features: list[Tensor]) -> NanoDetOutput:
        """N_t: features per level (as from :meth:`high_features`) -> NanoDetOutput."""
        if self._exported():
            return self.engine.psla_predict(features)
        if self.config.feature == "neck":
            return self.detector.head(features)
        return self.detector.head.predict(features)

    def update_memory(
        self, key_features: list[Tensor], memory: PSLAMemory | None, key_transformed: list[Tensor] | None = None
    ) -> PSLAMemory:
        """RFU at a key frame.

        Args:
            key_features: ``Fh_k`` per level, Tensor[1, C, h, w].
            memory: ``F_t`` before this key frame, or None at the first one.
            key_transformed: what the non-key frames compare with, per level
                (:meth:`_key_side`): ``Transform(Fl_k)`` Tensor[1, C, h, w] for
                ``nonkey_affinity="key_transformed"``, the key frame's
                :func:`appearance_descriptors` for ``"appearance"``.

        Returns:
            PSLAMemory: the updated ``F_t`` (also the key frame's features for
            detection) and ``f(F_t)`` per level.
        """
        if memory is None or not self.config.use_rfu:
            features = list(key_features)
        else:
            features = []
            for i, (fh, ft) in enumerate(zip(key_features, memory.features)):
                if self.psla[i] is None:
                    features.append(fh)
                    continue
                aligned = self.psla[i](fh, ft, memory_embed=memory.embeds[i])
                features.append(self.update_nets[i](aligned, fh)[0])
        embeds = tuple(None if p is None else p.embed_memory(f) for p, f in zip(self.psla, features))
        if self.config.nonkey_affinity == "memory":
            return PSLAMemory(tuple(features), embeds, embeds)
        if key_transformed is None:
            raise ValueError(f"nonkey_affinity={self.config.nonkey_affinity!r} needs the key frame's side (_key_side)")
        if self.config.nonkey_affinity == "appearance":
            return PSLAMemory(tuple(features), embeds, tuple(key_transformed))
        nonkey_embeds = tuple(None if p is None else p.embed_memory(t) for p, t in zip(self.psla, key_transformed))
        return PSLAMemory(tuple(features), embeds, nonkey_embeds)

    def nonkey_features(self, x: Tensor, memory: PSLAMemory) -> tuple[list[Tensor], list[Tensor], list[Tensor | None]]:
        """DenseFT on a batch of non-key frames.

        Args:
            x (Tensor[B, 3, H, W]): normalised frames.
            memory: ``F_t`` of their key frame (batch 1, broadcast).

        Returns:
            (features, transformed, propagated): per level Tensor[B, C, h, w];
            ``features`` go to :meth:`predict`; ``propagated`` is None for
            levels without PSLA.
        """
        return self._densefts(self.low_features(x), memory)

    def _densefts(
        self, low: Tensor, memory: PSLAMemory, match_quality: list[Tensor] | None = None
    ) -> tuple[list[Tensor], list[Tensor | None], list[Tensor | None]]:
        """Non-key features from ``low`` (Tensor[B, Cl, h, w]); with ``"appearance"``,
        ``match_quality`` (when given) receives the Tensor[B] of :meth:`_appearance_propagate`."""
        if self.config.nonkey_affinity == "appearance":
            return self._appearance_propagate(low, memory, match_quality)
        transformed = self.transform_net(low)
        features, propagated = [], []
        for i, t in enumerate(transformed):
            if self.psla[i] is None:
                features.append(t)
                propagated.append(None)
                continue
            p = self.psla[i](t, memory.features[i], memory_embed=memory.nonkey_embeds[i])
            propagated.append(p)
            features.append(self.quality_nets[i](p, t)[0] if self.config.use_denseft else p)
        return features, transformed, propagated

    def _appearance_descriptors(self, low: Tensor) -> list[Tensor | None]:
        """:func:`appearance_descriptors` of ``low`` at each PSLA level's stride (None elsewhere)."""
        low_stride = self.detector.backbone.strides[self.config.split_stage]
        return [None if p is None else appearance_descriptors(low, 8 * 2**i // low_stride) for i, p in enumerate(self.psla)]

    def _appearance_propagate(
        self, low: Tensor, memory: PSLAMemory | Sequence[PSLAMemory], match_quality: list[Tensor] | None = None
    ) -> tuple[list[Tensor], list[Tensor | None], list[Tensor | None]]:
        """``nonkey_affinity="appearance"``: the key frames' ``F_t`` carried over to non-key frames.

        Per level, PSLA's sparse neighbourhood and aggregation with fixed
        weights: ``softmax(appearance_temperature * cos + appearance_prior *
        [centre])`` taken jointly over the neighbourhoods of every key frame
        in ``memory`` (one, or the two key frames either side of the frames),
        where ``cos`` is :func:`patch_cosines` between the frame's appearance
        features around p and a key frame's around ``p + o``.  Nothing here is
        trained, so it behaves alike on every scene; where no offset matches
        better than the others, the prior leaves the key frames' own cells in
        place (the carried-over feature), and where one key frame matches
        better (an object that left or entered, a degraded key frame) it takes
        the weight.  Levels without PSLA take the Transform Net's output.

        Args:
            low (Tensor[B, Cl, h, w]): the non-key frames' ``Fl``.
            memory: the key frames' memories (batch 1 each).
            match_quality: if a list, receives Tensor[B]: per frame, the mean
                over the finest PSLA level's cells of the best cosine over every
                key frame's neighbourhood, in [-1, 1]; low when the frame shows
                what no key frame did (a new scene, a large jump).
        """
        config = self.config
        memories = [memory] if isinstance(memory, PSLAMemory) else list(memory)
        descriptors = self._appearance_descriptors(low)
        transformed = self.transform_net(low) if any(p is None for p in self.psla) else [None] * len(self.psla)
        features, propagated = [], []
        for i, (p, desc) in enumerate(zip(self.psla, descriptors)):
            if p is None:
                features.append(transformed[i])
                propagated.append(None)
                continue
            d = p.max_displacement
            cosines = torch.cat([patch_cosines(desc, m.nonkey_embeds[i], d) for m in memories], dim=1)
            if match_quality is not None and not match_quality:
                match_quality.append(cosines.amax(dim=1).mean(dim=(1, 2)))
            k_count = cosines.shape[1] // len(memories)
            prior = cosines.new_zeros(len(memories), k_count)
            prior[:, 0] = config.appearance_prior
            logits = cosines * config.appearance_temperature + prior.view(1, -1, 1, 1)
            weights = logits.softmax(dim=1).split(k_count, dim=1)
            aligned = sum(psla_aggregate(w, m.features[i], d, p.impl) for w, m in zip(weights, memories))
            features.append(aligned)
            propagated.append(aligned)
        return features, transformed, propagated

    def forward_segment(
        self, x: Tensor, key: int, memory: PSLAMemory | None, promoted: list[int] | None = None
    ) -> tuple[list[NanoDetOutput], PSLAMemory]:
        """Inference on one segment: N_l on all its frames as one batch, the rest
        of N_f + RFU on the key frame, DenseFT (or the appearance propagation)
        on the others, with :meth:`nonkey_output`'s promotion rule.

        Args:
            x (Tensor[n, 3, H, W]): the segment's normalised frames.
            key (int): index of the key frame in x.
            memory: ``F_t`` before this segment (None for the first).
            promoted: if a list, the indices into x of promoted frames are appended.

        Returns:
            ([key output (batch 1), non-key output (batch n - 1, frame order) or
            absent when n == 1], the updated memory).
        """
        low = self.low_features(x)
        memory, key_output = self.key_frame(low[key : key + 1], memory)
        outputs = [key_output]
        if len(x) > 1:
            others = [i for i in range(len(x)) if i != key]
            rows: list[int] = []
            outputs.append(self.nonkey_output(low[others], [memory], rows))
            if promoted is not None:
                promoted.extend(others[r] for r in rows)
        return outputs, memory

    def key_frame(self, key_low: Tensor, memory: PSLAMemory | None) -> tuple[PSLAMemory, NanoDetOutput]:
        """The rest of N_f and RFU on a key frame's ``Fl`` (Tensor[1, Cl, h, w]) ->
        (the updated memory, the key frame's head output)."""
        memory = self.update_memory(self.high_features(None, key_low), memory, self._key_side(key_low))
        output = self.predict(list(memory.features))
        return replace(memory, mass=float(confidence_mass(output.cls_scores)[0])), output

    def nonkey_output(self, low: Tensor, memories: Sequence[PSLAMemory], promoted: list[int] | None = None) -> NanoDetOutput:
        """Head output of non-key frames from their ``Fl`` (Tensor[B, Cl, h, w]).

        ``memories``: the key frame's memory, or with ``nonkey_affinity=
        "appearance"`` the memories of the key frames either side (see
        :meth:`_appearance_propagate`).  With ``"appearance"`` and
        ``promote_below > 0``, a frame whose match quality is below
        ``promote_below`` is *promoted*: it runs the whole network on its own,
        exactly as per-frame detection would (no memory changes); its row
        index is appended to ``promoted`` when that is a list.  With
        ``promote_mass_below > 0`` (any affinity), so is a frame whose
        propagated output's confidence mass fell below that fraction of its
        key frames' (:meth:`_promote_collapsed`).
        """
        if self.config.nonkey_affinity != "appearance":
            if len(memories) != 1:
                raise ValueError(f"nonkey_affinity={self.config.nonkey_affinity!r} propagates from one key frame, got {len(memories)}")
            return self._promote_collapsed(low, self.predict(self._densefts(low, memories[0])[0]), memories, set(), promoted)
        quality: list[Tensor] = []
        features = self._appearance_propagate(low, memories, quality)[0]
        done: set[int] = set()
        if self.config.promote_below > 0:
            rows = torch.nonzero(quality[0] < self.config.promote_below).flatten()
            if len(rows):
                own = self.high_features(None, low[rows])
                features = [f.index_copy(0, rows, h.to(f.dtype)) for f, h in zip(features, own)]
                done.update(rows.tolist())
                if promoted is not None:
                    promoted.extend(rows.tolist())
        return self._promote_collapsed(low, self.predict(features), memories, done, promoted)

    def _promote_collapsed(self, low: Tensor, output: NanoDetOutput, memories: Sequence[PSLAMemory], done: set[int],
                           promoted: list[int] | None) -> NanoDetOutput:
        """``promote_mass_below``: the rows of ``output`` (non-key frames, their ``Fl`` in
        ``low``) whose confidence mass fell below that fraction of the largest key frame
        mass in ``memories`` run the whole network instead; rows in ``done`` already did."""
        key_mass = max((m.mass for m in memories if m.mass is not None), default=None)
        if self.config.promote_mass_below <= 0 or not key_mass:
            return output
        collapsed = confidence_mass(output.cls_scores) < self.config.promote_mass_below * key_mass
        rows = [r for r in torch.nonzero(collapsed).flatten().tolist() if r not in done]
        if not rows:
            return output
        index = torch.tensor(rows, device=low.device)
        own = self.predict(self.high_features(None, low[index]))
        if promoted is not None:
            promoted.extend(rows)
        return replace(output, cls_scores=output.cls_scores.index_copy(0, index, own.cls_scores),
                       box_dists=output.box_dists.index_copy(0, index, own.box_dists))

    def _key_side(self, key_low: Tensor) -> list[Tensor] | None:
        """What the non-key frames compare with, from the key frame's ``Fl_k``:
        ``Transform(Fl_k)`` (``"key_transformed"``), its appearance descriptors
        (``"appearance"``), or None (``"memory"``: ``f(F_t)``, made in :meth:`update_memory`)."""
        if self.config.nonkey_affinity == "key_transformed":
            return self.transform_net(key_low)
        if self.config.nonkey_affinity == "appearance":
            return self._appearance_descriptors(key_low)
        return None

    # --- training-friendly forward ------------------------------------------

    def forward_clip(self, clip: Tensor, key_index: int, memory: PSLAMemory | None = None) -> PSLAClipOutput:
        """One key frame and its non-key frames, with gradients.

        Args:
            clip (Tensor[T, 3, H, W]): normalised frames of one video.
            key_index (int): which frame of the clip is the key frame.
            memory: ``F_t`` from an earlier key frame (e.g. ``forward_clip(
                earlier_frame[None], 0).memory``), or None: the key frame
                initialises it.

        Returns:
            PSLAClipOutput: head outputs for every frame and the intermediates.
        """
        t = clip.shape[0]
        if not 0 <= key_index < t:
            raise ValueError(f"key_index {key_index} outside a clip of {t} frames")
        low = self.low_features(clip)
        key_low = low[key_index : key_index + 1]
        key_features = self.high_features(None, key_low)
        memory = self.update_memory(key_features, memory, self._key_side(key_low))
        nonkey_index = [i for i in range(t) if i != key_index]
        key_output = self.predict(list(memory.features))
        if nonkey_index:
            feats, transformed, propagated = self._densefts(low[nonkey_index], memory)
            nonkey_output = self.predict(feats)
        else:
            feats, transformed, propagated = [f[:0] for f in memory.features], [], []
        features = [torch.cat((f[:key_index], k, f[key_index:])) for f, k in zip(feats, memory.features)]
        outputs = []
        for i in range(t):
            src, row = (key_output, 0) if i == key_index else (nonkey_output, i - (i > key_index))
            outputs.append(_take(src, row))
        return PSLAClipOutput(outputs, key_index, nonkey_index, key_features, memory, transformed, propagated, features)

    @torch.no_grad()
    def teacher_features(self, clip: Tensor) -> list[Tensor]:
        """The frozen NanoDet's ``Fh`` per level for every frame, Tensor[T, C, h, w] (distillation targets)."""
        return self.high_features(clip)

    # --- the trainable part -------------------------------------------------

    def trainable_modules(self) -> nn.ModuleDict:
        """The new modules (everything but the NanoDet)."""
        parts = {"psla": self.psla, "transform_net": self.transform_net}
        if self.update_nets is not None:
            parts["update_nets"] = self.update_nets
        if self.quality_nets is not None:
            parts["quality_nets"] = self.quality_nets
        return nn.ModuleDict(parts)

    SHAPE_FIELDS = ("embed_channels", "split_stage", "feature", "levels", "fusion_channels",
                    "fusion_mid_channels", "transform_channels", "use_rfu", "use_denseft", "nonkey_affinity",
                    "offset_prior")  # fmt: skip
    """The config fields a modules file must share with the model it is loaded into."""

    def save_modules(self, path: str | Path) -> None:
        """Save the new modules' state dict and the config (not the NanoDet weights)."""
        modules_file.save_modules(self, path)

    def load_modules(self, path: str | Path) -> None:
        """Load what :meth:`save_modules` wrote; the configs must agree on :attr:`SHAPE_FIELDS`.

        Raises:
            ValueError: the file was saved for another configuration.
        """
        fields = self.SHAPE_FIELDS
        if self.config.nonkey_affinity == "appearance":  # needs nothing trained for the non-key affinity
            fields = tuple(f for f in fields if f != "nonkey_affinity")
        modules_file.load_modules(self, path, fields)


def appearance_descriptors(low: Tensor, factor: int) -> Tensor:
    """Parameter-free appearance features for ``nonkey_affinity="appearance"``.

    low (Tensor[B, C, h, w]) -> Tensor[B, C, h / factor, w / factor]: ``low``
    average-pooled by ``factor``, minus its mean over channels at each cell
    (what :func:`patch_cosines` compares).
    """
    x = F.avg_pool2d(low, factor) if factor > 1 else low
    return x - x.mean(dim=1, keepdim=True)


def patch_cosines(query: Tensor, key: Tensor, max_displacement: int) -> Tensor:
    """Cosine between 3x3 patches of two appearance maps, over PSLA's neighbourhood.

    Args:
        query (Tensor[B, C, h, w]): the frames' :func:`appearance_descriptors`.
        key (Tensor[B or 1, C, h, w]): the key frame's.
        max_displacement (int): ``d``; offsets ``psla_offsets(d)``.

    Returns:
        Tensor[B, K, h, w]: channel k at p is the cosine between the 3x3 patch
        of ``query`` around p and that of ``key`` around ``p + o_k`` (the
        C * 9 values of each patch as one vector, cells outside the map as
        zeros); ``-inf`` where ``p + o_k`` is outside the map.  Computed as box
        sums of per-cell inner products, 9x fewer operations than comparing
        unfolded patches.
    """
    dots = psla_affinities(query, key, max_displacement)  # <q(p), k(p + o)>, -inf where p + o is outside
    outside = torch.isinf(dots)
    numerator = F.avg_pool2d(dots.masked_fill(outside, 0.0), 3, 1, 1, count_include_pad=True) * 9
    query_sq = F.avg_pool2d(query.square().sum(dim=1, keepdim=True), 3, 1, 1, count_include_pad=True) * 9
    key_sq = F.avg_pool2d(key.square().sum(dim=1, keepdim=True), 3, 1, 1, count_include_pad=True) * 9
    # the key's patch energy at p + o_k, for every k: the same shifted-slice pattern with a constant query
    key_sq_shifted = psla_affinities(torch.ones_like(query_sq[: len(key_sq)]), key_sq, max_displacement)
    cosines = numerator / (query_sq * key_sq_shifted.masked_fill(torch.isinf(key_sq_shifted), 0.0)).sqrt().clamp(min=1e-6)
    return cosines.masked_fill(outside, float("-inf"))


def _take(output: NanoDetOutput, row: int) -> NanoDetOutput:
    return NanoDetOutput(output.cls_scores[row : row + 1], output.box_dists[row : row + 1], output.level_shapes, output.strides)


def build_psla(detector: NanoDet, config: PSLAConfig | None = None) -> PSLADetector:
    """Assemble a PSLADetector with freshly initialised new modules around ``detector``.

    The new modules follow the NanoDet's device and memory format.
    """
    config = config or PSLAConfig()
    channels = detector.config.neck_channels if config.feature == "neck" else detector.config.head_channels
    num_levels = len(detector.config.strides)
    backbone = detector.backbone
    low_channels, low_stride = backbone.channels[config.split_stage], backbone.strides[config.split_stage]

    def per_level(make):
        return nn.ModuleList(make(i) if i in config.levels else None for i in range(num_levels))

    psla = per_level(lambda i: PSLA(channels, config.embed_channels, config.level_displacement(i), config.psla_impl, config.offset_prior))
    fusion = (channels, config.fusion_channels, config.fusion_mid_channels, config.fusion_init_logit)
    update = per_level(lambda i: UpdateNet(*fusion)) if config.use_rfu else None
    quality = per_level(lambda i: QualityNet(*fusion)) if config.use_denseft else None
    transform = TransformNet(low_channels, low_stride, channels, config.transform_channels, num_levels)
    model = PSLADetector(detector, psla, update, transform, quality, config)
    model.set_inference_config(config)
    param = next(detector.parameters())
    fmt = torch.channels_last if detector.channels_last else torch.contiguous_format
    model.trainable_modules().to(device=param.device, memory_format=fmt)
    return model.eval()


# ---------------------------------------------------------------------------
# Video detector: the offline key-frame schedule
# ---------------------------------------------------------------------------


def segment_key_frames(num_frames: int, key_interval: int) -> list[tuple[int, int, int]]:
    """The offline schedule: (start, stop, key) per segment of ``key_interval`` frames.

    The key frame is ``start + n // 2`` for a segment of n frames (the middle;
    for l = 10 the key frame looks ahead at most 5 frames).
    """
    segments = []
    for start in range(0, num_frames, key_interval):
        stop = min(start + key_interval, num_frames)
        segments.append((start, stop, start + (stop - start) // 2))
    return segments


@dataclass
class _Tail:
    """Non-key frames after the last key frame, waiting for the next one (two-sided propagation)."""

    low: Tensor  # Fl of the frames, Tensor[m, Cl, h, w]; their key frame's memory is the video's current one
    box: object  # their letterbox map


@dataclass
class _VideoState:
    memory: PSLAMemory | None = None
    pending: list[Tensor] = field(default_factory=list)  # frames of the current segment, uint8 [H, W, 3]
    next_start: int = 0  # index of the first pending frame
    source_shape: tuple[int, ...] | None = None
    source_wh: tuple[int, int] | None = None  # the video's size when the decoder scaled the frames (FrameChunk.source_size)
    max_pending: int = 0  # most frames ever buffered (tests check the bound)
    key_frames: list[int] = field(default_factory=list)  # key frames run so far, in order
    promoted: list[int] = field(default_factory=list)  # non-key frames run as key frames (PSLAConfig.promote_below)
    shots: ShotBoundaries | None = None  # the video's hard cuts so far (vidtag.shots)
    tail: _Tail | None = None  # frames after the last key frame, not yet output (two-sided propagation)
    emitted: int = 0  # frames output so far


class PSLAVideoDetector(VideoDetectorBase):
    """Video detector with the same interface as ``build.FrameDetector``.

    Buffers at most ``key_interval`` frames (one segment): a segment is run as
    its key frame (batch 1: full network + RFU) followed by its non-key
    frames (one batch: N_l + DenseFT + N_t).  A hard cut (``vidtag.shots``,
    ``config.cut_threshold``) splits a segment in two, each with its own key
    frame (the middle), and the temporal feature restarts after it.

    With ``nonkey_affinity="appearance"`` and ``two_sided``, the frames
    between two key frames of one shot attend to both: the frames after a
    key frame wait (as their low-level features, at most half a segment)
    until the next key frame has run; the frames before a shot's first key
    frame and after its last one have one key frame.

    Args:
        model (PSLADetector): in eval mode on ``device``.
        classes: the model's class names (index = label).
        options (build.DetectOptions): thresholds and input size.
        device: where the network runs.
    """

    method = "psla"

    def __init__(self, model: PSLADetector, classes: tuple[str, ...], options, device: torch.device | str = "cpu"):
        super().__init__(model, classes, options, device)
        self.state = _VideoState()

    @property
    def shots(self) -> ShotBoundaries | None:
        """The last video's hard cuts (``state.shots``; None until its first segment has run)."""
        return self.state.shots

    @property
    def promoted_frames(self) -> list[int]:
        """Non-key frames of the last video that ran the whole network (``PSLAConfig.promote_below``)."""
        return list(self.state.promoted)

    def reset(self) -> None:
        """Forget the temporal feature and buffered frames: call at the start of each video."""
        self.state = _VideoState()

    def run(self, chunks: Iterable[FrameChunk]) -> Iterator[Detections]:
        """Yield one Detections per frame of ``chunks`` (one video), in order."""
        from vidtag.models.runtime import release_memory

        try:
            yield from self._run(chunks)
        finally:
            release_memory(self.model.engine)  # the video is done (or failed): an exported network's buffers can go

    def _run(self, chunks: Iterable[FrameChunk]) -> Iterator[Detections]:
        self.reset()
        interval = self.model.config.key_interval
        for chunk in chunks:
            frames = torch.as_tensor(chunk.frames)
            self.state.source_wh = chunk.source_size
            for frame in frames:
                self.state.pending.append(frame)
                self.state.max_pending = max(self.state.max_pending, len(self.state.pending))
                if len(self.state.pending) == interval:
                    yield from self._run_segment()
        if self.state.pending:
            yield from self._run_segment()
        yield from self._flush_tail()

    @property
    def _two_sided(self) -> bool:
        config = self.model.config
        return config.nonkey_affinity == "appearance" and config.two_sided

    @torch.inference_mode()
    def _run_segment(self) -> list[Detections]:
        from vidtag.models.preprocess import letterbox

        state = self.state
        frames = torch.stack(state.pending).to(self.device, non_blocking=True)
        state.source_shape = check_frame_shape(frames, state.source_shape)
        start, n = state.next_start, len(frames)
        state.pending, state.next_start = [], start + n

        x, box = letterbox(frames, self.options.imgsz, state.source_wh)
        if state.shots is None:
            state.shots = ShotBoundaries(self.model.config.cut_threshold, self.options.imgsz)
        shot_starts = state.shots.push(x, box)
        results: list[Detections] = []
        for a, b in zip([0] + shot_starts, shot_starts + [n]):
            if a == b:
                continue  # a cut before the segment's first frame
            if a in shot_starts:
                results.extend(self._flush_tail())
                state.memory = None  # another scene: nothing to carry over
            results.extend(self._run_piece(x[a:b], box, start + a))
        return results

    def _run_piece(self, x: Tensor, box, start: int) -> list[Detections]:
        """One shot's part of a segment (frames ``start ..``): its key frame, and
        the non-key frames that can be output now."""
        state, model = self.state, self.model
        n = len(x)
        key = n // 2
        state.key_frames.append(start + key)
        low = model.low_features(x)
        previous = state.memory
        state.memory, key_output = model.key_frame(low[key : key + 1], previous)
        results: list[Detections] = []
        if not self._two_sided:
            results = [None] * n
            results[key] = self.options.postprocess(key_output, box)[0]
            others = [i for i in range(n) if i != key]
            if others:
                for i, d in zip(others, self._nonkey(low[others], [state.memory], box, [start + i for i in others])):
                    results[i] = d
            return results
        # two-sided: the frames waiting since the shot's last key frame and this piece's frames before its key
        memories = [state.memory] if previous is None else [previous, state.memory]
        if state.tail is not None:
            tail, state.tail = state.tail, None
            waiting = state.emitted
            results.extend(self._nonkey(torch.cat((tail.low, low[:key])), memories, box,
                                        list(range(waiting, waiting + len(tail.low) + key))))
        elif key:
            results.extend(self._nonkey(low[:key], memories, box, list(range(start, start + key))))
        results.extend(self.options.postprocess(key_output, box))
        if key + 1 < n:
            state.tail = _Tail(low[key + 1 :], box)
        state.emitted = start + key + 1
        return results

    def _nonkey(self, low: Tensor, memories: list[PSLAMemory], box, frames: list[int]) -> list[Detections]:
        promoted: list[int] = []
        output = self.model.nonkey_output(low, memories, promoted)
        self.state.promoted.extend(frames[r] for r in promoted)
        return self.options.postprocess(output, box)

    @torch.inference_mode()
    def _flush_tail(self) -> list[Detections]:
        """The waiting frames with their one key frame (at a cut or the end of the video)."""
        state = self.state
        if state.tail is None:
            return []
        tail, state.tail = state.tail, None
        first = state.emitted
        state.emitted = first + len(tail.low)
        return self._nonkey(tail.low, [state.memory], tail.box, list(range(first, state.emitted)))
