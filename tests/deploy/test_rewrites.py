"""featherface.deploy.rewrites: each exact rewrite equals the block it replaces (eager PyTorch, batch 1), and the driver."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from featherface.deploy.rewrites import (
    ComputedODConvBN,
    ComputedODConvSite,
    FusedSSH,
    MergedHeads,
    MergedODConvKernels,
    fuse_for_export,
)
from featherface.models.heads import DetectionHeads
from featherface.models.registry import create_model
from featherface.nn.odconv_attention import ODConvAttention
from featherface.nn.ssh import SSH, ODConvBN

ATOL = 1e-5


def perturbed(module: nn.Module, seed: int = 0) -> nn.Module:
    """Every parameter moved by noise (non-zero offsets, masks, ODConv heads and scale), BN statistics random,
    a temperature other than 1: nothing a rewrite forgets can hide behind an initial value."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=generator))
        for name, b in module.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.2 * torch.randn(b.shape, generator=generator))
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=generator))
            elif name.endswith("temperature"):
                b.fill_(1.7)
    return module.eval()


def x_of(shape: tuple[int, ...], seed: int = 1) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 3.0


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


@pytest.mark.parametrize("kernel_num", [1, 4])
def test_computed_site_equals_residual_odconv_block(kernel_num):
    torch.manual_seed(0)
    block = perturbed(ODConvAttention(12, kernel_num=kernel_num))
    computed = ComputedODConvSite(block).eval()
    for shape in [(1, 12, 9, 14), (1, 12, 5, 4)]:
        x = x_of(shape)
        with torch.no_grad():
            ref, got = block(x), computed(x)
        assert max_diff(ref, got) <= ATOL * float(ref.abs().max())
        # the residual matters: without the folded identity the output would be off by about |x|
        assert max_diff(ref, x) > 0.1


@pytest.mark.parametrize("kernel_num, slope", [(2, None), (4, 0.1), (1, 0.1)])
def test_computed_dense_odconv_bn_equals_block(kernel_num, slope):
    torch.manual_seed(0)
    block = perturbed(ODConvBN(8, 6, slope, kernel_num=kernel_num, reduction=1 / 4, min_channel=4))
    computed = ComputedODConvBN(block).eval()
    x = x_of((1, 8, 11, 7))
    with torch.no_grad():
        ref, got = block(x), computed(x)
    assert max_diff(ref, got) <= ATOL * float(ref.abs().max())


def test_computed_blocks_refuse_a_batch():
    block = perturbed(ODConvBN(8, 6, None, kernel_num=2, reduction=1 / 4, min_channel=4))
    with pytest.raises(ValueError, match="batch of 1"):
        ComputedODConvBN(block)(x_of((2, 8, 5, 5)))
    with pytest.raises(ValueError, match="batch of 1"):
        ComputedODConvSite(perturbed(ODConvAttention(8)))(x_of((3, 8, 5, 5)))


def odconv_bn(cin: int, cout: int, kernel_num: int, seed: int) -> ComputedODConvBN:
    torch.manual_seed(seed)
    block = ODConvBN(cin, cout, 0.1, kernel_num=kernel_num, reduction=1 / 4, min_channel=4)
    return ComputedODConvBN(perturbed(block, seed)).eval()


@pytest.mark.parametrize("kernel_num", [1, 2])
@pytest.mark.parametrize("couts", [(6,), (6, 3)])
def test_merged_odconv_kernels_equal_the_parts_kernels(kernel_num, couts):
    # float64: in float32 the two summation orders differ by up to ~2e-5 of the largest weight, and which order a
    # matrix product takes on the CPU varies from run to run
    parts = [odconv_bn(8, cout, kernel_num, seed).double() for seed, cout in enumerate(couts)]
    merged = MergedODConvKernels(parts).eval()
    x = x_of((1, 8, 9, 6)).double()
    with torch.no_grad():
        weight, bias = merged(x)
        kernels = [p.kernel(x) for p in parts]
    ref_weight = torch.cat([w for w, _ in kernels])
    assert weight.shape == ref_weight.shape == (sum(couts), 8, 3, 3)
    assert max_diff(weight, ref_weight) <= 1e-12 * float(ref_weight.abs().max())
    assert torch.equal(bias, torch.cat([b for _, b in kernels]))
    # the gates depend on the input: another sample, another kernel
    with torch.no_grad():
        assert max_diff(merged(x_of((1, 8, 9, 6), seed=5).double())[0], weight) > 1e-3


