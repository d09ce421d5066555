"""Multi-scale deformable attention: the CPU kernel, the gather fallback and the reference against
mmcv's ``multi_scale_deformable_attn_pytorch`` (the oracle), gradients, dtypes, input errors,
and mmcv's CUDA op behind the dispatcher (marked ``cuda``)."""

import sys

import pytest
import torch
from mmcv.ops.multi_scale_deform_attn import multi_scale_deformable_attn_pytorch as mmcv_msda

from bev_deform.ops import (
    MSDAFunctionCPU,
    cpu_extension,
    cuda_im2col_step,
    multi_scale_deformable_attn,
    multi_scale_deformable_attn_gather,
    multi_scale_deformable_attn_reference,
)
from bev_deform.ops import msda as msda_module

OURS = {
    "dispatcher": multi_scale_deformable_attn,
    "gather": multi_scale_deformable_attn_gather,
    "reference": multi_scale_deformable_attn_reference,
}

# name -> (batch, level shapes, queries, heads, channels, points, location range)
CASES = {
    "non_square_levels": (2, [(6, 4), (3, 5), (2, 7)], 7, 3, 30, 3, (0.0, 1.0)),
    "single_level_71_channels": (1, [(5, 9)], 6, 2, 71, 4, (0.0, 1.0)),
    "four_levels_8_heads": (2, [(12, 20), (6, 10), (3, 5), (2, 3)], 9, 8, 16, 4, (0.0, 1.0)),
    "outside_unit_square": (2, [(4, 6), (3, 3)], 10, 2, 5, 3, (-0.4, 1.4)),
    # the kernel reads a level in place when few samples fall on it, else from a contiguous copy
    "large_level_read_in_place": (2, [(40, 30), (2, 3)], 3, 2, 8, 2, (0, 1)),
    # one head: its rows are contiguous and read in place however many samples fall on a level
    "one_head_many_samples": (2, [(6, 8), (3, 4)], 40, 1, 12, 4, (-0.1, 1.1)),
}


def make_inputs(batch, shapes, queries, heads, channels, points, loc_range, dtype=torch.float64, seed=0):
    """value (B, S, M, D), spatial_shapes (L, 2), level_start_index (L,),
    sampling_locations (B, Q, M, L, P, 2), attention_weights (B, Q, M, L, P)."""
    gen = torch.Generator().manual_seed(seed)
    spatial_shapes = torch.tensor(shapes, dtype=torch.long)
    sizes = spatial_shapes.prod(1)
    level_start_index = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    levels = len(shapes)
    value = torch.randn(batch, int(sizes.sum()), heads, channels, generator=gen, dtype=dtype)
    low, high = loc_range
    locations = low + (high - low) * torch.rand(
        batch, queries, heads, levels, points, 2, generator=gen, dtype=dtype
    )
    weights = torch.rand(batch, queries, heads, levels, points, generator=gen, dtype=dtype)
    return value, spatial_shapes, level_start_index, locations, weights


def border_locations(shapes, batch, queries, heads, points, dtype=torch.float64):
    """(B, Q, M, L, P, 2) locations exactly on pixel borders and centres of each level, on 0 and 1,
    and half a pixel outside (pixel coordinate exactly -1 or the size):
    k / (2 * size) for integers k in [-1, 2 * size + 1]."""
    gen = torch.Generator().manual_seed(1)
    per_level = []
    for height, width in shapes:
        # (B, Q, M, P) integer steps of half a pixel, per axis
        kx = torch.randint(-1, 2 * width + 2, (batch, queries, heads, points), generator=gen)
        ky = torch.randint(-1, 2 * height + 2, (batch, queries, heads, points), generator=gen)
        per_level.append(torch.stack([kx.to(dtype) / (2 * width), ky.to(dtype) / (2 * height)], -1))
    return torch.stack(per_level, 3)  # L x (B, Q, M, P, 2) -> (B, Q, M, L, P, 2)


