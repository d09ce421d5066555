"""The MSDA op's export forms: the decomposed GridSample graph in stock ONNX Runtime equals our op
(fp32, 1e-5) with locations outside [0, 1], on the borders and on pixel centres and edges; known
answers pin mmcv's sampling (zeros outside, align_corners=0); the TensorRT form is one plugin node
with INT32 level constants that ``onnx.checker`` accepts."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from bev_deform.ops import (
    msda_implementation,
    multi_scale_deformable_attn,
    multi_scale_deformable_attn_reference,
)
from bev_deform.ops.export import TRT_PLUGIN_DOMAIN, TRT_PLUGIN_OP, active_export_implementation

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

pytestmark = pytest.mark.filterwarnings(
    "ignore::torch.jit.TracerWarning", "ignore:You are using the legacy TorchScript-based ONNX export"
)

SHAPES = [(5, 7), (3, 4), (1, 2)]  # (H_l, W_l); a 1-row level puts every sample near a border
B, M, D, Q, P = 2, 2, 3, 6, 4


class MSDA(torch.nn.Module):
    """The op as a graph of (value, locations, weights); level shapes are static, as in the model."""

    def forward(self, value, locations, weights):
        shapes = torch.tensor(SHAPES)
        sizes = shapes.prod(1)
        starts = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
        return multi_scale_deformable_attn(value, shapes, starts, locations, weights)


def export(form: str, args, opset: int = 17) -> bytes:
    f = io.BytesIO()
    with torch.no_grad(), msda_implementation(form):
        torch.onnx.export(MSDA(), args, f, dynamo=False, opset_version=opset, input_names=["v", "loc", "w"])
    return f.getvalue()


def run_ort(model: bytes, value, locations, weights) -> np.ndarray:
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return session.run(None, dict(v=value.numpy(), loc=locations.numpy(), w=weights.numpy()))[0]


def hard_locations(gen: torch.Generator) -> torch.Tensor:
    """(B, Q, M, L, P, 2): uniform in [-0.25, 1.25] (a quarter outside), and per level the exact
    borders 0 and 1, pixel centres (i + 0.5) / W and pixel edges i / W in chosen slots."""
    loc = torch.rand(B, Q, M, len(SHAPES), P, 2, generator=gen) * 1.5 - 0.25
    for level, (h, w) in enumerate(SHAPES):
        loc[0, 0, :, level, :, :] = torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
        loc[0, 1, :, level, :, 0] = (torch.arange(P) % w + 0.5) / w  # pixel centres
        loc[0, 1, :, level, :, 1] = (torch.arange(P) % h + 0.5) / h
        loc[1, 0, :, level, :, 0] = torch.arange(P) % (w + 1) / w  # pixel edges, 0 .. 1
        loc[1, 0, :, level, :, 1] = torch.arange(P) % (h + 1) / h
        loc[1, 1, :, level, :, :] = torch.tensor(
            [[-1.0 / w, 0.5], [1.0 + 1.0 / w, 0.5], [0.5, -0.5], [2.0, 2.0]]
        )
    return loc


@pytest.mark.parametrize("opset", [16, 17, 19])
def test_decomposed_graph_in_onnxruntime_equals_our_op(opset):
    gen = torch.Generator().manual_seed(0)
    value = torch.randn(B, sum(h * w for h, w in SHAPES), M, D, generator=gen)
    locations = hard_locations(gen)
    weights = torch.rand(B, Q, M, len(SHAPES), P, generator=gen)
    model = export("decomposed", (value, locations, weights), opset)

    graph = onnx.load_from_string(model).graph
    grid_samples = [n for n in graph.node if n.op_type == "GridSample"]
    assert len(grid_samples) == len(SHAPES)
    for node in grid_samples:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs == {"mode": b"bilinear", "padding_mode": b"zeros", "align_corners": 0}
    got = run_ort(model, value, locations, weights)
    expected = multi_scale_deformable_attn(value, *_levels(), locations, weights)  # the CPU kernel
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-5, rtol=0)
    oracle = multi_scale_deformable_attn_reference(
        value.double(), *_levels(), locations.double(), weights.double()
    )
    np.testing.assert_allclose(got, oracle.numpy(), atol=1e-5, rtol=0)
    assert np.abs(got).max() > 0.1  # the comparison is not between zeros


def test_decomposed_graph_known_answers_pixel_centre_and_corners():
    """One level of 3x4 pixels holding 1..12, one head, one point of weight 1: the centre of
    pixel (row 1, col 2) reads 7 exactly; the image corner (0, 0) reads a quarter of pixel (0, 0)
    (three of its four bilinear neighbours are outside, read as zeros); (1, 1) a quarter of the
    last pixel; a location half a pixel outside reads 0."""
    h, w = 3, 4
    value = torch.arange(1.0, h * w + 1).view(1, h * w, 1, 1)
    xy = [((2 + 0.5) / w, (1 + 0.5) / h), (0.0, 0.0), (1.0, 1.0), (-0.5 / w, 0.5), (0.5, 1.0 + 0.5 / h)]
    locations = torch.tensor(xy).view(1, len(xy), 1, 1, 1, 2)
    weights = torch.ones(1, len(xy), 1, 1, 1)

    class OneLevel(torch.nn.Module):
        def forward(self, value, locations, weights):
            return multi_scale_deformable_attn(
                value, torch.tensor([[h, w]]), torch.tensor([0]), locations, weights
            )

    f = io.BytesIO()
    with torch.no_grad(), msda_implementation("decomposed"):
        torch.onnx.export(
            OneLevel(),
            (value, locations, weights),
            f,
            dynamo=False,
            opset_version=17,
            input_names=["v", "loc", "w"],
        )
    got = run_ort(f.getvalue(), value, locations, weights).ravel()
    np.testing.assert_allclose(got, [7.0, 0.25 * 1, 0.25 * 12, 0.0, 0.0], atol=1e-6)


def test_trt_form_is_one_plugin_node_with_int32_level_constants_per_call():
    gen = torch.Generator().manual_seed(1)
    value = torch.randn(B, sum(h * w for h, w in SHAPES), M, D, generator=gen)
    locations, weights = hard_locations(gen), torch.rand(B, Q, M, len(SHAPES), P, generator=gen)
    model = onnx.load_from_string(export("trt", (value, locations, weights)))
    onnx.checker.check_model(model)

    plugins = [n for n in model.graph.node if n.op_type == TRT_PLUGIN_OP]
    assert len(plugins) == 1 and plugins[0].domain == TRT_PLUGIN_DOMAIN
    assert not [n for n in model.graph.node if n.op_type == "GridSample"]
    assert {o.domain: o.version for o in model.opset_import}[TRT_PLUGIN_DOMAIN] == 1
    node = plugins[0]
    assert node.input[0] == "v" and node.input[3] == "loc" and node.input[4] == "w"
    constants = {
        n.output[0]: onnx.numpy_helper.to_array(n.attribute[0].t)
        for n in model.graph.node
        if n.op_type == "Constant"
    }
    shapes, starts = constants[node.input[1]], constants[node.input[2]]
    assert shapes.dtype == np.int32 and shapes.tolist() == [list(s) for s in SHAPES]
    assert starts.dtype == np.int32 and starts.tolist() == [0, 35, 47]
    out_type = {v.name: v for v in model.graph.value_info}[node.output[0]].type.tensor_type
    assert [d.dim_value for d in out_type.shape.dim] == [B, Q, M, D]  # the plugin's layout

    with msda_implementation("trt"):  # eagerly it computes the reference, reshaped to (B, Q, M*D)
        eager = MSDA()(value, locations, weights)
    torch.testing.assert_close(
        eager, multi_scale_deformable_attn_reference(value, *_levels(), locations, weights)
    )


def test_msda_implementation_is_scoped_and_rejects_unknown_forms():
    assert active_export_implementation() is None
    with msda_implementation("trt"):
        with msda_implementation("decomposed"):
            assert active_export_implementation() is multi_scale_deformable_attn_reference
        assert active_export_implementation() is not multi_scale_deformable_attn_reference
    assert active_export_implementation() is None
    match = r"name must be one of \['decomposed', 'trt'\], got 'grid'"
    with pytest.raises(ValueError, match=match), msda_implementation("grid"):
        pass


def _levels() -> tuple[torch.Tensor, torch.Tensor]:
    shapes = torch.tensor(SHAPES)
    sizes = shapes.prod(1)
    return shapes, torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
