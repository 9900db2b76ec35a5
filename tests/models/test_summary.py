"""Tests of featherface.models.summary: parameter table, MAC counting, output shapes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from featherface.models.featherface import FeatherFace, FeatherFaceConfig
from featherface.models.summary import count_macs, output_shapes, parameter_table, summarize
from featherface.nn.ssh import ModulatedDeformConv2d


class _Custom(nn.Module):
    """A module doing work outside child modules, reported through the extra_macs protocol."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.w

    def extra_macs(self, input_shape: tuple[int, ...]) -> int:
        return 7 * input_shape[2] * input_shape[3]


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.dw = nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False)
        self.deform = ModulatedDeformConv2d(4, 6)
        self.custom = _Custom()
        self.fc = nn.Linear(6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.custom(self.deform(self.dw(self.conv(x))))
        return self.fc(y.mean((2, 3)))


def test_count_macs_by_hand() -> None:
    total, rows, by_kind = count_macs(_Tiny(), (8, 10), depth=1)
    positions = 4 * 5  # stride-2 output of an 8 x 10 input
    conv = 4 * 3 * 9 * positions
    dw = 4 * 1 * 9 * positions
    offset_mask = (18 + 9) * 4 * 9 * positions
    deform = positions * 4 * 9 * (5 + 6)
    custom = 7 * positions
    fc = 6 * 5
    assert by_kind == {
        "Conv2d": conv + dw + offset_mask, "ModulatedDeformConv2d": deform, "_Custom": custom, "Linear": fc
    }
    assert total == conv + dw + offset_mask + deform + custom + fc
    assert [(r.name, r.macs) for r in rows] == [
        ("conv", conv), ("dw", dw), ("deform", offset_mask + deform), ("custom", custom), ("fc", fc)
    ]


def test_parameter_table_featherface() -> None:
    model = FeatherFace(FeatherFaceConfig(attention="cbam"))
    rows = {r.name: r for r in parameter_table(model, depth=1)}
    assert rows["backbone"].params == 213_072
    assert rows["neck"].params == 84_010
    assert rows["context"].params == 3 * 57_855
    assert rows["heads"].params == 3 * 53 * 32
    assert rows["attention"].params == 488_664 - 475_735
    assert sum(r.params for r in rows.values()) == 488_664
    assert {r.name: r.params for r in parameter_table(model, depth=3)}["neck.cells.1"] == 4 * 3_328 + 10
    deep = {r.name: r for r in parameter_table(model, depth=4)}
    # The fusion weights are owned by the cell itself: an "own" row next to its children's rows.
    assert deep["neck.cells.1"].own_only and deep["neck.cells.1"].params == 10
    assert deep["neck.cells.1"].kind == "BiFPNCell"
    assert deep["neck.cells.1.sep_p4_td"].params == 3_328 and not deep["neck.cells.1.sep_p4_td"].own_only


def test_featherface_macs_and_summary() -> None:
    model = FeatherFace(FeatherFaceConfig())
    summary = summarize(model, (64, 96), depth=1)
    rows = {r.name: r.macs for r in summary.mac_table}
    assert summary.total_params == 475_735
    assert summary.total_macs == sum(rows.values())
    # Stem by hand: 8 x 3 x 3 x 3 per position, 32 x 48 positions.
    stem = count_macs(model.backbone.stem, (64, 96))[0]
    assert stem == 8 * 27 * 32 * 48
    # Heads by hand: 52 inputs x (4 + 8 + 20) outputs per position over (8x12 + 4x6 + 2x3) positions.
    assert rows["heads"] == 52 * 32 * (96 + 24 + 6)
    assert summary.output_shapes["loc"] == (1, 2 * (96 + 24 + 6), 4)
    assert summary.output_shapes["c5"] == (1, 256, 2, 3)
    assert model.training  # mode restored


def test_output_shapes_odd_input() -> None:
    shapes = output_shapes(FeatherFace(FeatherFaceConfig(width=8, bifpn_repeats=1)), (250, 333))
    assert shapes["p3"] == (1, 8, 32, 42) and shapes["p5"] == (1, 8, 8, 11)
    assert shapes["logits"] == (1, 3536, 2)


def test_odconv_macs_by_hand() -> None:
    odconv = pytest.importorskip("featherface.nn.odconv")
    conv = odconv.ODConv2d(8, 6, 3, padding=1, reduction=0.25, kernel_num=4, min_channel=2)
    total, _, by_kind = count_macs(nn.Sequential(conv), (5, 7), in_channels=8)
    hidden = conv.attention.fc.out_channels
    kernel = 6 * 8 * 9
    expected = 8 * hidden + hidden * (8 + 6 + 9 + 4) + 4 * kernel + 3 * kernel + kernel * 5 * 7
    assert total == by_kind["ODConv2d"] == expected


def test_eca_sam_macs_by_hand() -> None:
    model = FeatherFace(FeatherFaceConfig(attention="eca_sam"))
    _, rows, by_kind = count_macs(model, (64, 96), depth=2)
    macs = {r.name: r.macs for r in rows}
    # ECA: C * k (the 1-D conv across channels); spatial gate: 2 * 7 * 7 per position of the map.
    assert by_kind["Conv1d"] == 64 * 3 + 128 * 5 + 256 * 5 + 3 * 52 * 3
    assert macs["attention.c4"] == 128 * 5 + 98 * 4 * 6
    assert macs["attention.p3"] == 52 * 3 + 98 * 8 * 12