def mmcv_oracle(value, spatial_shapes, level_start_index, locations, weights):
    return mmcv_msda(value, spatial_shapes, locations, weights)


def outputs_and_grads(fn, inputs, seed=2):
    """fn's output and the gradients of value, sampling_locations, attention_weights for a fixed
    random output gradient."""
    value, spatial_shapes, level_start_index, locations, weights = inputs
    leaves = [t.detach().clone().requires_grad_() for t in (value, locations, weights)]
    output = fn(leaves[0], spatial_shapes, level_start_index, leaves[1], leaves[2])
    gen = torch.Generator().manual_seed(seed)
    grad_output = torch.randn(output.shape, generator=gen, dtype=torch.float64).to(output.dtype)
    output.backward(grad_output)
    return output.detach(), [leaf.grad for leaf in leaves]


def test_cpu_extension_is_built_with_openmp():
    ext = cpu_extension()
    assert ext is not None, (
        "bev_deform.ops._msda_cpu is not built: run `pip install --no-build-isolation -e .`"
    )
    assert ext.openmp()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert ext.num_threads() == 2
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("impl", sorted(OURS))
def test_forward_and_gradients_equal_mmcv_float64(case, impl):
    inputs = make_inputs(*CASES[case])
    expected, expected_grads = outputs_and_grads(mmcv_oracle, inputs)
    output, grads = outputs_and_grads(OURS[impl], inputs)
    assert output.dtype == torch.float64
    assert output.shape == (inputs[0].shape[0], inputs[3].shape[1], inputs[0].shape[2] * inputs[0].shape[3])
    torch.testing.assert_close(output, expected, rtol=0, atol=1e-10)
    for name, grad, expected_grad in zip(("value", "locations", "weights"), grads, expected_grads):
        torch.testing.assert_close(
            grad, expected_grad, rtol=0, atol=1e-10, msg=f"{impl} {case} grad of {name}"
        )


@pytest.mark.parametrize("impl", sorted(OURS))
def test_forward_equals_mmcv_on_pixel_borders_float64(impl):
    shapes = [(5, 7), (3, 2), (1, 1)]
    value, spatial_shapes, level_start_index, _, weights = make_inputs(2, shapes, 12, 2, 6, 4, (0, 1))
    locations = border_locations(shapes, batch=2, queries=12, heads=2, points=4)
    assert (
        (locations == 0).any() and (locations == 1).any() and (locations < 0).any() and (locations > 1).any()
    )
    inputs = (value, spatial_shapes, level_start_index, locations, weights)
    expected = mmcv_oracle(*inputs)
    torch.testing.assert_close(OURS[impl](*inputs), expected, rtol=0, atol=1e-10)


def test_known_answer_bilinear_sample():
    # one 2 x 3 level, one head of one channel holding 0..5 row-major; pixel (row 0.5, col 1.0) is
    # halfway between 1 and 4 -> 2.5; weight 2 -> 5. Location: x = (1.0 + 0.5) / 3, y = (0.5 + 0.5) / 2.
    value = torch.arange(6, dtype=torch.float64).view(1, 6, 1, 1)
    spatial_shapes, level_start_index = torch.tensor([[2, 3]]), torch.tensor([0])
    locations = torch.tensor([0.5, 0.5], dtype=torch.float64).view(1, 1, 1, 1, 1, 2)
    weights = torch.full((1, 1, 1, 1, 1), 2.0, dtype=torch.float64)
    for impl, fn in OURS.items():
        output = fn(value, spatial_shapes, level_start_index, locations, weights)
        assert output.item() == pytest.approx(5.0, abs=1e-12), impl


def test_non_finite_locations_read_zeros():
    value, spatial_shapes, level_start_index, locations, weights = make_inputs(
        1, [(4, 4)], 3, 1, 4, 3, (0, 1)
    )
    locations[0, 0, 0, 0, 0] = torch.tensor([float("nan"), 0.5])
    locations[0, 0, 0, 0, 1] = torch.tensor([float("inf"), 0.5])
    locations[0, 0, 0, 0, 2] = torch.tensor([0.5, -1e30])
    for impl in ("dispatcher", "gather"):
        output = OURS[impl](value, spatial_shapes, level_start_index, locations, weights)
        assert torch.equal(output[0, 0], torch.zeros(4, dtype=torch.float64)), impl
        assert torch.isfinite(output).all(), impl


