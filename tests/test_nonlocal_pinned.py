"""NonLocalBlock2d pinned to the SAGAN equations written out (Zhang et al. 2019, eq. 1-3, with BigGAN's value
width C/2 and optional 2x2 max-pooled keys/values) and to its parameter count."""
import pytest
import torch
import torch.nn.functional as F

from vision_attn.attention import capture_attention
from vision_attn.layers import NonLocalBlock2d


def sagan_reference(m: NonLocalBlock2d, x: torch.Tensor, scale=None):
    """f = W_f x (queries), g = W_g x (keys), h = W_h x (values), per head:
    beta_{j,i} = softmax_i(scale * f(x_j) . g(x_i)), o_j = W_v sum_i beta_{j,i} h(x_i), y = x + gamma * o.
    ``scale`` None = (query channels per head) ** -0.5; SAGAN's own code uses 1."""
    B, C, H, W = x.shape
    nh = m.num_heads

    def conv(weight, t):
        return torch.einsum("oc,bchw->bohw", weight[:, :, 0, 0], t)

    def heads(t):  # (B, c, h, w) -> (B, nh, h*w, c / nh)
        return t.reshape(B, nh, t.shape[1] // nh, -1).transpose(-1, -2)

    pool = (lambda t: F.max_pool2d(t, m.kv_pool, m.kv_pool, ceil_mode=True)) if m.kv_pool > 1 else (lambda t: t)
    f = heads(conv(m.query.weight, x))
    g = heads(pool(conv(m.key.weight, x)))
    h = heads(pool(conv(m.value.weight, x)))
    s = f.shape[-1] ** -0.5 if scale is None else scale
    beta = torch.softmax(s * f @ g.transpose(-1, -2), dim=-1)  # (B, nh, HW, Nk): each query's weights over keys
    o = (beta @ h).transpose(-1, -2).reshape(B, -1, H, W)
    return x + m.gamma * conv(m.out_proj.weight, o), beta


def _block(seed=0, **kwargs):
    torch.manual_seed(seed)
    m = NonLocalBlock2d(**kwargs).double()
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
        m.gamma.fill_(0.7)
    return m


@pytest.mark.parametrize("heads,kv_pool,value_channels,size", [
    (1, 1, None, (6, 5)), (2, 1, None, (4, 7)), (1, 2, None, (7, 9)), (2, 2, 8, (6, 8)), (4, 1, 12, (3, 3)),
])
def test_nonlocal_block_equals_the_sagan_equations(heads, kv_pool, value_channels, size):
    m = _block(channels=32, num_heads=heads, reduction=4, kv_pool=kv_pool, value_channels=value_channels)
    x = torch.randn(2, 32, *size, dtype=torch.float64)
    with capture_attention(m) as maps:
        out = m(x)
    ref, beta = sagan_reference(m, x)
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(maps["self"], beta, rtol=1e-5, atol=1e-6)  # weights computed in float32
    assert not torch.allclose(out, x)


@pytest.mark.parametrize("scale", [1.0, 0.05])
def test_a_custom_scale_is_the_score_scale(scale):
    """SAGAN's code: softmax(f^T g) without 1/sqrt(d)."""
    m = _block(channels=16, reduction=2)
    m.scale = scale  # the block reads its scale at forward time
    x = torch.randn(1, 16, 5, 6, dtype=torch.float64)
    with capture_attention(m) as maps:
        out = m(x)
    ref, beta = sagan_reference(m, x, scale=scale)
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(maps["self"], beta, rtol=1e-5, atol=1e-6)
    default_ref, _ = sagan_reference(m, x)
    assert not torch.allclose(out, default_ref)
    assert NonLocalBlock2d(16, scale=scale).scale == scale and NonLocalBlock2d(16).scale is None


def test_parameter_count_widths_and_no_biases():
    C = 64
    m = NonLocalBlock2d(C)
    # f, g: C -> C/8; h: C -> C/2 (BigGAN); W_v: C/2 -> C; gamma: one scalar. No biases anywhere.
    assert sum(p.numel() for p in m.parameters()) == 2 * C * (C // 8) + 2 * C * (C // 2) + 1 == 5121
    assert m.query.weight.shape == m.key.weight.shape == (C // 8, C, 1, 1)
    assert m.value.weight.shape == (C // 2, C, 1, 1) and m.out_proj.weight.shape == (C, C // 2, 1, 1)
    assert all(conv.bias is None for conv in (m.query, m.key, m.value, m.out_proj))
    assert m.gamma.shape == () and float(m.gamma.detach()) == 0.0
    m = NonLocalBlock2d(C, num_heads=2, reduction=4, value_channels=24)
    assert sum(p.numel() for p in m.parameters()) == 2 * C * 16 + 2 * C * 24 + 1
    assert NonLocalBlock2d(2, reduction=1).value.out_channels == 1  # C // 2, at least 1
    assert repr(m).splitlines()[1].strip() == "channels=64, num_heads=2, kv_pool=1"


def test_identity_at_init_for_any_input():
    m = NonLocalBlock2d(16, num_heads=2, kv_pool=2)
    x = torch.randn(2, 16, 7, 5)
    assert torch.equal(m(x), x)


def test_pooling_keeps_odd_edges_and_reduces_the_keys():
    m = _block(channels=16, reduction=2, kv_pool=2)
    x = torch.randn(1, 16, 5, 7, dtype=torch.float64)
    with capture_attention(m) as maps:
        m(x)
    assert maps["self"].shape == (1, 1, 35, 3 * 4)  # ceil(5/2) x ceil(7/2) pooled keys
    m3 = _block(channels=16, reduction=2, kv_pool=3)
    with capture_attention(m3) as maps:
        out = m3(x)
    assert maps["self"].shape == (1, 1, 35, 2 * 3)
    torch.testing.assert_close(out, sagan_reference(m3, x)[0], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("kwargs,message", [
    ({"channels": 32, "num_heads": 0}, "num_heads must be >= 1; got num_heads=0"),
    ({"channels": 32, "num_heads": 8}, r"channels // reduction = 32//8=4 is not divisible by num_heads=8"),
    ({"channels": 32, "reduction": 0}, "channels=32 is not divisible by reduction=0"),
    ({"channels": 32, "reduction": 5}, "channels=32 is not divisible by reduction=5"),
    ({"channels": 32, "num_heads": 2, "value_channels": 7}, "value_channels=7 is not divisible by num_heads=2"),
    ({"channels": 32, "kv_pool": 2.0}, r"kv_pool must be a positive int .*got 2.0"),
    ({"channels": 32, "kv_pool": -1}, "got -1"),
])
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        NonLocalBlock2d(**kwargs)


def test_bad_input_is_named():
    m = NonLocalBlock2d(16)
    for x, found in ((torch.randn(2, 8, 4, 4), r"\(2, 8, 4, 4\)"), (torch.randn(16, 4, 4), r"\(16, 4, 4\)"), ([1, 2], "list")):
        with pytest.raises(ValueError, match=r"NonLocalBlock2d expects a feature map of shape \(B, 16, H, W\).*" + found):
            m(x)
