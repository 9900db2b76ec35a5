"""The FeatherFace model family: one configurable trunk, attention blocks at up to six sites.

Pipeline (see ``shared/DESIGN.md`` section 1)::

    x (B, 3, H, W)  BGR minus (104, 117, 123), float
      -> MobileNetV1-0.25 backbone        C3 (64, /8), C4 (128, /16), C5 (256, /32)
      -> attention at sites c3, c4, c5
      -> BiFPN (width C, R cells)         P3, P4, P5 (C channels)
      -> attention at sites p3, p4, p5
      -> deformable SSH + channel shuffle per level
      -> 1x1 heads, 2 anchors per location
      -> (loc (B, P, 4), logits (B, P, 2), landmarks (B, P, 10))

``P = 2 * sum_s ceil(H / s) * ceil(W / s)`` over s in (8, 16, 32); priors are ordered level by
level (P3, P4, P5), then row-major over (row, column, anchor). The outputs are raw: ``loc`` and
``landmarks`` are encoded offsets (variances 0.1 / 0.2, decoded elsewhere), ``logits`` are
pre-softmax class scores with column 1 = face.

Variants (:mod:`featherface.models.registry`): ``attention="none"`` (the trunk, 475,735 params at
C = 52, R = 3), ``"cbam"`` (488,664), ``"odconv"`` (ODConv attention of
:mod:`featherface.nn.odconv_attention`), ``"eca_sam"`` (the fork's ECA + spatial attention of
:mod:`featherface.nn.eca_sam`, 476,345).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import torch
from torch import nn

from featherface.inference.settings import DEFAULT_MIN_SIZES, DEFAULT_STEPS, MEAN_BGR, VARIANCES
from featherface.models.backbone import BACKBONE_CHANNELS, MobileNetV1Backbone
from featherface.models.heads import DetectionHeads
from featherface.nn.bifpn import BiFPN
from featherface.nn.cbam import CBAM
from featherface.nn.eca_sam import ECASAM
from featherface.nn.odconv_attention import ODConvAttention
from featherface.nn.ssh import SSH

__all__ = [
    "ATTENTION_KINDS",
    "ATTENTION_SITES",
    "FeatherFace",
    "FeatherFaceConfig",
    "build_attention",
    "feature_map_sizes",
]

#: Kinds of attention block.
ATTENTION_KINDS: tuple[str, ...] = ("none", "cbam", "odconv", "eca_sam")
#: Attention sites: after the backbone stages (c3, c4, c5) and after the BiFPN outputs (p3, p4, p5).
ATTENTION_SITES: tuple[str, ...] = ("c3", "c4", "c5", "p3", "p4", "p5")
#: The 3x3 convolution of the SSH context modules (:data:`featherface.nn.ssh.CONV_KINDS`).
CONTEXT_CONVS: tuple[str, ...] = ("deformable", "odconv", "plain")
#: Strides of the three detection levels.
STRIDES: tuple[int, int, int] = (8, 16, 32)


def _freeze(value: Any) -> Any:
    """Lists -> tuples and dicts -> sorted pair tuples, recursively (hashable config values)."""
    if isinstance(value, Mapping):
        return tuple((str(k), _freeze(v)) for k, v in sorted(value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


@dataclass(frozen=True)
class FeatherFaceConfig:
    """Architecture of one FeatherFace model (frozen, hashable, validated).

    Attributes:
        width: BiFPN / SSH / head channels C (positive, divisible by 4 for the SSH).
        bifpn_repeats: number of BiFPN cells R (>= 1).
        attention: ``"none"``, ``"cbam"``, ``"odconv"`` or ``"eca_sam"``.
        attention_sites: where attention blocks sit, a subset of :data:`ATTENTION_SITES`
            (stored in canonical order). Ignored when ``attention == "none"``.
        attention_kwargs: keyword arguments of the attention block, given as a dict or as
            (name, value) pairs; stored as sorted pairs. Read them with :attr:`attention_options`.
        attention_site_kwargs: per-site keyword arguments that replace those of ``attention_kwargs`` at that site,
            ``{site: {name: value}}`` (e.g. ``{"p3": {"kernel_num": 4}}``); stored as sorted pairs. Read them with
            :meth:`options_at`.
        context_conv: the 3x3 convolution of the SSH context modules, ``"deformable"`` (DCNv2, FeatherFace),
            ``"odconv"`` (:class:`~featherface.nn.ssh.ODConvBN`) or ``"plain"`` (a static 3x3 conv).
        context_kwargs: options of the ODConv context convs (``kernel_num``, ``reduction``, ``min_channel``), a
            dict or (name, value) pairs; stored as sorted pairs.
        min_sizes: per detection level (P3, P4, P5), the sides in input pixels of its two square priors.
        steps: per level, the stride in pixels of its feature map (the network's :data:`STRIDES`).
        variances: box coding variances ``(v0, v1)`` of the regression targets.
        mean_bgr: the BGR mean subtracted from a 0..255 image to make the network input (no scaling).

    The last four (anchors and input normalisation; defaults from :mod:`featherface.inference.settings`) are
    written by :meth:`to_dict` only when they differ from the defaults, so the configs of existing checkpoints and
    ONNX files stay as they were and load with the defaults.
    """

    width: int = 52
    bifpn_repeats: int = 3
    attention: str = "none"
    attention_sites: tuple[str, ...] = ATTENTION_SITES
    attention_kwargs: tuple[tuple[str, Any], ...] = field(default=())
    attention_site_kwargs: tuple[tuple[str, Any], ...] = field(default=())
    context_conv: str = "deformable"
    context_kwargs: tuple[tuple[str, Any], ...] = field(default=())
    min_sizes: tuple[tuple[int, ...], ...] = DEFAULT_MIN_SIZES
    steps: tuple[int, ...] = DEFAULT_STEPS
    variances: tuple[float, float] = VARIANCES
    mean_bgr: tuple[float, float, float] = MEAN_BGR

    def __post_init__(self) -> None:
        if isinstance(self.width, bool) or not isinstance(self.width, int) or self.width <= 0 or self.width % 4:
            raise ValueError(f"FeatherFaceConfig.width must be a positive integer divisible by 4, got {self.width!r}")
        if isinstance(self.bifpn_repeats, bool) or not isinstance(self.bifpn_repeats, int) or self.bifpn_repeats < 1:
            raise ValueError(f"FeatherFaceConfig.bifpn_repeats must be an integer >= 1, got {self.bifpn_repeats!r}")
        if self.attention not in ATTENTION_KINDS:
            raise ValueError(
                f"FeatherFaceConfig.attention: {self.attention!r} is not one of {list(ATTENTION_KINDS)}"
                f"{_suggest(str(self.attention), ATTENTION_KINDS)}"
            )
        sites = self.attention_sites
        if isinstance(sites, str):
            sites = (sites,)
        sites = tuple(sites)
        for site in sites:
            if site not in ATTENTION_SITES:
                raise ValueError(
                    f"FeatherFaceConfig.attention_sites: unknown site {site!r}{_suggest(str(site), ATTENTION_SITES)}; "
                    f"known sites: {list(ATTENTION_SITES)}"
                )
        if len(set(sites)) != len(sites):
            raise ValueError(f"FeatherFaceConfig.attention_sites: duplicate sites in {list(sites)}")
        object.__setattr__(self, "attention_sites", tuple(s for s in ATTENTION_SITES if s in sites))
        kwargs = self.attention_kwargs
        if isinstance(kwargs, Mapping):
            pairs = list(kwargs.items())
        else:
            try:
                pairs = [tuple(p) for p in kwargs]
            except TypeError:
                raise ValueError(
                    f"FeatherFaceConfig.attention_kwargs must be a dict or (name, value) pairs, got {kwargs!r}"
                ) from None
            if any(len(p) != 2 for p in pairs):
                raise ValueError(f"FeatherFaceConfig.attention_kwargs must be (name, value) pairs, got {kwargs!r}")
        names = [k for k, _ in pairs]
        if any(not isinstance(k, str) for k in names) or len(set(names)) != len(names):
            raise ValueError(f"FeatherFaceConfig.attention_kwargs: names must be distinct strings, got {names}")
        object.__setattr__(self, "attention_kwargs", tuple((k, _freeze(v)) for k, v in sorted(pairs)))
        per_site = self.attention_site_kwargs
        per_site = dict(per_site) if not isinstance(per_site, Mapping) else per_site
        for site, site_kwargs in per_site.items():
            if site not in self.attention_sites:
                raise ValueError(
                    f"FeatherFaceConfig.attention_site_kwargs: {site!r} is not one of the attention sites "
                    f"{list(self.attention_sites)}"
                )
            site_pairs = dict(site_kwargs)
            if any(not isinstance(k, str) for k in site_pairs):
                raise ValueError(f"FeatherFaceConfig.attention_site_kwargs[{site!r}]: names must be strings")
        object.__setattr__(self, "attention_site_kwargs", _freeze({s: dict(v) for s, v in per_site.items()}))
        if self.context_conv not in CONTEXT_CONVS:
            raise ValueError(f"FeatherFaceConfig.context_conv: {self.context_conv!r} is not one of "
                             f"{list(CONTEXT_CONVS)}{_suggest(str(self.context_conv), CONTEXT_CONVS)}")
        context = dict(self.context_kwargs)
        if context and self.context_conv != "odconv":
            raise ValueError(f"FeatherFaceConfig.context_kwargs {sorted(context)} need context_conv='odconv'")
        object.__setattr__(self, "context_kwargs", _freeze(context))
        self._check_anchors()

    def _check_anchors(self) -> None:
        """Validate the anchor and normalisation fields and store them as tuples (YAML / JSON give lists)."""
        try:
            min_sizes = tuple(tuple(level) for level in self.min_sizes)
            steps, variances, mean = tuple(self.steps), tuple(self.variances), tuple(self.mean_bgr)
        except TypeError:
            raise ValueError(f"FeatherFaceConfig: min_sizes, steps, variances and mean_bgr must be sequences, got "
                             f"{self.min_sizes!r}, {self.steps!r}, {self.variances!r}, {self.mean_bgr!r}") from None
        if steps != STRIDES:
            raise ValueError(f"FeatherFaceConfig.steps must be the network's strides {list(STRIDES)}, got {list(steps)}")
        if len(min_sizes) != len(STRIDES) or any(len(m) != 2 or min(m) <= 0 for m in min_sizes):
            raise ValueError(f"FeatherFaceConfig.min_sizes must give two positive sizes for each of the "
                             f"{len(STRIDES)} levels, got {[list(m) for m in min_sizes]}")
        if len(variances) != 2 or min(variances) <= 0:
            raise ValueError(f"FeatherFaceConfig.variances must be two positive numbers, got {list(variances)}")
        if len(mean) != 3:
            raise ValueError(f"FeatherFaceConfig.mean_bgr must be three numbers (B, G, R), got {list(mean)}")
        object.__setattr__(self, "min_sizes", min_sizes)
        object.__setattr__(self, "steps", steps)
        object.__setattr__(self, "variances", variances)
        object.__setattr__(self, "mean_bgr", mean)

    @property
    def attention_options(self) -> dict[str, Any]:
        """``attention_kwargs`` as a dict."""
        return dict(self.attention_kwargs)

    def options_at(self, site: str) -> dict[str, Any]:
        """The attention block's keyword arguments at ``site``: ``attention_kwargs`` updated with the site's own."""
        per_site = {s: dict(v) for s, v in self.attention_site_kwargs}
        return {**self.attention_options, **per_site.get(site, {})}

    @property
    def active_sites(self) -> tuple[str, ...]:
        """Sites that hold an attention block (none when ``attention == "none"``)."""
        return () if self.attention == "none" else self.attention_sites

    def to_dict(self) -> dict[str, Any]:
        """Plain (YAML / JSON / ``torch.load(weights_only=True)``-safe) form; inverse of :meth:`from_dict`."""
        return {
            "width": self.width,
            "bifpn_repeats": self.bifpn_repeats,
            "attention": self.attention,
            "attention_sites": list(self.attention_sites),
            "attention_kwargs": {k: _thaw(v) for k, v in self.attention_kwargs},
            **({"attention_site_kwargs": {s: {k: _thaw(v) for k, v in kw} for s, kw in self.attention_site_kwargs}}
               if self.attention_site_kwargs else {}),
            **({"context_conv": self.context_conv, "context_kwargs": {k: _thaw(v) for k, v in self.context_kwargs}}
               if self.context_conv != "deformable" else {}),
            **{name: _thaw(getattr(self, name)) for name, default in _ANCHOR_DEFAULTS.items()
               if getattr(self, name) != default},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "FeatherFaceConfig":
        """Build from a mapping, rejecting unknown keys (with a suggestion)."""
        check_config_keys(data.keys())
        return cls(**dict(data))


#: The anchor / normalisation fields and their defaults (:meth:`FeatherFaceConfig.to_dict` writes them when they
#: differ).
_ANCHOR_DEFAULTS: dict[str, Any] = {
    "min_sizes": DEFAULT_MIN_SIZES, "steps": DEFAULT_STEPS, "variances": VARIANCES, "mean_bgr": MEAN_BGR,
}


def _thaw(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


def _suggest(key: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_config_keys(keys: Iterable[str]) -> None:
    """Raise ``ValueError`` naming the first key that is not a :class:`FeatherFaceConfig` field."""
    fields = [f.name for f in dataclasses.fields(FeatherFaceConfig)]
    for key in keys:
        if key not in fields:
            raise ValueError(f"unknown FeatherFace option {key!r}{_suggest(str(key), fields)}; known options: {fields}")


def build_attention(kind: str, channels: int, **kwargs: Any) -> nn.Module:
    """One attention block, (B, C, H, W) -> (B, C, H, W).

    Args:
        kind: ``"none"`` (identity), ``"cbam"`` (:class:`featherface.nn.cbam.CBAM`) or ``"odconv"``
            (:class:`featherface.nn.odconv_attention.ODConvAttention`) or ``"eca_sam"``
            (:class:`featherface.nn.eca_sam.ECASAM`, the fork's ECA + spatial attention).
        channels: C.
        **kwargs: forwarded to the block's constructor.
    """
    if kind == "none":
        return nn.Identity()
    if kind == "cbam":
        return CBAM(channels, **kwargs)
    if kind == "odconv":
        return ODConvAttention(channels, **kwargs)
    if kind == "eca_sam":
        return ECASAM(channels, **kwargs)
    raise ValueError(
        f"unknown attention kind {kind!r}{_suggest(kind, ATTENTION_KINDS)}; known: {list(ATTENTION_KINDS)}"
    )


def feature_map_sizes(height: int, width: int) -> list[tuple[int, int]]:
    """(rows, columns) of the P3, P4, P5 maps for an H x W input: ``(ceil(H / s), ceil(W / s))``."""
    return [(math.ceil(height / s), math.ceil(width / s)) for s in STRIDES]


class FeatherFace(nn.Module):
    """FeatherFace detector (raw outputs only; no softmax, no decoding).

    Args:
        config: the architecture (default: the attention-free trunk at C = 52, R = 3).

    Submodules:
        backbone (:class:`MobileNetV1Backbone`), attention (``nn.ModuleDict`` over the six sites,
        ``nn.Identity`` where no block sits), neck (:class:`BiFPN`), context (three :class:`SSH`),
        heads (:class:`DetectionHeads`).

    Forward:
        x: (B, 3, H, W) float, BGR minus mean (104, 117, 123), any H, W >= 1.
        returns ``(loc (B, P, 4), logits (B, P, 2), landmarks (B, P, 10))``.
    """

    def __init__(self, config: FeatherFaceConfig | None = None) -> None:
        super().__init__()
        config = FeatherFaceConfig() if config is None else config
        if not isinstance(config, FeatherFaceConfig):
            raise TypeError(f"FeatherFace expects a FeatherFaceConfig, got {type(config).__name__}")
        self.config = config
        c = config.width
        self.backbone = MobileNetV1Backbone()
        site_channels = dict(zip(ATTENTION_SITES, (*BACKBONE_CHANNELS, c, c, c)))
        self.attention = nn.ModuleDict(
            {
                site: build_attention(config.attention, site_channels[site], **config.options_at(site))
                if site in config.active_sites
                else nn.Identity()
                for site in ATTENTION_SITES
            }
        )
        self.neck = BiFPN(BACKBONE_CHANNELS, c, config.bifpn_repeats)
        # RetinaFace's rule: LeakyReLU(0.1) in the SSH when C <= 64, ReLU otherwise.
        slope = 0.1 if c <= 64 else 0.0
        self.context = nn.ModuleList([
            SSH(c, negative_slope=slope, conv=config.context_conv, conv_kwargs=dict(config.context_kwargs))
            for _ in STRIDES
        ])
        self.heads = DetectionHeads(c, num_levels=len(STRIDES), num_anchors=2)

    @staticmethod
    def check_input(x: torch.Tensor) -> None:
        """Raise ``ValueError`` / ``TypeError`` unless ``x`` is a (B, 3, H, W) floating tensor."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"FeatherFace expects a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4:
            raise ValueError(f"FeatherFace expects a 4-D (B, 3, H, W) input, got shape {tuple(x.shape)}")
        if x.shape[1] != 3:
            raise ValueError(
                f"FeatherFace expects 3 input channels (BGR), got {x.shape[1]} in shape {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise TypeError(f"FeatherFace expects a floating-point input (BGR minus mean), got {x.dtype}")

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Intermediate maps: ``c3..c5`` (after their attention), ``p3..p5`` (after theirs), ``s3..s5`` (SSH)."""
        self.check_input(x)
        c3, c4, c5 = self.backbone(x)
        c3 = self.attention["c3"](c3)
        c4 = self.attention["c4"](c4)
        c5 = self.attention["c5"](c5)
        p3, p4, p5 = self.neck((c3, c4, c5))
        p3 = self.attention["p3"](p3)
        p4 = self.attention["p4"](p4)
        p5 = self.attention["p5"](p5)
        s3, s4, s5 = (ssh(p) for ssh, p in zip(self.context, (p3, p4, p5)))
        return {"c3": c3, "c4": c4, "c5": c5, "p3": p3, "p4": p4, "p5": p5, "s3": s3, "s4": s4, "s5": s5}

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f = self.forward_features(x)
        return self.heads([f["s3"], f["s4"], f["s5"]])
