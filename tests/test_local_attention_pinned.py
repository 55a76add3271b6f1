"""LocalSelfAttention2d pinned where the brute-force comparison does not reach: a 1x1 window, initial values,
argument checks and the printed summary."""
import math

import pytest
import torch

from vision_attn.layers import LocalSelfAttention2d


@pytest.mark.parametrize("size,block", [((5, 7), 4), ((3, 3), 2)])
def test_a_1x1_window_returns_each_pixel_s_own_value_with_finite_gradients(size, block):
    """k = 1: every pixel's softmax runs over itself alone, padded blocks or not."""
    torch.manual_seed(0)
    m = LocalSelfAttention2d(8, kernel_size=1, num_heads=2, block_size=block)
    x = torch.randn(2, 8, *size, requires_grad=True)
    out = m(x)
    torch.testing.assert_close(out, m.qkv(x).chunk(3, dim=1)[2], rtol=1e-5, atol=1e-6)
    out.square().sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(m.qkv.weight.grad).all()


def test_initialisation():
    torch.manual_seed(0)
    C, heads, k = 256, 2, 7
    m = LocalSelfAttention2d(C, kernel_size=k, num_heads=heads)
    head_dim = C // heads
    # qkv: Kaiming normal, fan_out = 3C (a 1x1 convolution), ReLU gain; no bias (SASA)
    assert float(m.qkv.weight.detach().std()) == pytest.approx(math.sqrt(2 / (3 * C)), rel=0.05)
    assert m.qkv.bias is None
    # relative embeddings: std head_dim ** -0.5, so q . r has unit variance for unit-variance queries
    for rel, width in ((m.rel_pos_h, head_dim // 2), (m.rel_pos_w, head_dim - head_dim // 2)):
        assert rel.shape == (heads, k, width)
        assert float(rel.detach().std()) == pytest.approx(head_dim ** -0.5, rel=0.1)
    with_bias = LocalSelfAttention2d(16, kernel_size=3, num_heads=2, qkv_bias=True)
    assert with_bias.qkv.bias.shape == (48,) and torch.all(with_bias.qkv.bias == 0)


def test_two_channels_per_head_is_enough_and_one_is_not():
    m = LocalSelfAttention2d(4, kernel_size=3, num_heads=2)
    assert m(torch.randn(1, 4, 5, 5)).shape == (1, 4, 5, 5)
    with pytest.raises(ValueError, match=r"channels // num_heads = 2//2 = 1; need >= 2 channels per head"):
        LocalSelfAttention2d(2, kernel_size=3, num_heads=2)


@pytest.mark.parametrize("kwargs,message", [
    ({"stride": 0}, "stride must be a positive int; got stride=0"),
    ({"stride": 1.5}, "got stride=1.5"),
    ({"block_size": 0}, "block_size must be a positive int; got block_size=0"),
    ({"block_size": 2.0}, "got block_size=2.0"),
    ({"kernel_size": 0}, "kernel_size must be a positive odd int"),
    ({"kernel_size": 3.0}, "got kernel_size=3.0"),
    ({"num_heads": 0}, "num_heads must be >= 1; got num_heads=0"),
])
def test_bad_arguments_are_named(kwargs, message):
    args = {"channels": 8, "kernel_size": 3, "num_heads": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        LocalSelfAttention2d(**args)


def test_summary_names_every_setting():
    m = LocalSelfAttention2d(8, kernel_size=5, num_heads=2, stride=2, block_size=4)
    assert repr(m).splitlines()[1].strip() == "channels=8, kernel_size=5, num_heads=2, stride=2, block_size=4, backend='auto'"
    assert m(torch.randn(1, 8, 7, 6)).shape == (1, 8, 4, 3)  # ceil(7/2) x ceil(6/2)


def test_any_block_size_from_one_gives_the_same_result():
    torch.manual_seed(0)
    x = torch.randn(1, 8, 5, 6)
    ref = LocalSelfAttention2d(8, kernel_size=3, num_heads=2, block_size=8)
    for block in (1, 2, 5):
        m = LocalSelfAttention2d(8, kernel_size=3, num_heads=2, block_size=block)
        m.load_state_dict(ref.state_dict())
        torch.testing.assert_close(m(x), ref(x), rtol=1e-5, atol=1e-6)