def test_merged_odconv_kernels_refuse_what_they_cannot_merge():
    assert not MergedODConvKernels.applies([odconv_bn(8, 6, 4, 0)])  # 4 candidate kernels: a real softmax
    assert not MergedODConvKernels.applies([odconv_bn(8, 6, 2, 0), odconv_bn(4, 6, 2, 1)])  # other input width
    assert not MergedODConvKernels.applies([odconv_bn(8, 6, 2, 0), odconv_bn(8, 6, 1, 1)])  # other kernel count
    with pytest.raises(ValueError, match="1 or 2 candidate kernels"):
        MergedODConvKernels([odconv_bn(8, 6, 4, 0)])
    with pytest.raises(ValueError, match="batch of 1"):
        MergedODConvKernels([odconv_bn(8, 6, 2, 0)])(x_of((2, 8, 5, 5)))


def test_merged_odconv_kernels_keep_the_dtype():
    parts = [odconv_bn(8, 6, 2, 0).double(), odconv_bn(8, 3, 2, 1).double()]
    weight, bias = MergedODConvKernels(parts)(x_of((1, 8, 5, 5)).double())
    assert weight.dtype == bias.dtype == torch.float64
    assert max_diff(weight, torch.cat([p.kernel(x_of((1, 8, 5, 5)).double())[0] for p in parts])) < 1e-12


@pytest.mark.parametrize("conv, kernel_num, merge", [("deformable", 0, True), ("odconv", 2, True),
                                                     ("odconv", 1, True), ("odconv", 2, False), ("plain", 0, True)])
def test_fused_ssh_equals_ssh(conv, kernel_num, merge):
    # float64, seeded: in float32 the rewrite's other summation order reaches ~1.5e-5 of the output's scale for some
    # random weights
    torch.manual_seed(0)
    kwargs = {"kernel_num": kernel_num, "reduction": 1 / 4, "min_channel": 4} if conv == "odconv" else None
    ssh = perturbed(SSH(16, conv=conv, conv_kwargs=kwargs)).double()
    fused = FusedSSH(ssh, batch1=True, merge_odconv=merge).eval()
    x = x_of((1, 16, 10, 13)).double()
    with torch.no_grad():
        ref, got = ssh(x), fused(x)
    assert got.dtype == torch.float64 and max_diff(ref, got) <= 1e-10 * float(ref.abs().max())
    assert fused.relu_in_branches and not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    if conv == "deformable":
        # three offset / mask convs instead of ten
        assert [m.weight.shape[0] for m in (fused.om_x, fused.om_r, fused.om_c)] == [54, 54, 27]
    else:
        # conv3x3 + conv5x5_reduce (on x) and conv5x5 + conv7x7_reduce (on r): one conv each
        assert fused.on_x.sizes == [8, 4] and fused.on_r.sizes == [4, 4] and fused.on_c1.sizes == [4]
        if conv == "odconv":  # each group's kernels computed together, unless asked not to
            assert all((g.merged is not None) == merge for g in (fused.on_x, fused.on_r, fused.on_c1))


def test_fused_ssh_with_a_batch_keeps_the_odconvs_separate():
    ssh = perturbed(SSH(16, conv="odconv", conv_kwargs={"kernel_num": 2, "reduction": 1 / 4, "min_channel": 4}))
    fused = FusedSSH(ssh, batch1=False).eval()
    assert all(isinstance(m, ODConvBN) for m in fused.on_x.parts)
    x = x_of((3, 16, 10, 13))
    with torch.no_grad():
        assert max_diff(ssh(x), fused(x)) <= ATOL * float(ssh(x).abs().max())


