"""The attention core: torch semantics, masks, kernels, positions, capture."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.profiler import profile

from vision_attn.attention import (
    MultiHeadAttention,
    adjacency_mask,
    attention_weights,
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
    for kw in (
        {},
        {"attn_mask": attn_mask},
        {"key_padding_mask": kpm},
        {"attn_mask": attn_mask, "key_padding_mask": kpm},
        {"attn_mask": float_mask},
        {"attn_mask": float_mask, "key_padding_mask": kpm},
    ):
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


@pytest.mark.parametrize("case", ["self", "cross", "bool_mask", "float_mask", "key_padding", "kdim", "backward"])
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


# The attention core, pinned to numbers: every accepted mask shape, non-zero biases, no biases, attention
# dropout, custom scales and initialisation against ``torch.nn.MultiheadAttention`` or the formula written out.
B, H, NQ, NK, D = 2, 4, 5, 7, 32


def _pair(dim=D, heads=H, qkv_bias=True, kdim=None, vdim=None, seed=0):
    """Our module with every parameter random and non-zero (biases too), and torch's with the same values."""
    torch.manual_seed(seed)
    ours = MultiHeadAttention(dim, heads, qkv_bias=qkv_bias, kdim=kdim, vdim=vdim).double().eval()
    with torch.no_grad():
        for p in ours.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    ref = torch.nn.MultiheadAttention(dim, heads, batch_first=True, kdim=kdim, vdim=vdim).double().eval()
    state = ours.state_dict()
    if not qkv_bias:  # torch has no "q/k/v bias only" switch: zeros are the same function
        state["in_proj_bias"] = torch.zeros(3 * dim, dtype=torch.float64)
    assert set(ref.state_dict()) == set(state)
    ref.load_state_dict(state)
    return ours, ref


