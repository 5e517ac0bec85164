"""Exporting torch models whose pooling layers go through our lowerings.

Regression tests for the silent failures of a plain ``torch.onnx.export``: each naive
export below loads and runs, and only the parity gate shows it is wrong; the same layer
exported through ``export_module`` passes the gate.
"""

import warnings

import onnx
import pytest
import torch
from torch import nn

from export.parity import check_artifact
from export.runtime.errors import ExportError, LoweringError
from export.runtime.lowering import Prefer
from export.runtime.sessions import uses_custom_ops
from export.torch_export import export_module, swap_pools, torch_reference
from models.pooling import create_pool

TRACED = (2, 3, 16, 16)
SHAPES = [TRACED, (1, 3, 17, 23), (3, 3, 9, 12)]
ALL_DYNAMIC = {0: "N", 2: "H", 3: "W"}
GATE_AXES = {"x": [0, 2, 3]}


def naive_export(model: nn.Module, dynamic: bool = True) -> onnx.ModelProto:
    """What a user gets from torch.onnx.export (dynamo) with dynamic N, H, W requested."""
    shapes = None
    if dynamic:
        dims = {axis: torch.export.Dim(name, min=8) for axis, name in ALL_DYNAMIC.items()}
        dims[0] = torch.export.Dim("N", min=1)
        shapes = (dims,)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model,
            (torch.randn(TRACED),),
            dynamo=True,
            dynamic_shapes=shapes,
            input_names=["x"],
            verbose=False,
        )
    assert program is not None
    program.model.ir_version = 10
    return program.model_proto


def test_divisor_override_dropped_by_torch_export_is_kept_by_ours() -> None:
    layer = nn.AvgPool2d(3, stride=2, padding=1, divisor_override=4).eval()
    with pytest.raises(ExportError, match=r"max \|onnx - torch\|"):
        check_artifact(naive_export(layer, dynamic=False), torch_reference(layer), [TRACED] * 3, {})
    ours = create_pool("avg", kernel_size=3, stride=2, padding=1, divisor_override=4).eval()
    result = export_module(ours, torch.randn(TRACED), ALL_DYNAMIC)
    assert [(n.op, n.kind) for n in result.lowered] == [("avg", "decomposition")]
    report = check_artifact(result.model, torch_reference(layer), SHAPES, GATE_AXES, TRACED)
    assert report.max_abs_error < 1e-5


class SizeKernelMAC(nn.Module):
    """MAC written as cirtorch does: a max pool whose kernel is the input's own size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.max_pool2d(x, (x.size(-2), x.size(-1)))


def test_dynamic_dims_frozen_by_torch_export_stay_symbolic_in_ours() -> None:
    """torch.onnx.export quietly pins H and W of a size-kernel MAC to the traced size;
    the library's global_max exported through ours keeps them symbolic and matches torch."""
    naive = naive_export(SizeKernelMAC().eval())
    with pytest.raises(ExportError, match="declared dynamic but the graph fixes it to 16"):
        check_artifact(naive, torch_reference(SizeKernelMAC()), SHAPES, GATE_AXES, TRACED)
    layer = create_pool("global_max").eval()
    result = export_module(layer, torch.randn(TRACED), ALL_DYNAMIC)
    dims = result.model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["N", 3, "H", "W"]
    check_artifact(result.model, torch_reference(SizeKernelMAC()), SHAPES, GATE_AXES, TRACED)


class SmallNet(nn.Module):
    """conv -> median -> avg(divisor_override) -> max, the pooling layers from the library."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.median = create_pool("median", kernel_size=3, stride=1, padding=1)
        self.avg = create_pool("avg", kernel_size=2, stride=2, ceil_mode=True, divisor_override=3)
        self.max = create_pool("max", kernel_size=2, stride=1, padding=(0, 1, 0, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.max(self.avg(self.median(self.conv(x))))
        return out


@pytest.mark.parametrize("prefer", ["standard", "custom"])
def test_model_exports_through_either_lowering_preference(prefer: Prefer) -> None:
    torch.manual_seed(0)
    net = SmallNet().eval()
    result = export_module(net, torch.randn(TRACED), ALL_DYNAMIC, prefer=prefer)
    median_kind = "custom" if prefer == "custom" else "decomposition"
    assert [(n.op, n.kind) for n in result.lowered] == [
        ("median", median_kind),
        ("avg", "decomposition"),
        ("max", "native"),
    ]
    assert uses_custom_ops(result.model) == (prefer == "custom")
    assert not any(n.domain.startswith("poolserve") for n in result.model.graph.node)
    check_artifact(result.model, torch_reference(net), SHAPES, GATE_AXES, TRACED)


def test_adaptive_avg_that_torch_export_gets_wrong_off_the_traced_size_is_right_in_ours() -> None:
    """dynamo's adaptive_avg_pool2d decomposition gathers with indices computed for the
    traced H and W: other sizes give wrong numbers or a GatherND error."""
    layer = nn.AdaptiveAvgPool2d(3).eval()
    with pytest.raises(ExportError, match=r"input shape \(1, 3, 17, 23\)"):
        check_artifact(naive_export(layer), torch_reference(layer), SHAPES, GATE_AXES, TRACED)
    ours = create_pool("adaptive_avg", output_size=3)
    result = export_module(ours, torch.randn(TRACED), ALL_DYNAMIC)
    check_artifact(result.model, torch_reference(layer), SHAPES, GATE_AXES, TRACED)


@pytest.mark.parametrize("prefer", ["standard", "custom"])
def test_non_divisible_adaptive_max_that_torch_cannot_export_exports_in_ours(
    prefer: Prefer,
) -> None:
    layer = nn.AdaptiveMaxPool2d((3, 5)).eval()
    with pytest.raises(Exception, match="adaptive_max_pool2d"):
        naive_export(layer, dynamic=False)
    ours = create_pool("adaptive_max", output_size=(3, 5))
    result = export_module(ours, torch.randn(TRACED), ALL_DYNAMIC, prefer=prefer)
    assert [n.kind for n in result.lowered] == ["custom" if prefer == "custom" else "decomposition"]
    check_artifact(result.model, torch_reference(layer), SHAPES, GATE_AXES, TRACED)


def test_only_parameter_free_pooling_layers_are_swapped() -> None:
    """GeM's learned p lives in the module, not the schema, so torch exports that layer."""
    net = nn.Sequential(create_pool("max", kernel_size=2), create_pool("gem", p=3.0), nn.Flatten())
    swapped = swap_pools(net)
    assert [type(m).__name__ for m in swapped.children()] == ["LoweredPool", "GeM", "Flatten"]
    assert type(net[0]).__name__ == "MaxPool"  # the original is left alone
    with pytest.raises(LoweringError, match="return_indices"):
        swap_pools(create_pool("max", kernel_size=2, return_indices=True))
