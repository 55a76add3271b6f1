"""The attention core, pinned to numbers: every accepted mask shape, non-zero biases, no biases, attention
dropout, custom scales and initialisation against ``torch.nn.MultiheadAttention`` or the formula written out."""
import math

import pytest
import torch
from torch.profiler import profile

from vision_attn.attention import MultiHeadAttention, attention_weights, scaled_dot_product_attention

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
        ref_out, ref_w = ref(q, kv, kv, attn_mask=torch_mask, key_padding_mask=padding, need_weights=True,
                             average_attn_weights=False)
        torch.testing.assert_close(out, ref_out, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(w, ref_w.to(w.dtype), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(ours(q, kv, kv, attn_mask=mask), ours(q, kv, kv), atol=1e-3)  # the mask matters


def test_a_bool_mask_with_a_float_key_padding_mask_adds_both():
    ours, _ = _pair()
    q, kv = torch.randn(B, NQ, D, dtype=torch.float64), torch.randn(B, NK, D, dtype=torch.float64)
    blocked = _masks(torch.bool)[:, :1]
    kpm = torch.randn(B, NK, dtype=torch.float64)
    as_float = torch.zeros(B, 1, NQ, NK, dtype=torch.float64).masked_fill(blocked, float("-inf")) + kpm[:, None, None, :]
    _, w = ours(q, kv, kv, attn_mask=blocked, key_padding_mask=kpm, need_weights=True)
    _, w_ref = ours(q, kv, kv, attn_mask=as_float, need_weights=True)
    torch.testing.assert_close(w, w_ref)
    assert torch.all(w.masked_select(blocked.expand_as(w)) == 0)


@pytest.mark.parametrize("shape", [
    (B, H, NQ, 1), (B, H, 1, NK), (B, H, NK, NQ), (B + 1, H, NQ, NK), (B, H + 1, NQ, NK), (3 * B, 1, NQ, NK),
    (1, B, H, NQ, NK), (NK,), (B, NQ, NK), (H, NQ, NK), (NK, NQ), (NQ, NK + 1),
])
def test_malformed_masks_are_rejected_with_the_shapes(shape):
    ours, _ = _pair()
    q, kv = torch.randn(B, NQ, D, dtype=torch.float64), torch.randn(B, NK, D, dtype=torch.float64)
    for dtype in (torch.bool, torch.float64):
        with pytest.raises(ValueError, match=rf"attn_mask has shape {re_shape(shape)}; expected \(Nq, Nk\)=\({NQ}, {NK}\)"):
            ours(q, kv, kv, attn_mask=torch.zeros(shape, dtype=dtype))
    with pytest.raises(ValueError, match=rf"key_padding_mask has shape \({B}, {NK + 1}\); expected \(B, Nk\)=\({B}, {NK}\)"):
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
    assert sum(p.numel() for p in MultiHeadAttention(D, H, kdim=24, vdim=20).parameters()) == D * (D + 24 + 20 + D) + 4 * D
    assert m_repr_line(MultiHeadAttention(D, H)) == "dim=32, num_heads=4"
    assert m_repr_line(MultiHeadAttention(D, H, kdim=24, vdim=20)) == "dim=32, num_heads=4, kdim=24, vdim=20"


def m_repr_line(m):
    return repr(m).splitlines()[1].strip()


@pytest.mark.parametrize("kdim", [None, 24])
def test_initialisation_is_torch_s_xavier_uniform_with_zero_biases(kdim):
    torch.manual_seed(0)
    m = MultiHeadAttention(64, 4, kdim=kdim, vdim=kdim)
    weights = [(m.in_proj_weight, 64, 3 * 64)] if kdim is None else [
        (m.q_proj_weight, 64, 64), (m.k_proj_weight, kdim, 64), (m.v_proj_weight, kdim, 64)]
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
        m.in_proj_weight[2 * D:] = torch.eye(D)
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
    scores = (q @ k.transpose(-1, -2)) * (8 ** -0.5 if scale is None else scale)
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
    torch.testing.assert_close(attention_weights(q, k, allowed), scores.masked_fill(~allowed, float("-inf")).softmax(-1))
    torch.testing.assert_close(attention_weights(q, k, scale=1.0), (4 * scores).softmax(-1))


def test_a_head_split_view_reaches_the_fused_kernel_without_a_copy_or_pad():
    """(B, N, H, hd) -> (B, H, N, hd) is a view with a unit last stride: the kernel takes it as it is (a copy
    would cost ~15% of the attention time), and equal head sizes need no zero-padding."""
    x = torch.randn(2, 16, 3, 24)
    q, k, v = (x[..., i:i + 8].transpose(1, 2) for i in (0, 8, 16))
    assert not q.is_contiguous() and q.stride(-1) == 1
    with profile() as prof:
        out = scaled_dot_product_attention(q, k, v)
    names = {e.key for e in prof.key_averages()}
    assert "aten::_scaled_dot_product_flash_attention_for_cpu" in names
    assert not names & {"aten::clone", "aten::copy_", "aten::contiguous", "aten::constant_pad_nd", "aten::pad"}, names
    torch.testing.assert_close(out, (q @ k.transpose(-1, -2) / math.sqrt(8)).softmax(-1) @ v, rtol=1e-5, atol=1e-5)
