"""Named FeatherFace variants: ``create_model(name, **overrides)``.

==========================  ==========================================================  ===========
name                        architecture                                                parameters
==========================  ==========================================================  ===========
``featherface_none``        trunk only, C = 52, R = 3                                   475,735
``featherface_cbam``        CBAM (r = 16) at the six sites, C = 52, R = 3 (the paper's)  488,664
``featherface_eca_sam``     ECA + spatial attention at the six sites, C = 52, R = 3      476,345
                            (the fork's ``featherface_eca_cbam_fork.pth``; :mod:`featherface.nn.eca_sam`)
``featherface_odconv``      ODConv attention at ``RECOMMENDED_SITES`` with               < 490,000
                            ``RECOMMENDED_KWARGS`` (:mod:`featherface.nn.odconv_attention`)
``featherface_odconv4``     ODConv attention at c3, c4 (1 kernel) and p3, p4, p5 (4 kernels:  486,884
                            kernel attention), no c5 block (docs/odconv_design.md)
``featherface_v1``          trunk only, C = 56, R = 2 (the fork's "V1" checkpoint)      489,015
``featherface_odconv_ssh``  V1's trunk (C = 56, R = 2) with ODConv 2x (official            478,539
                            attention defaults) in place of every deformable SSH conv;
                            no attention blocks at the six sites (docs/odconv_design.md)
``featherface_plain_ssh``   the same with plain 3x3 convs in the SSH (its control arm)  376,344
==========================  ==========================================================  ===========

Overrides are :class:`~featherface.models.featherface.FeatherFaceConfig` fields, validated by name
(unknown names raise with a suggestion) and by value (the config's own checks).
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any, Callable

from featherface.models.featherface import FeatherFace, FeatherFaceConfig, check_config_keys
from featherface.nn.odconv_attention import RECOMMENDED_KWARGS, RECOMMENDED_SITES

__all__ = ["create_model", "list_models", "model_config"]


def _none() -> FeatherFaceConfig:
    return FeatherFaceConfig(width=52, bifpn_repeats=3, attention="none")


def _cbam() -> FeatherFaceConfig:
    return FeatherFaceConfig(width=52, bifpn_repeats=3, attention="cbam")


def _eca_sam() -> FeatherFaceConfig:
    return FeatherFaceConfig(width=52, bifpn_repeats=3, attention="eca_sam")


def _odconv() -> FeatherFaceConfig:
    return FeatherFaceConfig(
        width=52,
        bifpn_repeats=3,
        attention="odconv",
        attention_sites=tuple(RECOMMENDED_SITES),
        attention_kwargs=dict(RECOMMENDED_KWARGS),
    )


def _odconv4() -> FeatherFaceConfig:
    return FeatherFaceConfig(
        width=52,
        bifpn_repeats=3,
        attention="odconv",
        attention_sites=("c3", "c4", "p3", "p4", "p5"),
        attention_kwargs=dict(RECOMMENDED_KWARGS),
        attention_site_kwargs={site: {"kernel_num": 4} for site in ("p3", "p4", "p5")},
    )


def _v1() -> FeatherFaceConfig:
    return FeatherFaceConfig(width=56, bifpn_repeats=2, attention="none")


def _plain_ssh() -> FeatherFaceConfig:
    return FeatherFaceConfig(width=56, bifpn_repeats=2, attention="none", context_conv="plain")


def _odconv_ssh() -> FeatherFaceConfig:
    return FeatherFaceConfig(width=56, bifpn_repeats=2, attention="none", context_conv="odconv",
                             context_kwargs={"kernel_num": 2, "reduction": 1 / 16, "min_channel": 16})


_MODELS: dict[str, Callable[[], FeatherFaceConfig]] = {
    "featherface_none": _none,
    "featherface_cbam": _cbam,
    "featherface_eca_sam": _eca_sam,
    "featherface_odconv": _odconv,
    "featherface_odconv4": _odconv4,
    "featherface_v1": _v1,
    "featherface_odconv_ssh": _odconv_ssh,
    "featherface_plain_ssh": _plain_ssh,
}


def list_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_MODELS)


def model_config(name: str, **overrides: Any) -> FeatherFaceConfig:
    """The resolved config of a registered model with ``overrides`` applied.

    Raises:
        KeyError: unknown model name (with a suggestion).
        ValueError: unknown override name (with a suggestion) or invalid value.
    """
    if name not in _MODELS:
        close = difflib.get_close_matches(name, list(_MODELS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise KeyError(f"unknown model {name!r}{hint}; available: {list_models()}")
    check_config_keys(overrides)
    return dataclasses.replace(_MODELS[name](), **overrides)


def create_model(name: str, **overrides: Any) -> FeatherFace:
    """Build a registered FeatherFace variant (randomly initialised; load weights separately).

    Example:
        ``create_model("featherface_cbam")``, ``create_model("featherface_none", width=56, bifpn_repeats=2)``.
    """
    return FeatherFace(model_config(name, **overrides))