def test_channel_shuffle_moves_into_the_heads():
    """In a whole model the SSH no longer shuffles: the heads read the unshuffled channels, permuted weights."""
    torch.manual_seed(0)
    model = perturbed(create_model("featherface_v1", width=16, bifpn_repeats=1), seed=2)
    fused, _ = fuse_for_export(model)
    assert all(ssh.shuffle_groups == 1 for ssh in fused.context)
    box_rows = [0, 1, 2, 3, 16, 17, 18, 19]  # MergedHeads: anchor a's 4 box rows start at row 16 a
    w, v = model.heads.box[0].weight[:, :, 0, 0], fused.heads.levels[0].weight[box_rows, :, 0, 0]
    assert not torch.equal(w, v) and torch.equal(w.sort(dim=1).values, v.sort(dim=1).values)
    assert torch.equal(v[:, 1], w[:, 8])  # channel_shuffle(16, 2): output 8 is input 1
    # an SSH on its own keeps its shuffle
    assert FusedSSH(perturbed(SSH(16)), batch1=True).shuffle_groups == 2


@pytest.mark.parametrize("batch, shape", [(None, (2, 16, 7, 9)), (1, (1, 16, 7, 9))])
def test_merged_heads_equal_the_heads(batch, shape):
    heads = perturbed(DetectionHeads(16, num_levels=3, num_anchors=2), seed=3).eval()
    merged = MergedHeads(heads, batch=batch)
    assert len(merged.levels) == 3 and merged.levels[0].out_channels == 2 * 16
    features = [x_of((shape[0], 16, h, w), seed=h) for h, w in ((8, 10), (4, 5), (2, 3))]
    with torch.no_grad():
        for ref, got in zip(heads(features), merged(features)):
            assert ref.shape == got.shape and max_diff(ref, got) <= ATOL
    # anchor 1's class rows (rows 2, 3 of the class conv) are rows 16 + 4, 16 + 5 of the merged conv
    assert torch.equal(merged.levels[2].weight[20:22], heads.cls[2].weight[2:4])
    with pytest.raises(ValueError, match="3 levels got 2"):
        merged(features[:2])


def test_fused_ssh_deformable_offsets_matter():
    """The merged offset convs feed the right deformable conv: swapping two of them changes the output."""
    ssh = perturbed(SSH(16))
    fused = FusedSSH(ssh, batch1=True).eval()
    x = x_of((1, 16, 10, 13))
    with torch.no_grad():
        ref = fused(x)
        w = fused.om_x.weight.clone()
        fused.om_x.weight.copy_(torch.cat([w[27:], w[:27]]))
        assert max_diff(ref, fused(x)) > 1e-2


@pytest.mark.parametrize("name, counts", [
    ("featherface_odconv4", {"ssh": 3, "heads": 1, "deformable": 15, "odconv_dense": 0, "odconv_sites": 5}),
    ("featherface_odconv_ssh", {"ssh": 3, "heads": 1, "deformable": 0, "odconv_dense": 15, "odconv_sites": 0}),
    ("featherface_v1", {"ssh": 3, "heads": 1, "deformable": 15, "odconv_dense": 0, "odconv_sites": 0}),
])
def test_fuse_for_export_whole_models(name, counts):
    torch.manual_seed(0)
    model = perturbed(create_model(name, width=16, bifpn_repeats=1), seed=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fused, report = fuse_for_export(model)
    assert {k: v for k, v in report.to_dict().items() if k != "kept"} == counts and report.kept == []
    for x in (x_of((1, 3, 64, 96), seed=3), x_of((1, 3, 37, 51), seed=4)):
        with torch.no_grad():
            for ref, got in zip(model(x), fused(x)):
                assert max_diff(ref, got) <= ATOL * max(1.0, float(ref.abs().max()))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the caller's model is untouched


def test_fuse_for_export_with_a_batch_keeps_odconv():
    torch.manual_seed(0)
    model = perturbed(create_model("featherface_odconv4", width=16, bifpn_repeats=1), seed=2)
    fused, report = fuse_for_export(model, batch1=False)
    assert report.odconv_sites == [] and len(report.kept) == 5 and len(report.deformable) == 15
    x = x_of((3, 3, 40, 48), seed=5)
    with torch.no_grad():
        for ref, got in zip(model(x), fused(x)):
            assert max_diff(ref, got) <= ATOL * max(1.0, float(ref.abs().max()))