def test_cpu_backward_gradcheck():
    value, spatial_shapes, level_start_index, locations, weights = make_inputs(
        2, [(3, 4), (2, 2)], 3, 2, 3, 2, (0, 1)
    )
    leaves = tuple(t.requires_grad_() for t in (value, locations, weights))

    def op(value, locations, weights):
        return MSDAFunctionCPU.apply(value, spatial_shapes, level_start_index, locations, weights)

    assert torch.autograd.gradcheck(op, leaves, eps=1e-6, atol=1e-7)


def test_gather_fallback_gradcheck():
    value, spatial_shapes, level_start_index, locations, weights = make_inputs(
        1, [(3, 4), (2, 2)], 3, 2, 3, 2, (0, 1)
    )
    leaves = tuple(t.requires_grad_() for t in (value, locations, weights))

    def op(value, locations, weights):
        return multi_scale_deformable_attn_gather(
            value, spatial_shapes, level_start_index, locations, weights
        )

    assert torch.autograd.gradcheck(op, leaves, eps=1e-6, atol=1e-7)


def test_float32_agrees_with_mmcv_on_realistic_shapes():
    value, spatial_shapes, level_start_index, locations, weights = make_inputs(
        2, [(24, 40), (12, 20), (6, 10), (3, 5)], 50, 8, 32, 4, (0, 1), dtype=torch.float32
    )
    weights = weights / weights.sum((-2, -1), keepdim=True)  # sum to 1 over levels x points, as a softmax
    inputs = (value, spatial_shapes, level_start_index, locations, weights)
    expected, expected_grads = outputs_and_grads(mmcv_oracle, inputs)
    output, grads = outputs_and_grads(multi_scale_deformable_attn, inputs)
    assert output.dtype == torch.float32
    torch.testing.assert_close(output, expected, rtol=0, atol=1e-5)
    for grad, expected_grad in zip(grads, expected_grads):
        # location / weight gradients are sums of D products scaled by the level size (up to ~100 here):
        # float32 carries ~1e-6 of their largest entry for mmcv and us alike (both checked in float64)
        scale = expected_grad.abs().max().item()
        torch.testing.assert_close(grad, expected_grad, rtol=0, atol=1e-5 * max(scale, 1.0))


def test_results_do_not_depend_on_thread_count():
    inputs = make_inputs(2, [(24, 40), (12, 20), (6, 10)], 40, 4, 16, 4, (-0.1, 1.1), dtype=torch.float32)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        serial = outputs_and_grads(multi_scale_deformable_attn, inputs)
        torch.set_num_threads(2)
        parallel = outputs_and_grads(multi_scale_deformable_attn, inputs)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(serial[0], parallel[0])
    for serial_grad, parallel_grad in zip(serial[1], parallel[1]):
        assert torch.equal(serial_grad, parallel_grad)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_are_computed_in_float32_and_returned_in_their_dtype(dtype):
    inputs = make_inputs(2, [(6, 8), (3, 4)], 5, 2, 8, 3, (0, 1), dtype=dtype)
    upcast = [t.float() if t.is_floating_point() else t for t in inputs]
    expected = mmcv_oracle(*upcast).to(dtype)  # float32 result rounded once
    output, grads = outputs_and_grads(multi_scale_deformable_attn, inputs)
    assert output.dtype == dtype
    eps = float(torch.finfo(dtype).eps)
    torch.testing.assert_close(output.float(), expected.float(), rtol=eps, atol=eps)
    assert [grad.dtype for grad in grads] == [dtype] * 3