def _compare(ours, ref, query, key, value, **masks):
    out, w = ours(query, key, value, need_weights=True, **masks)
    ref_out, ref_w = ref(query, key, value, need_weights=True, average_attn_weights=False, **masks)
    torch.testing.assert_close(out, ref_out, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(w, ref_w.to(w.dtype), rtol=1e-5, atol=1e-6)  # weights are computed in float32
    return out


def _masks(dtype):
    """A ``(B, H, Nq, Nk)`` mask, bool (True = blocked, never a whole row) or additive float, both different
    for every batch element, head, query and key."""
    g = torch.Generator().manual_seed(1)
    if dtype == torch.bool:
        mask = torch.rand(B, H, NQ, NK, generator=g) > 0.6
        mask[..., 0] = False
        return mask
    return torch.randn(B, H, NQ, NK, generator=g, dtype=torch.float64) * 2


# --- 4-D attn_mask ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.bool, torch.float64], ids=["bool", "float"])
@pytest.mark.parametrize("shape", [(B, H), (B, 1), (1, H), (1, 1)], ids=["BxH", "Bx1", "1xH", "1x1"])
def test_every_4d_mask_shape_equals_torch_with_the_expanded_mask(shape, dtype):
    ours, ref = _pair()
    q = torch.randn(B, NQ, D, dtype=torch.float64)
    kv = torch.randn(B, NK, D, dtype=torch.float64)
    mask = _masks(dtype)[: shape[0], : shape[1]]
    torch_mask = mask.expand(B, H, NQ, NK).reshape(B * H, NQ, NK)  # torch's layout for per-head masks
    kpm = torch.zeros(B, NK, dtype=dtype)  # alone, and with a key padding mask of the same kind
    kpm[1, -2:] = True if dtype == torch.bool else -3.0
    for padding in (None, kpm):
        out, w = ours(q, kv, kv, attn_mask=mask, key_padding_mask=padding, need_weights=True)
        ref_out, ref_w = ref(
            q, kv, kv, attn_mask=torch_mask, key_padding_mask=padding, need_weights=True, average_attn_weights=False
        )
        torch.testing.assert_close(out, ref_out, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(w, ref_w.to(w.dtype), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(ours(q, kv, kv, attn_mask=mask), ours(q, kv, kv), atol=1e-3)  # the mask matters


def test_a_bool_mask_with_a_float_key_padding_mask_adds_both():
    ours, _ = _pair()
    q, kv = torch.randn(B, NQ, D, dtype=torch.float64), torch.randn(B, NK, D, dtype=torch.float64)
    blocked = _masks(torch.bool)[:, :1]
    kpm = torch.randn(B, NK, dtype=torch.float64)
    as_float = (
        torch.zeros(B, 1, NQ, NK, dtype=torch.float64).masked_fill(blocked, float("-inf")) + kpm[:, None, None, :]
    )
    _, w = ours(q, kv, kv, attn_mask=blocked, key_padding_mask=kpm, need_weights=True)
    _, w_ref = ours(q, kv, kv, attn_mask=as_float, need_weights=True)
    torch.testing.assert_close(w, w_ref)
    assert torch.all(w.masked_select(blocked.expand_as(w)) == 0)


@pytest.mark.parametrize(
    "shape",
    [
        (B, H, NQ, 1),
        (B, H, 1, NK),
        (B, H, NK, NQ),
        (B + 1, H, NQ, NK),
        (B, H + 1, NQ, NK),
        (3 * B, 1, NQ, NK),
        (1, B, H, NQ, NK),
        (NK,),
        (B, NQ, NK),
        (H, NQ, NK),
        (NK, NQ),
        (NQ, NK + 1),
    ],
)
def test_malformed_masks_are_rejected_with_the_shapes(shape):
    ours, _ = _pair()
    q, kv = torch.randn(B, NQ, D, dtype=torch.float64), torch.randn(B, NK, D, dtype=torch.float64)
    for dtype in (torch.bool, torch.float64):
        with pytest.raises(
            ValueError, match=rf"attn_mask has shape {re_shape(shape)}; expected \(Nq, Nk\)=\({NQ}, {NK}\)"
        ):
            ours(q, kv, kv, attn_mask=torch.zeros(shape, dtype=dtype))
    with pytest.raises(
        ValueError, match=rf"key_padding_mask has shape \({B}, {NK + 1}\); expected \(B, Nk\)=\({B}, {NK}\)"
    ):
        ours(q, kv, kv, key_padding_mask=torch.zeros(B, NK + 1, dtype=torch.bool))


def re_shape(shape):
    return "\\(" + ", ".join(map(str, shape)) + (",\\)" if len(shape) == 1 else "\\)")


def test_malformed_key_and_value_are_rejected():
    ours, _ = _pair(kdim=24, vdim=20)
    q = torch.randn(B, NQ, D, dtype=torch.float64)
    k, v = torch.randn(B, NK, 24, dtype=torch.float64), torch.randn(B, NK, 20, dtype=torch.float64)
    ours(q, k, v)
    with pytest.raises(ValueError, match=r"key has shape \(2, 7, 20\); expected \(B, Nk, kdim\)=\(2, Nk, 24\)"):
        ours(q, v, v)
    with pytest.raises(ValueError, match=r"key has shape \(1, 7, 24\)"):
        ours(q, k[:1], v[:1])
    with pytest.raises(ValueError, match=r"key has shape \(2, 24\)"):
        ours(q, k[:, 0], v)
    with pytest.raises(ValueError, match=r"value has shape \(2, 6, 20\); expected \(B, Nk, vdim\)=\(2, 7, 20\)"):
        ours(q, k, v[:, :6])
    with pytest.raises(ValueError, match=r"value has shape \(2, 7, 24\)"):
        ours(q, k, k)
    with pytest.raises(ValueError, match=r"value has shape \(2, 7\)"):
        ours(q, k, v[..., 0])
    with pytest.raises(ValueError, match=r"query has shape \(5, 32\)"):
        ours(q[0], k, v)
    for heads in (0, -4):
        with pytest.raises(ValueError, match=f"num_heads={heads}"):
            MultiHeadAttention(D, heads)


# --- biases -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("qkv_bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("case", ["self", "cross_kv_same", "cross_kv_different", "kdim_vdim", "kdim_only", "vdim_only"])
def test_non_zero_biases_or_none_equal_torch_in_self_and_cross_attention(case, qkv_bias):
    kdim, vdim = {"kdim_vdim": (24, 20), "kdim_only": (24, None), "vdim_only": (None, 20)}.get(case, (None, None))
    ours, ref = _pair(qkv_bias=qkv_bias, kdim=kdim, vdim=vdim)
    q = torch.randn(B, NQ, D, dtype=torch.float64)
    k = torch.randn(B, NK, kdim or D, dtype=torch.float64)
    v = torch.randn(B, NK, vdim or D, dtype=torch.float64)
    if case == "self":
        out = ours(q)
        torch.testing.assert_close(out, _compare(ours, ref, q, q, q), rtol=1e-12, atol=1e-12)
    elif case == "cross_kv_same":
        out = _compare(ours, ref, q, k, k)
        torch.testing.assert_close(ours(q, k), out, rtol=1e-12, atol=1e-12)  # value defaults to key
    else:
        _compare(ours, ref, q, k, v)
    names = {n for n, _ in ours.named_parameters()}
    assert ("in_proj_bias" in names) == qkv_bias and "out_proj.bias" in names


def test_parameter_counts_with_and_without_qkv_bias():
    assert sum(p.numel() for p in MultiHeadAttention(D, H).parameters()) == 4 * D * D + 4 * D
    assert sum(p.numel() for p in MultiHeadAttention(D, H, qkv_bias=False).parameters()) == 4 * D * D + D
    assert MultiHeadAttention(D, H, qkv_bias=False).in_proj_bias is None
    assert (
        sum(p.numel() for p in MultiHeadAttention(D, H, kdim=24, vdim=20).parameters()) == D * (D + 24 + 20 + D) + 4 * D
    )
    assert m_repr_line(MultiHeadAttention(D, H)) == "dim=32, num_heads=4"
    assert m_repr_line(MultiHeadAttention(D, H, kdim=24, vdim=20)) == "dim=32, num_heads=4, kdim=24, vdim=20"


def m_repr_line(m):
    return repr(m).splitlines()[1].strip()


@pytest.mark.parametrize("kdim", [None, 24])
def test_initialisation_is_torch_s_xavier_uniform_with_zero_biases(kdim):
    torch.manual_seed(0)
    m = MultiHeadAttention(64, 4, kdim=kdim, vdim=kdim)
    weights = (
        [(m.in_proj_weight, 64, 3 * 64)]
        if kdim is None
        else [(m.q_proj_weight, 64, 64), (m.k_proj_weight, kdim, 64), (m.v_proj_weight, kdim, 64)]
    )
    for w, fan_in, fan_out in weights:
        w = w.detach()
        bound = math.sqrt(6 / (fan_in + fan_out))
        assert w.abs().max() <= bound and w.abs().max() > 0.95 * bound
        assert float(w.std()) == pytest.approx(bound / math.sqrt(3), rel=0.1)
    assert torch.all(m.in_proj_bias == 0) and torch.all(m.out_proj.bias == 0)
    m.in_proj_bias.data.fill_(1.0)
    m.out_proj.bias.data.fill_(1.0)
    m.reset_parameters()
    assert torch.all(m.in_proj_bias == 0) and torch.all(m.out_proj.bias == 0)


# --- dropout ---------------------------------------------------------------------------------------------
def _probe(attn_drop, proj_drop=0.0):
    """Cross-attention whose output is the dropped attention matrix itself: one head, values = one-hot keys,
    value and output projections the identity. Returns the module, queries and keys."""
    torch.manual_seed(0)
    m = MultiHeadAttention(D, 1, attn_drop=attn_drop, proj_drop=proj_drop)
    with torch.no_grad():
        m.in_proj_weight[2 * D :] = torch.eye(D)
        m.in_proj_bias.zero_()
        m.out_proj.weight.copy_(torch.eye(D))
        m.out_proj.bias.zero_()
    return m, torch.randn(1, 64, D) * 2, torch.eye(D)[None]


def test_attention_dropout_zeroes_a_fraction_p_of_the_weights_and_rescales_the_rest_in_training_only():
    p = 0.25
    m, q, keys = _probe(p)
    m.eval()
    out, weights = m(q, keys, need_weights=True)
    torch.testing.assert_close(out, weights[:, 0], rtol=1e-5, atol=1e-6)  # eval: no dropout at all
    m.train()
    torch.manual_seed(1)
    out, weights = m(q, keys, need_weights=True)
    weights = weights[:, 0]
    kept = out != 0
    assert float((~kept).float().mean()) == pytest.approx(p, abs=0.04)  # 2048 entries: 6 standard deviations
    torch.testing.assert_close(out[kept], weights[kept] / (1 - p), rtol=1e-4, atol=1e-6)
    torch.manual_seed(2)
    assert not torch.equal(m(q, keys), out)  # a fresh mask each call


def test_dropout_defaults_are_zero_so_training_mode_changes_nothing():
    m, q, keys = _probe(attn_drop=0.0)
    default = MultiHeadAttention(D, 1)
    assert default.attn_drop == 0.0 and default.proj_drop.p == 0.0
    default.load_state_dict(m.state_dict())
    torch.testing.assert_close(default.train()(q, keys), default.eval()(q, keys), rtol=0, atol=0)


def test_projection_dropout_acts_on_the_output_in_training():
    m, q, keys = _probe(attn_drop=0.0, proj_drop=0.5)
    ref = m.eval()(q, keys)
    torch.manual_seed(0)
    out = m.train()(q, keys)
    kept = out != 0
    assert float((~kept).float().mean()) == pytest.approx(0.5, abs=0.06)
    torch.testing.assert_close(out[kept], 2 * ref[kept])


# --- scale --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scale", [None, 1.0, 0.05])
@pytest.mark.parametrize("dv", [8, 16, 4])
def test_custom_scale_reaches_both_the_output_and_the_returned_weights(scale, dv):
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 3, 6, 8), torch.randn(2, 3, 9, 8), torch.randn(2, 3, 9, dv)
    mask = torch.rand(2, 1, 6, 9) > 0.3
    mask[..., 0] = True  # SDPA meaning: True = may attend
    out, w = scaled_dot_product_attention(q, k, v, mask, need_weights=True, scale=scale)
    scores = (q @ k.transpose(-1, -2)) * (8**-0.5 if scale is None else scale)
    expected = scores.masked_fill(~mask, float("-inf")).softmax(-1)
    torch.testing.assert_close(w, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out, expected @ v, rtol=1e-5, atol=1e-5)
    assert out.shape == (2, 3, 6, dv)
    float_mask = torch.randn(2, 1, 6, 9)
    out, w = scaled_dot_product_attention(q, k, v, float_mask, need_weights=True, scale=scale)
    torch.testing.assert_close(w, (scores + float_mask).softmax(-1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out, w @ v, rtol=1e-5, atol=1e-5)


def test_attention_weights_default_to_one_over_sqrt_head_size():
    torch.manual_seed(0)
    q, k = torch.randn(2, 3, 6, 16), torch.randn(2, 3, 9, 16)
    allowed = torch.rand(6, 9) > 0.4
    allowed[:, 0] = True
    scores = q @ k.transpose(-1, -2) / 4.0
    torch.testing.assert_close(attention_weights(q, k), scores.softmax(-1))
    torch.testing.assert_close(
        attention_weights(q, k, allowed), scores.masked_fill(~allowed, float("-inf")).softmax(-1)
    )
    torch.testing.assert_close(attention_weights(q, k, scale=1.0), (4 * scores).softmax(-1))


def test_a_head_split_view_reaches_the_fused_kernel_without_a_copy_or_pad():
    """(B, N, H, hd) -> (B, H, N, hd) is a view with a unit last stride: the kernel takes it as it is (a copy
    would cost ~15% of the attention time), and equal head sizes need no zero-padding."""
    x = torch.randn(2, 16, 3, 24)
    q, k, v = (x[..., i : i + 8].transpose(1, 2) for i in (0, 8, 16))
    assert not q.is_contiguous() and q.stride(-1) == 1
    with profile() as prof:
        out = scaled_dot_product_attention(q, k, v)
    names = {e.key for e in prof.key_averages()}
    assert "aten::_scaled_dot_product_flash_attention_for_cpu" in names
    assert not names & {"aten::clone", "aten::copy_", "aten::contiguous", "aten::constant_pad_nd", "aten::pad"}, names
    torch.testing.assert_close(out, (q @ k.transpose(-1, -2) / math.sqrt(8)).softmax(-1) @ v, rtol=1e-5, atol=1e-5)
