"""The attention core: torch semantics, masks, kernels, positions, capture."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch.profiler import profile

from vision_attn.attention import (
    MultiHeadAttention,
    adjacency_mask,
    capture_attention,
    local_window_mask,
    resample_abs_pos_embed,
    scaled_dot_product_attention,
    sine_position_encoding_2d,
    with_prefix_tokens,
)

FLASH_CPU = "aten::_scaled_dot_product_flash_attention_for_cpu"
MATH = "aten::_scaled_dot_product_attention_math"


def _torch_mha_like(ours: MultiHeadAttention) -> torch.nn.MultiheadAttention:
    ref = torch.nn.MultiheadAttention(ours.dim, ours.num_heads, batch_first=True, kdim=ours.kdim, vdim=ours.vdim)
    missing, unexpected = ref.load_state_dict(ours.state_dict(), strict=False)
    assert not unexpected and not missing
    return ref.eval()


@pytest.mark.parametrize("kdim", [None, 24])
def test_matches_torch_multihead_attention_with_masks(kdim):
    torch.manual_seed(0)
    m = MultiHeadAttention(32, 4, kdim=kdim, vdim=kdim).eval()
    ref = _torch_mha_like(m)
    q = torch.randn(2, 5, 32)
    kv = torch.randn(2, 7, kdim or 32)
    attn_mask = torch.rand(5, 7) > 0.7
    attn_mask[:, 0] = False  # no fully masked row
    kpm = torch.zeros(2, 7, dtype=torch.bool)
    kpm[1, -2:] = True
    float_mask = torch.randn(2 * 4, 5, 7)
    for kw in ({}, {"attn_mask": attn_mask}, {"key_padding_mask": kpm}, {"attn_mask": attn_mask, "key_padding_mask": kpm},
               {"attn_mask": float_mask}, {"attn_mask": float_mask, "key_padding_mask": kpm}):
        out, w = m(q, kv, kv, need_weights=True, **kw)
        ref_out, ref_w = ref(q, kv, kv, need_weights=True, average_attn_weights=False, **kw)
        torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(w, ref_w, rtol=1e-5, atol=1e-5)


def test_self_attention_defaults_key_and_value_to_query():
    torch.manual_seed(0)
    m = MultiHeadAttention(16, 2).eval()
    x = torch.randn(3, 6, 16)
    torch.testing.assert_close(m(x), m(x, x, x))
    torch.testing.assert_close(m(x), _torch_mha_like(m)(x, x, x, need_weights=False)[0], rtol=1e-5, atol=1e-5)


def test_masked_keys_have_no_effect():
    torch.manual_seed(0)
    m = MultiHeadAttention(16, 4).eval()
    q, kv = torch.randn(2, 4, 16), torch.randn(2, 9, 16)
    pad = torch.zeros(2, 9, dtype=torch.bool)
    pad[:, 6:] = True
    blocked = torch.zeros(4, 9, dtype=torch.bool)
    blocked[:, 2] = True
    kv2 = kv.clone()
    kv2[:, 6:] = 100 * torch.randn(2, 3, 16)  # padded keys/values changed wildly
    kv2[:, 2] = -50.0  # a key blocked by attn_mask changed too
    a = m(q, kv, kv, key_padding_mask=pad, attn_mask=blocked)
    b = m(q, kv2, kv2, key_padding_mask=pad, attn_mask=blocked)
    torch.testing.assert_close(a, b)
    _, w = m(q, kv, kv, key_padding_mask=pad, attn_mask=blocked, need_weights=True)
    assert torch.all(w[..., 6:] == 0) and torch.all(w[..., 2] == 0)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 4, 4))


def test_bool_mask_equals_float_minus_inf_mask():
    torch.manual_seed(0)
    m = MultiHeadAttention(16, 2).eval()
    x = torch.randn(2, 6, 16)
    mask = local_window_mask(2, 3, 3)
    as_float = torch.zeros(6, 6).masked_fill(mask, float("-inf"))
    torch.testing.assert_close(m(x, attn_mask=mask), m(x, attn_mask=as_float))


def test_need_weights_returns_the_same_output_and_softmax_weights():
    torch.manual_seed(0)
    m = MultiHeadAttention(24, 3).eval()
    x = torch.randn(2, 10, 24)
    out = m(x)
    out2, w = m(x, need_weights=True)
    assert torch.equal(out, out2)
    assert w.shape == (2, 3, 10, 10)
    q, k, _ = F.linear(x, m.in_proj_weight, m.in_proj_bias).view(2, 10, 3, 3, 8).permute(2, 0, 3, 1, 4)
    torch.testing.assert_close(w, (q @ k.transpose(-1, -2) / math.sqrt(8)).softmax(-1))


def test_permutation_equivariance_without_positions():
    torch.manual_seed(0)
    m = MultiHeadAttention(16, 4).eval()
    x = torch.randn(2, 12, 16)
    perm = torch.randperm(12)
    torch.testing.assert_close(m(x)[:, perm], m(x[:, perm]), rtol=1e-5, atol=1e-6)


def _kernels(fn):
    with profile() as prof:
        fn()
    return {e.key for e in prof.key_averages()}


@pytest.mark.parametrize(
    "case", ["self", "cross", "bool_mask", "float_mask", "key_padding", "kdim", "backward"]
)
def test_core_runs_the_fused_kernel_not_the_materialising_one(case):
    torch.manual_seed(0)
    m = MultiHeadAttention(64, 4, kdim=32 if case == "kdim" else None, vdim=32 if case == "kdim" else None)
    x = torch.randn(2, 50, 64, requires_grad=case == "backward")
    kv = torch.randn(2, 30, 32 if case == "kdim" else 64)
    kw = {}
    if case == "bool_mask":
        kw["attn_mask"] = local_window_mask(5, 10, 3)
    if case == "float_mask":
        kw["attn_mask"] = torch.randn(50, 50)
    if case == "key_padding":
        kw["key_padding_mask"] = torch.rand(2, 50) > 0.8
    args = (x, kv) if case in ("cross", "kdim") else (x,)

    def run():
        out = m(*args, **kw)
        if case == "backward":
            out.sum().backward()

    names = _kernels(run)
    assert FLASH_CPU in names and MATH not in names
    if case == "backward":
        assert FLASH_CPU + "_backward" in names


@pytest.mark.parametrize("dk,dv", [(8, 32), (32, 8)])
def test_unequal_head_sizes_still_use_the_fused_kernel_and_match_math(dk, dv):
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 3, 40, dk), torch.randn(2, 3, 20, dk), torch.randn(2, 3, 20, dv)
    names = _kernels(lambda: scaled_dot_product_attention(q, k, v))
    assert FLASH_CPU in names and MATH not in names
    ref = ((q @ k.transpose(-1, -2)) / math.sqrt(dk)).softmax(-1) @ v
    torch.testing.assert_close(scaled_dot_product_attention(q, k, v), ref, rtol=1e-5, atol=1e-5)


def test_strided_last_dim_is_made_fused_friendly():
    q = torch.randn(2, 3, 16, 40).transpose(-1, -2)  # last-dim stride != 1 would select the math kernel
    names = _kernels(lambda: scaled_dot_product_attention(q, q, q))
    assert FLASH_CPU in names and MATH not in names


def test_local_window_mask_is_a_k_by_k_neighbourhood():
    mask = local_window_mask(5, 6, 3)
    assert mask.shape == (30, 30)
    allowed = ~mask
    centre = 2 * 6 + 3
    assert allowed[centre].sum() == 9
    corner = 0
    assert allowed[corner].sum() == 4
    idx = torch.nonzero(allowed[centre]).flatten()
    ys, xs = idx // 6, idx % 6
    assert set(ys.tolist()) == {1, 2, 3} and set(xs.tolist()) == {2, 3, 4}
    with pytest.raises(ValueError, match="kernel_size"):
        local_window_mask(4, 4, 4)


def test_local_window_attention_ignores_tokens_outside_the_window():
    torch.manual_seed(0)
    m = MultiHeadAttention(16, 2).eval()
    h, w = 6, 6
    x = torch.randn(1, h * w, 16)
    mask = local_window_mask(h, w, 3)
    q_idx = 0  # top-left pixel: window is rows 0-1, cols 0-1
    far = [i for i in range(h * w) if mask[q_idx, i]]
    x2 = x.clone()
    x2[:, far] = torch.randn(1, len(far), 16) * 10
    torch.testing.assert_close(m(x, attn_mask=mask)[:, q_idx], m(x2, attn_mask=mask)[:, q_idx])
    assert not torch.allclose(m(x)[:, q_idx], m(x2)[:, q_idx])


def test_adjacency_mask_restricts_attention_to_neighbours():
    torch.manual_seed(0)
    adj = torch.tensor([[0, 1, 0, 0], [1, 0, 1, 0], [0, 1, 0, 1], [0, 0, 1, 0]])
    mask = adjacency_mask(adj)
    assert not mask.diagonal().any()
    m = MultiHeadAttention(8, 2).eval()
    x = torch.randn(1, 4, 8)
    _, w = m(x, attn_mask=mask, need_weights=True)
    assert torch.all(w[0, :, 0, 2:] == 0)  # node 0 sees only itself and node 1
    padded = with_prefix_tokens(mask, 1)
    assert padded.shape == (5, 5) and not padded[0].any() and not padded[:, 0].any()


def test_resample_matches_timm_and_keeps_prefix_tokens():
    from timm.layers import resample_abs_pos_embed as timm_resample

    torch.manual_seed(0)
    pe = torch.randn(1, 1 + 14 * 14, 32)
    out = resample_abs_pos_embed(pe, (6, 8), num_prefix_tokens=1)
    assert out.shape == (1, 1 + 48, 32)
    assert torch.equal(out[:, :1], pe[:, :1])
    torch.testing.assert_close(out, timm_resample(pe, [6, 8], [14, 14], num_prefix_tokens=1))
    assert resample_abs_pos_embed(pe, (14, 14)) is pe
    with pytest.raises(ValueError, match="not a square grid"):
        resample_abs_pos_embed(torch.randn(1, 1 + 10, 8), (4, 4))


def test_sine_encoding_ignores_padding():
    """DETR's property: a padded image's real pixels get the encoding of the unpadded image."""
    small = sine_position_encoding_2d(torch.ones(1, 4, 5, dtype=torch.bool), num_pos_feats=16)
    not_mask = torch.zeros(1, 7, 9, dtype=torch.bool)
    not_mask[:, :4, :5] = True
    padded = sine_position_encoding_2d(not_mask, num_pos_feats=16)
    assert small.shape == (1, 32, 4, 5) and padded.shape == (1, 32, 7, 9)
    torch.testing.assert_close(padded[:, :, :4, :5], small)
    flat = small.flatten(2).transpose(1, 2)[0]
    assert torch.cdist(flat, flat).add(torch.eye(20)).min() > 1e-3  # every position distinct


def test_capture_attention_collects_weights_and_leaves_output_unchanged():
    torch.manual_seed(0)
    model = torch.nn.Sequential()
    model.add_module("a", MultiHeadAttention(16, 2))
    model.add_module("b", MultiHeadAttention(16, 4))
    model.eval()
    x = torch.randn(2, 7, 16)
    ref = model(x)
    with capture_attention(model) as maps:
        out = model(x)
    assert torch.equal(out, ref)
    assert set(maps) == {"a", "b"}
    assert maps["a"].shape == (2, 2, 7, 7) and maps["b"].shape == (2, 4, 7, 7)
    torch.testing.assert_close(maps["b"].sum(-1), torch.ones(2, 4, 7))
    assert all(m._capture is None for m in model)  # nothing recorded once the block is left
    with pytest.raises(ValueError, match="no vision_attn MultiHeadAttention"):
        with capture_attention(torch.nn.Linear(2, 2)):
            pass


def test_bad_inputs_name_the_problem():
    m = MultiHeadAttention(16, 2)
    with pytest.raises(ValueError, match=r"query has shape \(2, 5, 8\); expected \(B, Nq, D\) with D=16"):
        m(torch.randn(2, 5, 8))
    with pytest.raises(ValueError, match="key_padding_mask has shape"):
        m(torch.randn(2, 5, 16), key_padding_mask=torch.zeros(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="attn_mask has shape"):
        m(torch.randn(2, 5, 16), attn_mask=torch.zeros(4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="divisible by num_heads"):
        MultiHeadAttention(10, 3)