def test_mixed_float16_value_and_float32_locations_under_amp_style_inputs():
    value, spatial_shapes, level_start_index, locations, weights = make_inputs(
        1, [(6, 8), (3, 4)], 5, 2, 8, 3, (0, 1), dtype=torch.float32
    )
    expected = mmcv_oracle(value.half().float(), spatial_shapes, level_start_index, locations, weights)
    output = multi_scale_deformable_attn(value.half(), spatial_shapes, level_start_index, locations, weights)
    assert output.dtype == torch.float16
    torch.testing.assert_close(output.float(), expected, rtol=1e-3, atol=1e-3)


def test_fallback_when_extension_is_missing(monkeypatch):
    inputs = make_inputs(*CASES["four_levels_8_heads"])
    monkeypatch.setattr(msda_module, "cpu_extension", lambda: None)
    calls = []
    gather = msda_module.multi_scale_deformable_attn_gather
    monkeypatch.setattr(
        msda_module, "multi_scale_deformable_attn_gather", lambda *a: calls.append(1) or gather(*a)
    )
    output, grads = outputs_and_grads(multi_scale_deformable_attn, inputs)
    assert calls == [1]
    expected, expected_grads = outputs_and_grads(mmcv_oracle, inputs)
    torch.testing.assert_close(output, expected, rtol=0, atol=1e-10)
    for grad, expected_grad in zip(grads, expected_grads):
        torch.testing.assert_close(grad, expected_grad, rtol=0, atol=1e-10)


def test_missing_extension_warns_once(monkeypatch):
    monkeypatch.setitem(sys.modules, "bev_deform.ops._msda_cpu", None)  # makes the import fail
    cpu_extension.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="_msda_cpu is not built") as record:
            assert cpu_extension() is None
            assert cpu_extension() is None
        assert len(record) == 1
    finally:
        cpu_extension.cache_clear()


def test_cuda_im2col_step_divides_the_batch():
    assert [cuda_im2col_step(batch) for batch in (1, 6, 7, 64, 70, 128, 67)] == [1, 6, 7, 64, 35, 64, 1]


def _bad(**overrides):
    inputs = dict(
        zip(
            ("value", "spatial_shapes", "level_start_index", "sampling_locations", "attention_weights"),
            make_inputs(2, [(4, 6), (2, 3)], 5, 3, 4, 2, (0, 1)),
        )
    )
    inputs.update({name: fn(inputs) for name, fn in overrides.items()})
    return inputs


BAD_INPUTS = {
    "value_rank": ("value", _bad(value=lambda i: i["value"].flatten(2))),
    "value_integer": ("value", _bad(value=lambda i: i["value"].long())),
    "value_not_tensor": ("value", _bad(value=lambda i: i["value"].tolist())),
    "shapes_rank": ("spatial_shapes", _bad(spatial_shapes=lambda i: i["spatial_shapes"].flatten())),
    "shapes_float": ("spatial_shapes", _bad(spatial_shapes=lambda i: i["spatial_shapes"].float())),
    "shapes_do_not_sum_to_S": (
        "spatial_shapes",
        _bad(spatial_shapes=lambda i: torch.tensor([[4, 6], [2, 2]])),
    ),
    "shapes_not_positive": ("spatial_shapes", _bad(spatial_shapes=lambda i: torch.tensor([[0, 6], [2, 3]]))),
    "start_index_wrong": ("level_start_index", _bad(level_start_index=lambda i: torch.tensor([0, 23]))),
    "start_index_length": ("level_start_index", _bad(level_start_index=lambda i: torch.tensor([0]))),
    "locations_rank": (
        "sampling_locations",
        _bad(sampling_locations=lambda i: i["sampling_locations"][..., 0]),
    ),
    "locations_heads": (
        "sampling_locations",
        _bad(sampling_locations=lambda i: i["sampling_locations"][:, :, :2]),
    ),
    "locations_levels": (
        "sampling_locations",
        _bad(sampling_locations=lambda i: i["sampling_locations"][:, :, :, :1]),
    ),
    "locations_batch": ("sampling_locations", _bad(sampling_locations=lambda i: i["sampling_locations"][:1])),
    "locations_integer": (
        "sampling_locations",
        _bad(sampling_locations=lambda i: i["sampling_locations"].int()),
    ),
    "weights_points": (
        "attention_weights",
        _bad(attention_weights=lambda i: i["attention_weights"][..., :1]),
    ),
    "weights_queries": ("attention_weights", _bad(attention_weights=lambda i: i["attention_weights"][:, :4])),
    "weights_rank": ("attention_weights", _bad(attention_weights=lambda i: i["attention_weights"][..., 0])),
    "weights_other_device": (
        "attention_weights",
        _bad(attention_weights=lambda i: i["attention_weights"].to("meta")),
    ),
    "shapes_other_device": ("spatial_shapes", _bad(spatial_shapes=lambda i: i["spatial_shapes"].to("meta"))),
}


