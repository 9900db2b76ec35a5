"""ONNX symbolic of ``torchvision::deform_conv2d`` for the TorchScript-based exporter.

torchvision registers ONNX symbolics for its RoI / NMS operators but none for ``deform_conv2d``, so a
model with deformable convolutions (FeatherFace's SSH) cannot be exported as is. ONNX has had a
``DeformConv`` operator since opset 19 (https://onnx.ai/onnx/operators/onnx__DeformConv.html), and
onnxruntime implements it on the CPU. The two agree on every convention, so the mapping is one to one:

====================================  ============================================================
torchvision ``deform_conv2d``         ONNX ``DeformConv`` (opset 19)
====================================  ============================================================
input ``(N, C, H, W)``                ``X``
weight ``(oC, C / groups, kH, kW)``   ``W``
offset ``(N, og * kH * kW * 2, oH,    ``offset``, same layout: for offset group g and kernel tap
oW)``                                 t = i * kW + j, channel ``2 (g kH kW + t)`` is the row (y)
                                      offset and the next one the column (x) offset, in input pixels
mask ``(N, og * kH * kW, oH, oW)``    ``mask`` (only when ``use_mask``; DCNv1 leaves it out, ONNX
                                      then uses ones)
bias ``(oC,)``                        ``B``
stride_h, stride_w                    ``strides = [sh, sw]``
pad_h, pad_w                          ``pads = [ph, pw, ph, pw]`` (begin h, begin w, end h, end w)
dilation_h, dilation_w                ``dilations = [dh, dw]``
n_weight_grps                         ``group``
n_offset_grps                         ``offset_group``
kH, kW (from the weight shape)        ``kernel_shape``
====================================  ============================================================

Sampling outside the (zero-padded) input reads zeros in both, with bilinear interpolation.
``tests/deploy/test_export.py`` checks the mapping numerically against torchvision for strides, padding,
dilation, weight groups, offset groups and both the modulated and the plain variant.

Call :func:`register_deform_conv_symbolic` before ``torch.onnx.export(..., dynamo=False)``
(:func:`featherface.deploy.export.export_onnx` does).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch.onnx import symbolic_helper

__all__ = ["DEFORM_CONV_MIN_OPSET", "DEFORM_CONV_OP", "register_deform_conv_symbolic", "symbolic_deform_conv2d"]

logger = logging.getLogger(__name__)

#: First ONNX opset with ``DeformConv``.
DEFORM_CONV_MIN_OPSET = 19
#: The TorchScript operator name of torchvision's deformable convolution.
DEFORM_CONV_OP = "torchvision::deform_conv2d"


@symbolic_helper.parse_args("v", "v", "v", "v", "v", "i", "i", "i", "i", "i", "i", "i", "i", "b")
def symbolic_deform_conv2d(
    g: Any,
    input: Any,
    weight: Any,
    offset: Any,
    mask: Any,
    bias: Any,
    stride_h: int,
    stride_w: int,
    pad_h: int,
    pad_w: int,
    dilation_h: int,
    dilation_w: int,
    groups: int,
    offset_groups: int,
    use_mask: bool,
) -> Any:
    """``torchvision::deform_conv2d(input, weight, offset, mask, bias, sh, sw, ph, pw, dh, dw, groups,
    offset_groups, use_mask)`` -> ONNX ``DeformConv`` (see the module docstring for the mapping)."""
    sizes = symbolic_helper._get_tensor_sizes(weight)
    if sizes is None or len(sizes) != 4 or any(not isinstance(s, int) for s in sizes[-2:]):
        raise torch.onnx.errors.SymbolicValueError(
            f"deform_conv2d: the kernel size must be static for ONNX DeformConv, got weight sizes {sizes}", weight
        )
    kernel_h, kernel_w = sizes[-2:]
    inputs = [input, weight, offset, bias]
    if use_mask:
        inputs.append(mask)
    return g.op(
        "DeformConv",
        *inputs,
        dilations_i=[dilation_h, dilation_w],
        group_i=groups,
        kernel_shape_i=[kernel_h, kernel_w],
        offset_group_i=offset_groups,
        pads_i=[pad_h, pad_w, pad_h, pad_w],
        strides_i=[stride_h, stride_w],
    )


def register_deform_conv_symbolic() -> None:
    """Register :func:`symbolic_deform_conv2d` with the TorchScript-based ONNX exporter (opset >= 19).

    Idempotent. The registration is process-wide (the ``torch.onnx`` custom-symbolic registry) and stays
    in place: ``torch.onnx.unregister_custom_op_symbolic`` leaves an empty registry entry behind, after
    which exporting the op fails with an unrelated ``ValueError`` ("min() arg is an empty sequence",
    torch 2.14) instead of a clear unsupported-operator error, so removing it would be worse than keeping
    it. It only affects exports of ``torchvision::deform_conv2d`` at opset >= 19.
    """
    torch.onnx.register_custom_op_symbolic(DEFORM_CONV_OP, symbolic_deform_conv2d, DEFORM_CONV_MIN_OPSET)
    logger.debug("registered the ONNX symbolic of %s for opset >= %d", DEFORM_CONV_OP, DEFORM_CONV_MIN_OPSET)