@pytest.mark.parametrize("impl", ["dispatcher", "reference"])
@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_raises_value_error_naming_the_argument(case, impl):
    argument, inputs = BAD_INPUTS[case]
    with pytest.raises(ValueError, match=rf"^{argument} ") as error:
        OURS[impl](**inputs)
    assert "(" in str(error.value)  # names the expected shape, e.g. (B, Q, M, L, P, 2)


@pytest.mark.cuda
@pytest.mark.parametrize("batch", [1, 3, 5, 70])
def test_cuda_uses_mmcv_op_with_an_im2col_step_that_divides_the_batch(batch):
    inputs = make_inputs(batch, [(12, 20), (6, 10), (3, 5)], 30, 4, 16, 4, (-0.1, 1.1))
    cuda_inputs = [t.cuda() for t in inputs]
    for dtype in (torch.float64, torch.float32):
        typed = [t.to(dtype) if t.is_floating_point() else t for t in cuda_inputs]
        expected, expected_grads = outputs_and_grads(multi_scale_deformable_attn_reference, typed)
        output, grads = outputs_and_grads(multi_scale_deformable_attn, typed)
        tolerance = 1e-10 if dtype == torch.float64 else 1e-5
        torch.testing.assert_close(output, expected, rtol=0, atol=tolerance)
        for grad, expected_grad in zip(grads, expected_grads):
            torch.testing.assert_close(grad, expected_grad, rtol=tolerance, atol=tolerance)


@pytest.mark.cuda
def test_cuda_under_autocast_runs_in_float32_and_returns_value_dtype():
    value, spatial_shapes, level_start_index, locations, weights = (
        t.cuda() for t in make_inputs(3, [(12, 20), (6, 10)], 30, 4, 16, 4, (0, 1), dtype=torch.float32)
    )
    expected = multi_scale_deformable_attn_reference(
        value.half().float(), spatial_shapes, level_start_index, locations, weights
    )
    with torch.autocast("cuda", dtype=torch.float16):
        output = multi_scale_deformable_attn(
            value.half(), spatial_shapes, level_start_index, locations, weights
        )
    assert output.dtype == torch.float16
    torch.testing.assert_close(output.float(), expected, rtol=1e-3, atol=1e-3)


def _valid_shapes_case():
    """Inputs with locations on and around every border, and per-row real extents: row 0 keeps 3 of
    5 rows and 4 of 7 columns of level 0 and all of level 1; row 1 keeps nothing of level 1."""
    shapes = [(5, 7), (3, 2)]
    value, spatial_shapes, level_start_index, locations, weights = make_inputs(
        2, shapes, 12, 2, 6, 4, (-0.2, 1.2)
    )
    locations[:, :6] = border_locations(shapes, batch=2, queries=6, heads=2, points=4)
    valid = torch.tensor([[[3, 4], [3, 2]], [[5, 7], [0, 0]]])
    return (value, spatial_shapes, level_start_index, locations, weights), valid


def test_valid_shapes_read_the_cells_past_them_as_zero_in_values_and_gradients():
    """The kernel with ``valid_shapes`` equals mmcv's op on value zeroed past each row's extent, in
    the output and the gradients of the locations and weights (float64, 1e-10); value's gradient
    is mmcv's masked the same way (exactly zero in the cut-off cells); the fallback paths agree."""
    inputs, valid = _valid_shapes_case()
    value, spatial_shapes, level_start_index, locations, weights = inputs
    masked = msda_module.mask_invalid_cells(value, spatial_shapes, valid)
    cut = (masked == 0) & (value != 0)
    # row 0 level 0: 5 * 7 - 3 * 4 cells cut; row 1: all 6 cells of level 1
    assert cut[:, :, 0, 0].sum(1).tolist() == [35 - 12, 6]
    expected, (_, eg_loc, eg_w) = outputs_and_grads(mmcv_oracle, (masked, *inputs[1:]))

    def with_valid(v, s, i, loc, w):
        return multi_scale_deformable_attn(v, s, i, loc, w, valid_shapes=valid)

    output, (g_value, g_loc, g_w) = outputs_and_grads(with_valid, inputs)
    torch.testing.assert_close(output, expected, rtol=0, atol=1e-10)
    # on exact pixel borders (queries 0-5) the location gradient is a one-sided derivative, whose
    # side differs from grid_sample's: there the oracle is the kernel on the masked value
    torch.testing.assert_close(g_loc[:, 6:], eg_loc[:, 6:], rtol=0, atol=1e-10)
    torch.testing.assert_close(g_w, eg_w, rtol=0, atol=1e-10)
    _, (_, kg_loc, kg_w) = outputs_and_grads(multi_scale_deformable_attn, (masked, *inputs[1:]))
    torch.testing.assert_close(g_loc, kg_loc, rtol=0, atol=1e-10)
    torch.testing.assert_close(g_w, kg_w, rtol=0, atol=1e-10)
    _, (g_masked, _, _) = outputs_and_grads(mmcv_oracle, inputs)  # unmasked value: grads everywhere
    assert torch.equal(g_value[cut], torch.zeros_like(g_value[cut])) and g_masked[cut].abs().max() > 0
    torch.testing.assert_close(g_value, g_masked.masked_fill(cut, 0.0), rtol=0, atol=1e-10)
    # whole-level extents change nothing
    full = spatial_shapes[None].expand(2, -1, -1).contiguous()
    torch.testing.assert_close(
        multi_scale_deformable_attn(*inputs, valid_shapes=full), mmcv_oracle(*inputs), rtol=0, atol=1e-10
    )


def test_valid_shapes_fallback_path_masks_value(monkeypatch):
    inputs, valid = _valid_shapes_case()
    expected = multi_scale_deformable_attn(*inputs, valid_shapes=valid)  # the kernel
    monkeypatch.setattr(msda_module, "cpu_extension", lambda: None)  # the pure-PyTorch gather path
    fallback = multi_scale_deformable_attn(*inputs, valid_shapes=valid)
    torch.testing.assert_close(fallback, expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize(
    "valid, message",
    [
        (torch.ones(2, 2, 2), "int64"),  # float
        (torch.ones(2, 3, 2, dtype=torch.long), r"\(B, L, 2\) = \(2, 2, 2\)"),  # L
        (torch.ones(1, 2, 2, dtype=torch.long), r"\(B, L, 2\) = \(2, 2, 2\)"),  # B
    ],
)
def test_bad_valid_shapes_raise_naming_the_argument(valid, message):
    inputs, _ = _valid_shapes_case()
    with pytest.raises(ValueError, match=rf"^valid_shapes .*{message}"):
        multi_scale_deformable_attn(*inputs, valid_shapes=valid)


def test_valid_shapes_beyond_the_level_are_refused_by_the_kernel():
    inputs, valid = _valid_shapes_case()
    valid[0, 1, 0] = 4  # level 1 has 3 rows
    with pytest.raises(RuntimeError, match="valid_shapes must lie in"):
        multi_scale_deformable_attn(*inputs, valid_shapes=valid)
